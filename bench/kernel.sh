#!/usr/bin/env bash
# bench/kernel.sh: what the kernel does for one session of Gatehouse and of the floor
# (bench/floor.c), on the same engine, side by side: the ring's requests by kind, the system
# calls by name, receives that failed for want of a provided buffer (ENOBUFS), polls the ring
# armed (a receive that found nothing yet), receives that found the socket empty (EAGAIN: a
# ring receive tried before its poll, or a read until EAGAIN; kernels from 6.3 trace it), and
# the server's CPU split into user and system time (the kernel's tick sampling: a few
# percent). Where the two servers make the same requests and calls, what is left between
# their CPU per session is user space.
#
#   bench/kernel.sh [--workload smtp|handoff] [--clients N] [--seconds S] [--engine E]
#                   [--binary PATH]
#
# Counted with `perf record` of tracepoints on the server's processes (the rate it leaves
# is lower; the counts per session are not). Bounded: one run of at most 30 s per server.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
USAGE='usage: bench/kernel.sh [--workload smtp|handoff] [--clients N] [--seconds S] [--engine epoll|io_uring] [--binary PATH]'
WORK=handoff CLIENTS=1024 SECS=3 ENGINE=io_uring GH=$ROOT/build/gatehouse
while [ $# -gt 0 ]; do
    case "$1" in
    --workload) WORK=$2 ;;
    --clients) CLIENTS=$2 ;;
    --seconds) SECS=$2 ;;
    --engine) ENGINE=$2 ;;
    --binary) GH=$(realpath "$2") ;;
    *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift 2
done
case $WORK in smtp) MODE=smtp ;; handoff) MODE=transaction ;; *) echo "$USAGE" >&2; exit 2 ;; esac
case $ENGINE in epoll | io_uring) ;; *) echo "$USAGE" >&2; exit 2 ;; esac
case $CLIENTS$SECS in '' | *[!0-9]*) echo "$USAGE" >&2; exit 2 ;; esac
if [ "$CLIENTS" -lt 1 ] || [ "$SECS" -lt 1 ] || [ "$SECS" -gt 30 ]; then
    echo "$USAGE (at least one client, 1 to 30 seconds)" >&2
    exit 2
fi
command -v perf >/dev/null || { echo "needs perf (linux-perf)" >&2; exit 1; }
sink_setup kernel
SINK=""
[ "$WORK" = handoff ] && SINK=$BASE
floor_start "$ROOT/build/bench/floor" "$ENGINE" $((BASE + 1)) 2 "$TMP/floor.log" "$SINK"
FLOOR_PID=$LAST
gatehouse_start "$GH" "$ENGINE" 2 $((BASE + 2)) $((BASE + 3)) "$SINK" "$TMP/gatehouse"
GH_PID=$LAST

EMPTY=()
perf list sock:sock_recv_length 2>/dev/null | grep -q sock_recv_length &&
    EMPTY=(-e sock:sock_recv_length --filter 'ret == -11')

# measure name pid port: one run under perf; its counts in $TMP/name.txt
measure() {
    local name=$1 pid=$2 port=$3 before after
    "$LG" --conc "$CLIENTS" --mode "$MODE" --ports "$port" --duration 1 >/dev/null # warm
    before=$(cut -d' ' -f14,15 "/proc/$pid/stat")
    perf record -q -o "$TMP/$name.data" -p "$pid" -e io_uring:io_uring_submit_req \
        -e io_uring:io_uring_complete --filter 'res == -105' -e io_uring:io_uring_poll_arm \
        -e raw_syscalls:sys_enter "${EMPTY[@]}" -- "$LG" --conc "$CLIENTS" --mode "$MODE" \
        --ports "$port" --duration "$SECS" --pid "$pid" >"$TMP/$name.out" 2>/dev/null
    after=$(cut -d' ' -f14,15 "/proc/$pid/stat")
    grep -q ' errors=0 ' "$TMP/$name.out" || { echo "$name: $(cat "$TMP/$name.out")" >&2; exit 1; }
    { echo "ops $(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' "$TMP/$name.out")"
      echo "cpu $before $after"
      perf script -i "$TMP/$name.data" -F event,trace 2>/dev/null; } >"$TMP/$name.txt"
}
measure floor "$FLOOR_PID" $((BASE + 1))
measure gatehouse "$GH_PID" $((BASE + 3))

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') · bench/kernel.sh --workload $WORK --clients $CLIENTS --seconds $SECS --engine $ENGINE · Gatehouse $(git rev-parse --short HEAD 2>/dev/null || echo '?') · $GH"
python3 - "$TMP/floor.txt" "$TMP/gatehouse.txt" <<'PY'
import collections, os, re, sys
# x86-64 numbers of the calls these servers make
NAMES = {0: "read", 1: "write", 3: "close", 7: "poll", 9: "mmap", 10: "mprotect",
         28: "madvise", 41: "socket", 42: "connect", 44: "sendto", 45: "recvfrom", 48: "shutdown", 54: "setsockopt", 232: "epoll_wait",
         233: "epoll_ctl", 257: "openat", 281: "epoll_pwait", 288: "accept4",
         426: "io_uring_enter"}
def per_session(path):
    c, ops, cpu = collections.Counter(), 1, None
    for line in open(path):
        if line.startswith("ops "):
            ops = int(line.split()[1])
        elif line.startswith("cpu "):
            u0, s0, u1, s1 = map(int, line.split()[1:])
            cpu = (u1 - u0, s1 - s0)
        elif (m := re.search(r"submit_req.*opcode (\w+)", line)):
            c["ring " + m.group(1)] += 1
        elif "io_uring_complete" in line:
            c["ring receive without a buffer (ENOBUFS)"] += 1
        elif "sock_recv_length" in line:
            c["receive found the socket empty (EAGAIN)"] += 1
        elif "poll_arm" in line:
            c["ring poll armed"] += 1
        elif (m := re.search(r"NR (\d+)", line)):
            c["call " + NAMES.get(int(m.group(1)), "nr " + m.group(1))] += 1
            c["call (all)"] += 1
    hz = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in these ticks
    out = {k: v / ops for k, v in c.items()}
    if cpu:
        out["CPU µs user"] = cpu[0] / hz * 1e6 / ops
        out["CPU µs system"] = cpu[1] / hz * 1e6 / ops
    return out, ops
floor, nf = per_session(sys.argv[1])
gh, ng = per_session(sys.argv[2])
print(f"sessions measured: floor {nf:,}, Gatehouse {ng:,}\n")
print("| per session | floor | Gatehouse |\n|---|---|---|")
for k in sorted(set(floor) | set(gh), key=lambda k: (k.startswith("CPU"), k)):
    if max(floor.get(k, 0), gh.get(k, 0)) < 0.005:
        continue  # a call of the run's edges (a log file, a timer), not of the sessions
    print(f"| {k} | {floor.get(k, 0):.2f} | {gh.get(k, 0):.2f} |")
PY
