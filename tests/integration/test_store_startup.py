"""What the store gives at start and an operator must hear about: a management listener
whose row cannot be loaded stops the start with a message naming the row and the way out
(a daemon without its API cannot be managed); another broken row is skipped with a log
line; a store that cannot be written is reported at start, not only by each /set."""
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time

import pytest

from conftest import BIN, SECRET, Daemon, pick_port, wait_port


def db_path(d):
    return os.path.join(d.data_dir, "gatehouse.db")


def corrupt(d, where, json_text):
    with sqlite3.connect(db_path(d)) as db:
        n = db.execute("UPDATE objects SET json = ? WHERE type = 'x:NetworkListener' AND " + where,
                       (json_text,)).rowcount
    assert n == 1


def http_listener_id(d):
    _, res, _ = d.call("x:NetworkListener/get", {"ids": None})
    return next(o["id"] for o in res["list"] if o["protocol"] == "http")


def restart_fails(d):
    """Starts d again; returns (exit code, log) of a start that must fail."""
    d.stop()
    d.log = open(d.log_path, "ab")
    cmd = [BIN, "serve", "--data", d.data_dir, "--http", f"127.0.0.1:{d.http_port}",
           "--workers", "2"]
    p = subprocess.run(cmd, env=d.env, stdout=d.log, stderr=d.log, timeout=10)
    d.log.close()
    d.proc = None
    return p.returncode, d.read_log()


@pytest.mark.parametrize("broken", ["{not json", '{"protocol": "gopher", "bind": 7}'])
def test_unloadable_management_listener_stops_the_start(make_daemon, broken):
    d = make_daemon()
    lid = http_listener_id(d)
    d.stop()
    corrupt(d, f"id = '{lid}'", broken)
    rc, log = restart_fails(d)
    assert rc != 0
    assert "no management listener would run" in log, log[-2000:]
    assert f'"{lid}"' in log  # names the row
    assert "DELETE FROM kv WHERE key = 'initialized'" in log  # and the way out


def test_deleting_the_row_as_told_brings_the_management_listener_back(make_daemon):
    d = make_daemon()
    lid = http_listener_id(d)
    d.stop()
    corrupt(d, f"id = '{lid}'", "{not json")
    restart_fails(d)
    with sqlite3.connect(db_path(d)) as db:
        db.execute("DELETE FROM objects WHERE type = 'x:NetworkListener' AND id = ?", (lid,))
        db.execute("DELETE FROM kv WHERE key = 'initialized'")
    d.start()
    assert http_listener_id(d) != lid


def test_other_unreadable_rows_are_skipped_and_logged(make_daemon, free_port):
    d = make_daemon()
    port = free_port()
    sid = d.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    d.stop()
    corrupt(d, f"id = '{sid}'", "{not json")
    d.start()  # the management listener is intact: the daemon starts
    assert f"x:NetworkListener {sid}: stored JSON unreadable; skipped" in d.read_log()
    _, res, _ = d.call("x:NetworkListener/get", {"ids": None})
    assert sid not in [o["id"] for o in res["list"]]


def test_writable_store_gives_no_warning(gatehouse):
    assert "store-readonly" not in gatehouse.read_log()


NOBODY = 65534


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_store_warns_at_start(what):
    """The database file, or its directory, is not writable by the daemon's user: it starts
    and serves, and says at once that changes will fail. (Root writes anything, so as root
    the daemon runs as nobody; otherwise the modes are enough.)"""
    root = os.geteuid() == 0
    top = tempfile.mkdtemp(prefix="gatehouse-ro-")
    os.chmod(top, 0o755)
    data = os.path.join(top, "data")
    d = Daemon(data, pick_port())
    try:
        d.start()
        d.stop()
        if root:
            for dirpath, _, files in os.walk(data):
                os.chown(dirpath, NOBODY, NOBODY)
                for f in files:
                    os.chown(os.path.join(dirpath, f), NOBODY, NOBODY)
        if what == "file":
            os.chmod(db_path(d), 0o444)
        else:  # WAL cannot make its -shm and -wal files beside the database
            assert not os.path.exists(db_path(d) + "-wal")
            os.chmod(data, 0o555)
        d.log = open(d.log_path, "ab")

        def drop():
            if root:
                os.setgid(NOBODY)
                os.setuid(NOBODY)

        cmd = [BIN, "serve", "--data", data, "--http", f"127.0.0.1:{d.http_port}",
               "--workers", "2"]
        d.proc = subprocess.Popen(cmd, env=d.env, stdout=d.log, stderr=d.log, preexec_fn=drop)
        assert wait_port(d.http_port), d.read_log()
        end = time.time() + 10  # the listener may accept a moment before the check is done
        while "store-readonly" not in d.read_log() and time.time() < end:
            time.sleep(0.05)
        log = d.read_log()
        assert "store-readonly" in log and "the store cannot be written" in log, log[-2000:]
        # It serves what it holds; a change fails, as the warning said.
        _, res, _ = d.call("x:NetworkListener/get", {"ids": None})
        assert len(res["list"]) == 1
        status, resp = d.request([["x:NetworkListener/set", {"create": {"n": {
            "protocol": "smtp", "bind": [f"127.0.0.1:{pick_port()}"], "useTls": False}}}, "c"]])
        assert status != 200 or "created" not in resp["methodResponses"][0][1] or \
            not resp["methodResponses"][0][1]["created"], resp
    finally:
        d.stop()
        if os.path.isdir(data):
            os.chmod(data, 0o755)
        shutil.rmtree(top, ignore_errors=True)
