"""`gatehouse serve` as SPEC §1 describes it: first start, the administrator secret, the
management address from GATEHOUSE_HTTP, JSON log lines, usage errors."""
import json
import os
import subprocess
import time
import urllib.request

from conftest import BIN, USING, pick_port, wait_port


def start(data_dir, env_extra, args=()):
    env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_ADMIN_SECRET"}
    env.update(env_extra)
    out = open(os.path.join(data_dir + ".out"), "wb")
    proc = subprocess.Popen([BIN, "serve", "--data", data_dir, "--workers", "1", *args],
                            env=env, stdout=out, stderr=subprocess.PIPE)
    return proc, out


def echo(port, secret):
    body = json.dumps({"using": USING, "methodCalls": [["Core/echo", {"x": 1}, "c"]]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body, headers={
        "Authorization": "Bearer " + secret, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def test_first_start_prints_the_url_and_a_secret_once(tmp_path):
    port = pick_port()
    data = str(tmp_path / "data")
    proc, out = start(data, {"GATEHOUSE_HTTP": f"127.0.0.1:{port}"}, ["--log-format", "json"])
    try:
        assert wait_port(port), "GATEHOUSE_HTTP did not set the management address"
        time.sleep(0.2)
        printed = open(data + ".out").read()
        assert f"management: http://127.0.0.1:{port}/" in printed
        secret = printed.split("administrator secret: ")[1].split()[0]
        assert echo(port, secret) == 200
    finally:
        proc.terminate()
        err = proc.communicate(timeout=15)[1].decode()
    assert proc.returncode == 0
    assert secret not in err  # printed once on stdout, never logged
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events and all({"time", "event", "listener", "client"} <= e.keys() for e in events)
    # session lines carry their own fields (docs/observability.md), other events a message
    assert all("message" in e for e in events if e["event"] != "session")
    assert {"started", "shutdown", "stopped"} <= {e["event"] for e in events}
    # second start: the secret is not printed again, and it still works
    proc, out = start(data, {}, [])
    try:
        assert wait_port(port)
        assert echo(port, secret) == 200
        assert "administrator secret" not in open(data + ".out").read()
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_unknown_option_is_a_usage_error(tmp_path):
    r = subprocess.run([BIN, "serve", "--data", str(tmp_path), "--bogus", "1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "unknown option --bogus" in r.stderr and "usage:" in r.stderr
