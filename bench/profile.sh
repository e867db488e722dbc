#!/usr/bin/env bash
# Where does tollgate's CPU time go? Runs the same setup as bench/run.sh (mock
# and oha on core 0, tollgate on core 1) under load and samples tollgate with
# `perf record` (cpu-clock, DWARF call graphs), then prints the top symbols
# (self time), the inclusive time of tollgate's own functions, and a rough
# split by category (bench/perf_categories.py). A benchmark tool, not a test.
#
#   bench/profile.sh                     # c=16, non-streaming, 8 s
#   PROFILE_MODE=stream bench/profile.sh # c=16, 20-chunk streams
#
# Knobs: PROFILE_MODE (plain|stream), PROFILE_CONCURRENCY (16), PROFILE_FULL (1: as
# bench/run.sh, with the SQLite ledger and a managed key with key, team and model
# limits and budgets; 0: the bare routing path),
# PROFILE_SECONDS (8), PROFILE_FREQ (499 Hz), PROFILE_STACK (65528), BENCH_SKIP_BUILD=1,
# BENCH_PORT_BASE (19280), PROFILE_OUT (bench/results/profile-<mode>-<time>).
# Needs perf (Debian: linux-perf); perf_event_paranoid must allow it (root does).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MODE=${PROFILE_MODE:-plain}
C=${PROFILE_CONCURRENCY:-16}
SECS=${PROFILE_SECONDS:-8}
FREQ=${PROFILE_FREQ:-499}
# Bytes of stack copied per sample for DWARF unwinding; async stacks are deep.
STACK=${PROFILE_STACK:-65528}
PORT_BASE=${BENCH_PORT_BASE:-19280}
MOCK_PORT=$PORT_BASE
GW_PORT=$((PORT_BASE + 1))
OUT=${PROFILE_OUT:-"$ROOT/bench/results/profile-$MODE-$(date +%Y%m%d-%H%M%S)"}

log() { printf '[profile] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
command -v oha >/dev/null || die "oha is missing (cargo install oha --locked)"
perf stat -e task-clock true >/dev/null 2>&1 || die "perf cannot count here (perf_event_paranoid?)"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --example mock_upstream --bin tollgate
fi
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_work tollgate-profile

FULL_YAML=""
MODEL_LIMITS=""
AUTH_HEADER=()
if [ "${PROFILE_FULL:-1}" = 1 ]; then
    FULL_YAML="ledger:
  url: sqlite://$WORK/ledger.db
auth:
  managed_keys: true
teams:
  bench: { rpm: 1000000000, tpm: 4000000000, budget: { daily: 1000000 } }"
    MODEL_LIMITS=", rpm: 1000000000, tpm: 4000000000, budget: { daily: 1000000 }"
fi
cat >"$WORK/tollgate.yaml" <<EOF
server:
  listen: 127.0.0.1:$GW_PORT
logging:
  level: warn
$FULL_YAML
providers:
  mock:
    kind: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
models:
  - { name: bench, provider: mock, upstream_model: gpt-4o-mini$MODEL_LIMITS }
routes:
  - { name: bench, match: { model: bench }, retry: { attempts: 1 } }
EOF
if [ "${PROFILE_FULL:-1}" = 1 ]; then
    KEY=$("$ROOT/target/release/tollgate" keys create --config "$WORK/tollgate.yaml" --name bench --team bench \
        --rpm 1000000000 --tpm 4000000000 --budget-daily 1000000 2>/dev/null) || die "keys create failed"
    AUTH_HEADER=(-H "authorization: Bearer $KEY")
fi

taskset -c 0 "$ROOT/target/release/examples/mock_upstream" --listen "127.0.0.1:$MOCK_PORT" \
    >>"$OUT/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT"
RUST_LOG=warn taskset -c 1 "$ROOT/target/release/tollgate" serve --config "$WORK/tollgate.yaml" \
    --listen "127.0.0.1:$GW_PORT" >>"$OUT/tollgate.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_port "$GW_PORT"

BODY='{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about a fox."}],"max_tokens":64,"temperature":0.7}'
[ "$MODE" = stream ] && BODY=${BODY%\}}',"stream":true,"stream_options":{"include_usage":true}}'
URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
oha_run() { # seconds out
    taskset -c 0 oha --no-tui --output-format json --worker-threads 1 -w -z "${1}s" -c "$C" \
        -m POST -H 'content-type: application/json' "${AUTH_HEADER[@]}" -d "$BODY" "$URL" >"$2"
}

log "warm-up"
oha_run 2 "$WORK/warmup.json"
log "recording tollgate (pid $GW_PID) for ${SECS}s under c=$C $MODE load"
oha_run $((2 * SECS + 2)) "$OUT/oha.json" &
OHA=$!
sleep 1
perf record -e cpu-clock -F "$FREQ" --call-graph "dwarf,$STACK" -p "$GW_PID" -o "$OUT/perf.data" \
    -- sleep "$SECS" 2>"$OUT/perf-record.log"
# Then syscalls, counted by tracepoint over a second window of the same load
# (not during the recording: the tracepoints would show up in the profile).
SYSCALLS="read readv recvfrom write writev sendto sendmsg epoll_wait epoll_pwait futex sched_yield"
EVENTS=$(for s in $SYSCALLS; do
    perf list "syscalls:sys_enter_$s" 2>/dev/null | grep -q Tracepoint && printf -- '-e syscalls:sys_enter_%s ' "$s"
done)
if [ -n "$EVENTS" ]; then
    # shellcheck disable=SC2086
    perf stat $EVENTS -x, -o "$OUT/syscalls.csv" -p "$GW_PID" -- sleep "$SECS" 2>/dev/null || true
fi
wait "$OHA"

log "analysing (perf report can take a minute with DWARF call graphs)"
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.3 \
    2>/dev/null >"$OUT/self.txt"
perf report -i "$OUT/perf.data" --children --sort sym --stdio -g none --percent-limit 2 \
    2>/dev/null >"$OUT/children.txt"
perf script -i "$OUT/perf.data" -F comm,ip,sym,dso 2>/dev/null |
    python3 "$ROOT/bench/perf_categories.py" >"$OUT/categories.md"

python3 - "$OUT/oha.json" "$OUT/syscalls.csv" "$SECS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
rps = r['summary']['requestsPerSec']
print(f"load during the recording: {rps:.0f} req/s, "
      f"status {r['statusCodeDistribution']}, errors {r['errorDistribution'] or 'none'}")
try:
    rows = [l.split(",") for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")]
except OSError:
    rows = []
reqs = rps * float(sys.argv[3])
if rows and reqs:
    print("\n## Syscalls per request (≈, tracepoint counts / (req/s × seconds))\n")
    print("| syscall | per request |")
    print("|---|--:|")
    for row in rows:
        try:
            n = float(row[0])
        except ValueError:
            continue
        name = row[2].replace("syscalls:sys_enter_", "")
        if n:
            print(f"| {name} | {n / reqs:.2f} |")
EOF
echo
echo "## Top symbols, self time"
grep -E '^ +[0-9]' "$OUT/self.txt" | head -40
echo
echo "## tollgate's own functions, inclusive time"
grep -E '^ +[0-9]' "$OUT/children.txt" | grep -E 'tollgate::' | head -30
echo
cat "$OUT/categories.md"
log "perf data and reports in $OUT"
