"""Running as a service: --version, the sd_notify protocol (READY, RELOADING, STOPPING,
WATCHDOG), dropping root for a user that keeps only CAP_NET_BIND_SERVICE, and the binary
upgrade that hands the listening sockets to a new process without refusing anyone."""
import os
import pwd
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BIN, pick_port, wait_port

USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def read_reply(sock):
    """One SMTP reply, all its lines; returns the last."""
    line = read_line(sock)
    while len(line) > 3 and line[3] == "-":
        line = read_line(sock)
    return line


def smtp_greeting(port, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return read_line(s)


def read_pid(data_dir):
    try:
        with open(os.path.join(data_dir, "gatehouse.pid")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_until(pred, timeout=15.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def stop_pid(pid):
    """Stops a daemon this test did not start through Popen (the upgraded one)."""
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(pid), 15):
            os.kill(pid, signal.SIGKILL)


def test_version():
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("gatehouse ") and out.split()[1][0].isdigit(), out


def test_schema_subcommand_prints_every_type_without_starting():
    import json
    out = subprocess.run([BIN, "schema"], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    types = json.loads(out)["types"]
    assert "x:NetworkListener" in types
    assert any(p["name"] == "bind" for p in types["x:NetworkListener"]["properties"])


# ---- sd_notify ----

class NotifySocket:
    """A unix datagram socket standing in for systemd's notification socket. Like systemd,
    it learns each sender's pid from SCM_CREDENTIALS."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ghn")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.got = []
        self.sender = 0

    def expect(self, state, timeout=20.0, pid=None):
        """Reads datagrams until one carries the line state (from pid, when given);
        returns the datagram and leaves its sender's pid in self.sender."""
        end = time.time() + timeout
        while time.time() < end:
            self.sock.settimeout(max(0.05, end - time.time()))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                break
            msg = data.decode()
            self.sender = 0
            for level, kind, cred in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    self.sender = int.from_bytes(cred[:4], "little")
            self.got.append((self.sender, msg))
            if state in msg.split("\n") and (pid is None or self.sender == pid):
                return msg
        raise AssertionError(f"no {state} from {pid or 'anyone'} in {self.got}")

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def test_notify_ready_reloading_stopping_and_watchdog(make_daemon):
    n = NotifySocket()
    try:
        d = make_daemon(start=False, extra_env={"NOTIFY_SOCKET": n.path,
                                                "WATCHDOG_USEC": "300000"})
        d.start()
        n.expect("READY=1")
        # READY=1 comes once the API answers
        assert d.call("x:NetworkListener/get", {"ids": None})[0] == "x:NetworkListener/get"
        n.expect("WATCHDOG=1", timeout=5)
        t0 = time.time()
        n.expect("WATCHDOG=1", timeout=5)
        n.expect("WATCHDOG=1", timeout=5)
        assert time.time() - t0 < 4, "WATCHDOG=1 should come every 150 ms"
        d.proc.send_signal(signal.SIGHUP)
        msg = n.expect("RELOADING=1")
        assert "MONOTONIC_USEC=" in msg
        n.expect("READY=1")
        assert d.stop() == 0
        n.expect("STOPPING=1")
    finally:
        n.close()


def test_watchdog_is_off_for_another_pid(make_daemon):
    n = NotifySocket()
    try:
        d = make_daemon(start=False, extra_env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "100000",
                                                "WATCHDOG_PID": "1"})
        d.start()
        n.expect("READY=1")
        with pytest.raises(AssertionError):
            n.expect("WATCHDOG=1", timeout=1)
    finally:
        n.close()


def test_upgrade_moves_mainpid_and_the_new_process_feeds_the_watchdog(tmp_path):
    n = NotifySocket()
    data, port = str(tmp_path / "data"), pick_port()
    os.makedirs(data)
    env = dict(os.environ, GATEHOUSE_ADMIN_SECRET="s", NOTIFY_SOCKET=n.path,
               WATCHDOG_USEC="400000")
    log = open(tmp_path / "log", "wb")
    # as systemd does, WATCHDOG_PID names the process started
    proc = subprocess.Popen(["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', BIN, "serve", "--data",
                             data, "--http", f"127.0.0.1:{port}", "--workers", "2"],
                            env=env, stdout=log, stderr=log)
    new = 0
    try:
        n.expect("READY=1", pid=proc.pid)
        n.expect("WATCHDOG=1", pid=proc.pid)
        proc.send_signal(signal.SIGUSR2)
        msg = n.expect("READY=1", pid=proc.pid)  # the old process says who serves now
        new = int([l for l in msg.split("\n") if l.startswith("MAINPID=")][0][8:])
        assert new != proc.pid and read_pid(data) == new
        n.expect("WATCHDOG=1", pid=new, timeout=10)
        assert proc.wait(15) == 0
        os.kill(new, signal.SIGTERM)
        n.expect("STOPPING=1", pid=new)
    finally:
        n.close()
        if proc.poll() is None:
            proc.kill()
        stop_pid(new)
        log.close()


# ---- privileges ----

def low_port():
    """A free port below 1024 (tests run in parallel: pick at random, check it binds)."""
    for _ in range(200):
        port = random.randint(600, 1000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_nobody_keeps_only_net_bind_service(make_daemon):
    # nobody must reach the data directory: not under pytest's private tmp tree
    data = tempfile.mkdtemp(prefix="ghpriv")
    os.chmod(data, 0o755)
    d = make_daemon(data_dir=data, args=["--user", "nobody"])
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
        with open(f"/proc/{d.proc.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines())
        assert status["Uid"].split()[:3] == [str(nobody)] * 3, status["Uid"]
        assert int(status["CapEff"].strip(), 16) == 1 << 10, status["CapEff"]
        assert int(status["CapPrm"].strip(), 16) == 1 << 10, status["CapPrm"]
        for tid in os.listdir(f"/proc/{d.proc.pid}/task"):
            with open(f"/proc/{d.proc.pid}/task/{tid}/status") as f:
                cap = [l for l in f if l.startswith("CapEff:")][0]
            assert int(cap.split()[1], 16) == 1 << 10, (tid, cap)
        port = low_port()
        d.create_listener(name="smtp-low", protocol="smtp", useTls=False,
                          bind=[f"127.0.0.1:{port}"])
        assert smtp_greeting(port).startswith("220 "), "listener below 1024 must accept"
        st = os.stat(os.path.join(data, "gatehouse.db"))
        assert st.st_uid == nobody
        # an upgrade started by the unprivileged process keeps the capability (ambient)
        d.proc.send_signal(signal.SIGUSR2)
        assert wait_until(lambda: read_pid(data) not in (0, d.proc.pid), 30), d.read_log()
        new = read_pid(data)
        assert d.proc.wait(15) == 0
        with open(f"/proc/{new}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines())
        assert status["Uid"].split()[:3] == [str(nobody)] * 3
        assert int(status["CapEff"].strip(), 16) == 1 << 10, status["CapEff"]
        assert smtp_greeting(port).startswith("220 ")
        port2 = low_port()
        d.create_listener(name="smtp-low2", protocol="smtp", useTls=False,
                          bind=[f"127.0.0.1:{port2}"])
        assert smtp_greeting(port2).startswith("220 ")
    finally:
        d.stop()
        stop_pid(read_pid(data))
        subprocess.run(["rm", "-rf", data])


# ---- binary upgrade ----

class ConnectLoop(threading.Thread):
    """Connects again and again, each time reading the SMTP greeting, and counts failures."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = []

    def run(self):
        while not self.stop_flag.is_set():
            try:
                line = smtp_greeting(self.port)
                if line.startswith("220 "):
                    self.ok += 1
                else:
                    self.errors.append(f"greeting {line!r}")
            except OSError as e:
                self.errors.append(repr(e))
            time.sleep(0.002)


def test_upgrade_refuses_no_one_and_keeps_open_sessions(make_daemon):
    d = make_daemon()
    port = pick_port()
    d.create_listener(name="smtp", protocol="smtp", useTls=False, bind=[f"127.0.0.1:{port}"])
    old = d.proc.pid
    assert read_pid(d.data_dir) == old
    before = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert read_line(before).startswith("220 ")
    before.sendall(b"EHLO before.example\r\n")
    assert read_reply(before).startswith("250 ")
    loop = ConnectLoop(port)
    loop.start()
    new = 0
    try:
        time.sleep(0.3)
        r = subprocess.run([BIN, "upgrade", "--data", d.data_dir], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr + d.read_log()
        new = read_pid(d.data_dir)
        assert new and new != old
        time.sleep(0.5)
        loop.stop_flag.set()
        loop.join(10)
        assert loop.errors == [], loop.errors[:5]
        assert loop.ok > 20, loop.ok
        # the new process answers the API and changes go through it
        name, res, _ = d.call("x:NetworkListener/get", {"ids": None})
        assert {l["name"] for l in res["list"]} >= {"http", "smtp"}
        port2 = pick_port()
        d.create_listener(name="smtp2", protocol="smtp", useTls=False,
                          bind=[f"127.0.0.1:{port2}"])
        assert smtp_greeting(port2).startswith("220 ")
        # the session opened before the upgrade is still served by the old process
        assert alive(old)
        before.sendall(b"NOOP\r\n")
        assert read_reply(before).startswith("250 ")
        before.sendall(b"QUIT\r\n")
        assert read_reply(before).startswith("221")
        before.close()
        assert d.proc.wait(15) == 0, "the old process exits once its sessions ended"
        assert smtp_greeting(port).startswith("220 ")
        assert "took over" in d.read_log()
    finally:
        loop.stop_flag.set()
        before.close()
        stop_pid(new)


def test_upgrade_by_signal_hands_over_a_shared_socket_listener(make_daemon):
    """Without SO_REUSEPORT every worker shares one socket; SIGUSR2 alone starts the upgrade."""
    d = make_daemon()
    port = pick_port()
    d.create_listener(name="shared", protocol="smtp", useTls=False, socketReusePort=False,
                      bind=[f"127.0.0.1:{port}"])
    old = d.proc.pid
    new = 0
    loop = ConnectLoop(port)
    loop.start()
    try:
        time.sleep(0.2)
        d.proc.send_signal(signal.SIGUSR2)
        assert wait_until(lambda: read_pid(d.data_dir) not in (0, old), 30), d.read_log()
        new = read_pid(d.data_dir)
        assert d.proc.wait(15) == 0, d.read_log()
        time.sleep(0.3)
        loop.stop_flag.set()
        loop.join(10)
        assert loop.errors == [], loop.errors[:5]
        assert smtp_greeting(port).startswith("220 ")
        assert d.call("x:NetworkListener/get", {"ids": None})[1]["list"]
        # the upgraded process upgrades again, as often as needed
        loop = ConnectLoop(port)
        loop.start()
        r = subprocess.run([BIN, "upgrade", "--data", d.data_dir], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr + d.read_log()
        third = read_pid(d.data_dir)
        assert third not in (0, old, new)
        assert wait_until(lambda: not alive(new), 15), "the second process exits too"
        new = third
        time.sleep(0.3)
        loop.stop_flag.set()
        loop.join(10)
        assert loop.errors == [], loop.errors[:5]
    finally:
        loop.stop_flag.set()
        stop_pid(new)


def test_sigterm_ends_the_drain_of_the_old_process_with_goodbyes(make_daemon):
    d = make_daemon()
    port = pick_port()
    d.create_listener(name="smtp", protocol="smtp", useTls=False, bind=[f"127.0.0.1:{port}"])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    new = 0
    try:
        assert read_line(s).startswith("220 ")
        d.proc.send_signal(signal.SIGUSR2)
        assert wait_until(lambda: read_pid(d.data_dir) not in (0, d.proc.pid), 30), d.read_log()
        new = read_pid(d.data_dir)
        time.sleep(0.3)
        assert d.proc.poll() is None, "the old process drains its session"
        d.proc.send_signal(signal.SIGTERM)
        assert read_line(s).startswith("421 "), "the session is told the server stops"
        assert d.proc.wait(15) == 0
        assert smtp_greeting(port).startswith("220 "), "the new process serves on"
    finally:
        s.close()
        stop_pid(new)


def test_failing_new_binary_leaves_the_old_one_serving(make_daemon):
    d = make_daemon(extra_env={"GATEHOUSE_UPGRADE_BIN": "/bin/false"})
    port = pick_port()
    d.create_listener(name="smtp", protocol="smtp", useTls=False, bind=[f"127.0.0.1:{port}"])
    old = d.proc.pid
    d.proc.send_signal(signal.SIGUSR2)
    assert wait_until(lambda: "upgrade-error" in d.read_log(), 30), d.read_log()
    assert "goes on serving" in d.read_log()
    assert d.proc.poll() is None and read_pid(d.data_dir) == old
    assert smtp_greeting(port).startswith("220 ")
    # the store was thawed: changes still go through the old process
    port2 = pick_port()
    d.create_listener(name="smtp2", protocol="smtp", useTls=False, bind=[f"127.0.0.1:{port2}"])
    assert smtp_greeting(port2).startswith("220 ")
    r = subprocess.run([BIN, "upgrade", "--pid-file", os.path.join(d.data_dir, "nothing.pid")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "no daemon pid" in r.stderr


def test_upgrade_abandoned_when_the_new_binary_dies_before_ready(make_daemon, tmp_path):
    """A stub that runs a while and exits without writing its ready byte, as a new binary
    that crashes during start would."""
    stub = tmp_path / "stub.sh"
    stub.write_text("#!/bin/sh\nexec sleep 0.5\n")
    stub.chmod(0o755)
    d = make_daemon(extra_env={"GATEHOUSE_UPGRADE_BIN": str(stub)})
    d.proc.send_signal(signal.SIGUSR2)
    assert wait_until(lambda: "upgrade-error" in d.read_log(), 30), d.read_log()
    assert d.call("x:NetworkListener/get", {"ids": None})[0] == "x:NetworkListener/get"
