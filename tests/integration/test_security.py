"""Who may come in (SPEC §11): x:BlockedIp, x:AllowedIp and the x:Security singleton over
JMAP, and what they do on the wire, tried from distinct loopback sources (127.0.x.y)."""
import datetime
import http.client
import json
import socket
import ssl
import time

BL, AL, SEC = "x:BlockedIp", "x:AllowedIp", "x:Security"


def connect(port, src, timeout=5):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))


def first_bytes(port, src):
    """What the server sends first to a client from src: b"" when it closes silently."""
    with connect(port, src) as s:
        try:
            return s.recv(512)
        except ConnectionResetError:
            return b""


def smtp_listener(d, free_port, **props):
    port = free_port()
    d.create_listener(bind=[f"127.0.0.1:{port}"], useTls=False, **props)
    return port


def set_security(d, **props):
    _, res, _ = d.call(SEC + "/set", {"update": {"singleton": props}})
    assert "singleton" in (res.get("updated") or {}), res


def create(d, typ, **props):
    _, res, _ = d.call(typ + "/set", {"create": {"n": props}})
    assert "n" in (res.get("created") or {}), res
    return res["created"]["n"]


def entries(d, typ=BL):
    _, res, _ = d.call(typ + "/get", {"ids": None})
    return {o["address"]: o for o in res["list"]}


def wait_for(cond, timeout=6.0, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def wait_ban(d, address, timeout=6.0):
    return wait_for(lambda: entries(d).get(address), timeout)


def http_get(port, src, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(src, 0))
    try:
        c.request("GET", path, headers=headers or {})
        return c.getresponse().status
    finally:
        c.close()


def utc(seconds_from_now):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds_from_now)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the objects ----


def test_security_singleton_defaults_are_stalwarts(gatehouse):
    _, res, _ = gatehouse.call(SEC + "/get", {})
    s = res["list"][0]
    assert s["id"] == "singleton"
    assert s["authBanRate"] == {"count": 100, "period": "1d"}
    assert s["loiterBanRate"] == {"count": 150, "period": "1d"}
    assert s["scanBanRate"] == {"count": 30, "period": "1d"}
    assert s["authBanPeriod"] is None and s["loiterBanPeriod"] is None
    assert s["scanBanPeriod"] is None
    assert "*.php*" in s["scanBanPaths"] and "*/cgi-bin*" in s["scanBanPaths"]
    assert len(s["scanBanPaths"]) == 12
    assert s["maxConnectionsPerIp"] is None and s["connectionRate"] is None
    # a null rate turns that ban off (it does not fall back to the default)
    set_security(gatehouse, scanBanRate=None, authBanPeriod="1h",
                 connectionRate={"count": 5, "period": 60000})
    _, res, _ = gatehouse.call(SEC + "/get", {})
    s = res["list"][0]
    assert s["scanBanRate"] is None
    assert s["authBanPeriod"] == "1h"
    assert s["connectionRate"] == {"count": 5, "period": "1m"}
    _, res, _ = gatehouse.call(SEC + "/set", {"create": {"x": {}}, "destroy": ["singleton"]})
    assert res["notCreated"]["x"]["type"] == "singleton"
    assert res["notDestroyed"]["singleton"]["type"] == "singleton"


def test_blocked_and_allowed_family(gatehouse):
    b = create(gatehouse, BL, address="192.0.2.0/24")
    assert b["reason"] == "manual" and b["expiresAt"] is None and b["createdAt"].endswith("Z")
    a = create(gatehouse, AL, address="2001:db8::/32", reason="office")
    assert a["address"] == "2001:db8::/32"
    _, res, _ = gatehouse.call(BL + "/query", {"filter": {"reason": "manual"},
                                               "sort": [{"property": "address"}]})
    assert res["ids"] == [b["id"]]
    state = res["queryState"]
    create(gatehouse, BL, address="198.51.100.7", reason="scan")
    _, res, _ = gatehouse.call(BL + "/changes", {"sinceState": state})
    assert len(res["created"]) == 1
    # address is create-only; expiresAt can change
    _, res, _ = gatehouse.call(BL + "/set", {"update": {b["id"]: {"address": "192.0.3.0/24"}}})
    assert res["notUpdated"][b["id"]]["properties"] == ["address"]
    _, res, _ = gatehouse.call(BL + "/set", {"update": {b["id"]: {"expiresAt": utc(3600)}}})
    assert b["id"] in res["updated"], res
    _, res, _ = gatehouse.call(AL + "/set", {"destroy": [a["id"]]})
    assert res["destroyed"] == [a["id"]]


def test_bad_input_names_the_property_and_stores_nothing(gatehouse):
    _, before, _ = gatehouse.call(BL + "/get", {"ids": None})
    _, res, _ = gatehouse.call(BL + "/set", {"create": {
        "a": {"address": "10.0.0.0/33"}, "b": {"address": "300.1.2.3"},
        "c": {"address": "10.0.0.1/8"}, "d": {"address": "10.0.0.0/8", "reason": "bored"},
        "e": {"address": "10.0.0.0/8", "expiresAt": "tomorrow"}, "f": {}}})
    nc = res["notCreated"]
    for k in "abc":
        assert nc[k]["type"] == "invalidProperties" and nc[k]["properties"] == ["address"], nc[k]
    assert "33" in nc["a"]["description"] and "300.1.2.3" in nc["b"]["description"]
    assert nc["d"]["properties"] == ["reason"]
    assert nc["e"]["properties"] == ["expiresAt"]
    assert nc["f"]["properties"] == ["address"]
    _, after, _ = gatehouse.call(BL + "/get", {"ids": None})
    assert after["list"] == before["list"]
    first = create(gatehouse, BL, address="10.1.0.0/16")
    _, res, _ = gatehouse.call(BL + "/set", {"create": {"dup": {"address": "10.1.0.0/16"}}})
    err = res["notCreated"]["dup"]
    assert err["type"] == "alreadyExists" and err["existingId"] == first["id"]
    _, res, _ = gatehouse.call(SEC + "/set", {"update": {"singleton": {
        "authBanRate": {"count": 0, "period": "1d"},
        "scanBanRate": {"count": 3, "period": "1w"},
        "loiterBanRate": {"count": 3},
        "connectionRate": {"count": 3, "period": "1d", "burst": 2},
        "maxConnectionsPerIp": 0}}})
    err = res["notUpdated"]["singleton"]
    assert set(err["properties"]) == {"authBanRate", "scanBanRate", "loiterBanRate",
                                      "connectionRate", "maxConnectionsPerIp"}
    assert "1w" in err["description"] and "count" in err["description"]
    _, res, _ = gatehouse.call(SEC + "/get", {})
    assert res["list"][0]["authBanRate"] == {"count": 100, "period": "1d"}


def test_lockout_rule(gatehouse):
    """The test client is 127.0.0.1: a block over it is refused unless an allowed entry at
    least as specific keeps it in."""
    _, res, _ = gatehouse.call(BL + "/set", {"create": {"n": {"address": "127.0.0.0/8"}}})
    err = res["notCreated"]["n"]
    assert err["properties"] == ["address"] and "lock you out" in err["description"]
    assert "127.0.0.1" in err["description"]
    create(gatehouse, AL, address="127.0.0.0/16")
    _, res, _ = gatehouse.call(BL + "/set", {"create": {"n": {"address": "127.0.0.0/24"}}})
    assert "n" in res["notCreated"], "a more specific block beats the allowed range"
    create(gatehouse, BL, address="127.0.0.0/8")
    assert gatehouse.call(SEC + "/get", {})[0] == SEC + "/get"  # still in


# ---- enforcement at accept ----


def test_blocked_is_closed_before_a_byte(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    tls_port = free_port()
    gatehouse.create_listener(bind=[f"127.0.0.1:{tls_port}"], tlsImplicit=True)
    assert first_bytes(port, "127.0.9.5").startswith(b"220 ")
    create(gatehouse, BL, address="127.0.9.0/24")
    assert first_bytes(port, "127.0.9.5") == b""
    assert first_bytes(port, "127.0.10.5").startswith(b"220 ")
    # implicit TLS: no handshake at all
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with connect(tls_port, "127.0.9.6") as raw:
        try:
            ctx.wrap_socket(raw, server_hostname="x")
            assert False, "a blocked client completed a TLS handshake"
        except (ssl.SSLError, ConnectionResetError, OSError):
            pass
    with connect(tls_port, "127.0.10.6") as raw:
        with ctx.wrap_socket(raw, server_hostname="x") as t:
            assert t.recv(64).startswith(b"220 ")
    assert "client=127.0.9.5 address blocked" in gatehouse.read_log()


def test_most_specific_range_wins(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    create(gatehouse, BL, address="127.0.20.0/24")
    create(gatehouse, AL, address="127.0.20.7")
    create(gatehouse, AL, address="127.0.21.0/24")
    create(gatehouse, BL, address="127.0.21.0/28")
    create(gatehouse, BL, address="127.0.22.5")
    create(gatehouse, AL, address="127.0.22.5")  # the same range both ways: allowed wins
    assert first_bytes(port, "127.0.20.8") == b""
    assert first_bytes(port, "127.0.20.7").startswith(b"220 ")
    assert first_bytes(port, "127.0.21.3") == b""
    assert first_bytes(port, "127.0.21.30").startswith(b"220 ")
    assert first_bytes(port, "127.0.22.5").startswith(b"220 ")


def test_expired_entries_stop_applying_and_are_destroyed(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    _, res, _ = gatehouse.call(BL + "/get", {"ids": []})
    state = res["state"]
    b = create(gatehouse, BL, address="127.0.23.0/24", expiresAt=utc(2))
    create(gatehouse, BL, address="127.0.24.0/24", expiresAt=utc(3600))
    assert first_bytes(port, "127.0.23.1") == b""
    assert wait_for(lambda: first_bytes(port, "127.0.23.1").startswith(b"220 "), 5)
    assert wait_for(lambda: b["address"] not in entries(gatehouse), 3)
    _, res, _ = gatehouse.call(BL + "/changes", {"sinceState": state})
    assert b["id"] in res["destroyed"] or b["id"] not in res["created"], res
    assert first_bytes(port, "127.0.24.1") == b""


def test_proxy_client_address_is_checked_and_a_blocked_balancer_is_blocked(gatehouse,
                                                                            free_port):
    port = smtp_listener(gatehouse, free_port, overrideProxyTrustedNetworks=["127.0.70.0/24"])
    create(gatehouse, BL, address="192.0.2.0/24")

    def via(balancer, client):
        with connect(port, balancer) as s:
            s.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 25\r\n".encode())
            try:
                return s.recv(512)
            except ConnectionResetError:
                return b""

    assert via("127.0.70.1", "192.0.2.9") == b""
    assert via("127.0.70.1", "198.51.100.9").startswith(b"220 ")
    create(gatehouse, BL, address="127.0.70.2")
    assert first_bytes(port, "127.0.70.2") == b""  # closed at accept, before any header


def test_max_connections_per_ip(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    set_security(gatehouse, maxConnectionsPerIp=2)
    create(gatehouse, AL, address="127.0.31.1")
    held = [connect(port, "127.0.30.1") for _ in range(2)]
    for s in held:
        assert s.recv(64).startswith(b"220 ")
    assert first_bytes(port, "127.0.30.1") == b"421 4.3.2 Too many connections\r\n"
    assert first_bytes(port, "127.0.30.2").startswith(b"220 ")
    allowed = [connect(port, "127.0.31.1") for _ in range(4)]  # an allowed address: no limit
    for s in allowed:
        assert s.recv(64).startswith(b"220 ")
    held.pop().close()
    assert wait_for(lambda: first_bytes(port, "127.0.30.1").startswith(b"220 "), 3)
    for s in held + allowed:
        s.close()
    assert "limit-per-ip" in gatehouse.read_log()


def test_connection_rate(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    imap = free_port()
    gatehouse.create_listener(bind=[f"127.0.0.1:{imap}"], protocol="imap", useTls=False)
    set_security(gatehouse, connectionRate={"count": 3, "period": "1h"})
    for _ in range(3):
        assert first_bytes(port, "127.0.32.1").startswith(b"220 ")
    assert first_bytes(port, "127.0.32.1") == b"421 4.3.2 Too many connections\r\n"
    assert first_bytes(imap, "127.0.32.1") == b"* BYE Too many connections\r\n"
    assert first_bytes(port, "127.0.32.2").startswith(b"220 ")
    set_security(gatehouse, connectionRate=None)
    assert first_bytes(port, "127.0.32.1").startswith(b"220 ")


# ---- events and bans ----


def send_after_greeting(port, src, data):
    with connect(port, src) as s:
        s.recv(512)
        s.sendall(data)
        time.sleep(0.1)


def test_scan_bans_and_connect_and_close_is_not_counted(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    set_security(gatehouse, scanBanRate={"count": 3, "period": "1h"}, scanBanPeriod="1h")
    for _ in range(10):
        connect(port, "127.0.40.9").close()  # health checks
    send_after_greeting(port, "127.0.40.1", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    send_after_greeting(port, "127.0.40.1", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    time.sleep(1.2)
    assert "127.0.40.1" not in entries(gatehouse), "two events are under the rate of three"
    send_after_greeting(port, "127.0.40.1", b"\x00\x01binary")
    ban = wait_ban(gatehouse, "127.0.40.1")
    assert ban and ban["reason"] == "scan"
    exp = datetime.datetime.strptime(ban["expiresAt"], "%Y-%m-%dT%H:%M:%SZ")
    left = (exp.replace(tzinfo=datetime.timezone.utc)
            - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 3400 < left <= 3602, left
    assert first_bytes(port, "127.0.40.1") == b""
    assert "127.0.40.9" not in entries(gatehouse)
    for _ in range(3):  # a PROXY header from a peer that is not trusted
        with connect(port, "127.0.40.2") as s:
            s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\r\n")
            time.sleep(0.1)
    assert wait_ban(gatehouse, "127.0.40.2")["reason"] == "scan"


def test_failed_tls_handshake_is_a_scan(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(bind=[f"127.0.0.1:{port}"], tlsImplicit=True)
    set_security(gatehouse, scanBanRate={"count": 2, "period": "1h"})
    for _ in range(2):
        with connect(port, "127.0.41.1") as s:
            s.sendall(b"EHLO not-tls\r\n")
            try:
                s.recv(64)
            except ConnectionResetError:
                pass
    assert wait_ban(gatehouse, "127.0.41.1")["reason"] == "scan"


def test_allowed_address_is_never_banned(gatehouse, free_port):
    port = smtp_listener(gatehouse, free_port)
    set_security(gatehouse, scanBanRate={"count": 1, "period": "1h"})
    create(gatehouse, AL, address="127.0.43.0/24")
    send_after_greeting(port, "127.0.43.1", b"GET / HTTP/1.0\r\n\r\n")
    time.sleep(1.5)
    assert "127.0.43.1" not in entries(gatehouse)
    assert first_bytes(port, "127.0.43.1").startswith(b"220 ")


def test_scan_path_bans_at_once(gatehouse):
    port = gatehouse.http_port
    assert http_get(port, "127.0.42.1", "/index.html") in (200, 404)
    assert "127.0.42.1" not in entries(gatehouse)
    http_get(port, "127.0.42.2", "/wp-login.php?x=1")
    assert wait_ban(gatehouse, "127.0.42.2")["reason"] == "scan"
    assert first_bytes(port, "127.0.42.2") == b""
    # with the scan ban off, paths ban nobody
    set_security(gatehouse, scanBanRate=None)
    http_get(port, "127.0.42.3", "/cgi-bin/test.cgi")
    time.sleep(1.5)
    assert "127.0.42.3" not in entries(gatehouse)


def test_loiter_bans(make_daemon, free_port):
    d = make_daemon(extra_env={"GATEHOUSE_MAIL_IDLE_MS": "200"})
    port = smtp_listener(d, free_port)
    tls = free_port()
    d.create_listener(bind=[f"127.0.0.1:{tls}"], tlsImplicit=True, tlsTimeout="300ms")
    set_security(d, loiterBanRate={"count": 2, "period": "1h"}, loiterBanPeriod="10m")
    with connect(port, "127.0.50.1") as s:  # idle mail session
        s.recv(512)
        s.settimeout(5)
        while s.recv(512):
            pass
    with connect(tls, "127.0.50.1") as s:  # a handshake never started
        s.settimeout(5)
        assert s.recv(64) == b""
    ban = wait_ban(d, "127.0.50.1")
    assert ban["reason"] == "loiter" and ban["expiresAt"]
    assert "127.0.50.2" not in entries(d)


def test_auth_failures_ban_by_address_and_by_login(gatehouse):
    set_security(gatehouse, authBanRate={"count": 3, "period": "1h"})
    port = gatehouse.http_port

    def api(src, auth):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(src, 0))
        try:
            c.request("POST", "/api", body=json.dumps({"using": [], "methodCalls": []}),
                      headers={"Authorization": auth, "Content-Type": "application/json"})
            return c.getresponse().status
        finally:
            c.close()

    for _ in range(3):
        assert api("127.0.60.1", "Bearer wrong") == 401
    assert wait_ban(gatehouse, "127.0.60.1")["reason"] == "authFailure"
    # one login from many addresses: once the login is over the rate, each address is banned
    for i in range(2, 5):
        assert api(f"127.0.61.{i}", gatehouse.basic("ops", "guess")) == 401
    assert wait_ban(gatehouse, "127.0.61.4")["reason"] == "authFailure"
    assert "127.0.61.2" not in entries(gatehouse)


def test_bans_survive_a_restart(make_daemon, free_port):
    d = make_daemon()
    port = smtp_listener(d, free_port)
    set_security(d, scanBanRate={"count": 1, "period": "1h"})
    send_after_greeting(port, "127.0.80.1", b"GET / HTTP/1.0\r\n\r\n")
    assert wait_ban(d, "127.0.80.1")
    d.stop()
    d2 = make_daemon(data_dir=d.data_dir, http_port=d.http_port)
    assert entries(d2)["127.0.80.1"]["reason"] == "scan"
    assert wait_for(lambda: first_bytes(port, "127.0.80.2").startswith(b"220 "))
    assert first_bytes(port, "127.0.80.1") == b""


def test_permissions_per_type_and_operation(gatehouse):
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {"permissions": [
        "sysBlockedIpGet", "sysBlockedIpCreate", "sysSecurityGet"]}}})
    secret = res["created"]["k"]["secret"]
    b = create(gatehouse, BL, address="192.0.2.0/24")
    name, res, _ = gatehouse.call(BL + "/get", {"ids": [b["id"]]}, token=secret)
    assert name == BL + "/get" and res["list"][0]["address"] == "192.0.2.0/24"
    name, res, _ = gatehouse.call(BL + "/query", {}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    _, res, _ = gatehouse.call(BL + "/set", {"create": {"n": {"address": "198.51.100.0/24"}},
                                             "destroy": [b["id"]]}, token=secret)
    assert "n" in res["created"]
    assert res["notDestroyed"][b["id"]]["type"] == "forbidden"
    name, res, _ = gatehouse.call(AL + "/get", {}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call(SEC + "/get", {}, token=secret)
    assert name == SEC + "/get"
    _, res, _ = gatehouse.call(SEC + "/set", {"update": {"singleton": {"scanBanRate": None}}},
                               token=secret)
    assert res["notUpdated"]["singleton"]["type"] == "forbidden"
    # the lockout rule holds for API keys too
    _, res, _ = gatehouse.call(BL + "/set", {"create": {"n": {"address": "127.0.0.1"}}},
                               token=secret)
    assert "lock you out" in res["notCreated"]["n"]["description"]


def test_ipv6_client(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(bind=[f"[::1]:{port}"], useTls=False)

    def greet():
        with socket.create_connection(("::1", port), timeout=5) as s:
            try:
                return s.recv(512)
            except ConnectionResetError:
                return b""

    assert greet().startswith(b"220 ")
    b = create(gatehouse, BL, address="::1")
    assert greet() == b""
    create(gatehouse, AL, address="::/0")  # less specific: the block stays
    assert greet() == b""
    gatehouse.call(BL + "/set", {"destroy": [b["id"]]})
    assert greet().startswith(b"220 ")


def test_many_bans_at_once_are_all_stored(gatehouse, free_port):
    """More ban requests in one second than one /set may hold (maxObjectsInSet 500)."""
    port = smtp_listener(gatehouse, free_port)
    set_security(gatehouse, scanBanRate={"count": 1, "period": "1h"})
    sources = [f"127.0.{100 + i // 250}.{1 + i % 250}" for i in range(700)]
    for src in sources:
        with connect(port, src) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello")

    def total():
        return gatehouse.call(BL + "/query", {"calculateTotal": True, "limit": 1})[1]["total"]

    assert wait_for(lambda: total() == 700, 15), total()
    assert first_bytes(port, sources[-1]) == b""
    assert first_bytes(port, sources[0]) == b""
    assert "security-error" not in gatehouse.read_log()
