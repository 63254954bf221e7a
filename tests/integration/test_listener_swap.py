"""Addresses swapped (or rotated) between listeners in one /set: applied as one change, the
moving sockets change hands without being closed, so no connection attempt is refused;
when the move cannot be made nothing changes."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, ENGINE_ARGS, SECRET, wait_port

NL = "x:NetworkListener"


def greeting(port, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.recv(512).decode(errors="replace")


def listener(g, protocol, port, **extra):
    return g.create_listener(protocol=protocol, bind=[f"127.0.0.1:{port}"], useTls=False, **extra)


def speaks(port):
    g = greeting(port)
    return "smtp" if g.startswith("220 ") else "pop3" if g.startswith("+OK") else (
        "imap" if g.startswith("* OK") else g)


def binds(g, lid):
    _, res, _ = g.call(NL + "/get", {"ids": [lid], "properties": ["bind"]})
    return res["list"][0]["bind"]


def test_swap_two_listeners(gatehouse, free_port):
    x, y = free_port(), free_port()
    a, b = listener(gatehouse, "smtp", x), listener(gatehouse, "pop3", y)
    live = socket.create_connection(("127.0.0.1", x), timeout=5)  # an SMTP session on x
    assert live.recv(512).startswith(b"220")
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{y}"]}, b: {"bind": [f"127.0.0.1:{x}"]}}})
    assert set(res["updated"]) == {a, b}, res
    assert speaks(x) == "pop3" and speaks(y) == "smtp"
    assert binds(gatehouse, a) == [f"127.0.0.1:{y}"] and binds(gatehouse, b) == [f"127.0.0.1:{x}"]
    # the session accepted before goes on under the listener that accepted it
    live.sendall(b"NOOP\r\n")
    assert live.recv(512).startswith(b"250")
    live.close()
    # and back again
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{x}"]}, b: {"bind": [f"127.0.0.1:{y}"]}}})
    assert set(res["updated"]) == {a, b}, res
    assert speaks(x) == "smtp" and speaks(y) == "pop3"


def test_addresses_swapped_back_and_forth_leave_no_connection_waiting(gatehouse, free_port):
    """Each swap retires a worker's accept on a socket while the new owner's starts on the
    same socket; a connection right after must be greeted every time (on io_uring an accept
    being cancelled once swallowed its wake-up, and the connection waited for ever). Which
    listener greets it is not asserted here: a worker applies the change at the end of the
    turn in which the API answered, so a client quick enough can still meet the old one."""
    x, y = free_port(), free_port()
    a, b = listener(gatehouse, "smtp", x), listener(gatehouse, "pop3", y)
    for i in range(100):
        to_a, to_b = (y, x) if i % 2 == 0 else (x, y)
        _, res, _ = gatehouse.call(NL + "/set", {"update": {
            a: {"bind": [f"127.0.0.1:{to_a}"]}, b: {"bind": [f"127.0.0.1:{to_b}"]}}})
        assert set(res["updated"]) == {a, b}, res
        assert {speaks(to_a), speaks(to_b)} <= {"smtp", "pop3"}, i


def test_rotate_three_with_a_kept_and_a_new_address(gatehouse, free_port):
    x, y, z, w = free_port(), free_port(), free_port(), free_port()
    a, b = listener(gatehouse, "smtp", x), listener(gatehouse, "pop3", y)
    c = listener(gatehouse, "imap", z)
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{y}", f"127.0.0.1:{w}"]},
        b: {"bind": [f"127.0.0.1:{z}"]},
        c: {"bind": [f"127.0.0.1:{x}"]}}})
    assert set(res["updated"]) == {a, b, c}, res
    assert (speaks(x), speaks(y), speaks(z), speaks(w)) == ("imap", "smtp", "pop3", "smtp")


def test_no_connection_refused_while_swapping(gatehouse, free_port):
    x, y = free_port(), free_port()
    a, b = listener(gatehouse, "smtp", x), listener(gatehouse, "pop3", y)
    refused, served, stop = [], [], threading.Event()

    def hammer(port):
        deadline = time.time() + 20
        while not stop.is_set() and time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    if s.recv(64):
                        served.append(port)
            except ConnectionRefusedError:
                refused.append(port)
            except OSError:
                pass

    threads = [threading.Thread(target=hammer, args=(p,)) for p in (x, y)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    for i in range(10):
        pa, pb = (y, x) if i % 2 == 0 else (x, y)
        _, res, _ = gatehouse.call(NL + "/set", {"update": {
            a: {"bind": [f"127.0.0.1:{pa}"]}, b: {"bind": [f"127.0.0.1:{pb}"]}}})
        assert set(res["updated"]) == {a, b}, res
    stop.set()
    for t in threads:
        t.join()
    assert not refused and served
    assert speaks(x) == "smtp" and speaks(y) == "pop3"


def test_a_move_that_cannot_be_made_changes_nothing(gatehouse, free_port):
    x, y = free_port(), free_port()
    a, b = listener(gatehouse, "smtp", x), listener(gatehouse, "pop3", y)
    # one side invalid: the other side's new address is still taken
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{y}"]}, b: {"bind": [f"127.0.0.1:{x}"], "socketTtl": 999}}})
    assert res["notUpdated"][a]["type"] == "invalidProperties"
    assert "already bound" in res["notUpdated"][a]["description"]
    assert res["notUpdated"][b]["type"] == "invalidProperties"
    assert speaks(x) == "smtp" and speaks(y) == "pop3"
    # a moving socket keeps its bind-time options: they must agree
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{y}"], "socketReusePort": False},
        b: {"bind": [f"127.0.0.1:{x}"]}}})
    assert a in res["notUpdated"] and "socketReusePort" in res["notUpdated"][a]["description"]
    assert b in res["notUpdated"]
    assert speaks(x) == "smtp" and speaks(y) == "pop3"
    assert binds(gatehouse, a) == [f"127.0.0.1:{x}"] and binds(gatehouse, b) == [f"127.0.0.1:{y}"]
    # taking an address only one side gives up is still a conflict
    c = listener(gatehouse, "imap", free_port())
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{y}"]}, c: {"bind": [f"127.0.0.1:{x}"]}}})
    assert a in res["notUpdated"] and c in res["notUpdated"], res
    assert speaks(x) == "smtp" and speaks(y) == "pop3"


def test_swap_survives_a_restart(make_daemon, free_port):
    d = make_daemon()
    x, y = free_port(), free_port()
    a, b = listener(d, "smtp", x), listener(d, "pop3", y)
    _, res, _ = d.call(NL + "/set", {"update": {
        a: {"bind": [f"127.0.0.1:{y}"]}, b: {"bind": [f"127.0.0.1:{x}"]}}})
    assert set(res["updated"]) == {a, b}
    d.stop()
    d.start()
    assert speaks(x) == "pop3" and speaks(y) == "smtp"


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_mail_listeners_open_before_the_management_api_at_start(make_daemon, free_port, tmp_path):
    """At start the stored mail listeners are bound before the management listener (stored
    first): whoever waits for the API to answer never meets a mail port still closed."""
    d = make_daemon()
    ports = [free_port() for _ in range(3)]
    for p in ports:
        listener(d, "smtp", p)
    d.stop()
    out = tmp_path / "strace.out"
    cmd = ["strace", "-f", "-qq", "-e", "trace=bind", "-o", str(out), BIN, "serve", "--data",
           d.data_dir, "--workers", "1"] + ENGINE_ARGS
    proc = subprocess.Popen(cmd, env=dict(os.environ, GATEHOUSE_ADMIN_SECRET=SECRET),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_port(d.http_port, timeout=30)
        for p in ports:
            assert speaks(p) == "smtp"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    order = [int(m) for m in re.findall(r"sin_port=htons\((\d+)\)", out.read_text())]
    assert d.http_port in order and all(p in order for p in ports), order
    assert order.index(d.http_port) > max(order.index(p) for p in ports), order
