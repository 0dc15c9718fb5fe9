"""Redis Cluster: a real 3-primary cluster; every script stays in its job's slot."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import RedisServer, free_cluster_port, free_port, run_lockrun, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    base = tmp_path_factory.mktemp("cluster")
    nodes = [RedisServer(base / f"n{i}", ["--cluster-enabled", "yes", "--cluster-config-file",
                                          "nodes.conf"], port=free_cluster_port())
             for i in range(3)]
    try:
        subprocess.run(["redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        wait_for(lambda: all(n.client().cluster("info")["cluster_state"] == "ok"
                             for n in nodes), 60, "the cluster to be ok")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def _holds(node: RedisServer, name: str) -> bool:
    """Whether this node stores the key (another node's slot answers MOVED)."""
    try:
        return bool(node.client().exists(name))
    except redis.exceptions.ResponseError:
        return False


def url(nodes: list[RedisServer]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:2])


def test_jobs_spread_over_the_cluster_and_keep_the_contract(cluster: list[RedisServer],
                                                            key: str) -> None:
    keys = [f"{key}-{i}" for i in range(8)]
    for k in keys:
        r = run_lockrun("-k", k, "--fire", "f1", "--", "sh", "-c", "exit 3", url=url(cluster))
        assert (r.returncode, r.stderr) == (3, "")
        again = run_lockrun("-k", k, "--fire", "f1", "-E", "9", "--", "true", url=url(cluster))
        assert again.returncode == 9
    holders = set()
    for k in keys:
        [holder] = [n for n in cluster if _holds(n, f"lockrun:{{{k}}}:fire:f1")]
        # every key of the job lives on the same node (one slot)
        assert _holds(holder, f"lockrun:{{{k}}}:hist") and _holds(holder,
                                                                 f"lockrun:{{{k}}}:fence")
        holders.add(holder.port)
    assert len(holders) > 1  # the jobs really were spread over several primaries


def test_admin_verbs_work_across_the_cluster(cluster: list[RedisServer], key: str) -> None:
    names = [f"{key}-a", f"{key}-b", f"{key}-c", f"{key}-d"]
    for k in names:
        run_lockrun("-k", k, "--fire", "f1", "--", "true", url=url(cluster))
    r = run_lockrun("status", url=url(cluster))
    assert r.returncode == 0
    assert all(k in r.stdout for k in names)  # SCAN visits every primary
    h = run_lockrun("history", names[0], url=url(cluster))
    assert "f1" in h.stdout and "ran" in h.stdout
    assert run_lockrun("doctor", url=url(cluster)).returncode == 0


def test_an_unreachable_cluster_is_75_quickly(key: str) -> None:
    start = time.monotonic()
    r = run_lockrun("-k", key, "--", "true",
                    url=f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    assert r.returncode == 75
    assert time.monotonic() - start < 10
    assert len(r.stderr.splitlines()) == 1


def test_an_unreachable_cluster_follows_on_redis_error(key: str) -> None:
    r = run_lockrun("-k", key, "--on-redis-error", "skip", "-E", "4", "--", "true",
                    url=f"redis+cluster://127.0.0.1:{free_port()}")
    assert r.returncode == 4 and "--on-redis-error skip" in r.stderr


@pytest.mark.parametrize("bad", ["redis+cluster://", "redis+cluster://host:port"])
def test_bad_cluster_urls_are_usage_errors(bad: str) -> None:
    assert run_lockrun("-k", "x", "--", "true", url=bad).returncode == 64


def test_wait_replicas_is_refused_with_cluster(cluster: list[RedisServer]) -> None:
    r = run_lockrun("-k", "x", "--wait-replicas", "1", "--", "true", url=url(cluster))
    assert r.returncode == 64 and "cluster" in r.stderr

