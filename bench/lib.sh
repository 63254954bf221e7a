# shellcheck shell=bash
# bench/lib.sh: shell functions shared by the benchmark scripts (sourced, never run): waiting
# for a port, starting and stopping the processes a script owns, the bench certificate, the
# peers' configurations from their templates, an SMTP listener made through JMAP, the floor
# servers, and counting a server's system calls while a load runs.
#
# STARTED collects the ids of the processes started here, for the sourcing script to stop.

STARTED=${STARTED:-}

wait_port() { # port [seconds]: true once 127.0.0.1:port accepts a connection
    local i
    for i in $(seq 1 $((${2:-10} * 20))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

stop_pid() { # pid: graceful, then forced, bounded to 12 s
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_started() { # tmp-dir: ends every process in STARTED, then removes tmp-dir (BENCH_KEEP=1 keeps it)
    local p
    for p in $STARTED; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in $STARTED; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${BENCH_KEEP:-}" ] && echo "kept $1" >&2 || rm -rf "$1"
}

spawn() { # log-file command...: runs it in the background; its pid in LAST and in STARTED
    local log=$1
    shift
    "$@" >>"$log" 2>&1 &
    LAST=$!
    STARTED="$STARTED $LAST"
}

# The start the single-purpose scripts share: the load tool built (LG), a scratch directory
# (TMP) whose processes stop on exit, a random port block from BASE, an admin SECRET, and a
# loadgen sink on BASE, the backend of hand-offs.
sink_setup() { # name
    make -s -f bench/Makefile BUILD=build >&2
    LG=$ROOT/build/bench/loadgen
    TMP=$(mktemp -d "/tmp/gatehouse-$1.XXXXXX")
    trap 'stop_started "$TMP"' EXIT
    trap 'exit 130' INT TERM
    BASE=$((20000 + (RANDOM % 200) * 50))
    SECRET="$1-$RANDOM$RANDOM"
    spawn "$TMP/sink.log" "$LG" --mode sink --ports "$BASE" --duration 600 --label sink
    wait_port "$BASE" 5
}

# bench/nginx.conf.in or bench/haproxy.cfg.in with its ports (plain tls starttls stream relay
# relay-tls handoff [relay-plain]) and the globals WORKERS, NOFILE, MAX_IDLE, SINK, SINK_TLS,
# TMP and ROOT filled in.
fill() { # template → stdout
    sed -e "s#@WORKERS@#$WORKERS#g; s#@NOFILE@#$NOFILE#g; s#@MAXCONN@#$MAX_IDLE#g" \
        -e "s#@P_SINK@#$SINK#g; s#@P_RELAY@#$6#g; s#@P_SINK_TLS@#$SINK_TLS#g" \
        -e "s#@P_RELAY_TLS@#$7#g; s#@P_HANDOFF@#$8#g; s#@P_RELAY_PLAIN@#${9:-0}#g" \
        -e "s#@TMP@#$TMP#g; s#@BENCH@#$ROOT/bench#g" \
        -e "s#@P_PLAIN@#$2#g; s#@P_TLS@#$3#g; s#@P_STARTTLS@#$4#g; s#@P_STREAM@#$5#g" "$1"
}

# A self-signed ECDSA P-256 certificate for bench.localhost in dir: cert.pem, key.pem and the
# two in both.pem (HAProxy's form). Every server in a benchmark presents this one.
bench_cert() { # dir
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj /CN=bench.localhost -addext subjectAltName=DNS:bench.localhost \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
    cat "$1/cert.pem" "$1/key.pem" >"$1/both.pem"
}

# An SMTP listener "l" on 127.0.0.1:port of the daemon whose API is on api, through JMAP:
# plain, or with a cert-dir (bench_cert) implicit TLS with that certificate uploaded as the
# default; with a sink port, an x:Destination that hands its sessions to that sink. The reply
# goes to out-file; anything not created stops the script.
smtp_listener() { # api port secret sink-port|"" out-file [cert-dir]
    python3 - "$2" "$4" "${6:-}" <<'PY' |
import json, sys
port, sink, certs = sys.argv[1:4]
calls = []
if certs:
    pem = lambda name: open(f"{certs}/{name}").read()
    calls.append(["x:Certificate/set", {"create": {"b": {"name": "bench", "isDefault": True,
        "certificate": pem("cert.pem"), "privateKey": pem("key.pem")}}}, "c"])
tls = {"tlsImplicit": True} if certs else {"useTls": False}
calls.append(["x:NetworkListener/set", {"create": {"l": {"name": "l", "maxConnections": 100000,
    "protocol": "smtp", "bind": [f"127.0.0.1:{port}"], **tls}}}, "0"])
if sink:
    calls.append(["x:Destination/set", {"create": {"d": {"name": "sink", "protocol": "smtp",
        "forwarding": "none", "healthCheck": False, "address": f"127.0.0.1:{sink}",
        "listeners": ["l"]}}}, "1"])
print(json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
                  "methodCalls": calls}))
PY
        curl -sS --max-time 30 -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
            "http://127.0.0.1:$1/jmap" --data-binary @- >"$5"
    if ! grep -q '"methodResponses"' "$5" || grep -q '"notCreated":{' "$5"; then
        cat "$5" >&2
        exit 1
    fi
    wait_port "$2" 10
}

# A daemon of binary on engine with one SMTP listener (and a sink destination, as
# smtp_listener), its data in data-dir and its log beside it; its pid in LAST.
gatehouse_start() { # binary engine workers api-port listener-port sink-port|"" data-dir [cert-dir]
    local pid
    mkdir -p "$7"
    spawn "$7.log" env GATEHOUSE_ADMIN_SECRET="$SECRET" "$1" serve --data "$7" \
        --http "127.0.0.1:$4" --workers "$3" --engine "$2"
    pid=$LAST
    wait_port "$4" 30
    smtp_listener "$4" "$5" "$SECRET" "$6" "$7.set" "${8:-}"
    LAST=$pid
}

with_children() { # pid → the pid and its children's, comma-separated (nginx: master, workers)
    echo "$1 $(pgrep -P "$1" | tr '\n' ' ')" | tr -s ' ' ',' | sed 's/,$//'
}

# The floor (bench/floor.c): the smallest server for the same session, on one engine. With a
# relay port it passes the session to that backend instead of answering it. Sets LAST.
floor_start() { # floor-binary engine port threads log-file [relay-port]
    local relay=()
    [ -n "${6:-}" ] && relay=(--relay "$6")
    spawn "$5" "$1" --engine "$2" --port "$3" --threads "$4" "${relay[@]}"
    wait_port "$3" 10
}

# Runs a command while `perf stat` counts the system calls (raw_syscalls:sys_enter) of the
# given processes, every thread of each; the count is written to count-file (left empty
# when perf is missing or could not attach). The command's output and status pass through.
count_syscalls() { # count-file pids command...
    local file=$1 pids=$2 perf_pid rc=0
    shift 2
    : >"$file"
    if ! command -v perf >/dev/null; then
        "$@"
        return
    fi
    perf stat -x, -e raw_syscalls:sys_enter -p "$pids" -o "$file.perf" 2>/dev/null &
    perf_pid=$!
    sleep 0.2 # attached before the load starts
    "$@" || rc=$?
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    awk -F, '/raw_syscalls/ && $1 ~ /^[0-9]+$/ {print $1}' "$file.perf" >"$file" 2>/dev/null || true
    return $rc
}
