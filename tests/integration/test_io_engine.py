"""`gatehouse serve --engine auto|epoll|io_uring` (SPEC §17): each engine serves sessions and says
which it is; auto falls back to epoll, saying why, when the kernel refuses io_uring; io_uring
asked for but refused is an error; under io_uring the workers make no epoll calls and far fewer
system calls to wait than one per session."""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from backend_kit import Backend, destination
from conftest import BIN, SECRET, pick_port, wait_port

HOST = "127.0.0.1"
STRACE = shutil.which("strace")


def uring_refused():
    """The reason this kernel will not run the io_uring engine, or None."""
    with open(os.devnull, "wb") as null:
        r = subprocess.run([BIN, "serve", "--data", "/nonexistent/x", "--engine", "io_uring",
                            "--workers", "1"], stdout=null, stderr=subprocess.PIPE, timeout=10)
    err = r.stderr.decode(errors="replace")
    return err if "--engine io_uring" in err else None


def smtp_session(port):
    with socket.create_connection((HOST, port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"EHLO client.example\r\n")
        while True:
            line = f.readline()
            assert line.startswith(b"250"), line
            if line[3:4] == b" ":
                break
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221 ")


def run_sessions(port, n, parallel=8):
    errors = []

    def worker(k):
        try:
            for _ in range(k):
                smtp_session(port)
        except Exception as e:  # reported below with the others
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n // parallel,)) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_unknown_engine_is_a_usage_error(tmp_path):
    r = subprocess.run([BIN, "serve", "--data", str(tmp_path), "--engine", "kqueue"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "--engine must be auto, epoll or io_uring" in r.stderr and "usage:" in r.stderr


@pytest.mark.parametrize("engine", ["epoll", "io_uring"])
def test_each_engine_serves_sessions_and_says_so(make_daemon, engine):
    if engine == "io_uring" and uring_refused():
        pytest.skip(uring_refused())
    d = make_daemon(args=["--engine", engine])
    port = pick_port()
    d.create_listener(protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
    assert wait_port(port)
    run_sessions(port, 200)
    assert f"engine listener=- client=- {engine}" in d.read_log()
    # a listener changed live still works under this engine
    port2 = pick_port()
    lid = d.create_listener(protocol="smtp", bind=[f"{HOST}:{port2}"], useTls=False)
    assert wait_port(port2)
    smtp_session(port2)
    name, res, _ = d.call("x:NetworkListener/set", {"destroy": [lid]})
    assert lid in res.get("destroyed", []), res
    end = time.time() + 10
    while time.time() < end:
        try:
            socket.create_connection((HOST, port2), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            break
    else:
        pytest.fail("the destroyed listener still accepts")


def ring_workers(pid):
    """The kernel's io_uring worker threads (iou-wrk) of a process."""
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # a thread that ended meanwhile
    return [n for n in names if n.startswith("iou-wrk")]


def test_io_uring_ends_a_handed_off_session_without_a_ring_worker(make_daemon):
    """When the backend ends a handed-off session, its goodbye reaches the client, then our
    FIN: the shutdown is shutdown(2) once the sends are out, not a ring request, which the
    kernel runs on a worker thread (iou-wrk) woken for every such session."""
    if uring_refused():
        pytest.skip(uring_refused())
    b = Backend("wb", proxy=False)
    try:
        d = make_daemon(args=["--engine", "io_uring", "--workers", "1"])
        destination(d, b.port, forwarding="none", healthCheck=False)
        port = pick_port()
        d.create_listener(protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
        assert wait_port(port)
        for _ in range(20):
            with socket.create_connection((HOST, port), timeout=10) as s:
                f = s.makefile("rb")
                assert f.readline() == b"220 wb ESMTP\r\n"
                s.sendall(b"QUIT\r\n")
                assert f.readline().startswith(b"221 ")
                assert f.read() == b""  # then the end
        assert ring_workers(d.proc.pid) == []
    finally:
        b.stop()


class Traced:
    """The daemon under strace, in its own process group so the whole tree can be ended."""

    def __init__(self, tmp_path, strace_args, engine):
        self.http_port = pick_port()
        self.out = tmp_path / "strace.out"
        self.log = open(tmp_path / "log", "wb")
        env = dict(os.environ, GATEHOUSE_ADMIN_SECRET=SECRET)
        env.pop("GATEHOUSE_ENGINE", None)
        cmd = [STRACE, "-f", "-qq", "-o", str(self.out), *strace_args, BIN, "serve", "--data",
               str(tmp_path / "data"), "--http", f"{HOST}:{self.http_port}", "--workers", "1",
               "--engine", engine]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        self.log_path = tmp_path / "log"

    def daemon_pid(self):
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return int(f.read().split()[0])

    def read_log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        try:
            os.kill(self.daemon_pid(), signal.SIGTERM)
            self.proc.wait(30)
        except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.mark.skipif(not STRACE, reason="needs strace")
def test_auto_falls_back_to_epoll_when_the_kernel_refuses_io_uring(tmp_path):
    t = Traced(tmp_path, ["-e", "trace=io_uring_setup", "-e",
                          "inject=io_uring_setup:error=EPERM"], "auto")
    try:
        assert wait_port(t.http_port, timeout=30), t.read_log()
        log = t.read_log()
        assert "epoll: io_uring unavailable (io_uring_queue_init: Operation not permitted)" in log
        assert "engine listener=- client=- epoll" in log
    finally:
        t.stop()


@pytest.mark.skipif(not STRACE, reason="needs strace")
def test_io_uring_asked_for_but_refused_is_an_error(tmp_path):
    r = subprocess.run([STRACE, "-f", "-qq", "-o", os.devnull, "-e", "trace=io_uring_setup",
                        "-e", "inject=io_uring_setup:error=ENOSYS", BIN, "serve", "--data",
                        str(tmp_path), "--engine", "io_uring"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "--engine io_uring: io_uring_queue_init: Function not implemented" in r.stderr


@pytest.mark.skipif(not STRACE, reason="needs strace")
def test_io_uring_waits_without_epoll_and_batches_its_waits(tmp_path):
    if uring_refused():
        pytest.skip(uring_refused())
    t = Traced(tmp_path, ["-e", "trace=epoll_wait,epoll_pwait,epoll_ctl,io_uring_enter,accept4"],
               "io_uring")
    sessions = 96  # a multiple of run_sessions' 8 threads
    try:
        assert wait_port(t.http_port, timeout=30), t.read_log()
        from conftest import Daemon
        api = Daemon(str(tmp_path / "data"), t.http_port)
        port = pick_port()
        api.create_listener(protocol="smtp", bind=[f"{HOST}:{port}"], useTls=False)
        assert wait_port(port, timeout=30)
        run_sessions(port, sessions)
    finally:
        t.stop()
    calls = {}
    for line in t.out.read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and "(" in parts[1]:
            name = parts[1].split("(", 1)[0]
            calls[name] = calls.get(name, 0) + 1
    assert not any(k.startswith("epoll") for k in calls), calls
    assert calls.get("accept4", 0) == 0, calls  # the ring takes every connection
    # a session has a handful of events (accept, EHLO, QUIT, close); each turn's wait submits
    # the turn's changes too, so there is at most one enter per event and never one per change
    assert calls.get("io_uring_enter", 0) < 5 * sessions, calls


@pytest.mark.parametrize("engine", ["epoll", "io_uring"])
def test_sockets_closed_mid_handshake_are_closed_at_once(make_daemon, engine):
    """The server drops each of these clients as soon as their first bytes arrive (not TLS);
    the client must see the end at once. On io_uring the socket's poll has just changed from
    multishot to one-shot when the close comes: a removal that races the kernel's delivery
    must still release the socket."""
    if engine == "io_uring" and uring_refused():
        pytest.skip(uring_refused())
    d = make_daemon(args=["--engine", engine])
    port = pick_port()
    d.create_listener(protocol="smtp", bind=[f"{HOST}:{port}"], useTls=True, tlsImplicit=True)
    assert wait_port(port)
    for i in range(30):
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"EHLO not-tls.example\r\n")
            try:
                assert s.recv(100) == b"", i
            except ConnectionResetError:
                pass
            except socket.timeout:
                pytest.fail(f"connection {i} still open after 5 s")


def tls_session(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection((HOST, port), timeout=10)) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        s.sendall(b"a LOGOUT\r\n")
        assert f.readline().startswith(b"* BYE")


def socket_calls(path):
    """System calls made on TCP sockets (strace -yy names the socket in each call), by name.
    Peeks are left out: an implicit-TLS listener screens an untrusted client's first bytes for
    a PROXY header with one before anything reads them."""
    calls = {}
    for line in path.read_text().splitlines():
        parts = line.split(None, 1)
        if (len(parts) == 2 and "(" in parts[1] and "TCP" in parts[1].split(")", 1)[0]
                and "MSG_PEEK" not in parts[1]):
            name = parts[1].split("(", 1)[0]
            calls[name] = calls.get(name, 0) + 1
    return calls


@pytest.mark.skipif(not STRACE, reason="needs strace")
@pytest.mark.parametrize("engine", ["epoll", "io_uring"])
def test_io_uring_moves_session_bytes_without_system_calls(tmp_path, engine):
    """On io_uring a session's accept, reads, writes and close go through the ring: plain SMTP,
    implicit TLS (through the loop's BIO) and a session handed to a backend (both legs, and the
    connect to the backend) make no accept, connect, recv, send or close calls of their own;
    the FIN after a backend's goodbye is shutdown(2), at most one per handed-off session (the
    ring would run it on a kernel worker thread). The same run on epoll shows the trace sees
    them."""
    if engine == "io_uring" and uring_refused():
        pytest.skip(uring_refused())
    t = Traced(tmp_path, ["-yy", "-e", "trace=recvfrom,sendto,recvmsg,sendmsg,read,write,close,"
                          "shutdown,accept,accept4,connect,getsockopt"], engine)
    backend = Backend(proxy=False)  # greets, answers EHLO and QUIT
    sessions = 40
    try:
        assert wait_port(t.http_port, timeout=30), t.read_log()
        from conftest import Daemon
        api = Daemon(str(tmp_path / "data"), t.http_port)
        plain, tls, handoff = pick_port(), pick_port(), pick_port()
        api.create_listener(protocol="smtp", bind=[f"{HOST}:{plain}"], useTls=False)
        api.create_listener(protocol="imap", bind=[f"{HOST}:{tls}"], useTls=True,
                            tlsImplicit=True)
        api.create_listener(name="handoff", protocol="smtp", bind=[f"{HOST}:{handoff}"],
                            useTls=False)
        name, res, _ = api.call("x:Destination/set", {"create": {"d": {
            "protocol": "smtp", "address": f"{HOST}:{backend.port}", "forwarding": "none",
            "healthCheck": False, "listeners": ["handoff"]}}})
        assert "d" in (res.get("created") or {}), res
        for port in (plain, tls, handoff):
            assert wait_port(port, timeout=30)
        before = socket_calls(t.out)
        run_sessions(plain, sessions)
        for _ in range(sessions):
            tls_session(tls)
        run_sessions(handoff, sessions)
        time.sleep(0.5)  # the last closes
        after = socket_calls(t.out)
    finally:
        t.stop()
        backend.stop()
    assert backend.sessions >= sessions, backend.errors  # the handoff leg reached it
    made = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    made = {k: v for k, v in made.items() if v}
    if engine == "epoll":
        assert made.get("sendto", 0) >= 3 * sessions and made.get("close", 0) >= 3 * sessions, made
        assert made.get("accept4", 0) >= 3 * sessions, made
        assert made.get("connect", 0) >= sessions, made
    else:
        assert set(made) <= {"shutdown"} and made.get("shutdown", 0) <= sessions, made
