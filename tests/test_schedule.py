"""--schedule: fire ids from the cron slot, DST, grace, catch-up, clock checks."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import RedisServer, faketime_env, history, run_lockrun, start_lockrun, wait_for

from lockrun.errors import UsageError
from lockrun.schedule import current_slot, fire_id, normalise, validate

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def ids_over(expr: str, zone: ZoneInfo, start: str, hours: int, step_s: int = 60) -> list[str]:
    """The distinct fire ids that ticks every *step_s* seconds would compute, in order."""
    seen: list[str] = []
    t = at(start)
    for _ in range(hours * 3600 // step_s):
        fid = current_slot(expr, zone, t).fire_id
        if not seen or seen[-1] != fid:
            seen.append(fid)
        t += step_s
    return seen


# --- pure functions ---------------------------------------------------------------

@pytest.mark.parametrize(("macro", "expr"), [
    ("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), (" 0  3 * * * ", "0 3 * * *")])
def test_macros_expand(macro: str, expr: str) -> None:
    assert normalise(macro) == expr


@pytest.mark.parametrize("expr", ["", "0 3 * *", "0 0 3 * * *", "@reboot", "61 * * * *",
                                  "0 3 30 2 *", "x y z w v"])
def test_bad_schedules_are_usage_errors(expr: str) -> None:
    with pytest.raises(UsageError):
        validate(expr, UTC, at("2026-11-22T03:00:00"))


def test_a_tick_exactly_at_the_fire_belongs_to_it() -> None:
    assert current_slot("0 3 * * *", UTC, at("2026-11-22T03:00:00")).fire_id == \
        "2026-11-22T03:00:00Z"
    assert current_slot("0 3 * * *", UTC, at("2026-11-22T02:59:59")).fire_id == \
        "2026-11-21T03:00:00Z"


def test_late_starts_keep_the_scheduled_fire_id() -> None:
    """The minute-floor id would change at 03:01; the scheduled one does not."""
    fire = at("2026-11-22T03:00:00")
    ids = {current_slot("0 3 * * *", UTC, fire + delay).fire_id for delay in range(0, 3600, 7)}
    assert ids == {"2026-11-22T03:00:00Z"}
    slot = current_slot("0 3 * * *", UTC, fire + 50)
    assert slot.next - slot.fire == 86400


def test_fire_id_is_utc_whatever_the_zone() -> None:
    slot = current_slot("0 3 * * *", NEW_YORK, at("2026-11-22T08:00:30"))
    assert slot.fire_id == "2026-11-22T08:00:00Z"
    assert fire_id(slot.fire) == slot.fire_id


@pytest.mark.parametrize(("zone", "day"), [(BERLIN, "2026-03-29"), (NEW_YORK, "2026-03-08")])
def test_spring_forward_runs_the_skipped_fixed_time_job_once(zone: ZoneInfo, day: str) -> None:
    """02:30 does not exist that day: like Debian cron, the job fires at 03:00 local, once."""
    ids = ids_over("30 2 * * *", zone, f"{day}T00:00:00", 48)
    assert len(ids) == 3  # the previous day's, the transition day's, the next day's
    fired = datetime.fromisoformat(ids[1].replace("Z", "+00:00")).astimezone(zone)
    assert fired.strftime("%Y-%m-%d %H:%M") == f"{day} 03:00"


@pytest.mark.parametrize(("zone", "day"), [(BERLIN, "2026-10-25"), (NEW_YORK, "2026-11-01")])
def test_fall_back_runs_a_fixed_time_job_once(zone: ZoneInfo, day: str) -> None:
    ids = ids_over("30 1 * * *" if zone is NEW_YORK else "30 2 * * *", zone, f"{day}T00:00:00",
                   48)
    assert len(ids) == 3
    assert len({i[:10] for i in ids}) == 3  # one per day


def test_repeated_hour_does_not_regress_to_yesterdays_fire() -> None:
    """02:10 CET (second pass) comes after today's 02:30 CEST: that is the fire, not yesterday's."""
    slot = current_slot("30 2 * * *", BERLIN, at("2026-10-25T01:10:00"))
    assert slot.fire_id == "2026-10-25T00:30:00Z"
    assert fire_id(slot.next) == "2026-10-26T01:30:00Z"


@pytest.mark.parametrize(("zone", "day", "hour"), [(BERLIN, "2026-10-25", "02"),
                                                   (NEW_YORK, "2026-11-01", "01")])
def test_fall_back_runs_wildcard_jobs_in_both_passes(zone: ZoneInfo, day: str, hour: str) -> None:
    ids = ids_over("*/15 * * * *", zone, f"{day}T00:00:00", 8)
    local = [datetime.fromisoformat(i.replace("Z", "+00:00")).astimezone(zone) for i in ids]
    in_repeated_hour = [t for t in local if t.strftime("%H") == hour]
    assert len(in_repeated_hour) == 8  # :00 :15 :30 :45, twice
    assert len({t.timestamp() for t in in_repeated_hour}) == 8


@pytest.mark.parametrize(("zone", "transition"), [(BERLIN, "2026-03-29T01:00:00"),
                                                  (BERLIN, "2026-10-25T00:30:00"),
                                                  (NEW_YORK, "2026-03-08T07:00:00"),
                                                  (NEW_YORK, "2026-11-01T05:30:00")])
def test_every_server_computes_the_same_fire_across_dst(zone: ZoneInfo, transition: str) -> None:
    """Twenty servers, clocks within ±30s, start delays up to 50s: one fire id."""
    expr = "30 2 * * *" if zone is BERLIN else "30 1 * * *"
    fire = current_slot(expr, zone, at(transition) + 5).fire
    ids = set()
    for server in range(20):
        skew = (server * 37 % 61) - 30
        delay = server * 53 % 51
        # cron starts lockrun when the server's own clock reads the fire time
        ids.add(current_slot(expr, zone, fire + delay).fire_id)
        assert abs(skew) <= 30
    assert len(ids) == 1


# --- the command, with its clock faked -----------------------------------------------

def test_a_fire_that_ran_nowhere_is_said_once_fleet_wide(redis_server: RedisServer,
                                                         key: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = faketime_env(redis_server.url, "@2026-11-22 03:01:30")
    args = ("-k", key, "--schedule", "0 3 * * *", "--tz", "UTC", "--max-skew", "0", "-E", "3",
            "--", "touch", str(marker))
    r = run_lockrun(*args, url=redis_server.url, env=env)
    assert r.returncode == 3  # still the skip status: this server did nothing wrong
    assert r.stderr.startswith(f"lockrun: fire 2026-11-22T03:00:00Z of {key} ran nowhere: ")
    assert len(r.stderr.splitlines()) == 1
    later = run_lockrun(*args, url=redis_server.url,
                        env=faketime_env(redis_server.url, "@2026-11-22 03:02:10"))
    assert (later.returncode, later.stderr) == (3, ""), "said once, not by every server"
    assert not marker.exists()
    events = history(redis_server, key)
    assert [(e["event"], e["reason"], e["fire"]) for e in events] == [
        ("skip", "too-late", "2026-11-22T03:00:00Z")]
    assert 89_000 <= int(events[0]["late_ms"]) < 120_000


def test_catch_up_runs_once_on_the_first_tick_within_the_grace(redis_server: RedisServer,
                                                               key: str,
                                                               tmp_path: Path) -> None:
    """Crontab ticks every 5 minutes; the daily backup runs once, late, after an outage."""
    log = tmp_path / "runs"
    for tick in ("05:10:02", "05:15:01", "05:20:03", "09:05:00"):
        env = faketime_env(redis_server.url, f"@2026-11-22 {tick}")
        r = run_lockrun("-k", key, "--schedule", "0 3 * * *", "--tz", "UTC", "--grace", "6h",
                        "--max-skew", "0", "--", "sh", "-c", f'echo "$LOCKRUN_FIRE" >> {log}',
                        url=redis_server.url, env=env)
        assert (r.returncode, r.stderr) == (0, "")
    assert log.read_text() == "2026-11-22T03:00:00Z\n"


def test_done_record_outlives_the_slot(redis_server: RedisServer, key: str) -> None:
    env = faketime_env(redis_server.url, "@2026-11-22 03:00:10")
    run_lockrun("-k", key, "--schedule", "0 3 * * *", "--tz", "UTC", "--retention", "2m",
                "--max-skew", "0", "--", "true", url=redis_server.url, env=env)
    ttl = redis_server.client().pttl(f"lockrun:{{{key}}}:fire:2026-11-22T03:00:00Z")
    assert 86_000_000 < ttl <= 86_400_000 + 300_000


def test_a_crashed_winner_is_retried_by_the_next_tick(redis_server: RedisServer, key: str,
                                                      tmp_path: Path) -> None:
    started, log = tmp_path / "started", tmp_path / "runs"
    args = ("-k", key, "--schedule", "*/30 * * * *", "--tz", "UTC", "--grace", "20m", "--ttl",
            "1s", "--redis-timeout", "300ms", "--max-skew", "0", "--", "sh", "-c")
    crashed = start_lockrun(*args, f"echo crashed >> {log}; touch {started}; sleep 300",
                            url=redis_server.url,
                            env=faketime_env(redis_server.url, "@2026-11-22 03:00:05"))
    wait_for(started.exists, 30, "the first winner to start")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(30)
    fire_key = f"lockrun:{{{key}}}:fire:2026-11-22T03:00:00Z"
    wait_for(lambda: not redis_server.client().exists(fire_key), 10, "the lease to expire")
    r = run_lockrun(*args, f"echo retried >> {log}", url=redis_server.url,
                    env=faketime_env(redis_server.url, "@2026-11-22 03:05:00"))
    assert r.returncode == 0
    assert log.read_text() == "crashed\nretried\n"
    assert [e["event"] for e in history(redis_server, key)] == ["start", "start", "end"]


@pytest.mark.parametrize(("zone", "local_start"), [("Europe/Berlin", "2026-03-29 01:00:00"),
                                                   ("America/New_York", "2026-03-08 07:00:00")])
def test_a_fleet_across_spring_forward_runs_the_job_once(redis_server: RedisServer, key: str,
                                                         tmp_path: Path, zone: str,
                                                         local_start: str) -> None:
    """Real processes with faked clocks (UTC given): 10 servers, delays up to 50s."""
    log = tmp_path / "runs"
    procs = [start_lockrun("-k", key, "--schedule", "30 2 * * *", "--tz", zone, "--max-skew",
                           "0", "--", "sh", "-c", f'echo "$LOCKRUN_FIRE" >> {log}',
                           url=redis_server.url,
                           env=faketime_env(redis_server.url, f"@{_plus(local_start, d)}"))
             for d in (0, 3, 9, 14, 22, 27, 31, 38, 44, 50)]
    assert [p.wait(60) for p in procs] == [0] * 10
    for p in procs:
        assert p.stderr is not None and p.stderr.read() == ""
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0] == local_start.replace(" ", "T") + "Z"


def _plus(text: str, seconds: int) -> str:
    return (datetime.fromisoformat(text) + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def test_a_skewed_clock_is_reported_and_recorded(redis_server: RedisServer, key: str) -> None:
    env = faketime_env(redis_server.url, "+10s")
    r = run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url, env=env)
    assert r.returncode == 0
    assert "clock is" in r.stderr and "ahead of" in r.stderr and "NTP" in r.stderr
    assert 9_000 < int(history(redis_server, key)[0]["skew_ms"]) < 11_000
    quiet = run_lockrun("-q", "-k", key, "--fire", "f2", "--", "true", url=redis_server.url,
                        env=env)
    assert quiet.stderr == ""
    within = run_lockrun("-k", key, "--fire", "f3", "--max-skew", "30s", "--", "true",
                         url=redis_server.url, env=env)
    assert within.stderr == ""


def test_an_accurate_clock_gives_no_warning(redis_server: RedisServer, key: str) -> None:
    r = run_lockrun("-k", key, "--fire", "f1", "--max-skew", "2s", "--", "true",
                    url=redis_server.url)
    assert r.stderr == ""
    assert abs(int(history(redis_server, key)[0]["skew_ms"])) < 2000


def test_a_slow_reply_is_not_mistaken_for_a_skewed_clock(own_redis: RedisServer,
                                                         key: str) -> None:
    """Redis answers ~1.5s late: the midpoint estimate is off by up to 0.75s, which is
    the reply's fault, not the clock's. The clock itself is accurate."""
    own_redis.pause()
    proc = start_lockrun("-k", key, "--fire", "f1", "--max-skew", "0.3s", "--", "true",
                         url=own_redis.url)
    try:
        time.sleep(1.8)  # the fault's length, not a synchronisation: Redis stays stopped
    finally:
        own_redis.resume()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "clock is" not in err
    assert history(own_redis, key)[0]["event"] == "start"


def test_schedule_and_fire_together_are_a_usage_error(redis_server: RedisServer) -> None:
    r = run_lockrun("-k", "x", "--schedule", "@daily", "--fire", "f", "--", "true",
                    url=redis_server.url)
    assert r.returncode == 64 and "--fire and --schedule" in r.stderr


def test_time_zone_comes_from_cron_tz(redis_server: RedisServer, key: str) -> None:
    env = faketime_env(redis_server.url, "@2026-11-22 08:00:20", CRON_TZ="America/New_York")
    r = run_lockrun("-k", key, "--schedule", "0 3 * * *", "--max-skew", "0", "--", "sh", "-c",
                    'echo "$LOCKRUN_FIRE"', url=redis_server.url, env=env)
    assert r.stdout == "2026-11-22T08:00:00Z\n"
    env["CRON_TZ"] = "Nowhere/Special"
    bad = run_lockrun("-k", key, "--schedule", "0 3 * * *", "--", "true", url=redis_server.url,
                      env=env)
    assert bad.returncode == 64 and "CRON_TZ" in bad.stderr


@pytest.mark.parametrize(("tick", "fire"), [
    ("2026-11-22 03:00:20", "2026-11-22T03:00:00Z"),  # Debian's cron: the system zone (UTC)
    ("2026-11-22 08:00:20", "2026-11-22T08:00:00Z"),  # cronie: CRON_TZ's 03:00
])
def test_without_tz_the_zone_that_explains_the_tick_is_used(redis_server: RedisServer, key: str,
                                                            tick: str, fire: str) -> None:
    """Debian's cron ignores CRON_TZ, cronie honours it: the same crontab runs under both.

    Before, CRON_TZ alone decided, and every tick of Debian's cron was "too late".
    """
    env = faketime_env(redis_server.url, f"@{tick}", CRON_TZ="America/New_York", TZ="UTC")
    r = run_lockrun("-k", key, "--schedule", "0 3 * * *", "--max-skew", "0", "--", "sh", "-c",
                    'echo "$LOCKRUN_FIRE"', url=redis_server.url, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{fire}\n", "")


def test_an_explicit_tz_is_not_second_guessed(redis_server: RedisServer, key: str) -> None:
    env = faketime_env(redis_server.url, "@2026-11-22 03:00:20", TZ="UTC")
    r = run_lockrun("-k", key, "--schedule", "0 3 * * *", "--tz", "America/New_York",
                    "--max-skew", "0", "--", "echo", "ran", url=redis_server.url, env=env)
    assert r.stdout == "" and "ran nowhere" in r.stderr
