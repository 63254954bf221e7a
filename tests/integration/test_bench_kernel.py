"""bench/kernel.sh, the kernel's work per session of Gatehouse beside the floor: it refuses runs
without bounds, and its counts are per session (each handed-off session opens one backend
socket, on either server, on either engine)."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

KERNEL = os.path.join(ROOT, "bench", "kernel.sh")
ENGINE = os.environ.get("GATEHOUSE_ENGINE", "io_uring")


def kernel(*args):
    return subprocess.run([KERNEL, "--binary", BIN, *args], capture_output=True, text=True,
                          timeout=120)


def test_refuses_runs_without_bounds():
    for args in (["--seconds", "31"], ["--seconds", "0"], ["--clients", "x"],
                 ["--workload", "relay"], ["--engine", "poll"]):
        out = kernel(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)


@pytest.mark.skipif(not shutil.which("perf"), reason="needs perf")
def test_counts_are_per_session():
    out = kernel("--workload", "handoff", "--clients", "4", "--seconds", "1", "--engine", ENGINE)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = dict((k, (float(a), float(b))) for k, a, b in
                re.findall(r"^\| (.+?) \| (\d+\.\d+) \| (\d+\.\d+) \|$", out.stdout, re.M))
    def one_each(row):  # the sessions at the run's edges move it by a few hundredths
        return row in rows and all(abs(v - 1) < 0.05 for v in rows[row])

    assert one_each("call socket"), out.stdout
    if ENGINE == "io_uring":
        assert one_each("ring ACCEPT"), out.stdout  # both accept through the ring
    assert max(rows["CPU µs system"]) > 0, out.stdout  # both servers' CPU was read
