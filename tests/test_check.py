"""lockrun check: a Nagios-style verdict from the lock store, its textfile gauges, and the
Prometheus rules and Grafana dashboard built on them.

Each status comes from a scenario that should give it, made with real lockrun
processes standing for the servers of a fleet against a real Redis (one server, and
a Cluster for the core scenarios); schedules are judged at a faked wall clock so a
slot's grace never depends on when the suite runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    RedisServer,
    faketime_env,
    free_port,
    lockrun_env,
    run_lockrun,
    start_lockrun,
    wait_for,
)
from redis_topologies import Cluster

from lockrun.check import FLEET_METRICS, OUTCOMES
from lockrun.textfile import METRICS

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "prometheus" / "lockrun-rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "lockrun-rules.test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "lockrun-dashboard.json"
SERVERS = 3
HOURLY = ("--schedule", "0 * * * *", "--tz", "UTC")


@pytest.fixture(scope="module", params=["single", "cluster"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[str]:
    """The core scenarios hold on one Redis and on a Cluster (the check reads the job's
    slot and the fleet's pause flag, which lives in another one)."""
    workdir = tmp_path_factory.mktemp(request.param)
    topology = RedisServer(workdir) if request.param == "single" else Cluster(workdir)
    try:
        yield topology.url
    finally:
        topology.stop()


@dataclass
class Checked:
    code: int
    status: str
    summary: str
    perf: dict[str, list[str]]
    """label -> [value with unit, warn, crit, min, max] as the plugin printed them"""
    stdout: str
    stderr: str


LINE = re.compile(r"LOCKRUN (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]*?)(?: \| ([^|\n]*))?\n\Z")
# Nagios plugin guidelines: 'label'=value[UOM];[warn];[crit];[min];[max]
PERF = re.compile(r"(?P<label>[^=' ]+|'[^']+')=(?P<value>U|-?\d+(?:\.\d+)?)"
                  r"(?P<uom>s|ms|us|%|B|KB|MB|TB|c)?"
                  r"((?:;[-@~:\d.]*){0,4})\Z")


def check(url: str, key: str, *args: str, env: dict[str, str] | None = None) -> Checked:
    r = run_lockrun("check", key, *args, url=url, env=env)
    match = LINE.match(r.stdout)
    assert match, (r.returncode, r.stdout, r.stderr)
    perf: dict[str, list[str]] = {}
    for item in (match.group(3) or "").split():
        m = PERF.match(item)
        assert m, f"perfdata {item!r} breaks the plugin guidelines' syntax"
        fields = m.group(4).split(";")[1:]
        perf[m.group("label")] = [m.group("value") + (m.group("uom") or ""),
                                  *fields, *[""] * (4 - len(fields))]
    assert r.returncode == ("OK", "WARNING", "CRITICAL", "UNKNOWN").index(match.group(1)), r
    return Checked(r.returncode, match.group(1), match.group(2), perf, r.stdout, r.stderr)


def check_json(url: str, key: str, *args: str, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
    r = run_lockrun("check", key, *args, "--json", url=url, env=env)
    data = json.loads(r.stdout)
    assert isinstance(data, dict) and data["exit"] == r.returncode, (r.stdout, r.stderr)
    return data


def fleet_fire(url: str, key: str, fire: str, script: str, *extra: str,
               env: dict[str, str] | None = None) -> list[int]:
    """Every server starts the crontab line at once; the winner runs *script*."""
    procs = [start_lockrun("-k", key, *(("--fire", fire) if fire else ()), *extra, "--",
                           "sh", "-c", script, url=url, env=env) for _ in range(SERVERS)]
    for p in procs:
        p.communicate(timeout=60)
    return [p.returncode for p in procs]


def at(moment: str, url: str) -> dict[str, str]:
    """lockrun's environment with the wall clock started at *moment* (UTC)."""
    return faketime_env(url, f"@{moment}", TZ="UTC")


def seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


# --- one scenario per status ---------------------------------------------------------


def test_ok_after_a_success(url: str, key: str) -> None:
    assert sorted(fleet_fire(url, key, "f1", "exit 0")) == [0] * SERVERS
    c = check(url, key)
    assert c.status == "OK", c.stdout
    assert c.summary.startswith(f"{key}: fire f1 ran on ") and "(exit 0" in c.summary
    assert seconds(c.perf["last_success_age"][0]) < 60
    assert c.perf["consecutive_failures"][0] == "0" and c.perf["ran_nowhere"][0] == "0"
    assert c.perf["running_for"][0] == "0s" and c.perf["paused"][0] == "0"
    assert c.stderr == ""


def test_critical_after_a_failed_fire_and_ok_again_after_a_success(url: str, key: str) -> None:
    assert sorted(fleet_fire(url, key, "f1", "exit 0")) == [0] * SERVERS
    assert sorted(fleet_fire(url, key, "f2", "exit 3")) == [0, 0, 3]
    c = check(url, key)
    assert c.status == "CRITICAL", c.stdout
    assert "fire f2 failed on " in c.summary and "(exit 3)" in c.summary
    assert c.perf["consecutive_failures"][0] == "1"
    assert sorted(fleet_fire(url, key, "f3", "exit 4")) == [0, 0, 4]
    assert check(url, key).perf["consecutive_failures"][0] == "2"
    assert sorted(fleet_fire(url, key, "f4", "exit 0")) == [0] * SERVERS
    c = check(url, key)
    assert c.status == "OK" and c.perf["consecutive_failures"][0] == "0", c.stdout


def test_critical_when_the_last_scheduled_fire_ran_nowhere(url: str, key: str) -> None:
    """03:00 ran; 04:00-06:00 left no trace on any server: only the schedule can tell."""
    codes = fleet_fire(url, key, "", "exit 0", *HOURLY, "--max-skew", "0",
                       env=at("2026-11-22 03:00:05", url))
    assert sorted(codes) == [0] * SERVERS
    late = check(url, key, *HOURLY, env=at("2026-11-22 06:30:00", url))
    assert late.status == "CRITICAL", late.stdout
    assert "fire 2026-11-22T06:00:00Z ran nowhere (no server claimed it)" in late.summary
    assert late.perf["ran_nowhere"][0] == "3"  # 04:00, 05:00, 06:00
    blind = check(url, key, env=at("2026-11-22 06:30:00", url))
    assert blind.status == "OK", "without the schedule the missing fires cannot be seen"
    assert blind.perf["ran_nowhere"][0] == "0"


def test_fires_that_ran_nowhere_are_counted_over_the_last_day(redis_server: RedisServer,
                                                             key: str) -> None:
    url = redis_server.url
    fleet_fire(url, key, "", "exit 0", *HOURLY, "--max-skew", "0",
               env=at("2026-11-22 03:00:05", url))
    c = check(url, key, *HOURLY, env=at("2026-11-23 06:30:00", url))
    assert c.status == "CRITICAL" and "2026-11-23T06:00:00Z ran nowhere" in c.summary
    assert c.perf["ran_nowhere"][0] == "24", "07:00 yesterday to 06:00 today, not 04:00 on"


def test_a_fire_within_its_grace_is_pending_not_ran_nowhere(redis_server: RedisServer,
                                                            key: str) -> None:
    url = redis_server.url
    fleet_fire(url, key, "", "exit 0", *HOURLY, "--max-skew", "0",
               env=at("2026-11-22 03:00:05", url))
    just_after = at("2026-11-22 04:00:30", url)
    c = check(url, key, *HOURLY, env=just_after)
    assert c.status == "OK" and "fire 2026-11-22T03:00:00Z ran" in c.summary, c.stdout
    assert c.perf["ran_nowhere"][0] == "0"
    c = check(url, key, *HOURLY, "--grace", "10s", env=just_after)
    assert c.status == "CRITICAL" and "2026-11-22T04:00:00Z ran nowhere" in c.summary


def test_critical_when_every_server_came_too_late(redis_server: RedisServer, key: str) -> None:
    """A fire every server reached after its grace is in the history as skipped, yet it
    ran nowhere all the same."""
    url = redis_server.url
    fleet_fire(url, key, "", "exit 0", *HOURLY, "--max-skew", "0",
               env=at("2026-11-22 03:00:05", url))
    codes = fleet_fire(url, key, "", "exit 0", *HOURLY, "--max-skew", "0",
                       env=at("2026-11-22 04:05:00", url))
    assert codes == [0] * SERVERS
    c = check(url, key, *HOURLY, env=at("2026-11-22 04:30:00", url))
    assert c.status == "CRITICAL", c.stdout
    assert "fire 2026-11-22T04:00:00Z ran nowhere (every server that tried came after its " \
           "grace)" in c.summary
    assert c.perf["ran_nowhere"][0] == "1"
    without = check(url, key, env=at("2026-11-22 04:30:00", url))
    assert without.status == "CRITICAL", "the history alone shows this one"


def test_critical_after_a_crashed_run(redis_server: RedisServer, key: str,
                                      tmp_path: Path) -> None:
    url = redis_server.url
    started = tmp_path / "started"
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "1s", "--redis-timeout", "300ms",
                         "--", "sh", "-c", f"touch {started}; sleep 60", url=url,
                         start_new_session=True)
    try:
        wait_for(started.exists, 30, "the job to start")
        os.killpg(proc.pid, signal.SIGKILL)  # lockrun and its job die at once, unrecorded
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: check(url, key).status == "CRITICAL", 30, "the claim to expire")
    c = check(url, key)
    assert "fire f1 crashed on " in c.summary, c.stdout
    assert check_json(url, key)["last_outcome"] == "crashed"
    # a late server runs the fire again, fine: the crash is still the fire's story
    assert run_lockrun("-k", key, "--fire", "f1", "--", "true", url=url).returncode == 0
    rerun = check_json(url, key)
    assert rerun["status"] == "CRITICAL" and rerun["last_outcome"] == "crashed", rerun
    assert rerun["last_success_ms"] is not None  # the rerun did succeed


def test_critical_after_a_timeout_and_after_a_lost_lease(redis_server: RedisServer, key: str,
                                                         tmp_path: Path) -> None:
    url = redis_server.url
    assert sorted(fleet_fire(url, key, "f1", "sleep 30", "--timeout", "0.3s")) == [0, 0, 124]
    c = check(url, key)
    assert c.status == "CRITICAL" and "fire f1 timeout on " in c.summary, c.stdout
    assert "exit 124" in c.summary
    started, release = tmp_path / "started", tmp_path / "release"
    proc = start_lockrun("-k", key, "--fire", "f2", "--ttl", "3s", "--redis-timeout", "500ms",
                         "--", "sh", "-c",
                         f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                         url=url)
    wait_for(started.exists, 30, "f2 to start")
    assert check(url, key).status == "OK"  # running, no --max-runtime: nothing wrong yet
    r = run_lockrun("unlock", key, "--fire", "f2", "--yes", url=url)  # the claim vanishes
    assert r.returncode == 0, r.stderr
    wait_for(lambda: check(url, key).status == "CRITICAL", 30, "the renewal to see the loss")
    release.touch()
    proc.communicate(timeout=30)
    c = check(url, key)
    assert c.status == "CRITICAL" and "fire f2 lost on " in c.summary, c.stdout
    assert check_json(url, key)["last_outcome"] == "lost"


def test_critical_when_the_last_success_is_older_than_max_age(redis_server: RedisServer,
                                                              key: str) -> None:
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 0")
    c = check(url, key, "--max-age", "1h")
    assert c.status == "OK" and c.perf["last_success_age"][2] == "3600", c.stdout
    wait_for(lambda: check(url, key, "--max-age", "1s").status == "CRITICAL", 30,
             "the success to age past --max-age")
    c = check(url, key, "--max-age", "1s")
    assert "last success " in c.summary and "more than --max-age 1s" in c.summary
    assert seconds(c.perf["last_success_age"][0]) > 1 and c.perf["last_success_age"][2] == "1"


def test_no_success_at_all_is_critical_only_once_the_history_is_older_than_max_age(
        redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    assert run_lockrun("pause", key, url=url).returncode == 0
    fleet_fire(url, key, "f1", "exit 0")  # skipped: paused
    c = check(url, key, "--max-age", "1h")
    assert c.status == "WARNING" and c.perf["last_success_age"][0] == "U", c.stdout
    wait_for(lambda: check(url, key, "--max-age", "1s").status == "CRITICAL", 30,
             "the history to age past --max-age")
    assert "no success in the history" in check(url, key, "--max-age", "1s").summary


def test_warning_when_a_run_exceeds_max_runtime(redis_server: RedisServer, key: str,
                                                tmp_path: Path) -> None:
    url = redis_server.url
    started, release = tmp_path / "started", tmp_path / "release"
    procs = [start_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c",
                           f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                           url=url) for _ in range(SERVERS)]
    try:
        wait_for(started.exists, 30, "the job to start")
        c = check(url, key, "--max-runtime", "1h")
        assert c.status == "OK" and "fire f1 running on " in c.summary, c.stdout
        assert c.perf["running_for"][1] == "3600"
        wait_for(lambda: check(url, key, "--max-runtime", "1s").status == "WARNING", 30,
                 "the run to pass --max-runtime")
        c = check(url, key, "--max-runtime", "1s")
        assert "fire f1 running on " in c.summary and "more than --max-runtime 1s" in c.summary
        assert seconds(c.perf["running_for"][0]) > 1 and c.perf["running_for"][1] == "1"
    finally:
        release.touch()
        for p in procs:
            p.communicate(timeout=30)
    c = check(url, key, "--max-runtime", "1s")
    assert c.status == "OK" and c.perf["running_for"][0] == "0s", c.stdout


def test_warning_while_paused_says_who_why_and_until(url: str, key: str) -> None:
    fleet_fire(url, key, "f1", "exit 0")
    assert run_lockrun("pause", key, "--reason", "db upgrade | step 2", url=url).returncode == 0
    c = check(url, key)
    assert c.status == "WARNING", c.stdout
    assert re.search(r"paused by \S+@\S+ until resumed: db upgrade / step 2", c.summary), \
        c.summary  # the '|' would start the perfdata
    assert c.perf["paused"][0] == "1"
    facts = check_json(url, key)
    assert facts["paused"]["reason"] == "db upgrade | step 2" and facts["paused"]["scope"] == "job"
    assert run_lockrun("resume", key, url=url).returncode == 0
    assert check(url, key).status == "OK"
    assert run_lockrun("pause", key, "--for", "1h", url=url).returncode == 0
    assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", check(url, key).summary)
    assert run_lockrun("resume", key, url=url).returncode == 0


def test_warning_while_every_job_is_paused(url: str, key: str) -> None:
    fleet_fire(url, key, "f1", "exit 0")
    assert run_lockrun("pause", "--all", "--reason", "freeze", url=url).returncode == 0
    try:
        c = check(url, key)
        assert c.status == "WARNING" and "(pause --all: every job): freeze" in c.summary, c.stdout
    finally:
        assert run_lockrun("resume", "--all", url=url).returncode == 0
    assert check(url, key).status == "OK"


def test_critical_beats_warning_and_the_line_names_both(redis_server: RedisServer,
                                                        key: str) -> None:
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 9")
    assert run_lockrun("pause", key, "--reason", "broken", url=url).returncode == 0
    c = check(url, key)
    assert c.status == "CRITICAL", c.stdout
    assert "fire f1 failed" in c.summary and "paused by " in c.summary


def test_unknown_for_a_key_without_record(url: str, key: str) -> None:
    fleet_fire(url, key, "f1", "exit 0")
    c = check(url, key + "x")
    assert c.status == "UNKNOWN" and f"no record of job '{key}x'" in c.summary, c.stdout
    assert c.perf == {}, "no facts, no perfdata"
    other = run_lockrun("check", key, url=url,
                        env=lockrun_env(url, LOCKRUN_KEY_PREFIX="elsewhere"))
    assert other.returncode == 3 and "--key-prefix 'elsewhere'" in other.stdout


def test_unknown_when_redis_is_unreachable(key: str, tmp_path: Path) -> None:
    refused = f"redis://127.0.0.1:{free_port()}/0"
    c = check(refused, key, "--textfile", str(tmp_path))
    assert c.status == "UNKNOWN" and c.summary.startswith("cannot use Redis at "), c.stdout
    assert c.stderr == ""
    data = check_json(refused, key)
    assert data["status"] == "UNKNOWN" and data["exit"] == 3 and "last_fire" not in data
    text = (tmp_path / f"lockrun_fleet_{key}.prom").read_text()
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [f'lockrun_fleet_check_status{{key="{key}"}} 3'], text


@pytest.mark.parametrize("args", [
    ("bad key",), ("K", "--max-age", "0"), ("K", "--max-age", "soon"),
    ("K", "--max-runtime", "-1s"), ("K", "--grace", "1y"), ("K", "--schedule", "61 * * * *"),
    ("K", "--schedule", "@often"), ("K", "--schedule", "@daily", "--tz", "Mars/Olympus"),
    ("K", "--textfile", "/nonexistent/dir"), ("K", "--json", "--bogus"), (),
], ids=lambda a: " ".join(a) or "no key")
def test_bad_input_is_exit_64_before_redis_is_contacted(args: tuple[str, ...]) -> None:
    refused = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: UNKNOWN if contacted
    r = run_lockrun("check", *args, url=refused)
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.startswith("lockrun: ") and r.stderr.count("\n") == 1


# --- what the check prints ----------------------------------------------------------


def test_the_line_and_perfdata_follow_the_plugin_guidelines(redis_server: RedisServer,
                                                            key: str) -> None:
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 0")
    c = check(url, key, "--max-age", "2h", "--max-runtime", "90m")
    assert c.stdout.count("\n") == 1 and c.stdout.count(" | ") == 1
    assert list(c.perf) == ["last_success_age", "consecutive_failures", "running_for",
                            "ran_nowhere", "paused"]
    age = c.perf["last_success_age"]
    assert age[0].endswith("s") and age[1:] == ["", "7200", "0", ""]  # crit = --max-age
    assert c.perf["running_for"][1:] == ["5400", "", "0", ""]  # warn = --max-runtime
    assert c.perf["consecutive_failures"] == ["0", "", "", "0", ""]
    assert c.perf["paused"] == ["0", "", "", "0", "1"]


def test_json_carries_the_same_facts(redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 0")
    fleet_fire(url, key, "f2", "exit 5")
    c = check(url, key, "--max-age", "1h")
    data = check_json(url, key, "--max-age", "1h")
    assert data["status"] == c.status == "CRITICAL" and data["exit"] == 2
    assert data["summary"].split("; last success ")[0] == c.summary.split("; last success ")[0]
    assert data["problems"] == [data["summary"].split(": ", 1)[1].split("; last success")[0]]
    assert data["last_fire"]["fire"] == "f2" and data["last_fire"]["exit"] == 5
    assert data["last_outcome"] == "failed" and data["consecutive_failures"] == 1
    assert data["last_success_ms"] <= data["last_fire"]["start_ms"]
    assert 0 <= data["last_success_age_s"] < 60 and data["max_age_s"] == 3600
    assert data["ran_nowhere_fires"] == 0 and data["running"] == [] and data["paused"] is None
    assert data["running_for_s"] == 0 and data["schedule"] is None
    assert data["perfdata"].split()[1] == "consecutive_failures=1;;;0"


# --- the textfile -------------------------------------------------------------------


def parse_textfile(text: str) -> dict[str, dict[str, float]]:
    """Line by line: HELP and TYPE (gauge) before each metric's samples, every sample
    labelled with the key; returns name -> {labels: value}."""
    metrics: dict[str, dict[str, float]] = {}
    lines = text.splitlines()
    assert text.endswith("\n") and lines
    i = 0
    while i < len(lines):
        help_ = re.fullmatch(r"# HELP (lockrun_fleet_\w+) \S.*", lines[i])
        assert help_, lines[i]
        name = help_.group(1)
        assert lines[i + 1] == f"# TYPE {name} gauge", lines[i + 1]
        assert name not in metrics, f"{name} twice"
        metrics[name] = {}
        i += 2
        while i < len(lines) and not lines[i].startswith("#"):
            sample = re.fullmatch(rf'{name}\{{(key="[^"]+"(?:,outcome="[a-z-]+")?)\}} '
                                  r"(-?\d+(?:\.\d+)?)", lines[i])
            assert sample, lines[i]
            metrics[name][sample.group(1)] = float(sample.group(2))
            i += 1
        assert metrics[name], f"{name} without samples"
    return metrics


def test_the_textfile_has_every_fleet_gauge(redis_server: RedisServer, key: str,
                                            tmp_path: Path) -> None:
    url = redis_server.url
    fleet_fire(url, key, "2026-11-22T03:00:00Z", "exit 0")
    fleet_fire(url, key, "2026-11-22T04:00:00Z", "exit 2")
    assert run_lockrun("pause", key, url=url).returncode == 0
    c = check(url, key, *HOURLY, "--textfile", str(tmp_path),
              env=at("2026-11-22 06:30:00", url))
    assert c.status == "CRITICAL"
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"lockrun_fleet_{key}.prom"], files  # no temporary file left behind
    data = check_json(url, key, *HOURLY, env=at("2026-11-22 06:30:00", url))
    m = parse_textfile((tmp_path / files[0]).read_text())
    k = f'key="{key}"'
    assert list(m) == [name for name, _ in FLEET_METRICS]
    assert m["lockrun_fleet_last_success_timestamp_seconds"] == {
        k: data["last_success_ms"] / 1000}
    assert m["lockrun_fleet_last_outcome"] == {
        f'{k},outcome="{o}"': float(o == "ran-nowhere") for o in OUTCOMES}
    assert m["lockrun_fleet_consecutive_failures"] == {k: 1}
    assert m["lockrun_fleet_ran_nowhere_fires"] == {k: 2}  # 05:00 and 06:00
    assert m["lockrun_fleet_running_seconds"] == {k: 0}
    assert m["lockrun_fleet_paused"] == {k: 1}
    assert m["lockrun_fleet_check_status"] == {k: 2}


def test_the_textfile_is_parsed_by_prometheus_client(redis_server: RedisServer, key: str,
                                                     tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 0")
    check(url, key, "--textfile", str(tmp_path))
    families = {f.name: f for f in text_string_to_metric_families(
        (tmp_path / f"lockrun_fleet_{key}.prom").read_text())}
    assert set(families) == {name for name, _ in FLEET_METRICS}
    assert all(f.type == "gauge" for f in families.values())
    outcome = {s.labels["outcome"]: s.value
               for s in families["lockrun_fleet_last_outcome"].samples}
    assert outcome["success"] == 1 and sum(outcome.values()) == 1


def test_a_job_that_never_succeeded_has_no_success_timestamp(redis_server: RedisServer,
                                                             key: str, tmp_path: Path) -> None:
    """An absent gauge, not a 0 that reads as "succeeded in 1970"."""
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 1")
    check(url, key, "--textfile", str(tmp_path))
    m = parse_textfile((tmp_path / f"lockrun_fleet_{key}.prom").read_text())
    assert "lockrun_fleet_last_success_timestamp_seconds" not in m
    assert m["lockrun_fleet_check_status"] == {f'key="{key}"': 2}


def test_the_textfile_replaces_a_planted_symlink_instead_of_writing_through_it(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 0")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    (textdir / f"lockrun_fleet_{key}.prom").symlink_to(victim)
    check(url, key, "--textfile", str(textdir))
    assert victim.read_text() == "precious\n"
    final = textdir / f"lockrun_fleet_{key}.prom"
    assert not final.is_symlink() and "lockrun_fleet_check_status" in final.read_text()


def test_an_unusable_textfile_directory_is_said_and_the_status_kept(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    url = redis_server.url
    fleet_fire(url, key, "f1", "exit 0")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # others could swap names in it
    c = check(url, key, "--textfile", str(shared))
    assert c.status == "OK" and "without the sticky bit" in c.stderr, c.stderr
    assert list(shared.iterdir()) == []


# --- Prometheus rules and Grafana dashboard -----------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run tests/run.sh (Debian's prometheus package)")
    return path


def test_promtool_checks_the_rules() -> None:
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_the_rules_fire_on_their_series_and_stay_silent_otherwise() -> None:
    r = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True,
                       text=True, timeout=120, cwd=RULE_TESTS.parent)
    assert r.returncode == 0, r.stdout + r.stderr


LOCKRUN_METRICS = {name for name, _ in FLEET_METRICS} | {name for name, _, _ in METRICS}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "time", "max", "min", "sum", "count", "avg",
                "increase", "rate", "label_values", "humanizeDuration"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values query) reads."""
    names = set()
    for alternatives in re.findall(r'__name__=~"([^"]+)"', expr):
        names |= set(alternatives.split("|"))
    text = re.sub(r"label_values\(([^,]*),\s*\w+\)", r"\1", expr)  # (series, label)
    text = re.sub(r'"[^"]*"', "", text)  # label values, regexes
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # label matchers, ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    for word in re.findall(r"[A-Za-z_:][\w:]*", text):
        if word not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", word):
            names.add(word)
    return names


def dashboard_queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, str) and "(" in v:
                yield v
            else:
                yield from dashboard_queries(v)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def test_the_dashboard_reads_only_metrics_lockrun_writes() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36 and dash["title"] and dash["uid"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["key"]["type"] == "query" and "key)" in variables["key"]["definition"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all('key=~"$key"' in e for e in exprs), "every panel follows the key variable"
    used: set[str] = set()
    for query in dashboard_queries(dash):
        used |= metric_names(query)
    assert used - LOCKRUN_METRICS == set(), "metrics lockrun does not write"
    assert LOCKRUN_METRICS - used == set(), "metrics lockrun writes and the dashboard lacks"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_the_rules_read_only_metrics_lockrun_writes() -> None:
    text = RULES.read_text()
    exprs = re.findall(r"expr: >-\n((?:\s{10}.*\n)+)|expr: (.+)\n", text)
    queries = [a or b for a, b in exprs]
    assert len(queries) == len(re.findall(r"^\s+- alert: ", text, re.M)) >= 10
    used: set[str] = set()
    for query in queries:
        used |= metric_names(query)
    assert used - LOCKRUN_METRICS == {"node_textfile_mtime_seconds"}
    assert {name for name, _ in FLEET_METRICS} - used == set(), "a fleet gauge no rule uses"


def test_the_metric_name_reader_finds_names_and_skips_the_rest() -> None:
    """The drift tests above are only as good as this reader."""
    assert metric_names('time() - max by (key) (a_b{key=~"$key",x="y z"}) > 26 * 3600') \
        == {"a_b"}
    assert metric_names("increase(c_total{key=~\"$key\"}[15m]) and on (key) group_left () "
                        "max by (key) (d)") == {"c_total", "d"}
    assert metric_names('label_values({__name__=~"e|f"}, key)') == {"e", "f"}
