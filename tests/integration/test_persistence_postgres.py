"""Shared PostgreSQL store (SPEC §9): two nodes on one database; a change made through one
node is applied by the other within a second, and each node serves every listener.
A throw-away PostgreSQL server is started from the Debian binaries; skipped without them."""
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import pick_port, wait_port

NL = "x:NetworkListener"
BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(not BINDIRS, reason="needs the postgresql package")


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def as_postgres(cmd):
    """Runs cmd as the postgres user when we are root (the server refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


@pytest.fixture
def pg_url():
    bindir = BINDIRS[-1]
    # pytest's own temporary directories are private to root; the server runs as postgres
    top = tempfile.mkdtemp(prefix="gh-pg-")
    data = os.path.join(top, "data")
    os.mkdir(data)
    if os.geteuid() == 0:
        shutil.chown(top, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(as_postgres([f"{bindir}/initdb", "-D", data, "-U", "postgres",
                                "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, timeout=120)
    port = pick_port()
    proc = subprocess.Popen(as_postgres([f"{bindir}/postgres", "-D", data, "-p", str(port),
                                         "-k", data, "-c", "listen_addresses=127.0.0.1",
                                         "-c", "fsync=off"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(port, timeout=30), "postgres did not start"
        time.sleep(0.3)
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(top, ignore_errors=True)


def wait_for(pred, timeout=3.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def wait_started(d, timeout=15.0):
    assert wait_for(lambda: " started " in d.read_log(), timeout), d.read_log()


def test_two_nodes_share_one_store(make_daemon, pg_url):
    """Both nodes on this host: the engine never shares an address with another process, so
    node b runs as a standby — it applies every change at once, reports that it cannot bind
    what node a holds, and takes the addresses over when node a dies."""
    a = make_daemon(args=["--store", pg_url])
    b = make_daemon(http_port=a.http_port, args=["--store", pg_url], start=False)
    b.start()
    wait_started(b)
    port = pick_port()
    lid = a.create_listener(name="shared", bind=[f"127.0.0.1:{port}"], useTls=False)
    assert listening(port)
    _, res, _ = a.call(NL + "/get", {"ids": []})
    state = res["state"]
    # node b picks the change up within a second, and cannot bind it while a holds it
    assert wait_for(lambda: "x:NetworkListener: 1 changed by another node" in b.read_log(),
                    2.0), b.read_log()
    assert "listener=shared" in b.read_log()
    a.kill9()
    assert wait_for(lambda: listening(port) and listening(a.http_port), 5.0), b.read_log()
    got = b.call(NL + "/get", {"ids": [lid]})[1]
    assert got["list"][0]["name"] == "shared"
    assert got["state"] == state
    status, _, body = b.http("GET", "/api/status")
    assert status == 200
    entry = json.loads(body)["listeners"][lid]
    assert "error" not in entry
    # a change through node b; node a, restarted, sees what is stored
    _, res, _ = b.call(NL + "/set", {"destroy": [lid]})
    assert res["destroyed"] == [lid]
    assert wait_for(lambda: not listening(port))
    b.kill9()
    a.start()
    wait_started(a)
    _, res, _ = a.call(NL + "/get", {"ids": [lid]})
    assert res["notFound"] == [lid]
    assert not listening(port)


def test_names_stay_unique_across_nodes(make_daemon, pg_url):
    """A /set catches up with the other node's changes inside its transaction, so a node
    that has not yet seen a change still derives a fresh name."""
    a = make_daemon(args=["--store", pg_url])
    a.create_listener(bind=[f"127.0.0.1:{pick_port()}"], useTls=False)  # "smtp"
    a.kill9()
    b = make_daemon(http_port=a.http_port, args=["--store", pg_url])
    a.start()  # a: standby without its management address; b: live
    wait_started(a)
    _, res, _ = b.call(NL + "/set", {"create": {"n": {"bind": [f"127.0.0.1:{pick_port()}"],
                                                      "useTls": False}}})
    assert res["created"]["n"]["name"] == "smtp-2"
