"""Helpers for the destination tests: a private CA and its certificates (openssl command),
scripted mail backends on loopback (plain, implicit TLS or STARTTLS, with or without a PROXY
header), and small JMAP helpers for x:Destination."""
import os
import socket
import ssl
import struct
import subprocess
import threading
import time

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def run(*args, cwd=None):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=30)


class CA:
    """A private certificate authority in directory d; leaf() issues server certificates."""

    def __init__(self, d, name="Test CA"):
        self.d = d
        os.makedirs(d, exist_ok=True)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        self.pem = open(os.path.join(d, "ca.pem")).read()
        self.n = 0

    def leaf(self, cn, sans):
        """(cert path, key path) for cn with subjectAltName sans, e.g. "IP:127.0.0.1"."""
        self.n += 1
        c, k, r = f"leaf{self.n}.pem", f"leaf{self.n}.key", f"leaf{self.n}.csr"
        ext = os.path.join(self.d, f"leaf{self.n}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n")
        run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", k, "-out", r, "-subj", f"/CN={cn}", cwd=self.d)
        run("openssl", "x509", "-req", "-in", r, "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", c, "-days", "30", "-extfile", ext, cwd=self.d)
        return os.path.join(self.d, c), os.path.join(self.d, k)


def read_proxy_header(conn):
    """Reads a PROXY v1 or v2 header if one comes first; returns it (b"" when none)."""
    conn.settimeout(5)
    first = conn.recv(16, socket.MSG_PEEK)
    if first.startswith(V2_SIG[:12]):
        head = conn.recv(16, socket.MSG_WAITALL)
        return head + conn.recv(struct.unpack("!H", head[14:16])[0], socket.MSG_WAITALL)
    if first.startswith(b"PROXY "):
        head = b""
        while not head.endswith(b"\r\n"):
            head += conn.recv(1)
        return head
    return b""


class Backend:
    """A scripted mail server on 127.0.0.1. tls: None, "implicit" or "starttls" (SMTP, IMAP
    or POP3 dialogue, per protocol); cert: (certfile, keyfile) for TLS; proxy: a PROXY header
    comes first (forwarding proxyV2 or proxyV1; False for "none"). Each session:
    header (recorded), greeting, then one reply per line, until QUIT or LOGOUT: answered with
    the protocol's goodbye, then closed. sessions counts sessions that got past their
    greeting; checks counts connections that came with a PROXY v2 LOCAL header; resumed counts
    TLS sessions that resumed an earlier one."""

    GREETINGS = {
        "smtp": b"220 {name} ESMTP\r\n",
        "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] {name} ready\r\n",
        "pop3": b"+OK {name} ready\r\n",
    }
    GOODBYES = {
        "smtp": b"221 2.0.0 {name} closing\r\n",
        "imap": b"* BYE {name} logging out\r\n",
        "pop3": b"+OK {name} signing off\r\n",
    }

    def __init__(self, name="backend", protocol="smtp", tls=None, cert=None, port=0, proxy=True):
        self.name, self.protocol, self.tls, self.proxy = name, protocol, tls, proxy
        self.ctx = None
        self.sni = []
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*cert)
            self.ctx.sni_callback = lambda s, name, c: self.sni.append(name)
        self.headers, self.lines, self.errors = [], [], []
        self.pre_tls = []  # commands received before a STARTTLS upgrade
        self.sessions = self.checks = self.resumed = 0
        self.lock = threading.Lock()
        self.port = port
        self.start()

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, args=(self.sock,), daemon=True).start()

    def stop(self):
        self.sock.close()

    def serve(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    refuse = False  # greet with a refusal (a backend that is up but unwell)

    def greeting(self):
        if self.refuse:
            return b"421 4.3.2 " + self.name.encode() + b" busy\r\n"
        return self.GREETINGS[self.protocol].replace(b"{name}", self.name.encode())

    def goodbye(self, conn, line):
        """Answers QUIT or a (tagged) LOGOUT as the protocol does. A client that hangs up
        without reading it, as the health check does, is no error of the session."""
        reply = self.GOODBYES[self.protocol].replace(b"{name}", self.name.encode())
        word = line.split(b" ")
        if self.protocol == "imap" and len(word) == 2:
            reply += word[0] + b" OK LOGOUT completed\r\n"
        try:
            conn.sendall(reply)
        except OSError:
            pass

    def starttls(self, conn):
        """The protocol's upgrade, server side; returns the TLS socket."""
        f = conn.makefile("rb")
        conn.sendall(self.greeting())
        while True:
            line = f.readline().rstrip(b"\r\n")
            if not line:
                raise OSError("closed before STARTTLS")
            with self.lock:
                self.pre_tls.append(line)
            word = line.split(b" ")
            if self.protocol == "smtp" and word[0].upper() in (b"EHLO", b"LHLO"):
                conn.sendall(b"250-" + self.name.encode() + b"\r\n250 STARTTLS\r\n")
            elif self.protocol == "smtp" and line.upper() == b"STARTTLS":
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                break
            elif self.protocol == "imap" and len(word) > 1 and word[1].upper() == b"STARTTLS":
                conn.sendall(word[0] + b" OK Begin TLS negotiation now\r\n")
                break
            elif self.protocol == "pop3" and line.upper() == b"STLS":
                conn.sendall(b"+OK Begin TLS\r\n")
                break
            else:
                conn.sendall(b"500 not yet\r\n")
        return self.ctx.wrap_socket(conn, server_side=True)

    def session(self, conn):
        try:
            header = read_proxy_header(conn) if self.proxy else b""
            with self.lock:
                self.headers.append(header)
                if header.startswith(V2_SIG) and header[12] == 0x20:
                    self.checks += 1
            if self.tls == "implicit":
                conn = self.ctx.wrap_socket(conn, server_side=True)
                conn.sendall(self.greeting())
            elif self.tls == "starttls":
                conn = self.starttls(conn)
            else:
                conn.sendall(self.greeting())
            with self.lock:
                self.sessions += 1
                self.resumed += bool(self.tls and conn.session_reused)
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.rstrip(b"\r")
                    with self.lock:
                        self.lines.append(line)
                    if line.upper() in (b"QUIT", b"GH2 LOGOUT", b"LOGOUT"):
                        self.goodbye(conn, line)
                        return
                    if line.startswith(b"BLOB "):  # BLOB n: n bytes follow, echoed back
                        need = int(line[5:])
                        while len(buf) < need:
                            more = conn.recv(65536)
                            if not more:
                                return
                            buf += more
                        conn.sendall(buf[:need])
                        buf = buf[need:]
                        continue
                    conn.sendall(b"250 " + self.name.encode() + b" got " + line + b"\r\n")
        except (OSError, ssl.SSLError) as e:
            with self.lock:
                self.errors.append(repr(e))
        finally:
            try:
                conn.close()
            except OSError:
                pass


def destination(gatehouse, port, **extra):
    props = dict(protocol="smtp", address=f"127.0.0.1:{port}")
    props.update(extra)
    _, res, _ = gatehouse.call("x:Destination/set", {"create": {"d": props}})
    assert "d" in (res.get("created") or {}), res
    return res["created"]["d"]["id"]


def update_destination(gatehouse, did, **patch):
    _, res, _ = gatehouse.call("x:Destination/set", {"update": {did: patch}})
    assert did in (res.get("updated") or {}), res


def get_destination(gatehouse, did):
    _, res, _ = gatehouse.call("x:Destination/get", {"ids": [did]})
    return res["list"][0]


def wait_status(gatehouse, did, status, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        got = get_destination(gatehouse, did)
        if got["status"] == status:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{did} is {got['status']}, not {status}: {got}")


def eventually(check, timeout=5):
    """A change reaches the workers by message just after the response: polls check()."""
    end = time.time() + timeout
    while True:
        got = check()
        if got or time.time() > end:
            return got
        time.sleep(0.05)


def trust_anchor(gatehouse, pem):
    _, res, _ = gatehouse.call("x:Certificate/set", {"create": {"t": {"certificate": pem}}})
    assert "t" in (res.get("created") or {}), res
    return res["created"]["t"]["id"]


def greeting_of(port, timeout=10):
    """Connects, returns the first line the client sees, and closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = b""
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def one_reply_backend(greeting, reply):
    """A backend for one session on 127.0.0.1: greeting, then after the client's first bytes
    one reply, then it closes. Returns its listening socket (close it after the test)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(greeting)
            conn.recv(4096)
            conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return srv
