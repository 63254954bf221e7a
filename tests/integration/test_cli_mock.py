"""gatehouse-cli against a small in-process JMAP server (no daemon needed).

The mock serves a made-up schema (x:Widget, x:Knobs) so these tests show the client is
driven by the served schema alone, and records every request so the exact JSON the client
sends (typed --field values, filters, paging, batching) can be checked. test_cli.py runs the
same commands against the real daemon.
"""
import base64
import json
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("GATEHOUSE_CLI", os.path.join(ROOT, "build", "gatehouse-cli"))
TOKEN = "mock-token"


def prop(name, type_, group="Main", **kw):
    p = {"name": name, "type": type_, "list": False, "nullable": False, "required": False,
         "mutability": "mutable", "label": kw.pop("label", name.capitalize()), "group": group}
    p.update(kw)
    return p


SCHEMA = {"types": {
    "x:Widget": {
        "name": "Widget", "cliName": "widget", "label": "Widget", "singleton": False,
        "permissionPrefix": "sysWidget", "groups": ["Main", "Tuning"],
        "listColumns": ["name", "kind", "ports"],
        "properties": [
            prop("id", "Id", mutability="serverSet", label="Id"),
            prop("name", "String", filter="text", sortable=True, mutability="createOnly",
                 description="Unique name", rule="1-64 characters"),
            prop("kind", "Enum", filter="equals", default="alpha",
                 enum=[{"value": "alpha", "label": "Alpha"},
                       {"value": "betaGamma", "label": "Beta gamma"}]),
            prop("ports", "SocketAddr", list=True, required=True, minItems=1, default=[],
                 label="Ports"),
            prop("enabled", "Boolean", default=True, label="Enabled"),
            prop("limit", "UnsignedInt", group="Tuning", nullable=True, default=8192, min=1,
                 label="Limit"),
            prop("timeout", "Duration", group="Tuning", nullable=True, default="1m",
                 label="Timeout"),
            prop("masks", "IpMask", group="Tuning", list=True, default=[], label="Masks"),
            prop("modes", "Enum", group="Tuning", list=True, default=[], label="Modes",
                 enum=[{"value": "alpha", "label": "Alpha"},
                       {"value": "betaGamma", "label": "Beta gamma"}]),
            prop("pem", "Text", group="Tuning", nullable=True, label="PEM"),
        ]},
    "x:Knobs": {
        "name": "Knobs", "cliName": "knobs", "label": "Knobs", "singleton": True,
        "permissionPrefix": "sysKnobs", "groups": ["Main"], "listColumns": [],
        "properties": [prop("id", "Id", mutability="serverSet"),
                       prop("level", "UnsignedInt", label="Level")]},
}}


class Mock:
    """In-memory objects behind a JMAP-ish API; max_get/max_set small to force paging."""

    def __init__(self):
        self.objects = {"x:Widget": {}, "x:Knobs": {"singleton": {"id": "singleton", "level": 3}}}
        self.calls = []       # (method, args) of every method call received
        self.hosts = set()    # Host headers seen
        self.next_id = 1
        self.method_error = None  # {"type": ...} to answer every call with
        self.max_get = 2
        self.max_set = 2
        self.no_session = False  # answer /jmap/session with 404, like a web server would

    def add(self, **obj):
        oid = f"w{self.next_id}"
        self.next_id += 1
        self.objects["x:Widget"][oid] = dict(obj, id=oid)
        return oid

    def handle(self, method, args):
        self.calls.append((method, args))
        if self.method_error:
            return "error", self.method_error
        tname, verb = method.split("/")
        store = self.objects[tname]
        if verb == "get":
            ids = args.get("ids") or list(store)
            props = args.get("properties")
            found = [store[i] for i in ids if i in store]
            if props:
                found = [{k: v for k, v in o.items() if k in props or k == "id"} for o in found]
            return method, {"list": found, "notFound": [i for i in ids if i not in store]}
        if verb == "query":
            items = sorted(store.values(), key=lambda o: o.get("name", ""))
            items = [o for o in items if self.matches(o, args.get("filter"))]
            pos, lim = args.get("position", 0), args.get("limit", 1000)
            return method, {"ids": [o["id"] for o in items[pos:pos + lim]], "position": pos,
                            "total": len(items), "queryState": "s"}
        res = {}
        for cid, obj in (args.get("create") or {}).items():
            bad = [k for k in obj if k not in {p["name"] for p in SCHEMA["types"][tname]["properties"]}]
            if bad:
                res.setdefault("notCreated", {})[cid] = {
                    "type": "invalidProperties", "properties": bad, "description": "unknown"}
            else:
                res.setdefault("created", {})[cid] = {"id": self.add(**obj)}
        for oid, patch in (args.get("update") or {}).items():
            if oid not in store:
                res.setdefault("notUpdated", {})[oid] = {"type": "notFound"}
            else:
                store[oid].update(patch)
                res.setdefault("updated", {})[oid] = None
        for oid in args.get("destroy") or []:
            if store.pop(oid, None) is None:
                res.setdefault("notDestroyed", {})[oid] = {
                    "type": "notFound", "description": f"no object {oid}"}
            else:
                res.setdefault("destroyed", []).append(oid)
        return method, res

    @staticmethod
    def matches(obj, f):
        if not f:
            return True
        if "operator" in f:
            return all(Mock.matches(obj, c) for c in f["conditions"])
        return all((str(v).lower() in str(obj.get(k, "")).lower()) if k == "name"
                   else obj.get(k) == v for k, v in f.items())


def make_handler(mock):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, status, body, ctype="application/json"):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def authed(self):
            auth = self.headers.get("Authorization", "")
            basic = "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()
            if auth in ("Bearer " + TOKEN, basic):
                return True
            self.send(401, {"type": "about:blank", "status": 401, "detail": "no"},
                      "application/problem+json")
            return False

        def do_GET(self):
            mock.hosts.add(self.headers.get("Host"))
            if not self.authed():
                return
            if self.path == "/jmap/session" and not mock.no_session:
                port = self.server.server_address[1]
                self.send(200, {
                    # another host name on purpose: the client must keep using --url's origin
                    "apiUrl": f"http://mock.invalid:{port}/jmap/api",
                    "primaryAccounts": {"urn:stalwart:jmap": "acc1"},
                    "capabilities": {"urn:ietf:params:jmap:core": {
                        "maxObjectsInGet": mock.max_get, "maxObjectsInSet": mock.max_set}}})
            elif self.path == "/api/schema":
                self.send(200, SCHEMA)
            else:
                self.send(404, {"type": "about:blank", "status": 404}, "application/problem+json")

        def do_POST(self):
            mock.hosts.add(self.headers.get("Host"))
            if not self.authed():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/jmap/api" or body.get("using") != [
                    "urn:ietf:params:jmap:core", "urn:stalwart:jmap"]:
                self.send(400, {"type": "urn:ietf:params:jmap:error:notRequest",
                                "status": 400, "detail": "bad using or path"},
                          "application/problem+json")
                return
            out = []
            for name, args, cid in body["methodCalls"]:
                assert args.get("accountId") == "acc1"
                rname, rargs = mock.handle(name, args)
                out.append([rname, rargs, cid])
            self.send(200, {"methodResponses": out, "sessionState": "s"})
    return H


@pytest.fixture
def mock():
    m = Mock()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(m))
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    m.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield m
    srv.shutdown()
    srv.server_close()


def cli(mock, *args, token=TOKEN, stdin=None, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(GATEHOUSE_URL=mock.url, **(env_extra or {}))
    if token is not None:
        env["GATEHOUSE_TOKEN"] = token
    return subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=30)


def sets(mock):
    return [a for m, a in mock.calls if m.endswith("/set")]


def test_create_types_every_field_by_its_schema_type(mock, tmp_path):
    pem = tmp_path / "c.pem"
    pem.write_text("-----BEGIN X-----\nabc\n-----END X-----\n")
    r = cli(mock, "create", "widget", "--field", "name=w", "--field", "enabled=FALSE",
            "--field", "limit=42", "--field", "timeout=1m", "--field", "kind=BETAGAMMA",
            "--field", 'ports=["127.0.0.1:25","[::1]:25"]', "--field", "masks=10.0.0.0/8, ::1/128",
            "--field", "modes=alpha,betagamma", "--field", f"pem=@{pem}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Created Widget w1\n"
    sent = sets(mock)[0]["create"]["c1"]
    assert sent == {"name": "w", "enabled": False, "limit": 42, "timeout": "1m",
                    "kind": "betaGamma", "ports": ["127.0.0.1:25", "[::1]:25"],
                    "masks": ["10.0.0.0/8", "::1/128"], "modes": ["alpha", "betaGamma"],
                    "pem": "-----BEGIN X-----\nabc\n-----END X-----\n"}
    # the API path came from the session, the host from --url: the token went nowhere else
    assert mock.hosts == {mock.url[len("http://"):]}


def test_duration_in_milliseconds_and_null(mock):
    r = cli(mock, "create", "widget", "--field", "timeout=60000", "--field", "limit=null",
            "--field", "name=null-test", "--field", "ports=127.0.0.1:2525")
    assert r.returncode == 0, r.stderr
    assert sets(mock)[0]["create"]["c1"] == {"timeout": 60000, "limit": None,
                                             "name": "null-test", "ports": ["127.0.0.1:2525"]}


def test_json_file_and_stdin_with_field_override(mock, tmp_path):
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"name": "fromfile", "ports": ["127.0.0.1:1"], "limit": 5}))
    r = cli(mock, "create", "widget", "--file", str(f), "--field", "limit=6")
    assert r.returncode == 0, r.stderr
    assert sets(mock)[-1]["create"]["c1"] == {"name": "fromfile", "ports": ["127.0.0.1:1"],
                                              "limit": 6}
    r = cli(mock, "create", "x:Widget", "--stdin", stdin='{"name": "fromstdin"}')
    assert r.returncode == 0, r.stderr
    assert sets(mock)[-1]["create"]["c1"] == {"name": "fromstdin"}
    r = cli(mock, "create", "Widget", "--json", '{"name": "fromjson"}')
    assert r.returncode == 0, r.stderr
    assert sets(mock)[-1]["create"]["c1"] == {"name": "fromjson"}
    r = cli(mock, "create", "widget", "--json", '{"name": ')
    assert r.returncode == 2 and "invalid JSON" in r.stderr
    r = cli(mock, "create", "widget", "--json", '[1]')
    assert r.returncode == 2 and "expected a JSON object" in r.stderr
    assert len(sets(mock)) == 3


@pytest.mark.parametrize("field,expect", [
    ("kind=delta", 'valid values: alpha, betaGamma'),
    ("modes=alpha,delta", 'valid values: alpha, betaGamma'),
    ('modes=["delta"]', 'valid values: alpha, betaGamma'),
    ("enabled=yes", "expected true or false"),
    ("limit=12x", "expected a whole number"),
    ("limit=-1", "expected a whole number"),
    ("timeout=soon", "expected a duration"),
    ("colour=red", "valid properties: id, name, kind, ports, enabled, limit, timeout, masks, "
                   "modes, pem"),
])
def test_values_that_do_not_fit_the_schema_are_refused_before_sending(mock, field, expect):
    r = cli(mock, "create", "widget", "--field", field)
    assert r.returncode == 1, r.stderr
    assert expect in r.stderr
    assert "invalidProperties (" + field.split("=")[0] + ")" in r.stderr
    assert sets(mock) == []


@pytest.mark.parametrize("field", ["ports", "ports=[1,", "=x", "ports/x=1"])
def test_malformed_fields_are_usage_errors(mock, field):
    r = cli(mock, "create", "widget", "--field", field)
    assert r.returncode == 2, r.stderr
    assert sets(mock) == []


def test_update_path_keys_null_and_quoted_keys(mock):
    oid = mock.add(name="a", ports=["127.0.0.1:1"])
    r = cli(mock, "update", "widget", oid, "--field", "ports/[::]:587=true",
            "--field", "masks/10.0.0.0/8=null", "--field", "LIMIT=null",
            "--field", '"kind"=alpha')
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Updated Widget {oid}\n"
    assert sets(mock)[0]["update"][oid] == {"ports/[::]:587": True, "masks/10.0.0.0~18": None,
                                            "limit": None, "kind": "alpha"}


def test_update_from_json_with_field_override(mock):
    oid = mock.add(name="j")
    r = cli(mock, "update", "widget", oid, "--json", '{"limit": 1, "ports/127.0.0.1:9": true}',
            "--field", "limit=2")
    assert r.returncode == 0, r.stderr
    assert sets(mock)[0]["update"][oid] == {"limit": 2, "ports/127.0.0.1:9": True}


def test_update_refused_prints_the_set_error(mock):
    r = cli(mock, "update", "widget", "nope", "--field", "limit=3")
    assert r.returncode == 1
    assert "cannot update Widget nope: notFound" in r.stderr


def test_create_refused_names_type_property_and_description(mock):
    r = cli(mock, "create", "widget", "--json", '{"colour": "red"}')
    assert r.returncode == 1
    assert "cannot create Widget: invalidProperties (colour): unknown" in r.stderr


def test_query_pages_through_everything_and_filters_with_and(mock):
    for i in range(5):
        mock.add(name=f"w-{i}", kind="alpha" if i % 2 else "betaGamma", ports=[f"127.0.0.1:{i+1}"])
    r = cli(mock, "query", "widget")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["Id", "Name", "Kind", "Ports"]
    assert [l.split()[1] for l in lines[1:]] == [f"w-{i}" for i in range(5)]
    queries = [a for m, a in mock.calls if m == "x:Widget/query"]
    assert [q["position"] for q in queries] == [0, 2, 4]
    assert all(q["limit"] == 2 for q in queries)
    gets = [a for m, a in mock.calls if m == "x:Widget/get"]
    assert all(len(g["ids"]) <= 2 for g in gets)
    assert gets[0]["properties"] == ["id", "name", "kind", "ports"]

    mock.calls.clear()
    r = cli(mock, "query", "widget", "--where", "name=W-", "--where", "kind=ALPHA", "--json")
    assert r.returncode == 0, r.stderr
    assert [o["name"] for o in json.loads(r.stdout)] == ["w-1", "w-3"]
    q = [a for m, a in mock.calls if m == "x:Widget/query"][0]
    assert q["filter"] == {"operator": "AND",
                           "conditions": [{"name": "W-"}, {"kind": "alpha"}]}

    r = cli(mock, "query", "widget", "--where", "name=w-4", "--fields", "name,limit", "--json")
    assert json.loads(r.stdout) == [{"id": "w5", "name": "w-4"}]
    q = [a for m, a in mock.calls if m == "x:Widget/query"][-1]
    assert q["filter"] == {"name": "w-4"}


def test_query_usage_errors(mock):
    r = cli(mock, "query", "widget", "--where", "limit=3")
    assert r.returncode == 2 and "filters: name, kind" in r.stderr
    r = cli(mock, "query", "widget", "--where", "kind=zeta")
    assert r.returncode == 2 and "valid values: alpha, betaGamma" in r.stderr
    r = cli(mock, "query", "widget", "--fields", "name,colour")
    assert r.returncode == 2 and "no property \"colour\"" in r.stderr
    r = cli(mock, "query", "widget")
    assert r.returncode == 0 and r.stdout == "No Widget found.\n"


def test_query_table_cuts_long_cells(mock):
    mock.add(name="long", ports=[f"127.0.0.1:{p}" for p in range(1000, 1020)])
    r = cli(mock, "query", "widget")
    row = r.stdout.splitlines()[1]
    assert row.endswith("...") and len(row.split("  ")[-1]) <= 60


def test_delete_batches_and_reports_each_id(mock):
    ids = [mock.add(name=f"d{i}") for i in range(3)]
    r = cli(mock, "delete", "widget", "--ids", f"{ids[0]},missing,{ids[1]}", "--ids", ids[2])
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"{ids[0]} deleted", "missing failed: notFound: no object missing",
                                     f"{ids[1]} deleted", f"{ids[2]} deleted",
                                     "3 deleted, 1 failed"]
    assert [len(s["destroy"]) for s in sets(mock)] == [2, 2]
    ids = [mock.add(name=f"e{i}") for i in range(2)]
    r = cli(mock, "delete", "widget", "--stdin", stdin="\n".join(ids) + "\n")
    assert r.returncode == 0 and r.stdout.endswith("2 deleted, 0 failed\n")


def test_get_groups_labels_and_json(mock):
    oid = mock.add(name="g", kind="alpha", ports=["127.0.0.1:1", "[::1]:1"], enabled=True,
                   limit=None, timeout="1m", masks=[], pem="line1\nline2")
    r = cli(mock, "get", "widget", oid)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"Id: {oid}\nMain\n  Name: g\n  Kind: alpha\n"
                        "  Ports: 127.0.0.1:1, [::1]:1\n  Enabled: yes\n"
                        "Tuning\n  Limit: <none>\n  Timeout: 1m\n  Masks: <none>\n"
                        "  PEM:\n    line1\n    line2\n")
    r = cli(mock, "get", "widget", oid, "--json")
    assert json.loads(r.stdout)["ports"] == ["127.0.0.1:1", "[::1]:1"]
    r = cli(mock, "get", "widget", "nope")
    assert r.returncode == 1 and "Widget nope not found" in r.stderr
    r = cli(mock, "get", "widget")
    assert r.returncode == 2 and "missing the ID" in r.stderr


def test_singleton_needs_no_id(mock):
    r = cli(mock, "get", "knobs")
    assert r.returncode == 0, r.stderr
    assert "Level: 3" in r.stdout
    assert mock.calls[-1] == ("x:Knobs/get", {"ids": ["singleton"], "accountId": "acc1"})
    r = cli(mock, "update", "knobs", "--field", "level=4")
    assert r.returncode == 0 and r.stdout == "Updated Knobs singleton\n"


def test_describe_from_the_schema(mock):
    r = cli(mock, "describe", "WIDGET")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("Widget (widget, JMAP type x:Widget)")
    assert "  ports  SocketAddr[], required" in out
    assert "  limit  UnsignedInt?" in out and "default: 8192" in out
    assert "values: alpha (Alpha), betaGamma (Beta gamma)" in out
    assert "rule: 1-64 characters" in out and "query: filter (text) sortable" in out
    assert "  name  String, set at create only" in out
    r = cli(mock, "describe")
    assert "Widget (widget" in r.stdout and "Knobs (knobs" in r.stdout
    r = cli(mock, "describe", "knobs", "--json")
    assert json.loads(r.stdout) == SCHEMA["types"]["x:Knobs"]


def test_unknown_type_lists_the_types(mock):
    r = cli(mock, "get", "gadget", "x")
    assert r.returncode == 2
    assert 'unknown object type "gadget"; types: widget, knobs' in r.stderr


def test_method_error_is_a_refusal(mock):
    mock.method_error = {"type": "forbidden", "description": "needs sysWidgetQuery"}
    r = cli(mock, "query", "widget")
    assert r.returncode == 1
    assert "x:Widget/query refused: forbidden: needs sysWidgetQuery" in r.stderr


def test_authentication(mock):
    r = cli(mock, "query", "widget", token="wrong")
    assert r.returncode == 3 and "authentication failed (401)" in r.stderr
    r = cli(mock, "query", "widget", token=None)
    assert r.returncode == 3 and "no credentials given" in r.stderr
    r = cli(mock, "--user", "admin", "--password", TOKEN, "query", "widget", token=None)
    assert r.returncode == 0, r.stderr
    r = cli(mock, "--token", TOKEN, "query", "widget", token="wrong")
    assert r.returncode == 0, r.stderr
    r = cli(mock, "query", "widget", token=None,
            env_extra={"GATEHOUSE_USER": "admin", "GATEHOUSE_PASSWORD": TOKEN})
    assert r.returncode == 0, r.stderr
    r = cli(mock, "--password", TOKEN, "query", "widget", token=None,
            env_extra={"GATEHOUSE_USER": "admin"})
    assert r.returncode == 0, r.stderr
    r = cli(mock, "--user", "admin", "query", "widget", token=None)
    assert r.returncode == 2 and "--user needs --password" in r.stderr


def test_not_a_gatehouse_url_is_a_connection_failure(mock):
    mock.no_session = True
    r = cli(mock, "query", "widget")
    assert r.returncode == 3
    assert f"no JMAP session at {mock.url} (is it a Gatehouse HTTP listener?)" in r.stderr


def test_a_server_that_does_not_speak_http(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def greet():
        for _ in range(2):
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.sendall(b"220 mail.example ESMTP\r\n")
            c.close()
    t = threading.Thread(target=greet, daemon=True)
    t.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    r = subprocess.run([CLI, "--url", f"http://127.0.0.1:{port}", "--token", "t", "describe"],
                       env=env, capture_output=True, text=True, timeout=30)
    srv.close()
    assert r.returncode == 3
    assert "did not answer as an HTTP server" in r.stderr
