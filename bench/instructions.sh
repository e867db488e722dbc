#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the same figure on every run
# of the same binaries, whatever else the machine is doing, so small changes
# can be compared on a noisy VM where bench/run.sh's CPU times wander by 40%.
# User-space instructions only: the kernel's socket work is not counted (it is
# about the same for tollgate and the bare proxy; bench/run.sh measures it).
#
#   bench/instructions.sh                 # 2,000 requests and 500 streams each
#   INSTR_REQUESTS=500 INSTR_STREAMS=100 bench/instructions.sh
#   INSTR_CONCURRENCY=16 bench/instructions.sh   # 16 connections at once
#   INSTR_KEEP=/tmp/cg bench/instructions.sh      # keep the callgrind dumps there
#                                                 # (for callgrind_annotate)
#
# tollgate runs bench/run.sh's all-on config (managed key of a team, key, team
# and model limits and budgets, the SQLite ledger); the bare proxy
# (examples/bare_proxy.rs) is counted the same way. One keep-alive client
# sends the requests one at a time (c=1; INSTR_CONCURRENCY clients at once
# otherwise, where the ledger writes larger batches, as under bench/run.sh's
# c=16), after a warm-up that is not counted.
# Needs valgrind, python3 and the release binaries (BENCH_SKIP_BUILD=1 skips
# the build). Uses three loopback ports from INSTR_PORT_BASE (19380). Never
# run from CI.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REQUESTS=${INSTR_REQUESTS:-2000}
STREAMS=${INSTR_STREAMS:-500}
CONCURRENCY=${INSTR_CONCURRENCY:-1}
PORT_BASE=${INSTR_PORT_BASE:-19380}
MOCK_PORT=$PORT_BASE
GW_PORT=$((PORT_BASE + 1))
BARE_PORT=$((PORT_BASE + 2))

log() { printf '[instructions] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind is missing"
command -v callgrind_control >/dev/null || die "callgrind_control is missing"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --example mock_upstream --example bare_proxy --bin tollgate
fi
T=$ROOT/target/release

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_work tollgate-instr

cat >"$WORK/tollgate.yaml" <<EOF
server:
  listen: 127.0.0.1:$GW_PORT
logging:
  level: warn
ledger:
  url: sqlite://$WORK/ledger.db
auth:
  managed_keys: true
teams:
  bench: { rpm: 1000000000, tpm: 4000000000, budget: { daily: 1000000, monthly: 9000000 } }
providers:
  mock:
    kind: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
models:
  - { name: bench, provider: mock, upstream_model: gpt-4o-mini, rpm: 1000000000, tpm: 4000000000, budget: { daily: 1000000 } }
routes:
  - name: bench
    match: { model: [bench] }
    retry: { attempts: 1 }
EOF
KEY=$("$T/tollgate" keys create --config "$WORK/tollgate.yaml" --name bench --team bench \
    --rpm 1000000000 --tpm 4000000000 --budget-daily 1000000 2>/dev/null) ||
    die "tollgate keys create failed"

"$T/examples/mock_upstream" --listen "127.0.0.1:$MOCK_PORT" --chunks 20 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT"

# Keep-alive clients: CONCURRENCY connections share N requests, each one at a
# time on its connection; every answer must be 200.
cat >"$WORK/client.py" <<'PY'
import http.client, sys, threading
port, n, stream, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "stream", sys.argv[4]
conns = int(sys.argv[5])
body = ('{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},'
        '{"role":"user","content":"Write one sentence about a fox."}],"max_tokens":64,"temperature":0.7'
        + (',"stream":true,"stream_options":{"include_usage":true}}' if stream else '}'))
failures = []
def client(count):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        conn.request("POST", "/v1/chat/completions", body,
                     {"content-type": "application/json", "authorization": "Bearer " + key})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200 or (stream and not data.endswith(b"data: [DONE]\n\n")):
            failures.append(f"HTTP {resp.status}: {data[:300]!r}")
            return
threads = [threading.Thread(target=client, args=(n // conns + (i < n % conns),)) for i in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failures:
    sys.exit(failures[0])
PY

# count NAME PORT MODE N COMMAND... : sets COUNT to the instructions per request of
# COMMAND under callgrind. Not run in $(...): its valgrind must be in PIDS, so that
# an early exit or Ctrl-C stops it too.
count() {
    local name=$1 port=$2 mode=$3 n=$4
    shift 4
    local out=$WORK/callgrind.$name.$mode
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" 30 # valgrind starts slowly
    python3 "$WORK/client.py" "$port" 20 "$mode" "$KEY" 1 || die "$name warm-up failed"
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control could not zero $name's counts"
    python3 "$WORK/client.py" "$port" "$n" "$mode" "$KEY" "$CONCURRENCY" || die "$name $mode failed"
    callgrind_control -d "$pid" >/dev/null 2>&1 || die "callgrind_control could not dump $name's counts"
    local total=0 f
    for _ in $(seq 1 100); do
        total=$(cat "$out".* 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }')
        [ "$total" -gt 0 ] && break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -n "${INSTR_KEEP:-}" ]; then
        mkdir -p "$INSTR_KEEP"
        cat "$out".* >"$INSTR_KEEP/callgrind.$name.$mode.c$CONCURRENCY"
    fi
    for f in "$out".*; do rm -f "$f"; done
    [ "$total" -gt 0 ] || die "no callgrind dump for $name"
    COUNT=$((total / n))
}

# Set here, not through env(1): valgrind would count env, not what it runs.
export RUST_LOG=warn
log "counting $REQUESTS requests and $STREAMS streams through each proxy (takes a few minutes)"
declare -A R
for mode in plain stream; do
    n=$REQUESTS
    [ "$mode" = stream ] && n=$STREAMS
    count bare "$BARE_PORT" "$mode" "$n" \
        "$T/examples/bare_proxy" --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$MOCK_PORT"
    R[bare.$mode]=$COUNT
    count tollgate "$GW_PORT" "$mode" "$n" "$T/tollgate" serve --config "$WORK/tollgate.yaml"
    R[tollgate.$mode]=$COUNT
done

REV=$(git describe --always --dirty 2>/dev/null || echo unknown)
echo "| $REV, c=$CONCURRENCY | bare proxy | tollgate | tollgate ÷ bare |"
echo "|---|--:|--:|--:|"
for mode in plain stream; do
    label="instructions per non-streaming request"
    [ "$mode" = stream ] && label="instructions per 20-chunk stream"
    awk -v l="$label" -v b="${R[bare.$mode]}" -v t="${R[tollgate.$mode]}" \
        'BEGIN { printf "| %s | %d | %d | %.2f× |\n", l, b, t, t / b }'
done
