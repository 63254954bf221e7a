#!/usr/bin/env bash
# bench/run.sh: Gatehouse, on each of its engines (epoll and io_uring), against nginx (mail and
# stream modules) and HAProxy, side by side on loopback, with the same certificate and the
# same number of workers, and beside the floor (bench/floor.c, the smallest server for the
# same session). Runs every workload of docs/BENCHMARKS.md with bench/loadgen, counts the
# servers' system calls per session (perf), prints a table and appends it, with the command
# and the date, to docs/BENCHMARKS.md. Bounded in time; stops everything it started.
#
#   bench/run.sh [--quick] [--relay-only | --targets] [--passes N] [--workers N]
#                [--engines "epoll io_uring"] [--no-append]
#
# BENCH_KEEP=1 keeps the temporary directory (logs, configurations, raw results).
# --quick: about three minutes (1 s runs at 1 and 64 clients, 1,000 idle connections, no scale
# check); the full run takes about twenty minutes. --relay-only: only the relay workloads
# (TLS to the server with a plain or a TLS leg to the backend, and plain on both legs), a few
# minutes. --targets: only the cells SPEC §17 sets per-CPU-second targets on that the floor
# or HAProxy decides (plain SMTP sessions, handed-off sessions and the plain relay, at 64 and
# 1,024 clients), with more passes (11 per session cell, 5 per relay cell): a single pass
# there moves by up to ±10%, so the median of a full run's five can miss or meet a 5% margin
# by chance; about ten minutes. --passes N: passes per cell (relay cells: half, at least
# one). --engines: the Gatehouse engines to measure (the last one also serves the
# single-server stages: JMAP, live changes, memory, scale).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
QUICK=0
RELAY_ONLY=0
TARGETS=0
SET_PASSES=
APPEND=1
WORKERS=$(nproc)
ENGINES="epoll io_uring"
BUILD=${BUILD:-build}
CMDLINE="bench/run.sh${*:+ $*}"
USAGE='usage: bench/run.sh [--quick] [--relay-only | --targets] [--passes N] [--workers N] [--engines "epoll io_uring"] [--no-append]'
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --relay-only) RELAY_ONLY=1 ;;
    --targets) TARGETS=1 ;;
    --passes) SET_PASSES=$2; shift ;;
    --no-append) APPEND=0 ;;
    --workers) WORKERS=$2; shift ;;
    --engines) ENGINES=$2; shift ;;
    *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
for e in $ENGINES; do
    case $e in epoll | io_uring) ;; *) echo "$USAGE" >&2; exit 2 ;; esac
done
MAIN=${ENGINES##* } # the engine of the single-server stages

# SYSCALL_CONCS: the client counts at which a separate cell counts each server's system calls
# (perf attached for that cell only, so that its cost stays out of the CPU figures).
if [ "$QUICK" = 1 ]; then
    DUR=1; PASSES=1; LIMIT=200; IDLE_SIZES="1000"; JMAP_CONC="1 16"; CONCS="1 64"
    SYSCALL_CONCS="64"; RELAY_DUR=1; RELAY_PASSES=1
else
    DUR=1; PASSES=5; LIMIT=1320; IDLE_SIZES="10000 50000"; JMAP_CONC="1 64"; CONCS="1 64 1024"
    SYSCALL_CONCS="64 1024"; RELAY_DUR=2; RELAY_PASSES=3
fi
# Session cells: many short passes. This machine's speed drifts over tens of seconds for every
# program alike, so a ratio is taken within each pass, between cells seconds apart, and
# report.py gives the median of those. A relay cell first waits for its handshakes and a
# warm-up, so it has fewer, longer passes.
SYSCALL_DUR=1
# relay only: 1 and 64 clients, to stay a few minutes (a relay cell at 1,024 first waits
# for 1,024 handshakes: loadgen measures streams in their steady state)
[ "$RELAY_ONLY" = 1 ] && CONCS="1 64"
if [ "$TARGETS" = 1 ]; then
    [ "$RELAY_ONLY" = 1 ] && { echo "$USAGE" >&2; exit 2; }
    CONCS="64 1024"; SYSCALL_CONCS="64 1024"; PASSES=11; RELAY_PASSES=5; LIMIT=1320
fi
if [ -n "$SET_PASSES" ]; then
    case $SET_PASSES in '' | *[!0-9]* | 0) echo "$USAGE" >&2; exit 2 ;; esac
    PASSES=$SET_PASSES; RELAY_PASSES=$(((SET_PASSES + 1) / 2))
fi
START=$(date +%s)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
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
FLOOR="$ROOT/$BUILD/bench/floor"
command -v perf >/dev/null || echo "note: no perf (linux-perf): system calls are not counted" >&2

# Descriptors: root without CAP_SYS_RESOURCE cannot go above the hard limit, so the largest
# idle set is what the hard limit allows (each server needs one descriptor per connection).
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
MAX_IDLE=$((NOFILE - 1500))

TMP=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
RES="$TMP/results.txt"
: >"$RES"

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
# Gatehouse: ten ports per engine (epoll from BASE, io_uring from BASE+10), at these offsets.
# "handoff" is a plain listener whose sessions go to the sink: the handoff and relay-plain
# workloads.
declare -A GH_BASE GH_PID
GH_BASE[epoll]=$BASE GH_BASE[io_uring]=$((BASE + 10))
O_API=0 O_PLAIN=1 O_TLS=2 O_STARTTLS=3 O_PROBE=4 O_RELAY=5 O_RELAY_TLS=6 O_HANDOFF=7
gp() { echo $((GH_BASE[$1] + $2)); } # engine offset → port
G_CHURN=$((BASE + 80)) # and BASE+81: the listener created and destroyed by the churn
N_PLAIN=$((BASE + 20)) N_TLS=$((BASE + 21)) N_STARTTLS=$((BASE + 22)) N_STREAM=$((BASE + 23))
N_RELAY=$((BASE + 24)) N_RELAY_TLS=$((BASE + 25)) N_HANDOFF=$((BASE + 26))
H_PLAIN=$((BASE + 40)) H_TLS=$((BASE + 41)) H_RELAY=$((BASE + 42)) H_RELAY_TLS=$((BASE + 43))
H_HANDOFF=$((BASE + 44)) H_RELAY_PLAIN=$((BASE + 45))
SINK=$((BASE + 60))     # the backend of the relay, relay-plain and handoff workloads
SINK_TLS=$((BASE + 61)) # the same behind implicit TLS: the relay-tls workload
# the floors: answering the session (smtp), and relaying it to the sink (handoff)
declare -A FLOOR_PORT FLOOR_RELAY_PORT FLOOR_PID FLOOR_RELAY_PID
FLOOR_PORT[epoll]=$((BASE + 70)) FLOOR_PORT[io_uring]=$((BASE + 71))
FLOOR_RELAY_PORT[epoll]=$((BASE + 72)) FLOOR_RELAY_PORT[io_uring]=$((BASE + 73))
SCALE_BASE=$((BASE + 100)) # 1,000 listeners: a second block, checked when used

# ---- the certificate every server presents: ECDSA P-256 ----
bench_cert "$TMP"

# ---- Gatehouse: one daemon per engine ----
api() { # engine; JSON body on stdin → response on stdout
    curl -sS --max-time 60 -H "Authorization: Bearer $SECRET" \
        -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$(gp "$1" $O_API)/jmap"
}
USING='"using":["urn:ietf:params:jmap:core","urn:stalwart:jmap"]'
GH_CERT="uploaded"

gh_start() { # engine
    local e=$1 d="$TMP/gh-$1"
    rm -rf "$d"
    mkdir -p "$d"
    spawn "$TMP/gatehouse-$e.log" env GATEHOUSE_ADMIN_SECRET="$SECRET" "$GH" serve --data "$d" \
        --http "127.0.0.1:$(gp "$e" $O_API)" --workers "$WORKERS" --engine "$e"
    GH_PID[$e]=$LAST
    wait_port "$(gp "$e" $O_API)" 10 || { tail "$TMP/gatehouse-$e.log" >&2; exit 1; }
    python3 - "$TMP/cert.pem" "$TMP/key.pem" <<EOF | api "$e" >"$d/cert-set.json"
import json, sys
cert, key = open(sys.argv[1]).read(), open(sys.argv[2]).read()
print(json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
  "methodCalls": [["x:Certificate/set", {"create": {"b": {"name": "bench", "certificate": cert,
  "privateKey": key, "isDefault": True}}}, "0"]]}))
EOF
    grep -q '"created":{"b"' "$d/cert-set.json" || GH_CERT="generated P-256 (upload refused)"
    local l='"maxConnections":100000,"protocol":"smtp"'
    # The sinks start and stop with the workloads that use them, and nginx and HAProxy check
    # no backend: no health checks here either.
    local sink='"protocol":"smtp","forwarding":"none","healthCheck":false'
    api "$e" >"$d/listeners.json" <<EOF
{$USING,"methodCalls":[["x:NetworkListener/set",{"create":{
 "plain":{"name":"plain",$l,"useTls":false,"bind":["127.0.0.1:$(gp "$e" $O_PLAIN)"]},
 "tls":{"name":"tls",$l,"tlsImplicit":true,"bind":["127.0.0.1:$(gp "$e" $O_TLS)"]},
 "starttls":{"name":"starttls",$l,"bind":["127.0.0.1:$(gp "$e" $O_STARTTLS)"]},
 "probe":{"name":"probe",$l,"useTls":false,"bind":["127.0.0.1:$(gp "$e" $O_PROBE)"]},
 "relay":{"name":"relay",$l,"tlsImplicit":true,"bind":["127.0.0.1:$(gp "$e" $O_RELAY)"]},
 "relaytls":{"name":"relaytls",$l,"tlsImplicit":true,"bind":["127.0.0.1:$(gp "$e" $O_RELAY_TLS)"]},
 "handoff":{"name":"handoff",$l,"useTls":false,"bind":["127.0.0.1:$(gp "$e" $O_HANDOFF)"]}}},"0"],
 ["x:Destination/set",{"create":{"sink":{"name":"sink",$sink,"address":"127.0.0.1:$SINK",
 "listeners":["relay","handoff"]},
 "sinktls":{"name":"sinktls",$sink,"address":"127.0.0.1:$SINK_TLS",
 "listeners":["relaytls"],"tls":"implicit",$(sink_trust "$d/cert-set.json")}}},"1"]]}
EOF
    grep -q '"notCreated":null' "$d/listeners.json" ||
        { echo "creating listeners failed: $(cat "$d/listeners.json")" >&2; exit 1; }
    [ "$e" = "$MAIN" ] && PROBE_ID=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(r["methodResponses"][0][1]["created"]["probe"]["id"])' "$d/listeners.json")
    return 0
}
gh_stop() { # engine
    [ -n "${GH_PID[$1]:-}" ] && stop_pid "${GH_PID[$1]}"
    GH_PID[$1]=""
}
# The TLS sink presents the bench certificate: verified against it as a trust anchor (the
# uploaded x:Certificate) with its name, as a deployment would; unverified only when the
# upload was refused.
sink_trust() { # cert-set response
    local id
    id=$(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["methodResponses"][0][1]["created"]["b"]["id"])
except Exception: pass' "$1" 2>/dev/null)
    if [ -n "$id" ]; then
        printf '"tlsCaCertificateId":"%s","tlsServerName":"bench.localhost"' "$id"
    else
        printf '"tlsVerify":false'
    fi
}

# ---- nginx and HAProxy ----
NGX_PID="" HAP_PID=""
ngx_start() {
    fill bench/nginx.conf.in "$N_PLAIN" "$N_TLS" "$N_STARTTLS" "$N_STREAM" "$N_RELAY" \
        "$N_RELAY_TLS" "$N_HANDOFF" >"$TMP/nginx.conf"
    spawn "$TMP/nginx.out" nginx -c "$TMP/nginx.conf" -p "$TMP"
    NGX_PID=$LAST
    wait_port "$N_STREAM" 10 || { cat "$TMP/nginx.out" "$TMP/nginx-error.log" >&2; exit 1; }
}
ngx_stop() { stop_pid "$NGX_PID"; NGX_PID=""; }
hap_start() {
    fill bench/haproxy.cfg.in "$H_PLAIN" "$H_TLS" 0 0 "$H_RELAY" "$H_RELAY_TLS" "$H_HANDOFF" \
        "$H_RELAY_PLAIN" >"$TMP/haproxy.cfg"
    spawn "$TMP/haproxy.out" haproxy -f "$TMP/haproxy.cfg" -db
    HAP_PID=$LAST
    wait_port "$H_TLS" 10 || { cat "$TMP/haproxy.out" >&2; exit 1; }
}
hap_stop() { stop_pid "$HAP_PID"; HAP_PID=""; }

# ---- one measurement: server workload clients [loadgen args] → a line in $RES ----
cell() {
    local server=$1 work=$2 conc=$3
    shift 3
    local out
    out=$("$LG" --label "$server:$work:$conc" --conc "$conc" "$@" 2>>"$TMP/loadgen.err" || true)
    printf '%s\n' "$out" | grep -E '^(RESULT|IDLE|CHURN) ' | sed "s/\$/ pass=${PASS:-1}/" \
        >>"$RES" || true
}
# The same workload once more, with perf counting the server's system calls: a SYSCALLS line
# (calls and the sessions completed meanwhile). A cell of its own, so that perf's cost stays
# out of the measured CPU.
count_cell() { # server work conc port loadgen-mode
    local ops
    count_syscalls "$TMP/calls" "$(pids_of "$1" "$2")" "$LG" --label "$1:$2:$3" --conc "$3" \
        --mode "$5" --ports "$4" --duration "$SYSCALL_DUR" >"$TMP/count.out" \
        2>>"$TMP/loadgen.err" || true
    ops=$(sed -n 's/^RESULT .* ops=\([0-9]*\) .*/\1/p' "$TMP/count.out")
    [ -s "$TMP/calls" ] &&
        echo "SYSCALLS label=$1:$2:$3 calls=$(cat "$TMP/calls") ops=${ops:-0}" >>"$RES"
    return 0
}
# A server that died is reported (with the end of its log) and started again, so that one
# crash does not void the stages after it.
check_alive() { # stage
    local e
    for e in $ENGINES; do
        if [ -n "${GH_PID[$e]:-}" ] && ! kill -0 "${GH_PID[$e]}" 2>/dev/null; then
            log "Gatehouse ($e) exited during $1; its log ends:"
            tail -n 20 "$TMP/gatehouse-$e.log" >&2
            echo "NOTE text=Gatehouse_($e)_exited_during_$1_(restarted)" >>"$RES"
            gh_start "$e"
        fi
    done
    if [ -n "$NGX_PID" ] && ! kill -0 "$NGX_PID" 2>/dev/null; then
        echo "NOTE text=nginx_exited_during_$1_(restarted)" >>"$RES"
        ngx_start
    fi
    if [ -n "$HAP_PID" ] && ! kill -0 "$HAP_PID" 2>/dev/null; then
        echo "NOTE text=HAProxy_exited_during_$1_(restarted)" >>"$RES"
        hap_start
    fi
}
pids_of() { # server [workload]
    case $1 in
    gatehouse) echo "${GH_PID[$MAIN]}" ;;
    gatehouse-*) echo "${GH_PID[${1#gatehouse-}]}" ;;
    nginx | nginx-stream) with_children "$NGX_PID" ;;
    haproxy) echo "$HAP_PID" ;;
    floor-*) if [ "${2:-}" = handoff ]; then echo "${FLOOR_RELAY_PID[${1#floor-}]}"; else
        echo "${FLOOR_PID[${1#floor-}]}"; fi ;;
    esac
}
gh_servers() { # port offset → "gatehouse-epoll:port gatehouse-io_uring:port"
    local e
    for e in $ENGINES; do printf 'gatehouse-%s:%s ' "$e" "$(gp "$e" "$1")"; done
}
floor_port() { # engine smtp|handoff
    if [ "$2" = handoff ]; then echo "${FLOOR_RELAY_PORT[$1]}"; else echo "${FLOOR_PORT[$1]}"; fi
}
# The servers of a plain SMTP or hand-off cell: the io_uring floor right after the first
# Gatehouse engine and before the second, then the peers, then the epoll floor. The targets
# are judged on Gatehouse against the io_uring floor, and this machine's speed drifts by
# several percent within a minute: neighbours in a pass see nearly the same machine, whichever
# way the pass runs.
session_servers() { # smtp|handoff gatehouse-port-offset peer:port...
    local kind=$1 off=$2 e floor_next=1
    shift 2
    for e in $ENGINES; do
        printf 'gatehouse-%s:%s ' "$e" "$(gp "$e" "$off")"
        [ $floor_next = 1 ] && printf 'floor-io_uring:%s ' "$(floor_port io_uring "$kind")"
        floor_next=0
    done
    printf '%s ' "$@"
    printf 'floor-epoll:%s ' "$(floor_port epoll "$kind")"
}

log "Gatehouse $(git rev-parse --short HEAD 2>/dev/null || echo '?') (engines: $ENGINES), $WORKERS workers each; ports from $BASE; descriptor limit $NOFILE"
for e in $ENGINES; do gh_start "$e"; done
ngx_start
hap_start
for e in epoll io_uring; do
    floor_start "$FLOOR" "$e" "${FLOOR_PORT[$e]}" "$WORKERS" "$TMP/floor.log" ||
        { log "the $e floor did not start: $(tail -3 "$TMP/floor.log")"; exit 1; }
    FLOOR_PID[$e]=$LAST
    floor_start "$FLOOR" "$e" "${FLOOR_RELAY_PORT[$e]}" "$WORKERS" "$TMP/floor.log" "$SINK" ||
        { log "the $e relay floor did not start: $(tail -3 "$TMP/floor.log")"; exit 1; }
    FLOOR_RELAY_PID[$e]=$LAST
done
[ "$GH_CERT" = uploaded ] || log "note: Gatehouse uses its $GH_CERT certificate"

# ---- sessions, handshakes, hand-offs and relays, the servers taking turns in each cell ----
run_matrix() { # work loadgen-mode extra-args... ; servers and ports from the case below
    local work=$1 mode=$2 conc s port
    shift 2
    for conc in $CONCS; do
        time_left || { log "time limit: skipping $work"; return; }
        local servers
        case $work in
        smtp) servers=$(session_servers smtp $O_PLAIN nginx:$N_PLAIN haproxy:$H_PLAIN) ;;
        tls-*) servers="$(gh_servers $O_TLS)nginx:$N_TLS nginx-stream:$N_STREAM haproxy:$H_TLS" ;;
        starttls) servers="$(gh_servers $O_STARTTLS)nginx:$N_STARTTLS" ;;
        handoff) servers=$(session_servers handoff $O_HANDOFF nginx-stream:$N_HANDOFF haproxy:$H_HANDOFF) ;;
        relay) servers="$(gh_servers $O_RELAY)nginx-stream:$N_RELAY haproxy:$H_RELAY" ;;
        relay-tls) servers="$(gh_servers $O_RELAY_TLS)nginx-stream:$N_RELAY_TLS haproxy:$H_RELAY_TLS" ;;
        relay-plain) servers="$(gh_servers $O_HANDOFF)nginx-stream:$N_HANDOFF haproxy:$H_RELAY_PLAIN" ;;
        esac
        # Each pass takes the servers in the other order, so that none always runs first or
        # last; report.py pools the passes for the figures (sessions over seconds, over
        # CPU-seconds) and takes the ratios within each pass.
        # A relay cell of many clients leaves its server, the backend and the load client
        # closing that many TLS sessions for a while: the next cell waits two seconds, or it
        # measures that close (clients timed out, and a server measured twice in a row, as at
        # the turn of a pass, lost up to half its figure).
        local pass order passes=$PASSES dur=$DUR settle=0
        case $work in relay*) passes=$RELAY_PASSES dur=$RELAY_DUR ;; esac
        case $work:$conc in relay*:1) ;; relay*) settle=2 ;; esac
        for pass in $(seq 1 "$passes"); do
            order=$servers
            [ $((pass % 2)) = 0 ] && order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' ')
            for s in $order; do
                port=${s#*:}
                sleep "$settle"
                PASS=$pass cell "${s%%:*}" "$work" "$conc" --mode "$mode" --ports "$port" \
                    --duration "$dur" --pid "$(pids_of "${s%%:*}" "$work")" "$@"
            done
        done
        # system calls per session: plain sessions and hand-offs, at the larger client counts
        case " $SYSCALL_CONCS " in
        *" $conc "*)
            if [ "$work" = smtp ] || [ "$work" = handoff ]; then
                for s in $servers; do count_cell "${s%%:*}" "$work" "$conc" "${s#*:}" "$mode"; done
            fi ;;
        esac
        check_alive "$work at $conc clients"
        log "$work at $conc clients done"
    done
}
[ "$RELAY_ONLY" = 0 ] && run_matrix smtp smtp
if [ "$RELAY_ONLY" = 0 ] && [ "$TARGETS" = 0 ]; then
    run_matrix tls-full tls
    run_matrix tls-resumed tls --resume
    run_matrix starttls starttls
fi

# ---- the backend behind the server: the sink greets, answers SMTP commands and discards
# the rest (loadgen --mode sink); the TLS sink does the same behind implicit TLS. Started
# afresh for each stage: loadgen runs ten minutes at most, which the relay stages together
# (with their pauses) outlast. ----
with_sink() { # plain|tls work loadgen-mode
    local kind=$1 port=$SINK tls=()
    shift
    [ "$kind" = tls ] && port=$SINK_TLS tls=(--sink-cert "$TMP/cert.pem" --sink-key "$TMP/key.pem")
    spawn "$TMP/sink.out" "$LG" --mode sink --ports "$port" --duration 600 --label "sink-$kind" \
        "${tls[@]}"
    local pid=$LAST
    if wait_port "$port" 5; then
        run_matrix "$@"
    else
        log "the $kind sink did not start: $(cat "$TMP/sink.out"); skipping $1"
    fi
    stop_pid "$pid"
}
# short handed-off sessions: greeting from the backend, one small message, QUIT
[ "$RELAY_ONLY" = 0 ] && with_sink plain handoff transaction
# bytes per second relayed to the backend: TLS to the server and a plain backend leg; plain
# on both, which Gatehouse may splice; TLS on both legs
[ "$TARGETS" = 0 ] && with_sink plain relay stream
with_sink plain relay-plain stream-plain
[ "$TARGETS" = 0 ] && with_sink tls relay-tls stream

if [ "$RELAY_ONLY" = 0 ] && [ "$TARGETS" = 0 ]; then # the rest of the workloads

# ---- 5: JMAP requests ----
for conc in $JMAP_CONC; do
    cell gatehouse jmap-get "$conc" --mode http --api "$(gp "$MAIN" $O_API)" --token "$SECRET" \
        --duration "$DUR" --pid "${GH_PID[$MAIN]}"
done
check_alive "JMAP"
log "JMAP done"

# ---- 6: listener changes: /set → accepting, then under 10,000 live sessions ----
if time_left; then
    cell gatehouse set-to-accept 1 --mode none --api "$(gp "$MAIN" $O_API)" --token "$SECRET" \
        --churn-port "$G_CHURN" --duration "$DUR" --pid "${GH_PID[$MAIN]}"
    live=10000
    [ "$QUICK" = 1 ] && live=2000
    [ "$live" -gt "$MAX_IDLE" ] && live=$MAX_IDLE
    cell gatehouse "changes-under-$live" 8 --mode smtp --ports "$(gp "$MAIN" $O_PROBE)" \
        --duration $((DUR + 2)) --idle "$live" --idle-ports "$(gp "$MAIN" $O_PLAIN)" \
        --api "$(gp "$MAIN" $O_API)" --token "$SECRET" --churn-port "$G_CHURN" --churn-update "$PROBE_ID" --pid "${GH_PID[$MAIN]}"
    log "live changes done"
fi

for e in $ENGINES; do gh_stop "$e"; done
ngx_stop
hap_stop

# ---- 4: memory per idle connection, each server fresh for each measurement ----
for n in $IDLE_SIZES; do
    [ "$n" -gt "$MAX_IDLE" ] && n=$MAX_IDLE
    for kind in plain tls; do
        for s in gatehouse nginx haproxy; do
            time_left || { log "time limit: skipping idle $kind $n"; continue; }
            case $s in
            gatehouse) gh_start "$MAIN"; port=$(gp "$MAIN" "$([ $kind = tls ] && echo $O_TLS || echo $O_PLAIN)") ;;
            nginx) ngx_start; port=$([ $kind = tls ] && echo "$N_TLS" || echo "$N_PLAIN") ;;
            haproxy) hap_start; port=$([ $kind = tls ] && echo "$H_TLS" || echo "$H_PLAIN") ;;
            esac
            sleep 0.5
            extra=""
            [ $kind = tls ] && extra="--idle-tls"
            cell "$s" "idle-$kind-$n" 1 --mode none --duration 0.1 --idle "$n" \
                --idle-ports "$port" --hold 1 --timeout 30000 --pid "$(pids_of "$s")" $extra
            case $s in
            gatehouse) gh_stop "$MAIN" ;;
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
    gh_start "$MAIN"
    if [ -n "$(ss -Htan "( sport >= :$SCALE_BASE and sport < :$((SCALE_BASE + 1000)) )")" ]; then
        SCALE_NOTE="skipped: ports $SCALE_BASE.. in use"
    else
        t0=$(date +%s.%N)
        created=0
        for b in $(seq 0 9); do
            python3 - "$SCALE_BASE" "$b" <<'EOF' | api "$MAIN" >"$TMP/scale-$b.json"
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
        rss=$(awk '/VmRSS/ {print $2}' "/proc/${GH_PID[$MAIN]}/status")
        fds=$(ls "/proc/${GH_PID[$MAIN]}/fd" | wc -l)
        echo "SCALE label=gatehouse:listeners:1000 created=$created secs=$(awk "BEGIN {print $t1 - $t0}") rss_kb=$rss fds=$fds" >>"$RES"
        log "created $created listeners"
        big=$((MAX_IDLE - fds - 500))
        [ "$big" -gt 50000 ] && big=50000
        ports="$SCALE_BASE-$((SCALE_BASE + 999))"
        cell gatehouse "scale-1000-listeners" 64 --mode smtp --ports "$ports" --duration "$DUR" \
            --idle "$big" --idle-ports "$ports" --idle-inflight 1024 --pid "${GH_PID[$MAIN]}"
    fi
    gh_stop "$MAIN"
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
meta="$meta · engines $ENGINES · $WORKERS workers · $(nproc) cores · load average before: $LOADAVG"
meta="$meta · nginx $(nginx -v 2>&1 | sed 's#.*/##') · HAProxy $(haproxy -v | awk 'NR==1 {print $3}')"
meta="$meta · $(openssl version | cut -d' ' -f1-2) · descriptor limit $NOFILE · certificate: $GH_CERT"
python3 bench/report.py "$RES" "$meta" ${SCALE_NOTE:+--note "$SCALE_NOTE"} >"$TMP/table.md"
cat "$TMP/table.md"
if [ "$APPEND" = 1 ]; then
    { echo; cat "$TMP/table.md"; } >>docs/BENCHMARKS.md
    log "appended to docs/BENCHMARKS.md"
fi
log "done"
