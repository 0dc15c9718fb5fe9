"""Fleet control without a scheduler: pause and resume, on every Redis topology.

Several lockrun processes stand for the servers of a fleet; each test runs against a
real single Redis, a Sentinel set and a Cluster (where the fleet-wide flag lives in
another slot than the job's keys).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, free_port, run_lockrun, wait_for
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
