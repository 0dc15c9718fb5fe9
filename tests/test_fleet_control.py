"""Fleet control without a scheduler: pause and resume, on every Redis topology.

Several lockrun processes stand for the servers of a fleet; each test runs against a
real single Redis, a Sentinel set and a Cluster (where the fleet-wide flag lives in
another slot than the job's keys).
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, free_port, run_lockrun, start_lockrun, wait_for
from redis_topologies import Cluster, SentinelSet

SERVERS = 3


@pytest.fixture(scope="module", params=["single", "sentinel", "cluster"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp(request.param)
    topology: RedisServer | SentinelSet | Cluster
    if request.param == "single":
        topology = RedisServer(workdir)
    elif request.param == "sentinel":
        topology = SentinelSet(workdir, replicas=1)
    else:
        topology = Cluster(workdir, primaries=3)
    try:
        yield topology.url
    finally:
        topology.stop()


def fleet_fire(url: str, key: str, fire: str, marker: Path, *extra: str) -> list[int]:
    """Every server runs the crontab line of *fire*; the job appends to *marker*."""
    codes = []
    for server in range(SERVERS):
        r = run_lockrun("-k", key, "--fire", fire, *extra, "--", "sh", "-c",
                        f"echo {server} >> {marker}", url=url)
        assert r.stderr == "" or "-v" in extra, r.stderr
        codes.append(r.returncode)
    return codes


def ran(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def admin_json(url: str, *args: str) -> Any:  # json's
    r = run_lockrun(*args, "--json", url=url)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_paused_job_skips_on_every_server_until_resumed(url: str, key: str,
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = run_lockrun("pause", key, "--reason", "db upgrade", url=url)
    assert r.returncode == 0 and "paused" in r.stdout, r.stderr
    assert fleet_fire(url, key, "f1", marker, "-E", "3") == [3] * SERVERS
    assert ran(marker) == [], "a paused job ran"
    told = run_lockrun("-v", "-k", key, "--fire", "f1", "--", "true", url=url)
    assert told.returncode == 0
    assert told.stderr.count("\n") == 1 and "paused by " in told.stderr \
        and "db upgrade" in told.stderr
    [status] = admin_json(url, "status", key)
    assert status["paused"]["reason"] == "db upgrade" and "@" in status["paused"]["by"]
    assert status["paused"]["scope"] == "job" and status["paused"]["until_ms"] is None
    rows = admin_json(url, "history", key)
    assert isinstance(rows, list)
    fire = [row for row in rows if row["fire"] == "f1"]
    assert [row["outcome"] for row in fire] == ["paused"]  # one record for the whole fleet
    assert fire[0]["reason"] == "db upgrade" and fire[0]["by"] == status["paused"]["by"]
    assert [row["outcome"] for row in rows if not row["fire"]] == ["pause"]

    r = run_lockrun("resume", key, url=url)
    assert r.returncode == 0 and r.stdout == f"resumed {key}\n"
    assert fleet_fire(url, key, "f2", marker) == [0] * SERVERS
    assert len(ran(marker)) == 1, "after resume exactly one server runs the next fire"
    assert fleet_fire(url, key, "f1", marker) == [0] * SERVERS  # f1 stays skipped
    assert len(ran(marker)) == 1
    rows = admin_json(url, "history", key)
    assert isinstance(rows, list)
    assert [row["outcome"] for row in rows if not row["fire"]] == ["resume", "pause"]
    assert run_lockrun("resume", key, url=url).returncode == 1  # nothing to resume


def test_a_pause_ends_by_itself(url: str, key: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert run_lockrun("pause", key, "--for", "2s", url=url).returncode == 0
    [status] = admin_json(url, "status", key)
    assert status["paused"]["until_ms"] is not None
    assert fleet_fire(url, key, "f1", marker) == [0] * SERVERS and ran(marker) == []
    wait_for(lambda: admin_json(url, "status", key)[0]["paused"] is None,
             30, "the pause to expire in Redis")
    assert fleet_fire(url, key, "f2", marker) == [0] * SERVERS
    assert len(ran(marker)) == 1


def test_pause_all_holds_every_job_and_a_jobs_own_pause_outlives_it(
        url: str, key: str, tmp_path: Path) -> None:
    a, b = f"{key}-a", f"{key}-b"
    marker = tmp_path / "ran"
    assert run_lockrun("pause", b, "--reason", "own", url=url).returncode == 0
    assert run_lockrun("pause", "--all", "--reason", "freeze", url=url).returncode == 0
    try:
        for job in (a, b):
            fleet_fire(url, job, "f1", marker)
        assert ran(marker) == []
        [status] = admin_json(url, "status", a)
        assert status["paused"]["scope"] == "all" and status["paused"]["reason"] == "freeze"
    finally:
        assert run_lockrun("resume", "--all", url=url).returncode == 0
    fleet_fire(url, a, "f2", marker)
    fleet_fire(url, b, "f2", marker)
    assert len(ran(marker)) == 1, "a ran once; b, paused on its own, did not"
    assert run_lockrun("resume", b, url=url).returncode == 0
    fleet_fire(url, b, "f3", marker)
    assert len(ran(marker)) == 2


@pytest.mark.parametrize("args", [
    ("pause",), ("pause", "K", "--all"), ("pause", "K", "--until", "2001-01-01T00:00Z"),
    ("pause", "K", "--for", "0"), ("pause", "K", "--until", "tomorrow"),
    ("pause", "K", "--for", "1h", "--until", "2099-01-01T00:00"),
    ("pause", "K", "--reason", "two\nlines"), ("pause", "bad key"), ("resume",),
    ("resume", "K", "--all"),
], ids=lambda a: " ".join(a).replace("\n", "\\n"))
def test_bad_pause_input_is_a_usage_error_before_redis_is_contacted(args: tuple[str, ...]
                                                                    ) -> None:
    refused = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: 75 if contacted
    r = run_lockrun(*args, url=refused)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert r.stderr.startswith("lockrun: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


FAST = ("--ttl", "3s", "--redis-timeout", "500ms", "--kill-after", "1s")
"""A renewal every second, and SIGKILL one second after SIGTERM: cancel and replace are
bounded by ttl/3 + --kill-after, plus what a loaded machine adds."""
BOUND_S = 1.0 + 1.0 + 4.0


def locked_job(lock: Path, log: Path, name: str, seconds: int) -> str:
    """A job that holds *lock* (an flock shared with every process it starts) while it
    runs, and writes OVERLAP instead of starting if another run holds it: two runs of the
    key at once cannot go unnoticed, down to a grandchild that outlived its parent."""
    return (f"exec 9>{lock}; flock -n 9 || {{ echo OVERLAP-{name} >> {log}; exit 1; }}; "
            f"trap '' TERM; echo start-{name} >> {log}; sleep {seconds} & wait")


def test_cancel_stops_the_whole_tree_and_records_who_asked(url: str, key: str,
                                                            tmp_path: Path) -> None:
    lock, log = tmp_path / "lock", tmp_path / "log"
    proc = start_lockrun("-k", key, "--fire", "f1", *FAST, "--", "sh", "-c",
                         locked_job(lock, log, "f1", 300), url=url)
    wait_for(lambda: "start-f1" in (log.read_text() if log.exists() else ""), 30,
             "the job to start")
    r = run_lockrun("cancel", key, url=url)
    asked = time.monotonic()
    assert r.returncode == 0 and "fire f1" in r.stdout, (r.stdout, r.stderr)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - asked
    assert proc.returncode == 143, err
    assert took < BOUND_S, f"stopped {took:.1f}s after the request"
    assert "cancelled by " in err and err.count("\n") == 1, err
    with lock.open("w") as f:  # the whole tree is gone: nothing holds the lock any more
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rows = admin_json(url, "history", key)
    [run] = [row for row in rows if row["fire"] == "f1"]
    assert run["outcome"] == "cancelled" and run["exit"] == 143 and "@" in run["by"]
    assert run_lockrun("cancel", key, url=url).returncode == 1  # nothing runs now


def test_cancel_of_a_job_that_is_not_running_exits_1(url: str, key: str) -> None:
    assert run_lockrun("-k", key, "--fire", "f1", "--", "true", url=url).returncode == 0
    for args in (("cancel", key), ("cancel", key, "--fire", "f1"),
                 ("cancel", key, "--fire", "f9")):
        r = run_lockrun(*args, url=url)
        assert r.returncode == 1 and "nothing" in r.stdout, (args, r.stdout, r.stderr)


def test_overlap_replace_stops_the_earlier_run_first_and_fences_above_it(
        url: str, key: str, tmp_path: Path) -> None:
    lock, log = tmp_path / "lock", tmp_path / "log"
    old = start_lockrun("-k", key, "--fire", "f1", "--overlap", "replace", *FAST, "--", "sh",
                        "-c", locked_job(lock, log, "f1", 300), url=url)
    wait_for(lambda: "start-f1" in (log.read_text() if log.exists() else ""), 30,
             "the first run to start")
    # three servers reach the next fire at once; each would replace the running one
    new = [start_lockrun("-k", key, "--fire", "f2", "--overlap", "replace", *FAST, "--",
                         "sh", "-c", locked_job(lock, log, "f2", 1), url=url)
           for _ in range(SERVERS)]
    codes = [p.wait(60) for p in new]
    _, err = old.communicate(timeout=60)
    assert old.returncode == 143 and "cancelled by fire f2" in err, err
    lines = log.read_text().split()
    assert not [x for x in lines if x.startswith("OVERLAP")], lines
    assert lines == ["start-f1", "start-f2"], lines  # one run of f2, after f1 was gone
    assert sorted(codes) == [0] * SERVERS, codes
    rows = {row["fire"]: row for row in admin_json(url, "history", key) if row["fire"]}
    assert rows["f1"]["outcome"] == "cancelled" and rows["f2"]["outcome"] == "ran"
    assert int(rows["f2"]["fence"]) > int(rows["f1"]["fence"])


def test_overlap_skip_still_skips_while_an_earlier_fire_runs(url: str, key: str,
                                                            tmp_path: Path) -> None:
    """The replace path is only taken when asked: the default leaves the running one be."""
    lock, log = tmp_path / "lock", tmp_path / "log"
    old = start_lockrun("-k", key, "--fire", "f1", *FAST, "--", "sh", "-c",
                        locked_job(lock, log, "f1", 300), url=url)
    try:
        wait_for(lambda: "start-f1" in (log.read_text() if log.exists() else ""), 30,
                 "the first run to start")
        r = run_lockrun("-v", "-k", key, "--fire", "f2", *FAST, "--", "true", url=url)
        assert r.returncode == 0 and "still running" in r.stderr, r.stderr
        assert old.poll() is None
    finally:
        assert run_lockrun("cancel", key, url=url).returncode == 0
        old.communicate(timeout=60)
