"""bench/pair.sh, two servers alive at once and the ratio within each pass: it refuses runs
without bounds, starts what it pairs (a Gatehouse build, the floor, the sink for hand-offs),
and reports every pass and their median, alternating the servers or loading both at once."""
import os
import re
import subprocess

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


def passes(out):
    assert out.returncode == 0, out.stdout + out.stderr
    found = [(int(a), int(b)) for a, b in re.findall(r"^pass \d+ old=(\d+) new=(\d+)$", out.stdout,
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
