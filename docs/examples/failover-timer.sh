#!/usr/bin/env bash
# An independent failover timer, outside raftlm bench: starts `raftlm demo`,
# then KILLS times finds the process that holds the access point's listening
# socket (ss), kills it with SIGKILL, and runs fresh `raftlm checkout`
# processes against the access point until one is granted; prints each time
# (kill to granted, wall clock, including each checkout's process start) and
# restarts the killed node from its config.
#
#   docs/examples/failover-timer.sh [KILLS] [RAFTLM_BINARY]
#
# Needs `ss` (iproute2). Uses 127.0.0.1:27001-27003, 127.0.0.100:27000 and
# their peer ports (the demo's), so no other demo may run.
set -euo pipefail
kills=${1:-20}
bin=$(realpath "${2:-target/release/raftlm}")
dir=$(mktemp -d)
"$bin" demo --dir "$dir" > "$dir/demo.out" 2>&1 &
demo=$!
cleanup() {
    kill "$demo" 2> /dev/null || true
    pkill -f "raftlm server --config $dir" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ap=127.0.0.100:27000
export RAFTLM_CA=$dir/tls/ca.crt RAFTLM_CERT=$dir/tls/admin.crt RAFTLM_KEY=$dir/tls/admin.key
for _ in $(seq 100); do
    "$bin" status --server "$ap" > /dev/null 2>&1 && break
    sleep 0.2
done
sleep 3
times=()
for round in $(seq "$kills"); do
    pid=$(ss -ltnpH "src $ap" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    [ -n "$pid" ] || { echo "nobody holds $ap" >&2; exit 1; }
    config=$(tr '\0' ' ' < "/proc/$pid/cmdline" | grep -o -- '--config [^ ]*' | cut -d' ' -f2)
    start=$(date +%s%N)
    kill -9 "$pid"
    until "$bin" checkout cad --hold 0s --server "$ap" > /dev/null 2>&1; do :; done
    took=$(( ($(date +%s%N) - start) / 1000000 ))
    times+=("$took")
    echo "kill $round/$kills of pid $pid: granted after $took ms"
    (cd "$dir" && exec "$bin" server --config "$config" >> "$dir/restarted.log" 2>&1 &) 2> /dev/null
    sleep 3
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
n=${#times[@]}
median=$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")
max=$(echo "$sorted" | tail -1)
echo "independent timer: $n kills, median $median ms, max $max ms"
