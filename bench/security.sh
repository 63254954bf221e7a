#!/usr/bin/env bash
# bench/security.sh: plain SMTP sessions/s with 100,000 x:BlockedIp entries loaded against
# none (SPEC §11: at least 0.95×). Two stores, one empty and one with the entries; the
# daemon is started on each in turn, PASSES times, and bench/loadgen measures the same
# plain SMTP listener. The entries sit where the look-up walks deepest: 50,000 addresses
# around the load generator's own sources (127.0.0.17-255, 127.1.0.0 onwards) and 50,000
# /24 ranges in 10/8, so every session's look-up goes down the tree to the end.
# bench/lookup.c times the look-up alone (nanoseconds, no network), which machine load
# does not blur the way it blurs sessions/s.
# Bounded: PASSES × 2 × DUR seconds of load (default 3 × 2 × 5 s) plus start-ups.
#
#   bench/security.sh [--passes N] [--duration S] [--conc N]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PASSES=3 DUR=5 CONC=64 ENTRIES=100000
while [ $# -gt 0 ]; do
    case "$1" in
    --passes) PASSES=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --conc) CONC=$2; shift ;;
    *) echo "usage: bench/security.sh [--passes N] [--duration S] [--conc N]" >&2; exit 2 ;;
    esac
    shift
done
[ "$PASSES" -le 10 ] && [ "$DUR" -le 30 ] || { echo "at most 10 passes of 30 s" >&2; exit 2; }
BUILD=${BUILD:-build}
WORKERS=$(nproc)
make BUILD="$BUILD" -j2 >&2
make -s -f bench/Makefile BUILD="$BUILD" >&2
LG="$ROOT/$BUILD/bench/loadgen"
cc -O2 -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc -o "$BUILD/bench/lookup" bench/lookup.c \
    src/security/table.c src/security/guard.c src/net/addr.c src/core/err.c -lpthread
GH="$ROOT/$BUILD/gatehouse"
SECRET="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
TMP=$(mktemp -d /tmp/gatehouse-secbench.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port)
SMTP=$(free_port)
wait_port() {
    local i
    for i in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
start() { # data dir
    GATEHOUSE_ADMIN_SECRET=$SECRET "$GH" serve --data "$1" --http "127.0.0.1:$API" \
        --workers "$WORKERS" >>"$TMP/gatehouse.log" 2>&1 &
    PID=$!
    wait_port "$API" || { tail "$TMP/gatehouse.log" >&2; exit 1; }
    wait_port "$SMTP" || { tail "$TMP/gatehouse.log" >&2; exit 1; }
}
stop() {
    kill -TERM "$PID"
    wait "$PID" || true
    PID=""
}
api() {
    curl -sS --max-time 60 -H "Authorization: Bearer $SECRET" -H 'Content-Type: application/json' \
        --data-binary "$1" "http://127.0.0.1:$API/jmap"
}
setup() { # data dir: a store with the plain SMTP listener
    mkdir -p "$1"
    GATEHOUSE_ADMIN_SECRET=$SECRET "$GH" serve --data "$1" --http "127.0.0.1:$API" \
        --workers "$WORKERS" >>"$TMP/gatehouse.log" 2>&1 &
    PID=$!
    wait_port "$API" || exit 1
    api '{"using":["urn:ietf:params:jmap:core","urn:stalwart:jmap"],"methodCalls":[["x:NetworkListener/set",{"create":{"p":{"name":"plain","useTls":false,"maxConnections":100000,"bind":["127.0.0.1:'"$SMTP"'"]}}},"0"]]}' |
        grep -q '"created":{"p"' || { echo "listener not created" >&2; exit 1; }
    stop
}

setup "$TMP/none"
setup "$TMP/loaded"
# The entries go straight into the store: creating 100,000 objects one /set at a time is
# not what is measured here.
python3 - "$TMP/loaded/gatehouse.db" "$ENTRIES" <<'PY'
import json, sqlite3, sys
db, n = sqlite3.connect(sys.argv[1]), int(sys.argv[2])
def address(i):
    if i < 239:
        return f"127.0.0.{17 + i}"
    if i < n // 2:
        k = (1 << 16) + i
        return f"127.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"
    k = i - n // 2
    return f"10.{k >> 8 & 255}.{k & 255}.0/24"
rows = [("x:BlockedIp", f"bench{i:07d}",
         json.dumps({"address": address(i), "reason": "manual",
                     "createdAt": "2026-01-01T00:00:00Z", "expiresAt": None}))
        for i in range(n)]
db.executemany("INSERT INTO objects (type, id, json) VALUES (?, ?, ?)", rows)
db.commit()
PY

measure() { # label data dir → one RESULT line
    start "$2"
    sleep 0.5
    "$LG" --mode smtp --label "$1" --ports "$SMTP" --conc "$CONC" --duration "$DUR" \
        --src 16 --pid "$PID" 2>>"$TMP/loadgen.err" | grep '^RESULT' | tee -a "$TMP/results"
    stop
}
for p in $(seq 1 "$PASSES"); do
    if [ $((p % 2)) = 1 ]; then
        measure none "$TMP/none"
        measure loaded "$TMP/loaded"
    else
        measure loaded "$TMP/loaded"
        measure none "$TMP/none"
    fi
done
grep -h "address-table" "$TMP/gatehouse.log" | sort | uniq -c | sed 's/^/  /' >&2 || true
grep -q "address-table listener=- client=- $ENTRIES entries" "$TMP/gatehouse.log" ||
    echo "note: the log does not confirm $ENTRIES entries loaded" >&2
"$BUILD/bench/lookup" | sed 's/^/address-table look-up: /'
python3 - "$TMP/results" "$ENTRIES" <<'PY'
import re, sys
ops = {"none": [0, 0.0, 0.0], "loaded": [0, 0.0, 0.0]}
errors = 0
for line in open(sys.argv[1]):
    f = dict(re.findall(r"(\w+)=(\S+)", line))
    o = ops[f["label"]]
    o[0] += int(f["ops"])
    o[1] += float(f["secs"])
    o[2] += float(f["server_cpu_s"])
    errors += int(f["errors"])
none, loaded = (ops[k][0] / ops[k][1] for k in ("none", "loaded"))
cnone, cloaded = (ops[k][0] / ops[k][2] for k in ("none", "loaded"))
print(f"plain SMTP sessions/s: none {none:.0f}, {int(sys.argv[2]):,} blocked entries "
      f"{loaded:.0f}, ratio {loaded / none:.3f} (target >= 0.95)")
print(f"sessions per server CPU-second: none {cnone:.0f}, loaded {cloaded:.0f}, "
      f"ratio {cloaded / cnone:.3f}; session errors {errors}")
PY
