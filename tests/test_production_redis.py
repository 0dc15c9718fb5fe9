"""TLS and replica acknowledgement against real redis-server processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer, history, run_lockrun, wait_for

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py


def test_tls_with_the_right_ca_and_client_certificate(tls_redis: tuple[RedisServer, Path, str],
                                                      key: str) -> None:
    server, d, url = tls_redis
    r = run_lockrun("-k", key, "--fire", "f1", "--redis-ca", str(d / "ca.crt"), "--redis-cert",
                    str(d / "client.crt"), "--redis-key", str(d / "client.key"), "--", "sh",
                    "-c", "exit 3", url=url)
    assert (r.returncode, r.stderr) == (3, "")
    assert server.client().hget(f"lockrun:{{{key}}}:fire:f1", "state") == "done"
    status = run_lockrun("status", key, "--json", "--redis-ca", str(d / "ca.crt"),
                         "--redis-cert", str(d / "client.crt"), "--redis-key",
                         str(d / "client.key"), url=url)
    assert status.returncode == 0 and '"exit": 3' in status.stdout


@pytest.mark.parametrize("trust", ["none", "other"])
def test_tls_verifies_the_server_certificate(tls_redis: tuple[RedisServer, Path, str],
                                             key: str, trust: str, tmp_path: Path) -> None:
    _, d, url = tls_redis
    marker = tmp_path / "ran"
    ca = [] if trust == "none" else ["--redis-ca", str(d / "other.crt")]
    r = run_lockrun("-k", key, *ca, "--redis-cert", str(d / "client.crt"), "--redis-key",
                    str(d / "client.key"), "--", "touch", str(marker), url=url)
    assert r.returncode == 75
    assert "certificate verify failed" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not marker.exists()


def test_tls_without_a_client_certificate_is_refused(tls_redis: tuple[RedisServer, Path, str],
                                                     key: str) -> None:
    _, d, url = tls_redis
    r = run_lockrun("-k", key, "--redis-ca", str(d / "ca.crt"), "--", "true", url=url)
    assert r.returncode == 75 and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--redis-ca", "/nonexistent/ca.crt"], "not a readable file"),
     (["--redis-cert", "CERT"], "go together")],
)
def test_tls_usage_errors(tls_redis: tuple[RedisServer, Path, str], args: list[str],
                          message: str) -> None:
    _, d, url = tls_redis
    args = [str(d / "client.crt") if a == "CERT" else a for a in args]
    r = run_lockrun("-k", "x", *args, "--", "true", url=url)
    assert r.returncode == 64 and message in r.stderr


def test_tls_options_need_a_rediss_url(tls_redis: tuple[RedisServer, Path, str]) -> None:
    server, d, _ = tls_redis
    r = run_lockrun("-k", "x", "--redis-ca", str(d / "ca.crt"), "--", "true", url=server.url)
    assert r.returncode == 64 and "rediss://" in r.stderr


@pytest.fixture
def primary_with_replica(tmp_path: Path) -> Iterator[RedisServer]:
    primary = RedisServer(tmp_path / "primary")
    replica = RedisServer(tmp_path / "replica", ["--replicaof", "127.0.0.1", str(primary.port)])
    try:
        wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up",
                 30, "the replica to connect")
        yield primary
    finally:
        replica.stop()
        primary.stop()


def test_wait_replicas_passes_when_a_replica_acknowledges(primary_with_replica: RedisServer,
                                                          key: str) -> None:
    r = run_lockrun("-v", "-k", key, "--wait-replicas", "1", "--wait-timeout", "5s", "--",
                    "sh", "-c", "exit 4", url=primary_with_replica.url)
    assert r.returncode == 4
    assert "1 of 1 replicas acknowledged" in r.stderr and "anyway" not in r.stderr


def test_too_few_replicas_warns_but_runs(own_redis: RedisServer, key: str) -> None:
    r = run_lockrun("-k", key, "--wait-replicas", "1", "--wait-timeout", "200ms", "--", "sh",
                    "-c", "exit 4", url=own_redis.url)
    assert r.returncode == 4
    assert "0 of 1 replicas acknowledged" in r.stderr and "anyway" in r.stderr


def test_strict_replicas_gives_the_claim_back(own_redis: RedisServer, key: str,
                                             tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = run_lockrun("-k", key, "--fire", "f1", "--wait-replicas", "1", "--wait-timeout",
                    "200ms", "--strict-replicas", "--", "touch", str(marker), url=own_redis.url)
    assert r.returncode == 75
    assert not marker.exists()
    c = own_redis.client()
    assert not c.exists(f"lockrun:{{{key}}}:fire:f1", f"lockrun:{{{key}}}:running")
    assert [e["event"] for e in history(own_redis, key)] == ["start", "abandon"]
    # the fire was given back, not marked done: a later tick may run it
    assert run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "exit 5",
                       url=own_redis.url).returncode == 5

