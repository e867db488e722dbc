# Sourced by the bench/*.sh scripts (which define `die` first).

# A work directory and the processes started in it, all gone when the script
# exits, however it exits. Sets WORK and PIDS; add each started pid to PIDS.
bench_work() { # name-prefix
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# Waits until something listens on the loopback port (default 10 s).
wait_port() { # port [seconds]
    local port=$1 tries=$((${2:-10} * 20)) i
    for i in $(seq 1 "$tries"); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$port"
}
