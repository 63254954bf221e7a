"""x:Certificate as an object: the self-signed certificate made on first start, values
derived from the PEM, a private key that is never returned, and refusals that name the
property at fault. (How TLS uses the certificates is tested in test_tls_certificates.py.)"""
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
CERT = "x:Certificate"


def make_cert(tmp_path, cn, tag):
    d = tmp_path / tag
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
                    "-days", "30", "-subj", f"/CN={cn}", "-addext",
                    f"subjectAltName=DNS:{cn},DNS:www.{cn}"],
                   cwd=d, check=True, capture_output=True, timeout=30)
    return (d / "c.pem").read_text(), (d / "k.pem").read_text()


def test_self_signed_on_first_start(gatehouse):
    _, res, _ = gatehouse.call(CERT + "/get", {})
    assert len(res["list"]) == 1, res
    c = res["list"][0]
    assert c["name"] == "self-signed" and c["isDefault"] is True
    assert "privateKey" not in c
    assert c["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    _, s, _ = gatehouse.call("x:SystemSettings/get", {})
    assert s["list"][0]["defaultHostname"] in c["subjectNames"]


def test_derived_values_and_write_only_key(gatehouse, tmp_path):
    chain, key = make_cert(tmp_path, "mail.example.test", "a")
    _, res, _ = gatehouse.call(CERT + "/set", {"create": {"c": {
        "certificate": chain, "privateKey": key}}})
    c = res["created"]["c"]
    assert c["name"] == "mail.example.test"
    assert c["subjectNames"] == ["mail.example.test", "www.mail.example.test"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["notAfter"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["notBefore"])
    assert c["issuer"] == "mail.example.test"
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", c["fingerprint"])
    assert c["isDefault"] is False
    assert "privateKey" not in c
    _, res, _ = gatehouse.call(CERT + "/get", {"ids": [c["id"]], "properties": ["privateKey"]})
    assert res["list"] == [{"id": c["id"]}]
    # an update without the key keeps the stored one; a server-set value cannot be changed
    _, res, _ = gatehouse.call(CERT + "/set", {"update": {c["id"]: {"isDefault": True}}})
    assert c["id"] in res["updated"]
    _, res, _ = gatehouse.call(CERT + "/set", {"update": {c["id"]: {"issuer": "me"}}})
    assert res["notUpdated"][c["id"]]["properties"] == ["issuer"]


def test_refusals_name_the_property(gatehouse, tmp_path):
    chain, key = make_cert(tmp_path, "one.example.test", "one")
    _, other_key = make_cert(tmp_path, "two.example.test", "two")
    _, res, _ = gatehouse.call(CERT + "/set", {"create": {
        "garbage": {"certificate": "not a pem", "privateKey": key},
        "mismatch": {"certificate": chain, "privateKey": other_key},
        "nokey": {"certificate": chain},
        "serverset": {"certificate": chain, "privateKey": key, "fingerprint": "AA"}}})
    nc = res["notCreated"]
    assert nc["garbage"]["type"] == "invalidProperties"
    assert nc["garbage"]["properties"] == ["certificate"]
    assert nc["mismatch"]["properties"] == ["privateKey"]
    assert "match" in nc["mismatch"]["description"]
    assert nc["serverset"]["properties"] == ["fingerprint"]
    # a chain without a key is a trust anchor (for destinations), accepted and never served
    assert list(res["created"]) == ["nokey"] and "nokey" not in nc
