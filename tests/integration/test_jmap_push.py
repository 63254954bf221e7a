"""EventSource push (RFC 8620 §7.3; research/jmap-checklist.md section O) against the real
daemon: headers at once, state events carrying the /set newState, types filters, closeafter,
pings in seconds without ids, Last-Event-ID catch-up, credentials and permissions."""
import json
import socket
import time

import pytest

NL = "x:NetworkListener"


@pytest.fixture(autouse=True)
def settled(gatehouse):
    """Waits for the daemon's start-up work (bootstrap objects, certificates): a change made
    before a stream opens must not be mistaken for the test's own."""
    types = ["x:NetworkListener", "x:Certificate", "x:SystemSettings", "x:ApiKey", "x:Destination"]

    def states():
        _, resp = gatehouse.request([[t + "/get", {"ids": []}, t] for t in types])
        return [r[1].get("state") for r in resp["methodResponses"]]

    last, end = states(), time.time() + 10
    while time.time() < end:
        time.sleep(0.3)
        now = states()
        if now == last:
            return
        last = now


class Stream:
    """An EventSource response read from a raw socket."""

    def __init__(self, d, query, headers=None, auth="Bearer test-admin-secret"):
        self.s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
        h = {"Host": f"127.0.0.1:{d.http_port}", "Accept": "text/event-stream"}
        if auth:
            h["Authorization"] = auth
        h.update(headers or {})
        req = f"GET /jmap/eventsource/?{query} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        self.s.sendall(req.encode())
        self.buf = b""
        self.eof = False
        while b"\r\n\r\n" not in self.buf:
            self._read(5)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}

    def _read(self, timeout):
        self.s.settimeout(timeout)
        chunk = self.s.recv(65536)
        if not chunk:
            self.eof = True
            raise EOFError
        self.buf += chunk

    def event(self, timeout=5):
        """The next event as a dict of its fields, or None when none came in time."""
        end = time.time() + timeout
        while b"\n\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            try:
                self._read(left)
            except socket.timeout:
                return None
        block, self.buf = self.buf.split(b"\n\n", 1)
        ev = {}
        for line in block.decode().split("\n"):
            if line.startswith(":") or not line:
                continue
            k, _, v = line.partition(":")
            ev[k] = v[1:] if v.startswith(" ") else v
        return ev

    def state_event(self, timeout=5):
        end = time.time() + timeout
        while time.time() < end:
            ev = self.event(end - time.time())
            if ev is None:
                return None
            if ev.get("event") == "state":
                return ev
        return None

    def closed(self, timeout=3):
        try:
            while True:
                self._read(timeout)
        except EOFError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def make_listener(d, free_port):
    _, res, _ = d.call(NL + "/set", {"create": {"n": {"bind": [f"127.0.0.1:{free_port()}"]}}})
    return res["newState"]


def test_headers_at_once_then_state_event(gatehouse, free_port):
    st = Stream(gatehouse, "types=*&closeafter=no&ping=0")
    assert st.status == 200
    assert st.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in st.headers
    assert "no-cache" in st.headers["cache-control"] or "no-store" in st.headers["cache-control"]
    new_state = make_listener(gatehouse, free_port)
    ev = st.state_event()
    assert ev is not None
    data = json.loads(ev["data"])
    assert data["@type"] == "StateChange"
    ((acct, changed),) = data["changed"].items()
    assert changed[NL] == new_state
    assert ev.get("id")
    st.close()


def test_types_filter_and_percent_encoding(gatehouse, free_port):
    st = Stream(gatehouse, "types=x%3ADestination&closeafter=no&ping=0")
    make_listener(gatehouse, free_port)
    assert st.state_event(timeout=1.5) is None
    _, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": {
        "name": "backend", "protocol": "smtp", "address": "127.0.0.1:2525"}}})
    assert res.get("created"), res
    ev = st.state_event()
    changed = next(iter(json.loads(ev["data"])["changed"].values()))
    assert list(changed) == ["x:Destination"] and changed["x:Destination"] == res["newState"]
    st.close()


def test_closeafter_state_ends_the_response(gatehouse, free_port):
    st = Stream(gatehouse, "types=*&closeafter=state&ping=0")
    make_listener(gatehouse, free_port)
    assert st.state_event() is not None
    assert st.closed()
    st.close()


def test_pings_in_seconds_without_ids(gatehouse):
    st = Stream(gatehouse, "types=*&closeafter=no&ping=1")
    t0 = time.time()
    first = st.event(timeout=3)
    second = st.event(timeout=3)
    for ev in (first, second):
        assert ev["event"] == "ping"
        assert json.loads(ev["data"]) == {"interval": 1}
        assert "id" not in ev
    assert 1.5 < time.time() - t0 < 4
    st.close()


def test_last_event_id_catches_up(gatehouse, free_port):
    st = Stream(gatehouse, "types=*&closeafter=no&ping=0")
    make_listener(gatehouse, free_port)
    last = st.state_event()["id"]
    st.close()
    # reconnecting with an up-to-date id: nothing to say
    st = Stream(gatehouse, "types=*&closeafter=no&ping=0", {"Last-Event-ID": last})
    assert st.state_event(timeout=1) is None
    st.close()
    new_state = make_listener(gatehouse, free_port)
    st = Stream(gatehouse, "types=*&closeafter=no&ping=0", {"Last-Event-ID": last})
    ev = st.state_event(timeout=2)
    assert ev is not None
    assert next(iter(json.loads(ev["data"])["changed"].values()))[NL] == new_state
    assert ev["id"] != last
    st.close()


def test_bad_parameters_and_missing_credentials(gatehouse):
    for q in ("types=*&closeafter=maybe&ping=0", "types=*&closeafter=no&ping=-1",
              "types=*&closeafter=no&ping=x"):
        st = Stream(gatehouse, q)
        assert st.status == 400, q
        st.close()
    st = Stream(gatehouse, "types=*&closeafter=no&ping=0", auth=None)
    assert st.status == 401
    st.close()


def test_permissions_apply_to_push(gatehouse, free_port):
    d = gatehouse
    _, res, _ = d.call("x:ApiKey/set", {"create": {"k": {"name": "dest-only", "permissions": ["sysDestinationGet"]}}})
    st = Stream(d, "types=*&closeafter=no&ping=0", auth="Bearer " + res["created"]["k"]["secret"])
    assert st.status == 200
    make_listener(d, free_port)
    assert st.state_event(timeout=1.5) is None
    d.call("x:Destination/set", {"create": {"d": {"name": "b2", "protocol": "imap", "address": "127.0.0.1:1143"}}})
    ev = st.state_event()
    changed = next(iter(json.loads(ev["data"])["changed"].values()))
    assert NL not in changed and "x:Destination" in changed
    st.close()


def test_many_streams_on_every_worker_hear_a_change(gatehouse, free_port):
    streams = [Stream(gatehouse, "types=*&closeafter=state&ping=0") for _ in range(8)]
    new_state = make_listener(gatehouse, free_port)
    for st in streams:
        ev = st.state_event()
        assert ev is not None
        assert next(iter(json.loads(ev["data"])["changed"].values()))[NL] == new_state
        st.close()
