"""gatehouse-cli against the real daemon: every command, the reference page's CLI examples,
the three spellings of an object name, usage errors (exit 2), refusals (exit 1), and
connection and authentication failures (exit 3).

The binary is $GATEHOUSE_CLI, else build/gatehouse-cli.
"""
import json
import os
import re
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("GATEHOUSE_CLI", os.path.join(ROOT, "build", "gatehouse-cli"))
NL = "x:NetworkListener"


def run(gh, *args, token=None, url=None, stdin=None, env_extra=None):
    """Runs the client with GATEHOUSE_URL/GATEHOUSE_TOKEN pointing at the daemon gh."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["GATEHOUSE_URL"] = url or (gh.url if gh else "http://127.0.0.1:1")
    env["GATEHOUSE_TOKEN"] = token or (gh.secret if gh else "x")
    env.update(env_extra or {})
    return subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=60)


def created_id(r):
    m = re.fullmatch(r"Created NetworkListener (\S+)\n", r.stdout)
    assert m, (r.returncode, r.stdout, r.stderr)
    return m.group(1)


def get_obj(gh, oid):
    _, res, _ = gh.call(f"{NL}/get", {"ids": [oid]})
    return res["list"][0] if res["list"] else None


def names(gh):
    _, res, _ = gh.call(f"{NL}/get", {"ids": None})
    return sorted(o["name"] for o in res["list"])


# The reference page's create example, field for field, with a bind that can be bound.
def reference_fields(port, tos="1000", ttl="1000"):
    return ["--field", f'bind=["127.0.0.1:{port}"]', "--field", "protocol=smtp",
            "--field", "overrideProxyTrustedNetworks=[]", "--field", "socketBacklog=1024",
            "--field", "socketNoDelay=true", "--field", "socketReceiveBufferSize=1000",
            "--field", "socketReuseAddress=true", "--field", "socketReusePort=true",
            "--field", "socketSendBufferSize=1000", "--field", f"socketTosV4={tos}",
            "--field", f"socketTtl={ttl}", "--field", "useTls=true",
            "--field", "tlsDisableCipherSuites=[]", "--field", "tlsDisableProtocols=[]",
            "--field", "tlsIgnoreClientOrder=true", "--field", "tlsImplicit=false",
            "--field", "tlsTimeout=1m", "--field", "maxConnections=8192"]


def test_reference_create_with_every_field(gatehouse, free_port):
    port = free_port()
    r = run(gatehouse, "create", "network-listener", *reference_fields(port, "16", "64"))
    assert r.returncode == 0, r.stderr
    obj = get_obj(gatehouse, created_id(r))
    expect = {"bind": [f"127.0.0.1:{port}"], "protocol": "smtp",
              "overrideProxyTrustedNetworks": [], "socketBacklog": 1024, "socketNoDelay": True,
              "socketReceiveBufferSize": 1000, "socketReuseAddress": True,
              "socketReusePort": True, "socketSendBufferSize": 1000, "socketTosV4": 16,
              "socketTtl": 64, "useTls": True, "tlsDisableCipherSuites": [],
              "tlsDisableProtocols": [], "tlsIgnoreClientOrder": True, "tlsImplicit": False,
              "tlsTimeout": "1m", "maxConnections": 8192, "name": "smtp"}
    assert {k: obj[k] for k in expect} == expect
    # and the daemon really listens there
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(100)


def test_reference_create_as_written_is_refused_naming_tos_and_ttl(gatehouse, free_port):
    # The page's example sets socketTosV4 and socketTtl to 1000; SPEC §2 allows 1-255.
    r = run(gatehouse, "create", "network-listener", *reference_fields(free_port()))
    assert r.returncode == 1
    assert "cannot create NetworkListener: invalidProperties" in r.stderr
    assert "socketTosV4" in r.stderr and "socketTtl" in r.stderr
    assert names(gatehouse) == ["http"]


def test_reference_get_query_update_delete_examples(gatehouse):
    r = run(gatehouse, "get", "network-listener", "id1")
    assert r.returncode == 1 and "NetworkListener id1 not found" in r.stderr
    r = run(gatehouse, "query", "network-listener")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["Id", "Name", "Protocol", "Bind", "addresses",
                                                "Implicit", "TLS"]
    assert re.search(rf"^\S+\s+http\s+http\s+127\.0\.0\.1:{gatehouse.http_port}\s+no$",
                     r.stdout, re.M)
    r = run(gatehouse, "query", "network-listener", "--where", "name=example")
    assert r.returncode == 0 and r.stdout == "No NetworkListener found.\n"
    r = run(gatehouse, "update", "network-listener", "id1", "--field", "description=Updated")
    assert r.returncode == 1
    assert "invalidProperties (description)" in r.stderr
    assert "valid properties: id, name, bind, protocol" in r.stderr
    r = run(gatehouse, "delete", "network-listener", "--ids", "id1")
    assert r.returncode == 1
    assert r.stdout.splitlines()[0].startswith("id1 failed: notFound")
    assert r.stdout.splitlines()[-1] == "0 deleted, 1 failed"


@pytest.mark.parametrize("spelling", ["network-listener", "NetworkListener",
                                      "x:NetworkListener", "NETWORK-LISTENER",
                                      "x:networklistener"])
def test_object_name_spellings(gatehouse, free_port, spelling):
    port = free_port()
    r = run(gatehouse, "create", spelling, "--field", "name=spelled",
            "--field", f"bind=127.0.0.1:{port}")
    oid = created_id(r)
    r = run(gatehouse, "get", spelling, oid)
    assert r.returncode == 0 and "  Name: spelled\n" in r.stdout
    r = run(gatehouse, "query", spelling, "--where", "name=spell")
    assert r.returncode == 0 and oid in r.stdout
    r = run(gatehouse, "update", spelling, oid, "--field", "maxConnections=7")
    assert r.returncode == 0 and r.stdout == f"Updated NetworkListener {oid}\n"
    r = run(gatehouse, "delete", spelling, "--ids", oid)
    assert r.returncode == 0 and r.stdout == f"{oid} deleted\n1 deleted, 0 failed\n"


def test_get_readable_and_json(gatehouse, free_port):
    port = free_port()
    oid = gatehouse.create_listener(name="sub", protocol="smtp", bind=[f"127.0.0.1:{port}"],
                                    tlsTimeout="30s", socketTtl=64)
    r = run(gatehouse, "get", "network-listener", oid)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(f"Id: {oid}\nListener\n  Name: sub\n")
    assert f"  Bind addresses: 127.0.0.1:{port}\n" in out
    assert "\nTLS\n" in out and "  TLS timeout: 30s\n" in out and "  Use TLS: yes\n" in out
    assert "\nSocket options\n" in out and "  Receive buffer size: <none>\n" in out
    # groups come in the schema's order
    assert out.index("\nTLS\n") < out.index("\nProxy networks\n") < out.index("\nSocket options\n")
    r = run(gatehouse, "get", "network-listener", oid, "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == get_obj(gatehouse, oid)


def test_singleton_get_update_and_query_without_id(gatehouse):
    r = run(gatehouse, "update", "system-settings", "--field", "defaultHostname=mx.example.com")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Updated SystemSettings singleton\n"
    r = run(gatehouse, "get", "system-settings")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Id: singleton\n")
    assert "mx.example.com" in r.stdout
    r = run(gatehouse, "get", "SystemSettings", "singleton", "--json")
    assert json.loads(r.stdout)["defaultHostname"] == "mx.example.com"
    r = run(gatehouse, "query", "system-settings")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^singleton\s+mx\.example\.com", r.stdout, re.M)
    r = run(gatehouse, "delete", "system-settings", "--ids", "singleton")
    assert r.returncode == 1 and r.stdout.startswith("singleton failed: singleton")


def test_url_with_trailing_slash(gatehouse):
    r = run(gatehouse, "query", "network-listener", url=gatehouse.url + "/")
    assert r.returncode == 0, r.stderr


def test_update_types_paths_and_null(gatehouse, free_port):
    p1, p2 = free_port(), free_port()
    oid = gatehouse.create_listener(name="u", bind=[f"127.0.0.1:{p1}"], socketTtl=64)
    r = run(gatehouse, "update", "network-listener", oid, "--field", f"bind/127.0.0.1:{p2}=true",
            "--field", "socketTtl=null", "--field", "tlsTimeout=30000",
            "--field", "protocol=LMTP", "--field", "tlsDisableProtocols=tls12",
            "--field", "useTls=FALSE")
    assert r.returncode == 0, r.stderr
    obj = get_obj(gatehouse, oid)
    assert sorted(obj["bind"]) == sorted([f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"])
    assert obj["socketTtl"] is None and obj["tlsTimeout"] == "30s"
    assert obj["protocol"] == "lmtp" and obj["tlsDisableProtocols"] == ["tls12"]
    assert obj["useTls"] is False
    r = run(gatehouse, "update", "network-listener", oid, "--field", f"bind/127.0.0.1:{p1}=null",
            "--field", "overrideProxyTrustedNetworks/10.0.0.0/8=true")
    assert r.returncode == 0, r.stderr
    obj = get_obj(gatehouse, oid)
    assert obj["bind"] == [f"127.0.0.1:{p2}"]
    assert obj["overrideProxyTrustedNetworks"] == ["10.0.0.0/8"]


def test_refusals_print_type_property_and_description(gatehouse, free_port):
    oid = gatehouse.create_listener(name="r", bind=[f"127.0.0.1:{free_port()}"])
    r = run(gatehouse, "update", "network-listener", oid, "--field", "socketTtl=999")
    assert r.returncode == 1
    assert f"cannot update NetworkListener {oid}: invalidProperties (socketTtl): " in r.stderr
    assert "255" in r.stderr
    r = run(gatehouse, "update", "network-listener", oid, "--field", "name=other")
    assert r.returncode == 1 and "invalidProperties (name)" in r.stderr
    r = run(gatehouse, "create", "network-listener", "--field", "name=R",
            "--field", f"bind=127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "alreadyExists (name)" in r.stderr and oid in r.stderr
    r = run(gatehouse, "create", "network-listener", "--field", "protocol=smtps",
            "--field", f"bind=127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "invalidProperties (protocol)" in r.stderr
    assert "valid values: smtp, lmtp, http, imap, pop3, manageSieve" in r.stderr
    r = run(gatehouse, "create", "network-listener", "--field", "bind=not-an-address")
    assert r.returncode == 1 and "invalidProperties (bind)" in r.stderr
    assert names(gatehouse) == ["http", "r"]


def test_create_from_json_file_and_stdin(gatehouse, free_port, tmp_path):
    f = tmp_path / "l.json"
    f.write_text(json.dumps({"name": "fromfile", "bind": [f"127.0.0.1:{free_port()}"]}))
    r = run(gatehouse, "create", "network-listener", "--file", str(f), "--field", "protocol=imap")
    oid = created_id(r)
    assert get_obj(gatehouse, oid)["protocol"] == "imap"
    body = json.dumps({"name": "fromstdin", "bind": [f"127.0.0.1:{free_port()}"]})
    created_id(run(gatehouse, "create", "network-listener", "--stdin", stdin=body))
    body = json.dumps({"name": "fromjson", "bind": {f"127.0.0.1:{free_port()}": True}})
    created_id(run(gatehouse, "create", "network-listener", "--json", body))
    assert names(gatehouse) == ["fromfile", "fromjson", "fromstdin", "http"]


def test_query_filters_fields_and_json(gatehouse, free_port):
    for name, proto in [("smtp-a", "smtp"), ("imap-a", "imap"), ("smtp-b", "smtp"),
                        ("pop-a", "pop3")]:
        gatehouse.create_listener(name=name, protocol=proto, bind=[f"127.0.0.1:{free_port()}"])
    r = run(gatehouse, "query", "network-listener", "--where", "name=-A")
    assert r.returncode == 0, r.stderr
    assert [l.split()[1] for l in r.stdout.splitlines()[1:]] == ["imap-a", "pop-a", "smtp-a"]
    r = run(gatehouse, "query", "network-listener", "--where", "protocol=smtp",
            "--where", "name=b")
    assert [l.split()[1] for l in r.stdout.splitlines()[1:]] == ["smtp-b"]
    r = run(gatehouse, "query", "network-listener", "--where", "protocol=SMTP",
            "--fields", "name,maxConnections", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(o["name"], o["maxConnections"]) for o in rows] == [("smtp-a", 8192),
                                                               ("smtp-b", 8192)]
    assert set(rows[0]) == {"id", "name", "maxConnections"}
    r = run(gatehouse, "query", "network-listener", "--json")
    assert len(json.loads(r.stdout)) == 5 and "socketBacklog" in json.loads(r.stdout)[0]
    r = run(gatehouse, "query", "network-listener", "--fields", "name,socketBacklog")
    assert r.stdout.splitlines()[0].split() == ["Id", "Name", "Backlog"]
    r = run(gatehouse, "query", "network-listener", "--where", "bind=127.0.0.1:1")
    assert r.returncode == 2 and "filters: name, protocol" in r.stderr


def test_delete_several(gatehouse, free_port):
    ids = [gatehouse.create_listener(name=f"d{i}", bind=[f"127.0.0.1:{free_port()}"])
           for i in range(3)]
    r = run(gatehouse, "delete", "NetworkListener", "--ids", f"{ids[0]},{ids[1]}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{ids[0]} deleted\n{ids[1]} deleted\n2 deleted, 0 failed\n"
    r = run(gatehouse, "delete", "network-listener", "--ids", f"{ids[2]},{ids[0]}")
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == f"{ids[2]} deleted"
    assert r.stdout.splitlines()[1].startswith(f"{ids[0]} failed: notFound")
    assert names(gatehouse) == ["http"]


def test_describe_lists_every_property_of_the_served_schema(gatehouse):
    status, _, raw = gatehouse.http("GET", "/api/schema")
    assert status == 200
    schema = json.loads(raw)
    r = run(gatehouse, "describe", "network-listener")
    assert r.returncode == 0, r.stderr
    props = schema["types"][NL]["properties"]
    for p in props:
        assert re.search(rf"^  {p['name']}  {p['type']}", r.stdout, re.M), p["name"]
    assert "default: 8192" in r.stdout and 'default: "1m"' in r.stdout
    assert "values: smtp (SMTP), lmtp (LMTP)" in r.stdout
    assert "query: filter (text) sortable" in r.stdout
    r = run(gatehouse, "describe")
    assert r.returncode == 0
    for key, t in schema["types"].items():
        assert f"({t['cliName']}, JMAP type {key})" in r.stdout
    r = run(gatehouse, "describe", "x:NetworkListener", "--json")
    assert json.loads(r.stdout) == schema["types"][NL]


@pytest.mark.parametrize("args,message", [
    ([], "no command given"),
    (["frobnicate"], 'unknown command "frobnicate"'),
    (["get"], "missing the object type"),
    (["get", "network-listener"], "missing the ID"),
    (["get", "gadget", "x"], 'unknown object type "gadget"; types: network-listener'),
    (["create", "network-listener"], "nothing to create"),
    (["create", "network-listener", "--field", "protocol"], "expected KEY=VALUE"),
    (["create", "network-listener", "--field", "bind=[1,"], "invalid JSON"),
    (["create", "network-listener", "--json", "{", ], "invalid JSON"),
    (["create", "network-listener", "--json", "{}", "--stdin"], "only one of"),
    (["update", "network-listener"], "nothing to update"),
    (["delete", "network-listener"], "--ids"),
    (["delete", "network-listener", "abc"], "unexpected argument"),
    (["query", "network-listener", "--bogus"], "unknown option --bogus"),
    (["query", "network-listener", "--ids", "a"], "option --ids does not apply to query"),
    (["query", "network-listener", "--where", "name"], "expected KEY=VALUE"),
    (["--token", "a", "--user", "b", "--password", "c", "describe"], "not both"),
    (["--url", "ftp://127.0.0.1", "describe"], "must start with http:// or https://"),
    (["get", "network-listener", "--field"], "option --field does not apply to get"),
])
def test_usage_errors_exit_2(gatehouse, args, message):
    r = run(gatehouse, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert r.stdout == ""
    assert names(gatehouse) == ["http"]


def test_help_for_the_tool_and_every_command():
    r = subprocess.run([CLI, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("Usage: gatehouse-cli [--url URL]")
    for cmd in ["get", "create", "update", "delete", "query", "describe"]:
        for argv in ([cmd, "--help"], ["help", cmd], [cmd, "network-listener", "-h"]):
            r = subprocess.run([CLI, *argv], capture_output=True, text=True)
            assert r.returncode == 0, argv
            assert r.stdout.startswith(f"Usage: gatehouse-cli {cmd} "), argv
            assert "Example" in r.stdout
    r = subprocess.run([CLI, "help", "nope"], capture_output=True, text=True)
    assert r.returncode == 2


def test_connection_refused_exit_3(free_port):
    port = free_port()
    r = run(None, "query", "network-listener", url=f"http://127.0.0.1:{port}")
    assert r.returncode == 3
    assert f"cannot connect to http://127.0.0.1:{port}: Connection refused" in r.stderr


def test_authentication_failures_exit_3(gatehouse):
    r = run(gatehouse, "query", "network-listener", token="wrong-secret")
    assert r.returncode == 3
    assert "authentication failed (401)" in r.stderr
    assert "wrong-secret" not in r.stderr
    r = run(gatehouse, "--user", "admin", "--password", "nope", "describe")
    assert r.returncode == 3 and "authentication failed (401)" in r.stderr
    r = run(gatehouse, "--user", "admin", "--password", gatehouse.secret, "query",
            "network-listener")
    assert r.returncode == 0 and " http " in r.stdout


def test_url_and_token_options_override_the_environment(gatehouse, free_port):
    r = run(gatehouse, "--url", gatehouse.url, "--token", gatehouse.secret, "get",
            "system-settings", url=f"http://127.0.0.1:{free_port()}", token="wrong")
    assert r.returncode == 0, r.stderr


def test_https_with_a_self_signed_certificate(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(name="https", protocol="http", bind=[f"127.0.0.1:{port}"],
                              tlsImplicit=True)
    url = f"https://127.0.0.1:{port}"
    deadline = time.time() + 5
    while True:
        r = run(gatehouse, "-k", "query", "network-listener", url=url)
        if r.returncode == 0 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"\shttps\s+http\s+127\.0\.0\.1:{port}\s+yes$", r.stdout, re.M)
    r = run(gatehouse, "query", "network-listener", url=url)
    assert r.returncode == 3
    assert "certificate" in r.stderr and "-k" in r.stderr


def test_api_key_secret_is_shown_once_and_permissions_are_enforced(gatehouse, free_port):
    r = run(gatehouse, "create", "api-key", "--field", "name=reader",
            "--field", "permissions=sysnetworklistenerget,sysNetworkListenerQuery,"
                       "sysNetworkListenerUpdate")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"Created ApiKey (\S+)\n  Secret: (\S+)\n", r.stdout)
    assert m, r.stdout
    key = m.group(2)
    r = run(gatehouse, "get", "api-key", m.group(1))
    assert r.returncode == 0 and key not in r.stdout
    assert "sysNetworkListenerGet, sysNetworkListenerQuery, sysNetworkListenerUpdate" in r.stdout
    # the key may list listeners ...
    r = run(gatehouse, "query", "network-listener", token=key)
    assert r.returncode == 0, r.stderr
    # ... but not create one (SetError forbidden: it may update) nor read certificates
    # (a method error)
    r = run(gatehouse, "create", "network-listener", "--field", f"bind=127.0.0.1:{free_port()}",
            token=key)
    assert r.returncode == 1 and "cannot create NetworkListener: forbidden" in r.stderr
    r = run(gatehouse, "query", "certificate", token=key)
    assert r.returncode == 1 and "x:Certificate/query refused: forbidden" in r.stderr
