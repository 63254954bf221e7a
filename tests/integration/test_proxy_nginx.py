"""Interoperability with nginx's stream module (Debian's) in front of Gatehouse with
`proxy_protocol on;`, the configuration docs/proxy.md shows. nginx sends PROXY v1; the
client connects from 127.0.0.2, so the EHLO reply's address can only come from the header."""
import os
import shutil
import smtplib
import subprocess

import pytest

from conftest import wait_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
pytestmark = pytest.mark.skipif(NGINX is None or not os.path.exists(MODULE),
                                reason="nginx with the stream module is not installed")

CONFIG = """
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}

stream {{
    upstream gatehouse_smtp {{
        server 127.0.0.1:{gh};
    }}
    server {{
        listen 127.0.0.1:{front};
        proxy_pass gatehouse_smtp;
        proxy_protocol on;
        proxy_connect_timeout 5s;
    }}
}}
"""


@pytest.fixture
def nginx(gatehouse, free_port, tmp_path):
    gh, front = free_port(), free_port()
    gatehouse.create_listener(protocol="smtp", bind=[f"127.0.0.1:{gh}"], useTls=True,
                              overrideProxyTrustedNetworks=["127.0.0.1"])
    cfg = tmp_path / "nginx.conf"
    cfg.write_text(CONFIG.format(module=MODULE, dir=tmp_path, gh=gh, front=front))
    log = open(tmp_path / "nginx.out", "wb")
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(cfg)], stdout=log,
                            stderr=log)
    try:
        if not wait_port(front):
            pytest.fail("nginx did not start: " + (tmp_path / "nginx.out").read_text()
                        + (tmp_path / "error.log").read_text())
        yield front
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_nginx_stream_proxy_protocol(nginx):
    for _ in range(3):
        client = smtplib.SMTP("127.0.0.1", nginx, timeout=10, source_address=("127.0.0.2", 0))
        try:
            code, msg = client.ehlo("client.example")
            assert code == 250
            first = msg.decode().splitlines()[0]
            assert first.endswith("Hello client.example [127.0.0.2]"), first
            assert client.has_extn("starttls")
        finally:
            client.quit()
