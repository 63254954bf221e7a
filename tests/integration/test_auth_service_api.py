"""x:AuthService through JMAP and gatehouse-cli: defaults, URL and header rules, listeners
(mail only, at least one that exists, one service per listener), permissions, and the
schema the console and the CLI are built from."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("GATEHOUSE_CLI", os.path.join(ROOT, "build", "gatehouse-cli"))


def set_auth(gh, **kw):
    return gh.call("x:AuthService/set", kw)[1]


def imap_listener(gh, free_port, name="imap-in", protocol="imap"):
    gh.create_listener(name=name, protocol=protocol, bind=[f"127.0.0.1:{free_port()}"],
                       useTls=False)


def test_create_defaults_get_and_destroy(gatehouse, free_port):
    imap_listener(gatehouse, free_port)
    res = set_auth(gatehouse, create={"a": {"url": "http://127.0.0.1:9/auth",
                                            "listeners": ["imap-in"]}})
    assert "a" in res.get("created", {}), res
    sid = res["created"]["a"]["id"]
    got = gatehouse.call("x:AuthService/get", {"ids": [sid]})[1]["list"][0]
    assert got == {"id": sid, "name": "auth", "url": "http://127.0.0.1:9/auth",
                   "timeout": "10s", "headers": [], "listeners": ["imap-in"],
                   "forwarding": "proxyV2", "xclient": True, "passErrorMessage": False}
    res = set_auth(gatehouse, update={sid: {"timeout": "2500ms", "forwarding": "none",
                                            "headers": ["X-Auth-Key: s3cret"]}})
    assert sid in res.get("updated", {}), res
    got = gatehouse.call("x:AuthService/get", {"ids": [sid]})[1]["list"][0]
    assert (got["timeout"], got["forwarding"], got["headers"]) == \
        ("2500ms", "none", ["X-Auth-Key: s3cret"])
    q = gatehouse.call("x:AuthService/query", {"filter": {"name": "auth"}})[1]
    assert q["ids"] == [sid]
    res = set_auth(gatehouse, destroy=[sid])
    assert res.get("destroyed") == [sid], res


def test_invalid_values_are_refused(gatehouse, free_port):
    imap_listener(gatehouse, free_port)
    imap_listener(gatehouse, free_port, name="web", protocol="http")
    bad = {
        "ftp": {"url": "ftp://x/auth", "listeners": ["imap-in"]},
        "nohost": {"url": "http:///auth", "listeners": ["imap-in"]},
        "space": {"url": "http://a b/", "listeners": ["imap-in"]},
        "hdr": {"url": "http://h/", "listeners": ["imap-in"], "headers": ["NoColon"]},
        "crlf": {"url": "http://h/", "listeners": ["imap-in"], "headers": ["X-A: b\r\nX-B: c"]},
        "own": {"url": "http://h/", "listeners": ["imap-in"], "headers": ["Auth-User: root"]},
        "none": {"url": "http://h/", "listeners": []},
        "nolistener": {"url": "http://h/"},
        "http": {"url": "http://h/", "listeners": ["web"]},
        "ghost": {"url": "http://h/", "listeners": ["no-such-listener"]},
        "timeout": {"url": "http://h/", "listeners": ["imap-in"], "timeout": "2h"},
        "fwd": {"url": "http://h/", "listeners": ["imap-in"], "forwarding": "proxyV3"},
    }
    res = set_auth(gatehouse, create=bad)
    assert not res.get("created"), res
    for key in bad:
        assert res["notCreated"][key]["type"] == "invalidProperties", (key, res)
    assert "listeners" in res["notCreated"]["http"]["properties"]
    assert "url" in res["notCreated"]["ftp"]["properties"]


def test_one_service_per_listener_and_unique_names(gatehouse, free_port):
    imap_listener(gatehouse, free_port)
    imap_listener(gatehouse, free_port, name="smtp-in", protocol="smtp")
    res = set_auth(gatehouse, create={"a": {"name": "one", "url": "https://auth.example/",
                                            "listeners": ["imap-in", "smtp-in"]}})
    assert "a" in res.get("created", {}), res
    res = set_auth(gatehouse, create={"b": {"name": "two", "url": "https://auth.example/",
                                            "listeners": ["IMAP-IN"]},
                                      "c": {"name": "ONE", "url": "https://auth.example/",
                                            "listeners": ["smtp-in"]}})
    assert "already served" in res["notCreated"]["b"]["description"], res
    assert res["notCreated"]["c"]["type"] == "alreadyExists", res


def test_permissions_listed_and_schema_served(gatehouse):
    status, _, raw = gatehouse.http("GET", "/api/schema")
    assert status == 200
    schema = json.loads(raw)
    text = json.dumps(schema)
    for perm in ("sysAuthServiceGet", "sysAuthServiceQuery", "sysAuthServiceCreate",
                 "sysAuthServiceUpdate", "sysAuthServiceDestroy"):
        assert perm in text
    t = schema["types"]["x:AuthService"]
    assert t["cliName"] == "auth-service"
    assert t["nav"] == ["Settings", "Authentication", "Auth services"]


def test_api_key_without_permission_is_refused(gatehouse, free_port):
    imap_listener(gatehouse, free_port)
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {
        "name": "reader", "permissions": ["sysAuthServiceGet", "sysDestinationCreate"]}}})
    secret = res["created"]["k"]["secret"]
    _, res, _ = gatehouse.call("x:AuthService/set", {"create": {"a": {
        "url": "http://h/", "listeners": ["imap-in"]}}}, token=secret)
    assert res["notCreated"]["a"]["type"] == "forbidden", res
    name, res, _ = gatehouse.call("x:AuthService/get", {"ids": None}, token=secret)
    assert name == "x:AuthService/get", res


def run_cli(gh, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["GATEHOUSE_URL"] = gh.url
    env["GATEHOUSE_TOKEN"] = gh.secret
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_auth_service(gatehouse, free_port):
    imap_listener(gatehouse, free_port)
    r = run_cli(gatehouse, "create", "auth-service", "--field", "url=http://127.0.0.1:9/a",
                "--field", "listeners=imap-in", "--field", "passErrorMessage=true")
    assert r.returncode == 0, r.stderr
    r = run_cli(gatehouse, "query", "auth-service", "--json")
    assert r.returncode == 0, r.stderr
    [obj] = json.loads(r.stdout)
    assert obj["listeners"] == ["imap-in"] and obj["passErrorMessage"] is True
