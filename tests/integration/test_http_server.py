"""The HTTP/1.1 server of http listeners against the real daemon, over raw sockets where the
wire matters: keep-alive, pipelining, size and header limits, idle time-out, the over-limit
503, graceful stop, slowed credential failures, cookie sign-in with its CSRF rule, the status
and schema endpoints and the web page."""
import json
import signal
import socket
import time

AUTH = "Authorization: Bearer test-admin-secret\r\n"
ECHO = json.dumps({"using": ["urn:ietf:params:jmap:core"],
                   "methodCalls": [["Core/echo", {"k": 1}, "c"]]})


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def post_echo(extra=AUTH, path="/api", body=ECHO):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


class Reader:
    """Reads HTTP/1.1 responses (Content-Length framed) from a socket."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def at_eof(self, timeout=3):
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def test_keep_alive_serves_several_requests(gatehouse):
    s = connect(gatehouse.http_port)
    r = Reader(s)
    for i in range(3):
        s.sendall(post_echo())
        status, h, body = r.response()
        assert status == 200 and h["connection"] == "keep-alive"
        assert json.loads(body)["methodResponses"][0][1] == {"k": 1}
    s.close()


def test_pipelined_requests_answered_in_order(gatehouse):
    s = connect(gatehouse.http_port)
    s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + post_echo() +
              b"OPTIONS /api HTTP/1.1\r\nHost: x\r\n\r\n" + post_echo(AUTH, "/jmap"))
    r = Reader(s)
    assert [r.response()[0] for _ in range(4)] == [404, 200, 204, 200]
    s.close()


def test_http10_and_connection_close(gatehouse):
    s = connect(gatehouse.http_port)
    s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = Reader(s)
    status, h, _ = r.response()
    assert status == 404 and h["connection"] == "close"
    assert r.at_eof()
    s.close()


def test_oversize_request_refused_from_content_length(gatehouse):
    s = connect(gatehouse.http_port)
    s.sendall(b"POST /api HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() +
              b"Content-Type: application/json\r\nContent-Length: 10000001\r\n\r\n")
    r = Reader(s)
    status, h, body = r.response()  # before any body byte was sent
    assert status == 413
    assert h["content-type"].startswith("application/problem+json")
    p = json.loads(body)
    assert p["limit"] == "maxSizeRequest" and p["type"] == "urn:ietf:params:jmap:error:limit"
    s.close()


def test_chunked_body_refused(gatehouse):
    s = connect(gatehouse.http_port)
    s.sendall(b"POST /api HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() +
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    r = Reader(s)
    status, h, _ = r.response()
    assert status in (400, 411) and h["connection"] == "close"
    assert r.at_eof()
    s.close()


def test_header_block_limit(gatehouse):
    s = connect(gatehouse.http_port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n")
    r = Reader(s)
    status, _, _ = r.response()
    assert status == 431
    assert r.at_eof()
    s.close()


def test_malformed_request_gets_400_and_close(gatehouse):
    s = connect(gatehouse.http_port)
    s.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    r = Reader(s)
    assert r.response()[0] == 400
    assert r.at_eof()
    s.close()
    # the daemon serves everyone else
    assert gatehouse.http("GET", "/jmap/session")[0] == 200


def test_idle_timeout_closes_quiet_and_slow_clients(make_daemon):
    d = make_daemon(extra_env={"GATEHOUSE_HTTP_IDLE_MS": "600"})
    quiet = connect(d.http_port)
    slow = connect(d.http_port)
    slow.sendall(b"GET / HTTP/1.1\r\n")  # never finishes its request
    t0 = time.time()
    assert Reader(quiet).at_eof(timeout=5)
    assert Reader(slow).at_eof(timeout=5)
    assert 0.4 < time.time() - t0 < 4
    # a connection in use is kept while requests keep coming
    s = connect(d.http_port)
    r = Reader(s)
    for _ in range(4):
        time.sleep(0.3)
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.response()[0] == 404
    for c in (quiet, slow, s):
        c.close()


def test_over_limit_gets_503_with_retry_after(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(protocol="http", bind=[f"127.0.0.1:{port}"], maxConnections=1, useTls=False)
    first = connect(port)
    first.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert Reader(first).response()[0] == 404
    second = connect(port)
    r = Reader(second)
    status, h, body = r.response()
    assert status == 503
    assert "retry-after" in h and h["connection"] == "close"
    assert json.loads(body)["status"] == 503
    assert r.at_eof()
    first.close()
    second.close()


def test_graceful_stop_closes_idle_keep_alive_connections_and_streams(gatehouse):
    s = connect(gatehouse.http_port)
    r = Reader(s)
    s.sendall(post_echo())
    assert r.response()[0] == 200
    es = connect(gatehouse.http_port)
    es.sendall(b"GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: x\r\n" +
               AUTH.encode() + b"\r\n")
    er = Reader(es)
    while b"\r\n\r\n" not in er.buf:
        er._fill()
    assert er.buf.startswith(b"HTTP/1.1 200")
    gatehouse.proc.send_signal(signal.SIGTERM)
    assert r.at_eof(timeout=10)
    assert er.at_eof(timeout=10)
    assert gatehouse.proc.wait(15) == 0
    s.close()
    es.close()


def test_repeated_failures_are_slowed(gatehouse):
    def attempt(token):
        t0 = time.time()
        status, _, _ = gatehouse.http("POST", "/api", ECHO, {"Content-Type": "application/json",
                                                                "Authorization": "Bearer " + token})
        return status, time.time() - t0

    fast = [attempt("wrong") for _ in range(3)]
    assert all(s == 401 and t < 0.4 for s, t in fast), fast
    s4, t4 = attempt("wrong")
    s5, t5 = attempt("wrong")
    assert s4 == s5 == 401
    assert t4 >= 0.4 and t5 >= t4 * 0.9 and t5 < 6, (t4, t5)
    # while slowed, even the right secret waits (the wait says nothing about the guess)
    s6, t6 = attempt(gatehouse.secret)
    assert s6 == 200 and t6 >= 0.4
    # other requests on the same worker are not held up meanwhile
    assert gatehouse.http("GET", "/", auth=False)[0] == 200


def sign_in(d, secret):
    return d.http("POST", "/auth/session", json.dumps({"secret": secret}),
                  {"Content-Type": "application/json"}, auth=False)


def test_cookie_sign_in_csrf_and_sign_out(gatehouse):
    d = gatehouse
    status, h, _ = sign_in(d, "wrong")
    assert status == 401 and "set-cookie" not in h
    status, h, _ = sign_in(d, d.secret)
    assert status == 204
    cookie = h["set-cookie"]
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    csrf = dict(jar, **{"X-Gatehouse-Csrf": "1"})
    api = {"Content-Type": "application/json"}
    assert d.http("POST", "/api", ECHO, dict(api, **jar), auth=False)[0] == 403
    assert d.http("POST", "/api", ECHO, dict(api, **csrf), auth=False)[0] == 200
    assert d.http("GET", "/api/status", headers=jar, auth=False)[0] == 403
    status, _, raw = d.http("GET", "/api/status", headers=csrf, auth=False)
    assert status == 200 and isinstance(json.loads(raw)["listeners"], dict)
    status, _, raw = d.http("GET", "/api/schema", headers=csrf, auth=False)
    assert status == 200 and "x:NetworkListener" in json.loads(raw)["types"]
    assert d.http("GET", "/jmap/session", headers=jar, auth=False)[0] == 200
    # the event stream takes the cookie alone
    s = connect(d.http_port)
    s.sendall(f"GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: x\r\n"
              f"Cookie: {jar['Cookie']}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200")
    s.close()
    assert d.http("DELETE", "/auth/session", headers=jar, auth=False)[0] == 204
    assert d.http("POST", "/api", ECHO, dict(api, **csrf), auth=False)[0] == 401


def test_cookie_of_removed_api_key_stops_working(gatehouse):
    d = gatehouse
    _, res, _ = d.call("x:ApiKey/set", {"create": {"k": {"name": "page", "permissions": ["sysNetworkListenerGet"]}}})
    key = res["created"]["k"]
    status, h, _ = sign_in(d, key["secret"])
    assert status == 204
    csrf = {"Cookie": h["set-cookie"].split(";")[0], "X-Gatehouse-Csrf": "1"}
    assert d.http("GET", "/api/status", headers=csrf, auth=False)[0] == 200
    d.call("x:ApiKey/set", {"destroy": [key["id"]]})
    assert d.http("GET", "/api/status", headers=csrf, auth=False)[0] == 401


def test_status_and_schema_need_credentials(gatehouse):
    assert gatehouse.http("GET", "/api/status", auth=False)[0] == 401
    assert gatehouse.http("GET", "/api/schema", auth=False)[0] == 401
    status, h, raw = gatehouse.http("GET", "/api/status")
    assert status == 200 and h["content-type"].startswith("application/json")
    listeners = json.loads(raw)["listeners"]
    assert all(isinstance(v["live"], int) for v in listeners.values())


def test_web_page_and_unknown_paths(gatehouse):
    status, h, body = gatehouse.http("GET", "/", auth=False)
    assert status == 200 and h["content-type"].startswith("text/html") and body
    status, h, body = gatehouse.http("HEAD", "/", auth=False)
    assert status == 200 and body == b"" and int(h["content-length"]) > 0
    status, h, raw = gatehouse.http("GET", "/no/such/thing", auth=False)
    assert status == 404 and h["content-type"].startswith("application/problem+json")
    assert json.loads(raw)["status"] == 404


def test_https_listener_serves_the_api_with_https_urls(gatehouse, free_port):
    import ssl
    port = free_port()
    gatehouse.create_listener(protocol="http", bind=[f"127.0.0.1:{port}"], tlsImplicit=True)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET /jmap/session HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{AUTH}\r\n".encode())
            r = Reader(s)
            status, _, body = r.response()
            assert status == 200
            sess = json.loads(body)
            assert sess["apiUrl"] == f"https://127.0.0.1:{port}/api"
            assert sess["eventSourceUrl"].startswith(f"https://127.0.0.1:{port}/")
            s.sendall(post_echo())
            assert r.response()[0] == 200
