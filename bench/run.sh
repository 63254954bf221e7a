#!/usr/bin/env bash
# bench/run.sh: Gatehouse against nginx (mail and stream modules) and HAProxy, side by side on
# loopback, with the same certificate and the same number of workers. Runs every workload of
# docs/BENCHMARKS.md with bench/loadgen, prints a table and appends it, with the command and
# the date, to docs/BENCHMARKS.md. Bounded in time; stops everything it started.
#
#   bench/run.sh [--quick] [--relay-only] [--workers N] [--no-append]
#
# BENCH_KEEP=1 keeps the temporary directory (logs, configurations, raw results).
# --quick: about a minute (1 s runs at 1 and 64 clients, 1,000 idle connections, no scale
# check); the full run takes about ten minutes. --relay-only: only the relay workloads (TLS to
# the server, then a plain or a TLS leg to the backend), a minute or two.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
QUICK=0
RELAY_ONLY=0
APPEND=1
WORKERS=$(nproc)
BUILD=${BUILD:-build}
CMDLINE="bench/run.sh${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --relay-only) RELAY_ONLY=1 ;;
    --no-append) APPEND=0 ;;
    --workers) WORKERS=$2; shift ;;
    *) echo "usage: bench/run.sh [--quick] [--relay-only] [--workers N] [--no-append]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    DUR=1; PASSES=1; LIMIT=100; IDLE_SIZES="1000"; JMAP_CONC="1 16"; CONCS="1 64"
else
    DUR=2; PASSES=2; LIMIT=660; IDLE_SIZES="10000 50000"; JMAP_CONC="1 64"; CONCS="1 64 1024"
fi
# relay only: 1 and 64 clients (1,024 TLS handshakes in one go measure the machine's
# crypto, not the relay)
[ "$RELAY_ONLY" = 1 ] && CONCS="1 64"
START=$(date +%s)
SECRET="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"

log() { printf '[%3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
time_left() { [ $(($(date +%s) - START)) -lt "$LIMIT" ]; }

# ---- build and tools ----
scripts/deps.sh bench >&2
# Up to date with the tree (a no-op after `make`); an older binary is used only if the tree
# does not build (with a warning).
if ! make BUILD="$BUILD" -j2 >&2; then
    [ -x "$BUILD/gatehouse" ] || exit 1
    echo "warning: the tree does not build; measuring the existing $BUILD/gatehouse" >&2
fi
make -s -f bench/Makefile BUILD="$BUILD" >&2
LG="$ROOT/$BUILD/bench/loadgen"
GH="$ROOT/$BUILD/gatehouse"

# Descriptors: root without CAP_SYS_RESOURCE cannot go above the hard limit, so the largest
# idle set is what the hard limit allows (each server needs one descriptor per connection).
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
MAX_IDLE=$((NOFILE - 1500))

TMP=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
RES="$TMP/results.txt"
: >"$RES"
STARTED=""

stop_pid() { # graceful, then forced, bounded to 12 s
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local p
    for p in $STARTED; do stop_pid "$p"; done
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "logs and configurations kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- ports: a free block of 1,100 on 127.0.0.1 (100 for the servers, 1,000 for the scale
# check), below the ephemeral range so that no client connection can take one ----
pick_base() {
    local b i lo
    lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
    [ "$lo" -gt 12000 ] || lo=32768
    for i in $(seq 1 50); do
        b=$((10000 + (RANDOM % ((lo - 11200) / 100)) * 100))
        if [ -z "$(ss -Htan "( sport >= :$b and sport < :$((b + 1100)) )" 2>/dev/null)" ]; then
            echo "$b"
            return
        fi
    done
    echo "no free port block found" >&2
    exit 1
}
BASE=$(pick_base)
G_API=$BASE G_PLAIN=$((BASE + 1)) G_TLS=$((BASE + 2)) G_STARTTLS=$((BASE + 3))
G_PROBE=$((BASE + 4)) G_CHURN=$((BASE + 5)) # and BASE+6
G_RELAY=$((BASE + 7)) G_RELAY_TLS=$((BASE + 8))
N_PLAIN=$((BASE + 20)) N_TLS=$((BASE + 21)) N_STARTTLS=$((BASE + 22)) N_STREAM=$((BASE + 23))
N_RELAY=$((BASE + 24)) N_RELAY_TLS=$((BASE + 25))
H_PLAIN=$((BASE + 40)) H_TLS=$((BASE + 41)) H_RELAY=$((BASE + 42)) H_RELAY_TLS=$((BASE + 43))
SINK=$((BASE + 60))     # the backend of the relay workload
SINK_TLS=$((BASE + 61)) # the same behind implicit TLS: the relay-tls workload
SCALE_BASE=$((BASE + 100)) # 1,000 listeners: a second block, checked when used

wait_port() { # port [seconds]
    local i
    for i in $(seq 1 $((${2:-10} * 20))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# ---- the certificate every server presents: ECDSA P-256 ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=bench.localhost -addext subjectAltName=DNS:bench.localhost \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/both.pem"

# ---- Gatehouse ----
api() { # JSON body on stdin → response on stdout
    curl -sS --max-time 60 -H "Authorization: Bearer $SECRET" \
        -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$G_API/jmap"
}
USING='"using":["urn:ietf:params:jmap:core","urn:stalwart:jmap"]'
GH_PID=""
GH_CERT="uploaded"

gh_start() {
    rm -rf "$TMP/gh"
    mkdir -p "$TMP/gh"
    GATEHOUSE_ADMIN_SECRET=$SECRET "$GH" serve --data "$TMP/gh" --http "127.0.0.1:$G_API" \
        --workers "$WORKERS" >>"$TMP/gatehouse.log" 2>&1 &
    GH_PID=$!
    STARTED="$STARTED $GH_PID"
    wait_port "$G_API" 10 || { tail "$TMP/gatehouse.log" >&2; exit 1; }
    python3 - "$TMP/cert.pem" "$TMP/key.pem" <<EOF | api >"$TMP/cert-set.json"
import json, sys
cert, key = open(sys.argv[1]).read(), open(sys.argv[2]).read()
print(json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
  "methodCalls": [["x:Certificate/set", {"create": {"b": {"name": "bench", "certificate": cert,
  "privateKey": key, "isDefault": True}}}, "0"]]}))
EOF
    grep -q '"created":{"b"' "$TMP/cert-set.json" || GH_CERT="generated P-256 (upload refused)"
    local l='"maxConnections":100000,"protocol":"smtp"'
    api >"$TMP/listeners.json" <<EOF
{$USING,"methodCalls":[["x:NetworkListener/set",{"create":{
 "plain":{"name":"plain",$l,"useTls":false,"bind":["127.0.0.1:$G_PLAIN"]},
 "tls":{"name":"tls",$l,"tlsImplicit":true,"bind":["127.0.0.1:$G_TLS"]},
 "starttls":{"name":"starttls",$l,"bind":["127.0.0.1:$G_STARTTLS"]},
 "probe":{"name":"probe",$l,"useTls":false,"bind":["127.0.0.1:$G_PROBE"]},
 "relay":{"name":"relay",$l,"tlsImplicit":true,"bind":["127.0.0.1:$G_RELAY"]},
 "relaytls":{"name":"relaytls",$l,"tlsImplicit":true,"bind":["127.0.0.1:$G_RELAY_TLS"]}}},"0"],
 ["x:Destination/set",{"create":{"sink":{"name":"sink","protocol":"smtp",
 "address":"127.0.0.1:$SINK","forwarding":"none","listeners":["relay"]},
 "sinktls":{"name":"sinktls","protocol":"smtp","address":"127.0.0.1:$SINK_TLS",
 "forwarding":"none","listeners":["relaytls"],"tls":"implicit",$(sink_trust)}}},"1"]]}
EOF
    grep -q '"notCreated":null' "$TMP/listeners.json" ||
        { echo "creating listeners failed: $(cat "$TMP/listeners.json")" >&2; exit 1; }
    PROBE_ID=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(r["methodResponses"][0][1]["created"]["probe"]["id"])' "$TMP/listeners.json")
}
gh_stop() { stop_pid "$GH_PID"; GH_PID=""; }
# The TLS sink presents the bench certificate: verified against it as a trust anchor (the
# uploaded x:Certificate) with its name, as a deployment would; unverified only when the
# upload was refused.
sink_trust() {
    local id
    id=$(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["methodResponses"][0][1]["created"]["b"]["id"])
except Exception: pass' "$TMP/cert-set.json" 2>/dev/null)
    if [ -n "$id" ]; then
        printf '"tlsCaCertificateId":"%s","tlsServerName":"bench.localhost"' "$id"
    else
        printf '"tlsVerify":false'
    fi
}

# ---- nginx and HAProxy ----
fill() { # template → stdout
    sed -e "s#@WORKERS@#$WORKERS#g; s#@NOFILE@#$NOFILE#g; s#@MAXCONN@#$MAX_IDLE#g" \
        -e "s#@P_SINK@#$SINK#g; s#@P_RELAY@#$6#g; s#@P_SINK_TLS@#$SINK_TLS#g" \
        -e "s#@P_RELAY_TLS@#$7#g" \
        -e "s#@TMP@#$TMP#g; s#@BENCH@#$ROOT/bench#g" \
        -e "s#@P_PLAIN@#$2#g; s#@P_TLS@#$3#g; s#@P_STARTTLS@#$4#g; s#@P_STREAM@#$5#g" "$1"
}
NGX_PID="" HAP_PID=""
ngx_start() {
    fill bench/nginx.conf.in "$N_PLAIN" "$N_TLS" "$N_STARTTLS" "$N_STREAM" "$N_RELAY" \
        "$N_RELAY_TLS" >"$TMP/nginx.conf"
    nginx -c "$TMP/nginx.conf" -p "$TMP" >>"$TMP/nginx.out" 2>&1 &
    NGX_PID=$!
    STARTED="$STARTED $NGX_PID"
    wait_port "$N_STREAM" 10 || { cat "$TMP/nginx.out" "$TMP/nginx-error.log" >&2; exit 1; }
}
ngx_pids() { echo "$NGX_PID $(pgrep -P "$NGX_PID" | tr '\n' ' ')" | tr -s ' ' ',' | sed 's/,$//'; }
ngx_stop() { stop_pid "$NGX_PID"; NGX_PID=""; }
hap_start() {
    fill bench/haproxy.cfg.in "$H_PLAIN" "$H_TLS" 0 0 "$H_RELAY" "$H_RELAY_TLS" >"$TMP/haproxy.cfg"
    haproxy -f "$TMP/haproxy.cfg" -db >>"$TMP/haproxy.out" 2>&1 &
    HAP_PID=$!
    STARTED="$STARTED $HAP_PID"
    wait_port "$H_TLS" 10 || { cat "$TMP/haproxy.out" >&2; exit 1; }
}
hap_stop() { stop_pid "$HAP_PID"; HAP_PID=""; }

# ---- one measurement: server workload clients [loadgen args] → a line in $RES ----
cell() {
    local server=$1 work=$2 conc=$3
    shift 3
    local out
    out=$("$LG" --label "$server:$work:$conc" --conc "$conc" "$@" 2>>"$TMP/loadgen.err" || true)
    printf '%s\n' "$out" | grep -E '^(RESULT|IDLE|CHURN) ' >>"$RES" || true
}
# A server that died is reported (with the end of its log) and started again, so that one
# crash does not void the stages after it.
check_alive() { # stage
    if [ -n "$GH_PID" ] && ! kill -0 "$GH_PID" 2>/dev/null; then
        log "Gatehouse exited during $1; its log ends:"
        tail -n 20 "$TMP/gatehouse.log" >&2
        echo "NOTE text=Gatehouse_exited_during_$1_(restarted)" >>"$RES"
        gh_start
    fi
    if [ -n "$NGX_PID" ] && ! kill -0 "$NGX_PID" 2>/dev/null; then
        echo "NOTE text=nginx_exited_during_$1_(restarted)" >>"$RES"
        ngx_start
    fi
    if [ -n "$HAP_PID" ] && ! kill -0 "$HAP_PID" 2>/dev/null; then
        echo "NOTE text=HAProxy_exited_during_$1_(restarted)" >>"$RES"
        hap_start
    fi
}
pids_of() {
    case $1 in
    gatehouse) echo "$GH_PID" ;;
    nginx | nginx-stream) ngx_pids ;;
    haproxy) echo "$HAP_PID" ;;
    esac
}

log "Gatehouse $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $WORKERS workers each; ports from $BASE; descriptor limit $NOFILE"
gh_start
ngx_start
hap_start
[ "$GH_CERT" = uploaded ] || log "note: Gatehouse uses its $GH_CERT certificate"

# ---- 1-3: sessions and handshakes, the servers taking turns in each cell ----
run_matrix() { # work loadgen-mode extra-args... ; servers and ports from the case below
    local work=$1 mode=$2 conc s port
    shift 2
    for conc in $CONCS; do
        time_left || { log "time limit: skipping $work"; return; }
        local servers
        case $work in
        smtp) servers="gatehouse:$G_PLAIN nginx:$N_PLAIN haproxy:$H_PLAIN" ;;
        tls-*) servers="gatehouse:$G_TLS nginx:$N_TLS nginx-stream:$N_STREAM haproxy:$H_TLS" ;;
        starttls) servers="gatehouse:$G_STARTTLS nginx:$N_STARTTLS" ;;
        relay) servers="gatehouse:$G_RELAY nginx-stream:$N_RELAY haproxy:$H_RELAY" ;;
        relay-tls) servers="gatehouse:$G_RELAY_TLS nginx-stream:$N_RELAY_TLS haproxy:$H_RELAY_TLS" ;;
        esac
        # Each pass takes the servers in the other order, so that none always runs first or
        # last; report.py pools the passes (sessions over seconds, over CPU-seconds).
        local pass order
        for pass in $(seq 1 "$PASSES"); do
            order=$servers
            [ $((pass % 2)) = 0 ] && order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' ')
            for s in $order; do
                port=${s#*:}
                cell "${s%%:*}" "$work" "$conc" --mode "$mode" --ports "$port" --duration "$DUR" \
                    --pid "$(pids_of "${s%%:*}")" "$@"
            done
        done
        check_alive "$work at $conc clients"
        log "$work at $conc clients done"
    done
}
if [ "$RELAY_ONLY" = 0 ]; then
    run_matrix smtp smtp
    run_matrix tls-full tls
    run_matrix tls-resumed tls --resume
    run_matrix starttls starttls
fi

# ---- 7: bytes per second through a TLS session relayed to a backend (the sink), over a
# plain backend leg and over a TLS one (relay-tls: both legs encrypted) ----
"$LG" --mode sink --ports "$SINK" --duration 600 --label sink >"$TMP/sink.out" 2>&1 &
SINK_PID=$!
"$LG" --mode sink --ports "$SINK_TLS" --duration 600 --label sink-tls \
    --sink-cert "$TMP/cert.pem" --sink-key "$TMP/key.pem" >"$TMP/sink-tls.out" 2>&1 &
SINK_TLS_PID=$!
STARTED="$STARTED $SINK_PID $SINK_TLS_PID"
if wait_port "$SINK" 5; then
    run_matrix relay stream
else
    log "the sink backend did not start: $(cat "$TMP/sink.out"); skipping relay"
fi
if wait_port "$SINK_TLS" 5; then
    run_matrix relay-tls stream
else
    log "the TLS sink did not start: $(cat "$TMP/sink-tls.out"); skipping relay-tls"
fi
stop_pid "$SINK_PID"
stop_pid "$SINK_TLS_PID"

if [ "$RELAY_ONLY" = 0 ]; then # the rest of the workloads

# ---- 5: JMAP requests ----
for conc in $JMAP_CONC; do
    cell gatehouse jmap-get "$conc" --mode http --api "$G_API" --token "$SECRET" \
        --duration "$DUR" --pid "$GH_PID"
done
check_alive "JMAP"
log "JMAP done"

# ---- 6: listener changes: /set → accepting, then under 10,000 live sessions ----
if time_left; then
    cell gatehouse set-to-accept 1 --mode none --api "$G_API" --token "$SECRET" \
        --churn-port "$G_CHURN" --duration "$DUR" --pid "$GH_PID"
    live=10000
    [ "$QUICK" = 1 ] && live=2000
    [ "$live" -gt "$MAX_IDLE" ] && live=$MAX_IDLE
    cell gatehouse "changes-under-$live" 8 --mode smtp --ports "$G_PROBE" --duration $((DUR + 2)) \
        --idle "$live" --idle-ports "$G_PLAIN" --api "$G_API" --token "$SECRET" \
        --churn-port "$G_CHURN" --churn-update "$PROBE_ID" --pid "$GH_PID"
    log "live changes done"
fi

gh_stop
ngx_stop
hap_stop

# ---- 4: memory per idle connection, each server fresh for each measurement ----
for n in $IDLE_SIZES; do
    [ "$n" -gt "$MAX_IDLE" ] && n=$MAX_IDLE
    for kind in plain tls; do
        for s in gatehouse nginx haproxy; do
            time_left || { log "time limit: skipping idle $kind $n"; continue; }
            case $s in
            gatehouse) gh_start; port=$([ $kind = tls ] && echo "$G_TLS" || echo "$G_PLAIN") ;;
            nginx) ngx_start; port=$([ $kind = tls ] && echo "$N_TLS" || echo "$N_PLAIN") ;;
            haproxy) hap_start; port=$([ $kind = tls ] && echo "$H_TLS" || echo "$H_PLAIN") ;;
            esac
            sleep 0.5
            extra=""
            [ $kind = tls ] && extra="--idle-tls"
            cell "$s" "idle-$kind-$n" 1 --mode none --duration 0.1 --idle "$n" \
                --idle-ports "$port" --hold 1 --timeout 30000 --pid "$(pids_of "$s")" $extra
            case $s in
            gatehouse) gh_stop ;;
            nginx) ngx_stop ;;
            haproxy) hap_stop ;;
            esac
        done
        log "idle $kind $n done"
    done
done

# ---- scale (issue 3): 1,000 listeners through the API, then sessions and idle connections
# spread over all of them ----
SCALE_NOTE=""
if [ "$QUICK" = 0 ] && time_left; then
    gh_start
    if [ -n "$(ss -Htan "( sport >= :$SCALE_BASE and sport < :$((SCALE_BASE + 1000)) )")" ]; then
        SCALE_NOTE="skipped: ports $SCALE_BASE.. in use"
    else
        t0=$(date +%s.%N)
        created=0
        for b in $(seq 0 9); do
            python3 - "$SCALE_BASE" "$b" <<'EOF' | api >"$TMP/scale-$b.json"
import json, sys
base, b = int(sys.argv[1]), int(sys.argv[2])
create = {f"s{i}": {"name": f"scale-{i}", "protocol": "smtp", "useTls": False,
                    "bind": [f"127.0.0.1:{base + i}"]} for i in range(b * 100, b * 100 + 100)}
print(json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
                  "methodCalls": [["x:NetworkListener/set", {"create": create}, "0"]]}))
EOF
            n=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(len(r["methodResponses"][0][1].get("created") or {}))' "$TMP/scale-$b.json" 2>/dev/null || echo 0)
            created=$((created + n))
        done
        t1=$(date +%s.%N)
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$GH_PID/status")
        fds=$(ls "/proc/$GH_PID/fd" | wc -l)
        echo "SCALE label=gatehouse:listeners:1000 created=$created secs=$(awk "BEGIN {print $t1 - $t0}") rss_kb=$rss fds=$fds" >>"$RES"
        log "created $created listeners"
        big=$((MAX_IDLE - fds - 500))
        [ "$big" -gt 50000 ] && big=50000
        ports="$SCALE_BASE-$((SCALE_BASE + 999))"
        cell gatehouse "scale-1000-listeners" 64 --mode smtp --ports "$ports" --duration "$DUR" \
            --idle "$big" --idle-ports "$ports" --idle-inflight 1024 --pid "$GH_PID"
    fi
    gh_stop
    log "scale check done"
fi

fi # the rest of the workloads

# ---- crypto bound: one core's ECDSA P-256 signatures and X25519 operations ----
SPEED_S=3
[ "$QUICK" = 1 ] && SPEED_S=1
openssl speed -seconds "$SPEED_S" ecdsap256 ecdhx25519 2>/dev/null >"$TMP/speed.txt" || true
SIGN=$(awk '/ecdsa \(nistp256\)/ {print $(NF-1)}' "$TMP/speed.txt")
X25519=$(awk '/ecdh \(X25519\)/ {print $NF}' "$TMP/speed.txt")
echo "SPEED sign_per_s=${SIGN:-0} x25519_per_s=${X25519:-0}" >>"$RES"

# ---- the table ----
meta="$(date -u '+%Y-%m-%d %H:%M UTC') · \`$CMDLINE\` · Gatehouse $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
meta="$meta · $WORKERS workers · $(nproc) cores · load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
meta="$meta · nginx $(nginx -v 2>&1 | sed 's#.*/##') · HAProxy $(haproxy -v | awk 'NR==1 {print $3}')"
meta="$meta · $(openssl version | cut -d' ' -f1-2) · descriptor limit $NOFILE · certificate: $GH_CERT"
python3 bench/report.py "$RES" "$meta" ${SCALE_NOTE:+--note "$SCALE_NOTE"} >"$TMP/table.md"
cat "$TMP/table.md"
if [ "$APPEND" = 1 ]; then
    { echo; cat "$TMP/table.md"; } >>docs/BENCHMARKS.md
    log "appended to docs/BENCHMARKS.md"
fi
log "done"
