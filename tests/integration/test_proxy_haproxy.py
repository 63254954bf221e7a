"""Interoperability with a real HAProxy (Debian's) in front of Gatehouse on loopback:
send-proxy (v1), send-proxy-v2 (with its CRC32c and unique-id TLVs) and send-proxy-v2-ssl
(TLS ended at HAProxy). The client connects from 127.0.0.2, so the address in the EHLO
reply can only have come from the header: HAProxy itself talks from 127.0.0.1."""
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import wait_port

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
CLIENT = "127.0.0.2"

CONFIG = """
global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend v1
    bind 127.0.0.1:{v1}
    default_backend gatehouse_v1
backend gatehouse_v1
    server gh 127.0.0.1:{gh} send-proxy

frontend v2
    bind 127.0.0.1:{v2}
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    default_backend gatehouse_v2
backend gatehouse_v2
    server gh 127.0.0.1:{gh} send-proxy-v2 proxy-v2-options crc32c,unique-id,authority check check-send-proxy inter 200ms

frontend v2ssl
    bind 127.0.0.1:{v2ssl} ssl crt {pem}
    default_backend gatehouse_v2ssl
frontend v2ssl_plain
    bind 127.0.0.1:{v2ssl_plain}
    default_backend gatehouse_v2ssl
backend gatehouse_v2ssl
    server gh 127.0.0.1:{gh} send-proxy-v2-ssl

frontend v1_from_v6
    bind [::1]:{v6}
    default_backend gatehouse_v1
"""


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def haproxy(gatehouse, free_port, tmp_path):
    gh = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{gh}"], useTls=True,
                              overrideProxyTrustedNetworks=["127.0.0.1"])
    pem = tmp_path / "haproxy.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem"), "-subj", "/CN=localhost", "-days", "1"],
                   check=True, capture_output=True, timeout=30)
    pem.write_bytes((tmp_path / "cert.pem").read_bytes() + (tmp_path / "key.pem").read_bytes())
    ports = dict(gh=gh, v1=free_port(), v2=free_port(), v2ssl=free_port(),
                 v2ssl_plain=free_port(), v6=free_port(), pem=pem)
    config = CONFIG
    if not have_ipv6():
        config = config.split("frontend v1_from_v6")[0]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config.format(**ports))
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
    log = open(tmp_path / "haproxy.log", "wb")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=log)
    try:
        for name in ("v1", "v2", "v2ssl", "v2ssl_plain"):
            assert wait_port(ports[name]), (tmp_path / "haproxy.log").read_text()
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def ehlo(port, host="127.0.0.1", source=CLIENT, tls=False):
    """EHLO through HAProxy; returns (first line of the reply, STARTTLS offered?)."""
    src = (source, 0) if source else None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        client = smtplib.SMTP_SSL(host, port, timeout=10, source_address=src, context=ctx)
    else:
        client = smtplib.SMTP(host, port, timeout=10, source_address=src)
    try:
        code, msg = client.ehlo("client.example")
        assert code == 250, msg
        return msg.decode().splitlines()[0], client.has_extn("starttls")
    finally:
        client.quit()


def test_send_proxy_v1(haproxy):
    first, starttls = ehlo(haproxy["v1"])
    assert first.endswith("Hello client.example [127.0.0.2]"), first
    assert starttls
    # From 127.0.0.1 as well: the reply names the client correctly.
    first, _ = ehlo(haproxy["v1"], source=None)
    assert first.endswith("[127.0.0.1]"), first


def test_send_proxy_v2_with_crc32c_and_unique_id(haproxy):
    for _ in range(3):
        first, starttls = ehlo(haproxy["v2"])
        assert first.endswith("Hello client.example [127.0.0.2]"), first
        assert starttls


def test_health_checks_send_local(haproxy, gatehouse):
    """check-send-proxy: HAProxy's health checks open with a v2 LOCAL header, which is
    accepted (no proxy-error, no time-out) under HAProxy's own address."""
    time.sleep(1.5)  # several checks at 200 ms
    log = gatehouse.read_log()
    assert "proxy-error" not in log, log[-2000:]
    assert "proxy-untrusted" not in log, log[-2000:]
    first, _ = ehlo(haproxy["v2"])
    assert first.endswith("[127.0.0.2]"), first


def test_send_proxy_v2_ssl(haproxy):
    # TLS ended at HAProxy: the header says so, and STARTTLS is not offered again.
    first, starttls = ehlo(haproxy["v2ssl"], tls=True)
    assert first.endswith("[127.0.0.2]"), first
    assert not starttls
    # The same backend reached in the clear: the SSL TLV has no client-SSL bit.
    first, starttls = ehlo(haproxy["v2ssl_plain"])
    assert first.endswith("[127.0.0.2]"), first
    assert starttls


def test_ipv6_client_through_v1(haproxy):
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")
    assert wait_port(haproxy["v6"], host="::1")
    first, _ = ehlo(haproxy["v6"], host="::1", source=None)
    assert first.endswith("[::1]"), first


def test_many_sessions_through_haproxy(haproxy):
    """A burst of sessions through both header versions, each greeted and named right."""
    start = time.time()
    for i in range(40):
        port = haproxy["v1"] if i % 2 else haproxy["v2"]
        first, _ = ehlo(port)
        assert first.endswith("[127.0.0.2]"), first
    assert time.time() - start < 30
