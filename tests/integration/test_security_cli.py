"""gatehouse-cli with the address rules: blocked-ip, allowed-ip and the security singleton,
all typed from the served schema (Rate values as JSON, UTCDate as text)."""
import json
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("GATEHOUSE_CLI", os.path.join(ROOT, "build", "gatehouse-cli"))


def run(gh, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["GATEHOUSE_URL"] = gh.url
    env["GATEHOUSE_TOKEN"] = gh.secret
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_blocked_and_allowed_ip_commands(gatehouse):
    r = run(gatehouse, "create", "allowed-ip", "--field", "address=10.9.0.0/16",
            "--field", "reason=office")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"Created AllowedIp w\w+\n", r.stdout)
    r = run(gatehouse, "create", "blocked-ip", "--field", "address=192.0.2.0/24",
            "--field", "expiresAt=2030-01-01T00:00:00Z")
    assert r.returncode == 0, r.stderr
    r = run(gatehouse, "create", "BlockedIp", "--field", "address=10.0.0.0/33")
    assert r.returncode == 1
    assert "invalidProperties (address)" in r.stderr and "0-32" in r.stderr
    r = run(gatehouse, "query", "blocked-ip")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^b\w+\s+192\.0\.2\.0/24\s+manual\s+\S+Z\s+2030-01-01T00:00:00Z$",
                     r.stdout, re.M), r.stdout
    r = run(gatehouse, "query", "x:AllowedIp", "--where", "address=10.9", "--json")
    assert [o["address"] for o in json.loads(r.stdout)] == ["10.9.0.0/16"], r.stdout


def test_security_get_and_update(gatehouse):
    r = run(gatehouse, "get", "security")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Id: singleton\n")
    assert 'Scan ban rate: {"count":30,"period":"1d"}' in r.stdout
    r = run(gatehouse, "update", "security", "--field", 'authBanRate={"count":5,"period":"1h"}',
            "--field", "maxConnectionsPerIp=10", "--field", "scanBanRate=null")
    assert r.returncode == 0, r.stderr
    r = run(gatehouse, "get", "security", "singleton", "--json")
    s = json.loads(r.stdout)
    assert s["authBanRate"] == {"count": 5, "period": "1h"}
    assert s["maxConnectionsPerIp"] == 10 and s["scanBanRate"] is None
    r = run(gatehouse, "update", "security", "--field", 'loiterBanRate={"count":0,"period":"1d"}')
    assert r.returncode == 1 and "loiterBanRate" in r.stderr
    r = run(gatehouse, "describe", "security")
    assert "maxConnectionsPerIp" in r.stdout and "Rate?" in r.stdout
