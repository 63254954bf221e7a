"""x:Certificate objects as TLS sees them: SNI picks exact name, then wildcard, then the
default; a change applies to the next handshake without a restart; bad PEM, a key that does
not match and an expired certificate are refused with a message a person can act on.
Certificates are made with the openssl command."""
import os
import shutil
import socket
import ssl
import subprocess

import pytest

HOST = "127.0.0.1"
pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


def run(*args, cwd=None):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=30)


def make_cert(tmp_path, cn, names=None, rsa=False, bits=2048):
    """A self-signed certificate for cn (SAN: names, else cn): (chain PEM, key PEM)."""
    d = tmp_path / f"cert-{cn.replace('*', 'star')}-{len(os.listdir(tmp_path))}"
    d.mkdir()
    key = ["-newkey", f"rsa:{bits}"] if rsa else ["-newkey", "ec", "-pkeyopt",
                                               "ec_paramgen_curve:P-256"]
    san = ",".join(f"DNS:{n}" for n in (names or [cn]))
    run("openssl", "req", "-x509", *key, "-nodes", "-keyout", "k.pem", "-out", "c.pem",
        "-days", "30", "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}", cwd=d)
    return (d / "c.pem").read_text(), (d / "k.pem").read_text()


def make_expired(tmp_path, cn):
    """Valid 2023-01-01 to 2024-01-01, signed by itself through `openssl ca`."""
    d = tmp_path / f"expired-{cn}"
    d.mkdir()
    (d / "ca.cnf").write_text(
        f"[ca]\ndefault_ca=d\n[d]\ndir={d}\ndatabase={d}/index.txt\nnew_certs_dir={d}\n"
        f"serial={d}/serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "k.pem", "-out", "r.csr", "-subj", f"/CN={cn}", cwd=d)
    run("openssl", "ca", "-batch", "-selfsign", "-config", "ca.cnf", "-keyfile", "k.pem",
        "-in", "r.csr", "-out", "c.pem", "-startdate", "20230101000000Z", "-enddate",
        "20240101000000Z", "-notext", cwd=d)
    return (d / "c.pem").read_text(), (d / "k.pem").read_text()


def cert_set(gatehouse, op):
    _, res, _ = gatehouse.call("x:Certificate/set", op)
    return res


def upload(gatehouse, chain, key, **extra):
    res = cert_set(gatehouse, {"create": {"c": dict(certificate=chain, privateKey=key, **extra)}})
    assert "c" in (res.get("created") or {}), res
    return res["created"]["c"]["id"]


def refusal(gatehouse, chain, key):
    res = cert_set(gatehouse, {"create": {"c": dict(certificate=chain, privateKey=key)}})
    assert "c" in (res.get("notCreated") or {}), res
    return res["notCreated"]["c"].get("description", "")


def served_der(port, sni):
    """The DER of the certificate the server presents for this SNI (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return s.getpeercert(binary_form=True)


def der(pem):
    return ssl.PEM_cert_to_DER_cert(pem)


def imaps(gatehouse, port):
    return gatehouse.create_listener(protocol="imap", bind=[f"{HOST}:{port}"], useTls=True,
                                     tlsImplicit=True)


def test_sni_picks_exact_then_wildcard_then_default(gatehouse, free_port, tmp_path):
    port = free_port()
    imaps(gatehouse, port)
    exact = make_cert(tmp_path, "mail.example.com")
    wild = make_cert(tmp_path, "*.example.com")
    dflt = make_cert(tmp_path, "fallback.test", rsa=True)
    upload(gatehouse, *wild)
    upload(gatehouse, *exact)
    upload(gatehouse, *dflt, isDefault=True)

    assert served_der(port, "mail.example.com") == der(exact[0])
    assert served_der(port, "imap.example.com") == der(wild[0])
    assert served_der(port, "a.b.example.com") == der(dflt[0])  # one label only
    assert served_der(port, "example.com") == der(dflt[0])
    assert served_der(port, "unknown.test") == der(dflt[0])
    assert served_der(port, None) == der(dflt[0])


def test_certificate_change_applies_to_next_handshake(gatehouse, free_port, tmp_path):
    port = free_port()
    imaps(gatehouse, port)
    first = make_cert(tmp_path, "mx.example.net")
    cid = upload(gatehouse, *first)
    assert served_der(port, "mx.example.net") == der(first[0])

    # A session established under the old certificate keeps working.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    live = ctx.wrap_socket(socket.create_connection((HOST, port), timeout=5),
                           server_hostname="mx.example.net")
    assert live.recv(1024).startswith(b"* OK")

    second = make_cert(tmp_path, "mx.example.net")
    res = cert_set(gatehouse, {"update": {cid: {"certificate": second[0],
                                                "privateKey": second[1]}}})
    assert cid in (res.get("updated") or {}), res
    assert served_der(port, "mx.example.net") == der(second[0])

    live.sendall(b"a NOOP\r\n")
    assert b"a OK" in live.recv(1024)
    live.close()

    res = cert_set(gatehouse, {"destroy": [cid]})
    assert res.get("destroyed") == [cid], res
    assert served_der(port, "mx.example.net") != der(second[0])


def test_bad_certificates_are_refused(gatehouse, tmp_path):
    good = make_cert(tmp_path, "good.test")
    other = make_cert(tmp_path, "other.test")
    assert "privateKey does not match the certificate" in refusal(gatehouse, good[0], other[1])
    assert "certificate: no PEM certificate found" in refusal(gatehouse, "hello", good[1])
    assert "privateKey: no PEM private key found" in refusal(gatehouse, good[0], "hello")
    weak = make_cert(tmp_path, "weak.test", rsa=True, bits=1024)
    assert "privateKey is too weak (1024 bits)" in refusal(gatehouse, *weak)
    expired = make_expired(tmp_path, "old.test")
    assert "certificate expired on 2024-01-01T00:00:00Z" in refusal(gatehouse, *expired)


def test_derived_properties(gatehouse, tmp_path):
    chain, key = make_cert(tmp_path, "derived.test", ["derived.test", "www.derived.test"])
    cid = upload(gatehouse, chain, key)
    _, res, _ = gatehouse.call("x:Certificate/get", {"ids": [cid]})
    obj = res["list"][0]
    assert obj["subjectNames"] == ["derived.test", "www.derived.test"]
    assert obj["issuer"] == "derived.test"
    assert "privateKey" not in obj or obj["privateKey"] is None
    fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                        input=chain.encode(), capture_output=True, check=True).stdout.decode()
    assert obj["fingerprint"] == fp.strip().split("=", 1)[1]


def s_client_leaf(port, *args):
    """The PEM leaf `openssl s_client` is shown with these options ("" when refused)."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername",
                        "mail.example.com", *args], input=b"", capture_output=True, timeout=20)
    out = p.stdout.decode(errors="replace")
    start = out.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        return ""
    end = out.find("-----END CERTIFICATE-----", start)
    return out[start:end + len("-----END CERTIFICATE-----")] + "\n"


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_signature_algorithms_pick_the_key_type(gatehouse, free_port, tmp_path, version):
    """With an RSA default and an ECDSA certificate for the same name, a client whose
    signature_algorithms accept only ECDSA gets the ECDSA one, and only RSA the RSA one."""
    port = free_port()
    imaps(gatehouse, port)
    rsa = make_cert(tmp_path, "mail.example.com", rsa=True)
    ec = make_cert(tmp_path, "mail.example.com")
    upload(gatehouse, *rsa, isDefault=True, name="rsa")
    upload(gatehouse, *ec, name="ec")
    assert der(s_client_leaf(port, version, "-sigalgs", "ECDSA+SHA256")) == der(ec[0])
    rsa_alg = "RSA-PSS+SHA256" if version == "-tls1_3" else "RSA+SHA256"
    assert der(s_client_leaf(port, version, "-sigalgs", rsa_alg)) == der(rsa[0])
