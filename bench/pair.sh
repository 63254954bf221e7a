#!/usr/bin/env bash
# bench/pair.sh: two Gatehouse builds (or one against itself) alive at once on loopback, the
# same workload against each in turn, the order reversed every pass, and the ratio of their
# sessions per server CPU-second taken within each pass. A change of a few percent is lost in
# bench/run.sh's spread between runs (the machine drifts by more than that); within a pass
# both daemons see the same machine. Run the same binary as both to see the pairing's own
# spread: a ratio inside it is not settled.
#
#   bench/pair.sh [--workload smtp|handoff|tls-full|tls-resumed] [--clients N] [--passes N]
#                 [--seconds S] [--engine epoll|io_uring] [--workers N]
#                 [--mode alternate|together] OLD NEW
#
# --mode together: each pass is one load client whose sessions alternate between the two
# (--clients in all, 5,000 sessions for each of --seconds, each server serving half of them),
# and the ratio is that of their CPU time (the scheduler's, summed over their threads): both
# see the same moments of the machine, not neighbouring ones.
#
# smtp: connect, greeting, QUIT (the listener answers itself); handoff: a short SMTP
# transaction handed to a loadgen sink through an x:Destination; tls-full and tls-resumed: an
# implicit-TLS handshake (full, or resuming the client's last ticket from that server) and
# the greeting. Prints one line per pass and the median ratio NEW/OLD with its range. OLD may
# be the word `floor`: bench/floor.c on the same engine (relaying to the sink for hand-offs),
# which gives SPEC §17's "× io_uring floor" within each pass; or `nginx`: nginx with
# bench/nginx.conf.in (its mail module for smtp, its stream module for the others: the better
# peer in each of these workloads in bench/run.sh's tables), which gives "× peers". Bounded:
# at most 64 passes of at most 30 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
USAGE='usage: bench/pair.sh [--workload smtp|handoff|tls-full|tls-resumed] [--clients N] [--passes N] [--seconds S] [--engine epoll|io_uring] [--workers N] [--mode alternate|together] OLD NEW'
WORK=smtp CLIENTS=64 PASSES=8 SECS=3 ENGINE=io_uring WORKERS=2 PAIRING=alternate
while [ $# -gt 2 ]; do
    case "$1" in
    --workload) WORK=$2 ;;
    --clients) CLIENTS=$2 ;;
    --passes) PASSES=$2 ;;
    --seconds) SECS=$2 ;;
    --engine) ENGINE=$2 ;;
    --workers) WORKERS=$2 ;;
    --mode) PAIRING=$2 ;;
    *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift 2
done
[ $# = 2 ] || { echo "$USAGE" >&2; exit 2; }
OLD=$1 NEW=$2
for b in OLD NEW; do
    case ${!b} in floor | nginx) ;; *) printf -v "$b" '%s' "$(realpath "${!b}")" ;; esac
done
case $OLD$NEW:$WORK in *floor*:tls-*)
    echo "the floor speaks no TLS: tls workloads pair Gatehouse builds or nginx" >&2
    exit 2 ;;
esac
if [ "$OLD" = nginx ] && [ "$NEW" = nginx ]; then
    echo "one nginx at a time (both would write the same pid file)" >&2
    exit 2
fi
EXTRA=()
case $WORK in
smtp) MODE=smtp ;;
handoff) MODE=transaction ;;
tls-full) MODE=tls ;;
tls-resumed) MODE=tls EXTRA=(--resume) ;;
*) echo "$USAGE" >&2; exit 2 ;;
esac
case $ENGINE in epoll | io_uring) ;; *) echo "$USAGE" >&2; exit 2 ;; esac
case $PAIRING in alternate | together) ;; *) echo "$USAGE" >&2; exit 2 ;; esac
for n in "$CLIENTS" "$PASSES" "$SECS" "$WORKERS"; do
    case $n in '' | *[!0-9]* | 0) echo "$USAGE" >&2; exit 2 ;; esac
done
if [ "$PASSES" -gt 64 ] || [ "$SECS" -gt 30 ]; then
    echo "at most 64 passes of 30 s" >&2
    exit 2
fi
ulimit -n "$(ulimit -Hn)" # nginx's workers take the limit they start with
sink_setup pair
bench_cert "$TMP" # nginx's configuration names it in every case
CERTS=""
[ "$MODE" = tls ] && CERTS=$TMP

# nginx with bench/nginx.conf.in: the workload's server on port, the others on ports from
# spare up (bound, never used); its pid in LAST
nginx_start() { # name port spare
    local p=$2 s=$3 plain tls stream handoff
    plain=$s tls=$((s + 1)) stream=$((s + 2)) handoff=$((s + 3))
    case $WORK in smtp) plain=$p ;; handoff) handoff=$p ;; *) stream=$p ;; esac
    (SINK=$BASE SINK_TLS=$((s + 4)) NOFILE=$(ulimit -n) MAX_IDLE=1000 fill bench/nginx.conf.in \
        "$plain" "$tls" $((s + 5)) "$stream" $((s + 6)) $((s + 7)) "$handoff") >"$TMP/$1.conf"
    spawn "$TMP/$1.log" nginx -c "$TMP/$1.conf" -p "$TMP"
    wait_port "$p" 10 || { cat "$TMP/$1.log" "$TMP/nginx-error.log" >&2; exit 1; }
    local pid=$LAST # its workers' processes, counted with it, are started after the listen
    for _ in $(seq 1 50); do
        [ "$(pgrep -c -P "$pid")" -ge "$WORKERS" ] && break
        sleep 0.1
    done
}

# start name binary|floor|nginx api-port listener-port: a daemon with one SMTP listener (plain,
# or implicit TLS for the tls workloads; for hand-offs the sink as its destination), the floor
# or nginx; its pid, with its worker processes' (nginx), in PIDS[name]
start() {
    local name=$1 bin=$2 api=$3 port=$4 backend=""
    [ "$WORK" = handoff ] && backend=$BASE
    if [ "$bin" = floor ]; then
        floor_start "$ROOT/build/bench/floor" "$ENGINE" "$port" "$WORKERS" "$TMP/$name.log" "$backend"
    elif [ "$bin" = nginx ]; then
        nginx_start "$name" "$port" $((api + 20))
    else
        gatehouse_start "$bin" "$ENGINE" "$WORKERS" "$api" "$port" "$backend" "$TMP/$name" "$CERTS"
    fi
    PIDS[$name]=$(with_children "$LAST")
}

# measure pids port → sessions per server CPU-second of one run (0 when it had errors)
measure() {
    local out
    out=$("$LG" --conc "$CLIENTS" --mode "$MODE" "${EXTRA[@]}" --ports "$2" --duration "$SECS" \
        --pid "$1") || true
    case $out in *" errors=0 "*) ;; *) echo 0; return ;; esac
    printf '%s\n' "$out" | sed -n 's/.* ops_per_server_cpu_s=\([0-9]*\).*/\1/p'
}

# cpu_ns pid,pid… → nanoseconds their threads have run (the scheduler's count, not ticks)
cpu_ns() {
    local p
    for p in ${1//,/ }; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done |
        awk '{s += $1} END {printf "%.0f\n", s}'
}

# together → "old new": sessions per server CPU-second of each, from one load client whose
# sessions alternate between them, so each serves half of them (0 0 when it had errors)
together() {
    local o0 n0 o1 n1 out ops reused
    o0=$(cpu_ns "${PIDS[old]}") n0=$(cpu_ns "${PIDS[new]}")
    out=$("$LG" --conc "$CLIENTS" --mode "$MODE" "${EXTRA[@]}" --ports "$1" \
        --max-ops $((SECS * 5000)) --duration $((SECS * 10)) --timeout 30000) || true
    o1=$(cpu_ns "${PIDS[old]}") n1=$(cpu_ns "${PIDS[new]}")
    case $out in *" errors=0 "*) ;; *) echo "0 0"; return ;; esac
    if [ $((o1 - o0)) -le 0 ] || [ $((n1 - n0)) -le 0 ]; then
        echo "0 0" # no scheduler statistics for these threads
        return
    fi
    ops=$(printf '%s\n' "$out" | sed -n 's/.* ops=\([0-9]*\) .*/\1/p')
    reused=$(printf '%s\n' "$out" | sed -n 's/.* reused=\([0-9]*\).*/\1/p')
    echo "$((ops * 500000000 / (o1 - o0))) $((ops * 500000000 / (n1 - n0)))" \
        "${reused:+resumed=$((reused * 100 / ops))%}"
}

declare -A PIDS
start old "$OLD" $((BASE + 10)) $((BASE + 11))
start new "$NEW" $((BASE + 20)) $((BASE + 21))
for port in $((BASE + 11)) $((BASE + 21)); do # warm both: caches, block pools, timers
    "$LG" --conc "$CLIENTS" --mode "$MODE" "${EXTRA[@]}" --ports "$port" --duration 1 >/dev/null
done
echo "# $(date -u '+%Y-%m-%d %H:%M UTC') · bench/pair.sh --workload $WORK --clients $CLIENTS --passes $PASSES --seconds $SECS --engine $ENGINE --workers $WORKERS --mode $PAIRING"
echo "# old $OLD · new $NEW"
for p in $(seq 1 "$PASSES"); do
    if [ "$PAIRING" = together ]; then
        ports="$((BASE + 11)),$((BASE + 21))"
        [ $((p % 2)) = 1 ] || ports="$((BASE + 21)),$((BASE + 11))"
        read -r a b rest < <(together "$ports")
    elif [ $((p % 2)) = 1 ]; then
        a=$(measure "${PIDS[old]}" $((BASE + 11)))
        b=$(measure "${PIDS[new]}" $((BASE + 21)))
    else
        b=$(measure "${PIDS[new]}" $((BASE + 21)))
        a=$(measure "${PIDS[old]}" $((BASE + 11)))
    fi
    echo "pass $p old=$a new=$b${rest:+ $rest}"
done | tee "$TMP/passes"
python3 - "$TMP/passes" <<'PY'
import statistics, sys
r = []
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split()[2:])
    if int(f["old"]) and int(f["new"]):
        r.append(int(f["new"]) / int(f["old"]))
if not r:
    sys.exit("no pass without errors")
print(f"new/old per server CPU-second: median {statistics.median(r):.3f} "
      f"({min(r):.2f}-{max(r):.2f}, {len(r)} passes)")
PY
