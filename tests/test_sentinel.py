"""Sentinel: a real primary, a replica and three sentinels, with a failover mid-job."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, free_port, run_lockrun, start_lockrun, wait_for

SERVICE = "lockrun-test"


@dataclass
class SentinelSet:
    servers: list[RedisServer]
    sentinels: list[tuple[int, subprocess.Popen[bytes]]]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def ask(self, *command: str) -> object:
        port = self.sentinels[0][0]
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=5)
        return client.execute_command(*command)  # type: ignore[no-untyped-call]

    def primary_port(self) -> int:
        address = self.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        assert isinstance(address, (list, tuple))
        return int(address[1])

    def client_on(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)


def _sentinel_ready(s: SentinelSet) -> bool:
    try:
        for port, _ in s.sentinels:
            client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
            info = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "MASTER", SERVICE)
            fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2],
                                                                  strict=True))
            if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                return False
        return True
    except (redis.exceptions.RedisError, KeyError, ValueError):
        return False


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    primary = RedisServer(tmp_path / "primary")
    replica = RedisServer(tmp_path / "replica", ["--replicaof", "127.0.0.1", str(primary.port)])
    result = SentinelSet([primary, replica], [])
    try:
        for i in range(3):
            port = free_port()
            d = tmp_path / f"sentinel{i}"
            d.mkdir()
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 2000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n")
            proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result.sentinels.append((port, proc))
        wait_for(lambda: _sentinel_ready(result), 60, "sentinels to see the replica and peers")
        yield result
    finally:
        for _, proc in result.sentinels:
            proc.terminate()
            proc.wait(10)
        replica.stop()
        primary.stop()


def test_lockrun_finds_the_primary_through_sentinel(sentinels: SentinelSet, key: str) -> None:
    r = run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "exit 3", url=sentinels.url)
    assert (r.returncode, r.stderr) == (3, "")
    primary = sentinels.client_on(sentinels.primary_port())
    assert primary.hget(f"lockrun:{{{key}}}:fire:f1", "state") == "done"
    again = run_lockrun("-k", key, "--fire", "f1", "-E", "9", "--", "true", url=sentinels.url)
    assert again.returncode == 9


def test_a_failover_during_a_job_is_survived_or_reported(sentinels: SentinelSet, key: str,
                                                         tmp_path: Path) -> None:
    started = tmp_path / "started"
    old = sentinels.primary_port()
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "3s", "--", "sh", "-c",
                         f"touch {started}; sleep 8; exit 3", url=sentinels.url)
    wait_for(started.exists, 30, "the job to start")
    wait_for(lambda: sentinels.client_on(old).execute_command(  # type: ignore[no-untyped-call]
        "WAIT", 1, 100) == 1, 10, "the claim to reach the replica")
    sentinels.ask("SENTINEL", "FAILOVER", SERVICE)
    wait_for(lambda: sentinels.primary_port() != old, 30, "the failover")
    assert proc.wait(60) == 3
    assert proc.stderr is not None
    err = proc.stderr.read()
    new = sentinels.client_on(sentinels.primary_port())
    record = new.hgetall(f"lockrun:{{{key}}}:fire:f1")
    if "lost the lease" in err:  # the claim did not survive: said, not hidden
        return
    assert record.get("state") == "done" and record.get("exit") == "3", (err, record)


def test_unreachable_sentinels_are_75_quickly(key: str) -> None:
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{SERVICE}"
    start = time.monotonic()
    r = run_lockrun("-k", key, "--", "true", url=url)
    assert r.returncode == 75
    assert time.monotonic() - start < 10
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:1", "redis+sentinel:///svc",
                                 "redis+sentinel://host:notaport/svc"])
def test_bad_sentinel_urls_are_usage_errors(url: str) -> None:
    r = run_lockrun("-k", "x", "--", "true", url=url)
    assert r.returncode == 64, r.stderr
