"""The job's state across the fleet: its last end, its streak of failures, its last
success, kept by the scripts that record ends, whichever server (lockrun process)
ran each fire."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import RedisServer, run_lockrun

from lockrun.client import LockClient
from lockrun.protocol import job_keys, record_kept_end
from lockrun.state import KeptEnd


def state(server: RedisServer, key: str) -> Any:  # json's
    r = run_lockrun("status", key, "--json", url=server.url)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["state"]


def fire(server: RedisServer, key: str, name: str, *job: str) -> int:
    return run_lockrun("-k", key, "--fire", name, "--timeout", "2s", "--kill-after", "1s",
                       "--", *job, url=server.url).returncode


def test_a_streak_of_failures_across_runs_and_the_recovery(redis_server: RedisServer,
                                                           key: str) -> None:
    assert fire(redis_server, key, "f1", "true") == 0
    first = state(redis_server, key)
    assert first["failures"] == 0 and first["last_success_fire"] == "f1"
    assert fire(redis_server, key, "f2", "sh", "-c", "exit 3") == 3
    assert fire(redis_server, key, "f3", "sleep", "30") == 124  # a timeout is a failure
    failing = state(redis_server, key)
    assert failing["failures"] == 2 and failing["last_fire"] == "f3"
    assert failing["last_outcome"] == "timeout" and failing["last_exit"] == 124
    assert failing["last_success_fire"] == "f1"  # kept while the job fails
    assert failing["last_success_ms"] == first["last_success_ms"]
    table = run_lockrun("status", key, url=redis_server.url).stdout
    assert "2 in a row, last success" in table
    assert fire(redis_server, key, "f4", "true") == 0
    recovered = state(redis_server, key)
    assert recovered["failures"] == 0 and recovered["last_success_fire"] == "f4"
    assert recovered["last_success_ms"] > first["last_success_ms"]
    assert "in a row" not in run_lockrun("status", key, url=redis_server.url).stdout


def test_an_end_recorded_late_does_not_undo_a_newer_one(redis_server: RedisServer,
                                                        key: str) -> None:
    """A job end kept through an outage arrives after later fires ended: it goes into the
    history, not over the job's newer state."""
    assert fire(redis_server, key, "f2", "true") == 0
    client = LockClient(redis_server.url, timeout=2)
    try:
        old = KeptEnd(prefix="lockrun", key=key, fire="f1", owner="someone", host="h",
                      fence=1, guard=False, exit_code=9, outcome="exited",
                      ended_at=time.time() - 600, retention_s=86_400)
        assert record_kept_end(client, old) in ("recorded", "history")
    finally:
        client.close()
    kept = state(redis_server, key)
    assert kept["last_fire"] == "f2" and kept["failures"] == 0
    stored = redis_server.client().hgetall(job_keys(key, "f1")["job"])
    assert stored["last_fire"] == "f2"
