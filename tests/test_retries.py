"""Retries that move: a failed fire becomes a ticket that a later tick of another server
claims, and --retry-local retries in place under the same lease.

Each lockrun process stands for a server: it runs in a UTS namespace of its own
with its own hostname, as tests/fleet/sim.py does, because "prefer a server
that has not failed this fire" is decided by host name.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    RedisServer,
    history,
    on,
    pid_alive,
    run_lockrun,
    start_on,
    tick_until_claimed,
    wait_for,
)

from lockrun.protocol import job_keys

RETRY = ("--retries", "2", "--retry-delay", "2s")


def line(key: str, job: str, *extra: str) -> tuple[str, ...]:
    """The crontab line every server has (verbose, so a test can tell why a tick skipped)."""
    return ("-v", "-k", key, "--fire", "f1", *RETRY, *extra, "--", "sh", "-c", job)


def fire_hash(server: RedisServer, key: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in server.client().hgetall(job_keys(key, "f1")["fire"])
            .items()}


def attempts(server: RedisServer, key: str) -> list[tuple[str, str, str]]:
    """(attempt, host, how it ended) of each attempt's end, in order."""
    return [(e.get("attempt", ""), e["host"], e.get("outcome", "") + ":" + e.get("exit", ""))
            for e in history(server, key) if e["event"] == "end"]


def test_a_failed_fire_is_retried_on_another_server_and_succeeds(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    url = redis_server.url
    job = f'echo "$(hostname)" >> {tmp_path}/ran; [ "$(hostname)" != srv-a ] || exit 3'
    first = on("srv-a", url, *line(key, job))
    assert first.returncode == 3, first.stderr  # the attempt's own status, passed through
    ticket = fire_hash(redis_server, key)
    assert ticket["state"] == "retry" and ticket["exit"] == "3"
    assert int(ticket["prefer_ms"]) > int(ticket["due_ms"])  # others first, for one delay
    early = on("srv-b", url, *line(key, job))
    assert early.returncode == 0 and "retry is due at" in early.stderr  # not before it is due
    claimed = tick_until_claimed("srv-b", url, line(key, job))
    assert claimed.returncode == 0, claimed.stderr
    assert (tmp_path / "ran").read_text().split() == ["srv-a", "srv-b"]
    assert attempts(redis_server, key) == [("1", "srv-a", "exited:3"), ("2", "srv-b", "exited:0")]
    done = fire_hash(redis_server, key)
    assert done["state"] == "done" and done["exit"] == "0"
    later = on("srv-c", url, *line(key, job))
    assert "already done" in later.stderr  # the success ends the fire for the fleet
    rows = json.loads(run_lockrun("history", key, "--json", url=url).stdout)
    assert [(r["attempt"], r["host"], r["outcome"], r["exit"]) for r in rows] == [
        (2, "srv-b", "ran", 0), (1, "srv-a", "ran", 3)]
    assert rows[1]["retry_due_ms"] == int(ticket["due_ms"])
    table = run_lockrun("history", key, url=url).stdout
    assert "attempt 1, retry due" in table and ", attempt 2" in table
    state = json.loads(run_lockrun("status", key, "--json", url=url).stdout)[0]["state"]
    assert state["failures"] == 0 and state["last_host"] == "srv-b"  # the fire, not attempt 1


def test_the_failed_server_takes_the_retry_only_after_one_more_delay(
        redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    assert on("srv-a", url, *line(key, "exit 3")).returncode == 3
    ticket = fire_hash(redis_server, key)
    claimed = tick_until_claimed("srv-a", url, line(key, "exit 0"))
    assert claimed.returncode == 0
    start = [e for e in history(redis_server, key) if e["event"] == "start"][-1]
    started_ms = int(start["fence"]) // 1000  # the fence is Redis time in microseconds
    assert start["host"] == "srv-a" and start["attempt"] == "2"
    assert started_ms >= int(ticket["prefer_ms"]), "srv-a took its own retry before others could"


def test_retry_anywhere_lets_the_failed_server_take_it_when_due(
        redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    args = line(key, "exit 3", "--retry-anywhere")
    assert on("srv-a", url, *args).returncode == 3
    ticket = fire_hash(redis_server, key)
    assert ticket["prefer_ms"] == ticket["due_ms"]
    tick_until_claimed("srv-a", url, args)
    start = [e for e in history(redis_server, key) if e["event"] == "start"][-1]
    assert int(start["fence"]) // 1000 < int(ticket["prefer_ms"]) + 2000


def test_every_server_failing_ends_the_fire_after_n_plus_one_attempts(
        redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    args = line(key, "exit 4", "--retry-anywhere")
    assert on("srv-a", url, *args).returncode == 4
    assert tick_until_claimed("srv-b", url, args).returncode == 4
    last = tick_until_claimed("srv-c", url, args)
    assert last.returncode == 4
    assert "failed; a later tick" not in last.stderr  # the third was the last allowed
    assert [a for a, _, _ in attempts(redis_server, key)] == ["1", "2", "3"]
    done = fire_hash(redis_server, key)
    assert done["state"] == "done" and done["exit"] == "4"
    after = on("srv-d", url, *args)
    assert after.returncode == 0 and "already done" in after.stderr
    state = json.loads(run_lockrun("status", key, "--json", url=url).stdout)[0]["state"]
    assert state["failures"] == 1  # one failed fire, not three failed attempts


def test_retry_on_limits_which_exit_statuses_are_retried(redis_server: RedisServer,
                                                         key: str) -> None:
    url = redis_server.url
    assert on("srv-a", url, *line(key, "exit 3", "--retry-on", "75-78,124")).returncode == 3
    assert fire_hash(redis_server, key)["state"] == "done"
    other = f"{key}-b"
    assert on("srv-a", url, *line(other, "exit 75", "--retry-on", "75-78,124")).returncode == 75
    assert fire_hash(redis_server, other)["state"] == "retry"


def test_a_crashed_attempt_counts_as_a_failure_and_moves(redis_server: RedisServer,
                                                         key: str, tmp_path: Path) -> None:
    """kill -9 of lockrun and its job: nothing records an end; the lease expires; the next
    claim counts the crash and the retry goes to another server."""
    url = redis_server.url
    args = ("-v", "-k", key, "--fire", "f1", "--retries", "1", "--retry-delay", "1s",
            "--ttl", "3s", "--redis-timeout", "1s")
    victim = start_on("srv-a", url, *args, "--", "sh", "-c",
                      f"echo $$ > {tmp_path}/pid; exec sleep 600")
    wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(), 15,
             "the job to start")
    job = int((tmp_path / "pid").read_text())
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    subprocess.run(["kill", "-9", str(job)], check=False)
    wait_for(lambda: not pid_alive(job), 5, "the job to die")
    retried = tick_until_claimed("srv-b", url, (*args, "--", "true"))
    assert retried.returncode == 0
    ends = attempts(redis_server, key)
    assert ends == [("1", "srv-a", "crashed:"), ("2", "srv-b", "exited:0")]
    crashed = json.loads(run_lockrun("history", key, "--json", url=url).stdout)[1]
    assert crashed["outcome"] == "crashed" and crashed["host"] == "srv-a"
    check = run_lockrun("check", key, url=url)  # the retry succeeded: the fire is fine
    assert check.returncode == 0 and check.stdout.startswith("LOCKRUN OK"), check.stdout


def test_a_crash_of_the_last_attempt_ends_the_fire_and_says_so_once(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    url = redis_server.url
    args = ("-k", key, "--fire", "f1", "--retries", "1", "--retry-delay", "1s",
            "--retry-anywhere", "--ttl", "3s", "--redis-timeout", "1s")
    assert on("srv-a", url, *args, "--", "false").returncode == 1
    pidfile = tmp_path / "pid"

    def crash_next_attempt() -> bool:
        proc = start_on("srv-b", url, *args, "--", "sh", "-c", f"echo $$ > {pidfile}; "
                        "exec sleep 600")
        if not wait_until_started(pidfile, proc):
            return False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run(["kill", "-9", pidfile.read_text().strip()], check=False)
        return True

    wait_for(crash_next_attempt, 20, "srv-b to start attempt 2")
    said = []

    def ended() -> bool:
        r = on("srv-c", url, *args, "--", "true")
        said.append(r.stderr)
        return fire_hash(redis_server, key).get("state") == "done"

    wait_for(ended, 20, "the crash to be found")
    assert said[-1].count("\n") == 1 and "crashed" in said[-1] and "last allowed" in said[-1]
    again = on("srv-d", url, *args, "--", "true")
    assert again.stderr == ""  # said once, by the server that found it
    assert fire_hash(redis_server, key)["outcome"] == "crashed"
    assert [a for a, _, _ in attempts(redis_server, key)] == ["1", "2"]


def wait_until_started(pidfile: Path, proc: subprocess.Popen[str]) -> bool:
    """True once the job wrote its pid; False if this tick skipped (exited) instead."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)  # polling a file the job writes, with a deadline
    return False


def test_a_cancelled_attempt_is_not_retried(redis_server: RedisServer, key: str,
                                            tmp_path: Path) -> None:
    url = redis_server.url
    marker = tmp_path / "started"
    proc = start_on("srv-a", url, "-k", key, "--fire", "f1", *RETRY, "--ttl", "3s",
                    "--redis-timeout", "1s", "--kill-after", "1s", "--", "sh", "-c",
                    f"touch {marker}; exec sleep 600")
    wait_for(marker.exists, 15, "the job to start")
    assert run_lockrun("cancel", key, url=url).returncode == 0
    assert proc.wait(timeout=20) == 143
    assert fire_hash(redis_server, key)["state"] == "done"


def test_retry_local_retries_in_place_holding_the_lease(redis_server: RedisServer,
                                                        key: str, tmp_path: Path) -> None:
    """The delay (2s) is longer than the ttl (1s... 3s here, renewed every 1s): another server
    that ticks meanwhile must find the fire held, not free."""
    url = redis_server.url
    count = tmp_path / "count"
    job = (f'echo x >> {count}; n=$(wc -l < {count}); '
           f'[ "$n" -ge 3 ] && exit 0; touch {tmp_path}/failed-$n; exit 5')
    proc = start_on("srv-a", url, "-k", key, "--fire", "f1", "--retries", "3",
                    "--retry-delay", "4s", "--retry-local", "--ttl", "3s",
                    "--redis-timeout", "1s", "--", "sh", "-c", job)
    wait_for((tmp_path / "failed-1").exists, 15, "the first attempt to fail")
    other = on("srv-b", url, "-v", "-k", key, "--fire", "f1", "--retries", "3",
               "--retry-local", "--", "true")
    assert "held by srv-a" in other.stderr, other.stderr  # the lease lives through the delay
    assert proc.wait(timeout=60) == 0
    assert count.read_text().count("x") == 3
    assert attempts(redis_server, key) == [("1", "srv-a", "exited:5"), ("2", "srv-a", "exited:5"),
                                           ("3", "srv-a", "exited:0")]
    rows = json.loads(run_lockrun("history", key, "--json", url=url).stdout)
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(3, "ran"), (2, "ran"), (1, "ran")]
    assert fire_hash(redis_server, key)["attempt"] == "3"


def test_retry_local_stops_retrying_on_a_stop_signal(redis_server: RedisServer, key: str,
                                                     tmp_path: Path) -> None:
    url = redis_server.url
    proc = start_on("srv-a", url, "-k", key, "--fire", "f1", "--retries", "3",
                    "--retry-delay", "30s", "--retry-local", "--", "sh", "-c",
                    f"touch {tmp_path}/ran; exit 6")
    wait_for(lambda: any(e["event"] == "end" for e in history(redis_server, key)), 15,
             "the first attempt to end")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 6  # the failed attempt's status, not a retry's
    assert fire_hash(redis_server, key)["state"] == "done"


def test_a_retry_not_started_within_the_grace_ends_the_fire_once(
        redis_server: RedisServer, key: str) -> None:
    """--schedule: the ticket is due within the grace, but no server ticks in time; the first
    tick after the grace ends the fire with its failure and says so, once."""
    url = redis_server.url
    from conftest import faketime_env

    args = ("-k", key, "--schedule", "0 3 * * *", "--tz", "UTC", "--grace", "10m",
            "--retries", "1", "--retry-delay", "5m")
    first = on("srv-a", url, *args, "--", "sh", "-c", "exit 2",
               env=faketime_env(url, "@2026-11-20 03:00:05"))
    assert first.returncode == 2
    fire_id = "2026-11-20T03:00:00Z"
    key_of = job_keys(key, fire_id)["fire"]
    assert redis_server.client().hget(key_of, "state") == "retry"
    late = on("srv-b", url, *args, "--", "true", env=faketime_env(url, "@2026-11-20 03:20:00"))
    assert late.returncode == 0
    assert late.stderr.count("\n") == 1 and "no server started its retry" in late.stderr
    assert redis_server.client().hget(key_of, "state") == "done"
    again = on("srv-c", url, *args, "--", "true", env=faketime_env(url, "@2026-11-20 03:21:00"))
    assert again.stderr == ""
    state: Any = json.loads(run_lockrun("status", key, "--json", url=url).stdout)[0]["state"]
    assert state["failures"] == 1 and state["last_exit"] == 2


@pytest.mark.parametrize("args, message", [
    (("--retries", "2"), "--retries needs --schedule or --fire"),
    (("--retry-local",), "--retry-local has no effect without --retries"),
    (("--retries", "1", "--fire", "x", "--retry-on", "0"), "--retry-on"),
    (("--retries", "1", "--fire", "x", "--retry-on", "9-3"), "--retry-on"),
    (("--retries", "21", "--fire", "x"), "--retries"),
    (("--retries", "1", "--retry-local", "--retry-anywhere"), "--retry-anywhere"),
    (("--retries", "1", "--schedule", "@daily"), "does not fit in --grace"),
])
def test_retry_settings_that_could_never_retry_are_refused(
        args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = run_lockrun("-k", "job", *args, "--", "touch", str(marker), url="redis://127.0.0.1:1")
    assert r.returncode == 64 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert r.stderr.startswith("lockrun: ") and not marker.exists()


def test_a_retry_given_back_unstarted_is_not_counted_as_an_attempt(
        redis_server: RedisServer, key: str) -> None:
    """srv-b claims the retry but must give it back before starting the job (too few
    replicas, --strict-replicas, on a Redis that has none): that is no crashed attempt;
    srv-c then runs attempt 2."""
    url = redis_server.url
    args = ("-v", "-k", key, "--fire", "f1", "--retries", "2", "--retry-delay", "1s",
            "--retry-anywhere")
    assert on("srv-a", url, *args, "--", "sh", "-c", "exit 3").returncode == 3
    strict = (*args, "--wait-replicas", "1", "--strict-replicas", "--wait-timeout", "100ms",
              "--", "true")
    gave_back = tick_until_claimed("srv-b", url, strict)
    assert gave_back.returncode == 75, gave_back.stderr
    assert [e["host"] for e in history(redis_server, key) if e["event"] == "abandon"] == ["srv-b"]
    assert tick_until_claimed("srv-c", url, (*args, "--", "true")).returncode == 0
    assert attempts(redis_server, key) == [("1", "srv-a", "exited:3"), ("2", "srv-c", "exited:0")]


def test_explain_tells_a_ticket_not_yet_due_and_a_claimable_retry(
        redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    slow = ("-k", key, "--fire", "f1", "--retries", "2", "--retry-delay", "1h")
    assert on("srv-a", url, *slow, "--", "false").returncode == 1
    waiting = on("srv-b", url, "explain", *slow, "--", "true")
    assert "attempt 1 failed on srv-a; its retry is due at" in waiting.stdout, waiting.stdout
    other = f"{key}-b"
    quick = ("-k", other, "--fire", "f1", "--retries", "2", "--retry-delay", "1s",
             "--retry-anywhere")
    assert on("srv-a", url, *quick, "--", "false").returncode == 1
    due = int(redis_server.client().hget(job_keys(other, "f1")["fire"], "due_ms") or 0)
    wait_for(lambda: int(redis_server.client().time()[0]) * 1000 > due + 100, 10,
             "the retry to be due")
    claimable = on("srv-b", url, "explain", *quick, "--", "true")
    assert "would claim" in claimable.stdout and "it would be attempt 2 of 3" in \
        claimable.stdout, claimable.stdout


def test_check_judges_a_retried_fire_by_its_last_attempt(redis_server: RedisServer,
                                                         key: str) -> None:
    """A fire that failed once and succeeded on its retry is OK; a ticket still waiting is
    not a failure yet; a fire that failed every attempt is one failure, not three."""
    url = redis_server.url
    args = ("-v", "-k", key, "--fire", "f1", "--retries", "2", "--retry-delay", "1s",
            "--retry-anywhere", "--", "sh", "-c", '[ "$(hostname)" = srv-b ]')
    assert on("srv-a", url, *args).returncode == 1
    waiting = run_lockrun("check", key, url=url)
    assert not waiting.stdout.startswith("LOCKRUN CRITICAL"), waiting.stdout
    tick_until_claimed("srv-b", url, args)
    retried = run_lockrun("check", key, url=url)
    assert retried.returncode == 0 and retried.stdout.startswith("LOCKRUN OK"), retried.stdout
    failing = ("-v", "-k", key, "--fire", "f2", "--retries", "1", "--retry-delay", "1s",
               "--retry-anywhere", "--", "false")
    assert on("srv-a", url, *failing).returncode == 1
    tick_until_claimed("srv-c", url, failing)
    failed = run_lockrun("check", key, "--json", url=url)
    assert failed.returncode == 2 and json.loads(failed.stdout)["consecutive_failures"] == 1


def test_cron_mails_only_the_fires_end_not_an_attempt_that_will_be_retried(
        redis_server: RedisServer, key: str) -> None:
    """--quiet-unless-failed and --mail-on-failure print for the fire's end: a failed
    attempt that left a ticket is nobody's to act on yet (its output is kept with
    --capture), the last attempt's failure is."""
    url = redis_server.url
    args = ("-k", key, "--fire", "f1", "--retries", "1", "--retry-delay", "1s",
            "--retry-anywhere", "--quiet-unless-failed", "--mail-on-failure", "--", "sh", "-c",
            'echo "why $(hostname) failed"; exit 3')
    first = on("srv-a", url, *args)
    assert first.returncode == 3  # the attempt's status all the same
    assert (first.stdout, first.stderr) == ("", "")
    last = tick_until_claimed("srv-b", url, ("-v", *args))
    assert last.returncode == 3 and last.stdout == "why srv-b failed\n"
    assert "failed on srv-b with exit status 3" in last.stderr


def test_retry_local_confirms_the_claim_before_the_next_attempt(redis_server: RedisServer,
                                                               key: str, tmp_path: Path) -> None:
    """The delay (3s) is shorter than ttl/3 (20s), so no renewal falls inside it; the claim
    removed meanwhile must stop the retry, not let attempt 2 run unclaimed."""
    url = redis_server.url
    count = tmp_path / "count"
    proc = start_on("srv-a", url, "-k", key, "--fire", "f1", "--retries", "2",
                    "--retry-delay", "3s", "--retry-local", "--ttl", "60s", "--", "sh", "-c",
                    f"echo x >> {count}; exit 5")
    wait_for(lambda: any(e["event"] == "end" for e in history(redis_server, key)), 15,
             "the first attempt to end")
    redis_server.client().delete(job_keys(key, "f1")["fire"])
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5 and count.read_text() == "x\n", stderr
    assert "lost the lease" in stderr and "not retrying" in stderr
