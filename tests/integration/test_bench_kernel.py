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


def rows_of(out):
    return dict((k, (float(a), float(b))) for k, a, b in
                re.findall(r"^\| (.+?) \| (\d+\.\d+) \| (\d+\.\d+) \|$", out.stdout, re.M))


@pytest.mark.skipif(not shutil.which("perf"), reason="needs perf")
def test_counts_are_per_session():
    out = kernel("--workload", "handoff", "--clients", "4", "--seconds", "1", "--engine", ENGINE)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = rows_of(out)
    def one_each(row):  # the sessions at the run's edges move it by a few hundredths
        return row in rows and all(abs(v - 1) < 0.05 for v in rows[row])

    assert one_each("call socket"), out.stdout
    if ENGINE == "io_uring":
        assert one_each("ring ACCEPT"), out.stdout  # both accept through the ring
    assert max(rows["CPU µs system"]) > 0, out.stdout  # both servers' CPU was read


@pytest.mark.skipif(not shutil.which("perf"), reason="needs perf")
def test_gatehouse_does_not_read_sockets_it_expects_empty():
    """Of a hand-off's 15 receives the floor finds 12 to 14 sockets empty (it reads until
    EAGAIN, or tries before its poll); Gatehouse only its first on each socket, at most: the
    epoll engine stops at a short read, ring receives after any exchange poll first."""
    out = kernel("--workload", "handoff", "--clients", "4", "--seconds", "1", "--engine", ENGINE)
    assert out.returncode == 0, out.stdout + out.stderr
    row = "receive found the socket empty (EAGAIN)"
    rows = rows_of(out)
    if row not in rows:
        pytest.skip("the kernel does not trace sock_recv_length (6.3)")
    floor, gatehouse = rows[row]
    assert floor > 10 and gatehouse < 2.5, out.stdout
