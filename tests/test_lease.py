"""Mutual exclusion as a fleet sees it: many lockrun processes, one real Redis."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import RedisServer, history, run_lockrun, start_lockrun, wait_for

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py

FIRES = int(os.environ.get("LOCKRUN_TEST_FIRES", "4"))


@pytest.mark.timeout(900)  # 200+ processes: slow on a loaded 2-core machine, not stuck
def test_50_contenders_run_each_fire_exactly_once(redis_server: RedisServer, key: str,
                                                  tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    for fire in range(FIRES):
        procs = [
            start_lockrun("-k", key, "--fire", f"fire-{fire}", "--", "sh", "-c",
                          f'echo "$LOCKRUN_FIRE $LOCKRUN_FENCE" >> {log}', url=redis_server.url)
            for _ in range(50)
        ]
        results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
        for p in procs:
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()
        assert [code for code, _ in results] == [0] * 50
        assert [err for _, err in results] == [""] * 50  # skipped servers stay silent
    lines = log.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(f"fire-{i}" for i in range(FIRES))
    fences = [int(line.split()[1]) for line in lines]
    assert fences == sorted(fences) and len(set(fences)) == FIRES


def test_renewal_keeps_a_short_lease_through_a_long_job(redis_server: RedisServer, key: str,
                                                        tmp_path: Path) -> None:
    started = tmp_path / "started"
    winner = start_lockrun("-k", key, "--fire", "f1", "--ttl", "2s",
                           "--redis-timeout", "600ms", "--", "sh", "-c",
                           f"touch {started}; sleep 7; exit 5", url=redis_server.url)
    wait_for(started.exists, 30, "the job to start")
    deadline = time.monotonic() + 5
    contenders = 0
    while time.monotonic() < deadline:  # well past the 2s ttl, the fire is still held
        r = run_lockrun("-k", key, "--fire", "f1", "-E", "3", "--", "true", url=redis_server.url)
        assert r.returncode == 3, r.stderr
        contenders += 1
    assert winner.wait(60) == 5
    assert winner.stderr is not None and winner.stderr.read() == ""  # no lost-lease warning
    assert contenders >= 2
    assert [e["event"] for e in history(redis_server, key)] == ["start", "end"]


def test_done_record_stops_a_late_server(redis_server: RedisServer, key: str,
                                         tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    cmd = ["sh", "-c", f"echo ran >> {log}"]
    assert run_lockrun("-k", key, "--fire", "f1", "--ttl", "1s",
                       "--redis-timeout", "300ms", "--", *cmd,
                       url=redis_server.url).returncode == 0
    # Well after the 1s ttl would have expired a deleted-on-release lock:
    r = redis_server.client()
    assert r.pttl(f"lockrun:{{{key}}}:fire:f1") > 3_600_000
    assert run_lockrun("-k", key, "--fire", "f1", "--", *cmd, url=redis_server.url).returncode == 0
    assert log.read_text() == "ran\n"
    record = r.hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert record["state"] == "done" and record["exit"] == "0"


def test_retention_sets_how_long_the_done_record_lives(redis_server: RedisServer,
                                                       key: str) -> None:
    run_lockrun("-k", key, "--fire", "f1", "--retention", "5m", "--", "true",
                url=redis_server.url)
    ttl = redis_server.client().pttl(f"lockrun:{{{key}}}:fire:f1")
    assert 290_000 < ttl <= 300_000


def test_overlap_guard_skips_the_next_fire_while_one_runs(redis_server: RedisServer, key: str,
                                                          tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    first = start_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c",
                          f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                          url=redis_server.url)
    wait_for(started.exists, 30, "the first fire to start")
    r = run_lockrun("-v", "-k", key, "--fire", "f2", "-E", "3", "--", "true",
                    url=redis_server.url)
    assert r.returncode == 3
    assert "fire f1 is still running" in r.stderr
    allowed = run_lockrun("-k", key, "--fire", "f3", "--overlap", "allow", "--", "sh", "-c",
                          "exit 4", url=redis_server.url)
    assert allowed.returncode == 4
    release.touch()
    assert first.wait(60) == 0
    assert run_lockrun("-k", key, "--fire", "f2", "--", "sh", "-c", "exit 6",
                       url=redis_server.url).returncode == 6


def test_lost_lease_with_on_lost_kill_stops_the_job(redis_server: RedisServer, key: str,
                                                    tmp_path: Path) -> None:
    started = tmp_path / "started"
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "1s",
                         "--redis-timeout", "300ms", "--on-lost", "kill",
                         "--kill-after", "2s", "--", "sh", "-c",
                         f"touch {started}; sleep 60", url=redis_server.url)
    wait_for(started.exists, 30, "the job to start")
    # Another owner takes the fire (what a Redis failover or an operator's unlock does).
    redis_server.client().hset(f"lockrun:{{{key}}}:fire:f1", "owner", "someone-else")
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "lost the lease" in err and "someone-else" in err and "--on-lost kill" in err
    assert [e["event"] for e in history(redis_server, key)] == ["start", "lost", "end"]


def test_lost_lease_with_on_lost_warn_says_so_and_keeps_the_exit_code(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    proc = start_lockrun("-q", "-k", key, "--fire", "f1", "--ttl", "1s",
                         "--redis-timeout", "300ms", "--", "sh", "-c",
                         f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done; exit 3",
                         url=redis_server.url)
    wait_for(started.exists, 30, "the job to start")
    redis_server.client().delete(f"lockrun:{{{key}}}:fire:f1")
    wait_for(lambda: any(e["event"] == "lost" for e in history(redis_server, key)), 30,
             "a lost event")
    release.touch()
    assert proc.wait(30) == 3
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "lost the lease" in err and "keeps running" in err  # printed even with -q


def test_lease_lost_while_redis_is_blackholed(own_redis: RedisServer, key: str,
                                              tmp_path: Path) -> None:
    """No renewal can succeed, so the local deadline (monotonic clock) declares it lost."""
    started = tmp_path / "started"
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "2s", "--redis-timeout", "0.5s",
                         "--on-lost", "kill", "--", "sh", "-c", f"touch {started}; sleep 60",
                         url=own_redis.url)
    wait_for(started.exists, 30, "the job to start")
    own_redis.pause()
    try:
        code = proc.wait(30)
    finally:
        own_redis.resume()
    assert code == 128 + signal.SIGTERM
    assert proc.stderr is not None
    assert "no successful renewal" in proc.stderr.read()


def test_jitter_delays_the_acquire_but_keeps_the_fire(redis_server: RedisServer, key: str) -> None:
    start = time.monotonic()
    r = run_lockrun("-v", "-k", key, "--fire", "f1", "--jitter", "2s", "--", "sh", "-c",
                    'echo "$LOCKRUN_FIRE"', url=redis_server.url)
    elapsed = time.monotonic() - start
    assert (r.returncode, r.stdout) == (0, "f1\n")
    waited = float(r.stderr.split("waiting ", 1)[1].split("s of jitter")[0])
    assert 0 <= waited <= 2
    assert elapsed >= waited - 0.06  # the message rounds to 0.1s
