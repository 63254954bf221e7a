"""x:NetworkListener through the real API: live binds, the reference page's examples,
/get, /set (creation-id references, patches), /query, /changes and /queryChanges."""
import socket
import time

NL = "x:NetworkListener"


def listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_closed(port, timeout=3.0):
    end = time.time() + timeout
    while time.time() < end:
        if not listening(port):
            return True
        time.sleep(0.05)
    return False


def get_state(g):
    _, res, _ = g.call(NL + "/get", {"ids": []})
    return res["state"]


def test_create_is_listening_before_the_response(gatehouse, free_port):
    port = free_port()
    _, res, _ = gatehouse.call(NL + "/set", {"create": {"a": {"bind": [f"127.0.0.1:{port}"],
                                                               "useTls": False}}})
    assert "a" in res["created"], res
    created = res["created"]["a"]
    assert listening(port)
    # every default comes back, normalised
    assert created["name"] == "smtp"
    assert created["protocol"] == "smtp"
    assert created["tlsTimeout"] == "1m"
    assert created["maxConnections"] == 8192
    assert created["socketBacklog"] == 1024
    assert created["socketTtl"] is None
    assert res["newState"] != res["oldState"]
    assert get_state(gatehouse) == res["newState"]


def test_reference_create_example_is_refused(gatehouse):
    """The reference page's create example has an empty bind (and TOS/TTL of 1000)."""
    before = get_state(gatehouse)
    example = {"bind": [], "maxConnections": 8192, "overrideProxyTrustedNetworks": [],
               "protocol": "smtp", "socketBacklog": 1024, "socketNoDelay": True,
               "socketReceiveBufferSize": 1000, "socketReuseAddress": True,
               "socketReusePort": True, "socketSendBufferSize": 1000, "socketTosV4": 1000,
               "socketTtl": 1000, "tlsDisableCipherSuites": [], "tlsDisableProtocols": [],
               "tlsIgnoreClientOrder": True, "tlsImplicit": False, "tlsTimeout": "1m",
               "useTls": True}
    _, res, _ = gatehouse.call(NL + "/set", {"create": {"new1": example}})
    err = res["notCreated"]["new1"]
    assert err["type"] == "invalidProperties"
    assert "bind" in err["properties"]
    assert "socketTosV4" in err["properties"] and "socketTtl" in err["properties"]
    assert "bind" in err["description"]
    assert res["created"] is None
    assert get_state(gatehouse) == before


def test_reference_update_example_is_refused(gatehouse, free_port):
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{free_port()}"])
    _, res, _ = gatehouse.call(NL + "/set", {"update": {lid: {"description": "Updated"}}})
    err = res["notUpdated"][lid]
    assert err["type"] == "invalidProperties"
    assert err["properties"] == ["description"]
    assert "description" in err["description"]


def test_bind_failure_is_refused_with_the_system_reason(gatehouse, free_port):
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        before = get_state(gatehouse)
        _, res, _ = gatehouse.call(NL + "/set", {"create": {"a": {
            "bind": [f"127.0.0.1:{port}"], "socketReusePort": False}}})
        err = res["notCreated"]["a"]
        assert err["type"] == "invalidProperties"
        assert err["properties"] == ["bind"]
        assert "in use" in err["description"].lower()
        assert get_state(gatehouse) == before
        _, got, _ = gatehouse.call(NL + "/get", {"ids": None})
        assert all(l["bind"] != [f"127.0.0.1:{port}"] for l in got["list"])


def test_bind_conflict_between_listeners(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(bind=[f"0.0.0.0:{port}"])
    _, res, _ = gatehouse.call(NL + "/set", {"create": {"b": {"bind": [f"[::]:{port}"]}}})
    assert res["notCreated"]["b"]["properties"] == ["bind"]
    assert "already bound" in res["notCreated"]["b"]["description"]


def test_update_rebinds_and_destroy_closes(gatehouse, free_port):
    p1, p2 = free_port(), free_port()
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{p1}"], useTls=False)
    assert listening(p1)
    _, res, _ = gatehouse.call(NL + "/set", {"update": {lid: {"bind": [f"127.0.0.1:{p2}"]}}})
    assert lid in res["updated"], res
    assert listening(p2)
    assert wait_closed(p1)
    _, res, _ = gatehouse.call(NL + "/set", {"destroy": [lid]})
    assert res["destroyed"] == [lid]
    assert wait_closed(p2)
    _, res, _ = gatehouse.call(NL + "/get", {"ids": [lid]})
    assert res["notFound"] == [lid]


def test_failed_update_leaves_the_listener_as_it_was(gatehouse, free_port):
    p1, busy = free_port(), free_port()
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{p1}"], useTls=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        _, res, _ = gatehouse.call(NL + "/set", {"update": {lid: {
            "bind": [f"127.0.0.1:{p1}", f"127.0.0.1:{busy}"]}}})
        assert res["notUpdated"][lid]["properties"] == ["bind"]
        assert listening(p1)
        # the same with a socket option that makes the engine rebuild the kept socket
        _, res, _ = gatehouse.call(NL + "/set", {"update": {lid: {
            "bind": [f"127.0.0.1:{p1}", f"127.0.0.1:{busy}"], "socketReusePort": False}}})
        assert res["notUpdated"][lid]["properties"] == ["bind"]
    assert listening(p1)
    _, res, _ = gatehouse.call(NL + "/get", {"ids": [lid], "properties": ["bind",
                                                                          "socketReusePort"]})
    assert res["list"][0]["bind"] == [f"127.0.0.1:{p1}"]
    assert res["list"][0]["socketReusePort"] is True


def test_creation_id_references_and_set_patches(gatehouse, free_port):
    p1, p2 = free_port(), free_port()
    status, resp = gatehouse.request([
        [NL + "/set", {"create": {"n1": {"name": "ref", "bind": {f"127.0.0.1:{p1}": True}}}}, "a"],
        [NL + "/set", {"update": {"#n1": {f"bind/127.0.0.1:{p2}": True,
                                          "overrideProxyTrustedNetworks/10.0.0.0~18": True,
                                          "tlsTimeout": "60s"}}}, "b"],
        [NL + "/get", {"ids": ["#n1"], "properties": ["bind", "overrideProxyTrustedNetworks"]},
         "c"],
        [NL + "/set", {"destroy": ["#n1", "#nope"]}, "d"],
    ])
    assert status == 200, resp
    a, b, c, d = [r[1] for r in resp["methodResponses"]]
    lid = a["created"]["n1"]["id"]
    assert b["updated"] == {lid: {"tlsTimeout": "1m"}}
    got = c["list"][0]
    assert got["id"] == lid
    assert got["bind"] == [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]
    assert got["overrideProxyTrustedNetworks"] == ["10.0.0.0/8"]
    assert d["destroyed"] == [lid]
    assert d["notDestroyed"]["#nope"]["type"] == "notFound"


def test_invalid_patch_and_not_found(gatehouse, free_port):
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{free_port()}"])
    _, res, _ = gatehouse.call(NL + "/set", {"update": {
        lid: {"socketTtl/x": 1}, "nope": {"socketNoDelay": False}}})
    assert res["notUpdated"][lid]["type"] == "invalidPatch"
    assert res["notUpdated"]["nope"]["type"] == "notFound"


def test_duplicate_name_already_exists(gatehouse, free_port):
    lid = gatehouse.create_listener(name="Mx", bind=[f"127.0.0.1:{free_port()}"])
    _, res, _ = gatehouse.call(NL + "/set", {"create": {"x": {
        "name": "mX", "bind": [f"127.0.0.1:{free_port()}"]}}})
    assert res["notCreated"]["x"]["type"] == "alreadyExists"
    assert res["notCreated"]["x"]["existingId"] == lid


def test_if_in_state(gatehouse, free_port):
    _, res, _ = gatehouse.call(NL + "/set", {"ifInState": "stale-1", "create": {
        "a": {"bind": [f"127.0.0.1:{free_port()}"]}}})
    assert res["type"] == "stateMismatch"
    st = get_state(gatehouse)
    _, res, _ = gatehouse.call(NL + "/set", {"ifInState": st, "create": {
        "a": {"bind": [f"127.0.0.1:{free_port()}"]}}})
    assert res["oldState"] == st and "a" in res["created"]


def test_query_changes_and_query_changes(gatehouse, free_port):
    ids = {}
    for name, proto in (("t1", "smtp"), ("t2", "imap"), ("t3", "smtp")):
        ids[name] = gatehouse.create_listener(name=name, protocol=proto,
                                              bind=[f"127.0.0.1:{free_port()}"])
    _, q, _ = gatehouse.call(NL + "/query", {"filter": {"protocol": "smtp"},
                                             "sort": [{"property": "name"}],
                                             "calculateTotal": True})
    assert q["ids"] == [ids["t1"], ids["t3"]] and q["total"] == 2
    assert q["queryState"] == get_state(gatehouse)
    _, q2, _ = gatehouse.call(NL + "/query", {"filter": {"operator": "OR", "conditions": [
        {"name": "T2"}, {"name": "t3"}]}, "sort": [{"property": "name", "isAscending": False}]})
    assert q2["ids"] == [ids["t3"], ids["t2"]]
    s0 = q["queryState"]
    gatehouse.call(NL + "/set", {"update": {ids["t1"]: {"protocol": "lmtp"}},
                                 "destroy": [ids["t3"]]})
    new = gatehouse.create_listener(name="t0", bind=[f"127.0.0.1:{free_port()}"])
    _, ch, _ = gatehouse.call(NL + "/changes", {"sinceState": s0})
    assert ch["oldState"] == s0 and ch["hasMoreChanges"] is False
    assert ch["created"] == [new] and ch["updated"] == [ids["t1"]]
    assert ch["destroyed"] == [ids["t3"]]
    _, qc, _ = gatehouse.call(NL + "/queryChanges", {
        "filter": {"protocol": "smtp"}, "sort": [{"property": "name"}],
        "sinceQueryState": s0})
    assert ids["t1"] in qc["removed"] and ids["t3"] in qc["removed"]
    assert qc["added"] == [{"id": new, "index": 0}]
    # replaying the splice on the old ids gives the new query
    old = list(q["ids"])
    old = [i for i in old if i not in qc["removed"]]
    for a in qc["added"]:
        old.insert(a["index"], a["id"])
    _, fresh, _ = gatehouse.call(NL + "/query", {"filter": {"protocol": "smtp"},
                                                 "sort": [{"property": "name"}]})
    assert old == fresh["ids"]
    _, bad, _ = gatehouse.call(NL + "/changes", {"sinceState": "garbage"})
    assert bad["type"] == "cannotCalculateChanges"


def test_get_properties_and_not_found(gatehouse, free_port):
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{free_port()}"])
    _, res, _ = gatehouse.call(NL + "/get", {"ids": [lid, lid, "zz"], "properties": ["name"]})
    assert res["list"] == [{"id": lid, "name": "smtp"}]
    assert res["notFound"] == ["zz"]
    name, res, _ = gatehouse.call(NL + "/get", {"properties": ["description"]})
    assert name == "error" and res["type"] == "invalidArguments"


def test_schema_served(gatehouse):
    import json
    status, _, body = gatehouse.http("GET", "/api/schema")
    assert status == 200
    schema = json.loads(body)
    props = {p["name"]: p for p in schema["types"][NL]["properties"]}
    assert props["bind"]["minItems"] == 1
    assert props["tlsTimeout"]["default"] == "1m"
    assert {e["value"] for e in props["protocol"]["enum"]} == {
        "smtp", "lmtp", "http", "imap", "pop3", "manageSieve"}
    assert schema["types"]["x:SystemSettings"]["singleton"] is True


def test_status_counts_live_connections(gatehouse, free_port):
    import json
    port = free_port()
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(100)  # the greeting: the session is live
        status, _, body = gatehouse.http("GET", "/api/status")
        assert status == 200
        live = json.loads(body)["listeners"]
        assert live[lid]["live"] == 1
    _, res, _ = gatehouse.call(NL + "/set", {"destroy": [lid]})
    _, _, body = gatehouse.http("GET", "/api/status")
    assert lid not in json.loads(body)["listeners"]


def test_sighup_keeps_everything(gatehouse, free_port):
    import signal
    port = free_port()
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{port}"], useTls=False)
    gatehouse.call("x:SystemSettings/set", {"update": {"singleton": {
        "defaultHostname": "hup.example.test"}}})
    gatehouse.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100).decode().startswith("220 hup.example.test")
    _, res, _ = gatehouse.call(NL + "/get", {"ids": [lid]})
    assert res["list"][0]["id"] == lid
    assert "reload" in gatehouse.read_log()


def test_concurrent_sets_with_the_same_if_in_state(gatehouse, free_port):
    """Exactly one of several /set calls carrying the same ifInState succeeds."""
    import threading
    st = get_state(gatehouse)
    results = []

    def attempt():
        _, res, _ = gatehouse.call(NL + "/set", {"ifInState": st, "create": {
            "a": {"bind": [f"127.0.0.1:{free_port()}"]}}})
        results.append(res)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if r.get("created")]
    assert len(ok) == 1, results
    assert all(r.get("type") == "stateMismatch" for r in results if not r.get("created"))
