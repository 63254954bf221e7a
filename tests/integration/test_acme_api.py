"""x:AcmeProvider and ACME-managed x:Certificate objects through the API (no CA needed):
validation words, secrets never returned, links between the two; and what the listeners
answer for challenges when none is open."""
import socket
import ssl
import urllib.error
import urllib.request

HOST = "127.0.0.1"
PROVIDER = "x:AcmeProvider"
CERT = "x:Certificate"


def create(gatehouse, type_, props):
    _, res, _ = gatehouse.call(f"{type_}/set", {"create": {"c": props}})
    return res


def created_id(gatehouse, type_, props):
    res = create(gatehouse, type_, props)
    assert "c" in (res.get("created") or {}), res
    return res["created"]["c"]["id"]


def refusal(gatehouse, type_, props):
    res = create(gatehouse, type_, props)
    assert "c" in (res.get("notCreated") or {}), res
    return res["notCreated"]["c"]


BASE = {"directory": "https://127.0.0.1:1/dir", "contact": ["ops@example.com"]}


def test_provider_defaults_and_secrets(gatehouse):
    pid = created_id(gatehouse, PROVIDER, dict(BASE, eabKeyId="kid",
                                               eabHmacKey="c2VjcmV0LWtleQ"))
    _, res, _ = gatehouse.call(f"{PROVIDER}/get", {"ids": [pid]})
    p = res["list"][0]
    assert p["challengeType"] == "TlsAlpn01"
    assert p["renewBefore"] == "R23"
    assert p["maxRetries"] == 10
    assert p["accountUri"] is None
    assert p["name"] == "acme"
    assert "eabHmacKey" not in p and not any("key" in k.lower() and k != "eabKeyId" for k in p)
    _, res, _ = gatehouse.call(f"{PROVIDER}/get", {"ids": [pid], "properties": ["accountKeyPem"]})
    assert res.get("type") == "invalidArguments" or "list" not in res, res


def test_provider_refusals_name_the_property(gatehouse):
    for props, prop, words in [
        (dict(BASE, directory="http://ca.example/dir"), "directory", "https://"),
        ({"directory": BASE["directory"]}, "contact", ""),
        (dict(BASE, contact=[]), "contact", ""),
        (dict(BASE, contact=["not-an-address"]), "contact", "e-mail"),
        (dict(BASE, renewBefore="R32"), "renewBefore", "R23"),
        (dict(BASE, renewBefore="soon"), "renewBefore", "duration"),
        (dict(BASE, eabKeyId="kid"), "eabHmacKey", "together"),
        (dict(BASE, eabKeyId="kid", eabHmacKey="not base64!"), "eabHmacKey", "base64url"),
        (dict(BASE, challengeType="Dns01"), "challengeType", ""),
        (dict(BASE, directoryCaCertificateId="cnothere"), "directoryCaCertificateId", "no"),
    ]:
        e = refusal(gatehouse, PROVIDER, props)
        assert e["type"] == "invalidProperties", (props, e)
        assert e["properties"] == [prop], (props, e)
        assert words in e["description"], (props, e)


def test_managed_certificate_rules(gatehouse):
    pid = created_id(gatehouse, PROVIDER, BASE)
    e = refusal(gatehouse, CERT, {"acmeProviderId": "anothere"})
    assert set(e["properties"]) == {"acmeProviderId", "domains"}, e
    e = refusal(gatehouse, CERT, {"acmeProviderId": pid, "domains": ["*.example.com"]})
    assert e["properties"] == ["domains"] and "wildcard" in e["description"], e
    e = refusal(gatehouse, CERT, {})
    assert e["properties"] == ["certificate"] and "acmeProviderId" in e["description"], e
    cid = created_id(gatehouse, CERT, {"acmeProviderId": pid, "domains": ["Mail.Example.com"]})
    _, res, _ = gatehouse.call(f"{CERT}/get", {"ids": [cid]})
    c = res["list"][0]
    assert c["domains"] == ["mail.example.com"]
    assert c["name"] == "mail.example.com"
    assert c["renewalStatus"] in ("pending", "ordering", "retrying")
    assert c["certificate"] is None
    # server-set fields stay the server's
    _, res, _ = gatehouse.call(f"{CERT}/set", {"update": {cid: {"renewalStatus": "valid"}}})
    assert cid in res["notUpdated"], res
    # a provider in use cannot go
    _, res, _ = gatehouse.call(f"{PROVIDER}/set", {"destroy": [pid]})
    assert res["notDestroyed"][pid]["type"] == "objectIsLinked", res
    gatehouse.call(f"{CERT}/set", {"destroy": [cid]})
    _, res, _ = gatehouse.call(f"{PROVIDER}/set", {"destroy": [pid]})
    assert res["destroyed"] == [pid], res


def test_permissions_exist(gatehouse):
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {
        "name": "acme-reader", "permissions": ["sysAcmeProviderGet", "sysAcmeProviderQuery"]}}})
    assert "k" in res["created"], res


def test_http01_path_answers_404_without_credentials(gatehouse):
    req = urllib.request.Request(f"{gatehouse.url}/.well-known/acme-challenge/unknown-token")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("an unknown token must not be answered")
    except urllib.error.HTTPError as e:
        assert e.code == 404  # not 401: no credentials are asked on this path


def test_acme_alpn_without_an_open_challenge_is_an_ordinary_handshake(gatehouse, free_port):
    port = free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"{HOST}:{port}"], useTls=True,
                              tlsImplicit=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="mail.test") as s:
            assert s.selected_alpn_protocol() is None
            s.settimeout(5)
            assert s.recv(100).startswith(b"* OK")
