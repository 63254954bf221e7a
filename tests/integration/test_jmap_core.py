"""JMAP core against the real daemon (RFC 8620; research/jmap-checklist.md sections A-H, P):
authentication, the session resource, request-level problems, the response object, method
dispatch and method errors, result references, creation ids and Core/echo."""
import base64
import http.client
import json
import threading
import urllib.parse

from conftest import USING

CORE = "urn:ietf:params:jmap:core"
NL = "x:NetworkListener"
PROBLEM = "urn:ietf:params:jmap:error:"


def post(d, body, headers=None, path="/api", auth=True):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    status, hdrs, raw = d.http("POST", path, body, h, auth=auth)
    return status, hdrs, raw


def problem_of(status, hdrs, raw, want_status, want_type):
    assert status == want_status, (status, raw)
    assert hdrs["content-type"].startswith("application/problem+json"), hdrs
    p = json.loads(raw)
    assert p["type"] == PROBLEM + want_type if not want_type.startswith("about") else True, p
    assert p["status"] == want_status
    assert isinstance(p.get("detail"), str) and p["detail"]
    return p


def responses(d, calls, using=USING, **kw):
    status, resp = d.request(calls, using=using, **kw)
    assert status == 200, resp
    return resp["methodResponses"]


def listener_count(d):
    _, res, _ = d.call(NL + "/get", {"ids": None, "properties": ["name"]})
    return len(res["list"])


# ---- A. endpoints and authentication ----


def test_session_and_api_need_credentials_and_401s_are_identical(gatehouse, free_port):
    d = gatehouse
    s1, h1, b1 = d.http("GET", "/jmap/session", auth=False)
    s2, h2, b2 = d.http("GET", "/jmap/session", headers={"Authorization": "Bearer wrong"})
    assert s1 == s2 == 401
    assert "Bearer" in h1["www-authenticate"] and "Basic" in h1["www-authenticate"]
    assert h1["www-authenticate"] == h2["www-authenticate"]
    assert b1 == b2
    assert h1["content-type"].startswith("application/problem+json")
    s3, _, b3 = post(d, {"using": USING, "methodCalls": []}, auth=False)
    s4, _, b4 = post(d, {"using": USING, "methodCalls": []}, {"Authorization": "Bearer nope"})
    s5, _, _ = post(d, {"using": USING, "methodCalls": []}, {"Authorization": d.basic("admin", "nope")})
    assert s3 == s4 == s5 == 401 and b3 == b4
    # Basic with the administrator secret works, as does Bearer
    s6, _, _ = post(d, {"using": USING, "methodCalls": []}, {"Authorization": d.basic("admin", d.secret)})
    assert s6 == 200


def test_get_api_is_405_and_options_204(gatehouse):
    s, h, _ = gatehouse.http("GET", "/api")
    assert s == 405 and "POST" in h["allow"]
    s, h, _ = gatehouse.http("OPTIONS", "/api")
    assert s == 204
    assert "access-control-allow-origin" not in h


def test_api_and_jmap_paths_behave_the_same(gatehouse):
    body = {"using": USING, "methodCalls": [["Core/echo", {"x": 1}, "c"]]}
    for path in ("/api", "/jmap"):
        s, h, raw = post(gatehouse, body, path=path)
        assert s == 200
        assert h["content-type"].startswith("application/json")
        assert json.loads(raw)["methodResponses"] == [["Core/echo", {"x": 1}, "c"]]


def test_session_is_not_cacheable(gatehouse):
    s, h, _ = gatehouse.http("GET", "/jmap/session")
    assert s == 200 and "no-store" in h["cache-control"]


def test_well_known_redirects_same_origin(gatehouse):
    c = http.client.HTTPConnection("127.0.0.1", gatehouse.http_port, timeout=5)
    c.request("GET", "/.well-known/jmap", headers={"Authorization": "Bearer " + gatehouse.secret})
    r = c.getresponse()
    r.read()
    assert r.status in (301, 302, 307, 308)
    assert r.getheader("Location") == "/jmap/session"
    assert "no-store" in r.getheader("Cache-Control")
    c.request("GET", r.getheader("Location"), headers={"Authorization": "Bearer " + gatehouse.secret})
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["username"] == "admin"
    c.close()


# ---- B. session ----


def session(d, headers=None):
    s, _, raw = d.http("GET", "/jmap/session", headers=headers)
    assert s == 200, raw
    return json.loads(raw)


def test_session_shape(gatehouse):
    s = session(gatehouse)
    for k in ("capabilities", "accounts", "primaryAccounts", "username", "apiUrl", "downloadUrl",
              "uploadUrl", "eventSourceUrl", "state"):
        assert k in s, k
    core = s["capabilities"][CORE]
    for k in ("maxSizeUpload", "maxConcurrentUpload", "maxSizeRequest", "maxConcurrentRequests",
              "maxCallsInRequest", "maxObjectsInGet", "maxObjectsInSet"):
        assert isinstance(core[k], int) and core[k] >= 0, k
    assert core["maxSizeRequest"] >= 10_000_000 and core["maxCallsInRequest"] >= 16
    assert core["collationAlgorithms"] and all(isinstance(x, str) for x in core["collationAlgorithms"])
    assert "urn:stalwart:jmap" in s["capabilities"]
    assert len(s["accounts"]) == 1
    aid, acct = next(iter(s["accounts"].items()))
    assert isinstance(acct["name"], str) and acct["isPersonal"] is True and acct["isReadOnly"] is False
    assert "urn:stalwart:jmap" in acct["accountCapabilities"]
    assert s["primaryAccounts"] == {"urn:stalwart:jmap": aid}
    assert s["username"] == "admin"


def test_session_urls_are_absolute_templates(gatehouse):
    s = session(gatehouse)
    want = {"apiUrl": [], "downloadUrl": ["accountId", "blobId", "type", "name"],
            "uploadUrl": ["accountId"], "eventSourceUrl": ["types", "closeafter", "ping"]}
    for key, variables in want.items():
        u = urllib.parse.urlsplit(s[key])
        assert u.scheme == "http" and u.netloc == f"127.0.0.1:{gatehouse.http_port}", s[key]
        for v in variables:
            assert s[key].count("{" + v + "}") == 1, (key, v)
    assert urllib.parse.urlsplit(s["downloadUrl"]).query.find("{type}") >= 0


def test_session_host_header_only_when_well_formed(gatehouse):
    s = session(gatehouse, {"Host": "mgmt.example:8443"})
    assert s["apiUrl"] == "http://mgmt.example:8443/api"
    # a Host that is not host[:port] never reaches the URLs
    c = http.client.HTTPConnection("127.0.0.1", gatehouse.http_port, timeout=5)
    c.putrequest("GET", "/jmap/session", skip_host=True)
    c.putheader("Host", "evil.example/x?y")
    c.putheader("Authorization", "Bearer " + gatehouse.secret)
    c.endheaders()
    r = c.getresponse()
    s = json.loads(r.read())
    assert s["apiUrl"] == f"http://127.0.0.1:{gatehouse.http_port}/api"
    c.close()


def test_blob_urls_answer_with_a_problem(gatehouse):
    for method, path in (("GET", "/jmap/download/a/b/n?accept=text/plain"), ("POST", "/jmap/upload/a/")):
        s, h, raw = gatehouse.http(method, path, body=b"x" if method == "POST" else None)
        assert 400 <= s < 500
        assert h["content-type"].startswith("application/problem+json")


def test_session_state_matches_and_follows_permissions(gatehouse):
    d = gatehouse
    s = session(d)
    _, resp = d.request([["Core/echo", {}, "e"]])
    assert resp["sessionState"] == s["state"]
    # an API key: its session state changes when its permissions change
    _, res, _ = d.call("x:ApiKey/set", {"create": {"k": {"name": "ops", "permissions": ["sysNetworkListenerGet"]}}})
    key = res["created"]["k"]
    auth = {"Authorization": "Bearer " + key["secret"]}
    s1 = session(d, auth)
    assert s1["username"] == "ops"
    assert s1["accounts"][next(iter(s1["accounts"]))]["isReadOnly"] is True
    _, r1 = d.request([["Core/echo", {}, "e"]], token=key["secret"])
    assert r1["sessionState"] == s1["state"]
    d.call("x:ApiKey/set", {"update": {key["id"]: {"permissions": ["sysNetworkListenerGet", "sysNetworkListenerUpdate"]}}})
    s2 = session(d, auth)
    assert s2["state"] != s1["state"]
    assert s2["accounts"][next(iter(s2["accounts"]))]["isReadOnly"] is False


# ---- C. request-level errors ----


def test_not_json(gatehouse):
    d = gatehouse
    valid = json.dumps({"using": USING, "methodCalls": [["Core/echo", {}, "c"]]})
    problem_of(*post(d, "{not json"), 400, "notJSON")
    problem_of(*post(d, valid, {"Content-Type": "text/plain"}), 400, "notJSON")
    s, _, _ = post(d, valid, {"Content-Type": "application/json; charset=utf-8"})
    assert s == 200
    problem_of(*post(d, b'{"using":["\xff"],"methodCalls":[]}'), 400, "notJSON")
    problem_of(*post(d, '{"using":[],"using":[],"methodCalls":[]}'), 400, "notJSON")
    problem_of(*post(d, '{"using":["\\ud800"],"methodCalls":[]}'), 400, "notJSON")
    # deep nesting: a problem, never a crash
    problem_of(*post(d, "[" * 100000), 400, "notJSON")
    assert post(d, valid)[0] == 200


def test_not_request(gatehouse):
    bodies = ['[]', '"x"', '{}', json.dumps({"using": USING}), '{"methodCalls":[]}',
              json.dumps({"using": CORE, "methodCalls": []}), '{"using":[1],"methodCalls":[]}',
              json.dumps({"using": USING, "methodCalls": "x"}),
              json.dumps({"using": USING, "methodCalls": [["Core/echo", {}]]}),
              json.dumps({"using": USING, "methodCalls": [["Core/echo", [], "c"]]}),
              json.dumps({"using": USING, "methodCalls": [[1, {}, "c"]]}),
              json.dumps({"using": USING, "methodCalls": [["Core/echo", {}, 7]]}),
              json.dumps({"using": USING, "methodCalls": [], "createdIds": "bogus"}),
              json.dumps({"using": USING, "methodCalls": [], "createdIds": {"k": 5}})]
    for b in bodies:
        problem_of(*post(gatehouse, b), 400, "notRequest")


def test_unknown_capability_executes_nothing(gatehouse, free_port):
    d = gatehouse
    before = listener_count(d)
    body = {"using": USING + ["urn:example:nope"],
            "methodCalls": [[NL + "/set", {"create": {"c": {"bind": [f"127.0.0.1:{free_port()}"]}}}, "s"]]}
    p = problem_of(*post(d, body), 400, "unknownCapability")
    assert "urn:example:nope" in p["detail"]
    assert listener_count(d) == before
    # jmap-jam 0.13.0 sent using as single characters
    problem_of(*post(d, {"using": list(CORE), "methodCalls": []}), 400, "unknownCapability")


def test_limit_max_calls_in_request(gatehouse):
    n = session(gatehouse)["capabilities"][CORE]["maxCallsInRequest"]
    body = {"using": USING, "methodCalls": [["Core/echo", {}, str(i)] for i in range(n + 1)]}
    p = problem_of(*post(gatehouse, body), 400, "limit")
    assert p["limit"] == "maxCallsInRequest"
    body["methodCalls"].pop()
    assert post(gatehouse, body)[0] == 200


def test_limit_max_size_request(gatehouse):
    n = session(gatehouse)["capabilities"][CORE]["maxSizeRequest"]
    big = '{"using":[],"methodCalls":[],"pad":"' + "x" * (n + 1) + '"}'
    s, h, raw = post(gatehouse, big)
    assert s in (400, 413)
    assert json.loads(raw)["limit"] == "maxSizeRequest"
    assert json.loads(raw)["type"] == PROBLEM + "limit"


def test_unknown_members_ignored_and_empty_calls(gatehouse):
    s, _, raw = post(gatehouse, {"using": USING, "methodCalls": [], "x-extra": True})
    assert s == 200
    r = json.loads(raw)
    assert r["methodResponses"] == [] and isinstance(r["sessionState"], str)
    assert "createdIds" not in r


def test_core_must_be_in_using(gatehouse):
    r = responses(gatehouse, [["Core/echo", {}, "c"]], using=[])
    assert r == [["error", {"type": "unknownMethod", "description": r[0][1].get("description")}, "c"]]
    assert r[0][1]["type"] == "unknownMethod"


# ---- D. response object ----


def test_responses_in_order_with_their_ids(gatehouse):
    r = responses(gatehouse, [[NL + "/get", {"ids": []}, "c1"], ["Core/echo", {"x": 1}, "c2"],
                              ["Fake/nope", {}, "c3"]])
    assert [x[2] for x in r] == ["c1", "c2", "c3"]
    assert r[0][0] == NL + "/get"
    assert r[1] == ["Core/echo", {"x": 1}, "c2"]
    assert r[2][0] == "error" and r[2][1]["type"] == "unknownMethod"


def test_method_error_keeps_going_and_http_200(gatehouse):
    r = responses(gatehouse, [["Fake/x", {}, "a"], ["Core/echo", {"k": 1}, "b"]])
    assert r[0][0] == "error" and r[0][1]["type"] == "unknownMethod"
    assert r[1] == ["Core/echo", {"k": 1}, "b"]


def test_created_ids_in_and_out(gatehouse, free_port):
    d = gatehouse
    calls = [[NL + "/set", {"create": {"c1": {"bind": [f"127.0.0.1:{free_port()}"]}}}, "s"]]
    _, resp = d.request(calls, created_ids={"old": "L1"})
    new_id = resp["methodResponses"][0][1]["created"]["c1"]["id"]
    assert resp["createdIds"] == {"old": "L1", "c1": new_id}
    calls = [[NL + "/set", {"create": {"c2": {"bind": [f"127.0.0.1:{free_port()}"]}}}, "s"]]
    _, resp = d.request(calls)
    assert "createdIds" not in resp
    # a creation id resolves in a later call of the same request
    _, resp = d.request([[NL + "/set", {"create": {"n1": {"bind": [f"127.0.0.1:{free_port()}"]}}}, "a"],
                         [NL + "/set", {"destroy": ["#n1"]}, "b"]])
    created = resp["methodResponses"][0][1]["created"]["n1"]["id"]
    assert resp["methodResponses"][1][1]["destroyed"] == [created]


# ---- E. method processing and method errors ----


def test_unknown_methods_and_strict_using(gatehouse):
    r = responses(gatehouse, [[NL + "/frobnicate", {}, "a"], [NL + "/copy", {}, "b"],
                              ["PushSubscription/get", {}, "c"], ["Blob/copy", {}, "d"]])
    assert [x[1]["type"] for x in r] == ["unknownMethod"] * 4
    r = responses(gatehouse, [[NL + "/get", {}, "c"]], using=[CORE])
    assert r[0][0] == "error" and r[0][1]["type"] == "unknownMethod"


def test_account_id_rules(gatehouse):
    aid = next(iter(session(gatehouse)["accounts"]))
    r = responses(gatehouse, [[NL + "/get", {"accountId": "nope"}, "a"], [NL + "/get", {"accountId": 5}, "b"],
                              [NL + "/get", {"accountId": aid, "ids": []}, "c"], [NL + "/get", {"ids": []}, "d"]])
    assert r[0][1]["type"] == "accountNotFound"
    assert r[1][1]["type"] == "invalidArguments"
    assert r[2][0] == NL + "/get" and r[2][1]["accountId"] == aid
    assert r[3][0] == NL + "/get" and r[3][1]["accountId"] == aid


def test_nul_in_arguments_is_refused_not_truncated(gatehouse):
    r = responses(gatehouse, [[NL + "/get", {"ids": ["a\u0000b"]}, "a"], ["Core/echo", {"s": "a\u0000b"}, "b"]])
    assert r[0][1]["type"] == "invalidArguments"
    assert r[1][1] == {"s": "a\u0000b"}


def test_nul_in_method_name_call_id_and_references_is_refused(gatehouse, free_port):
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{free_port()}"])
    r = responses(gatehouse, [
        [NL + "/get\u0000garbage", {"ids": [lid]}, "a"],
        [NL + "/get", {"ids": [lid]}, "b\u0000c"],
        [NL + "/get", {"ids": [lid]}, "d"],
        [NL + "/get", {"#ids": {"resultOf": "d\u0000", "name": NL + "/get", "path": "/list/*/id"}},
         "e"],
        [NL + "/set", {"destroy": [lid + "\u0000"]}, "f"]])
    assert [x[0] for x in r] == ["error", "error", NL + "/get", "error", "error"], r
    assert r[0][1]["type"] == "invalidArguments" and r[0][2] == "a"
    assert r[1][1]["type"] == "invalidArguments" and r[1][2] == "b\u0000c"
    assert r[3][1]["type"] == "invalidResultReference"
    assert r[4][1]["type"] == "invalidArguments"
    _, res, _ = gatehouse.call(NL + "/get", {"ids": [lid]})
    assert res["list"][0]["id"] == lid  # not destroyed


def test_nul_in_using_is_an_unknown_capability(gatehouse):
    status, hdrs, raw = post(gatehouse, {"using": [CORE + "\u0000x"],
                                         "methodCalls": [["Core/echo", {}, "a"]]})
    problem_of(status, hdrs, raw, 400, "unknownCapability")
    status, hdrs, raw = post(gatehouse, {"using": [CORE, "urn:stalwart:jmap\u0000"],
                                         "methodCalls": [[NL + "/get", {}, "a"]]})
    problem_of(status, hdrs, raw, 400, "unknownCapability")


def test_read_only_credential_gets_account_read_only(gatehouse):
    d = gatehouse
    _, res, _ = d.call("x:ApiKey/set", {"create": {"k": {"name": "ro", "permissions": ["sysNetworkListenerGet"]}}})
    tok = res["created"]["k"]["secret"]
    _, resp = d.request([[NL + "/get", {"ids": []}, "g"], [NL + "/set", {}, "s"]], token=tok)
    r = resp["methodResponses"]
    assert r[0][0] == NL + "/get"
    assert r[1][0] == "error" and r[1][1]["type"] == "accountReadOnly"


def test_if_in_state_is_atomic_under_concurrency(gatehouse, free_port):
    d = gatehouse
    _, res, _ = d.call(NL + "/get", {"ids": []})
    state = res["state"]
    results = []

    def attempt():
        calls = [[NL + "/set", {"ifInState": state, "create": {"c": {"bind": [f"127.0.0.1:{free_port()}"]}}}, "s"]]
        status, resp = d.request(calls)
        results.append(resp["methodResponses"][0])

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if r[0] == NL + "/set"]
    bad = [r for r in results if r[0] == "error"]
    assert len(ok) == 1, results
    assert all(r[1]["type"] == "stateMismatch" for r in bad) and len(bad) == 3


# ---- F. result references ----


def make_three(d, free_port):
    ports = [free_port() for _ in range(3)]
    _, res, _ = d.call(NL + "/set", {"create": {
        "a": {"name": "t1", "protocol": "smtp", "bind": [f"127.0.0.1:{ports[0]}"]},
        "b": {"name": "t2", "protocol": "imap", "bind": [f"127.0.0.1:{ports[1]}"]},
        "c": {"name": "t3", "protocol": "smtp", "bind": [f"127.0.0.1:{ports[2]}"]}}})
    return {k: v["id"] for k, v in res["created"].items()}, ports


def test_reference_query_then_get(gatehouse, free_port):
    ids, _ = make_three(gatehouse, free_port)
    r = responses(gatehouse, [
        [NL + "/query", {"filter": {"protocol": "smtp"}}, "q"],
        [NL + "/get", {"#ids": {"resultOf": "q", "name": NL + "/query", "path": "/ids"}, "properties": ["name"]}, "g"]])
    assert r[1][0] == NL + "/get"
    assert sorted(x["id"] for x in r[1][1]["list"]) == sorted([ids["a"], ids["c"]])
    assert all(set(x) == {"id", "name"} for x in r[1][1]["list"])


def test_reference_with_star_flattens(gatehouse, free_port):
    ids, ports = make_three(gatehouse, free_port)
    r = responses(gatehouse, [
        [NL + "/get", {"ids": [ids["a"], ids["b"], ids["c"]], "properties": ["bind"]}, "g"],
        ["Core/echo", {"#all": {"resultOf": "g", "name": NL + "/get", "path": "/list/*/bind"},
                       "#first": {"resultOf": "g", "name": NL + "/get", "path": "/list/0/id"}}, "e"]])
    assert r[1][0] == "Core/echo"
    assert sorted(r[1][1]["all"]) == sorted(f"127.0.0.1:{p}" for p in ports)
    assert r[1][1]["first"] in ids.values()


def test_reference_failures(gatehouse):
    base = [["Core/echo", {}, "a"], [NL + "/query", {}, "q"], ["Fake/x", {}, "bad"], [NL + "/query", {}, "a"]]
    refs = [{"resultOf": "nope", "name": NL + "/query", "path": "/ids"},
            {"resultOf": "q", "name": NL + "/get", "path": "/ids"},
            {"resultOf": "q", "name": NL + "/query", "path": "/nope"},
            {"resultOf": "q", "name": NL + "/query", "path": "ids"},
            {"resultOf": "bad", "name": "Fake/x", "path": "/type"},
            {"resultOf": "later", "name": "Core/echo", "path": ""},
            {"resultOf": "a", "name": NL + "/query", "path": "/ids"},
            {"resultOf": "q", "path": "/ids"},
            "q"]
    for ref in refs:
        r = responses(gatehouse, base + [[NL + "/get", {"#ids": ref}, "g"], ["Core/echo", {}, "later"]])
        assert r[4][0] == "error" and r[4][1]["type"] == "invalidResultReference", (ref, r[4])
    r = responses(gatehouse, [[NL + "/query", {}, "q"],
                              [NL + "/get", {"ids": [], "#ids": {"resultOf": "q", "name": NL + "/query", "path": "/ids"}}, "g"]])
    assert r[1][1]["type"] == "invalidArguments"
    # resolved, but the wrong type for the argument: the method's invalidArguments
    r = responses(gatehouse, [[NL + "/get", {"ids": []}, "g0"],
                              [NL + "/get", {"#ids": {"resultOf": "g0", "name": NL + "/get", "path": "/state"}}, "g"]])
    assert r[1][1]["type"] == "invalidArguments"


def test_reference_on_any_argument(gatehouse):
    r = responses(gatehouse, [[NL + "/get", {"ids": []}, "g"],
                              [NL + "/changes", {"#sinceState": {"resultOf": "g", "name": NL + "/get", "path": "/state"}}, "ch"]])
    assert r[1][0] == NL + "/changes", r[1]
    assert r[1][1]["oldState"] == r[0][1]["state"]


# ---- G. Core/echo ----


def test_echo_returns_its_arguments_exactly(gatehouse):
    args = {"hello": True, "high": 5, "n": None, "a": [1, "two", False], "o": {"d": {"e": "v"}},
            "max": 9007199254740991}
    s, _, raw = post(gatehouse, {"using": USING, "methodCalls": [["Core/echo", args, "b3ff"]]})
    assert s == 200
    assert json.loads(raw)["methodResponses"] == [["Core/echo", args, "b3ff"]]
    assert b"9007199254740991" in raw and b"42.0" not in raw
    s, _, raw = post(gatehouse, '{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"i":42},"c"]]}')
    assert b'{"i":42}' in raw
    r = responses(gatehouse, [["Core/echo", {}, "e"]])
    assert r == [["Core/echo", {}, "e"]]


# ---- P. resource limits ----


def test_bad_input_does_not_disturb_the_daemon(gatehouse):
    d = gatehouse
    for body in ("[" * 100000, "{" * 5000, '{"using":' + '[' * 3000 + ']' * 3000 + '}', "\x00\x01\x02"):
        s, _, _ = post(d, body)
        assert 400 <= s < 500
    r = responses(d, [["Core/echo", {"still": "here"}, "e"]])
    assert r[0][1] == {"still": "here"}


def test_api_key_by_bearer_and_by_basic_with_its_name(gatehouse):
    d = gatehouse
    _, res, _ = d.call("x:ApiKey/set", {"create": {"k": {"name": "monitoring", "permissions": ["sysNetworkListenerGet"]}}})
    secret = res["created"]["k"]["secret"]
    for auth in ("Bearer " + secret, d.basic("monitoring", secret)):
        s = session(d, {"Authorization": auth})
        assert s["username"] == "monitoring"
    status, _, _ = d.http("GET", "/jmap/session", headers={"Authorization": d.basic("someone-else", secret)})
    assert status == 401
