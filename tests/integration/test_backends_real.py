"""Destinations against real backends started here on loopback: a private Postfix instance
(smtpd behind PROXY v2, STARTTLS and implicit TLS with smtpd_tls_cert_file) and a private
Dovecot (IMAP, POP3, ManageSieve behind PROXY v2, passwd-file users). TLS legs verified
against a private CA held as a trust-anchor x:Certificate; a backend stopped and started again
under a connect loop loses no session. Runs as root (Postfix and Dovecot drop to their users);
each server is started once for the module and stopped at its end."""
import base64
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter

import pytest

from backend_kit import (CA, V2_SIG, Backend, destination, eventually, get_destination,
                         greeting_of, trust_anchor, update_destination, wait_status)
from conftest import pick_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("postfix") or not shutil.which("dovecot")
    or not shutil.which("openssl"),
    reason="needs root, Postfix, Dovecot and openssl (scripts/deps.sh test)")

FAST = dict(checkInterval="200ms", checkTimeout="1s", rise=2, fall=3)
LOCAL = V2_SIG + bytes([0x20, 0, 0, 0])  # PROXY v2 LOCAL: no addresses


def wait_ready(port, timeout=20):
    """Waits for a greeting, introducing ourselves with a LOCAL header as a check does (a
    bare connection would be logged as a broken PROXY client)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(LOCAL)
                if s.recv(100):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Postfix:
    """A private Postfix: config, queue and data under d; smtpd on two loopback ports."""

    def __init__(self, d, cert, key):
        self.d = d
        self.smtp, self.smtps = pick_port(), pick_port()
        for sub in ("conf", "queue", "data"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        shutil.chown(os.path.join(d, "data"), "postfix")
        self.conf = os.path.join(d, "conf")
        self.log = os.path.join(d, "maillog")
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.test
mydestination =
maillog_file_prefixes = {d}
maillog_file = {self.log}
smtpd_upstream_proxy_protocol = haproxy
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
""")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(f"""127.0.0.1:{self.smtp} inet n - n - - smtpd
127.0.0.1:{self.smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
cleanup   unix n - n - 0 cleanup
proxymap  unix - - n - - proxymap
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
defer     unix - - n - 0 bounce
bounce    unix - - n - 0 bounce
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["postfix", "-c", self.conf, "start-fg"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_ready(self.smtp), self.read_log()  # master binds smtps with it

    def stop(self):
        subprocess.run(["postfix", "-c", self.conf, "stop"], capture_output=True, timeout=30)
        if self.proc:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""


class Dovecot:
    """A private Dovecot: IMAP (STARTTLS), IMAPS, POP3 (STLS), ManageSieve, each behind PROXY;
    plaintext logins are refused, so a login through the front door proves the leg is TLS."""

    def __init__(self, d, cert, key):
        self.d = d
        self.imap, self.imaps, self.pop3, self.sieve = (pick_port() for _ in range(4))
        os.makedirs(os.path.join(d, "base"), exist_ok=True)
        os.makedirs(os.path.join(d, "mail"), exist_ok=True)
        shutil.chown(os.path.join(d, "mail"), "dovecot", "dovecot")
        self.log = os.path.join(d, "dovecot.log")
        with open(os.path.join(d, "passwd"), "w") as f:
            f.write("user:{PLAIN}secret:::::\n")
        self.conf = os.path.join(d, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""base_dir = {d}/base
state_dir = {d}/base/state
log_path = {self.log}
instance_name = gh-test-{os.getpid()}
protocols = imap pop3 sieve
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
haproxy_trusted_networks = 127.0.0.0/8
auth_mechanisms = plain
first_valid_uid = 100
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u
}}
mail_location = maildir:{d}/mail/%u/Maildir
service imap-login {{
  inet_listener imap {{
    port = {self.imap}
    haproxy = yes
  }}
  inet_listener imaps {{
    port = {self.imaps}
    ssl = yes
    haproxy = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3}
    haproxy = yes
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = {self.sieve}
    haproxy = yes
  }}
}}
service anvil {{
  chroot =
}}
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in (self.imap, self.pop3, self.sieve):  # imaps is bound with them
            assert wait_ready(p), self.read_log()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture(scope="module")
def top():
    """A directory the servers' own users can walk (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="gh-backends-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(top):
    d = os.path.join(top, "pki")
    ca, other = CA(os.path.join(d, "ca")), CA(os.path.join(d, "other"), "Other CA")
    cert, key = ca.leaf("127.0.0.1", "IP:127.0.0.1")
    for path in (d, os.path.join(d, "ca")):
        os.chmod(path, 0o755)
    for path in (cert, key):
        os.chmod(path, 0o644)  # read by the postfix and dovecot processes
    return {"ca": ca, "other": other, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def postfix(top, pki):
    d = os.path.join(top, "postfix")
    os.makedirs(d, mode=0o755)
    pf = Postfix(d, pki["cert"], pki["key"])
    pf.start()
    yield pf
    pf.stop()


@pytest.fixture(scope="module")
def dovecot(top, pki):
    d = os.path.join(top, "dovecot")
    os.makedirs(d, mode=0o755)
    dc = Dovecot(d, pki["cert"], pki["key"])
    dc.start()
    yield dc
    dc.stop()


def lines_until(s, done, limit=65536):
    data = b""
    while not done(data) and len(data) < limit:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def smtp_reply(s):
    def done(data):
        lines = data.split(b"\r\n")
        return len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" "
    return lines_until(s, done)


def test_postfix_starttls_leg(gatehouse, free_port, postfix, pki):
    anchor = trust_anchor(gatehouse, pki["ca"].pem)
    did = destination(gatehouse, postfix.smtp, tls="starttls", tlsCaCertificateId=anchor,
                      **FAST)
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    wait_status(gatehouse, did, "up")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert smtp_reply(s) == b"220 pf.test ESMTP Postfix\r\n"
        s.sendall(b"EHLO client.example\r\n")
        ehlo = smtp_reply(s)
        assert ehlo.startswith(b"250-pf.test") and b"STARTTLS" not in ehlo  # already TLS
        s.sendall(b"QUIT\r\n")
        assert smtp_reply(s).startswith(b"221")
    log = postfix.read_log()
    assert "TLS connection established from localhost[127.0.0.1]" in log, log[-2000:]


def test_postfix_implicit_leg_and_a_refused_certificate(gatehouse, free_port, postfix, pki):
    good = trust_anchor(gatehouse, pki["ca"].pem)
    did = destination(gatehouse, postfix.smtps, tls="implicit", tlsCaCertificateId=good,
                      healthCheck=False)
    port = free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
    assert greeting_of(port) == b"220 pf.test ESMTP Postfix\r\n"
    _, res, _ = gatehouse.call("x:Certificate/set", {"create": {"o": {
        "certificate": pki["other"].pem}}})
    update_destination(gatehouse, did, tlsCaCertificateId=res["created"]["o"]["id"],
                       healthCheck=True, **FAST)
    assert eventually(lambda: greeting_of(port).startswith(b"421 4.3.0"))
    down = wait_status(gatehouse, did, "down")
    assert "certificate" in down["lastCheckError"], down


def test_postfix_stopped_and_started_under_a_connect_loop(gatehouse, free_port, postfix):
    other = Backend("spare")
    stop, failures, seen = threading.Event(), [], Counter()
    try:
        dp = destination(gatehouse, postfix.smtp, **FAST)
        destination(gatehouse, other.port, **FAST)
        port = free_port()
        gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{port}"], useTls=False)
        wait_status(gatehouse, dp, "up")

        def loop():
            while not stop.is_set():
                try:
                    seen[greeting_of(port)[:11]] += 1
                except OSError as e:
                    failures.append(repr(e))
                time.sleep(0.01)

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(0.3)
        postfix.stop()
        wait_status(gatehouse, dp, "down")
        before = seen[b"220 pf.test"]
        postfix.start()
        wait_status(gatehouse, dp, "up")
        end = time.time() + 10
        while seen[b"220 pf.test"] == before and time.time() < end:
            time.sleep(0.05)
        stop.set()
        t.join(30)
        assert seen[b"220 pf.test"] > before, seen  # back in use after rise
        assert not failures, failures
        assert set(seen) <= {b"220 pf.test", b"220 spare E"}, seen  # no session lost
    finally:
        stop.set()
        other.stop()
        if not postfix.proc:
            postfix.start()


def imap_line(s, tag):
    return lines_until(s, lambda d: (b"\r\n" + tag + b" ") in (b"\r\n" + d) and d.endswith(
        b"\r\n"))


def test_dovecot_imap_starttls_leg_lets_the_client_log_in(gatehouse, free_port, dovecot, pki):
    anchor = trust_anchor(gatehouse, pki["ca"].pem)
    did = destination(gatehouse, dovecot.imap, protocol="imap", tls="starttls",
                      tlsCaCertificateId=anchor, **FAST)
    port = free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"127.0.0.1:{port}"], useTls=False)
    wait_status(gatehouse, did, "up")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        greeting = lines_until(s, lambda d: d.endswith(b"\r\n"))
        assert greeting.startswith(b"* OK ") and b"CAPABILITY" not in greeting, greeting
        s.sendall(b"a1 CAPABILITY\r\n")
        caps = imap_line(s, b"a1")
        assert b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps, caps  # after TLS
        s.sendall(b"a2 LOGIN user secret\r\n")
        assert b"a2 OK" in imap_line(s, b"a2")  # Dovecot refuses logins in clear
        s.sendall(b"a3 LOGOUT\r\n")
        imap_line(s, b"a3")
    assert "Login: user=<user>" in dovecot.read_log()


def test_dovecot_imaps_leg_behind_an_implicit_tls_listener(gatehouse, free_port, dovecot, pki):
    anchor = trust_anchor(gatehouse, pki["ca"].pem)
    destination(gatehouse, dovecot.imaps, protocol="imap", tls="implicit",
                tlsCaCertificateId=anchor, healthCheck=False)
    port = free_port()
    gatehouse.create_listener(protocol="imap", bind=[f"127.0.0.1:{port}"], tlsImplicit=True)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            assert lines_until(s, lambda d: d.endswith(b"\r\n")).startswith(b"* OK")
            s.sendall(b"a1 LOGIN user secret\r\n")
            assert b"a1 OK" in imap_line(s, b"a1")


def test_dovecot_pop3_stls_leg(gatehouse, free_port, dovecot, pki):
    anchor = trust_anchor(gatehouse, pki["ca"].pem)
    did = destination(gatehouse, dovecot.pop3, protocol="pop3", tls="starttls",
                      tlsCaCertificateId=anchor, **FAST)
    port = free_port()
    gatehouse.create_listener(protocol="pop3", bind=[f"127.0.0.1:{port}"], useTls=False)
    wait_status(gatehouse, did, "up")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        one = lambda: lines_until(s, lambda d: d.endswith(b"\r\n"))
        assert one().startswith(b"+OK")
        s.sendall(b"USER user\r\n")
        assert one().startswith(b"+OK")
        s.sendall(b"PASS secret\r\n")
        assert one().startswith(b"+OK"), "a login in clear would be refused"
        s.sendall(b"QUIT\r\n")
        one()


def test_dovecot_managesieve_starttls_leg_presents_the_capabilities_after_tls(
        gatehouse, free_port, dovecot, pki):
    anchor = trust_anchor(gatehouse, pki["ca"].pem)
    did = destination(gatehouse, dovecot.sieve, protocol="manageSieve", tls="starttls",
                      tlsCaCertificateId=anchor, **FAST)
    port = free_port()
    gatehouse.create_listener(protocol="manageSieve", bind=[f"127.0.0.1:{port}"], useTls=False)
    wait_status(gatehouse, did, "up")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        block = lines_until(s, lambda d: b"\r\nOK" in d and d.endswith(b"\r\n"))
        assert b'"SASL" "PLAIN"' in block and b'"STARTTLS"' not in block, block
        auth = base64.b64encode(b"\0user\0secret")
        s.sendall(b'AUTHENTICATE "PLAIN" "' + auth + b'"\r\n')
        assert lines_until(s, lambda d: d.endswith(b"\r\n")).startswith(b"OK"), "login"
        s.sendall(b"LOGOUT\r\n")


def test_health_checks_leave_backends_no_bogus_client(gatehouse, dovecot, postfix):
    dd = destination(gatehouse, dovecot.imap, protocol="imap", **FAST)
    dp = destination(gatehouse, postfix.smtp, **FAST)
    wait_status(gatehouse, dd, "up")
    wait_status(gatehouse, dp, "up")
    # the logs from here: creating the second destination replaced the set and dropped a
    # check of the first one that may have been under way (a reset, logged as such)
    d_from, p_from = len(dovecot.read_log()), len(postfix.read_log())
    time.sleep(0.6)  # three rounds of checks at 200 ms
    # PROXY v2 LOCAL: each check is logged with the real peer and no complaint about a header
    dlog, plog = dovecot.read_log()[d_from:], postfix.read_log()[p_from:]
    assert "rip=127.0.0.1" in dlog and "haproxy" not in dlog.lower(), dlog
    assert "connect from localhost[127.0.0.1]" in plog and "haproxy" not in plog, plog
    assert get_destination(gatehouse, dd)["lastCheckError"] is None
