#!/usr/bin/env bash
# bench/instructions.sh: Gatehouse's user-space instructions per session, counted by
# callgrind. Two workloads with bench/loadgen, 4 clients:
#   smtp     connect, greeting, QUIT, 221, close (the listener answers itself)
#   handoff  greeting, EHLO, MAIL, RCPT, DATA, a short message, QUIT, handed to a loadgen
#            sink through an x:Destination
# One worker on the epoll engine (valgrind does not run io_uring); the count is zeroed after
# a warm-up of 200 sessions and read after --sessions more. The count moves by well under 1%
# between runs, so it shows what a change to the session path costs in user space where
# CPU-second ratios move by ±10%. The kernel's share is not in it (bench/syscalls.sh).
#
#   bench/instructions.sh [--sessions N] [--binary PATH]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=2000
GH=$ROOT/build/gatehouse
while [ $# -gt 0 ]; do
    case "$1" in
    --sessions) N=$2; shift ;;
    --binary) GH=$(realpath "$2"); shift ;;
    *) echo "usage: bench/instructions.sh [--sessions N] [--binary PATH]" >&2; exit 2 ;;
    esac
    shift
done
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
sink_setup instructions

# usage: measure smtp|handoff → "instructions per session"
measure() {
    local kind=$1 api=$((BASE + 10)) port=$((BASE + 11)) mode=smtp sink=""
    rm -rf "$TMP/data" "$TMP"/cg.out*
    mkdir -p "$TMP/data"
    spawn "$TMP/gatehouse.log" env GATEHOUSE_ADMIN_SECRET="$SECRET" valgrind --tool=callgrind \
        --callgrind-out-file="$TMP/cg.out" "$GH" serve --data "$TMP/data" \
        --http "127.0.0.1:$api" --workers 1 --engine epoll
    local pid=$LAST
    wait_port "$api" 60
    [ "$kind" = handoff ] && mode=transaction sink=$BASE
    smtp_listener "$api" "$port" "$SECRET" "$sink" "$TMP/set.json"
    "$LG" --conc 4 --mode $mode --ports "$port" --duration 60 --max-ops 200 >/dev/null
    sleep 1
    callgrind_control -z "$pid" >/dev/null 2>&1
    "$LG" --conc 4 --mode $mode --ports "$port" --duration 300 --max-ops "$N" >"$TMP/load.txt"
    grep -q "errors=0" "$TMP/load.txt" || { cat "$TMP/load.txt" >&2; exit 1; }
    sleep 1
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    stop_pid "$pid"
    local total
    total=$(grep -h '^summary:' "$TMP"/cg.out.1 | awk '{print $2}')
    echo $((total / N))
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') · bench/instructions.sh --sessions $N · Gatehouse $(git rev-parse --short HEAD 2>/dev/null || echo '?') · epoll, 1 worker"
echo "| workload | sessions | user-space instructions per session |"
echo "|---|---|---|"
for kind in smtp handoff; do
    echo "| $kind | $N | $(measure $kind) |"
done
