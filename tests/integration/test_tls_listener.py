"""TLS fields of a listener against real clients (Python's ssl, smtplib, openssl s_client):
versions, cipher suites, server or client order, the handshake deadline, STARTTLS and
session resumption. The daemon serves its first-start self-signed certificate (ECDSA P-256)."""
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

HOST = "127.0.0.1"


def client_ctx(minimum=None, maximum=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def imaps(gatehouse, port, **extra):
    props = dict(protocol="imap", bind=[f"{HOST}:{port}"], useTls=True, tlsImplicit=True)
    props.update(extra)
    return gatehouse.create_listener(**props)


def tls_connect(port, ctx, session=None, sni=None, timeout=5):
    """Handshake and read the greeting; returns (ssl socket, greeting)."""
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname=sni, session=session)
    except Exception:
        raw.close()
        raise
    return s, s.recv(1024)


def close_cleanly(s):
    """Sends close_notify first: a client closed without it forgets the session."""
    try:
        s.unwrap()
    except (OSError, ssl.SSLError):
        pass
    s.close()


def refused(port, ctx):
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        s, greeting = tls_connect(port, ctx)
        s.close()


def s_client(port, *args):
    """openssl s_client -brief; returns (exit code, output)."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-brief", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def set_listener(gatehouse, lid, patch):
    _, res, _ = gatehouse.call("x:NetworkListener/set", {"update": {lid: patch}})
    assert lid in (res.get("updated") or {}), res


def test_implicit_tls_defaults(gatehouse, free_port):
    port = free_port()
    imaps(gatehouse, port)
    s, greeting = tls_connect(port, client_ctx())
    assert greeting.startswith(b"* OK"), greeting
    assert s.version() == "TLSv1.3"
    assert s.cipher()[0] == "TLS_AES_256_GCM_SHA384"  # the first of the reference order
    close_cleanly(s)


@pytest.mark.parametrize("protocol, first", [
    ("smtp", b"220 "), ("lmtp", b"220 "), ("imap", b"* OK"), ("pop3", b"+OK"),
    ("manageSieve", b'"IMPLEMENTATION"'), ("http", None),
])
def test_implicit_tls_for_every_protocol(gatehouse, free_port, protocol, first):
    port = free_port()
    gatehouse.create_listener(protocol=protocol, bind=[f"{HOST}:{port}"], useTls=True,
                              tlsImplicit=True)
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with client_ctx().wrap_socket(raw) as s:
            assert s.version() == "TLSv1.3"
            if first is None:
                s.sendall(b"GET /jmap/session HTTP/1.1\r\nHost: x\r\n\r\n")
                first = b"HTTP/1.1 "
            assert s.recv(1024).startswith(first)


def test_tls13_disabled_refuses_tls13_only_client(gatehouse, free_port):
    port = free_port()
    imaps(gatehouse, port, tlsDisableProtocols=["tls13"])
    refused(port, client_ctx(minimum=ssl.TLSVersion.TLSv1_3))
    s, greeting = tls_connect(port, client_ctx())
    assert s.version() == "TLSv1.2" and greeting.startswith(b"* OK")
    close_cleanly(s)


def test_tls12_disabled_refuses_tls12_only_client(gatehouse, free_port):
    port = free_port()
    imaps(gatehouse, port, tlsDisableProtocols=["tls12"])
    refused(port, client_ctx(maximum=ssl.TLSVersion.TLSv1_2))
    s, _ = tls_connect(port, client_ctx())
    assert s.version() == "TLSv1.3"
    close_cleanly(s)


def test_both_versions_disabled_is_refused_by_the_api(gatehouse, free_port):
    _, res, _ = gatehouse.call("x:NetworkListener/set", {"create": {"n": dict(
        protocol="imap", bind=[f"{HOST}:{free_port()}"], useTls=True, tlsImplicit=True,
        tlsDisableProtocols=["tls12", "tls13"])}})
    assert "n" in res.get("notCreated", {}), res
    assert "tls12 and tls13" in res["notCreated"]["n"].get("description", ""), res


def test_disabled_tls12_suite_is_refused(gatehouse, free_port):
    port = free_port()
    imaps(gatehouse, port, tlsDisableCipherSuites=["tls-ecdhe-ecdsa-with-aes-128-gcm-sha256"])
    tls12 = ssl.TLSVersion.TLSv1_2
    refused(port, client_ctx(maximum=tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    s, _ = tls_connect(port, client_ctx(maximum=tls12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert s.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    close_cleanly(s)


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_disabled_tls13_suite_is_refused(gatehouse, free_port):
    port = free_port()
    imaps(gatehouse, port, tlsDisableCipherSuites=["tls13-aes-128-gcm-sha256"])
    rc, out = s_client(port, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
    assert rc != 0 and "Ciphersuite" not in out, out
    rc, out = s_client(port, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")
    assert rc == 0 and "Ciphersuite: TLS_CHACHA20_POLY1305_SHA256" in out, out


REVERSED12 = ("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:"
              "ECDHE-ECDSA-AES256-GCM-SHA384")
REVERSED13 = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"


@pytest.mark.parametrize("ignore_client_order, want12, want13", [
    (True, "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384"),
    (False, "ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_CHACHA20_POLY1305_SHA256"),
])
def test_cipher_order(gatehouse, free_port, ignore_client_order, want12, want13):
    port = free_port()
    imaps(gatehouse, port, tlsIgnoreClientOrder=ignore_client_order)
    s, _ = tls_connect(port, client_ctx(maximum=ssl.TLSVersion.TLSv1_2, ciphers=REVERSED12))
    assert s.cipher()[0] == want12
    close_cleanly(s)
    if shutil.which("openssl"):
        rc, out = s_client(port, "-tls1_3", "-ciphersuites", REVERSED13)
        assert rc == 0 and f"Ciphersuite: {want13}" in out, out


def wait_closed(sock, limit):
    """Seconds until the server closes sock (reads until EOF), or None after limit."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(1024):
            pass
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_silent_client_closed_after_tls_timeout(gatehouse, free_port):
    port = free_port()
    imaps(gatehouse, port, tlsTimeout="500ms")
    with socket.create_connection((HOST, port), timeout=5) as raw:
        took = wait_closed(raw, 5)
    assert took is not None and 0.4 <= took <= 1.5, took


def test_silent_client_after_starttls_closed_after_tls_timeout(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"{HOST}:{port}"], useTls=True,
                              tlsImplicit=False, tlsTimeout="500ms")
    with socket.create_connection((HOST, port), timeout=5) as raw:
        f = raw.makefile("rb")
        assert f.readline().startswith(b"220")
        raw.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220 2.0.0")
        took = wait_closed(raw, 5)
    assert took is not None and 0.4 <= took <= 1.5, took


def test_smtp_starttls(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"{HOST}:{port}"], useTls=True,
                              tlsImplicit=False, tlsDisableProtocols=["tls12"])
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        code, _ = smtp.starttls(context=client_ctx())
        assert code == 220
        assert smtp.sock.version() == "TLSv1.3"
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")  # offered once, never again
        assert smtp.noop()[0] == 250


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_session_resumption(gatehouse, free_port, version):
    port = free_port()
    lid = imaps(gatehouse, port)
    ctx = client_ctx(minimum=version, maximum=version)
    s, _ = tls_connect(port, ctx)
    assert not s.session_reused
    session = s.session
    close_cleanly(s)
    assert session is not None and session.has_ticket

    s, greeting = tls_connect(port, ctx, session=session)
    assert s.session_reused and greeting.startswith(b"* OK")
    close_cleanly(s)

    # A TLS 1.3 client spends a ticket per connection: a resumed session gets a fresh one.
    if version == ssl.TLSVersion.TLSv1_3:
        s, _ = tls_connect(port, ctx, session=session)
        assert s.session_reused
        renewed = s.session
        close_cleanly(s)
        assert renewed.has_ticket and renewed.id != session.id

    # A changed listener gets a new context; its tickets still resume.
    set_listener(gatehouse, lid, {"tlsTimeout": "30s"})
    s, _ = tls_connect(port, ctx, session=session)
    assert s.session_reused
    close_cleanly(s)
