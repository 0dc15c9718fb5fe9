"""A Redis outage costs one line per server and user, not one per crontab line per minute.

cron mails whatever lockrun prints. During an outage every line of every
server fails each minute; here each server (its own state directory) says it
once, stays quiet, reminds hourly, says once when Redis is back and which
fires it did not run, and records the job ends it had to keep meanwhile.
Exit statuses never change because of any of this.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    LOCKRUN,
    RedisServer,
    faketime_env,
    history,
    lockrun_env,
    start_lockrun,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LOCKRUN), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_an_outage_is_said_once_per_server_then_its_end_once(own_redis: RedisServer,
                                                            tmp_path: Path) -> None:
    env = lockrun_env(own_redis.tcp_url, LOCKRUN_STATE_DIR=str(tmp_path / "state"))
    own_redis.stop()
    failed = [_run(env, "-k", f"job{n}", "--fire", "f1", "--", "true") for n in range(5)]
    assert [r.returncode for r in failed] == [75] * 5
    assert "not running job0" in failed[0].stderr
    assert "stay quiet until Redis is back" in failed[0].stderr
    assert [r.stderr for r in failed[1:]] == [""] * 4

    own_redis.start()
    back = _run(env, "-k", "job0", "--fire", "f2", "--", "true")
    assert back.returncode == 0
    lines = back.stderr.splitlines()
    assert len(lines) == 1, back.stderr
    assert "is usable again after" in lines[0]
    assert "this server did not run 5 fires meanwhile" in lines[0]
    assert all(f"job{n} f1" in lines[0] for n in range(5))
    assert "***" not in lines[0] and own_redis.tcp_url in lines[0]
    after = [_run(env, "-k", f"job{n}", "--fire", "f2", "--", "true") for n in range(3)]
    assert [(r.returncode, r.stderr) for r in after] == [(0, "")] * 3


def test_each_server_and_each_redis_gets_its_own_line(own_redis: RedisServer,
                                                     tmp_path: Path) -> None:
    """Two servers (two state directories) each say it once; another Redis is other news."""
    other = RedisServer(tmp_path / "other")
    try:
        servers = [lockrun_env(own_redis.tcp_url, LOCKRUN_STATE_DIR=str(tmp_path / name))
                   for name in ("a", "b")]
        own_redis.stop()
        for env in servers:
            first = _run(env, "-k", "j", "--fire", "f1", "--", "true")
            second = _run(env, "-k", "k", "--fire", "f1", "--", "true")
            assert (first.returncode, second.returncode) == (75, 75)
            assert first.stderr.count("lockrun:") == 1 and second.stderr == ""
        other.stop()
        env = dict(servers[0], LOCKRUN_REDIS_URL=other.url)
        r = _run(env, "-k", "j", "--fire", "f1", "--", "true")
        assert r.returncode == 75 and "not running j" in r.stderr
    finally:
        other.stop()


def test_an_outage_is_recalled_once_an_hour(own_redis: RedisServer, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    env = lockrun_env(own_redis.tcp_url, LOCKRUN_STATE_DIR=state)
    own_redis.stop()
    assert _run(env, "-k", "j", "--fire", "f1", "--", "true").stderr != ""
    assert _run(env, "-k", "j", "--fire", "f2", "--", "true").stderr == ""
    later = faketime_env(own_redis.tcp_url, "+3700s", LOCKRUN_STATE_DIR=state)
    # a shifted monotonic clock too: with only the wall clock faked, libfaketime makes
    # time.sleep() (the connect retry's pause) fail with EINVAL
    later["FAKETIME_DONT_FAKE_MONOTONIC"] = "0"
    reminder = _run(later, "-k", "j", "--fire", "f3", "--", "true")
    assert reminder.returncode == 75
    assert "still failing: first failure on this server 1h" in reminder.stderr
    assert _run(later, "-k", "j", "--fire", "f4", "--", "true").stderr == ""


def test_without_a_usable_state_directory_every_failure_is_said(own_redis: RedisServer,
                                                               tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = lockrun_env(own_redis.tcp_url, LOCKRUN_STATE_DIR=str(blocker / "state"))
    own_redis.stop()
    for fire in ("f1", "f2"):
        r = _run(env, "-k", "j", "--fire", fire, "--", "true")
        assert r.returncode == 75
        assert "not running j" in r.stderr and "every failure is reported" in r.stderr
    skip = _run(env, "-k", "j", "--fire", "f3", "--on-redis-error", "skip", "-E", "3", "--",
                "true")
    assert skip.returncode == 3 and "skipping fire f3" in skip.stderr


def test_state_is_off_with_an_empty_state_dir(own_redis: RedisServer) -> None:
    env = lockrun_env(own_redis.tcp_url)
    own_redis.stop()
    lines = [_run(env, "-k", "j", "--fire", f"f{n}", "--state-dir", "", "--", "true").stderr
             for n in range(2)]
    assert all(line.count("not running j") == 1 for line in lines)


def test_a_private_state_directory_is_required(own_redis: RedisServer, tmp_path: Path) -> None:
    """/var/tmp is shared: a directory others may write is not used (and not trusted)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    env = lockrun_env(own_redis.tcp_url, LOCKRUN_STATE_DIR=str(shared))
    own_redis.stop()
    r = _run(env, "-k", "j", "--fire", "f1", "--", "true")
    assert r.returncode == 75 and "is not a private directory" in r.stderr
    assert list(shared.iterdir()) == []


def test_a_job_that_ends_during_an_outage_keeps_its_end(tmp_path: Path) -> None:
    """The end is kept on the server and recorded when Redis is back: not 'crashed'."""
    server = RedisServer(tmp_path / "redis", persistent=True)
    try:
        env = lockrun_env(server.tcp_url, LOCKRUN_STATE_DIR=str(tmp_path / "state"),
                          LOCKRUN_REDIS_TIMEOUT="1s")
        go = tmp_path / "go"
        job = f"while [ ! -e {go} ]; do sleep 0.05; done; exit 3"
        proc = start_lockrun("-k", "kept", "--fire", "f1", "--ttl", "9s", "--", "sh", "-c", job,
                             url=server.tcp_url, env=env)
        wait_for(lambda: any(e["event"] == "start" for e in history(server, "kept")),
                 what="the claim")
        server.stop()  # persisted: the claim and the start event survive the restart
        go.touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 3  # the job's own status, whatever Redis does
        assert "kept in" in err and "until Redis answers again" in err

        server.start()
        wait_for(lambda: not server.client().exists("lockrun:{kept}:fire:f1"), timeout=20,
                 what="the claim to expire")
        before = _run(env, "history", "kept")
        assert "crashed" in before.stdout  # what history said before this change, forever

        back = _run(env, "-k", "other", "--fire", "f1", "--", "true")
        assert back.returncode == 0
        assert "recorded the end of 1 job that finished meanwhile" in back.stderr
        shown = _run(env, "history", "kept")
        row = next(line for line in shown.stdout.splitlines() if line.startswith("f1"))
        assert "ran (recorded late)" in row and row.split()[-1] == "3", shown.stdout
        record = server.client().hgetall("lockrun:{kept}:fire:f1")
        assert record["state"] == "done" and record["exit"] == "3"
        late = _run(env, "-k", "kept", "--fire", "f1", "-v", "--", "true")
        assert late.returncode == 0 and "already done" in late.stderr
    finally:
        server.stop()


def test_a_line_being_written_when_redis_returns_is_not_lost(own_redis: RedisServer,
                                                            tmp_path: Path) -> None:
    """The recovery takes the file, then reads it under the lock an appender holds."""
    import fcntl
    import os

    state = tmp_path / "state"
    env = lockrun_env(own_redis.tcp_url, LOCKRUN_STATE_DIR=str(state))
    own_redis.stop()
    assert _run(env, "-k", "j", "--fire", "f1", "--", "true").returncode == 75
    (outage,) = state.glob("*.outage")
    own_redis.start()
    with open(outage, "ab") as appender:
        fcntl.flock(appender, fcntl.LOCK_EX)  # a failing lockrun in the middle of its append
        proc = start_lockrun("-k", "j", "--fire", "f2", "--", "true", url=own_redis.tcp_url,
                             env=env)
        wait_for(lambda: list(state.glob("*.taken-*")), what="the recovery to take the file")
        appender.write(b'{"missed": ["late", "f9"]}\n')
        appender.flush()
        os.fsync(appender.fileno())
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "did not run 2 fires meanwhile: j f1, late f9" in err, err
