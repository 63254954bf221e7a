"""Logins at the front door with real backends started here on loopback: a private Dovecot
(IMAP, POP3 and ManageSieve behind PROXY v2, users from a passwd-file) and a private Postfix
submission trusting the front door for XCLIENT (smtpd_authorized_xclient_hosts). The auth
service is a small auth_http server written here. Runs as root (the servers drop to their
users); each server is started once for the module."""
import base64
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

from conftest import pick_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("postfix") or not shutil.which("dovecot"),
    reason="needs root, Postfix and Dovecot (scripts/deps.sh test)")

V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0, 0, 0])
USERS = {"jo@example.com": "s3cret pass", "ann": "Ännchen"}


def wait_ready(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(V2_LOCAL)
                if s.recv(100):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Dovecot:
    def __init__(self, d):
        self.d = d
        self.imap, self.pop3, self.sieve = (pick_port() for _ in range(3))
        os.makedirs(os.path.join(d, "base"), exist_ok=True)
        os.makedirs(os.path.join(d, "mail"), exist_ok=True)
        shutil.chown(os.path.join(d, "mail"), "dovecot", "dovecot")
        self.log = os.path.join(d, "dovecot.log")
        with open(os.path.join(d, "passwd"), "w", encoding="utf-8") as f:
            for user, pw in USERS.items():
                f.write(f"{user}:{{PLAIN}}{pw}:::::\n")
        self.conf = os.path.join(d, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""base_dir = {d}/base
state_dir = {d}/base/state
log_path = {self.log}
instance_name = gh-auth-test-{os.getpid()}
protocols = imap pop3 sieve
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
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
    port = 0
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
service auth {{
  unix_listener {d}/auth-client {{
    mode = 0666
  }}
}}
""")
        self.auth_socket = f"{d}/auth-client"
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in (self.imap, self.pop3, self.sieve):
            assert wait_ready(p), self.read_log()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Postfix:
    """XCLIENT's LOGIN counts only where SASL is on: Postfix asks the Dovecot above."""

    def __init__(self, d, sasl_socket):
        self.d = d
        self.smtp = pick_port()
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
mynetworks =
maillog_file_prefixes = {d}
maillog_file = {self.log}
smtpd_upstream_proxy_protocol = haproxy
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl_socket}
""")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(f"""127.0.0.1:{self.smtp} inet n - n - - smtpd
postlog   unix-dgram n - n - 1 postlogd
rewrite   unix - - n - - trivial-rewrite
cleanup   unix n - n - 0 cleanup
proxymap  unix - - n - - proxymap
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
defer     unix - - n - 0 bounce
bounce    unix - - n - 0 bounce
""")
        self.proc = subprocess.Popen(["postfix", "-c", self.conf, "start-fg"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_ready(self.smtp), self.read_log()

    def stop(self):
        subprocess.run(["postfix", "-c", self.conf, "stop"], capture_output=True, timeout=30)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture(scope="module")
def top():
    d = tempfile.mkdtemp(prefix="gh-authreal-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def dovecot(top):
    d = os.path.join(top, "dovecot")
    os.makedirs(d, mode=0o755)
    dc = Dovecot(d)
    yield dc
    dc.stop()


@pytest.fixture(scope="module")
def postfix(top, dovecot):
    d = os.path.join(top, "postfix")
    os.makedirs(d, mode=0o755)
    pf = Postfix(d, dovecot.auth_socket)
    yield pf
    pf.stop()


class Service:
    """auth_http: checks the password against USERS and names the backend port for the
    protocol; the password for the backend login is the user's own."""

    def __init__(self, ports):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                h = {k: v for k, v in self.headers.items()}
                outer.requests.append(h)
                # raw bytes in the headers (http.server reads them as latin-1)
                user = urllib.parse.unquote_to_bytes(h["Auth-User"].encode("latin-1"))
                pw_raw = urllib.parse.unquote_to_bytes(h["Auth-Pass"].encode("latin-1"))
                user, pw = user.decode(), pw_raw.decode()
                self.send_response(200)
                if USERS.get(user) == pw or h["Auth-Method"] == "none":
                    self.send_header("Auth-Status", "OK")
                    self.send_header("Auth-Server", "127.0.0.1")
                    self.send_header("Auth-Port", str(ports[h["Auth-Protocol"]]))
                    self.send_header("Auth-Pass", pw_raw.decode("latin-1"))
                else:
                    self.send_header("Auth-Status", "Invalid login or password")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(gatehouse, free_port, dovecot, postfix):
    svc = Service({"imap": dovecot.imap, "pop3": dovecot.pop3, "sieve": dovecot.sieve,
                   "smtp": postfix.smtp})
    ports = {}
    for proto in ("imap", "pop3", "manageSieve", "smtp"):
        ports[proto] = free_port()
        gatehouse.create_listener(name=f"front-{proto.lower()}", protocol=proto,
                                  bind=[f"127.0.0.1:{ports[proto]}"], useTls=False)
    _, res, _ = gatehouse.call("x:AuthService/set", {"create": {"a": {
        "url": svc.url, "listeners": [f"front-{p.lower()}" for p in ports]}}})
    assert "a" in res.get("created", {}), res
    time.sleep(0.3)
    yield ports, svc
    svc.close()


def session(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb")


def test_imap_login_at_dovecot(front, dovecot, gatehouse):
    ports, svc = front
    s, f = session(ports["imap"])
    f.readline()
    s.sendall(b'a1 LOGIN "jo@example.com" "s3cret pass"\r\n')
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    assert line.startswith(b"a1 OK"), (line, dovecot.read_log()[-2000:])
    s.sendall(b"a2 SELECT INBOX\r\n")
    while not line.startswith(b"a2 "):
        line = f.readline()
    assert line.startswith(b"a2 OK"), line
    s.close()
    # 8-bit password: the backend login goes as a literal
    s, f = session(ports["imap"])
    f.readline()
    s.sendall(b"b1 AUTHENTICATE PLAIN " +
              base64.b64encode(b"\x00ann\x00" + "Ännchen".encode()) + b"\r\n")
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    assert line.startswith(b"b1 OK"), (line, dovecot.read_log()[-2000:])
    s.close()
    assert "s3cret" not in gatehouse.read_log()


def test_pop3_and_sieve_login_at_dovecot(front, dovecot):
    ports, _ = front
    s, f = session(ports["pop3"])
    f.readline()
    s.sendall(b"USER jo@example.com\r\nPASS s3cret pass\r\n")
    assert f.readline() == b"+OK\r\n"
    assert f.readline().startswith(b"+OK"), dovecot.read_log()[-2000:]
    s.sendall(b"STAT\r\n")
    assert f.readline().startswith(b"+OK 0 0")
    s.close()
    s, f = session(ports["manageSieve"])
    while not f.readline().startswith(b"OK"):
        pass
    s.sendall(b'AUTHENTICATE "PLAIN" "' +
              base64.b64encode(b"\x00jo@example.com\x00s3cret pass") + b'"\r\n')
    assert f.readline().startswith(b"OK"), dovecot.read_log()[-2000:]
    s.sendall(b"LISTSCRIPTS\r\n")
    assert f.readline().startswith(b"OK")
    s.close()
    s, f = session(ports["pop3"])
    f.readline()
    s.sendall(b"USER jo@example.com\r\nPASS wrong\r\n")
    f.readline()
    assert f.readline() == b"-ERR [AUTH] Authentication failed\r\n"
    s.close()


def smtp_reply(f):
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def test_smtp_login_reaches_postfix_through_xclient(front, postfix):
    ports, _ = front
    s, f = session(ports["smtp"])
    f.readline()
    s.sendall(b"EHLO client.example\r\n")
    assert any(b"AUTH PLAIN LOGIN" in line for line in smtp_reply(f))
    s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\x00jo@example.com\x00s3cret pass") + b"\r\n")
    assert f.readline() == b"235 2.7.0 Authentication successful\r\n", postfix.read_log()[-2000:]
    s.sendall(b"MAIL FROM:<jo@example.com>\r\n")
    assert f.readline().startswith(b"250"), postfix.read_log()[-2000:]
    s.sendall(b"RCPT TO:<someone@elsewhere.example>\r\n")
    reply = f.readline()
    assert reply.startswith(b"250"), (reply, postfix.read_log()[-2000:])  # relayed: logged in
    s.sendall(b"QUIT\r\n")
    s.close()
    deadline = time.time() + 10
    while "sasl_username=jo@example.com" not in postfix.read_log() and time.time() < deadline:
        time.sleep(0.1)
    assert "sasl_method=XCLIENT, sasl_username=jo@example.com" in postfix.read_log()
