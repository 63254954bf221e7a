"""Handing sessions to destinations (x:Destination): at once for plain and implicit-TLS
listeners, after STARTTLS or the first transaction command on STARTTLS listeners; the client
address told by PROXY v2, v1 or not at all; load shared and failing over."""
import socket
import ssl
import struct
import threading
import time

import pytest

from backend_kit import V2_SIG as SIG, Backend, one_reply_backend


@pytest.fixture
def backend():
    """backend_kit's scripted backends, stopped after the test."""
    made = []

    def make(*args, **kw):
        b = Backend(*args, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def destination(gatehouse, port, **extra):
    # a scripted backend counts every connection: health checks stay out of these tests
    props = dict(protocol="smtp", address=f"127.0.0.1:{port}", healthCheck=False)
    props.update(extra)
    name, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": props}})
    assert "d" in (res.get("created") or {}), res
    return res["created"]["d"]["id"]


def read_reply(s):
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def v2_source(header):
    fam = header[13]
    assert fam == 0x11, header
    src = socket.inet_ntop(socket.AF_INET, header[16:20])
    sport = struct.unpack("!H", header[24:26])[0]
    return src, sport


def tlv_types(header):
    assert header[:12] == SIG
    tlvs, types = header[16 + 12:], {}
    while len(tlvs) >= 3:
        kind, length = tlvs[0], struct.unpack("!H", tlvs[1:3])[0]
        types[kind] = tlvs[3:3 + length]
        tlvs = tlvs[3 + length:]
    return types


def test_plain_listener_hands_off_at_once_with_proxy_v2(gatehouse, free_port, backend):
    b = backend(proxy=True)
    destination(gatehouse, b.port)
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert read_reply(s) == b"220 backend ESMTP\r\n"  # the backend's own greeting
        s.sendall(b"EHLO client.example\r\n")
        assert read_reply(s) == b"250 backend got EHLO client.example\r\n"
        src, sport = v2_source(b.headers[0])
        assert (src, sport) == s.getsockname()
        assert 0x20 not in tlv_types(b.headers[0])  # plain: no SSL TLV


def test_proxy_v1_and_none(gatehouse, free_port, backend):
    b1, b0 = backend(proxy=True), backend(proxy=False)
    p1, p0 = free_port(), free_port()
    gatehouse.create_listener(name="one", protocol="smtp", bind=[f"127.0.0.1:{p1}"], useTls=False)
    gatehouse.create_listener(name="zero", protocol="smtp", bind=[f"127.0.0.1:{p0}"], useTls=False)
    destination(gatehouse, b1.port, forwarding="proxyV1", listeners=["one"])
    destination(gatehouse, b0.port, forwarding="none", listeners=["zero"])
    with socket.create_connection(("127.0.0.1", p1), timeout=5) as s:
        assert read_reply(s).startswith(b"220 backend")
        assert b1.headers[0] == f"PROXY TCP4 127.0.0.1 127.0.0.1 {s.getsockname()[1]} {p1}\r\n".encode()
    with socket.create_connection(("127.0.0.1", p0), timeout=5) as s:
        assert read_reply(s).startswith(b"220 backend")
        s.sendall(b"NOOP\r\n")
        assert read_reply(s) == b"250 backend got NOOP\r\n"  # no header came first


def tls_client():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_starttls_listener_hands_off_after_the_upgrade(gatehouse, free_port, backend):
    b = backend(proxy=True)
    destination(gatehouse, b.port)
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    greeting = read_reply(raw)
    assert greeting.startswith(b"220 ") and b"backend" not in greeting  # the front door's
    raw.sendall(b"EHLO c.example\r\n")
    assert b"STARTTLS" in read_reply(raw)
    raw.sendall(b"STARTTLS\r\n")
    assert read_reply(raw).startswith(b"220 2.0.0")
    with tls_client().wrap_socket(raw) as s:
        s.sendall(b"EHLO c.example\r\n")
        # the backend's greeting was dropped: the first thing seen is its EHLO reply
        assert read_reply(s) == b"250 backend got EHLO c.example\r\n"
    assert 0x20 in tlv_types(b.headers[0])  # the SSL TLV: the client's leg is encrypted


def test_opportunistic_smtp_hands_off_at_the_first_transaction_command(gatehouse, free_port,
                                                                       backend):
    b = backend(proxy=True)
    destination(gatehouse, b.port)
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        read_reply(s)
        s.sendall(b"EHLO plain.example\r\n")
        read_reply(s)
        s.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n")
        got = read_reply(s)
        while got.count(b"\r\n") < 2:
            got += read_reply(s)
        assert got == (b"250 backend got MAIL FROM:<a@example.org>\r\n"
                       b"250 backend got RCPT TO:<b@example.org>\r\n")
    assert b.lines[:3] == [b"EHLO plain.example", b"MAIL FROM:<a@example.org>",
                           b"RCPT TO:<b@example.org>"]


def test_implicit_tls_imap_relays_the_backend_greeting(gatehouse, free_port, backend):
    b = backend(protocol="imap", proxy=False)
    destination(gatehouse, b.port, protocol="imap", forwarding="none")
    port = free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"127.0.0.1:{port}"], tlsImplicit=True)
    with tls_client().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5)) as s:
        assert s.recv(4096) == (b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] backend"
                                b" ready\r\n")
        s.sendall(b"a1 NOOP\r\n")
        assert s.recv(4096) == b"250 backend got a1 NOOP\r\n"


def reset_by_server(s):
    """Whether bytes sent now, after the server's end, are answered with a reset: what a
    closed socket does, where one still reading (a lingering close) takes them quietly."""
    s.sendall(b"NOOP\r\n")
    time.sleep(0.3)
    try:
        if s.recv(16) == b"":
            s.sendall(b"NOOP\r\n")
            time.sleep(0.3)
            s.sendall(b"NOOP\r\n")
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def read_to_end(s):
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("protocol,goodbye,reply", [
    ("smtp", b"quit", b"221 2.0.0 backend closing\r\n"),
    ("pop3", b"QUIT", b"+OK backend signing off\r\n"),
    ("imap", b"gh2 logout", b"* BYE backend logging out\r\ngh2 OK LOGOUT completed\r\n")])
def test_a_session_ended_by_the_clients_goodbye_closes_at_once(gatehouse, free_port, backend,
                                                               protocol, goodbye, reply):
    """The backend answers the client's QUIT (LOGOUT) and ends the session: the client has
    nothing more to say, so the front door closes at once, as nginx and HAProxy do, rather
    than waiting for the client's end (a read, a poll and a timer more per session)."""
    b = backend(protocol=protocol, proxy=False)
    destination(gatehouse, b.port, protocol=protocol, forwarding="none")
    port = free_port()
    gatehouse.create_listener(protocol=protocol, bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(4096)  # the greeting
        s.sendall(goodbye + b"\r\n")
        assert read_to_end(s) == reply
        assert reset_by_server(s)


def test_a_session_the_backend_ends_unasked_still_lingers(gatehouse, free_port):
    """The backend ends the session while the client may still be talking: what the client
    sends after the backend's last words is read and dropped, with no reset that could
    overtake those words."""
    srv = one_reply_backend(b"220 backend ESMTP\r\n", b"421 4.3.2 going away\r\n")
    destination(gatehouse, srv.getsockname()[1], forwarding="none")
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert read_reply(s) == b"220 backend ESMTP\r\n"
        s.sendall(b"NOOP\r\n")
        assert read_to_end(s) == b"421 4.3.2 going away\r\n"
        assert not reset_by_server(s)
    srv.close()


def test_fails_over_to_the_next_destination(gatehouse, free_port, backend):
    dead = free_port()  # nothing listens there
    b = backend(proxy=True)
    destination(gatehouse, dead)
    destination(gatehouse, b.port)
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    for _ in range(4):  # whichever the round-robin tries first, the live one answers
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert read_reply(s) == b"220 backend ESMTP\r\n"


def test_no_reachable_destination_is_a_temporary_failure(gatehouse, free_port):
    destination(gatehouse, free_port())
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert read_reply(s).startswith(b"421 4.3.0 ")


def test_a_client_that_spoke_first_reads_the_temporary_failure_and_a_clean_end(gatehouse,
                                                                               free_port):
    """The client's bytes, held while the hand-off is tried, are read and dropped after the
    reply: a close with them unread would reset the connection, and the reply with it."""
    destination(gatehouse, free_port(), protocol="pop3")
    port = free_port()
    gatehouse.create_listener(protocol="pop3", bind=[f"127.0.0.1:{port}"], useTls=False)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"QUIT\r\n")
            data = b""
            while chunk := s.recv(4096):  # a reset raises ConnectionResetError here
                data += chunk
            assert data == b"-ERR [SYS/TEMP] Service not available\r\n"


def test_destination_for_other_listeners_does_not_apply(gatehouse, free_port, backend):
    b = backend()
    destination(gatehouse, b.port, listeners=["elsewhere"])
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        reply = read_reply(s)
        assert reply.startswith(b"220 ") and b"backend" not in reply


def test_http_listener_with_an_unreachable_destination_answers_502(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="web", protocol="http", bind=[f"127.0.0.1:{port}"])
    destination(gatehouse, free_port(), protocol="http", listeners=["web"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    status, _ = gatehouse.request([["Core/echo", {}, "c"]])
    assert status == 200  # the management listener is untouched


def test_an_http_destination_must_leave_the_management_api_a_listener(gatehouse, free_port):
    _, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": {
        "protocol": "http", "address": f"127.0.0.1:{free_port()}"}}})
    err = res["notCreated"]["d"]
    assert err["type"] == "invalidProperties" and err["properties"] == ["listeners"]
    _, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": {
        "protocol": "http", "address": f"127.0.0.1:{free_port()}", "listeners": ["http"]}}})
    assert res["notCreated"]["d"]["properties"] == ["listeners"]
    status, _ = gatehouse.request([["Core/echo", {}, "c"]])
    assert status == 200


def test_backends_dying_under_load_leave_the_daemon_serving(gatehouse, free_port):
    """Many relays busy when their backend resets them all at once: every session ends,
    and the daemon (under the sanitizers in CI) stays up and serves."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(256)
    sink.settimeout(0.2)
    stop, conns = threading.Event(), []

    def drain(c):
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass

    def serve():
        while not stop.is_set():
            try:
                c, _ = sink.accept()
                c.sendall(b"220 sink ESMTP\r\n")
            except socket.timeout:
                continue
            except OSError:
                return
            conns.append(c)
            threading.Thread(target=drain, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    destination(gatehouse, sink.getsockname()[1], forwarding="none")
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], tlsImplicit=True)

    def client():
        try:
            s = tls_client().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
            s.recv(100)
            end = time.time() + 3
            while time.time() < end:
                s.sendall(b"x" * 16384)
            s.close()
        except (OSError, ssl.SSLError):
            pass  # the relay ends when its backend does

    clients = [threading.Thread(target=client) for _ in range(60)]
    for c in clients:
        c.start()
    time.sleep(1.5)
    stop.set()
    for c in list(conns):  # reset every backend connection at once
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    sink.close()
    for c in clients:
        c.join()
    status, _ = gatehouse.request([["Core/echo", {}, "c"]])
    assert status == 200 and gatehouse.proc.poll() is None


def test_destinations_share_the_load_and_each_is_tried_once(gatehouse, free_port, backend):
    b1, b2 = backend("one", proxy=False), backend("two", proxy=False)
    for port in (free_port(), b1.port, free_port(), b2.port):  # two dead, two live
        destination(gatehouse, port, forwarding="none")
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    seen = []
    for _ in range(8):  # two workers: at least one of them takes several sessions
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            seen.append(read_reply(s))
    assert set(seen) == {b"220 one ESMTP\r\n", b"220 two ESMTP\r\n"}
