"""The fleet simulation's short form: one start per fire across servers, clocks and faults.

``tests/fleet/sim.py`` runs real lockrun processes for many simulated servers
against a private Redis; here CI runs its short form and checks what it
counted. The three parts (default mode, --schedule mode, faults) run as three
concurrent sims: the faults mostly wait on sleeps and ttls, so overlapping them
with the CPU-bound clean modes keeps the test well inside two minutes. The flaky
mode (a job that fails often on some servers, run with --retries) runs on its own,
because its retries are timed against the ticks and want the CPU. A last test
breaks the fleet on purpose (every server its own fire id) to prove that these
checks, and the sim's exit status, do catch duplicates and overlapping attempts.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "tests" / "fleet" / "sim.py"
SIM_DEADLINE_S = 150.0
LEFTOVER_DEADLINE_S = 10.0

Results = dict[str, Any]
_LIBC = ctypes.CDLL(None, use_errno=True)


def _term_with_pytest() -> None:
    """preexec_fn: if pytest dies, the sim gets SIGTERM and cleans up after itself."""
    _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _ours(workdir: Path) -> list[str]:
    """Processes of one sim run: their command line or environment names its scratch
    directory (redis-server's --dir; lockrun's and the job's SIM_RUNS_LOG)."""
    needle = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (needle in cmdline or needle in environ):
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {shown}")
    return found


@dataclass
class Sim:
    """One running ``sim.py --short`` and where it writes."""

    proc: subprocess.Popen[str]
    workdir: Path
    results: Path


def _start(tmp_path: Path, name: str, *args: str) -> Sim:
    base = tmp_path / name
    base.mkdir()
    sim = Sim(subprocess.Popen(
        [sys.executable, str(SIM), "--short", "--workdir", str(base / "work"),
         "--json", str(base / "results.json"), "--report", str(base / "report.md"), *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_term_with_pytest,
    ), base / "work", base / "results.json")
    return sim


def _stop(sim: Sim) -> None:
    """SIGTERM lets the sim clean up; its children die with it (PDEATHSIG) in any case."""
    if sim.proc.poll() is None:
        sim.proc.terminate()
        try:
            sim.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sim.proc.kill()
            sim.proc.communicate()


@contextmanager
def simulations(tmp_path: Path, *runs: tuple[str, ...]) -> Iterator[list[tuple[int, Results]]]:
    """Run sims concurrently; yield (exit status, results) each; never leave processes."""
    sims: list[Sim] = []
    try:
        for i, args in enumerate(runs):
            sims.append(_start(tmp_path, f"sim{i}", *args))
        deadline = time.monotonic() + SIM_DEADLINE_S
        out = []
        for sim in sims:
            try:
                _, err = sim.proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the fleet simulation did not finish within {SIM_DEADLINE_S:g}s")
            assert sim.results.exists(), err
            out.append((sim.proc.returncode, json.loads(sim.results.read_text())))
        yield out
    finally:
        for sim in sims:
            _stop(sim)
        for sim in sims:
            deadline = time.monotonic() + LEFTOVER_DEADLINE_S
            while _ours(sim.workdir) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _ours(sim.workdir) == [], "the simulation left processes behind"


def check_clean(mode: Results) -> None:
    """Every fire ran exactly once, and every lockrun exited 0 without a word."""
    assert mode["fires"] > 0
    assert (mode["runs"], mode["duplicates"], mode["misses"]) == (mode["fires"], 0, 0), \
        mode["problems"]
    assert mode["wrong_fire_id"] == 0
    assert mode["hung"] == 0
    assert mode["record_mismatches"] == 0
    assert mode["fences_increasing"]
    assert mode["exit_codes"] == {"0": mode["processes"]}
    assert mode["stderr_total"] == 0, mode["stderr_lines"]


def check_faults(faults: Results) -> None:
    """No duplicate where Redis keeps its data; where it cannot, each duplicate is reported."""
    assert set(faults) == {"1a", "1b", "2", "3", "4", "5", "6"}
    for num, fault in faults.items():
        assert fault["fires"] > 0, num
        assert fault["not_applied"] == 0, (num, fault["notes"])
        assert fault["misses"] == 0, (num, fault["notes"])
        assert fault["hung"] == 0, num
        if num in ("4", "5"):
            assert fault["duplicates"] == fault["duplicates_detected"], (num, fault["notes"])
        else:
            assert fault["duplicates"] == 0, (num, fault["notes"])
    assert faults["1b"]["runs"] == 2 * faults["1b"]["fires"], faults["1b"]["notes"]  # retried
    assert all(faults["1a"]["metrics"]["pdeathsig_ok"])
    assert all(faults["2"]["metrics"]["done_137"])
    assert all(faults["3"]["metrics"]["claim_survived"])
    assert not any("lost the lease" in line for line in faults["6"]["stderr_lines"])


FLAKY_CHECKS = ("double_successes", "overlaps", "too_many_attempts", "left_open", "ran_nowhere",
                "before_due", "within_preference", "log_history_mismatches",
                "record_mismatches", "exit_mismatches", "hung")


def check_flaky(flaky: Results) -> None:
    """Retries moved to healthy servers and succeeded there; never a fire that succeeded
    twice, never two attempts at once, never a retry before its time."""
    assert flaky["fires"] > 0
    assert {name: flaky[name] for name in FLAKY_CHECKS} == dict.fromkeys(FLAKY_CHECKS, 0), \
        flaky["problems"]
    assert set(flaky["successes_per_fire"]) <= {"0", "1"}, flaky["problems"]
    assert sum(flaky["successes_per_fire"].values()) == flaky["fires"]
    assert flaky["successes_per_fire"].get("1", 0) == (flaky["first_try_success"]
                                                       + flaky["success_after_retry"])
    assert flaky["retries"] == flaky["attempts"] - flaky["fires"]
    assert flaky["retries"] == flaky["retries_moved"] + flaky["retries_stayed"]
    assert flaky["retries_moved_healthy"] >= 1, flaky["timeline"]
    assert flaky["success_after_retry"] >= 1, flaky["timeline"]
    assert all(lag >= -5 for lag in flaky["retry_lag_ms"]), flaky["retry_lag_ms"]
    # lockrun passed each attempt's status through, and said nothing unexpected: the only
    # error a fire may cause is its ticket ending past the grace, once
    assert flaky["exit_codes"].get("3", 0) == flaky["failed_attempts"] > 0
    assert all("no server started its retry" in line for line in flaky["stderr_lines"]), \
        flaky["stderr_lines"]
    assert flaky["stderr_total"] == flaky["ended_by_grace"]


def test_fleet_runs_each_fire_once_and_reports_data_loss(tmp_path: Path) -> None:
    with simulations(tmp_path, ("--mode", "faults"), ("--mode", "default"),
                     ("--mode", "schedule")) as done:
        (faults_code, faults), (default_code, default), (schedule_code, schedule) = done
    check_clean(default["modes"]["default"])
    check_clean(schedule["modes"]["schedule"])
    check_faults(faults["faults"])
    assert [default_code, schedule_code, faults_code] == [0, 0, 0]
    assert [default["violations"], schedule["violations"], faults["violations"]] == [0, 0, 0]


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_the_same_fleet_against_sentinel_and_cluster(tmp_path: Path, topology: str) -> None:
    """The unchanged simulation, pointed at a replicated topology: clean fires, the
    restart that loses data (reported), a killed connection, and a failover mid-job."""
    with simulations(tmp_path, ("--topology", topology, "--mode", "default"),
                     ("--topology", topology, "--mode", "faults", "--faults", "4,6,7")) as done:
        (default_code, default), (faults_code, faults) = done
    check_clean(default["modes"]["default"])
    found = faults["faults"]
    assert set(found) == {"4", "6", "7"}
    for num, fault in found.items():
        assert fault["fires"] > 0 and fault["not_applied"] == 0, (num, fault["notes"])
        assert (fault["misses"], fault["hung"]) == (0, 0), (num, fault["notes"])
    assert found["4"]["duplicates"] == found["4"]["duplicates_detected"], found["4"]["notes"]
    assert found["6"]["duplicates"] == 0 and found["7"]["duplicates"] == 0
    assert all(found["7"]["metrics"]["claim_survived"]), found["7"]["notes"]
    assert all(found["7"]["metrics"]["done_on_new_primary"]), found["7"]["notes"]
    assert not any("lost the lease" in line for line in found["7"]["stderr_lines"])
    assert [default_code, faults_code] == [0, 0]


def test_a_flaky_job_is_retried_elsewhere_and_succeeds_once(tmp_path: Path) -> None:
    """The flaky mode: a job that fails with probability p on a third of the servers; and
    beside it a job that fails everywhere, whose fires must stop after --retries + 1."""
    with simulations(tmp_path, ("--mode", "flaky"),
                     ("--mode", "flaky", "--servers", "4", "--flaky-fires", "3", "--flaky-p", "1",
                      "--flaky-q", "1")) as done:
        [(code, results), (failing_code, failing)] = done
    check_flaky(results["flaky"])
    assert (code, results["violations"]) == (0, 0)
    broken = failing["flaky"]
    assert {name: broken[name] for name in FLAKY_CHECKS} == dict.fromkeys(FLAKY_CHECKS, 0), \
        broken["problems"]
    assert broken["successes_per_fire"] == {"0": 3}
    # three attempts; or, if the machine lagged past the grace, fewer, and the ticket
    # ended by the first late tick
    assert set(broken["attempts_per_fire"]) <= {"2", "3"}, broken["timeline"]
    assert broken["exhausted"] >= 1 and broken["exhausted"] + broken["ended_by_grace"] == 3
    # (a retry may stay on a failed host once the others' turn is over: the machine lagged)
    assert broken["retries_moved"] >= 1, broken["timeline"]
    assert (failing_code, failing["violations"]) == (0, 0)


def test_the_checks_fail_on_a_fleet_that_runs_fires_twice(tmp_path: Path) -> None:
    """Every server with its own fire id: each fire runs on every server, and we must see it."""
    with simulations(tmp_path, ("--mode", "default", "--servers", "3", "--fires", "2",
                                "--sabotage", "fire-per-server"),
                     ("--mode", "flaky", "--servers", "3", "--flaky-fires", "2",
                      "--flaky-p", "0", "--flaky-q", "0", "--sabotage", "fire-per-server")) as done:
        [(code, results), (flaky_code, flaky_results)] = done
    mode = results["modes"]["default"]
    assert (mode["runs"], mode["duplicates"]) == (6, 2)
    assert (code, results["violations"]) == (1, mode["violations"])
    with pytest.raises(AssertionError):
        check_clean(mode)
    # the flaky mode's checks: three successes per fire, all at once (the job sleeps)
    flaky = flaky_results["flaky"]
    assert flaky["successes_per_fire"] == {"3": 2}
    assert flaky["double_successes"] == 2 and flaky["overlaps"] >= 1, flaky["problems"]
    assert (flaky_code, flaky_results["violations"]) == (1, flaky["violations"])
    with pytest.raises(AssertionError):
        check_flaky(flaky)
