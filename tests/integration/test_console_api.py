"""What the web console reads besides JMAP: the schema's navigation paths and page facts,
GET /api/me (who is signed in and with which permissions), and the certificate details
the server derives from the PEM (subject, issuer, key type)."""
import json
import shutil
import subprocess

import pytest

CERT = "x:Certificate"


def schema(g):
    status, _, body = g.http("GET", "/api/schema")
    assert status == 200
    return json.loads(body)["types"]


def test_schema_carries_the_navigation_path(gatehouse):
    types = schema(gatehouse)
    assert types["x:NetworkListener"]["nav"] == ["Settings", "Network", "Listeners"]
    assert types["x:Destination"]["nav"] == ["Settings", "Network", "Destinations"]
    assert types["x:Certificate"]["nav"] == ["Settings", "TLS", "Certificates"]
    assert types["x:ApiKey"]["nav"] == ["Settings", "Authentication", "API keys"]
    assert types["x:SystemSettings"]["nav"] == ["System settings"]
    for name, t in types.items():
        assert t["nav"] and all(isinstance(s, str) and s.strip() == s and s for s in t["nav"]), name


def test_schema_has_what_a_generic_page_needs(gatehouse):
    types = schema(gatehouse)
    nl = types["x:NetworkListener"]
    assert nl["singleton"] is False and types["x:SystemSettings"]["singleton"] is True
    assert nl["permissionPrefix"] == "sysNetworkListener"
    assert nl["listColumns"][0] == "name"
    props = {p["name"]: p for p in nl["properties"]}
    assert props["name"]["filter"] == "text" and props["name"]["sortable"] is True
    assert props["protocol"]["filter"] == "equals"
    assert props["id"]["mutability"] == "serverSet"
    keyprops = {p["name"]: p for p in types["x:ApiKey"]["properties"]}
    assert keyprops["secret"]["returnedOnce"] is True
    certprops = {p["name"]: p for p in types[CERT]["properties"]}
    assert certprops["privateKey"]["mutability"] == "writeOnly"
    for p in ("subject", "issuerName", "keyType", "subjectNames", "notAfter"):
        assert certprops[p]["mutability"] == "serverSet", p


def test_me_without_credentials_is_not_an_error(gatehouse):
    status, headers, body = gatehouse.http("GET", "/api/me", auth=False)
    assert status == 200 and json.loads(body) == {"signedIn": False}
    assert "www-authenticate" not in headers
    # a cookie of a session that no longer exists: signed out, still 200
    status, _, body = gatehouse.http("GET", "/api/me", auth=False, headers={
        "Cookie": "gh_session=" + "A" * 43, "X-Gatehouse-Csrf": "1"})
    assert status == 200 and json.loads(body) == {"signedIn": False}


def test_me_names_the_caller_and_its_permissions(gatehouse):
    status, _, body = gatehouse.http("GET", "/api/me")
    me = json.loads(body)
    assert status == 200 and me["signedIn"] is True and me["admin"] is True
    assert me["username"] == "admin"
    perms = ["sysNetworkListenerGet", "sysNetworkListenerQuery"]
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {"name": "viewer",
                                                                 "permissions": perms}}})
    secret = res["created"]["k"]["secret"]
    status, _, body = gatehouse.http("GET", "/api/me",
                                     headers={"Authorization": "Bearer " + secret})
    me = json.loads(body)
    assert status == 200
    assert me == {"signedIn": True, "username": "viewer", "admin": False, "permissions": perms}
    # given credentials are checked: a wrong secret is refused, not taken as signed out
    status, _, _ = gatehouse.http("GET", "/api/me", headers={"Authorization": "Bearer nope"})
    assert status == 401


def test_me_through_the_page_cookie(gatehouse):
    status, headers, _ = gatehouse.http("POST", "/auth/session", auth=False,
                                        body=json.dumps({"secret": gatehouse.secret}),
                                        headers={"Content-Type": "application/json"})
    assert status == 204
    cookie = headers["set-cookie"].split(";")[0]
    status, _, body = gatehouse.http("GET", "/api/me", auth=False,
                                     headers={"Cookie": cookie, "X-Gatehouse-Csrf": "1"})
    assert status == 200 and json.loads(body)["admin"] is True
    # the cookie without the page's header is refused, as on every API route
    status, _, _ = gatehouse.http("GET", "/api/me", auth=False, headers={"Cookie": cookie})
    assert status == 403
    status, _, _ = gatehouse.http("POST", "/api/me", auth=False, headers={"Cookie": cookie})
    assert status == 405


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
@pytest.mark.parametrize("keyargs,expected", [
    (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "ECDSA P-384"),
    (["-newkey", "rsa:2048"], "RSA 2048"),
    (["-newkey", "ed25519"], "Ed25519"),
])
def test_certificate_details_from_the_pem(gatehouse, tmp_path, keyargs, expected):
    subprocess.run(["openssl", "req", "-x509", *keyargs, "-nodes", "-keyout", "k.pem",
                    "-out", "c.pem", "-days", "30", "-subj", "/O=Example Mail/CN=mx.example.test",
                    "-addext", "subjectAltName=DNS:mx.example.test,DNS:*.example.test"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    chain, key = (tmp_path / "c.pem").read_text(), (tmp_path / "k.pem").read_text()
    _, res, _ = gatehouse.call(CERT + "/set", {"create": {"c": {"certificate": chain,
                                                                "privateKey": key}}})
    c = res["created"]["c"]
    _, res, _ = gatehouse.call(CERT + "/get", {"ids": [c["id"]]})
    got = res["list"][0]
    assert got["subject"] == "CN=mx.example.test,O=Example Mail"
    assert got["issuerName"] == got["subject"]
    assert got["keyType"] == expected
    assert got["subjectNames"] == ["mx.example.test", "*.example.test"]
    assert "privateKey" not in got and "PRIVATE KEY" not in json.dumps(got)
    # server-set: a client cannot write them
    _, res, _ = gatehouse.call(CERT + "/set", {"update": {c["id"]: {"keyType": "RSA 1"}}})
    assert res["notUpdated"][c["id"]]["properties"] == ["keyType"]


def test_self_signed_certificate_has_details(gatehouse):
    _, res, _ = gatehouse.call(CERT + "/get", {})
    c = res["list"][0]
    assert c["keyType"] == "ECDSA P-256"
    assert c["subject"].startswith("CN=")
