"""Seeing what happens: GET /metrics/prometheus (checked by promtool, scraped by a real
Prometheus), its access rules and the x:Metrics singleton, GET /api/stats, and the session
log (fields for plain, TLS, PROXY and handed-off sessions, JSON, the flush within a second,
--log-file reopened on SIGUSR1, --session-log off)."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from backend_kit import one_reply_backend
from conftest import pick_port, wait_port

HOST = "127.0.0.1"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# ---- helpers ----

def scrape(d, headers=None, auth=True):
    status, h, body = d.http("GET", "/metrics/prometheus", headers=headers, auth=auth)
    return status, h, body.decode()


def value(text, name, **labels):
    """The value of the sample name{labels...} (labels matched as a subset)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def wait_value(d, name, want, timeout=5, **labels):
    end = time.time() + timeout
    while True:
        v = value(scrape(d)[2], name, **labels)
        if v == want or time.time() > end:
            return v
        time.sleep(0.05)


def smtp_session(port, header=b"", ctx=None, sni=None):
    """Greeting, EHLO, QUIT; returns the greeting."""
    s = socket.create_connection((HOST, port), timeout=5)
    if header:
        s.sendall(header)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname=sni)
    f = s.makefile("rb")
    greeting = f.readline()
    s.sendall(b"EHLO client.example\r\n")
    while True:
        line = f.readline()
        if not line or line[3:4] == b" ":
            break
    s.sendall(b"QUIT\r\n")
    f.readline()
    f.close()
    s.close()
    return greeting


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def v2(src="203.0.113.7", sport=40000, dport=25):
    addrs = (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, HOST)
             + struct.pack("!HH", sport, dport))
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def session_lines(text):
    return [l for l in text.splitlines() if " session " in l or '"event":"session"' in l]


def fields(line):
    """The key=value fields of a text line."""
    return dict(re.findall(r" (\w+)=(\S+)", line))


def wait_session(d, pred, timeout=5, path=None):
    end = time.time() + timeout
    while True:
        text = open(path).read() if path else d.read_log()
        found = [l for l in session_lines(text) if pred(l)]
        if found or time.time() > end:
            return found
        time.sleep(0.05)


def make_key(d, permissions):
    _, res, _ = d.call("x:ApiKey/set", {"create": {"k": {"permissions": permissions}}})
    created = res["created"]["k"]
    return created["secret"]


# ---- the scrape ----

def test_scrape_counts_sessions_and_passes_promtool(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="mx", protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    for _ in range(3):
        assert smtp_session(port).startswith(b"220 ")
    assert wait_value(gatehouse, "gatehouse_connections_accepted_total", 3, listener="mx") == 3
    status, h, text = scrape(gatehouse)
    assert status == 200
    assert h["content-type"].startswith("text/plain; version=0.0.4")
    assert value(text, "gatehouse_connections_accepted_total", listener="mx",
                 protocol="smtp") == 3
    assert wait_value(gatehouse, "gatehouse_connections_active", 0, listener="mx") == 0
    text = scrape(gatehouse)[2]
    assert value(text, "gatehouse_session_seconds_count", listener="mx") == 3
    assert value(text, "gatehouse_session_seconds_bucket", listener="mx", le="+Inf") == 3
    # a series that never counted is left out
    assert value(text, "gatehouse_connections_refused_total", listener="mx",
                 reason="maxConnections") is None
    assert value(text, "gatehouse_build_info") == 1
    assert value(text, "process_open_fds") > 3
    assert value(text, "process_resident_memory_bytes") > 1e6
    assert abs(value(text, "process_start_time_seconds") - time.time()) < 600
    assert value(text, "gatehouse_api_requests_total", status="200") >= 1
    for family in ["gatehouse_tls_handshakes_total", "gatehouse_tls_handshake_seconds",
                   "gatehouse_proxy_headers_total", "gatehouse_handoffs_total",
                   "gatehouse_relay_bytes_total", "gatehouse_destination_up",
                   "gatehouse_logins_total", "gatehouse_bans_total",
                   "gatehouse_blocked_addresses", "process_cpu_seconds_total"]:
        assert f"# TYPE {family} " in text, family
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p


def test_refusals_tls_proxy_and_handoffs_are_counted(gatehouse, free_port):
    port, tport, pport, hport = free_port(), free_port(), free_port(), free_port()
    gatehouse.create_listener(name="lim", protocol="smtp", bind=[f"{HOST}:{port}"],
                              useTls=False, maxConnections=1)
    gatehouse.create_listener(name="tls", protocol="smtp", bind=[f"{HOST}:{tport}"],
                              useTls=True, tlsImplicit=True)
    gatehouse.create_listener(name="prx", protocol="smtp", bind=[f"{HOST}:{pport}"],
                              useTls=False, overrideProxyTrustedNetworks=["127.0.0.0/8"])
    held = socket.create_connection((HOST, port), timeout=5)
    assert held.recv(100).startswith(b"220 ")
    with socket.create_connection((HOST, port), timeout=5) as s:
        assert s.recv(100).startswith(b"421")
    assert wait_value(gatehouse, "gatehouse_connections_refused_total", 1, listener="lim",
                      reason="maxConnections") == 1
    assert value(scrape(gatehouse)[2], "gatehouse_connections_active", listener="lim") == 1
    held.close()

    assert smtp_session(tport, ctx=client_ctx()).startswith(b"220 ")
    with socket.create_connection((HOST, tport), timeout=5) as s:
        s.sendall(b"not a client hello\r\n" * 10)
        try:
            s.recv(100)
        except ConnectionResetError:
            pass
    assert wait_value(gatehouse, "gatehouse_tls_handshakes_total", 1, listener="tls",
                      result="failed") == 1
    text = scrape(gatehouse)[2]
    assert value(text, "gatehouse_tls_handshakes_total", listener="tls", result="full") == 1
    assert value(text, "gatehouse_tls_handshake_seconds_count", listener="tls") == 1

    assert smtp_session(pport, header=v2()).startswith(b"220 ")
    assert wait_value(gatehouse, "gatehouse_proxy_headers_total", 1, listener="prx",
                      result="ok") == 1

    backend = one_reply_backend(b"220 backend\r\n", b"221 bye\r\n")
    _, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": {
        "protocol": "smtp", "address": f"{HOST}:{backend.getsockname()[1]}",
        "forwarding": "none", "listeners": ["hand"], "healthCheck": False}}})
    assert "d" in res["created"], res
    gatehouse.create_listener(name="hand", protocol="smtp", bind=[f"{HOST}:{hport}"],
                              useTls=False)
    with socket.create_connection((HOST, hport), timeout=5) as s:
        assert s.recv(100) == b"220 backend\r\n"
        s.sendall(b"QUIT\r\n")
        assert s.recv(100) == b"221 bye\r\n"
    assert wait_value(gatehouse, "gatehouse_handoffs_total", 1, listener="hand",
                      result="ok") == 1
    text = scrape(gatehouse)[2]
    assert value(text, "gatehouse_relay_bytes_total", listener="hand",
                 direction="toDestination") == 6
    assert value(text, "gatehouse_relay_bytes_total", listener="hand",
                 direction="toClient") == len(b"220 backend\r\n221 bye\r\n")
    backend.close()


def test_destination_up_follows_health_checks(gatehouse, free_port):
    backend = socket.socket()
    backend.bind((HOST, 0))
    backend.listen(16)
    stop = threading.Event()

    def serve():  # answers every health check with a greeting
        backend.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = backend.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"220 backend\r\n")

    threading.Thread(target=serve, daemon=True).start()
    dead_port = free_port()  # nothing listens there
    for name, port in [("live", backend.getsockname()[1]), ("dead", dead_port)]:
        _, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": {
            "name": name, "protocol": "smtp", "address": f"{HOST}:{port}",
            "forwarding": "none", "checkInterval": "100ms", "rise": 1, "fall": 1}}})
        assert "d" in res["created"], res
    assert wait_value(gatehouse, "gatehouse_destination_up", 0, destination="dead") == 0
    assert value(scrape(gatehouse)[2], "gatehouse_destination_up", destination="live") == 1
    stop.set()
    backend.close()
    assert wait_value(gatehouse, "gatehouse_destination_up", 0, destination="live") == 0


def test_removed_listener_leaves_the_scrape(gatehouse, free_port):
    port = free_port()
    lid = gatehouse.create_listener(name="gone", protocol="smtp", bind=[f"{HOST}:{port}"],
                                    useTls=False)
    assert value(scrape(gatehouse)[2], "gatehouse_connections_accepted_total",
                 listener="gone") == 0
    _, res, _ = gatehouse.call("x:NetworkListener/set", {"destroy": [lid]})
    assert res["destroyed"] == [lid]
    assert value(scrape(gatehouse)[2], "gatehouse_connections_accepted_total",
                 listener="gone") is None
    gatehouse.call("x:NetworkListener/set", {"update": {}})  # the daemon goes on serving


def test_scrape_access(gatehouse):
    assert scrape(gatehouse, auth=False)[0] == 401
    assert scrape(gatehouse, {"Authorization": "Bearer " + make_key(
        gatehouse, ["sysNetworkListenerGet"])})[0] == 401
    assert scrape(gatehouse, {"Authorization": "Bearer " + make_key(
        gatehouse, ["sysMetricsGet"])})[0] == 200
    basic = {"Authorization": gatehouse.basic("prom", "scrape-secret")}
    assert scrape(gatehouse, basic)[0] == 401  # no pair set yet
    _, res, _ = gatehouse.call("x:Metrics/set", {"update": {"singleton": {
        "prometheusAuthUsername": "prom", "prometheusAuthSecret": "scrape-secret"}}})
    assert "singleton" in res["updated"], res
    assert scrape(gatehouse, basic)[0] == 200
    assert scrape(gatehouse, {"Authorization": gatehouse.basic("prom", "wrong")})[0] == 401
    assert scrape(gatehouse, {"Authorization": gatehouse.basic("other", "scrape-secret")})[0] \
        == 401
    _, got, _ = gatehouse.call("x:Metrics/get", {"ids": ["singleton"]})
    obj = got["list"][0]
    assert obj["prometheusAuthUsername"] == "prom" and obj["prometheusEnabled"] is True
    assert "prometheusAuthSecret" not in obj
    assert "scrape-secret" not in gatehouse.read_log()
    gatehouse.call("x:Metrics/set", {"update": {"singleton": {"prometheusEnabled": False}}})
    assert scrape(gatehouse)[0] == 404
    assert scrape(gatehouse, basic)[0] == 404


def test_metrics_in_the_schema(gatehouse):
    status, _, raw = gatehouse.http("GET", "/api/schema")
    assert status == 200
    assert b"x:Metrics" in raw and b"prometheusAuthSecret" in raw and b"sysMetricsGet" in raw


def test_api_stats(gatehouse, free_port):
    port = free_port()
    lid = gatehouse.create_listener(name="st", protocol="smtp", bind=[f"{HOST}:{port}"],
                                    useTls=False)
    smtp_session(port)
    assert gatehouse.http("GET", "/api/stats", auth=False)[0] == 401
    end = time.time() + 5
    while True:
        status, h, raw = gatehouse.http("GET", "/api/stats")
        assert status == 200 and h["content-type"] == "application/json"
        stats = json.loads(raw)
        if stats["listeners"][lid]["accepted"] == 1 or time.time() > end:
            break
        time.sleep(0.05)
    assert abs(stats["time"] / 1000 - time.time()) < 60
    l = stats["listeners"][lid]
    assert l == {"name": "st", "protocol": "smtp", "active": 0, "accepted": 1,
                 "handshakes": 0, "handoffs": 0, "refused": 0, "bans": 0}


# ---- the session log ----

def test_session_line_plain(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="plain", protocol="smtp", bind=[f"{HOST}:{port}"],
                              useTls=False)
    smtp_session(port)
    lines = wait_session(gatehouse, lambda l: "listener=plain" in l)
    assert len(lines) == 1, gatehouse.read_log()[-2000:]
    f = fields(lines[0])
    assert f["client"].startswith("127.0.0.1:") and "peer" not in f
    assert f["local"] == f"127.0.0.1:{port}"
    assert f["protocol"] == "smtp" and f["tls"] == "none" and f["end"] == "clientClosed"
    assert int(f["bytesIn"]) == len(b"EHLO client.example\r\nQUIT\r\n")
    assert int(f["bytesOut"]) > 50 and float(f["duration"]) < 5


def test_session_lines_name_each_sessions_own_local_address(gatehouse, free_port):
    """Sessions of two listeners taking turns on the same workers: each line names the
    address its own session came in on, not the one written before it."""
    addrs = {"one": (HOST, free_port()), "two": ("127.0.0.2", free_port())}
    for name, (host, port) in addrs.items():
        gatehouse.create_listener(name=name, protocol="smtp", bind=[f"{host}:{port}"],
                                  useTls=False)
    for _ in range(4):
        for addr in addrs.values():
            with socket.create_connection(addr, timeout=5) as s:
                s.recv(100)
                s.sendall(b"QUIT\r\n")
                s.recv(100)
    ours = lambda l: "listener=one" in l or "listener=two" in l  # noqa: E731
    end = time.time() + 5
    while len(lines := wait_session(gatehouse, ours)) < 8 and time.time() < end:
        time.sleep(0.1)
    assert len(lines) == 8, lines
    for line in lines:
        f = fields(line)
        assert f["local"] == "%s:%d" % addrs[f["listener"]], line


def test_session_line_tls_with_sni_and_resumption(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="imaps", protocol="imap", bind=[f"{HOST}:{port}"],
                              useTls=True, tlsImplicit=True)
    ctx = client_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # a session to resume, without tickets' wait
    sess = None
    for _ in range(2):
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="mail.example", session=sess) as s:
                s.recv(200)
                s.sendall(b"a LOGOUT\r\n")
                s.recv(200)
                sess = s.session
    lines = wait_session(gatehouse, lambda l: "listener=imaps" in l and "resumed=true" in l)
    assert lines, gatehouse.read_log()[-3000:]
    assert fields(lines[0])["tls"] == "tls12"
    # lines of different workers may come out of order: find the full handshake's by its field
    first = [fields(l) for l in wait_session(
        gatehouse, lambda l: "listener=imaps" in l and "resumed=false" in l)][0]
    assert first["resumed"] == "false" and first["tls"] == "tls12"
    assert first["sni"] == "mail.example" and "GCM" in first["cipher"]


def test_session_line_names_proxy_client_and_peer(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="prx", protocol="smtp", bind=[f"{HOST}:{port}"],
                              useTls=False, overrideProxyTrustedNetworks=["127.0.0.0/8"])
    smtp_session(port, header=v2(src="203.0.113.9", sport=4242))
    lines = wait_session(gatehouse, lambda l: "listener=prx" in l)
    assert lines, gatehouse.read_log()[-2000:]
    f = fields(lines[0])
    assert f["client"] == "203.0.113.9:4242" and f["peer"].startswith("127.0.0.1:")
    # an event line of such a session (a failed handshake) names the listener, the client
    # and the balancer
    tport = free_port()
    gatehouse.create_listener(name="prxt", protocol="smtp", bind=[f"{HOST}:{tport}"],
                              useTls=True, tlsImplicit=True,
                              overrideProxyTrustedNetworks=["127.0.0.0/8"])
    with socket.create_connection((HOST, tport), timeout=5) as s:
        s.sendall(v2(src="203.0.113.10") + b"not a TLS client hello\r\n")
        try:
            s.recv(100)
        except ConnectionResetError:
            pass
    end = time.time() + 5
    while time.time() < end and "tls-handshake-error" not in gatehouse.read_log():
        time.sleep(0.05)
    events = [l for l in gatehouse.read_log().splitlines() if "tls-handshake-error" in l]
    assert events and all("listener=prxt" in l and "client=203.0.113.10" in l
                          and "peer=127.0.0.1" in l for l in events), \
        gatehouse.read_log()[-2000:]


def test_session_line_hand_off_json(make_daemon, free_port):
    d = make_daemon(args=["--log-format", "json"])
    backend = one_reply_backend(b"220 backend\r\n", b"221 bye\r\n")
    _, res, _ = d.call("x:Destination/set", {"create": {"d": {
        "name": "store1", "protocol": "smtp", "address": f"{HOST}:{backend.getsockname()[1]}",
        "forwarding": "none", "healthCheck": False}}})
    assert "d" in res["created"], res
    port = free_port()
    d.create_listener(name="mx", protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    with socket.create_connection((HOST, port), timeout=5) as s:
        assert s.recv(100) == b"220 backend\r\n"
        s.sendall(b"QUIT\r\n")
        assert s.recv(100) == b"221 bye\r\n"
    lines = wait_session(d, lambda l: '"listener":"mx"' in l)
    assert lines, d.read_log()[-2000:]
    rec = json.loads(lines[0])
    assert rec["event"] == "session" and rec["destination"] == "store1"
    assert rec["end"] == "handedOff" and rec["bytesIn"] == 6
    assert rec["bytesOut"] == len(b"220 backend\r\n221 bye\r\n")
    assert isinstance(rec["duration"], float) and rec["tls"] == "none"
    backend.close()


def test_session_lines_are_flushed_within_a_second(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="quick", protocol="smtp", bind=[f"{HOST}:{port}"],
                              useTls=False)
    smtp_session(port)
    t0 = time.time()
    lines = wait_session(gatehouse, lambda l: "listener=quick" in l, timeout=3)
    assert lines and time.time() - t0 < 2.0  # 1 s, plus a loaded machine's slack


def test_session_lines_at_stop_and_shutdown_end(make_daemon, free_port):
    d = make_daemon()
    port = free_port()
    d.create_listener(name="held", protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    s = socket.create_connection((HOST, port), timeout=5)
    assert s.recv(100).startswith(b"220 ")
    d.stop()
    s.close()
    lines = [l for l in session_lines(d.read_log()) if "listener=held" in l]
    assert len(lines) == 1 and "end=shutdown" in lines[0], d.read_log()[-2000:]


def test_log_file_reopened_on_sigusr1(make_daemon, free_port, tmp_path):
    path = str(tmp_path / "gatehouse-access.log")
    d = make_daemon(args=["--log-file", path])
    port = free_port()
    d.create_listener(name="rot", protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    smtp_session(port)
    assert wait_session(d, lambda l: "listener=rot" in l, path=path)
    os.rename(path, path + ".1")
    d.proc.send_signal(signal.SIGUSR1)
    end = time.time() + 5
    while not os.path.exists(path) and time.time() < end:
        time.sleep(0.05)
    assert os.path.exists(path)
    smtp_session(port)
    assert wait_session(d, lambda l: "listener=rot" in l, path=path)
    assert len([l for l in session_lines(open(path + ".1").read())
                if "listener=rot" in l]) == 1
    assert "session" not in d.read_log()  # stderr holds no log lines


def test_session_log_off(make_daemon, free_port):
    d = make_daemon(args=["--session-log", "off"])
    port = free_port()
    d.create_listener(name="quiet", protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    smtp_session(port)
    time.sleep(1.5)
    assert not session_lines(d.read_log())


# ---- a real Prometheus ----

@pytest.mark.skipif(not shutil.which("prometheus"), reason="Debian package prometheus")
def test_real_prometheus_scrapes_gatehouse(gatehouse, free_port, tmp_path):
    port = free_port()
    gatehouse.create_listener(name="mx", protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    for _ in range(2):
        smtp_session(port)
    gatehouse.call("x:Metrics/set", {"update": {"singleton": {
        "prometheusAuthUsername": "prom", "prometheusAuthSecret": "scrape-secret"}}})
    prom_port = pick_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: gatehouse
    metrics_path: /metrics/prometheus
    basic_auth:
      username: prom
      password: scrape-secret
    static_configs:
      - targets: ["127.0.0.1:{gatehouse.http_port}"]
""")
    log = open(tmp_path / "prometheus.log", "wb")
    p = subprocess.Popen(["prometheus", f"--config.file={cfg}",
                          f"--storage.tsdb.path={tmp_path / 'data'}",
                          f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stdout=log, stderr=log)
    try:
        assert wait_port(prom_port, timeout=30)
        query = urllib.parse.quote('gatehouse_connections_accepted_total{listener="mx"}')
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}"
        end, result = time.time() + 40, []
        while time.time() < end:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    result = json.loads(r.read())["data"]["result"]
            except OSError:
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, open(tmp_path / "prometheus.log").read()[-3000:]
        assert result[0]["metric"]["protocol"] == "smtp"
        assert float(result[0]["value"][1]) == 2
        up = urllib.parse.quote('up{job="gatehouse"}')
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={up}",
                                    timeout=5) as r:
            assert json.loads(r.read())["data"]["result"][0]["value"][1] == "1"
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
