"""bench/pair.sh, two servers alive at once and the ratio within each pass: it refuses runs
without bounds, starts what it pairs (a Gatehouse build, the floor, nginx, the sink for
hand-offs), and reports every pass and their median, alternating the servers or loading both
at once."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

PAIR = os.path.join(ROOT, "bench", "pair.sh")
ENGINE = os.environ.get("GATEHOUSE_ENGINE", "io_uring")


def pair(*args):
    return subprocess.run([PAIR, *args], capture_output=True, text=True, timeout=120)


def test_refuses_runs_without_bounds():
    for args in (["--passes", "65"], ["--seconds", "31"], ["--passes", "0"], ["--clients", "x"],
                 ["--workload", "relay"], ["--engine", "poll"], ["--mode", "both"]):
        out = pair(*args, BIN, BIN)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert pair(BIN).returncode == 2
    out = pair("--workload", "tls-full", "floor", BIN)  # the floor speaks no TLS
    assert out.returncode == 2 and "no TLS" in out.stderr, out.stderr
    assert pair("nginx", "nginx").returncode == 2


def passes(out):
    assert out.returncode == 0, out.stdout + out.stderr
    found = [(int(a), int(b))
             for a, b in re.findall(r"^pass \d+ old=(\d+) new=(\d+)(?: resumed=\d+%)?$", out.stdout,
                                    re.M)]
    summary = re.search(r"^new/old per server CPU-second: median (\d+\.\d+) \(.*, (\d+) passes\)$",
                        out.stdout, re.M)
    assert summary, out.stdout
    return found, float(summary.group(1)), int(summary.group(2))


def test_a_build_against_the_floor():
    out = pair("--passes", "2", "--seconds", "1", "--clients", "4", "--engine", ENGINE, "floor",
               BIN)
    found, median, n = passes(out)
    assert "# old floor · new " in out.stdout
    assert len(found) == 2 and all(a > 0 and b > 0 for a, b in found)
    ratios = sorted(b / a for a, b in found)
    assert n == 2 and abs(median - (ratios[0] + ratios[1]) / 2) < 0.001


def test_handed_off_sessions_reach_the_sink():
    out = pair("--workload", "handoff", "--passes", "1", "--seconds", "1", "--clients", "4",
               "--engine", ENGINE, BIN, BIN)
    found, _, n = passes(out)
    assert n == 1 and found[0][0] > 0 and found[0][1] > 0  # 0 would mean errors


def test_together_both_serve_the_same_sessions():
    out = pair("--mode", "together", "--workload", "handoff", "--passes", "2", "--seconds", "1",
               "--clients", "8", "--engine", ENGINE, "floor", BIN)
    found, _, n = passes(out)
    assert "--mode together" in out.stdout
    assert n == 2 and all(a > 0 and b > 0 for a, b in found)  # 0 would mean errors


def test_resumed_handshakes_resume_on_both_servers():
    # Two daemons, two ticket keys: a ticket offered to the server that did not issue it
    # makes a full handshake, so a load client keeping one ticket per slot for both would
    # resume about half of them.
    out = pair("--mode", "together", "--workload", "tls-resumed", "--passes", "1", "--seconds",
               "1", "--clients", "8", "--engine", ENGINE, BIN, BIN)
    found, _, n = passes(out)
    assert n == 1 and found[0][0] > 0 and found[0][1] > 0
    resumed = re.search(r"^pass 1 .* resumed=(\d+)%$", out.stdout, re.M)
    assert resumed and int(resumed.group(1)) >= 90, out.stdout


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


@pytest.mark.skipif(NGINX is None or not os.path.exists(STREAM),
                    reason="needs nginx with its stream module (scripts/deps.sh bench)")
def test_a_build_against_nginx():
    for work in ("handoff", "tls-full"):
        out = pair("--mode", "together", "--workload", work, "--passes", "1", "--seconds", "1",
                   "--clients", "8", "--engine", ENGINE, "nginx", BIN)
        found, _, n = passes(out)
        assert "# old nginx · new " in out.stdout
        assert n == 1 and found[0][0] > 0 and found[0][1] > 0, (work, out.stdout)
