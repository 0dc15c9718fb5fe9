"""Redis Cluster: a real 3-primary cluster; every script stays in its job's slot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, free_port, run_lockrun, start_lockrun, wait_for
from redis_topologies import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three primaries with a replica each, so a failover and WAIT have somewhere to go."""
    topology = Cluster(tmp_path_factory.mktemp("cluster"), primaries=3, replicas=1)
    yield topology
    topology.stop()


def _holds(node: RedisServer, name: str) -> bool:
    """Whether this node stores the key (another node's slot answers MOVED)."""
    try:
        return bool(node.client().exists(name))
    except redis.exceptions.ResponseError:
        return False


def test_jobs_spread_over_the_cluster_and_keep_the_contract(cluster: Cluster,
                                                            key: str) -> None:
    keys = [f"{key}-{i}" for i in range(8)]
    for k in keys:
        r = run_lockrun("-k", k, "--fire", "f1", "--", "sh", "-c", "exit 3", url=cluster.url)
        assert (r.returncode, r.stderr) == (3, "")
        again = run_lockrun("-k", k, "--fire", "f1", "-E", "9", "--", "true", url=cluster.url)
        assert again.returncode == 9
    holders = set()
    for k in keys:
        [holder] = [n for n in cluster.nodes if _holds(n, f"lockrun:{{{k}}}:fire:f1")]
        # every key of the job lives on the same node (one slot)
        assert _holds(holder, f"lockrun:{{{k}}}:hist") and _holds(holder,
                                                                 f"lockrun:{{{k}}}:fence")
        holders.add(holder.port)
    assert len(holders) > 1  # the jobs really were spread over several primaries


def test_admin_verbs_work_across_the_cluster(cluster: Cluster, key: str) -> None:
    names = [f"{key}-a", f"{key}-b", f"{key}-c", f"{key}-d"]
    for k in names:
        run_lockrun("-k", k, "--fire", "f1", "--", "true", url=cluster.url)
    r = run_lockrun("status", url=cluster.url)
    assert r.returncode == 0
    assert all(k in r.stdout for k in names)  # SCAN visits every primary
    h = run_lockrun("history", names[0], url=cluster.url)
    assert "f1" in h.stdout and "ran" in h.stdout
    assert run_lockrun("doctor", url=cluster.url).returncode == 0


def test_an_unreachable_cluster_is_75_quickly(key: str) -> None:
    start = time.monotonic()
    r = run_lockrun("-k", key, "--", "true",
                    url=f"redis+cluster://lr:s3cret@127.0.0.1:{free_port()},"
                        f"127.0.0.1:{free_port()}")
    assert r.returncode == 75
    assert time.monotonic() - start < 10
    assert r.stderr.startswith("lockrun: ") and len(r.stderr.splitlines()) == 1
    assert "s3cret" not in r.stderr and "lr:***@" in r.stderr


def test_an_unreachable_cluster_follows_on_redis_error(key: str) -> None:
    r = run_lockrun("-k", key, "--on-redis-error", "skip", "-E", "4", "--", "true",
                    url=f"redis+cluster://127.0.0.1:{free_port()}")
    assert r.returncode == 4 and "--on-redis-error skip" in r.stderr


@pytest.mark.parametrize("bad", ["redis+cluster://", "redis+cluster://host:port"])
def test_bad_cluster_urls_are_usage_errors(bad: str) -> None:
    assert run_lockrun("-k", "x", "--", "true", url=bad).returncode == 64


def _job_key(key: str) -> str:
    return f"lockrun:{{{key}}}:fire:f1"


def test_wait_replicas_waits_on_the_node_of_the_jobs_slot(cluster: Cluster, key: str) -> None:
    ok = run_lockrun("-k", key, "--fire", "f1", "--wait-replicas", "1", "--strict-replicas",
                     "--", "sh", "-c", "exit 3", url=cluster.url)
    assert (ok.returncode, ok.stderr) == (3, "")
    # With the replica of the job's primary stopped, WAIT must time out. A WAIT sent to
    # any other node (another primary, with its replica running) would report 1.
    replica = cluster.replica_of(cluster.holder(_job_key(key)))
    replica.pause()
    try:
        r = run_lockrun("-k", key, "--fire", "f2", "--wait-replicas", "1", "--wait-timeout",
                        "300ms", "--strict-replicas", "--", "sh", "-c", "echo RAN",
                        url=cluster.url)
    finally:
        replica.resume()
    assert r.returncode == 75 and "RAN" not in r.stdout
    assert "0 of 1 replicas" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_cluster_failover_during_a_job_is_survived(cluster: Cluster, key: str,
                                                     tmp_path: Path) -> None:
    started = tmp_path / "started"
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "3s",
                         "--redis-timeout", "1s", "--", "sh", "-c",
                         f"touch {started}; sleep 8; exit 3", url=cluster.url)
    wait_for(started.exists, 30, "the job to start")
    old = cluster.holder(_job_key(key))
    wait_for(lambda: old.client().execute_command(  # type: ignore[no-untyped-call]
        "WAIT", 1, 100) == 1, 10, "the claim to reach the replica")
    new = cluster.failover(_job_key(key))
    assert new.port != old.port
    assert proc.wait(60) == 3
    assert proc.stderr is not None
    err = proc.stderr.read()
    # CLUSTER FAILOVER hands over with the replica caught up: the renewals follow the
    # slot to the new primary (MOVED), nothing is lost, nothing needs saying.
    assert err == ""
    record = new.client().hgetall(_job_key(key))
    assert record.get("state") == "done" and record.get("exit") == "3", record
    again = run_lockrun("-k", key, "--fire", "f1", "-E", "9", "--", "true", url=cluster.url)
    assert again.returncode == 9
