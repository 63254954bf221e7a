"""Integration-test harness: starts the real daemon on free loopback ports and talks to it.

Fixtures:
  gatehouse  -- a fresh daemon per test (own data dir), with helpers below
  free_port  -- a function returning a free TCP port on 127.0.0.1
The binary is $GATEHOUSE_BIN, else build/gatehouse (the ASan run points it at build-asan).
$GATEHOUSE_ENGINE (auto, epoll or io_uring) is passed as --engine, so the suite runs under
either event engine; daemons started by hand in a test inherit it from the environment.
"""
import base64
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("GATEHOUSE_BIN", os.path.join(ROOT, "build", "gatehouse"))
ENGINE = os.environ.get("GATEHOUSE_ENGINE")
ENGINE_ARGS = ["--engine", ENGINE] if ENGINE else []
SECRET = "test-admin-secret"
USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]


_handed_out = set()


def pick_port():
    """A free port never handed out before in this run: the kernel may give the same free
    port to two calls in a row, and a test that picks several (pebble's four) must not get
    one twice, nor one a process of an earlier test may still hold."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, host="127.0.0.1", timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class Daemon:
    """A running gatehouse. api() posts a JMAP request as the administrator."""

    def __init__(self, data_dir, http_port, extra_env=None, args=None, nofile=None):
        self.data_dir = data_dir
        self.http_port = http_port
        self.url = f"http://127.0.0.1:{http_port}"
        self.secret = SECRET
        self.env = dict(os.environ, GATEHOUSE_ADMIN_SECRET=SECRET, **(extra_env or {}))
        self.args = args or []
        self.nofile = nofile  # RLIMIT_NOFILE for the daemon, to test running out of descriptors
        self.proc = None
        self.log_path = os.path.join(data_dir, "gatehouse.log")

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)  # the log lives in it
        self.log = open(self.log_path, "ab")
        cmd = [BIN, "serve", "--data", self.data_dir, "--http", f"127.0.0.1:{self.http_port}",
               "--workers", "2"] + ENGINE_ARGS + self.args
        limit = None
        if self.nofile:
            import resource
            n = self.nofile
            limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=self.log,
                                     preexec_fn=limit)
        if not wait_port(self.http_port):
            self.stop()
            raise RuntimeError("gatehouse did not start:\n" + self.read_log())
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        ports = self.listening_ports()
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        # A killed process's io_uring is torn down by the kernel after it exits, and the
        # sockets its polls hold live until then: wait until its listeners are gone, as a
        # supervisor's restart delay would, so the next start is not mistaken for ready.
        end = time.time() + 5
        while ports and time.time() < end:
            out = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
            live = {int(f.rsplit(":", 1)[1]) for line in out.splitlines()
                    for f in line.split()[3:4]}
            if not ports & live:
                break
            time.sleep(0.02)

    def listening_ports(self):
        """The TCP ports this daemon listens on (empty when `ss` cannot tell)."""
        try:
            out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout
        except OSError:
            return set()
        return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
                if f"pid={self.proc.pid}," in line}

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    # ---- HTTP helpers ----
    def http(self, method, path, body=None, headers=None, auth=True, timeout=10):
        """Returns (status, headers dict (lower-case keys), body bytes)."""
        h = dict(headers or {})
        if auth and "Authorization" not in h:
            h["Authorization"] = "Bearer " + self.secret
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def basic(self, user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def request(self, method_calls, using=USING, token=None, created_ids=None):
        """POST /api; returns (status, parsed JSON)."""
        body = {"using": using, "methodCalls": method_calls}
        if created_ids is not None:
            body["createdIds"] = created_ids
        h = {"Content-Type": "application/json"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        status, _, raw = self.http("POST", "/api", json.dumps(body), h)
        return status, json.loads(raw) if raw else None

    def call(self, method, args, token=None):
        """One method call; returns its response [name, args, id]."""
        status, resp = self.request([[method, args, "c"]], token=token)
        assert status == 200, (status, resp)
        return resp["methodResponses"][0]

    def create_listener(self, **props):
        name, res, _ = self.call("x:NetworkListener/set", {"create": {"n": props}})
        assert name == "x:NetworkListener/set", res
        assert "n" in (res.get("created") or {}), res
        return res["created"]["n"]["id"]


@pytest.fixture
def free_port():
    return pick_port


@pytest.fixture
def gatehouse(tmp_path):
    d = Daemon(str(tmp_path / "data"), pick_port()).start()
    yield d
    d.stop()


@pytest.fixture
def make_daemon(tmp_path):
    """Factory for tests that need their own data dir, env or restarts."""
    made = []

    def make(data_dir=None, http_port=None, extra_env=None, args=None, start=True, nofile=None):
        d = Daemon(data_dir or str(tmp_path / f"data{len(made)}"), http_port or pick_port(),
                   extra_env, args, nofile)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.stop()


# Tests whose cost is mostly a real component started for them (PostgreSQL, HAProxy, nginx,
# Postfix, Dovecot, pebble) or a flood: scripts/test.sh runs them in the plain pass only and
# sets GATEHOUSE_SKIP_REAL=1 for the sanitizer pass, so the suite stays quick.
REAL_COMPONENT_MODULES = {
    "test_acme_pebble", "test_backends_real", "test_proxy_by_user_real",
    "test_persistence_postgres", "test_security_postgres", "test_proxy_haproxy",
    "test_proxy_nginx", "test_security_flood",
}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("GATEHOUSE_SKIP_REAL") != "1":
        return
    skip = pytest.mark.skip(reason="real components run once, in the plain pass")
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in REAL_COMPONENT_MODULES:
            item.add_marker(skip)
