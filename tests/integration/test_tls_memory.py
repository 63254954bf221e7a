"""Memory held by idle connections: N idle implicit-TLS IMAP sessions against N idle plain
ones, measured as the daemon's resident set growth. Prints the figures (run with -s to see
them; docs/tls.md quotes them). GATEHOUSE_TLS_IDLE_N sets N (default 400)."""
import os
import resource
import socket
import ssl
import time

import pytest

HOST = "127.0.0.1"
N = int(os.environ.get("GATEHOUSE_TLS_IDLE_N", "400"))
WARM_ROUNDS = 4


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settle(pid):
    """RSS once it stops moving (the workers finish what they were doing)."""
    last = rss_kb(pid)
    for _ in range(20):
        time.sleep(0.1)
        now = rss_kb(pid)
        if now == last:
            break
        last = now
    return last


def open_idle(port, n, ctx):
    conns = []
    for _ in range(n):
        raw = socket.create_connection((HOST, port), timeout=10)
        s = ctx.wrap_socket(raw) if ctx else raw
        assert s.recv(1024).startswith(b"* OK")
        conns.append(s)
    return conns


def growth_per_conn(gatehouse, port, ctx):
    # Warm up: the first connections allocate the worker's pools and OpenSSL's tables, and on
    # io_uring go once round each worker's provided receive buffers (1 MiB per worker until a
    # busy turn finds them short, core/uring.c), so that only what each connection holds is
    # measured.
    for _ in range(WARM_ROUNDS):
        for s in open_idle(port, 100, ctx):
            s.close()
    time.sleep(0.3)
    before = settle(gatehouse.proc.pid)
    conns = open_idle(port, N, ctx)
    after = settle(gatehouse.proc.pid)
    for s in conns:
        s.close()
    return (after - before) * 1024 / N


@pytest.mark.skipif(os.environ.get("GATEHOUSE_SANITIZED") == "1",
                    reason="a sanitizer's allocator keeps freed memory: sizes mean nothing there")
def test_idle_tls_connection_memory(gatehouse, free_port):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * N + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * N + 100), hard))
    tls_port, plain_port = free_port(), free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"{HOST}:{tls_port}"], useTls=True,
                              tlsImplicit=True)
    gatehouse.create_listener(protocol="imap", bind=[f"{HOST}:{plain_port}"], useTls=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    plain = growth_per_conn(gatehouse, plain_port, None)
    tls = growth_per_conn(gatehouse, tls_port, ctx)
    print(f"\nidle connections: {N}; plain {plain / 1024:.1f} KiB each, "
          f"TLS 1.3 {tls / 1024:.1f} KiB each, TLS extra {(tls - plain) / 1024:.1f} KiB")
    # Measured on Debian 12, OpenSSL 3.0 (docs/tls.md): 13.5 KiB resident per idle TLS
    # session, 22.6 KiB when the record buffers are kept (no SSL_MODE_RELEASE_BUFFERS).
    assert tls - plain < 18 * 1024, (plain, tls)
