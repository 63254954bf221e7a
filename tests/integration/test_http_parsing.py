"""The HTTP server's parsing and limits against hostile input (docs/api.md "The HTTP server"):
whitespace before a header's colon, requests without a version, the 64 KiB head limit, and a
body over the limit refused at once, with or without Expect: 100-continue."""
import json
import socket
import threading
import time

ECHO = json.dumps({"using": ["urn:ietf:params:jmap:core"],
                   "methodCalls": [["Core/echo", {}, "c"]]})


def connect(g, timeout=10):
    s = socket.create_connection(("127.0.0.1", g.http_port), timeout=timeout)
    return s


def read_all(s):
    """Everything until the server closes; the time it took."""
    t0 = time.monotonic()
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


def exchange(g, raw):
    with connect(g) as s:
        s.sendall(raw)
        data, took = read_all(s)
    return data, took


def statuses(data):
    return [int(line.split()[1]) for line in data.split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ")]


def test_whitespace_before_colon_is_refused_not_smuggled(gatehouse):
    smuggled = b"GET /jmap/session HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length : %d\r\n\r\n" % len(smuggled)
           + smuggled)
    data, _ = exchange(gatehouse, raw)
    assert statuses(data) == [400], data  # one answer, and never a 401 for the smuggled one
    data, _ = exchange(gatehouse, b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n")
    assert statuses(data) == [400], data


def test_requests_without_a_version_are_refused(gatehouse):
    data, took = exchange(gatehouse, b"GET /\r\n\r\n")
    assert statuses(data) == [400], data
    data, took = exchange(gatehouse, b"GET /\r\n")  # HTTP/0.9 sends no blank line
    assert statuses(data) == [400] and took < 5, (data, took)
    data, _ = exchange(gatehouse, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    assert statuses(data) == [400], data
    data, _ = exchange(gatehouse, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(data) == [200]


def head_of_size(size):
    head = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    while size - len(head) - 2 > 40:
        head += b"X-Filler: %026d\r\n" % len(head)
    head += b"X: " + b"v" * (size - len(head) - 2 - 5) + b"\r\n\r\n"
    assert len(head) == size
    return head


def test_head_limit_is_64_kib_with_431(gatehouse):
    data, _ = exchange(gatehouse, head_of_size(65536))
    assert statuses(data) == [404], data[:100]
    for size in (65537, 72 * 1000, 96 * 1024):
        data, _ = exchange(gatehouse, head_of_size(size))
        assert statuses(data) == [431], (size, data[:100])


def auth_head(g, length, expect=False):
    return (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + g.secret.encode() + b"\r\n"
            + (b"Expect: 100-continue\r\n" if expect else b"")
            + b"Content-Length: %d\r\n\r\n" % length)


def test_body_over_the_limit_is_refused_at_once(gatehouse):
    # the idle time-out is the default minute: an answer that waits for it fails here
    for expect in (False, True):
        with connect(gatehouse) as s:
            s.sendall(auth_head(gatehouse, 10_000_001, expect))
            data, took = read_all(s)
        assert statuses(data) == [413], data
        assert b"100 Continue" not in data
        assert b"maxSizeRequest" in data
        assert took < 3, took


def test_body_over_the_limit_sent_anyway_still_reads_the_413(gatehouse):
    body = b"x" * 12_000_000
    with connect(gatehouse, timeout=20) as s:
        def send():
            try:
                s.sendall(auth_head(gatehouse, len(body)) + body)
            except OSError:
                pass  # the server stops reading after a while; the answer is what counts
        t = threading.Thread(target=send)
        t.start()
        data, took = read_all(s)
        t.join(20)
    assert statuses(data) == [413], data[:200]
    assert took < 5


def test_100_continue_only_for_an_acceptable_body(gatehouse):
    with connect(gatehouse) as s:
        s.sendall(auth_head(gatehouse, len(ECHO), expect=True))
        first = s.recv(100)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
        s.sendall(ECHO.encode())
        data = s.recv(65536)
    assert statuses(data) == [200], data
    # without a body, no 100 Continue either
    with connect(gatehouse) as s:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n")
        data, _ = read_all(s)
    assert statuses(data) == [404], data
