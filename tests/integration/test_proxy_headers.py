"""PROXY protocol on real listeners, with hand-made v1 and v2 headers over raw sockets:
the header's source address becomes the client (the SMTP EHLO reply shows it), LOCAL and
UNKNOWN keep the TCP peer, the SSL TLV turns STARTTLS off, and every malformed, truncated,
late or untrusted header closes the connection before any protocol parser sees it."""
import select
import socket
import ssl
import struct
import threading
import time

import pytest

TRUSTED = ["127.0.0.0/8"]
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# ---- headers ----

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(src="203.0.113.7", dst="127.0.0.1", sport=40000, dport=25, tlvs=b"", cmd=1,
       fam=None, crc=False, version=2):
    if ":" in src:
        addrs = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                 + struct.pack("!HH", sport, dport))
        fam = 0x21 if fam is None else fam
    else:
        addrs = (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
                 + struct.pack("!HH", sport, dport))
        fam = 0x11 if fam is None else fam
    body = addrs + tlvs + (tlv(0x03, b"\0\0\0\0") if crc else b"")
    head = SIG + bytes([version << 4 | cmd, fam]) + struct.pack("!H", len(body)) + body
    if crc:
        head = head[:-4] + struct.pack("!I", crc32c(head))
    return head


def v2_local():
    return SIG + b"\x20\x00\x00\x00"


SSL_TLV = tlv(0x20, b"\x01\0\0\0\0" + tlv(0x21, b"TLSv1.3"))


# ---- SMTP over a raw socket ----

def connect(port, host="127.0.0.1", family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    return s


def read_reply(s):
    """One SMTP reply (all its lines), or b"" if the server closed first."""
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and any(len(l) >= 4 and l[3:4] == b" " for l in lines[:-1]):
            return data


def ehlo_via(port, header, split=False, host="127.0.0.1", family=socket.AF_INET):
    """Sends the header (byte by byte when split), then EHLO; returns (greeting, ehlo)."""
    with connect(port, host, family) as s:
        if split:
            for i in range(len(header)):
                s.sendall(header[i:i + 1])
                time.sleep(0.002)
        else:
            s.sendall(header)
        greeting = read_reply(s)
        assert greeting.startswith(b"220 "), greeting
        s.sendall(b"EHLO client.example\r\n")
        reply = read_reply(s)
        s.sendall(b"QUIT\r\n")
        return greeting.decode(), reply.decode()


def assert_closed_without_reply(s, within=5.0):
    """The server closes without sending a byte (no greeting, no error reply)."""
    s.settimeout(within)
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"still open after {within}s; got {got!r}")
    assert got == b"", got


def smtp_listener(gatehouse, port, trusted=TRUSTED, **extra):
    props = dict(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False,
                 overrideProxyTrustedNetworks=trusted)
    props.update(extra)
    return gatehouse.create_listener(**props)


@pytest.fixture
def trusted_port(gatehouse, free_port):
    port = free_port()
    smtp_listener(gatehouse, port)
    return port


# ---- accepted headers ----

def test_v1_tcp4_source_is_the_client(gatehouse, trusted_port):
    _, ehlo = ehlo_via(trusted_port, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n")
    assert "Hello client.example [203.0.113.7]" in ehlo
    assert "[203.0.113.7]" in ehlo.splitlines()[0]


def test_v1_tcp6_and_v4_mapped(trusted_port):
    _, ehlo = ehlo_via(trusted_port, b"PROXY TCP6 2001:db8::7 ::1 40000 25\r\n")
    assert "[2001:db8::7]" in ehlo
    _, ehlo = ehlo_via(trusted_port, b"PROXY TCP6 ::ffff:198.51.100.9 ::1 40000 25\r\n")
    assert "[198.51.100.9]" in ehlo


def test_v2_tcp4_and_tcp6(trusted_port):
    _, ehlo = ehlo_via(trusted_port, v2())
    assert "[203.0.113.7]" in ehlo
    _, ehlo = ehlo_via(trusted_port, v2(src="2001:db8::9", dst="::1"))
    assert "[2001:db8::9]" in ehlo


def test_v2_with_tlvs_and_crc32c(trusted_port):
    tlvs = tlv(0x02, b"mx.example.com") + tlv(0x05, b"\x0a\x0b\x0c") + tlv(0x04, b"pad")
    _, ehlo = ehlo_via(trusted_port, v2(src="192.0.2.44", tlvs=tlvs, crc=True))
    assert "[192.0.2.44]" in ehlo


def test_local_and_unknown_keep_the_peer(trusted_port):
    _, ehlo = ehlo_via(trusted_port, v2_local())
    assert "[127.0.0.1]" in ehlo
    _, ehlo = ehlo_via(trusted_port, b"PROXY UNKNOWN\r\n")
    assert "[127.0.0.1]" in ehlo
    _, ehlo = ehlo_via(trusted_port, b"PROXY UNKNOWN ::1 ::2 1 2\r\n")
    assert "[127.0.0.1]" in ehlo
    # PROXY over UNSPEC / UDP: no TCP client to stand for.
    _, ehlo = ehlo_via(trusted_port, v2(fam=0x12))
    assert "[127.0.0.1]" in ehlo


def test_header_in_pieces(trusted_port):
    _, ehlo = ehlo_via(trusted_port, b"PROXY TCP4 203.0.113.8 127.0.0.1 40000 25\r\n", split=True)
    assert "[203.0.113.8]" in ehlo
    _, ehlo = ehlo_via(trusted_port, v2(src="203.0.113.9", tlvs=tlv(0x04, b"x" * 40)),
                       split=True)
    assert "[203.0.113.9]" in ehlo


def test_bytes_after_the_header_reach_the_protocol(trusted_port):
    """Header and first command in one segment: only the header is consumed."""
    for header in (b"PROXY TCP4 203.0.113.10 127.0.0.1 40000 25\r\n", v2(src="203.0.113.10")):
        with connect(trusted_port) as s:
            s.sendall(header + b"EHLO early.example\r\n")
            data = b""
            while b"Hello early.example" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
                if b"\r\n250 " in data:
                    break
            assert data.startswith(b"220 ")
            assert b"Hello early.example [203.0.113.10]" in data


def test_large_v2_header(trusted_port):
    """A v2 header larger than one small peek (TLV padding) is read whole."""
    _, ehlo = ehlo_via(trusted_port, v2(src="203.0.113.11", tlvs=tlv(0x04, b"\0" * 3000), crc=True))
    assert "[203.0.113.11]" in ehlo


def test_ipv6_peer_trusted(gatehouse, free_port):
    port = free_port()
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    gatehouse.create_listener(protocol="smtp", bind=[f"[::1]:{port}"], useTls=False,
                              overrideProxyTrustedNetworks=["::1"])
    _, ehlo = ehlo_via(port, v2(src="203.0.113.12"), host="::1", family=socket.AF_INET6)
    assert "[203.0.113.12]" in ehlo


# ---- TLS ----

def test_ssl_tlv_means_no_starttls(trusted_port, gatehouse, free_port):
    port = free_port()
    smtp_listener(gatehouse, port, useTls=True)
    # Control: without the TLV the STARTTLS listener offers the upgrade.
    _, ehlo = ehlo_via(port, v2(src="203.0.113.20"))
    assert "STARTTLS" in ehlo
    _, ehlo = ehlo_via(port, v2(src="203.0.113.20", tlvs=tlv(0x20, b"\x00\0\0\0\0")))
    assert "STARTTLS" in ehlo
    # With the client-SSL bit the balancer terminated TLS: the session counts as encrypted.
    _, ehlo = ehlo_via(port, v2(src="203.0.113.20", tlvs=SSL_TLV, crc=True))
    assert "STARTTLS" not in ehlo
    assert "[203.0.113.20]" in ehlo
    with connect(port) as s:
        s.sendall(v2(src="203.0.113.20", tlvs=SSL_TLV))
        assert read_reply(s).startswith(b"220 ")
        s.sendall(b"STARTTLS\r\n")
        assert not read_reply(s).startswith(b"220")


def test_implicit_tls_starts_after_the_header(gatehouse, free_port):
    port = free_port()
    smtp_listener(gatehouse, port, useTls=True, tlsImplicit=True)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for header in (b"PROXY TCP4 203.0.113.21 127.0.0.1 40000 465\r\n", v2(src="203.0.113.21")):
        raw = connect(port)
        raw.sendall(header)
        with ctx.wrap_socket(raw) as s:
            assert read_reply(s).startswith(b"220 ")
            s.sendall(b"EHLO tls.example\r\n")
            assert "[203.0.113.21]" in read_reply(s).decode()


def test_implicit_tls_handshakes_even_with_the_ssl_tlv(gatehouse, free_port):
    """A balancer that re-encrypts (send-proxy-v2-ssl with ssl to the server) still gets a
    handshake: the SSL TLV speaks of its own leg, and no plaintext greeting is sent."""
    port = free_port()
    smtp_listener(gatehouse, port, useTls=True, tlsImplicit=True)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = connect(port)
    raw.sendall(v2(src="203.0.113.22", tlvs=SSL_TLV))
    with ctx.wrap_socket(raw) as s:
        assert read_reply(s).startswith(b"220 ")
        s.sendall(b"EHLO tls.example\r\n")
        reply = read_reply(s).decode()
        assert "[203.0.113.22]" in reply and "STARTTLS" not in reply


def test_unique_id_is_kept_for_logs(gatehouse, free_port):
    port = free_port()
    smtp_listener(gatehouse, port, useTls=True, tlsImplicit=True)
    with connect(port) as s:
        s.sendall(v2(src="203.0.113.56", tlvs=tlv(0x05, b"\xab\xcd")) + b"not a hello\r\n")
        assert_closed_without_reply(s)
    assert wait_log(gatehouse, "proxy-id=abcd"), gatehouse.read_log()[-2000:]


def wait_log(gatehouse, text, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        if text in gatehouse.read_log():
            return True
        time.sleep(0.05)
    return False


def test_logs_name_the_proxied_client(gatehouse, free_port):
    """An event after the header (here a failed handshake) is logged under the client's
    address from the header, not the balancer's."""
    port = free_port()
    smtp_listener(gatehouse, port, useTls=True, tlsImplicit=True)
    with connect(port) as s:
        s.sendall(v2(src="203.0.113.55") + b"this is not a TLS client hello\r\n")
        assert_closed_without_reply(s)
    assert wait_log(gatehouse, "203.0.113.55"), gatehouse.read_log()[-2000:]


def test_refusal_is_logged_with_its_reason(gatehouse, trusted_port):
    with connect(trusted_port) as s:
        s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 65536 25\r\n")
        assert_closed_without_reply(s)
    assert wait_log(gatehouse, "PROXY v1: source port out of range"), gatehouse.read_log()[-2000:]


# ---- refused headers ----

BAD = [
    b"PROXY TCP4 203.0.113.7 127.0.0.1 65536 25\r\n",          # port out of range
    b"PROXY TCP4 203.0.113.7 127.0.0.1 040 25\r\n",            # leading zero
    b"PROXY TCP4 2001:db8::7 127.0.0.1 1 25\r\n",              # IPv6 in TCP4
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",                     # unknown protocol
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",                       # bare LF
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",                  # longer than 107
    b"EHLO client.example\r\n",                                # no header at all
    b"GET / HTTP/1.0\r\n\r\n",
    v2(version=1),                                             # binary version 1
    v2(cmd=2),                                                 # unknown command
    v2(fam=0x41),                                              # unknown family
    v2(crc=True)[:-1] + bytes([v2(crc=True)[-1] ^ 1]),         # CRC32c mismatch
    v2(tlvs=b"\x02\x00\x09abc"),                               # TLV past the end
    v2(tlvs=tlv(0x20, b"\x01\0")),                             # SSL TLV too short
    v2(tlvs=tlv(0x02, b"a\r\nb")),                             # control bytes in authority
    SIG + b"\x21\x11\x00\x0b" + b"\0" * 11,                    # too short for TCP4
    SIG + b"\x21\x11\xff\xff",                                 # longer than accepted
]


@pytest.mark.parametrize("header", BAD, ids=range(len(BAD)))
def test_malformed_header_closes(trusted_port, header):
    with connect(trusted_port) as s:
        s.sendall(header + b"EHLO x\r\n")
        assert_closed_without_reply(s)


def test_truncated_or_late_header_closes_at_ten_seconds(trusted_port):
    """Nothing, half a v1 line, or part of a v2 header: closed after 10 s, no greeting; a
    header that arrives after that is never read."""
    partials = [b"", b"PROXY TCP4 203.0.113.7 12", v2()[:20], SIG[:5]]
    socks = [connect(trusted_port) for _ in partials]
    late = connect(trusted_port)
    start = time.time()
    for s, p in zip(socks, partials):
        if p:
            s.sendall(p)
    results = {}

    def watch(i, s):
        try:
            assert_closed_without_reply(s, within=15)
            results[i] = time.time() - start
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=watch, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in results.items():
        assert not isinstance(r, BaseException), (partials[i], r)
        assert 9.0 <= r <= 14.0, (partials[i], r)
    # late's deadline may fire a little after the others' (another worker, a later accept):
    # the header goes only once the server has ended it, or it would be read in time
    select.select([late], [], [], 15)
    try:
        late.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n")
    except OSError:
        pass
    assert_closed_without_reply(late, within=3)
    for s in socks + [late]:
        s.close()


def test_truncated_header_then_eof_closes_at_once(gatehouse, trusted_port):
    """A client that sends part of a header (v1 or v2, or a bare v2 signature) and then
    closes its side is closed at once, with the reason logged, not at the 10 s deadline."""
    partials = [v2()[:20], SIG, SIG[:5], b"PROXY TCP4 203.0.113.7 12", b"PROX"]
    socks = [connect(trusted_port) for _ in partials]
    start = time.time()
    for s, p in zip(socks, partials):
        s.sendall(p)
        s.shutdown(socket.SHUT_WR)
    for s, p in zip(socks, partials):
        assert_closed_without_reply(s, within=15)
        assert time.time() - start < 4.0, (p, time.time() - start)
        s.close()
    assert wait_log(gatehouse, "PROXY v2 header: connection closed after 20 of"), \
        gatehouse.read_log()[-2000:]
    assert wait_log(gatehouse, "PROXY v1 header: connection closed after 25 of at least")


def test_untrusted_implicit_tls_signature_then_eof_closes_at_once(gatehouse, free_port):
    port = free_port()
    smtp_listener(gatehouse, port, trusted=[], useTls=True, tlsImplicit=True)
    for first in (b"PROX", SIG[:5]):
        with connect(port) as s:
            start = time.time()
            s.sendall(first)
            s.shutdown(socket.SHUT_WR)
            assert_closed_without_reply(s, within=15)
            assert time.time() - start < 4.0, (first, time.time() - start)
    assert "tls-handshake-error" not in gatehouse.read_log()


def test_no_greeting_before_the_header(trusted_port):
    with connect(trusted_port) as s:
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(64)
        s.settimeout(5)
        s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n")
        assert read_reply(s).startswith(b"220 ")


def test_untrusted_peer_header_closes(gatehouse, free_port):
    """A listener without trusted networks greets at once; a PROXY header as the first
    bytes closes the connection: no reply of any kind, the SMTP parser never sees it."""
    port = free_port()
    smtp_listener(gatehouse, port, trusted=[])
    for header in (b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n", v2(), b"PROXY ", SIG):
        with connect(port) as s:
            assert read_reply(s).startswith(b"220 ")
            s.sendall(header + b"EHLO x\r\n")
            assert_closed_without_reply(s)
    # A client that sends no header is served, under its own address.
    with connect(port) as s:
        assert read_reply(s).startswith(b"220 ")
        s.sendall(b"EHLO plain.example\r\n")
        assert "[127.0.0.1]" in read_reply(s).decode()


def test_untrusted_implicit_tls_header_closes(gatehouse, free_port):
    port = free_port()
    smtp_listener(gatehouse, port, trusted=[], useTls=True, tlsImplicit=True)
    for header in (b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n", v2()):
        with connect(port) as s:
            s.sendall(header)
            assert_closed_without_reply(s)
    # Refused for being a PROXY header, before TLS ever parses it.
    assert wait_log(gatehouse, "proxy-untrusted"), gatehouse.read_log()[-2000:]
    assert "tls-handshake-error" not in gatehouse.read_log()


def test_server_wide_trusted_networks(gatehouse, free_port):
    """proxyTrustedNetworks of x:SystemSettings applies when the listener's list is empty;
    a listener's own list replaces it. The management listener has no list of its own, so
    it too wants a header from then on: everything is set up before the change."""
    inherit, override = free_port(), free_port()
    smtp_listener(gatehouse, inherit, trusted=[])
    smtp_listener(gatehouse, override, trusted=["10.0.0.0/8"])
    _, res, _ = gatehouse.call("x:SystemSettings/set",
                               {"update": {"singleton": {"proxyTrustedNetworks": TRUSTED}}})
    assert "singleton" in (res.get("updated") or {}), res
    _, ehlo = ehlo_via(inherit, v2(src="203.0.113.30"))
    assert "[203.0.113.30]" in ehlo
    with connect(inherit) as s:
        s.sendall(b"EHLO x\r\n")
        assert_closed_without_reply(s)
    # The override does not include 127.0.0.1: this listener does not trust us.
    with connect(override) as s:
        assert read_reply(s).startswith(b"220 ")
        s.sendall(b"EHLO x\r\n")
        assert "[127.0.0.1]" in read_reply(s).decode()
    # The management listener now wants a header from 127.0.0.1 too.
    with connect(gatehouse.http_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_closed_without_reply(s)
