"""Durability (SPEC §4): every accepted change is in the store before the response; a
kill -9 right after a /set response loses nothing, and a restart brings back exactly the
listeners the last successful response described."""
import socket
import time

NL = "x:NetworkListener"


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def listeners(d):
    _, res, _ = d.call(NL + "/get", {"ids": None})
    return {l["name"]: l for l in res["list"]}


def test_kill9_after_set_keeps_the_change(make_daemon, free_port):
    d = make_daemon()
    p1, p2, p3 = free_port(), free_port(), free_port()
    keep = d.create_listener(name="keep", bind=[f"127.0.0.1:{p1}"], socketTtl=42, useTls=False)
    gone = d.create_listener(name="gone", bind=[f"127.0.0.1:{p2}"], useTls=False)
    _, res, _ = d.call(NL + "/set", {
        "update": {keep: {"bind": [f"127.0.0.1:{p3}"], "tlsTimeout": "90s"}},
        "destroy": [gone]})
    assert res["destroyed"] == [gone] and keep in res["updated"]
    state = res["newState"]
    d.kill9()
    d.start()
    got = listeners(d)
    assert set(got) == {"http", "keep"}
    assert got["keep"]["id"] == keep
    assert got["keep"]["bind"] == [f"127.0.0.1:{p3}"]
    assert got["keep"]["socketTtl"] == 42 and got["keep"]["tlsTimeout"] == "90s"
    _, res, _ = d.call(NL + "/get", {"ids": []})
    assert res["state"] == state
    assert listening(p3)
    assert not listening(p1) and not listening(p2)
    # the change log survived too
    _, ch, _ = d.call(NL + "/changes", {"sinceState": state})
    assert ch["created"] == [] and ch["updated"] == [] and ch["destroyed"] == []


def test_refused_change_leaves_nothing_behind(make_daemon, free_port):
    d = make_daemon()
    _, res, _ = d.call(NL + "/set", {"create": {"bad": {"bind": ["127.0.0.1:0"]}}})
    assert res["notCreated"]["bad"]["type"] == "invalidProperties"
    d.kill9()
    d.start()
    assert set(listeners(d)) == {"http"}


def test_restart_restores_exactly_the_listeners(make_daemon, free_port):
    d = make_daemon()
    ports = [free_port() for _ in range(3)]
    for i, p in enumerate(ports):
        d.create_listener(name=f"l{i}", protocol=["smtp", "imap", "pop3"][i],
                          bind=[f"127.0.0.1:{p}"], useTls=False)
    before = listeners(d)
    assert d.stop() == 0
    d.start()
    after = listeners(d)
    assert after == before
    for p in ports:
        assert listening(p)


def test_first_start_only_once(make_daemon, free_port):
    """The bootstrap listener is created on the first start only; deleting it and
    restarting does not bring it back (the store is no longer empty)."""
    d = make_daemon()
    other = free_port()
    d.create_listener(name="admin2", protocol="http", bind=[f"127.0.0.1:{other}"])
    http = listeners(d)["http"]["id"]
    d.call(NL + "/set", {"destroy": [http]})
    d.kill9()
    d.http_port = other
    d.url = f"http://127.0.0.1:{other}"
    d.start()
    assert set(listeners(d)) == {"admin2"}


def test_epoch_differs_between_stores(make_daemon):
    a, b = make_daemon(), make_daemon()
    _, ra, _ = a.call(NL + "/get", {"ids": []})
    _, rb, _ = b.call(NL + "/get", {"ids": []})
    assert ra["state"] != rb["state"]
    _, res, _ = a.call(NL + "/changes", {"sinceState": rb["state"]})
    assert res["type"] == "cannotCalculateChanges"
    time.sleep(0)


def test_listener_that_cannot_bind_at_start_comes_up_later(make_daemon, free_port):
    import json
    d = make_daemon()
    port = free_port()
    lid = d.create_listener(name="late", bind=[f"127.0.0.1:{port}"], useTls=False)
    d.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        d.start()
        end = time.time() + 5  # the API may answer before the listener's bind was tried
        while True:
            _, _, body = d.http("GET", "/api/status")
            entry = json.loads(body)["listeners"].get(lid, {})
            if "error" in entry or time.time() > end:
                break
            time.sleep(0.05)
        assert "in use" in entry["error"].lower()
        assert "listener=late" in d.read_log() and "not started" in d.read_log()
    end = time.time() + 5
    while time.time() < end and not listening(port):
        time.sleep(0.1)
    assert listening(port), d.read_log()
    _, _, body = d.http("GET", "/api/status")
    assert "error" not in json.loads(body)["listeners"][lid]
    assert "listener-started" in d.read_log()
