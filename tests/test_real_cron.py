"""README's crontab block under Debian's real cron daemon, on simulated fleets.

Why: the rest of the suite starts lockrun itself; only cron shows what an
operator gets from README's block: cron's PATH, its ``%`` handling, its switch
to the crontab's owner, the exit statuses it logs, and above all its mail. Each
simulated server is a real ``cron -f`` in its own namespaces (tests/cronlab.py);
every placement of the block gets its own fleet and Redis, and one more fleet
lives through a Redis outage. One scenario, about three minutes of real minute
boundaries, feeds all the tests below.

    .venv/bin/python -m pytest tests/test_real_cron.py -s   # -s prints the mail counts
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cronlab
import pytest
from cronlab import CronJob, JobLine, LogRecord, Mail, ProbeRun, fire_id
from redis_topologies import RedisServer, free_port, wait_until

pytestmark = pytest.mark.timeout(480)  # the scenario alone waits for three minute boundaries

READY_MARGIN_S = 3.0
"""A boundary closer than this to the moment every cron is up is not counted on."""
JOBS_DEADLINE_S = 50.0
"""A minute's jobs end within seconds; past this the next minute would mix in."""
OUTAGE = "not running"
RECOVERY = "usable again"


@dataclass(frozen=True)
class Case:
    """One placement of README's block: whose crontab, and what /etc/lockrun.toml says."""

    name: str
    servers: int = 2
    user: str = "root"
    cron_d: bool = False
    header: tuple[str, ...] = ()
    readme_config: bool = False
    system_hours: bool = False
    """--schedule lines without --tz match only in this and the next hour of the system
    zone: a lockrun that took CRON_TZ's zone (as it did) would find every tick too late."""


CASES = (
    Case("rootcron"),  # /var/spool/cron/crontabs/root
    Case("usercron", user="nobody"),  # an ordinary user: HOME=/nonexistent
    Case("crond", cron_d=True),  # /etc/cron.d/lockrun-readme, user field root
    # Debian's cron ignores CRON_TZ and schedules in the system zone, yet hands it to the job
    Case("crontz", header=("CRON_TZ=Asia/Tokyo",), system_hours=True),
    Case("readmetoml", readme_config=True),  # README's /etc/lockrun.toml, Redis address ours
)
OUTAGE_CASE = Case("outage", servers=3)
"""Its Redis is down for the whole second boundary."""
ALL = (*CASES, OUTAGE_CASE)


@dataclass
class Scenario:
    boundaries: list[float]
    """The three minute boundaries every server ran; the outage fleet's Redis was down
    for the second."""
    jobs: list[JobLine]
    hosts: dict[str, list[str]]
    runs: list[ProbeRun]
    mails: list[Mail]
    cron: list[CronJob]
    syslog: list[LogRecord]
    arguments: dict[tuple[str, str], tuple[str, ...]]
    notes: list[str]

    @property
    def fires(self) -> list[str]:
        return [fire_id(b) for b in self.boundaries]

    def runs_of(self, case: Case) -> list[ProbeRun]:
        return [r for r in self.runs if r.host in self.hosts[case.name]]

    def mails_of(self, host: str) -> list[Mail]:
        return [m for m in self.mails if m.host == host]


def _system_hours() -> str:
    """A schedule for every minute of this hour and the next in the system zone (cron's)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    with open("/etc/localtime", "rb") as f:
        hour = datetime.now(ZoneInfo.from_file(f)).hour
    return f"* {hour},{(hour + 1) % 24} * * *"


def readme_config(readme: str, redis_port: int) -> tuple[str, list[str]]:
    """README's /etc/lockrun.toml with its Redis address pointed at the test's Redis.

    Only the host and port of ``redis_url`` change: the user name, the db and
    ``redis_password`` stay as README wrote them, and the test's Redis gets
    that user with that password. Returns the file and the redis-server options.
    """
    text = cronlab.readme_config_block(readme)
    url = re.search(r'^redis_url\s*=\s*"([^"]*)"', text, re.M)
    assert url, "README's /etc/lockrun.toml has no redis_url line"
    parts = urlsplit(url.group(1))
    assert parts.scheme == "redis", f"the lab has a plain Redis, README uses {parts.scheme}://"
    ours = parts._replace(netloc=f"{parts.username + '@' if parts.username else ''}"
                                 f"127.0.0.1:{redis_port}").geturl()
    text = text[:url.start(1)] + ours + text[url.end(1):]
    password = re.search(r'^redis_password\s*=\s*"([^"]*)"', text, re.M)
    if parts.username:
        secret = f">{password.group(1)}" if password else "nopass"
        return text, ["--user", parts.username, "on", secret, "~*", "&*", "+@all"]
    return text, ["--requirepass", password.group(1)] if password else []


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    reason = cronlab.missing_requirements()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    readme = cronlab.README.read_text()
    block = cronlab.readme_crontab_block(readme)
    redis: dict[str, RedisServer] = {}
    notes: list[str] = []
    try:
        with cronlab.Lab() as lab:
            install_s = lab.install()
            jobs: list[JobLine] = []
            for case in ALL:
                workdir = tmp_path_factory.mktemp(f"cronlab-redis-{case.name}")
                port = free_port()
                config, extra = (readme_config(readme, port) if case.readme_config
                                 else (f'redis_url = "redis://127.0.0.1:{port}/0"\n', []))
                # the outage fleet's Redis keeps its data across the stop (appendonly), as a
                # production Redis does: the stop is an outage, not also a loss of data.
                # everysec: with an fsync per write, a busy disk would time lockrun out
                if case is OUTAGE_CASE:
                    extra = [*extra, "--appendfsync", "everysec"]
                redis[case.name] = RedisServer(workdir, extra, port,
                                               persistent=case is OUTAGE_CASE,
                                               preexec_fn=cronlab.redis_first)
                fleet = lab.add_fleet(case.name, case.servers, redis[case.name], config,
                                      0o640 if case.readme_config else 0o644)
                text, jobs = cronlab.lab_crontab(block, lab.probe,
                                                 "root" if case.cron_d else None, case.header,
                                                 _system_hours() if case.system_hours
                                                 else "* * * * *")
                if case.cron_d:
                    fleet.cron_d_file("lockrun-readme", text)
                else:
                    fleet.user_crontab(case.user, text)
            lab.start()
            outage = [s for s in lab.servers if s.fleet.name == OUTAGE_CASE.name]
            marks = cronlab.boundaries(time.time(), READY_MARGIN_S, 3)

            def finish(servers: list[cronlab.Server], boundary: float) -> None:
                if wait_until(lambda: lab.jobs_done(servers, boundary, len(jobs)),
                              JOBS_DEADLINE_S, 0.1):
                    notes.append(f"{fire_id(boundary)}: the jobs of {len(servers)} servers "
                                 f"all ended {time.time() - boundary:.1f}s after the minute")
                else:
                    notes.append(f"{fire_id(boundary)}: the jobs did not all end within "
                                 f"{JOBS_DEADLINE_S:g}s on some of {[s.host for s in servers]}")

            cronlab.wait_clock(marks[0])
            finish(outage, marks[0])
            redis[OUTAGE_CASE.name].stop()
            cronlab.wait_clock(marks[1])
            finish(outage, marks[1])
            redis[OUTAGE_CASE.name].start()  # same port, same directory: the data is back
            cronlab.wait_clock(marks[2])
            finish(lab.servers, marks[2])
            result = Scenario(
                marks, jobs, {f.name: f.hosts for f in lab.fleets}, lab.probe_runs(),
                lab.mails(), lab.jobs(), lab.syslog.records(), lab.job_arguments(), notes)
    finally:
        for server in redis.values():
            server.stop()
    print(f"\n[real cron] lockrun installed by install.sh in {install_s:.1f}s; scenario "
          f"{time.monotonic() - started:.0f}s; fires {', '.join(result.fires)}", file=sys.stderr)
    for note in notes:
        print(f"[real cron] {note}", file=sys.stderr)
    yield result


def _by_boundary(scenario: Scenario, stamp: float) -> str | None:
    """The fire whose minute *stamp* falls in."""
    for boundary in scenario.boundaries:
        if boundary <= stamp < boundary + 60:
            return fire_id(boundary)
    return None


# ------------------------------------------------------------------ every fire once


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_fire_runs_exactly_once_in_the_fleet(scenario: Scenario, case: Case) -> None:
    """Every line, every minute, one server; a line that never runs (PATH, a bad option,
    an unreadable config) or runs twice shows here."""
    counts = Counter((r.key, r.fire) for r in scenario.runs_of(case))
    expected = {(job.key, fire): 1 for job in scenario.jobs for fire in scenario.fires}
    assert dict(counts) == expected, scenario.notes


def test_the_outage_fleet_runs_every_fire_redis_could_decide_and_none_other(
        scenario: Scenario) -> None:
    up = [scenario.fires[0], scenario.fires[2]]
    counts = Counter((r.key, r.fire) for r in scenario.runs_of(OUTAGE_CASE))
    expected = {(job.key, fire): 1 for job in scenario.jobs for fire in up}
    assert dict(counts) == expected, scenario.notes


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.name)
def test_fences_increase_from_fire_to_fire(scenario: Scenario, case: Case) -> None:
    by_key: dict[str, list[tuple[str, int]]] = {}
    for run in scenario.runs_of(case):
        by_key.setdefault(run.key, []).append((run.fire, run.fence))
    assert set(by_key) == {job.key for job in scenario.jobs}
    for key, fires in by_key.items():
        fences = [fence for _, fence in sorted(fires)]
        assert all(a < b for a, b in itertools.pairwise(fences)), (key, sorted(fires))


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.name)
def test_jobs_run_as_the_crontabs_user_with_readmes_command(scenario: Scenario,
                                                           case: Case) -> None:
    """The job gets README's command exactly as sh parses cron's line: % escapes included."""
    runs = scenario.runs_of(case)
    assert runs and {r.user for r in runs} == {case.user}
    expected = {job.key: job.job for job in scenario.jobs}
    seen = {key: argv for (host, key), argv in scenario.arguments.items()
            if host in scenario.hosts[case.name]}
    assert seen == expected
    assert any("%F" in arg for argv in seen.values() for arg in argv), "README's \\% example"


# ------------------------------------------------------------------ cron's own log


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.name)
def test_cron_starts_every_line_on_every_server_with_the_documented_exit_status(
        scenario: Scenario, case: Case) -> None:
    """cron -L 15 logs each job's start and end and every non-zero exit status: the
    server that ran a fire exits with the job's 0, the others with the line's skip code
    (README: -E 3 on the sync line), and with Redis down every line exits 75."""
    ran = {(r.host, r.key, r.fire) for r in scenario.runs_of(case)}
    skip_code = {job.key: job.skip_exit_code for job in scenario.jobs}
    error_code = {job.key: job.error_exit_code for job in scenario.jobs}
    down = scenario.fires[1] if case is OUTAGE_CASE else None
    seen: dict[tuple[str, str], list[CronJob]] = {}
    for job in scenario.cron:
        fire = _by_boundary(scenario, job.started)
        if job.host in scenario.hosts[case.name] and fire is not None:
            seen.setdefault((job.host, fire), []).append(job)
    for host in scenario.hosts[case.name]:
        for fire in scenario.fires:
            jobs = seen.get((host, fire), [])
            assert sorted(j.key for j in jobs) == sorted(skip_code), (host, fire, scenario.notes)
            assert all(j.ended is not None for j in jobs), (host, fire)
            statuses = {j.key: j.status for j in jobs}
            expected = {key: error_code[key] if fire == down
                        else 0 if (host, key, fire) in ran else skip_code[key]
                        for key in skip_code}
            assert statuses == expected, (host, fire)


def test_cron_reads_every_crontab_without_complaint(scenario: Scenario) -> None:
    """Debian's cron ignores a crontab with the wrong owner or mode, and says so here."""
    daemon = [r.message for r in scenario.syslog if r.tag == "cron"]
    assert any("Running @reboot jobs" in m for m in daemon)
    assert [m for m in daemon if not m.startswith("(CRON) INFO")] == []


# ------------------------------------------------------------------ mail


def _mail_summary(scenario: Scenario, hosts: list[str]) -> str:
    return ", ".join(f"{h}: {len(scenario.mails_of(h))}" for h in hosts)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_no_mail_while_redis_is_up(scenario: Scenario, case: Case) -> None:
    """README: the servers that skip print nothing, and a job that succeeds silently
    leaves nothing to mail. So three minutes of the whole block mail nobody."""
    hosts = scenario.hosts[case.name]
    print(f"\n[real cron] mails {case.name}: {_mail_summary(scenario, hosts)}")
    mails = [m for h in hosts for m in scenario.mails_of(h)]
    assert mails == [], mails[0].text


def test_an_outage_mails_each_server_once_and_once_more_when_redis_is_back(
        scenario: Scenario) -> None:
    """Per server (and user, and Redis address): the first lockrun that cannot use Redis
    says so ("not running"), the others of the outage stay silent with exit 75, and the
    first that reaches Redis again says it is usable again and which fires this server
    did not run. So at most one outage mail and one recovery mail per server."""
    hosts = scenario.hosts[OUTAGE_CASE.name]
    down, back = scenario.fires[1], scenario.fires[2]
    table = {}
    for host in hosts:
        mails = scenario.mails_of(host)
        outage = [m for m in mails if OUTAGE in m.body]
        recovery = [m for m in mails if RECOVERY in m.body]
        other = [m for m in mails if m not in outage and m not in recovery]
        table[host] = (outage, recovery, other)
        print(f"\n[real cron] mails {host}: {len(mails)} ({len(outage)} outage, "
              f"{len(recovery)} recovery, {len(other)} other)")
        for mail in mails:
            print(f"  {fire_id(mail.received // 60 * 60)}: {mail.body.strip()}")
    for host, (outage, recovery, other) in table.items():
        assert other == [], other[0].text
        assert len(outage) == 1, (host, [m.body for m in outage])
        assert len(recovery) == 1, (host, [m.body for m in recovery])
        assert _by_boundary(scenario, outage[0].received) == down
        assert _by_boundary(scenario, recovery[0].received) == back
        missed = recovery[0].body
        assert down in missed and all(job.key in missed for job in scenario.jobs), missed


# ------------------------------------------------------------------ the harness itself


def test_the_lab_changes_only_times_schedules_and_the_command() -> None:
    """The crontab the servers read is README's block, line for line, but for the time
    fields, the --schedule expressions and the probe in front of each job."""
    block = cronlab.readme_crontab_block(cronlab.README.read_text())
    probe = Path("/lab/probe")
    text, jobs = cronlab.lab_crontab(block, probe)
    assert len(jobs) >= 5 and len({j.key for j in jobs}) == len(jobs)
    for ours, theirs in zip(text.splitlines(), block.splitlines(), strict=True):
        if ours == theirs:
            continue
        fields, command = ours.split(None, 5)[:5], ours.split(None, 5)[5]
        assert fields == ["*"] * 5
        undone = command.replace(f" {probe}", "", 1)
        assert re.sub(r"--schedule '\* \* \* \* \*'", "", undone) == re.sub(
            r"--schedule '[^']*'", "", theirs.split(None, 5)[5]), theirs
    def scheduled(lines: str) -> int:
        return sum("--schedule" in line for line in lines.splitlines() if "lockrun" in line
                   and not line.startswith("#"))

    assert text.count("--schedule '* * * * *'") == scheduled(block) == scheduled(text) > 0
    assert sum(line.startswith("PATH=") for line in text.splitlines()) == 1
