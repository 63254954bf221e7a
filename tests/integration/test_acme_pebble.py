"""ACME against Debian's pebble on loopback: certificates ordered and renewed by the daemon
itself, answering TLS-ALPN-01 on an implicit-TLS listener and HTTP-01 on its HTTP listener.
Each test starts its own pebble (a throw-away CA for pebble's own TLS, pebble-challtestsrv
as its DNS pointing mail.test at 127.0.0.1, httpPort/tlsPort = the daemon's ports)."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from conftest import pick_port, wait_port

HOST = "127.0.0.1"
DOMAIN = "mail.test"
pytestmark = pytest.mark.skipif(
    not (shutil.which("pebble") and shutil.which("pebble-challtestsrv") and shutil.which("openssl")),
    reason="needs pebble, pebble-challtestsrv and openssl (scripts/deps.sh test)")


def run(*args, cwd=None):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=30)


EAB_KID = "kid-1"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


class Pebble:
    def __init__(self, tmp, http_port, tls_port, eab=False):
        self.eab = eab
        self.dir = tmp / "pebble"
        self.dir.mkdir()
        d = self.dir
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
            "/CN=pebble listener test CA", cwd=d)
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1", cwd=d)
        (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
        self.ca_pem = (d / "ca.pem").read_text()
        self.port, self.mgmt, self.dns, self.dns_mgmt = (pick_port() for _ in range(4))
        self.http_port, self.tls_port = http_port, tls_port
        self.procs = []
        self.start_dns()
        self.start()

    def start_dns(self):
        log = open(self.dir / "challtestsrv.log", "ab")
        self.procs.append(subprocess.Popen(
            ["pebble-challtestsrv", "-management", f"{HOST}:{self.dns_mgmt}", "-dns01",
             f"{HOST}:{self.dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-defaultIPv4", HOST, "-defaultIPv6", ""],
            stdout=log, stderr=log))
        assert wait_port(self.dns_mgmt), (self.dir / "challtestsrv.log").read_text()
        self.add_a(DOMAIN, HOST)

    def add_a(self, host, address):
        req = urllib.request.Request(
            f"http://{HOST}:{self.dns_mgmt}/add-a",
            data=json.dumps({"host": host, "addresses": [address]}).encode(), method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def start(self):
        conf = {"pebble": {
            "listenAddress": f"{HOST}:{self.port}",
            "managementListenAddress": f"{HOST}:{self.mgmt}",
            "certificate": str(self.dir / "srv.pem"), "privateKey": str(self.dir / "srv.key"),
            "httpPort": self.http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": self.eab}}
        if self.eab:
            conf["pebble"]["externalAccountMACKeys"] = {EAB_KID: EAB_KEY}
        (self.dir / "pebble.json").write_text(json.dumps(conf))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        log = open(self.dir / "pebble.log", "ab")
        self.pebble = subprocess.Popen(
            ["pebble", "-config", str(self.dir / "pebble.json"), "-dnsserver",
             f"{HOST}:{self.dns}"], stdout=log, stderr=log, env=env)
        log = self.dir / "pebble.log"
        assert wait_port(self.port), log.read_text()
        ctx = ssl.create_default_context(cadata=self.ca_pem)
        try:
            urllib.request.urlopen(self.directory, context=ctx, timeout=5).read()
        except OSError as e:  # say whose port answered: pebble's log tells if it bound it
            raise AssertionError(f"{self.directory}: {e}; pebble "
                                 f"{'exited' if self.pebble.poll() is not None else 'runs'}:\n"
                                 f"{log.read_text()}") from e

    def stop(self):
        self.pebble.terminate()
        self.pebble.wait(10)

    @property
    def directory(self):
        return f"https://{HOST}:{self.port}/dir"

    def close(self):
        for p in self.procs + [self.pebble]:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


@pytest.fixture
def setup(gatehouse, free_port, tmp_path):
    """(gatehouse, pebble, imaps port): the daemon's HTTP listener is pebble's httpPort, an
    implicit-TLS IMAP listener its tlsPort."""
    tls_port = free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"{HOST}:{tls_port}"], useTls=True,
                              tlsImplicit=True)
    p = Pebble(tmp_path, gatehouse.http_port, tls_port)
    yield gatehouse, p, tls_port
    p.close()


def set_ok(gatehouse, type_, op, key="c"):
    _, res, _ = gatehouse.call(f"{type_}/set", op)
    got = res.get("created") or res.get("updated") or {}
    assert key in got, (res.get("notCreated"), res.get("notUpdated"))
    return got[key]


def make_provider(gatehouse, p, challenge, **extra):
    ca = set_ok(gatehouse, "x:Certificate", {"create": {"c": {"certificate": p.ca_pem,
                                                               "name": "pebble-ca"}}})
    return set_ok(gatehouse, "x:AcmeProvider", {"create": {"c": dict(
        directory=p.directory, directoryCaCertificateId=ca["id"], challengeType=challenge,
        contact=["postmaster@mail.test"], **extra)}})["id"]


def get_obj(gatehouse, type_, id_):
    _, res, _ = gatehouse.call(f"{type_}/get", {"ids": [id_]})
    return res["list"][0]


def wait_for(gatehouse, cid, pred, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        c = get_obj(gatehouse, "x:Certificate", cid)
        if pred(c):
            return c
        time.sleep(0.3)
    shown = {k: v for k, v in c.items() if k not in ("certificate",)}
    raise AssertionError(f"certificate never reached the state: {shown}")


def served(port, sni=DOMAIN):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return s.getpeercert(binary_form=True)


def first_der(pem):
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[:end])


def order(gatehouse, pid):
    return set_ok(gatehouse, "x:Certificate", {"create": {"c": {
        "acmeProviderId": pid, "domains": [DOMAIN]}}})["id"]


@pytest.mark.parametrize("challenge", ["TlsAlpn01", "Http01"])
def test_first_issuance(setup, challenge):
    gatehouse, p, port = setup
    pid = make_provider(gatehouse, p, challenge)
    cid = order(gatehouse, pid)
    _, res, _ = gatehouse.call("x:Certificate/get", {"ids": []})
    state = res["state"]
    c = wait_for(gatehouse, cid, lambda c: c["renewalStatus"] in ("valid", "retrying", "failed")
                 and c.get("certificate"))
    assert c["renewalStatus"] == "valid", c
    assert c["lastRenewalError"] is None
    assert c["subjectNames"] == [DOMAIN]
    assert "Pebble" in c["issuer"] or "pebble" in c["issuer"], c["issuer"]
    assert "privateKey" not in c
    assert served(port) == first_der(c["certificate"])
    assert served(port, None) != first_der(p.ca_pem)  # the trust anchor is never served
    # the server's own changes are state changes clients see (and are pushed)
    _, res, _ = gatehouse.call("x:Certificate/changes", {"sinceState": state})
    assert cid in res["updated"], res
    prov = get_obj(gatehouse, "x:AcmeProvider", pid)
    assert prov["accountUri"].startswith(f"https://{HOST}:{p.port}/")
    assert "accountKeyPem" not in prov and "eabHmacKey" not in prov


def test_renewal_keeps_open_sessions(setup):
    gatehouse, p, port = setup
    pid = make_provider(gatehouse, p, "TlsAlpn01")
    cid = order(gatehouse, pid)
    first = wait_for(gatehouse, cid, lambda c: c["renewalStatus"] == "valid")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=DOMAIN) as s:
            s.settimeout(10)
            assert s.recv(1024).startswith(b"* OK")
            # every certificate is due now: one renewal, then back to normal
            set_ok(gatehouse, "x:AcmeProvider", {"update": {pid: {"renewBefore": "3650d"}}}, pid)
            wait_for(gatehouse, cid, lambda c: c["fingerprint"] != first["fingerprint"])
            set_ok(gatehouse, "x:AcmeProvider", {"update": {pid: {"renewBefore": "R23"}}}, pid)
            second = wait_for(gatehouse, cid, lambda c: c["renewalStatus"] == "valid")
            s.sendall(b"a1 NOOP\r\n")
            assert b"a1 OK" in s.recv(1024)
    now = get_obj(gatehouse, "x:Certificate", cid)
    assert served(port) == first_der(now["certificate"])
    assert first_der(second["certificate"]) != first_der(first["certificate"])


def test_external_account_binding(gatehouse, free_port, tmp_path):
    """A CA that requires EAB: without it the error says what to set; with the CA's key id
    and HMAC key the account is bound and the certificate issued."""
    port = free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"{HOST}:{port}"], useTls=True,
                              tlsImplicit=True)
    p = Pebble(tmp_path, gatehouse.http_port, port, eab=True)
    try:
        pid = make_provider(gatehouse, p, "TlsAlpn01")
        cid = order(gatehouse, pid)
        c = wait_for(gatehouse, cid, lambda c: c["lastRenewalError"])
        assert "eabKeyId and eabHmacKey" in c["lastRenewalError"], c["lastRenewalError"]
        set_ok(gatehouse, "x:AcmeProvider", {"update": {pid: {
            "eabKeyId": EAB_KID, "eabHmacKey": EAB_KEY}}}, pid)
        c = wait_for(gatehouse, cid, lambda c: c["renewalStatus"] == "valid")
        assert served(port) == first_der(c["certificate"])
        assert get_obj(gatehouse, "x:AcmeProvider", pid)["accountUri"]
    finally:
        p.close()


def test_changed_domains_are_ordered_again(setup):
    gatehouse, p, port = setup
    p.add_a("imap.test", HOST)
    pid = make_provider(gatehouse, p, "Http01")
    cid = order(gatehouse, pid)
    wait_for(gatehouse, cid, lambda c: c["renewalStatus"] == "valid")
    set_ok(gatehouse, "x:Certificate", {"update": {cid: {"domains": [DOMAIN, "imap.test"]}}},
           cid)
    c = wait_for(gatehouse, cid, lambda c: sorted(c["subjectNames"] or []) ==
                 ["imap.test", DOMAIN] and c["renewalStatus"] == "valid")
    assert served(port, "imap.test") == first_der(c["certificate"])


def test_ca_unreachable_keeps_the_old_certificate(setup):
    gatehouse, p, port = setup
    pid = make_provider(gatehouse, p, "TlsAlpn01")
    cid = order(gatehouse, pid)
    first = wait_for(gatehouse, cid, lambda c: c["renewalStatus"] == "valid")
    p.stop()
    set_ok(gatehouse, "x:AcmeProvider", {"update": {pid: {"renewBefore": "3650d"}}}, pid)
    c = wait_for(gatehouse, cid, lambda c: c["lastRenewalError"])
    assert c["renewalStatus"] == "retrying", c
    assert "cannot reach the ACME server" in c["lastRenewalError"], c
    assert c["fingerprint"] == first["fingerprint"]
    assert served(port) == first_der(first["certificate"])
    # the CA is back (a new pebble, which has forgotten the account): the operator's next
    # change retries at once, without waiting for the back-off
    p.start()
    set_ok(gatehouse, "x:AcmeProvider", {"update": {pid: {"maxRetries": 5}}}, pid)
    c = wait_for(gatehouse, cid, lambda c: c["fingerprint"] != first["fingerprint"], 30)
    set_ok(gatehouse, "x:AcmeProvider", {"update": {pid: {"renewBefore": "R23"}}}, pid)
    c = wait_for(gatehouse, cid, lambda c: c["renewalStatus"] == "valid")
    assert c["lastRenewalError"] is None


def test_refused_order_shows_the_ca_error(setup):
    """The CA's validation of a name that resolves where no listener answers fails, which
    invalidates the order: no certificate, the CA's words in lastRenewalError."""
    gatehouse, p, port = setup
    p.add_a("refused.test", "127.0.0.2")
    pid = make_provider(gatehouse, p, "TlsAlpn01")
    cid = set_ok(gatehouse, "x:Certificate", {"create": {"c": {
        "acmeProviderId": pid, "domains": ["refused.test"]}}})["id"]
    c = wait_for(gatehouse, cid, lambda c: c["lastRenewalError"])
    assert c["renewalStatus"] == "retrying", c
    assert c.get("certificate") is None
    assert "validation of refused.test failed" in c["lastRenewalError"], c["lastRenewalError"]
    assert "127.0.0.2" in c["lastRenewalError"], c["lastRenewalError"]


from test_persistence_postgres import BINDIRS, pg_url, wait_started  # noqa: E402,F401


@pytest.mark.skipif(not BINDIRS, reason="needs the postgresql package")
def test_shared_store_one_node_orders_every_node_installs(make_daemon, pg_url, tmp_path):
    """Two nodes on one PostgreSQL store (node b a standby for the addresses node a holds):
    the certificate is ordered once, by one node, and node b installs it too — it serves it
    once node a is gone."""
    a = make_daemon(args=["--store", pg_url])
    b = make_daemon(http_port=a.http_port, args=["--store", pg_url], start=False)
    b.start()
    wait_started(b)
    port = pick_port()
    a.create_listener(protocol="imap", bind=[f"{HOST}:{port}"], useTls=True, tlsImplicit=True)
    p = Pebble(tmp_path, a.http_port, port)
    try:
        pid = make_provider(a, p, "TlsAlpn01")
        cid = order(a, pid)
        c = wait_for(a, cid, lambda c: c["renewalStatus"] == "valid")
        end = time.time() + 5
        while time.time() < end and "x:Certificate: 1 changed by another node" not in \
                b.read_log():
            time.sleep(0.1)
        assert "x:Certificate: 1 changed by another node" in b.read_log(), b.read_log()
        issued = a.read_log().count("acme-issued") + b.read_log().count("acme-issued")
        assert issued == 1, (a.read_log(), b.read_log())
        a.kill9()
        end = time.time() + 10
        while time.time() < end:
            try:
                if served(port) == first_der(c["certificate"]):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert served(port) == first_der(c["certificate"])
    finally:
        p.close()
