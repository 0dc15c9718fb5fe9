"""The exit-status contract, end to end through the installed ``lockrun`` command."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import RedisServer, history, lockrun_env, run_lockrun

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_child_exit_code_passes_through(redis_server: RedisServer, key: str, code: int) -> None:
    r = run_lockrun("-k", key, "--", "sh", "-c", f"exit {code}", url=redis_server.url)
    assert r.returncode == code
    assert r.stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_child_killed_by_signal_gives_128_plus_n(redis_server: RedisServer, key: str,
                                                 sig: int) -> None:
    r = run_lockrun("-k", key, "--", "sh", "-c", f"kill -{int(sig)} $$", url=redis_server.url)
    assert r.returncode == 128 + sig


def test_skipped_server_exits_0_silently(redis_server: RedisServer, key: str) -> None:
    first = run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    assert first.returncode == 0
    again = run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "echo ran; exit 9",
                        url=redis_server.url)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_skip_exit_code_is_configurable(redis_server: RedisServer, key: str) -> None:
    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    r = run_lockrun("-k", key, "--fire", "f1", "-E", "3", "--", "true", url=redis_server.url)
    assert (r.returncode, r.stderr) == (3, "")
    env = lockrun_env(redis_server.url, LOCKRUN_SKIP_EXIT_CODE="4")
    r = run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url, env=env)
    assert r.returncode == 4
    # the flag wins over the environment
    r = run_lockrun("-k", key, "--fire", "f1", "-E", "5", "--", "true", url=redis_server.url,
                    env=env)
    assert r.returncode == 5


def test_verbose_explains_each_decision(redis_server: RedisServer, key: str) -> None:
    won = run_lockrun("-v", "-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    assert won.stderr.startswith(f"lockrun: acquired {key} fire f1 (fence ")
    lost = run_lockrun("-v", "-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    assert "skipped" in lost.stderr and "already done by" in lost.stderr
    assert len(lost.stderr.splitlines()) == 1


def test_command_not_found_is_127_and_claims_nothing(redis_server: RedisServer, key: str) -> None:
    r = run_lockrun("-k", key, "--fire", "f1", "--", "no-such-command-xyz", url=redis_server.url)
    assert r.returncode == 127
    assert r.stderr == "lockrun: no-such-command-xyz: command not found\n"
    assert redis_server.client().keys(f"lockrun:{{{key}}}:*") == []


def test_command_not_executable_is_126(redis_server: RedisServer, key: str,
                                       tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    r = run_lockrun("-k", key, "--", str(script), url=redis_server.url)
    assert r.returncode == 126
    assert "permission denied" in r.stderr and r.stdout == ""
    r = run_lockrun("-k", key, "--", str(tmp_path), url=redis_server.url)
    assert r.returncode == 126


def test_exec_failure_after_acquire_gives_the_fire_back(redis_server: RedisServer, key: str,
                                                       tmp_path: Path) -> None:
    """Executable bit set but not a valid program: found, then exec fails.

    Nothing ran, so the fire is not recorded done: a server that can run the
    command may still claim it, and the history says why this one gave it back.
    """
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\x7fELF garbage")
    bogus.chmod(0o755)
    r = run_lockrun("-k", key, "--fire", "f1", "--", str(bogus), url=redis_server.url)
    assert r.returncode == 126
    assert not redis_server.client().exists(f"lockrun:{{{key}}}:fire:f1")
    events = history(redis_server, key)
    assert [e["event"] for e in events] == ["start", "abandon"]
    assert "cannot execute the command" in events[-1]["reason"]


def test_timeout_gives_124(redis_server: RedisServer, key: str) -> None:
    start = time.monotonic()
    r = run_lockrun("-k", key, "--timeout", "1s", "--", "sleep", "30", url=redis_server.url)
    assert r.returncode == 124
    assert time.monotonic() - start < 15
    assert "timed out" in r.stderr


def test_timeout_escalates_to_sigkill_after_the_grace(redis_server: RedisServer, key: str) -> None:
    start = time.monotonic()
    r = run_lockrun("-k", key, "--timeout", "1s", "--kill-after", "1s", "--", "sh", "-c",
                    "trap '' TERM; sleep 30 & wait; sleep 30", url=redis_server.url)
    assert r.returncode == 124
    assert time.monotonic() - start < 15


def test_redis_refusing_connections_is_75_fast(key: str) -> None:
    start = time.monotonic()
    r = run_lockrun("-k", key, "--", "sh", "-c", "echo ran", url="redis://127.0.0.1:1/0")
    elapsed = time.monotonic() - start
    assert r.returncode == 75
    assert r.stdout == ""
    assert elapsed < 5
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("lockrun: ")


def test_error_exit_code_is_configurable(key: str) -> None:
    r = run_lockrun("-k", key, "--error-exit-code", "99", "--", "true",
                    url="redis://127.0.0.1:1/0")
    assert r.returncode == 99


def test_password_is_redacted_in_errors(key: str) -> None:
    r = run_lockrun("-k", key, "--", "true", url="redis://admin:hunter2@127.0.0.1:1/0")
    assert r.returncode == 75
    assert "hunter2" not in r.stderr
    assert "admin:***@" in r.stderr


def test_blackholed_redis_is_75_within_10s(own_redis: RedisServer, key: str,
                                           tmp_path: Path) -> None:
    """SIGSTOPped Redis accepts connections but never answers: default timeouts bound it."""
    marker = tmp_path / "ran"
    own_redis.pause()
    try:
        for url in (own_redis.url, own_redis.tcp_url):
            start = time.monotonic()
            r = run_lockrun("-k", key, "--", "touch", str(marker), url=url)
            elapsed = time.monotonic() - start
            assert r.returncode == 75, r.stderr
            assert elapsed < 10
            assert "Timeout" in r.stderr or "timed out" in r.stderr
    finally:
        own_redis.resume()
    assert not marker.exists()


def test_on_redis_error_skip_exits_with_the_skip_code_and_says_so(key: str,
                                                                  tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = run_lockrun("-q", "-k", key, "--on-redis-error", "skip", "-E", "3", "--", "touch",
                    str(marker), url="redis://127.0.0.1:1/0")
    assert r.returncode == 3
    assert not marker.exists()
    assert len(r.stderr.splitlines()) == 1 and "--on-redis-error skip" in r.stderr


def test_on_redis_error_run_fails_open_loudly(key: str) -> None:
    env = lockrun_env("redis://127.0.0.1:1/0", LOCKRUN_ON_REDIS_ERROR="run")
    r = run_lockrun("-k", key, "--", "sh", "-c",
                    'echo "key=$LOCKRUN_KEY fence=${LOCKRUN_FENCE-unset}"; exit 9',
                    url="redis://127.0.0.1:1/0", env=env)
    assert r.returncode == 9
    assert r.stdout == f"key={key} fence=unset\n"
    assert len(r.stderr.splitlines()) == 1 and "WITHOUT a lock" in r.stderr


def test_mail_on_failure_says_once_that_the_job_failed(redis_server: RedisServer,
                                                       key: str) -> None:
    failed = run_lockrun("--mail-on-failure", "-k", key, "--fire", "f1", "--", "sh", "-c",
                         "exit 3", url=redis_server.url)
    assert failed.returncode == 3
    assert failed.stderr.startswith(f"lockrun: {key} fire f1 failed on "), failed.stderr
    assert failed.stderr.rstrip().endswith("exit status 3")
    assert len(failed.stderr.splitlines()) == 1
    ok = run_lockrun("--mail-on-failure", "-k", key, "--fire", "f2", "--", "true",
                     url=redis_server.url)
    skipped = run_lockrun("--mail-on-failure", "-k", key, "--fire", "f1", "--", "false",
                          url=redis_server.url)
    quiet = run_lockrun("-k", key, "--fire", "f3", "--", "sh", "-c", "exit 3",
                        url=redis_server.url)
    assert [(r.returncode, r.stderr) for r in (ok, skipped, quiet)] == [(0, ""), (0, ""),
                                                                        (3, "")]
