"""Interoperability: the independent npm JMAP client jmap-jam (0.13.1) fetches the session
through /.well-known/jmap and runs get/set/query (with a result reference) on
x:NetworkListener against the real daemon. npm installs it on first use."""
import json
import os
import shutil
import subprocess

import pytest

JAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jam")


@pytest.fixture(scope="module")
def jam_dir():
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.fail("node and npm are required for the jmap-jam interoperability test")
    if not os.path.isdir(os.path.join(JAM, "node_modules", "jmap-jam")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"],
                       cwd=JAM, check=True, timeout=300, stdout=subprocess.DEVNULL)
    return JAM


def test_jmap_jam_get_set_query(gatehouse, free_port, jam_dir):
    port = free_port()
    p = subprocess.run(["node", "interop.mjs", gatehouse.url, gatehouse.secret, str(port)],
                       cwd=jam_dir, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["ok"] is True
    assert out["apiUrl"] == gatehouse.url + "/api"
    assert "http" in out["before"]
    assert out["queryIds"] == [out["createdId"]]
    assert out["got"] == [{"id": out["createdId"], "name": "jam1", "protocol": "imap",
                           "bind": [f"127.0.0.1:{port}"]}]
    assert out["updated"] == [out["createdId"]]
    assert out["methodError"] == "accountNotFound"
    assert out["destroyed"] == [out["createdId"]]
    # what jam changed is what the daemon holds
    _, res, _ = gatehouse.call("x:NetworkListener/get", {"ids": [out["createdId"]]})
    assert res["notFound"] == [out["createdId"]]
