#!/usr/bin/env bash
# bench/syscalls.sh: system calls and CPU per session, both Gatehouse engines beside nginx,
# HAProxy and the floor (bench/floor.c), in one run. Two workloads, each with bench/loadgen
# (connect, greeting, QUIT, 221, close):
#   smtp     the server answers the session itself (HAProxy: bench/smtp.lua)
#   handoff  the session is handed to a backend (a floor server) and the greeting and the
#            221 come from it through the server: Gatehouse with an x:Destination, nginx
#            stream proxy_pass, HAProxy tcp, the floor with --relay
# System calls are counted with `perf stat -e raw_syscalls:sys_enter` on the server's
# processes (every thread) for the cell's duration; sessions and server CPU come from
# loadgen. Every cell is bounded (--duration seconds); everything started is stopped.
#
#   bench/syscalls.sh [--duration S] [--conc "64 1024"] [--workers N]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
DUR=1
CONCS="64 1024"
WORKERS=$(nproc)
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DUR=$2; shift ;;
    --conc) CONCS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    *) echo "usage: bench/syscalls.sh [--duration S] [--conc \"64 1024\"] [--workers N]" >&2; exit 2 ;;
    esac
    shift
done
command -v perf >/dev/null || { echo "needs perf (linux-perf)" >&2; exit 1; }
scripts/deps.sh bench >&2
make -s -j2 >&2
make -s -f bench/Makefile BUILD=build >&2
LG=$ROOT/build/bench/loadgen FLOOR=$ROOT/build/bench/floor GH=$ROOT/build/gatehouse
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/gatehouse-syscalls.XXXXXX)
trap 'stop_started "$TMP"' EXIT
trap 'exit 130' INT TERM

BASE=$((20000 + (RANDOM % 200) * 50))
P_BACKEND=$BASE
start() { spawn "$TMP/servers.log" "$@"; } # command... → pid in LAST

# The backend every hand-off goes to: a floor server (epoll), outside every measurement.
floor_start "$FLOOR" epoll "$P_BACKEND" 1 "$TMP/servers.log"

declare -A PIDS PORT_SMTP PORT_HANDOFF
SECRET="bench-$RANDOM$RANDOM"
gh_start() { # name engine base
    local name=$1 engine=$2 b=$3
    mkdir -p "$TMP/$name"
    start env GATEHOUSE_ADMIN_SECRET="$SECRET" "$GH" serve --data "$TMP/$name" \
        --http "127.0.0.1:$b" --workers "$WORKERS" --engine "$engine"
    PIDS[$name]=$LAST
    wait_port "$b"
    curl -sS --max-time 30 -H "Authorization: Bearer $SECRET" -H 'Content-Type: application/json' \
        "http://127.0.0.1:$b/jmap" --data-binary @- >"$TMP/$name.json" <<EOF
{"using":["urn:ietf:params:jmap:core","urn:stalwart:jmap"],"methodCalls":[
 ["x:NetworkListener/set",{"create":{
  "plain":{"name":"plain","protocol":"smtp","maxConnections":100000,"useTls":false,"bind":["127.0.0.1:$((b + 1))"]},
  "handoff":{"name":"handoff","protocol":"smtp","maxConnections":100000,"useTls":false,"bind":["127.0.0.1:$((b + 2))"]}}},"0"],
 ["x:Destination/set",{"create":{"d":{"name":"backend","protocol":"smtp",
  "address":"127.0.0.1:$P_BACKEND","forwarding":"none","listeners":["handoff"]}}},"1"]]}
EOF
    PORT_SMTP[$name]=$((b + 1))
    PORT_HANDOFF[$name]=$((b + 2))
    wait_port "$((b + 2))"
}
gh_start gatehouse-epoll epoll $((BASE + 10))
gh_start gatehouse-io_uring io_uring $((BASE + 20))

cat >"$TMP/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log error;
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 20000; }
mail {
    server_name bench.localhost;
    auth_http 127.0.0.1:9/auth;
    smtp_auth none;
    server { listen 127.0.0.1:$((BASE + 31)) backlog=1024; protocol smtp; }
}
stream {
    server { listen 127.0.0.1:$((BASE + 32)) backlog=1024; proxy_pass 127.0.0.1:$P_BACKEND; }
}
EOF
start nginx -c "$TMP/nginx.conf" -p "$TMP"
PIDS[nginx]=$LAST PORT_SMTP[nginx]=$((BASE + 31)) PORT_HANDOFF[nginx]=$((BASE + 32))
wait_port "$((BASE + 32))"

cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    no strict-limits
    maxconn 8000
    lua-load $ROOT/bench/smtp.lua
defaults
    mode tcp
    maxconn 8000
    timeout client 10m
    timeout server 10m
    timeout connect 5s
frontend smtp
    bind 127.0.0.1:$((BASE + 41)) backlog 1024
    tcp-request content use-service lua.smtp
frontend handoff
    bind 127.0.0.1:$((BASE + 42)) backlog 1024
    default_backend floor
backend floor
    server floor 127.0.0.1:$P_BACKEND
EOF
start haproxy -f "$TMP/haproxy.cfg" -db
PIDS[haproxy]=$LAST PORT_SMTP[haproxy]=$((BASE + 41)) PORT_HANDOFF[haproxy]=$((BASE + 42))
wait_port "$((BASE + 42))"

for e in epoll io_uring; do
    floor_start "$FLOOR" $e "$((BASE + 43 + ${#e}))" "$WORKERS" "$TMP/servers.log"
    PIDS[floor-$e]=$LAST PORT_SMTP[floor-$e]=$((BASE + 43 + ${#e}))
    floor_start "$FLOOR" $e "$((BASE + 60 + ${#e}))" "$WORKERS" "$TMP/servers.log" "$P_BACKEND"
    PIDS[floor-relay-$e]=$LAST PORT_HANDOFF[floor-$e]=$((BASE + 60 + ${#e}))
done

pids_of() { # the server's processes, comma-separated (nginx: master and workers)
    if [ "$1" = nginx ]; then with_children "${PIDS[$1]}"; else echo "${PIDS[$1]}"; fi
}

SERVERS="gatehouse-epoll gatehouse-io_uring nginx haproxy floor-epoll floor-io_uring"
printf '| workload | clients | server | sessions/s | sessions per server CPU-s | system calls per session |\n'
printf '|---|---|---|---|---|---|\n'
for work in smtp handoff; do
    for conc in $CONCS; do
        for s in $SERVERS; do
            if [ $work = smtp ]; then port=${PORT_SMTP[$s]}; pidname=$s; else
                port=${PORT_HANDOFF[$s]}; pidname=$s; fi
            [ "$s" = floor-epoll ] && [ $work = handoff ] && pidname=floor-relay-epoll
            [ "$s" = floor-io_uring ] && [ $work = handoff ] && pidname=floor-relay-io_uring
            pids=$(pids_of "$pidname")
            count_syscalls "$TMP/calls" "$pids" "$LG" --mode smtp --ports "$port" --conc "$conc" \
                --duration "$DUR" --label "$s" --pid "$pids" >"$TMP/out" 2>/dev/null || true
            out=$(grep '^RESULT' "$TMP/out" || true)
            calls=$(cat "$TMP/calls")
            python3 - "$work" "$conc" "$s" "$calls" "$out" <<'EOF'
import sys
work, conc, server, calls, out = sys.argv[1:6]
kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
ops = int(kv.get("ops", 0) or 0)
secs = float(kv.get("secs", 1) or 1)
per_cpu = kv.get("ops_per_server_cpu_s", "0")
errors = int(kv.get("errors", 0) or 0)
per = f"{int(calls) / ops:.1f}" if calls.isdigit() and ops else "?"
note = f" ({errors} errors)" if errors else ""
print(f"| {work} | {conc} | {server} | {ops / secs:,.0f}{note} | {float(per_cpu):,.0f} | {per} |")
EOF
        done
    done
done
