"""status, history, unlock, doctor: the operator's questions, answered from real Redis."""

from __future__ import annotations

import json
import signal
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    RedisServer,
    faketime_env,
    history,
    lockrun_env,
    run_lockrun,
    start_lockrun,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py


def admin(server: RedisServer, *args: str) -> Any:
    r = run_lockrun(*args, "--json", url=server.url)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_history_answers_who_ran_each_fire_and_how(redis_server: RedisServer, key: str,
                                                   tmp_path: Path) -> None:
    run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "exit 3", url=redis_server.url)
    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)  # skipped
    run_lockrun("-k", key, "--fire", "f2", "--timeout", "0.2s", "--", "sleep", "30",
                url=redis_server.url)
    started = tmp_path / "started"
    crashed = start_lockrun("-k", key, "--fire", "f3", "--ttl", "1s",
                            "--redis-timeout", "300ms", "--", "sh", "-c",
                            f"touch {started}; sleep 60", url=redis_server.url)
    wait_for(started.exists, 30, "f3 to start")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(30)
    wait_for(lambda: not redis_server.client().exists(f"lockrun:{{{key}}}:fire:f3"), 10,
             "the crashed claim to expire")
    run_lockrun("-k", key, "--schedule", "0 3 * * *", "--tz", "UTC", "--max-skew", "0", "--",
                "true", url=redis_server.url,
                env=faketime_env(redis_server.url, "@2026-11-22 04:00:00"))
    rows = admin(redis_server, "history", key)
    by_fire = {r["fire"]: r for r in rows}
    assert by_fire["f1"]["outcome"] == "ran" and by_fire["f1"]["exit"] == 3
    assert by_fire["f1"]["duration_s"] is not None and by_fire["f1"]["host"]
    assert by_fire["f2"]["outcome"] == "timeout" and by_fire["f2"]["exit"] == 124
    assert by_fire["f3"]["outcome"] == "crashed" and by_fire["f3"]["end_ms"] is None
    assert by_fire["2026-11-22T03:00:00Z"]["outcome"] == "skipped-too-late"
    assert [r["fire"] for r in rows] == ["2026-11-22T03:00:00Z", "f3", "f2", "f1"]
    assert len(admin(redis_server, "history", key, "--limit", "2")) == 2
    table = run_lockrun("history", key, url=redis_server.url).stdout.splitlines()
    assert table[0].split() == ["FIRE", "HOST", "START", "END", "DURATION", "OUTCOME", "EXIT"]
    assert len(table) == 5


def test_status_shows_what_runs_now_and_the_last_outcome(redis_server: RedisServer, key: str,
                                                         tmp_path: Path) -> None:
    run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "exit 5", url=redis_server.url)
    started, release = tmp_path / "started", tmp_path / "release"
    proc = start_lockrun("-k", key, "--fire", "f2", "--", "sh", "-c",
                         f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                         url=redis_server.url)
    wait_for(started.exists, 30, "f2 to start")
    [state] = admin(redis_server, "status", key)
    assert [r["fire"] for r in state["running"]] == ["f2"]
    assert state["overlap_guard"]["fire"] == "f2"
    assert state["last"]["fire"] == "f1" and state["last"]["exit"] == 5
    everyone = admin(redis_server, "status")
    assert key in {s["key"] for s in everyone}
    release.touch()
    assert proc.wait(30) == 0
    [state] = admin(redis_server, "status", key)
    assert state["running"] == [] and state["last"]["fire"] == "f2"


def test_unlock_clears_a_stuck_guard_and_records_it(redis_server: RedisServer, key: str) -> None:
    c = redis_server.client()
    c.hset(f"lockrun:{{{key}}}:running", mapping={"owner": "dead@gone:1", "fire": "f1"})
    c.hset(f"lockrun:{{{key}}}:fire:f1", mapping={"owner": "dead@gone:1", "state": "running"})
    blocked = run_lockrun("-k", key, "--fire", "f2", "-E", "3", "--", "true",
                          url=redis_server.url)
    assert blocked.returncode == 3
    refused = run_lockrun("unlock", key, url=redis_server.url)
    assert refused.returncode == 64 and "--yes" in refused.stderr
    assert c.exists(f"lockrun:{{{key}}}:running")
    r = run_lockrun("unlock", key, "--fire", "f1", "--yes", url=redis_server.url)
    assert r.returncode == 0 and "removed fire f1" in r.stdout and "overlap guard" in r.stdout
    assert not c.exists(f"lockrun:{{{key}}}:running", f"lockrun:{{{key}}}:fire:f1")
    assert history(redis_server, key)[-1]["event"] == "unlock"
    assert run_lockrun("-k", key, "--fire", "f2", "--", "sh", "-c", "exit 4",
                       url=redis_server.url).returncode == 4
    again = run_lockrun("unlock", key, "--yes", url=redis_server.url)
    assert again.returncode == 1 and "nothing to unlock" in again.stdout


def test_doctor_passes_on_a_safe_redis(own_redis: RedisServer) -> None:
    own_redis.client().config_set("appendonly", "yes")
    r = run_lockrun("doctor", url=own_redis.url)
    assert r.returncode == 0, r.stdout
    assert {line.split()[0] for line in r.stdout.splitlines()} == {"ok"}
    assert own_redis.client().keys("lockrun:{lockrun-doctor}*") == []


def test_doctor_catches_eviction_and_a_skewed_clock(own_redis: RedisServer) -> None:
    own_redis.client().config_set("maxmemory", "100mb")
    own_redis.client().config_set("maxmemory-policy", "allkeys-lru")
    r = run_lockrun("doctor", "--json", url=own_redis.url,
                    env=faketime_env(own_redis.url, "+30s"))
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["eviction"]["status"] == "fail" and "allkeys-lru" in checks["eviction"]["detail"]
    assert checks["clock"]["status"] == "fail" and "ahead" in checks["clock"]["detail"]
    assert checks["persistence"]["status"] == "warn"
    assert checks["scripts and permissions"]["status"] == "ok"


def test_doctor_names_a_missing_permission(own_redis: RedisServer) -> None:
    own_redis.client().acl_setuser("cron", enabled=True, passwords=["+pw"], keys=["lockrun:*"],
                                   commands=["+@all", "-xadd"])
    url = f"unix://cron:pw@{own_redis.socket}"
    r = run_lockrun("doctor", url=url)
    assert r.returncode == 1
    line = next(x for x in r.stdout.splitlines() if "scripts" in x)
    assert line.startswith("fail") and "xadd" in line.lower()
    assert "pw@" not in r.stdout


def test_doctor_names_a_wrong_password(own_redis: RedisServer) -> None:
    own_redis.client().config_set("requirepass", "right")
    r = run_lockrun("doctor", url=f"unix://:wrong@{own_redis.socket}")
    assert r.returncode == 1
    assert r.stdout.startswith("fail  auth:") and ":wrong@" not in r.stdout and ":***@" in r.stdout


def test_doctor_reports_an_unreachable_redis() -> None:
    r = run_lockrun("doctor", url="redis://127.0.0.1:1/0")
    assert r.returncode == 1
    assert r.stdout.startswith("fail  connection:")


def test_history_with_schedule_lists_fires_that_ran_nowhere(redis_server: RedisServer,
                                                            key: str) -> None:
    """No server ticked for some fires at all: only the schedule can reveal them."""
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    seeded = (minute - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run_lockrun("-k", key, "--fire", seeded, "--", "true",
                       url=redis_server.url).returncode == 0  # the job existed by then
    ran = run_lockrun("-k", key, "--schedule", "* * * * *", "--tz", "UTC", "--", "sh", "-c",
                      'echo "$LOCKRUN_FIRE"', url=redis_server.url)
    fire = ran.stdout.strip()
    rows = admin(redis_server, "history", key, "--schedule", "* * * * *", "--tz", "UTC",
                 "--limit", "4")
    assert len(rows) == 4
    outcomes = {r["fire"]: r["outcome"] for r in rows}
    assert outcomes[fire] == "ran"
    older = [o for f, o in outcomes.items() if seeded < f < fire]
    newer = [o for f, o in outcomes.items() if f > fire]  # the minute turned meanwhile
    assert older and set(older) == {"ran-nowhere"}
    assert set(newer) <= {"pending"}
    assert [r["fire"] for r in rows] == sorted(outcomes, reverse=True)


@pytest.mark.parametrize("verb", ["status", "history"])
def test_a_key_redis_knows_nothing_of_is_said_and_exits_1(redis_server: RedisServer, key: str,
                                                          verb: str) -> None:
    r = run_lockrun(verb, key, url=redis_server.url)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.startswith(f"lockrun: no record of job '{key}'"), r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_history_lists_no_ran_nowhere_before_the_jobs_first_fire(redis_server: RedisServer,
                                                                  key: str) -> None:
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    first = (hour - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run_lockrun("-k", key, "--fire", first, "--", "true",
                       url=redis_server.url).returncode == 0
    r = run_lockrun("history", key, "--schedule", "0 * * * *", "--tz", "UTC", "--limit", "10",
                    "--json", url=redis_server.url)
    assert r.returncode == 0, r.stderr
    fires = [row["fire"] for row in json.loads(r.stdout)]
    assert first in fires and min(fires) == first, fires
    # the hour between the first fire and now left no trace: that one did run nowhere
    missed = (hour - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert {"fire": missed, "outcome": "ran-nowhere"}.items() <= next(
        row for row in json.loads(r.stdout) if row["fire"] == missed).items()


def test_doctor_checks_what_the_configuration_file_needs_on_this_host(
        redis_server: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "lockrun.toml"
    config.write_text(f'metrics_dir = "{tmp_path / "missing"}"\nsyslog = true\n')
    config.chmod(0o600)
    env = lockrun_env(redis_server.url, LOCKRUN_CONFIG=str(config),
                      LOCKRUN_SYSLOG_SOCKET=str(tmp_path / "no-log.sock"))
    r = run_lockrun("doctor", url=redis_server.url, env=env)
    assert r.returncode == 1, r.stdout
    lines = {line.split(":", 1)[0].split(None, 1)[1]: line.split(None, 1)[0]
             for line in r.stdout.splitlines()}
    assert lines["config metrics_dir"] == "fail" and "does not exist" in r.stdout
    # the wrapper refuses it too, but once is enough: on its own line, for each user
    assert lines["config values"] == "ok" and "invalid value for metrics_dir" not in r.stdout
    assert lines["config syslog"] == "fail"
    assert lines["config file"] == "warn" and "other users' crontabs" in r.stdout
    # once what the file names exists, the same checks pass
    (tmp_path / "missing").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        log.bind(str(tmp_path / "no-log.sock"))
        config.chmod(0o644)
        ok = run_lockrun("doctor", url=redis_server.url, env=env)
    assert "fail  config" not in ok.stdout and "warn  config" not in ok.stdout, ok.stdout
    assert "ok    config metrics_dir" in ok.stdout and "ok    config syslog" in ok.stdout


# ------------------------------------------------------------------ the file's values

def doctor_with_file(server: RedisServer, config: Path, **extra: str) -> tuple[
        int, dict[str, tuple[str, str]]]:
    """``lockrun doctor --json`` with *config*: (exit status, {check: (status, detail)})."""
    r = run_lockrun("doctor", "--json", url=server.url,
                    env=lockrun_env(server.url, LOCKRUN_CONFIG=str(config), **extra))
    assert r.stderr == "", r.stderr
    return r.returncode, {c["name"]: (c["status"], c["detail"]) for c in json.loads(r.stdout)}


def wrapper_refusal(server: RedisServer, config: Path, key: str, **extra: str) -> str:
    """The one sentence a crontab line using *config* prints before it exits 64."""
    r = run_lockrun("-k", key, "--", "true", url=server.url,
                    env=lockrun_env(server.url, LOCKRUN_CONFIG=str(config), **extra))
    assert r.returncode == 64, r.stderr
    [line] = r.stderr.splitlines()
    return line.removeprefix("lockrun: ")


@pytest.mark.parametrize(("text", "named"), [
    ('ttl = "abc"\n', "invalid value for ttl ({config}, line 1): invalid duration 'abc'"),
    ('ttl = "5s"\nredis_timeout = "2s"\n',
     "--ttl 5s is too short for --redis-timeout 2s"),
    ('verbose = true\nquiet = true\n', "--verbose and --quiet cannot be used together"),
    ('schedule = "0 3 * *"\n', "invalid --schedule '0 3 * *': use 5 cron fields"),
], ids=["not-a-duration", "ttl-below-3x-redis-timeout", "verbose-and-quiet", "schedule"])
def test_doctor_fails_a_value_every_wrapper_line_refuses_with_the_wrappers_sentence(
        redis_server: RedisServer, tmp_path: Path, key: str, text: str, named: str) -> None:
    """The loader checks names and TOML types only: these passed doctor while every line
    exited 64."""
    config = tmp_path / "lockrun.toml"
    config.write_text(text)
    code, checks = doctor_with_file(redis_server, config)
    status, detail = checks["config values"]
    assert status == "fail" and named.format(config=config) in detail, detail
    assert detail.endswith(": every lockrun line exits 64"), detail
    assert detail.startswith(wrapper_refusal(redis_server, config, key)), detail
    assert checks["scripts and permissions"][0] == "ok"  # the other checks still ran
    assert code == 1
    if "redis_timeout" in text:  # the wrapper names flags; doctor adds the lines to edit
        assert f"(in {config}: ttl on line 1, redis_timeout on line 2)" in detail


def test_doctor_judges_the_files_values_not_its_own_environment(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """A crontab line does not have doctor's LOCKRUN_* variables: they must neither fail
    a good file nor hide a bad one."""
    config = tmp_path / "lockrun.toml"
    config.write_text('ttl = "5m"\nredis_timeout = "2s"\n')
    _, checks = doctor_with_file(redis_server, config)
    assert checks["config values"] == ("ok", f"the wrapper accepts every value of {config}")
    _, checks = doctor_with_file(redis_server, config, LOCKRUN_TTL="abc")
    assert checks["config values"][0] == "ok", checks["config values"]
    config.write_text('ttl = "5s"\nredis_timeout = "2s"\n')
    _, checks = doctor_with_file(redis_server, config, LOCKRUN_TTL="10m")
    status, detail = checks["config values"]
    assert status == "fail" and "--ttl 5s is too short" in detail, detail


def test_tls_files_with_a_plain_url_in_the_file_are_a_failing_check_not_doctors_exit_64(
        redis_server: RedisServer, tmp_path: Path, key: str) -> None:
    """Every wrapper line refuses the file; doctor says so and still checks Redis."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked before a rediss:// connection\n")
    config = tmp_path / "lockrun.toml"
    config.write_text(f'redis_url = "{redis_server.tcp_url}"\nredis_ca = "{ca}"\n')
    url_from_file = {"LOCKRUN_REDIS_URL": ""}  # an empty variable counts as unset
    code, checks = doctor_with_file(redis_server, config, **url_from_file)
    status, detail = checks["config values"]
    assert status == "fail" and detail.startswith(
        wrapper_refusal(redis_server, config, key, **url_from_file)), detail
    assert "need a rediss:// URL" in detail and "redis_url on line 1, redis_ca on line 2" \
        in detail, detail
    assert checks["connection"][0] == "ok" and checks["scripts and permissions"][0] == "ok"
    assert code == 1
    # given to doctor itself, the same pair is doctor's own usage error, as before
    r = run_lockrun("doctor", url=redis_server.url,
                    env=lockrun_env(redis_server.tcp_url, LOCKRUN_REDIS_CA=str(ca)))
    assert r.returncode == 64 and "need a rediss:// URL" in r.stderr, r.stderr
