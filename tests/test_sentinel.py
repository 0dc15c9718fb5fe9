"""Sentinel: a real primary, a replica and three sentinels, with a failover mid-job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import free_port, run_lockrun, start_lockrun, wait_for
from redis_topologies import SENTINEL_SERVICE, SentinelSet

SERVICE = SENTINEL_SERVICE


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path)
    yield topology
    topology.stop()


def test_lockrun_finds_the_primary_through_sentinel(sentinels: SentinelSet, key: str) -> None:
    r = run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "exit 3", url=sentinels.url)
    assert (r.returncode, r.stderr) == (3, "")
    primary = sentinels.client()
    assert primary.hget(f"lockrun:{{{key}}}:fire:f1", "state") == "done"
    again = run_lockrun("-k", key, "--fire", "f1", "-E", "9", "--", "true", url=sentinels.url)
    assert again.returncode == 9


def test_a_failover_during_a_job_is_survived_or_reported(sentinels: SentinelSet, key: str,
                                                         tmp_path: Path) -> None:
    started = tmp_path / "started"
    old = sentinels.primary_port()
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "3s", "--redis-timeout", "1s",
                         "--", "sh", "-c",
                         f"touch {started}; sleep 8; exit 3", url=sentinels.url)
    wait_for(started.exists, 30, "the job to start")
    old_primary = redis.Redis(port=old, socket_timeout=5)
    wait_for(lambda: old_primary.execute_command(  # type: ignore[no-untyped-call]
        "WAIT", 1, 100) == 1, 10, "the claim to reach the replica")
    assert sentinels.failover() != old
    assert proc.wait(60) == 3
    assert proc.stderr is not None
    err = proc.stderr.read()
    new = sentinels.client()
    record = new.hgetall(f"lockrun:{{{key}}}:fire:f1")
    if "lost the lease" in err:  # the claim did not survive: said, not hidden
        return
    assert record.get("state") == "done" and record.get("exit") == "3", (err, record)


def test_unreachable_sentinels_are_75_quickly(key: str) -> None:
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://lr:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{SERVICE}"
    start = time.monotonic()
    r = run_lockrun("-k", key, "--", "true", url=url)
    assert r.returncode == 75
    assert time.monotonic() - start < 10
    assert r.stderr.startswith("lockrun: ") and len(r.stderr.splitlines()) == 1
    assert "s3cret" not in r.stderr and "no sentinel answered" in r.stderr


def test_an_unknown_service_is_75_in_one_line(sentinels: SentinelSet, key: str) -> None:
    url = sentinels.url.replace(f"/{SERVICE}", "/no-such-service")
    r = run_lockrun("-k", key, "--", "echo", "RAN", url=url)
    assert (r.returncode, r.stdout) == (75, "")
    assert r.stderr.startswith("lockrun: ") and len(r.stderr.splitlines()) == 1
    assert "know no healthy primary for service 'no-such-service'" in r.stderr


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:1", "redis+sentinel:///svc",
                                 "redis+sentinel://host:notaport/svc"])
def test_bad_sentinel_urls_are_usage_errors(url: str) -> None:
    r = run_lockrun("-k", "x", "--", "true", url=url)
    assert r.returncode == 64, r.stderr
