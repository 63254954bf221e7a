"""What `make install` puts in place: binaries, man pages, the systemd unit (checked with
systemd-analyze where systemd is installed) and bash completion generated from the schema."""
import os
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT


def completion_script(tmp_path):
    schema = subprocess.run([BIN, "schema"], capture_output=True, check=True, timeout=10).stdout
    script = subprocess.run(["python3", os.path.join(ROOT, "scripts", "gen-completion.py")],
                            input=schema, capture_output=True, check=True).stdout
    path = tmp_path / "gatehouse-cli.bash"
    path.write_bytes(script)
    return path


def complete(script, *words):
    """What bash offers for the last word of `gatehouse-cli WORDS...`."""
    line = ["gatehouse-cli", *words]
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in line)
    prog = (f"source '{script}'; COMP_WORDS=({quoted}); COMP_CWORD={len(line) - 1}; "
            "_gatehouse_cli; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_completion_offers_commands_types_fields_and_values(tmp_path):
    script = completion_script(tmp_path)
    assert {"get", "create", "update", "delete", "query", "describe"} <= complete(script, "")
    assert complete(script, "get", "") >= {"network-listener", "certificate", "api-key",
                                           "destination", "system-settings"}
    assert complete(script, "create", "net") == {"network-listener"}
    fields = complete(script, "create", "network-listener", "--field", "")
    assert {"bind=", "protocol=", "maxConnections=", "tlsTimeout=", "name="} <= fields
    assert "id=" not in fields
    # name is set at create only: update does not offer it
    upd = complete(script, "update", "network-listener", "abc", "--field", "")
    assert "bind=" in upd and "name=" not in upd
    assert complete(script, "create", "network-listener", "--field", "protocol=") >= {
        "protocol=smtp", "protocol=imap", "protocol=manageSieve"}
    assert complete(script, "create", "network-listener", "--field", "useTls=") == {
        "useTls=true", "useTls=false"}
    assert "--where" in complete(script, "query", "network-listener", "--")
    assert "--field" not in complete(script, "query", "network-listener", "--")


def test_make_install_puts_every_file_under_destdir(tmp_path):
    if not shutil.which("scdoc"):
        pytest.skip("scdoc is not installed (scripts/deps.sh installs it)")
    dest = tmp_path / "root"
    subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/opt/gh"],
                   check=True, capture_output=True, timeout=600)
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == {
        "opt/gh/sbin/gatehouse", "opt/gh/bin/gatehouse-cli",
        "opt/gh/share/man/man8/gatehouse.8", "opt/gh/share/man/man1/gatehouse-cli.1",
        "opt/gh/lib/systemd/system/gatehouse.service",
        "opt/gh/share/bash-completion/completions/gatehouse-cli",
    }
    unit = (dest / "opt/gh/lib/systemd/system/gatehouse.service").read_text()
    assert "ExecStart=/opt/gh/sbin/gatehouse serve" in unit
    man = (dest / "opt/gh/share/man/man8/gatehouse.8").read_text()
    assert ".TH" in man and "upgrade" in man
    out = subprocess.run([str(dest / "opt/gh/sbin/gatehouse"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("gatehouse ")


def test_unit_has_the_service_settings():
    unit = open(os.path.join(ROOT, "dist", "gatehouse.service.in")).read()
    for line in ["Type=notify", "User=gatehouse", "StateDirectory=gatehouse",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes",
                 "PrivateTmp=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "WatchdogSec=",
                 "RestrictAddressFamilies=", "ExecReload=/bin/kill -HUP $MAINPID"]:
        assert line in unit, line
    assert any(l.startswith("LimitNOFILE=") for l in unit.splitlines())


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd is not installed")
def test_systemd_analyze_verify_passes(tmp_path):
    sbindir = os.path.dirname(os.path.abspath(BIN))
    unit = open(os.path.join(ROOT, "dist", "gatehouse.service.in")).read()
    path = tmp_path / "gatehouse.service"
    path.write_text(unit.replace("@SBINDIR@", sbindir))
    # --man=no: the man pages are checked once installed (the package test)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
