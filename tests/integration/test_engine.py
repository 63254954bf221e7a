"""The listener engine against the real daemon: live create/update/destroy, limits,
socket options read back from the kernel, descriptor exhaustion, graceful stop."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest


def smtp_greeting(port, host="127.0.0.1", family=socket.AF_INET, timeout=5):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        return s.recv(512).decode(errors="replace")


def plain_smtp(gatehouse, port, **extra):
    props = dict(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    props.update(extra)
    return gatehouse.create_listener(**props)


def set_listener(gatehouse, lid, patch):
    _, res, _ = gatehouse.call("x:NetworkListener/set", {"update": {lid: patch}})
    return res


def test_create_accepts_before_the_response(gatehouse, free_port):
    port = free_port()
    plain_smtp(gatehouse, port)
    assert smtp_greeting(port).startswith("220 ")


def test_destroy_stops_accepting_and_live_sessions_go_on(gatehouse, free_port):
    port = free_port()
    lid = plain_smtp(gatehouse, port)
    live = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert live.recv(512).startswith(b"220")
    _, res, _ = gatehouse.call("x:NetworkListener/set", {"destroy": [lid]})
    assert res["destroyed"] == [lid]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    live.sendall(b"NOOP\r\n")
    assert live.recv(512).startswith(b"250")
    live.close()


def test_update_refuses_no_connection(gatehouse, free_port):
    port, extra = free_port(), free_port()
    lid = plain_smtp(gatehouse, port)
    refused, served, stop = [], [], threading.Event()

    def hammer():
        deadline = time.time() + 20
        while not stop.is_set() and time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    if s.recv(64).startswith(b"220"):
                        served.append(1)
            except ConnectionRefusedError:
                refused.append(1)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for i in range(20):
            binds = [f"127.0.0.1:{port}"] + ([f"127.0.0.1:{extra}"] if i % 2 else [])
            res = set_listener(gatehouse, lid, {"maxConnections": 100 + i, "bind": binds,
                                                "socketBacklog": 128 + i})
            assert lid in (res.get("updated") or {}), res
    finally:
        stop.set()
        t.join()
    assert refused == []
    assert len(served) > 20


def test_bind_failure_is_a_clear_error_and_nothing_is_stored(gatehouse, free_port):
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        _, res, _ = gatehouse.call("x:NetworkListener/set", {"create": {"n": {
            "protocol": "smtp", "bind": [f"127.0.0.1:{port}"], "useTls": False}}})
        err = res["notCreated"]["n"]
        assert err["type"] == "invalidProperties"
        assert err["properties"] == ["bind"]
        assert "Address already in use" in err["description"]
        _, got, _ = gatehouse.call("x:NetworkListener/get", {"ids": None})
        assert all(f"127.0.0.1:{port}" not in l["bind"] for l in got["list"])
    finally:
        blocker.close()


def test_update_bind_failure_leaves_the_listener_as_it_was(gatehouse, free_port):
    port, taken = free_port(), free_port()
    lid = plain_smtp(gatehouse, port, maxConnections=50)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen(1)
    try:
        res = set_listener(gatehouse, lid, {"bind": [f"127.0.0.1:{taken}"], "maxConnections": 7})
        assert res["notUpdated"][lid]["type"] == "invalidProperties"
        assert smtp_greeting(port).startswith("220")
        _, got, _ = gatehouse.call("x:NetworkListener/get", {"ids": [lid]})
        assert got["list"][0]["bind"] == [f"127.0.0.1:{port}"]
        assert got["list"][0]["maxConnections"] == 50
    finally:
        blocker.close()


def test_max_connections_is_exact_under_a_burst(gatehouse, free_port):
    port = free_port()
    plain_smtp(gatehouse, port, maxConnections=10)
    socks, lock = [], threading.Lock()

    def connect():
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        with lock:
            socks.append(s)

    threads = [threading.Thread(target=connect) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replies = []
    for s in socks:
        s.settimeout(5)
        replies.append(s.recv(512).decode())
    assert sum(r.startswith("220 ") for r in replies) == 10
    assert sum(r.startswith("421 4.3.2 Too many connections") for r in replies) == 50
    for s in socks:
        s.close()


def test_connection_slot_is_freed_when_a_session_ends(gatehouse, free_port):
    port = free_port()
    plain_smtp(gatehouse, port, maxConnections=1)
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert first.recv(64).startswith(b"220")
    assert smtp_greeting(port).startswith("421")
    first.close()
    for _ in range(50):
        time.sleep(0.05)
        if smtp_greeting(port).startswith("220"):
            return
    pytest.fail("the slot of a closed session was not given back")


def listen_line(port):
    out = subprocess.run(["ss", "-ltnmH", f"sport = :{port}"], capture_output=True, text=True)
    return out.stdout


def test_backlog_and_buffers_reach_the_listening_socket(gatehouse, free_port):
    port = free_port()
    plain_smtp(gatehouse, port, socketBacklog=77, socketReceiveBufferSize=65536,
               socketSendBufferSize=131072, socketReusePort=False)
    out = listen_line(port)
    # LISTEN state: Send-Q is the backlog
    assert re.search(r"LISTEN\s+\d+\s+77\s", out), out
    rb = int(re.search(r"rb(\d+)", out).group(1))
    tb = int(re.search(r"tb(\d+)", out).group(1))
    assert rb == 2 * 65536 and tb == 2 * 131072, out  # Linux doubles what setsockopt asks


def test_reuse_port_gives_one_socket_per_worker(gatehouse, free_port):
    port = free_port()
    plain_smtp(gatehouse, port)
    assert listen_line(port).count("LISTEN") == 2  # the fixture runs two workers
    other = free_port()
    plain_smtp(gatehouse, other, socketReusePort=False)
    assert listen_line(other).count("LISTEN") == 1


def greeting_packet_header(port):
    """Captures the loopback packet that carries the greeting from port and returns its
    IPv4 (TOS, TTL): what the kernel really put on the wire for the accepted socket."""
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    cap.bind(("lo", 0))
    cap.settimeout(0.2)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.recv(512)
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                frame = cap.recv(65535)
            except socket.timeout:
                continue
            ip = frame[14:]
            if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 0x0F) * 4
            tcp = ip[ihl:]
            src_port = int.from_bytes(tcp[0:2], "big")
            payload = tcp[(tcp[12] >> 4) * 4:]
            if src_port == port and payload.startswith(b"220"):
                return ip[1], ip[8]
    finally:
        cap.close()
    return None


def test_ttl_and_tos_reach_the_packets(gatehouse, free_port):
    port = free_port()
    plain_smtp(gatehouse, port, socketTtl=7, socketTosV4=0x20)
    assert greeting_packet_header(port) == (0x20, 7)
    other = free_port()
    plain_smtp(gatehouse, other)
    tos, ttl = greeting_packet_header(other)
    assert (tos, ttl) != (0x20, 7) and ttl == 64  # unset: the system defaults


def test_ipv6_and_dual_stack_conflict(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"[::1]:{port}"], useTls=False)
    assert smtp_greeting(port, "::1", socket.AF_INET6).startswith("220")
    wide = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"0.0.0.0:{wide}"], useTls=False)
    _, res, _ = gatehouse.call("x:NetworkListener/set", {"create": {"n": {
        "protocol": "smtp", "bind": [f"[::]:{wide}"], "useTls": False}}})
    assert res["notCreated"]["n"]["properties"] == ["bind"]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_out_of_descriptors_backs_off_and_recovers(make_daemon, free_port):
    d = make_daemon(nofile=64)
    port = free_port()
    d.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    held = []
    for _ in range(80):  # more than the daemon can take
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    before = cpu_ticks(d.proc.pid)
    time.sleep(1.0)
    assert cpu_ticks(d.proc.pid) - before < 30  # under 0.3 s of CPU in 1 s: no spinning
    for s in held:
        s.close()
    time.sleep(1.5)
    assert smtp_greeting(port).startswith("220")
    assert "accept-error" in d.read_log()


def test_management_api_answers_while_mail_has_every_descriptor(make_daemon, free_port):
    """Mail clients that would take every descriptor leave the reserve to the management
    listener: the API and the web page still answer 200, the refused mail clients are told
    to come back later, and mail is served again once they leave."""
    d = make_daemon(nofile=64)
    port = free_port()
    d.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    held, refused = [], 0
    for _ in range(80):  # more than the daemon can take
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(s)
    time.sleep(1.0)  # accepted, refused or queued: the daemon has done what it will
    for _ in range(3):  # several requests, each on a new connection
        status, _, body = d.http("GET", "/.well-known/jmap", timeout=5)
        assert status == 200, (status, body)
        status, _, page = d.http("GET", "/", auth=False, timeout=5)
        assert status == 200 and b"<html" in page.lower()
    name, res, _ = d.call("x:NetworkListener/get", {"ids": None})
    assert name == "x:NetworkListener/get" and len(res["list"]) >= 2, res
    for s in held:
        s.settimeout(0.2)
        try:
            got = s.recv(512)
        except (socket.timeout, ConnectionResetError):
            continue
        if got.startswith(b"421 4.3.2") or got == b"":
            refused += 1
    assert refused > 0, "no mail client was refused: the limit was never reached"
    assert "kept for the management API" in d.read_log()
    for s in held:
        s.close()
    time.sleep(1.5)  # the longest accept pause is 1 s
    assert smtp_greeting(port).startswith("220")


def test_graceful_stop_says_goodbye(make_daemon, free_port):
    d = make_daemon()
    port = free_port()
    d.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert s.recv(512).startswith(b"220")
    d.proc.send_signal(signal.SIGTERM)
    bye = s.recv(512).decode()
    assert bye.startswith("421 4.3.0 ") and "shutting down" in bye
    assert d.proc.wait(15) == 0


def test_sighup_reloads_without_dropping_sessions(make_daemon, free_port):
    d = make_daemon()
    port = free_port()
    d.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert s.recv(512).startswith(b"220")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    s.sendall(b"NOOP\r\n")
    assert s.recv(512).startswith(b"250")
    assert "reload" in d.read_log()
    s.close()


def test_a_client_that_reads_late_gets_every_reply(gatehouse, free_port):
    """Pipelined commands held back while replies pile up are taken up again once the
    client reads: nothing is lost and nothing waits for new input."""
    port = free_port()
    plain_smtp(gatehouse, port)
    count = 100000
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert s.recv(512).startswith(b"220")
    sender = threading.Thread(target=s.sendall, args=(b"NOOP\r\n" * count,))
    sender.start()
    time.sleep(1.0)  # replies pile up past what the server keeps pending
    got = b""
    deadline = time.time() + 20
    while got.count(b"\n") < count and time.time() < deadline:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    sender.join()
    s.close()
    assert got.count(b"250 ") == count
