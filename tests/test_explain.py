"""lockrun explain: the crontab line's own options, the decision a fire would take, nothing
written.

Every decision is checked twice against a real Redis: explain says what a fire
would do, then a real fire of the same line (same options, same environment,
same faked clock) does it, and the two must agree. The key property, that
explain writes nothing, is checked with MONITOR (no write command, no script)
and with the keyspace before and after (every key's DUMP and TTL, and the
server's count of changes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import (
    RedisServer,
    faketime_env,
    free_port,
    lockrun_env,
    run_lockrun,
    start_lockrun,
    wait_for,
)
from redis_topologies import Cluster, SentinelSet

from lockrun.optiontable import WRAPPER

HOST = os.uname().nodename


def explain(url: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``lockrun explain ARGS --json``: exit 0, nothing on stderr, one JSON object."""
    cut = args.index("--") if "--" in args else len(args)
    r = run_lockrun("explain", *args[:cut], "--json", *args[cut:], url=url, env=env)
    assert (r.returncode, r.stderr) == (0, ""), r
    data = json.loads(r.stdout)  # the whole output is one object
    assert isinstance(data, dict)
    return data


def decision(data: dict[str, Any]) -> tuple[str, str, int | None]:
    d = data["decision"]
    return d["action"], d["reason"], d["exit_status"]


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return redis_server.url


def test_a_fresh_fire_would_run_and_then_does(url: str, key: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    line = ("-k", key, "--fire", "f1", "--", "touch", str(marker))
    data = explain(url, *line)
    assert decision(data) == ("run", "claim", None)
    assert data["fire"] == "f1" and data["derivation"]["source"] == "fire"
    assert data["redis"]["usable"] and data["redis"]["role"] == "master"
    assert data["redis"]["fire"] == {"name": f"lockrun:{{{key}}}:fire:f1", "fields": {},
                                     "pttl_ms": -2}
    assert data["command_path"] == subprocess.run(["sh", "-c", "command -v touch"],
                                                  capture_output=True, text=True).stdout.strip()
    text = run_lockrun("explain", *line, url=url)
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout.startswith(f"{key} on {HOST} at ") and "would run the job" in text.stdout
    assert "\ndecision       run (claim): this server would claim fire f1" in text.stdout
    assert "\nexit status    the job's own" in text.stdout
    assert not marker.exists(), "explain ran the job"
    assert run_lockrun(*line, url=url).returncode == 0 and marker.exists()


def test_a_done_fire_would_skip_with_the_skip_status(url: str, key: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "exit 3",
                       url=url).returncode == 3
    line = ("-k", key, "--fire", "f1", "-E", "7", "--", "touch", str(marker))
    data = explain(url, *line)
    assert decision(data) == ("skip", "done", 7)
    fire = data["redis"]["fire"]
    assert fire["fields"]["state"] == "done" and fire["fields"]["exit"] == "3"
    assert fire["fields"]["host"] == HOST and 0 < fire["pttl_ms"] <= 86_400_000
    assert f"already done by {HOST}" in data["decision"]["text"]
    assert "exit 3" in data["decision"]["text"]
    r = run_lockrun(*line, url=url)
    assert r.returncode == 7 and not marker.exists()


def test_a_running_fire_is_held_and_its_guard_skips_the_next(url: str, key: str,
                                                              tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    first = start_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c",
                          f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                          url=url)
    try:
        wait_for(lambda: started.exists() or first.poll() is not None, 30, "the first fire")
        held = explain(url, "-k", key, "--fire", "f1", "-E", "4", "--", "true")
        assert decision(held) == ("skip", "held", 4)
        assert held["redis"]["fire"]["fields"]["state"] == "running"
        assert f"held by {HOST}" in held["decision"]["text"]

        overlap = explain(url, "-k", key, "--fire", "f2", "-E", "4", "--", "true")
        assert decision(overlap) == ("skip", "overlap", 4)
        guard = overlap["redis"]["guard"]
        assert guard["fields"]["fire"] == "f1" and 0 < guard["pttl_ms"] <= 60_000
        assert "fire f1 is still running" in overlap["decision"]["text"]

        allowed = explain(url, "-k", key, "--fire", "f2", "--overlap", "allow", "--", "true")
        assert decision(allowed) == ("run", "claim", None)
        assert any("overlap guard is held by fire f1" in n for n in allowed["decision"]["notes"])

        replacing = explain(url, "-k", key, "--fire", "f2", "--overlap", "replace", "--",
                            "true")
        assert decision(replacing) == ("run", "replace", None)
        assert "ask fire f1" in replacing["decision"]["text"]

        assert run_lockrun("cancel", key, "--fire", "f1", url=url).returncode == 0
        cancelling = explain(url, "-k", key, "--fire", "f1", "--", "true")
        assert decision(cancelling) == ("skip", "held", 0)
        assert "asked it to stop" in cancelling["decision"]["text"]

        assert run_lockrun("-k", key, "--fire", "f1", "-E", "4", "--", "true",
                           url=url).returncode == 4
        assert run_lockrun("-k", key, "--fire", "f2", "-E", "4", "--", "true",
                           url=url).returncode == 4
    finally:
        release.touch()
        first.communicate(timeout=60)
    assert first.returncode == 0  # released before its next renewal could see the cancel


def test_a_paused_job_and_every_job_paused(url: str, key: str) -> None:
    prefix = f"p{key[2:]}"  # pause --all must not reach other tests' jobs
    env = lockrun_env(url, LOCKRUN_KEY_PREFIX=prefix)
    assert run_lockrun("pause", key, "--reason", "db upgrade", "--for", "1h", url=url,
                       env=env).returncode == 0
    data = explain(url, "-k", key, "--fire", "p1", "-E", "5", "--", "true", env=env)
    assert decision(data) == ("skip", "paused", 5)
    pause = data["redis"]["pause"]
    assert pause["name"] == f"{prefix}:{{{key}}}:pause" and "@" in pause["fields"]["by"]
    assert pause["fields"]["reason"] == "db upgrade" and 0 < pause["pttl_ms"] <= 3_600_000
    assert "db upgrade" in data["decision"]["text"] and "until 2" in data["decision"]["text"]
    assert run_lockrun("-k", key, "--fire", "p1", "-E", "5", "--", "true", url=url,
                       env=env).returncode == 5
    assert run_lockrun("resume", key, url=url, env=env).returncode == 0
    # the fire a paused fleet skipped stays skipped; the next one runs
    after = explain(url, "-k", key, "--fire", "p1", "--", "true", env=env)
    assert decision(after)[:2] == ("skip", "paused")
    assert after["redis"]["fire"]["fields"]["state"] == "paused"
    assert "stays skipped after a resume" in after["decision"]["text"]
    assert decision(explain(url, "-k", key, "--fire", "p2", "--", "true", env=env))[:2] \
        == ("run", "claim")

    assert run_lockrun("pause", "--all", "--reason", "freeze", url=url, env=env).returncode == 0
    try:
        every = explain(url, "-k", key, "--fire", "p3", "-E", "6", "--", "true", env=env)
        assert decision(every) == ("skip", "paused", 6)
        assert every["redis"]["fleet_pause"]["fields"]["reason"] == "freeze"
        assert every["redis"]["fleet_pause"]["pttl_ms"] == -1  # until resumed
        assert "every job is paused" in every["decision"]["text"]
        assert run_lockrun("-k", key, "--fire", "p3", "-E", "6", "--", "true", url=url,
                           env=env).returncode == 6
    finally:
        assert run_lockrun("resume", "--all", url=url, env=env).returncode == 0


def test_too_late_with_a_faked_clock(url: str, key: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    line = ("-k", key, "--schedule", "*/10 * * * *", "--tz", "UTC", "--max-skew", "0",
            "-E", "6", "--", "touch", str(marker))
    late = faketime_env(url, "@2026-11-22 04:05:00")
    data = explain(url, *line, env=late)
    assert decision(data) == ("skip", "too-late", 6)
    s = data["schedule"]
    assert data["fire"] == "2026-11-22T04:00:00Z" and s["too_late"] is True
    assert s["scheduled_utc"] == "2026-11-22T04:00:00Z"
    assert s["deadline_utc"] == "2026-11-22T04:01:00Z" and s["grace_s"] == 60
    assert 300 <= s["late_s"] < 330
    assert "ran nowhere" in data["decision"]["text"]  # no record yet: this one would say so
    assert data["decision"]["within_grace"]["action"] == "run"  # nothing else stands in the way
    r = run_lockrun(*line, url=url, env=late)
    assert r.returncode == 6 and "ran nowhere" in r.stderr and not marker.exists()
    again = explain(url, *line, env=late)
    assert decision(again) == ("skip", "too-late", 6)
    assert again["redis"]["fire"]["fields"]["state"] == "missed"
    assert "ran nowhere" not in again["decision"]["text"]
    assert run_lockrun("pause", key, "--reason", "moving", url=url).returncode == 0
    paused = explain(url, *line, env=late)["decision"]
    assert paused["reason"] == "too-late" and paused["exit_status"] == 6
    assert paused["within_grace"]["reason"] == "paused" and "moving" in \
        paused["within_grace"]["text"]
    assert run_lockrun("resume", key, url=url).returncode == 0

    in_time = faketime_env(url, "@2026-11-22 04:10:20")
    data = explain(url, *line, env=in_time)
    assert decision(data) == ("run", "claim", None)
    assert data["schedule"]["too_late"] is False
    assert data["schedule"]["deadline_utc"] == "2026-11-22T04:11:00Z"
    assert run_lockrun(*line, url=url, env=in_time).returncode == 0 and marker.exists()


@pytest.mark.parametrize(("policy", "expected"), [
    ("fail", ("fail", "redis-unusable", 9)),
    ("skip", ("skip", "redis-unusable", 3)),
    ("run", ("run-without-lock", "redis-unusable", None)),
])
def test_redis_unusable_says_what_a_fire_would_exit(key: str, tmp_path: Path, policy: str,
                                                    expected: tuple[str, str, int | None]
                                                    ) -> None:
    refused = f"redis://127.0.0.1:{free_port()}/0"
    marker = tmp_path / "ran"
    line = ("-k", key, "--on-redis-error", policy, "--error-exit-code", "9", "-E", "3", "--",
            "touch", str(marker))
    data = explain(refused, *line)
    assert decision(data) == expected
    assert data["redis"]["usable"] is False and "cannot use Redis" in data["redis"]["error"]
    text = run_lockrun("explain", *line, url=refused)
    assert text.returncode == 0 and "redis          unusable: cannot use Redis" in text.stdout
    r = run_lockrun(*line, url=refused)
    assert r.returncode == (0 if expected[2] is None else expected[2])
    assert marker.exists() == (policy == "run")


def test_a_redis_that_never_answers_costs_one_timeout(key: str) -> None:
    """Accepted, never answered (a dead route, a stopped server): explain waits one
    --redis-timeout, says so, exits 0 and never shows the password."""
    import time

    with socket.create_server(("127.0.0.1", 0)) as blackhole:
        url = f"redis://:Secr3t-pw@127.0.0.1:{blackhole.getsockname()[1]}/0"
        started = time.monotonic()
        r = run_lockrun("explain", "-k", key, "--redis-timeout", "0.5s", "--ttl", "2s", "--json",
                        "--", "true", url=url)
        took = time.monotonic() - started
    assert r.returncode == 0 and r.stderr == "", r
    assert took < 0.5 + 5, took  # one timeout plus start-up on a loaded machine
    data = json.loads(r.stdout)
    assert decision(data) == ("fail", "redis-unusable", 75)
    assert "Secr3t-pw" not in r.stdout and "***" in data["redis"]["url"]


@pytest.mark.parametrize(("policy", "status"), [("fail", 9), ("skip", 3), ("run", 3)])
def test_too_late_and_redis_unusable(key: str, policy: str, status: int) -> None:
    """A late fire never runs, not even with --on-redis-error run.

    The real clock, not libfaketime: under it the fire's retry pause (time.sleep)
    fails with EINVAL. @yearly's latest slot is past the grace except in the
    first minute of a year.
    """
    refused = f"redis://127.0.0.1:{free_port()}/0"
    line = ("-k", key, "--schedule", "@yearly", "--tz", "UTC", "--on-redis-error", policy,
            "--error-exit-code", "9", "-E", "3", "--", "true")
    data = explain(refused, *line)
    assert data["decision"]["reason"] == "too-late" and data["decision"]["exit_status"] == status
    assert run_lockrun(*line, url=refused).returncode == status


def test_a_replica_is_unusable(redis_server: RedisServer, own_redis: RedisServer,
                               key: str) -> None:
    own_redis.client().execute_command(  # type: ignore[no-untyped-call]
        "REPLICAOF", "127.0.0.1", str(redis_server.port))
    data = explain(own_redis.url, "-k", key, "--", "true")
    assert decision(data) == ("fail", "redis-unusable", 75)
    assert data["redis"]["role"] == "slave" and "not a primary" in data["redis"]["error"]
    assert run_lockrun("-k", key, "--", "true", url=own_redis.url).returncode == 75


def test_a_command_that_cannot_be_found(url: str, key: str) -> None:
    data = explain(url, "-k", key, "--", "no-such-command-xyz")
    assert decision(data) == ("fail", "command-not-found", 127)
    assert run_lockrun("-k", key, "--", "no-such-command-xyz", url=url).returncode == 127


def fire_in_redis(server: RedisServer, key: str, prefix: str = "lockrun") -> list[str]:
    names = server.client().keys(f"{prefix}:{{{key}}}:fire:*")
    return [str(n).rsplit(":fire:", 1)[1] for n in names]


def test_the_fire_id_and_how_it_was_derived(redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    at = faketime_env(url, "@2026-06-01 12:34:05")  # 55s before the minute ends
    minute = explain(url, "-k", f"{key}-m", "--", "true", env=at)
    assert minute["fire"] == "2026-06-01T12:34:00Z"
    assert minute["derivation"]["source"] == "minute" and minute["schedule"] is None
    given = explain(url, "-k", f"{key}-g", "--fire", "nightly-42", "--", "true", env=at)
    assert (given["fire"], given["derivation"]["source"]) == ("nightly-42", "fire")

    tokyo = explain(url, "-k", f"{key}-t", "--schedule", "0 3 * * *", "--tz", "Asia/Tokyo",
                    "--", "true", env=faketime_env(url, "@2026-06-01 07:00:30"))
    d = tokyo["derivation"]
    assert tokyo["fire"] == "2026-05-31T18:00:00Z"
    assert (d["source"], d["zone"], d["zone_source"]) == ("schedule", "Asia/Tokyo", "--tz")
    assert tokyo["schedule"]["scheduled_local"] == "2026-06-01 03:00:00 JST"

    # without --tz: the zone, among $CRON_TZ, $TZ and the system's, whose slot is latest
    for clock, fire, zone, source in [
            ("@2026-06-01 07:00:30", "2026-06-01T07:00:00Z", "America/New_York", "CRON_TZ"),
            ("@2026-06-01 03:00:30", "2026-06-01T03:00:00Z", "UTC", "TZ")]:
        job = f"{key}-{source}"
        env = faketime_env(url, clock, CRON_TZ="America/New_York", TZ="UTC")
        line = ("-k", job, "--schedule", "0 3 * * *", "--max-skew", "0", "--", "true")
        data = explain(url, *line, env=env)
        d = data["derivation"]
        assert (data["fire"], d["zone"], d["zone_source"]) == (fire, zone, source), d
        considered = {(c["zone"], c["source"]) for c in d["considered"]}
        assert {("America/New_York", "CRON_TZ"), ("UTC", "TZ")} <= considered
        assert run_lockrun(*line, url=url, env=env).returncode == 0
        assert fire_in_redis(redis_server, job) == [fire], "a real fire used another id"


def next_fires(data: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [(n["utc"], n["local"], n["notes"]) for n in data["schedule"]["next"]]


def test_the_next_five_fires_across_dst_changes(redis_server: RedisServer, key: str) -> None:
    url = redis_server.url

    def at(clock: str, schedule: str) -> list[tuple[str, str, list[str]]]:
        data = explain(url, "-k", key, "--schedule", schedule, "--tz", "Europe/Berlin", "--",
                       "true", env=faketime_env(url, clock))
        return next_fires(data)

    # spring forward, 2026-03-29 02:00 CET -> 03:00 CEST
    fixed = at("@2026-03-28 23:40:00", "30 2 * * *")
    assert [utc for utc, _, _ in fixed] == [
        "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z",
        "2026-04-01T00:30:00Z", "2026-04-02T00:30:00Z"]
    assert fixed[0][1] == "2026-03-29 03:00:00 CEST" and fixed[1][1] == "2026-03-30 02:30:00 CEST"
    assert fixed[0][2][0] == ("in a DST gap: local 02:30 does not exist that day; cron runs it "
                              "at 03:00 CEST instead")
    assert all(any("UTC offset +02:00" in n for n in notes) for _, _, notes in fixed)
    assert not any("DST" in n for _, _, notes in fixed[1:] for n in notes)

    every = at("@2026-03-28 23:40:00", "*/30 * * * *")
    assert [utc for utc, _, _ in every] == [
        "2026-03-29T00:00:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z",
        "2026-03-29T01:30:00Z", "2026-03-29T02:00:00Z"]
    assert every[0][2] == [] and every[1][2] == []  # same offset as now, no DST
    assert every[2][2][0] == ("after a DST gap: local 02:00, 02:30 do not exist that day, so "
                              "no fire for them")

    # fall back, 2026-10-25 03:00 CEST -> 02:00 CET: an hourly job fires at 02:00 twice
    hourly = at("@2026-10-24 23:10:00", "0 * * * *")
    assert [utc for utc, _, _ in hourly] == [
        "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z",
        "2026-10-25T03:00:00Z", "2026-10-25T04:00:00Z"]
    assert hourly[0][1] == "2026-10-25 02:00:00 CEST" and hourly[1][1] == "2026-10-25 02:00:00 CET"
    assert hourly[0][2] == ["in a DST fold: local 02:00 occurs twice; this is the first (CEST), "
                            "each with its own fire id"]
    assert hourly[1][2][0] == ("in a DST fold: local 02:00 occurs twice; this is the second "
                               "(CET), each with its own fire id")
    once = at("@2026-10-24 23:10:00", "30 2 * * *")
    assert once[0][0] == "2026-10-25T00:30:00Z"
    assert once[0][2] == ["in a DST fold: local 02:30 occurs twice; cron runs it once, at the "
                          "first (CEST)"]
    assert once[1][0] == "2026-10-26T01:30:00Z"

    # what explain listed is what a fire then uses: the gap's fire, at 03:00:05 CEST
    env = faketime_env(url, "@2026-03-29 01:00:05")
    assert run_lockrun("-k", key, "--schedule", "30 2 * * *", "--tz", "Europe/Berlin",
                       "--max-skew", "0", "--", "true", url=url, env=env).returncode == 0
    assert fire_in_redis(redis_server, key) == ["2026-03-29T01:00:00Z"]


def test_the_configuration_file_and_variables_apply(url: str, key: str,
                                                    tmp_path: Path) -> None:
    config = tmp_path / "lockrun.toml"
    config.write_text('key_prefix = "fromfile"\nskip_exit_code = 7\ngrace = "5m"\n')
    env = lockrun_env(url, LOCKRUN_CONFIG=str(config), LOCKRUN_ERROR_EXIT_CODE="12")
    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=url, env=env)
    data = explain(url, "-k", key, "--fire", "f1", "--", "true", env=env)
    assert decision(data) == ("skip", "done", 7)
    assert data["redis"]["fire"]["name"] == f"fromfile:{{{key}}}:fire:f1"
    refused = dict(env, LOCKRUN_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert decision(explain(url, "-k", key, "--", "true", env=refused))[2] == 12
    late = faketime_env(url, "@2026-11-22 04:04:00", LOCKRUN_CONFIG=str(config))
    within = explain(url, "-k", key, "--schedule", "@hourly", "--tz", "UTC", "--", "true",
                     env=late)
    assert within["schedule"]["grace_s"] == 300 and within["schedule"]["too_late"] is False


BAD_LINES = [
    ("--", "true"),  # no key
    ("-k", "bad key", "--", "true"),
    ("-k", "k", "--ttl", "0", "--", "true"),
    ("-k", "k", "--ttl", "3s", "--", "true"),  # shorter than 3 x --redis-timeout
    ("-k", "k", "--fire", "x", "--schedule", "@daily", "--", "true"),
    ("-k", "k", "--schedule", "61 * * * *", "--", "true"),
    ("-k", "k", "--schedule", "@daily", "--tz", "Mars/Olympus", "--", "true"),
    ("-k", "k"),  # no command
    ("-k", "k", "-v", "-q", "--", "true"),
    ("-k", "k", "--on-lost", "maybe", "--", "true"),
    ("-k", "k", "--bogus", "--", "true"),
]


@pytest.mark.parametrize("line", BAD_LINES, ids=" ".join)
def test_bad_input_is_64_with_the_wrappers_message_before_redis(line: tuple[str, ...]) -> None:
    """A listening socket as --redis-url: a connection attempt would be queued there."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        r = run_lockrun("explain", *line, url=url)
        wrapper = run_lockrun(*line, url=url)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert r.returncode == 64 and r.stdout == "", r
    assert r.stderr.startswith("lockrun: ") and r.stderr.count("\n") == 1, r.stderr
    assert (wrapper.returncode, wrapper.stderr) == (64, r.stderr)


def test_a_bad_variable_is_64_too() -> None:
    env = lockrun_env("redis://127.0.0.1:9/0", LOCKRUN_GRACE="soon")
    r = run_lockrun("explain", "-k", "k", "--", "true", url="", env=env)
    assert r.returncode == 64 and "LOCKRUN_GRACE" in r.stderr


def test_help_lists_every_wrapper_option() -> None:
    r = run_lockrun("explain", "--help", url="redis://127.0.0.1:9/0")
    assert r.returncode == 0 and r.stdout.startswith("Usage: lockrun explain [OPTIONS] -- ")
    missing = [flag for option in WRAPPER for flag in option.flags if flag not in r.stdout]
    assert missing == [] and "--json" in r.stdout


# Nothing written.

def keyspace(server: RedisServer) -> dict[bytes, tuple[bytes | None, int]]:
    raw = redis.Redis(unix_socket_path=server.socket)
    return {name: (raw.dump(name), int(raw.pttl(name))) for name in raw.scan_iter(count=1000)}


def test_explain_writes_nothing(own_redis: RedisServer, key: str, transport: str) -> None:
    """MONITOR sees only read commands, no script; every key and TTL is as before."""
    url = own_redis.url
    run_lockrun("-k", key, "--fire", "done", "--", "true", url=url)
    run_lockrun("pause", f"{key}-p", "--reason", "r", "--for", "1h", url=url)
    client = own_redis.client(timeout=60)
    client.hset(f"lockrun:{{{key}-o}}:running", mapping={  # a guard left by a dead server
        "owner": "x@elsewhere:1", "fence": "5", "host": "elsewhere", "fire": "old"})
    client.pexpire(f"lockrun:{{{key}-o}}:running", 3_600_000)
    lines = [
        ("-k", key, "--fire", "done", "--", "true"),  # done
        ("-k", key, "--fire", "new", "--", "true"),  # would run: the claim writes
        ("-k", f"{key}-p", "--fire", "x", "--", "true"),  # paused: the skip writes a record
        ("-k", f"{key}-o", "--fire", "x", "--", "true"),  # overlap
    ]
    late = ("-k", key, "--schedule", "@hourly", "--tz", "UTC", "--", "true")  # records a miss
    before, changes = keyspace(own_redis), client.info("persistence")["rdb_changes_since_last_save"]
    seen: list[str] = []
    with client.monitor() as monitor:  # type: ignore[no-untyped-call]
        results = [explain(url, *line) for line in lines]
        results.append(explain(url, *late, env=faketime_env(url, "@2026-11-22 04:05:00")))
        own_redis.client().echo("explain-done")
        while not seen or seen[-1] != "ECHO explain-done":
            seen.append(str(monitor.next_command()["command"]))
    assert [decision(r)[:2] for r in results] == [
        ("skip", "done"), ("run", "claim"), ("skip", "paused"), ("skip", "overlap"),
        ("skip", "too-late")]
    names = {line.split()[0].upper() for line in seen}
    assert {"HGETALL", "PTTL", "TIME"} <= names, seen  # MONITOR saw explain's reads
    info: Any = client.execute_command(  # type: ignore[no-untyped-call]
        "COMMAND", "INFO", *names)
    writes = sorted(n for n in names if "write" in info[n.lower()]["flags"])
    assert writes == [] and not names & {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL",
                                         "SCRIPT"}, seen
    after = keyspace(own_redis)
    assert after.keys() == before.keys()
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert all(after[k][1] <= before[k][1] for k in before), "a TTL was extended"
    assert client.info("persistence")["rdb_changes_since_last_save"] == changes


# Other topologies and the documented ACL user.

@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def topology_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp(request.param)
    topology: SentinelSet | Cluster = (SentinelSet(workdir, replicas=1)
                                       if request.param == "sentinel"
                                       else Cluster(workdir, primaries=3))
    try:
        yield topology.url
    finally:
        topology.stop()


def test_sentinel_and_cluster(topology_url: str, key: str) -> None:
    url = topology_url
    env = lockrun_env(url, LOCKRUN_KEY_PREFIX=f"p{key[2:]}")
    assert decision(explain(url, "-k", key, "--fire", "f1", "--", "true", env=env)) \
        == ("run", "claim", None)
    assert run_lockrun("-k", key, "--fire", "f1", "--", "true", url=url, env=env).returncode == 0
    done = explain(url, "-k", key, "--fire", "f1", "-E", "3", "--", "true", env=env)
    assert decision(done) == ("skip", "done", 3)
    assert run_lockrun("pause", "--all", "--reason", "freeze", url=url, env=env).returncode == 0
    try:  # on Cluster the fleet's flag lives in another slot than the job's keys
        paused = explain(url, "-k", key, "--fire", "f2", "-E", "3", "--", "true", env=env)
        assert decision(paused) == ("skip", "paused", 3)
        assert paused["redis"]["fleet_pause"]["fields"]["reason"] == "freeze"
    finally:
        assert run_lockrun("resume", "--all", url=url, env=env).returncode == 0


def test_the_readme_acl_user_can_explain(own_redis: RedisServer, key: str,
                                         transport: str) -> None:
    """README's user has no PTTL (a fire needs none): explain says so and still decides."""
    from test_acl import documented_acl

    own_redis.client().execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "lockrun", "reset", *documented_acl())
    url = f"unix://lockrun:pw@{own_redis.socket}"
    assert run_lockrun("-k", key, "--fire", "f1", "--", "true", url=url).returncode == 0
    data = explain(url, "-k", key, "--fire", "f1", "--", "true")
    assert decision(data) == ("skip", "done", 0)
    assert data["redis"]["fire"]["pttl_ms"] is None
    assert data["redis"]["notes"] == [
        "the Redis user may not run PTTL: expiries are not shown (grant +pttl)"]
