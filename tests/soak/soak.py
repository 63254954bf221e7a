#!/usr/bin/env python3
"""Soak: one daemon under bounded mixed traffic for SOAK_SECONDS (default 600), then checks
that nothing failed, that resident memory stopped growing and that descriptors came back.

Traffic, all on loopback, from SOAK_CLIENTS threads (default 6) that each pick a kind by
weight, run one session and pause briefly (the machine may be shared):
  smtp, imap, pop3, sieve     plain sessions with the front door's own dialogue
  smtps, imaps, pop3s         implicit TLS
  smtp-starttls, imap-starttls, pop3-stls   STARTTLS
  proxy-v1, proxy-v2          PROXY headers from a trusted range (127.0.0.0/8)
  handoff-v2, handoff-v1      sessions handed to a small sink backend, PROXY v2 / v1
  api-listener                create, use, update and destroy a listener
  api-destination             create, update and destroy a destination (and its listener)
  live-change                 updates the listeners and destination that traffic is using
More kinds plug in by adding a function to KINDS (see the end of the traffic section).

It fails on: any unexpected error in a session; the daemon dying or logging an event from
BAD_EVENTS; VmRSS after warm-up growing by more than SOAK_RSS_MB (default 16 MiB) over its
value at the end of warm-up; open descriptors (/proc/PID/fd) not back at their start within
20 s after the traffic stops; a graceful stop that does not exit 0.

    make soak                                    # 10 minutes
    SOAK_SECONDS=120 python3 tests/soak/soak.py --gatehouse build/gatehouse
"""
import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

SECRET = "soak-admin-secret"
USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
# Log events that must not appear under well-behaved traffic, and what a sanitizer prints.
BAD_EVENTS = ("handoff-retry", "handoff-failed", "tls-error", "tls-handshake-error",
              "tls-timeout", "proxy-error", "proxy-timeout", "proxy-untrusted", "accept-error",
              "limit-connections", "store-error", "store-readonly", "listener-error",
              "listener-restore-error", "worker-error", "settings-error", "destinations-error",
              "certificates-error", "auth-failed")
BAD_TEXT = ("AddressSanitizer", "LeakSanitizer", "runtime error:")
TIMEOUT = 10


# ---- helpers ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def tls_client():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Lines:
    """A line-oriented client over a socket that may be upgraded to TLS."""

    def __init__(self, port, pre=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        if pre:
            self.sock.sendall(pre)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"closed early; pending {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").rstrip("\r")

    def until(self, done):
        """Lines until done(line) is true; returns them all."""
        out = []
        while True:
            out.append(self.line())
            if done(out[-1]):
                return out

    def smtp_reply(self):
        return self.until(lambda l: len(l) < 4 or l[3] == " ")

    def say(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def starttls(self):
        assert not self.buf, self.buf
        self.sock = tls_client().wrap_socket(self.sock)

    def closed(self):
        """The server closes next (after what is buffered)."""
        self.sock.settimeout(TIMEOUT)
        while self.sock.recv(4096):
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- the daemon and its API ----

class Daemon:
    def __init__(self, binary, workers):
        self.dir = tempfile.mkdtemp(prefix="gatehouse-soak-")
        self.http_port = free_port()
        self.log_path = os.path.join(self.dir, "gatehouse.log")
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, GATEHOUSE_ADMIN_SECRET=SECRET)
        self.proc = subprocess.Popen(
            [binary, "serve", "--data", os.path.join(self.dir, "data"), "--http",
             f"127.0.0.1:{self.http_port}", "--workers", str(workers)],
            env=env, stdout=self.log, stderr=self.log)
        if not wait_port(self.http_port):
            raise RuntimeError("gatehouse did not start:\n" + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def call(self, method, args):
        body = json.dumps({"using": USING, "methodCalls": [[method, args, "c"]]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api", data=body, method="POST",
            headers={"Authorization": "Bearer " + SECRET, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            expect(r.status == 200, f"{method}: HTTP {r.status}")
            name, res, _ = json.loads(r.read())["methodResponses"][0]
        expect(name == method, f"{method}: {name} {res}")
        return res

    def create(self, type_, props):
        res = self.call(f"{type_}/set", {"create": {"n": props}})
        expect("n" in (res.get("created") or {}), f"{type_} create: {res}")
        return res["created"]["n"]["id"]

    def update(self, type_, id_, patch):
        res = self.call(f"{type_}/set", {"update": {id_: patch}})
        expect(id_ in (res.get("updated") or {}), f"{type_} update: {res}")

    def destroy(self, type_, id_):
        res = self.call(f"{type_}/set", {"destroy": [id_]})
        expect(id_ in (res.get("destroyed") or []), f"{type_} destroy: {res}")

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# ---- the sink: a backend that checks the PROXY header, greets and answers each line ----

class Sink:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.sessions = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def read_header(self, conn):
        first = conn.recv(15, socket.MSG_WAITALL)  # "PROXY UNKNOWN\r\n" is 15 bytes long
        if first == b"PROXY UNKNOWN\r\n":  # a health check of a destination forwarding v1
            return "check"
        if not first:  # closed before a byte: a health check ended by a live change
            return "check"
        if first.startswith(SIG):
            first += conn.recv(1, socket.MSG_WAITALL)
            body = conn.recv(struct.unpack("!H", first[14:16])[0], socket.MSG_WAITALL)
            if first[12] & 0x0F == 0:  # LOCAL: the daemon's own health check
                return "check"
            fam = first[13] >> 4
            expect(fam in (1, 2) and len(body) >= 12, f"sink: v2 family {fam}")
            return "v2"
        head = first
        while not head.endswith(b"\r\n"):
            more = conn.recv(1)
            expect(more, f"sink: v1 header cut: {head!r}")
            head += more
        expect(head.startswith(b"PROXY TCP4 127.0.0.1 "), f"sink: v1 {head!r}")
        return "v1"

    def session(self, conn):
        try:
            with conn:
                conn.settimeout(TIMEOUT)
                kind = self.read_header(conn)
                if kind == "check":  # greeting, goodbye; how the checker hangs up is its own
                    try:
                        conn.sendall(b"220 sink ready\r\n")
                        conn.recv(4096)
                    except OSError:
                        pass
                    return
                conn.sendall(f"220 sink {kind} ready\r\n".encode())
                buf = b""
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip().upper() == b"QUIT":
                            conn.sendall(b"221 sink bye\r\n")
                            return
                        conn.sendall(b"250 sink " + line.strip()[:40] + b"\r\n")
        except Exception as e:  # noqa: BLE001 - reported at the end
            self.errors.append(f"sink: {e!r}")
        finally:
            self.sessions += 1

    def close(self):
        self.sock.close()


# ---- set-up: the listeners and destinations traffic uses ----

class Setup:
    """Ports by kind, and the ids live changes touch."""

    def __init__(self, d, sink):
        self.d, self.ports, self.ids = d, {}, {}
        trusted = {"overrideProxyTrustedNetworks": ["127.0.0.0/8"]}
        plan = {  # name: (protocol, useTls, tlsImplicit, extra)
            "smtp": ("smtp", False, False, {}),
            "imap": ("imap", False, False, {}),
            "pop3": ("pop3", False, False, {}),
            "sieve": ("manageSieve", False, False, {}),
            "smtps": ("smtp", True, True, {}),
            "imaps": ("imap", True, True, {}),
            "pop3s": ("pop3", True, True, {}),
            "smtp-starttls": ("smtp", True, False, {}),
            "imap-starttls": ("imap", True, False, {}),
            "pop3-stls": ("pop3", True, False, {}),
            "proxy": ("smtp", False, False, trusted),
            "handoff-v2": ("smtp", False, False, {}),
            "handoff-v1": ("imap", False, False, {}),
        }
        for name, (proto, tls, implicit, extra) in plan.items():
            port = free_port()
            props = dict(name=name, protocol=proto, bind=[f"127.0.0.1:{port}"], useTls=tls,
                         maxConnections=4096, **extra)
            if tls:
                props["tlsImplicit"] = implicit
            self.ids[name] = d.create("x:NetworkListener", props)
            self.ports[name] = port
        self.ids["dest-v2"] = d.create("x:Destination", dict(
            name="sink-v2", protocol="smtp", address=f"127.0.0.1:{sink.port}",
            forwarding="proxyV2", listeners=["handoff-v2"]))
        self.ids["dest-v1"] = d.create("x:Destination", dict(
            name="sink-v1", protocol="imap", address=f"127.0.0.1:{sink.port}",
            forwarding="proxyV1", listeners=["handoff-v1"]))
        for port in self.ports.values():
            expect(wait_port(port), f"listener on {port} not up")


# ---- traffic kinds: each runs one session and raises on anything unexpected ----

def smtp_dialogue(c, tls_offer):
    greet = c.smtp_reply()
    expect(greet[-1].startswith("220 "), f"greeting {greet}")
    c.say("EHLO soak.example")
    ehlo = c.smtp_reply()
    expect(ehlo[-1].startswith("250 "), f"EHLO {ehlo}")
    expect(("STARTTLS" in "".join(ehlo)) == tls_offer, f"STARTTLS offer {ehlo}")
    return ehlo


def smtp_quit(c):
    c.say("QUIT")
    expect(c.smtp_reply()[-1].startswith("221"), "QUIT")


def k_smtp(s):
    c = Lines(s.ports["smtp"])
    try:
        smtp_dialogue(c, False)
        c.say("NOOP")
        expect(c.smtp_reply()[-1].startswith("250"), "NOOP")
        smtp_quit(c)
    finally:
        c.close()


def k_smtps(s):
    c = Lines(s.ports["smtps"])
    try:
        c.starttls()
        smtp_dialogue(c, False)
        smtp_quit(c)
    finally:
        c.close()


def k_smtp_starttls(s):
    c = Lines(s.ports["smtp-starttls"])
    try:
        smtp_dialogue(c, True)
        c.say("STARTTLS")
        expect(c.smtp_reply()[-1].startswith("220"), "STARTTLS")
        c.starttls()
        c.say("EHLO soak.example")
        expect("STARTTLS" not in "".join(c.smtp_reply()), "STARTTLS offered twice")
        smtp_quit(c)
    finally:
        c.close()


def imap_session(c, tls_first=False, starttls=False):
    if tls_first:
        c.starttls()
    expect(c.line().startswith("* OK"), "IMAP greeting")
    if starttls:
        c.say("a STARTTLS")
        expect(c.until(lambda l: l.startswith("a "))[-1].startswith("a OK"), "IMAP STARTTLS")
        c.starttls()
    c.say("b CAPABILITY")
    caps = c.until(lambda l: l.startswith("b "))
    expect(caps[-1].startswith("b OK") and "IMAP4rev1" in caps[0], f"CAPABILITY {caps}")
    c.say("c LOGOUT")
    expect(c.until(lambda l: l.startswith("c "))[-1].startswith("c OK"), "LOGOUT")


def k_imap(s):
    c = Lines(s.ports["imap"])
    try:
        imap_session(c)
    finally:
        c.close()


def k_imaps(s):
    c = Lines(s.ports["imaps"])
    try:
        imap_session(c, tls_first=True)
    finally:
        c.close()


def k_imap_starttls(s):
    c = Lines(s.ports["imap-starttls"])
    try:
        imap_session(c, starttls=True)
    finally:
        c.close()


def pop3_session(c, tls_first=False, stls=False):
    if tls_first:
        c.starttls()
    expect(c.line().startswith("+OK"), "POP3 greeting")
    if stls:
        c.say("STLS")
        expect(c.line().startswith("+OK"), "STLS")
        c.starttls()
    c.say("CAPA")
    capa = c.until(lambda l: l == ".")
    expect(capa[0].startswith("+OK"), f"CAPA {capa}")
    c.say("QUIT")
    expect(c.line().startswith("+OK"), "QUIT")


def k_pop3(s):
    c = Lines(s.ports["pop3"])
    try:
        pop3_session(c)
    finally:
        c.close()


def k_pop3s(s):
    c = Lines(s.ports["pop3s"])
    try:
        pop3_session(c, tls_first=True)
    finally:
        c.close()


def k_pop3_stls(s):
    c = Lines(s.ports["pop3-stls"])
    try:
        pop3_session(c, stls=True)
    finally:
        c.close()


def k_sieve(s):
    c = Lines(s.ports["sieve"])
    try:
        caps = c.until(lambda l: l.startswith("OK"))
        expect(any(l.startswith('"SIEVE"') for l in caps), f"capabilities {caps}")
        c.say("NOOP")
        expect(c.line().startswith("OK"), "NOOP")
        c.say("LOGOUT")
        expect(c.line().startswith("OK"), "LOGOUT")
    finally:
        c.close()


def proxied_source():
    return f"203.0.113.{random.randint(1, 254)}"


def k_proxy_v1(s):
    src = proxied_source()
    c = Lines(s.ports["proxy"], f"PROXY TCP4 {src} 127.0.0.1 40000 25\r\n".encode())
    try:
        ehlo = smtp_dialogue(c, False)
        expect(f"[{src}]" in ehlo[0], f"client address {ehlo[0]}")
        smtp_quit(c)
    finally:
        c.close()


def k_proxy_v2(s):
    src = proxied_source()
    addrs = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 25)
    head = SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs
    c = Lines(s.ports["proxy"], head)
    try:
        ehlo = smtp_dialogue(c, False)
        expect(f"[{src}]" in ehlo[0], f"client address {ehlo[0]}")
        smtp_quit(c)
    finally:
        c.close()


def handoff(s, name, kind):
    c = Lines(s.ports[name])
    try:
        greet = c.line()
        expect(greet == f"220 sink {kind} ready", f"hand-off greeting {greet!r}")
        c.say("EHLO soak.example")
        expect(c.line().startswith("250 sink"), "hand-off reply")
        c.say("QUIT")
        expect(c.line().startswith("221"), "hand-off QUIT")
        c.closed()
    finally:
        c.close()


def k_handoff_v2(s):
    handoff(s, "handoff-v2", "v2")


def k_handoff_v1(s):
    handoff(s, "handoff-v1", "v1")


def create_listener_somewhere(d, props):
    """A new port may be taken by another program meanwhile: a few tries."""
    for _ in range(5):
        port = free_port()
        res = d.call("x:NetworkListener/set", {"create": {"n": dict(
            props, bind=[f"127.0.0.1:{port}"])}})
        if "n" in (res.get("created") or {}):
            return res["created"]["n"]["id"], port
        why = json.dumps(res.get("notCreated"))
        expect("bind" in why, f"listener create: {why}")
    raise AssertionError("no free port for a new listener in 5 tries")


def k_api_listener(s):
    d = s.d
    name = f"tmp-{random.getrandbits(40):x}"
    lid, port = create_listener_somewhere(d, dict(name=name, protocol="pop3", useTls=False))
    try:
        c = Lines(port)
        try:
            expect(c.line().startswith("+OK"), "new listener greets")
        finally:
            c.close()
        d.update("x:NetworkListener", lid, {"maxConnections": 77, "socketNoDelay": False})
        res = d.call("x:NetworkListener/get", {"ids": [lid]})
        expect(res["list"][0]["maxConnections"] == 77, f"update seen: {res}")
    finally:
        d.destroy("x:NetworkListener", lid)


def k_api_destination(s):
    d = s.d
    name = f"tmpd-{random.getrandbits(40):x}"
    lid, port = create_listener_somewhere(d, dict(name=name, protocol="smtp", useTls=False))
    did = None
    try:
        did = d.create("x:Destination", dict(
            name=name, protocol="smtp", address=f"127.0.0.1:{s.sink.port}",
            forwarding="proxyV2", listeners=[name]))
        d.update("x:Destination", did, {"connectTimeout": "5s"})
        c = Lines(port)
        try:
            expect(c.line() == "220 sink v2 ready", "hand-off from a new destination")
            c.say("QUIT")
            expect(c.line().startswith("221"), "QUIT")
        finally:
            c.close()
    finally:
        if did:
            d.destroy("x:Destination", did)
        d.destroy("x:NetworkListener", lid)


def k_live_change(s):
    """Settings of listeners and a destination that sessions are using right now."""
    d = s.d
    name = random.choice(["smtp", "imaps", "smtp-starttls", "proxy", "handoff-v2"])
    d.update("x:NetworkListener", s.ids[name],
             {"maxConnections": random.choice([2048, 4096]),
              "socketNoDelay": random.choice([True, False])})
    d.update("x:Destination", s.ids["dest-v2"],
             {"connectTimeout": random.choice(["5s", "10s"])})


# name: (function, weight). A new kind (bans, authentication, ...) is one more entry.
KINDS = {
    "smtp": (k_smtp, 8), "imap": (k_imap, 5), "pop3": (k_pop3, 5), "sieve": (k_sieve, 3),
    "smtps": (k_smtps, 4), "imaps": (k_imaps, 3), "pop3s": (k_pop3s, 3),
    "smtp-starttls": (k_smtp_starttls, 4), "imap-starttls": (k_imap_starttls, 3),
    "pop3-stls": (k_pop3_stls, 3), "proxy-v1": (k_proxy_v1, 4), "proxy-v2": (k_proxy_v2, 4),
    "handoff-v2": (k_handoff_v2, 6), "handoff-v1": (k_handoff_v1, 4),
    "api-listener": (k_api_listener, 1), "api-destination": (k_api_destination, 1),
    "live-change": (k_live_change, 1),
}


# ---- the run ----

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.done = collections.Counter()
        self.failed = collections.Counter()
        self.errors = []

    def ok(self, kind):
        with self.lock:
            self.done[kind] += 1

    def error(self, kind, exc):
        with self.lock:
            self.failed[kind] += 1
            if len(self.errors) < 8:
                self.errors.append(f"{kind}: {exc!r}\n" + traceback.format_exc(limit=3))


def client(setup, stats, stop, pause, seed):
    rnd = random.Random(seed)
    names = list(KINDS)
    weights = [KINDS[n][1] for n in names]
    while not stop.is_set():
        kind = rnd.choices(names, weights)[0]
        try:
            KINDS[kind][0](setup)
            stats.ok(kind)
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            stats.error(kind, e)
        stop.wait(rnd.uniform(0, pause))


def monitor(d, samples, stop, every):
    while not stop.wait(every):
        if d.proc.poll() is not None:
            return
        samples.append((time.time(), d.rss_kib(), d.fds()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gatehouse", default="build/gatehouse")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("SOAK_CLIENTS", 6)))
    ap.add_argument("--rss-mb", type=float, default=float(os.environ.get("SOAK_RSS_MB", 16)),
                    help="allowed VmRSS growth after warm-up, MiB")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the memory baseline (default: a fifth, at most 60)")
    ap.add_argument("--pause", type=float, default=0.05,
                    help="longest pause between one client's sessions, seconds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the data directory and log")
    a = ap.parse_args()
    warmup = a.warmup if a.warmup is not None else min(60.0, a.seconds / 5)

    d = Daemon(os.path.abspath(a.gatehouse), a.workers)
    sink = Sink()
    failures = []
    try:
        setup = Setup(d, sink)
        setup.sink = sink
        time.sleep(0.5)
        fd_start, rss_start = d.fds(), d.rss_kib()
        stats, stop, samples = Stats(), threading.Event(), []
        mon = threading.Thread(target=monitor, args=(d, samples, stop, 2.0), daemon=True)
        mon.start()
        t0 = time.time()
        threads = [threading.Thread(target=client, args=(setup, stats, stop, a.pause, i),
                                    daemon=True) for i in range(a.clients)]
        for t in threads:
            t.start()
        while time.time() - t0 < a.seconds and d.proc.poll() is None:
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(TIMEOUT * 3)
        elapsed = time.time() - t0
        if d.proc.poll() is not None:
            failures.append(f"the daemon died during the run (exit {d.proc.returncode})")
            raise SystemExit

        # Memory: the baseline is the last sample of the warm-up; later samples may not
        # exceed it by more than the bound.
        warm = [r for (t, r, _) in samples if t - t0 <= warmup] or [rss_start]
        after = [r for (t, r, _) in samples if t - t0 > warmup]
        rss_base, rss_max = warm[-1], max(after or [warm[-1]])
        growth_mb = (rss_max - rss_base) / 1024
        if growth_mb > a.rss_mb:
            failures.append(f"VmRSS grew {growth_mb:.1f} MiB after warm-up "
                            f"({rss_base} -> {rss_max} KiB), bound {a.rss_mb} MiB")

        # Descriptors: back to where they were before the traffic.
        end = time.time() + 20
        fd_end = d.fds()
        while fd_end != fd_start and time.time() < end:
            time.sleep(0.5)
            fd_end = d.fds()
        if fd_end != fd_start:
            failures.append(f"open descriptors {fd_end} 20 s after the traffic, {fd_start} before")
        fd_peak = max([f for (_, _, f) in samples] or [fd_end])

        sessions = sum(stats.done.values())
        print(f"soak: {elapsed:.0f} s, {a.clients} clients, {sessions} sessions "
              f"({sessions / max(elapsed, 1):.0f}/s), {sum(stats.failed.values())} failed, "
              f"sink {sink.sessions} sessions")
        for kind in KINDS:
            print(f"  {kind:16} {stats.done[kind]:7} ok {stats.failed[kind]:5} failed")
        print(f"  VmRSS KiB: start {rss_start}, end of warm-up ({warmup:.0f} s) {rss_base}, "
              f"max after {rss_max}, growth {growth_mb:.1f} MiB (bound {a.rss_mb})")
        print(f"  descriptors: start {fd_start}, peak {fd_peak}, after {fd_end}")
        if stats.errors:
            failures.append(f"{sum(stats.failed.values())} sessions failed; first ones:\n"
                            + "\n".join(stats.errors))
        failures += sink.errors[:5]
        log = d.read_log()
        for bad in [f" {ev} " for ev in BAD_EVENTS] + list(BAD_TEXT):
            n = log.count(bad)
            if n:
                failures.append(f"log has {n} '{bad.strip()}' lines")
        for kind in KINDS:
            if stats.done[kind] == 0 and elapsed > 30:
                failures.append(f"no {kind} session completed")
    except SystemExit:
        pass
    except Exception as e:  # noqa: BLE001 - a set-up failure is a failure like any other
        failures.append(f"soak could not run: {e!r}\n{traceback.format_exc(limit=4)}")
    finally:
        rc = d.stop()
        sink.close()
        if rc != 0:
            failures.append(f"graceful stop exited {rc}")
        if failures:
            tail = d.read_log()[-3000:]
            print("soak: FAILED\n- " + "\n- ".join(failures) + "\n-- log tail --\n" + tail)
        if a.keep or failures:
            print(f"soak: data and log kept in {d.dir}")
        else:
            shutil.rmtree(d.dir, ignore_errors=True)
    if failures:
        return 1
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
