#!/usr/bin/env bash
# tollgate's benchmark harness: the gateway's overhead over a direct call to a
# (very fast) mock OpenAI upstream, read against a bare hyper pass-through
# proxy (examples/bare_proxy.rs, parses nothing) that is measured the same way:
# the floor any proxy pays on this machine. A benchmark, not a test: never run
# from CI.
#
#   bench/run.sh                      # 10 s per scenario, ~4.5 minutes in all
#   BENCH_SECONDS=5 bench/run.sh      # shorter
#
# Environment knobs (all optional):
#   BENCH_SECONDS      measured seconds per scenario            (10)
#   BENCH_WARMUP       warm-up seconds before each scenario     (1)
#   BENCH_CONCURRENCY  client concurrencies                     ("1 16 64")
#   BENCH_CHUNKS       content chunks per streamed answer       (20)
#   BENCH_SLOW_CONNS   concurrent slow streams                  (1000)
#   BENCH_SLOW_MS      mock's gap between slow-stream events    (100)
#   BENCH_SLOW_SECONDS duration of the slow-stream scenario     (10)
#   BENCH_SKIP_BUILD   1 = use the binaries already built
#   BENCH_OUT          results directory        (bench/results/<timestamp>)
#   BENCH_PORT_BASE    first of seven loopback ports used       (19180)
#   BENCH_LEDGER       0 = no usage ledger (default 1: SQLite, a row per request;
#                      after the runs the rows are counted against the requests)
#   BENCH_LIMITS       0 = no key, team and model limits (default 1: a managed key
#                      in a team, with rpm, tpm and budgets set far above the load,
#                      so every request pays for the checks without being refused)
#   BENCH_PERF         1 = also `perf record -g` tollgate during the c=16
#                      non-streaming run (perf.data in BENCH_OUT)
#
# Core pinning (the machine this was written for has 2 cores): the mock and
# the load generator (oha) share core 0; tollgate and the bare proxy are both
# pinned to core 1 and take turns: only the one being measured gets requests.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECONDS_PER=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-1}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
CHUNKS=${BENCH_CHUNKS:-20}
SLOW_CONNS=${BENCH_SLOW_CONNS:-1000}
SLOW_MS=${BENCH_SLOW_MS:-100}
SLOW_SECONDS=${BENCH_SLOW_SECONDS:-10}
PORT_BASE=${BENCH_PORT_BASE:-19180}
MOCK_PORT=$PORT_BASE
SLOW_MOCK_PORT=$((PORT_BASE + 1))
GW_PORT=$((PORT_BASE + 2))
SLOW_GW_PORT=$((PORT_BASE + 3))
XCORE_PORT=$((PORT_BASE + 4))
SAMECORE_PORT=$((PORT_BASE + 5))
BARE_PORT=$((PORT_BASE + 6))
OUT=${BENCH_OUT:-"$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)"}
CLK_TCK=$(getconf CLK_TCK)
MOCK_CORE=0
GW_CORE=1
LOAD_CORE=0

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

NPROC=$(nproc)
[ "$NPROC" -ge 2 ] || die "needs at least 2 cores for the pinning (found $NPROC)"
command -v taskset >/dev/null || die "taskset is missing (util-linux)"
command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing"

# 1. Binaries: one cargo invocation for all three.
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building tollgate, the mock upstream and the bare proxy (release)"
    cargo build --release --example mock_upstream --example bare_proxy --bin tollgate
fi
TOLLGATE=$ROOT/target/release/tollgate
MOCK=$ROOT/target/release/examples/mock_upstream
BARE=$ROOT/target/release/examples/bare_proxy
[ -x "$TOLLGATE" ] || die "$TOLLGATE not built"
[ -x "$MOCK" ] || die "$MOCK not built"
[ -x "$BARE" ] || die "$BARE not built"
# The source the binaries were built from ("-dirty": with uncommitted changes).
GIT_REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# 2. The load generator.
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$PATH:$HOME/.cargo/bin" ;; esac
if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked; takes a few minutes)"
    cargo install oha --locked
fi
OHA_VERSION=$(oha --version 2>/dev/null | head -n1)
OHA_HELP=$(oha --help 2>&1)
if grep -q -- '--output-format' <<<"$OHA_HELP"; then
    OHA_JSON=(--output-format json)
else
    OHA_JSON=(-j)
fi
OHA_EXTRA=(--no-tui)
# oha is pinned to one core: one runtime thread is enough and switches less.
if grep -q -- '--worker-threads' <<<"$OHA_HELP"; then
    OHA_EXTRA+=(--worker-threads 1)
fi
# Let requests in flight at the deadline finish instead of counting them as errors.
if grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$OHA_HELP"; then
    OHA_EXTRA+=(--wait-ongoing-requests-after-deadline)
fi

# 3. Files and processes.
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_work tollgate-bench

# Room for 1,000 client + 1,000 upstream sockets per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((SLOW_CONNS * 2 + 256)) ] ||
    log "warning: ulimit -n is $(ulimit -n); the $SLOW_CONNS-stream scenario may run out of sockets"

# Metering on (BENCH_LEDGER=0 turns it off): every request also becomes a SQLite
# ledger row, in a file per gateway (BENCH_LEDGER_DIR, set by start_gateway).
LEDGER_YAML=""
if [ "${BENCH_LEDGER:-1}" = 1 ] || [ "${BENCH_LIMITS:-1}" = 1 ]; then
    LEDGER_YAML="ledger:
  url: sqlite://\${BENCH_LEDGER_DIR}/ledger.db"
fi
# Limits on (BENCH_LIMITS=0 turns them off): requests carry a managed key of a team;
# the key, the team and the model each have rpm, tpm and budgets no run reaches.
LIMITS_YAML=""
MODEL_LIMITS=""
AUTH_HEADER=()
if [ "${BENCH_LIMITS:-1}" = 1 ]; then
    LIMITS_YAML="auth:
  managed_keys: true
teams:
  bench: { rpm: 1000000000, tpm: 4000000000, budget: { daily: 1000000, monthly: 9000000 } }"
    MODEL_LIMITS=", rpm: 1000000000, tpm: 4000000000, budget: { daily: 1000000 }"
fi
cat >"$WORK/tollgate.yaml" <<EOF
# Written by bench/run.sh: tollgate in front of the mock upstream.
server:
  listen: 127.0.0.1:$GW_PORT
  request_timeout: 600s
logging:
  format: pretty
  level: warn
$LEDGER_YAML
$LIMITS_YAML
providers:
  mock:
    kind: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
  mock-slow:
    kind: openai
    base_url: http://127.0.0.1:$SLOW_MOCK_PORT/v1
models:
  - { name: bench, provider: mock, upstream_model: gpt-4o-mini$MODEL_LIMITS }
  - name: bench-slow
    provider: mock-slow
    upstream_model: gpt-4o-mini
# A route, so every request goes through the router's matching and filters.
routes:
  - name: bench
    match: { model: [bench, bench-slow] }
    retry: { attempts: 1 }
EOF
cp "$WORK/tollgate.yaml" "$OUT/tollgate.yaml"
if [ "${BENCH_LIMITS:-1}" = 1 ]; then
    # Every gateway's ledger database gets the same key; only its digest is stored.
    mkdir -p "$WORK/ledger-$GW_PORT"
    BENCH_KEY=$(BENCH_LEDGER_DIR=$WORK/ledger-$GW_PORT "$TOLLGATE" keys create --config "$WORK/tollgate.yaml" \
        --name bench --team bench --rpm 1000000000 --tpm 4000000000 --budget-daily 1000000 2>>"$OUT/tollgate.log") ||
        die "tollgate keys create failed (see $OUT/tollgate.log)"
    for port in "$SAMECORE_PORT" "$SLOW_GW_PORT"; do
        mkdir -p "$WORK/ledger-$port"
        cp "$WORK/ledger-$GW_PORT"/ledger.db* "$WORK/ledger-$port/"
    done
    AUTH_HEADER=(-H "authorization: Bearer $BENCH_KEY")
fi

start_mock() { # core port extra-args... ; sets LAST_PID
    local core=$1 port=$2
    shift 2
    taskset -c "$core" "$MOCK" --listen "127.0.0.1:$port" --chunks "$CHUNKS" "$@" \
        >>"$OUT/mock.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_port "$port"
}

start_gateway() { # port [core] ; sets LAST_PID
    mkdir -p "$WORK/ledger-$1"
    BENCH_LEDGER_DIR=$WORK/ledger-$1 RUST_LOG=warn taskset -c "${2:-$GW_CORE}" "$TOLLGATE" serve --config "$WORK/tollgate.yaml" \
        --listen "127.0.0.1:$1" >>"$OUT/tollgate.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_port "$1"
}

start_bare() { # port upstream-port ; sets LAST_PID
    taskset -c "$GW_CORE" "$BARE" --listen "127.0.0.1:$1" --upstream "127.0.0.1:$2" \
        >>"$OUT/bare_proxy.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_port "$1"
}

elapsed() { # t0 t1
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'
}

cpu_ticks() { # utime + stime of a whole process (all threads), in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
status_kib() { # /proc/PID/status field in KiB
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}
listen_overflows() { # system-wide count of connections dropped because an accept queue was full
    awk '$1 == "TcpExt:" && !h { for (i = 2; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1; next }
         $1 == "TcpExt:" && h { print $c + 0; exit }' /proc/net/netstat 2>/dev/null || echo 0
}
reset_peak_rss() { # VmHWM := VmRSS (Linux >= 4.0); 0 on success
    { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null
}

start_mock "$MOCK_CORE" "$MOCK_PORT"
MOCK_PID=$LAST_PID
# Control for the c=1 latency: the mock alone on tollgate's core, so a direct
# request crosses cores once (a request through tollgate crosses four times).
start_mock "$GW_CORE" "$XCORE_PORT"
XCORE_PID=$LAST_PID
# Second control: a tollgate on core 0 with the mock and oha, so nothing
# crosses cores and the added latency is tollgate's own work.
start_gateway "$SAMECORE_PORT" "$MOCK_CORE"
SAMECORE_PID=$LAST_PID
start_gateway "$GW_PORT"
GW_PID=$LAST_PID
GW_IDLE_RSS_KIB=$(status_kib "$GW_PID" VmRSS)
# The floor: a bare hyper pass-through proxy on tollgate's core, in front of the
# same mock, measured exactly like tollgate.
start_bare "$BARE_PORT" "$MOCK_PORT"
BARE_PID=$LAST_PID
BARE_IDLE_RSS_KIB=$(status_kib "$BARE_PID" VmRSS)

BODY='{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about a fox."}],"max_tokens":64,"temperature":0.7}'
STREAM_BODY='{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about a fox."}],"max_tokens":64,"temperature":0.7,"stream":true,"stream_options":{"include_usage":true}}'
SLOW_BODY=${STREAM_BODY/\"model\":\"bench\"/\"model\":\"bench-slow\"}
printf '%s' "$BODY" >"$WORK/body.json"
printf '%s' "$STREAM_BODY" >"$WORK/stream.json"
printf '%s' "$SLOW_BODY" >"$WORK/slow.json"

# Sanity: every path answers 200 and the stream ends with usage and [DONE].
check() { # name url body-file
    local code
    code=$(curl -sS -o "$WORK/check.out" -w '%{http_code}' -H 'content-type: application/json' "${AUTH_HEADER[@]}" \
        --data-binary "@$3" "$2") || die "$1: curl failed"
    [ "$code" = 200 ] || die "$1: HTTP $code: $(head -c 400 "$WORK/check.out")"
    if grep -q '"stream":true' "$3"; then
        grep -q '"choices":\[\]' "$WORK/check.out" || die "$1: no usage chunk in the stream"
        tail -c 20 "$WORK/check.out" | grep -q 'data: \[DONE\]' || die "$1: stream does not end with [DONE]"
    else
        grep -q '"usage"' "$WORK/check.out" || die "$1: no usage in the answer"
    fi
}
DIRECT_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
GW_URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
XCORE_URL="http://127.0.0.1:$XCORE_PORT/v1/chat/completions"
SAMECORE_URL="http://127.0.0.1:$SAMECORE_PORT/v1/chat/completions"
BARE_URL="http://127.0.0.1:$BARE_PORT/v1/chat/completions"
check "direct" "$DIRECT_URL" "$WORK/body.json"
check "direct stream" "$DIRECT_URL" "$WORK/stream.json"
check "tollgate" "$GW_URL" "$WORK/body.json"
check "tollgate stream" "$GW_URL" "$WORK/stream.json"
check "tollgate core 0" "$SAMECORE_URL" "$WORK/body.json"
check "bare proxy" "$BARE_URL" "$WORK/body.json"
check "bare proxy stream" "$BARE_URL" "$WORK/stream.json"

oha_run() { # out-json url body-file concurrency duration-s
    taskset -c "$LOAD_CORE" oha "${OHA_EXTRA[@]}" "${OHA_JSON[@]}" -z "${5}s" -c "$4" \
        -m POST -H 'content-type: application/json' "${AUTH_HEADER[@]}" -D "$3" "$2" >"$1" 2>>"$OUT/oha.log" ||
        die "oha failed (see $OUT/oha.log)"
}

META=$OUT/scenarios.jsonl
: >"$META"
log "results in $OUT"
log "pinning: mock upstream + oha on core $MOCK_CORE, tollgate and the bare proxy on core $GW_CORE; ${SECONDS_PER}s per scenario"

for mode in plain stream; do
    body=$WORK/body.json
    [ "$mode" = stream ] && body=$WORK/stream.json
    for c in $CONCURRENCY; do
        targets="direct bare tollgate"
        [ "$c" = 1 ] && targets="direct xcore bare samecore tollgate"
        for target in $targets; do
            # gw_pid: the proxy measured (CPU ticks, VmHWM). For direct and
            # xcore it is the idle tollgate on core 1.
            gw_pid=$GW_PID
            case $target in
            direct) url=$DIRECT_URL ;;
            xcore) url=$XCORE_URL ;;
            bare) url=$BARE_URL gw_pid=$BARE_PID ;;
            samecore) url=$SAMECORE_URL gw_pid=$SAMECORE_PID ;;
            tollgate) url=$GW_URL ;;
            esac
            name=$mode-c$c-$target
            log "$name"
            [ "$WARMUP" = 0 ] || oha_run "$WORK/warmup-$name.json" "$url" "$body" "$c" "$WARMUP"
            reset_peak_rss "$gw_pid" && hwm_reset=true || hwm_reset=false
            gw0=$(cpu_ticks "$gw_pid")
            mock_pid=$MOCK_PID
            [ "$target" = xcore ] && mock_pid=$XCORE_PID
            mock0=$(cpu_ticks "$mock_pid")
            perf_pid=
            if [ "${BENCH_PERF:-0}" = 1 ] && [ "$target" = tollgate ] && [ "$mode" = plain ] && [ "$c" = 16 ]; then
                # No hardware counters in most VMs: sample the cpu-clock; no frame
                # pointers in the release build: unwind with DWARF.
                perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$GW_PID" -o "$OUT/perf.data" -- sleep "$SECONDS_PER" \
                    2>>"$OUT/perf.log" &
                perf_pid=$!
            fi
            t0=$(date +%s.%N)
            oha_run "$OUT/$name.json" "$url" "$body" "$c" "$SECONDS_PER"
            t1=$(date +%s.%N)
            [ -z "$perf_pid" ] || wait "$perf_pid" || true
            gw1=$(cpu_ticks "$gw_pid")
            mock1=$(cpu_ticks "$mock_pid")
            printf '{"name":"%s","mode":"%s","concurrency":%s,"target":"%s","oha":"%s","wall_s":%s,"clk_tck":%s,"gw_cpu_ticks":%s,"mock_cpu_ticks":%s,"gw_hwm_kib":%s,"gw_rss_kib":%s,"hwm_reset":%s}\n' \
                "$name" "$mode" "$c" "$target" "$name.json" "$(elapsed "$t0" "$t1")" "$CLK_TCK" \
                $((gw1 - gw0)) $((mock1 - mock0)) "$(status_kib "$gw_pid" VmHWM)" \
                "$(status_kib "$gw_pid" VmRSS)" "$hwm_reset" >>"$META"
        done
    done
done

# Ledger check: the gateway stops gracefully (its queue is written), then its
# rows are counted against the requests oha and the checks sent it.
GW_THREADS=$(status_kib "$GW_PID" Threads)
if [ -n "$LEDGER_YAML" ]; then
    kill -TERM "$GW_PID"
    wait "$GW_PID" 2>/dev/null || true
    python3 - "$WORK" "$GW_PORT" "$OUT" >"$OUT/ledger.json" <<'PY' || die "ledger check failed: $(cat "$OUT/ledger.json")"
import glob, json, sqlite3, sys
work, port, out = sys.argv[1:4]
def sent(path):
    d = json.load(open(path))
    return sum(d.get("statusCodeDistribution", {}).values()) + sum(d.get("errorDistribution", {}).values())
files = glob.glob(f"{out}/*-tollgate.json") + glob.glob(f"{work}/warmup-*-tollgate.json")
files = [f for f in files if "/slow-" not in f]
requests = sum(sent(f) for f in files) + 2  # and the two sanity checks
db = sqlite3.connect(f"{work}/ledger-{port}/ledger.db")
rows = db.execute("SELECT count(*) FROM tollgate_usage").fetchone()[0]
keyed = db.execute("SELECT count(*) FROM tollgate_usage WHERE key_id IS NOT NULL").fetchone()[0]
print(json.dumps({"requests": requests, "rows": rows, "rows_with_key": keyed}))
sys.exit(0 if rows == requests else 1)
PY
    log "ledger: $(cat "$OUT/ledger.json")"
fi

# Slow streams: a fresh gateway, SLOW_CONNS streams held open at once, each
# event SLOW_MS apart (about (CHUNKS+3) * SLOW_MS per stream).
log "slow-$SLOW_CONNS: $SLOW_CONNS concurrent streams, ${SLOW_MS} ms between events, ${SLOW_SECONDS}s"
start_mock "$MOCK_CORE" "$SLOW_MOCK_PORT" --slow-ms "$SLOW_MS"
start_gateway "$SLOW_GW_PORT"
SLOW_GW_PID=$LAST_PID
SLOW_URL="http://127.0.0.1:$SLOW_GW_PORT/v1/chat/completions"
check "tollgate slow stream" "$SLOW_URL" "$WORK/slow.json"
slow_idle=$(status_kib "$SLOW_GW_PID" VmRSS)
gw0=$(cpu_ticks "$SLOW_GW_PID")
lo0=$(listen_overflows)
# Sample the gateway's RSS and sockets while the streams are open.
(
    peak_fds=0
    while kill -0 "$SLOW_GW_PID" 2>/dev/null; do
        n=$(find "/proc/$SLOW_GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        [ "$n" -gt "$peak_fds" ] && peak_fds=$n && echo "$peak_fds" >"$WORK/slow_fds"
        sleep 0.5
    done
) &
SAMPLER=$!
t0=$(date +%s.%N)
oha_run "$OUT/slow-c$SLOW_CONNS-tollgate.json" "$SLOW_URL" "$WORK/slow.json" "$SLOW_CONNS" "$SLOW_SECONDS"
t1=$(date +%s.%N)
gw1=$(cpu_ticks "$SLOW_GW_PID")
lo1=$(listen_overflows)
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
printf '{"name":"%s","mode":"slow","concurrency":%s,"target":"tollgate","oha":"%s","wall_s":%s,"clk_tck":%s,"gw_cpu_ticks":%s,"gw_hwm_kib":%s,"gw_rss_kib":%s,"gw_idle_rss_kib":%s,"peak_fds":%s,"slow_ms":%s,"listen_overflows":%s,"hwm_reset":false}\n' \
    "slow-c$SLOW_CONNS-tollgate" "$SLOW_CONNS" "slow-c$SLOW_CONNS-tollgate.json" "$(elapsed "$t0" "$t1")" \
    "$CLK_TCK" $((gw1 - gw0)) "$(status_kib "$SLOW_GW_PID" VmHWM)" "$(status_kib "$SLOW_GW_PID" VmRSS)" \
    "$slow_idle" "$(cat "$WORK/slow_fds" 2>/dev/null || echo 0)" "$SLOW_MS" $((lo1 - lo0)) >>"$META"

cat >"$OUT/machine.json" <<EOF
{"nproc": $NPROC, "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')", "kernel": "$(uname -r)", "oha": "$OHA_VERSION", "seconds": $SECONDS_PER, "warmup": $WARMUP, "chunks": $CHUNKS, "gw_idle_rss_kib": $GW_IDLE_RSS_KIB, "gw_threads": $GW_THREADS, "bare_idle_rss_kib": $BARE_IDLE_RSS_KIB, "bare_threads": $(status_kib "$BARE_PID" Threads), "mock_core": $MOCK_CORE, "gw_core": $GW_CORE, "load_core": $LOAD_CORE, "git": "$GIT_REV", "command": "BENCH_SECONDS=$SECONDS_PER bench/run.sh"}
EOF

python3 "$ROOT/bench/report.py" "$OUT" | tee "$OUT/report.md"
