#!/usr/bin/env bash
# bench/observability.sh: what seeing costs. (1) Plain SMTP sessions per second with the
# session log on against off (--session-log), the two taking turns over several passes, the
# log going to a file (--log-file); (2) GET /metrics/prometheus on a daemon serving 1,000
# listeners, timed over 20 scrapes. Prints the results and appends them, with the command
# and the date, to docs/BENCHMARKS.md (unless --no-append). Bounded: about a minute; stops
# everything it started.
#
#   bench/observability.sh [--workers N] [--passes N] [--duration S] [--no-append]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORKERS=$(nproc)
PASSES=3
DUR=3
APPEND=1
CONC=64
BUILD=${BUILD:-build}
CMDLINE="bench/observability.sh${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
    --workers) WORKERS=$2; shift ;;
    --passes) PASSES=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --no-append) APPEND=0 ;;
    *) echo "usage: bench/observability.sh [--workers N] [--passes N] [--duration S] [--no-append]" >&2
       exit 2 ;;
    esac
    shift
done
[ "$PASSES" -le 10 ] && [ "$DUR" -le 10 ] || { echo "at most 10 passes of 10 s" >&2; exit 2; }

make BUILD="$BUILD" -j2 >&2
make -s -f bench/Makefile BUILD="$BUILD" >&2
LG="$ROOT/$BUILD/bench/loadgen"
GH="$ROOT/$BUILD/gatehouse"
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/gatehouse-obs.XXXXXX)
SECRET="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
PID=""
stop() { # graceful, then forced, bounded to 12 s
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
cleanup() { stop; [ -n "${BENCH_KEEP:-}" ] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
api() { # JSON body → response on stdout
    curl -sf -H "Authorization: Bearer $SECRET" -H 'Content-Type: application/json' \
        --data-binary @- "http://127.0.0.1:$API/api"
}
start() { # extra args...
    API=$(free_port)
    rm -rf "$TMP/data"
    GATEHOUSE_ADMIN_SECRET=$SECRET "$GH" serve --data "$TMP/data" --http "127.0.0.1:$API" \
        --workers "$WORKERS" "$@" >>"$TMP/gatehouse.out" 2>&1 &
    PID=$!
    wait_port "$API" || { tail "$TMP/gatehouse.out" >&2; exit 1; }
}
smtp_listener() { # port
    printf '{"using":["urn:ietf:params:jmap:core","urn:stalwart:jmap"],"methodCalls":[["x:NetworkListener/set",{"create":{"s":{"name":"smtp","protocol":"smtp","bind":["127.0.0.1:%s"],"useTls":false}}},"c"]]}' "$1" |
        api | grep -q '"created":{"s"' || { echo "could not create the SMTP listener" >&2; exit 1; }
}

# ---- 1: sessions per second, session log on and off ----
declare -A OPS SECS CPU
OPS[on]=0; OPS[off]=0; SECS[on]=0; SECS[off]=0; CPU[on]=0; CPU[off]=0
for pass in $(seq 1 "$PASSES"); do
    order="on off"
    [ $((pass % 2)) = 0 ] && order="off on"
    for mode in $order; do
        start --session-log "$mode" --log-file "$TMP/session-$mode.log"
        PORT=$(free_port)
        smtp_listener "$PORT"
        out=$("$LG" --label "log-$mode" --mode smtp --ports "$PORT" --conc "$CONC" \
            --duration "$DUR" --pid "$PID" 2>>"$TMP/loadgen.err" | grep '^RESULT ' || true)
        stop
        ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<<"$out")
        secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$out")
        cpu=$(sed -n 's/.* server_cpu_s=\([0-9.]*\).*/\1/p' <<<"$out")
        [ -n "$ops" ] || { echo "no result for log $mode: $(tail -3 "$TMP/loadgen.err")" >&2; exit 1; }
        OPS[$mode]=$((OPS[$mode] + ops))
        SECS[$mode]=$(python3 -c "print(${SECS[$mode]} + $secs)")
        CPU[$mode]=$(python3 -c "print(${CPU[$mode]} + ${cpu:-0})")
        echo "pass $pass, session log $mode: $(python3 -c "print(round($ops / $secs))") sessions/s" >&2
    done
done
LINES=$(cat "$TMP"/session-on.log | grep -c ' session ' || true)
read -r RATE_ON RATE_OFF RATIO CPU_ON CPU_OFF CPU_RATIO < <(python3 -c "
on, off = ${OPS[on]} / ${SECS[on]}, ${OPS[off]} / ${SECS[off]}
con = ${OPS[on]} / max(${CPU[on]}, 0.01)
coff = ${OPS[off]} / max(${CPU[off]}, 0.01)
print(round(on), round(off), '%.3f' % (on / off), round(con), round(coff), '%.3f' % (con / coff))")

# ---- 2: a scrape of 1,000 listeners ----
start --session-log off
BASE=$(free_port)
BASE=$((BASE > 60000 ? 20000 : BASE))
for half in 0 500; do
    python3 - "$BASE" "$half" >"$TMP/create.json" <<'EOF'
import json, sys
base, half = int(sys.argv[1]), int(sys.argv[2])
create = {f"l{i}": {"name": f"l{i}", "protocol": "smtp", "useTls": False,
                    "bind": [f"127.0.0.{10 + i // 250}:{base + i % 250}"]}
          for i in range(half, half + 500)}
print(json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
                  "methodCalls": [["x:NetworkListener/set", {"create": create}, "c"]]}))
EOF
    api <"$TMP/create.json" >"$TMP/created-$half.json"
done
CREATED=$(python3 -c "
import json
n = 0
for h in (0, 500):
    r = json.load(open('$TMP/created-%d.json' % h))['methodResponses'][0][1]
    n += len(r.get('created') or {})
print(n)")
# one session on every listener, so each has its series and a session histogram
for i in 0 1 2 3; do
    "$LG" --label warm --mode smtp --host "127.0.0.$((10 + i))" --ports "$BASE-$((BASE + 249))" \
        --conc 8 --max-ops 250 --duration 10 >>"$TMP/warm.out" 2>>"$TMP/loadgen.err" || true
done
TIMES=""
for _ in $(seq 1 20); do
    t=$(curl -sf -o "$TMP/scrape.txt" -w '%{time_total}' -H "Authorization: Bearer $SECRET" \
        "http://127.0.0.1:$API/metrics/prometheus")
    TIMES="$TIMES $t"
done
SIZE=$(wc -c <"$TMP/scrape.txt")
SERIES=$(grep -vc '^#' "$TMP/scrape.txt")
read -r MED MAX < <(python3 -c "
import statistics
t = [float(x) * 1000 for x in '$TIMES'.split()]
print('%.1f' % statistics.median(t), '%.1f' % max(t))")
[ -n "${OBS_HOLD:-}" ] && { echo "holding: API $API secret $SECRET" >&2; sleep "$OBS_HOLD"; }
stop

REPORT="$TMP/report.md"
{
    echo
    echo "### Observability: $(date -u +%Y-%m-%d), $WORKERS workers, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "Command: \`$CMDLINE\` (plain SMTP, $CONC clients, $PASSES passes of $DUR s each way, taking turns)"
    echo
    echo "| measure | result |"
    echo "|---|---|"
    echo "| plain SMTP sessions/s, session log off | $RATE_OFF |"
    echo "| plain SMTP sessions/s, session log on (to a file) | $RATE_ON |"
    echo "| on / off (at least 0.9) | $RATIO |"
    echo "| sessions per server CPU-second, log off / on | $CPU_OFF / $CPU_ON |"
    echo "| on / off per CPU-second (steadier on a shared machine) | $CPU_RATIO |"
    echo "| session lines written in the last \"on\" run | $LINES |"
    echo "| GET /metrics/prometheus with $CREATED listeners, median of 20 (curl total time) | $MED ms |"
    echo "| the same, slowest of 20 | $MAX ms |"
    echo "| scrape size | $SIZE bytes, $SERIES samples |"
} >"$REPORT"
cat "$REPORT"
if [ "$APPEND" = 1 ]; then
    cat "$REPORT" >>docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md" >&2
fi
