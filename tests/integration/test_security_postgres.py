"""Bans on a shared PostgreSQL store: a ban one node makes is stored, reaches the other node
within a second and is enforced there; its expiry is applied by whichever node is up."""
import socket
import time

import pytest

from conftest import pick_port
from test_persistence_postgres import BINDIRS, listening, pg_url, wait_for, wait_started  # noqa: F401

pytestmark = pytest.mark.skipif(not BINDIRS, reason="needs the postgresql package")
BL, SEC = "x:BlockedIp", "x:Security"


def first_bytes(port, src):
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0)) as s:
        try:
            return s.recv(512)
        except ConnectionResetError:
            return b""


def test_a_ban_reaches_the_other_node_within_a_second(make_daemon, pg_url):  # noqa: F811
    a = make_daemon(args=["--store", pg_url])
    b = make_daemon(http_port=a.http_port, args=["--store", pg_url], start=False)
    b.start()
    wait_started(b)
    port = pick_port()
    a.create_listener(name="mx", bind=[f"127.0.0.1:{port}"], useTls=False)
    _, res, _ = a.call(SEC + "/set", {"update": {"singleton": {
        "scanBanRate": {"count": 1, "period": "1h"}, "scanBanPeriod": "6s"}}})
    assert "singleton" in res["updated"], res
    with socket.create_connection(("127.0.0.1", port), source_address=("127.0.95.1", 0)) as s:
        s.recv(512)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(0.1)
    assert wait_for(lambda: "ban listener=- client=127.0.95.1 scan" in a.read_log(), 3.0)
    made = time.time()
    assert wait_for(lambda: "x:BlockedIp: 1 changed by another node" in b.read_log(), 2.0), \
        b.read_log()
    assert time.time() - made < 1.5
    assert first_bytes(port, "127.0.95.1") == b""  # node a, where it was made
    # node a goes away; node b takes the addresses over and enforces the stored ban
    a.kill9()
    assert wait_for(lambda: listening(port) and listening(a.http_port), 5.0), b.read_log()
    assert first_bytes(port, "127.0.95.1") == b""
    assert first_bytes(port, "127.0.95.2").startswith(b"220 ")
    _, res, _ = b.call(BL + "/get", {"ids": None})
    assert [o["address"] for o in res["list"]] == ["127.0.95.1"]
    # the ban's period ends: node b lets the address in again and destroys the entry
    assert wait_for(lambda: first_bytes(port, "127.0.95.1").startswith(b"220 "), 8.0)
    assert wait_for(lambda: not b.call(BL + "/get", {"ids": None})[1]["list"], 3.0)
