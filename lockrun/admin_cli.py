"""The admin verbs' command line: status, history, unlock, doctor, pause, resume, cancel,
explain, check, logs.

Parsing and rendering only; the answers come from lockrun.admin and
lockrun.doctor. Every verb has --json for scripts and a table for people.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from lockrun.errors import UsageError
from lockrun.exitcodes import ExitCode
from lockrun.options import (
    F,
    PlainInt,
    apply,
    click_option,
    connection_options,
    duration,
    env,
    password,
    tls_files,
    writable_dir,
)
from lockrun.optiontable import WRAPPER

if TYPE_CHECKING:
    from collections.abc import Callable

    from lockrun.admin import FireRun, JobState, Pause

_connection_options = apply([
    *connection_options(),
    click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
])


def _admin(options: dict[str, Any]) -> Any:
    from lockrun.admin import Admin
    from lockrun.client import LockClient

    client = LockClient(options["redis_url"], options["redis_timeout"],
                        password(click.get_current_context().obj), tls_files(options))
    return Admin(client, options["key_prefix"])


def _schedule_options(schedule_help: str, grace_help: str) -> Callable[[F], F]:
    """--schedule, --tz and --grace of the verbs that read a job against its schedule
    (history, check): declared once, each verb saying what it does with them."""
    return apply([
        click.option("--schedule", metavar="EXPR", help=schedule_help),
        click.option("--tz", metavar="ZONE", help="Time zone of --schedule.  [default: "
                                                  "$CRON_TZ, $TZ, else the system's]"),
        click.option("--grace", default="60s", **duration(positive=True),
                     help=f"{grace_help}  [default: 60s]"),
    ])


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _must_know(adm: Any, key: str) -> None:
    """A key Redis knows nothing of is most likely a typo (in the key, --key-prefix or
    --redis-url): say so and exit 1, instead of an empty table and exit 0."""
    if not adm.known(key):
        from lockrun.errors import NoRecord

        raise NoRecord(f"no record of job {key!r} in Redis at {adm.client.url} under "
                       f"--key-prefix {adm.prefix!r}: check the key, the prefix and the URL")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def admin() -> None:
    """Inspect and repair lockrun's state in Redis."""


@admin.command()
@click.argument("key", required=False)
@_connection_options
def status(key: str | None, as_json: bool, **options: Any) -> None:
    """What runs now and how the last fire ended, for KEY or for every job."""
    from lockrun.fire import validate_name

    adm = _admin(options)
    names = [validate_name(key, "key")] if key else adm.job_names()
    if key:
        _must_know(adm, key)
    states = [adm.status(name) for name in names]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in states], indent=2))
        return
    rows = []
    for s in states:
        running = ", ".join(f"{r.fire} on {r.host} since {_when(r.start_ms)} (fence {r.fence})"
                            for r in s.running) or "-"
        last = s.last
        rows.append([s.key, running, last.fire if last else "-", last.outcome if last else "-",
                     str(last.exit) if last and last.exit is not None else "-",
                     _seconds(last.duration_s) if last else "-", last.host if last else "-",
                     _streak(s.state), _paused(s.paused)])
    _table(["KEY", "RUNNING", "LAST FIRE", "OUTCOME", "EXIT", "DURATION", "HOST", "FAILING",
            "PAUSED"], rows)


def _streak(state: JobState | None) -> str:
    """'-' while the last end succeeded; else how many ended in failure in a row, and
    since when the job last succeeded, fleet-wide."""
    if state is None or state.failures == 0:
        return "-"
    since = (f", last success {_when(state.last_success_ms)}" if state.last_success_ms
             else ", never succeeded")
    return f"{state.failures} in a row{since}"


def _paused(p: Pause | None) -> str:
    """'by root@a until 2026-11-28 06:00:00Z (all jobs): upgrade' or '-'."""
    if p is None:
        return "-"
    until = f" until {_when(p.until_ms)}" if p.until_ms is not None else ""
    scope = " (all jobs)" if p.scope == "all" else ""
    return f"by {p.by}{until}{scope}" + (f": {p.reason}" if p.reason else "")


@admin.command()
@click.argument("key")
@click.option("--limit", type=PlainInt(1, 10_000), default=20, show_default=True,
              help="How many fires to show.")
@_schedule_options("The job's schedule: also list scheduled fires that left no trace "
                   "(ran-nowhere).",
                   "With --schedule: a missing fire younger than this is 'pending', not "
                   "'ran-nowhere'.")
@_connection_options
def history(key: str, limit: int, schedule: str | None, tz: str | None, grace: float,
            as_json: bool, **options: Any) -> None:
    """Recent fires of KEY: who ran each, when, and how it ended."""
    from lockrun.fire import validate_name

    expected = None
    if schedule is not None:  # a bad schedule or zone is a usage error before Redis is asked
        from lockrun.schedule import normalise, validate, zone_from

        zone = zone_from(tz)
        validate(schedule, zone, time.time())
        expected = (normalise(schedule), zone)
    adm = _admin(options)
    _must_know(adm, validate_name(key, "key"))
    rows = adm.history(key, limit)
    if expected is not None:
        rows = adm.with_expected(key, rows, *expected, time.time(), limit, grace)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    _table(["FIRE", "HOST", "START", "END", "DURATION", "OUTCOME", "EXIT"],
           [[r.fire or f"({r.outcome})", r.host or r.by or "-", _when(r.start_ms),
             _when(r.end_ms), _seconds(r.duration_s) if r.fire else "-",
             _outcome(r), "-" if r.exit is None else str(r.exit)] for r in rows])


def _outcome(r: FireRun) -> str:
    """The outcome, with who asked and why where an operator did (pause, resume)."""
    text = r.outcome + (" (recorded late)" if r.recorded_late else "")
    if r.attempt > 1 or r.retry_due_ms is not None:
        text += f", attempt {r.attempt}"
    if r.retry_due_ms is not None:
        text += f", retry due {_when(r.retry_due_ms)}"
    if r.by and r.fire:
        text += f" by {r.by}"
    return text + (f": {r.reason}" if r.reason else "")


@admin.command()
@click.argument("key")
@click.option("--fire", metavar="ID", help="Also remove this fire's claim or done record, so "
                                          "it can run again.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_connection_options
def unlock(key: str, fire: str | None, yes: bool, as_json: bool, **options: Any) -> None:
    """Force-release KEY's overlap guard (and with --fire, that fire's claim)."""
    from lockrun.fire import validate_name

    validate_name(key, "key")
    if fire is not None:
        validate_name(fire, "fire id")
    what = f"the overlap guard of {key}" + (f" and the claim of fire {fire}" if fire else "")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to remove {what} without --yes (no terminal to confirm)")
        if not click.confirm(f"Remove {what}? A job still running there keeps running",
                             err=True):
            click.echo("not unlocked", err=True)
            sys.exit(1)
    removed = _admin(options).unlock(key, fire or "")
    if as_json:
        click.echo(json.dumps({"key": key, "fire": fire, "removed": removed}))
    elif removed:
        for item in removed:
            click.echo(f"removed {item}")
    else:
        click.echo(f"nothing to unlock for {key}" + (f" fire {fire}" if fire else ""))
    if not removed:
        sys.exit(ExitCode.NEGATIVE)


def _doctor_tls(options: dict[str, Any]) -> Any:
    """The TLS files of doctor's own connection, which the file's must not prevent.

    TLS files in the file with a redis:// URL fail every wrapper line (exit 64):
    a diagnosis for doctor to give (its "config values" check), not a reason to
    give none. So when only the file's TLS settings do not fit the URL, doctor
    connects without those that cannot apply: none for a URL without TLS, the
    CA alone for a certificate without its key. Given on doctor's command line
    or in its environment, they are doctor's own usage error, as before.
    """
    try:
        return tls_files(options)
    except UsageError:
        ctx = click.get_current_context()
        given = [n for n in ("redis_ca", "redis_cert", "redis_key") if options[n]]
        if any(ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT_MAP
               for n in given):
            raise
        if not str(options["redis_url"]).startswith("rediss://"):
            return None
        return tls_files({**options, "redis_cert": None, "redis_key": None})


@admin.command()
@click.option("--max-skew", default="2s", **env("MAX_SKEW"), **duration(),
              help="Fail the clock check beyond this.  [default: 2s]")
@_connection_options
def doctor(max_skew: float, as_json: bool, **options: Any) -> None:
    """Check that this Redis and this server's configuration file are safe for lockrun."""
    from lockrun.client import LockClient
    from lockrun.configfile import FileSettings
    from lockrun.doctor import FAIL, run_checks
    from lockrun.hostcheck import file_checks

    settings = click.get_current_context().obj
    client = LockClient(options["redis_url"], options["redis_timeout"], password(settings),
                        _doctor_tls(options))
    checks = run_checks(client, options["key_prefix"], max_skew)
    if isinstance(settings, FileSettings):
        checks += file_checks(settings)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(f"{c.status:<4}  {c.name}: {c.detail}")
    if any(c.status == FAIL for c in checks):
        sys.exit(ExitCode.NEGATIVE)


def _pause_target(key: str | None, every: bool) -> str | None:
    """KEY or --all, exactly one: None means every job."""
    from lockrun.fire import validate_name

    if every == (key is not None):
        raise UsageError("give a KEY or --all, not both and not neither")
    return None if every else validate_name(str(key), "key")


def _until(for_: float | None, until: str | None, now: float) -> int | None:
    """--for or --until as epoch milliseconds (None: until resumed), checked before Redis."""
    if for_ is not None and until is not None:
        raise UsageError("--for and --until cannot be used together")
    if for_ is not None:
        return round((now + for_) * 1000)
    if until is None:
        return None
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(until)
    except ValueError:
        raise UsageError(f"invalid --until {until[:60]!r}: give an ISO 8601 time such as "
                         "2026-11-28T06:00 (local time) or 2026-11-28T06:00Z") from None
    at = moment.timestamp()  # a time without a zone is this server's local time
    if at <= now:
        raise UsageError(f"--until {until} is already past")
    return round(at * 1000)


def _reason(text: str) -> str:
    if len(text) > 500 or any(c < " " or c == "\x7f" for c in text):
        raise UsageError("--reason must be one line of at most 500 characters")
    return text


@admin.command()
@click.argument("key", required=False)
@click.option("--all", "every", is_flag=True, help="Pause every job that uses this Redis "
                                                   "(and this --key-prefix).")
@click.option("--for", "for_", **duration(positive=True),
              help="Resume by itself after this long.")
@click.option("--until", metavar="TIME", help="Resume by itself at this time (ISO 8601; "
                                             "local time unless it ends in Z or +HH:MM).")
@click.option("--reason", default="", metavar="TEXT", help="Why: shown by status and kept in "
                                                          "the history.")
@_connection_options
def pause(key: str | None, every: bool, for_: float | None, until: str | None, reason: str,
          as_json: bool, **options: Any) -> None:
    """Make every server skip KEY (or every job) until resumed or until the pause expires."""
    target = _pause_target(key, every)
    until_ms = _until(for_, until, time.time())
    why = _reason(reason)
    adm = _admin(options)
    if not adm.pause(target, why, until_ms):
        raise UsageError("the pause would end before it starts: its end is already past by "
                         "the Redis server's clock")
    what = target or "every job"
    if as_json:
        click.echo(json.dumps({"key": target, "scope": "job" if target else "all",
                               "until_ms": until_ms, "reason": why, "paused": True}))
    else:
        click.echo(f"paused {what}" + (f" until {_when(until_ms)}" if until_ms else
                                      " until resumed") + (f": {why}" if why else ""))


@admin.command()
@click.argument("key", required=False)
@click.option("--all", "every", is_flag=True, help="Lift the pause of every job (set by "
                                                   "pause --all); a job's own pause stays.")
@_connection_options
def resume(key: str | None, every: bool, as_json: bool, **options: Any) -> None:
    """Lift a pause: KEY's own, or with --all the one that pauses every job."""
    target = _pause_target(key, every)
    resumed = _admin(options).resume(target)
    what = target or "every job"
    if as_json:
        click.echo(json.dumps({"key": target, "scope": "job" if target else "all",
                               "resumed": resumed}))
    else:
        click.echo(f"resumed {what}" if resumed else f"{what} was not paused")
    if not resumed:
        sys.exit(ExitCode.NEGATIVE)


@admin.command()
@click.argument("key")
@click.option("--fire", metavar="ID", help="The fire to stop (default: the one the overlap "
                                          "guard names, i.e. the one running now).")
@_connection_options
def cancel(key: str, fire: str | None, as_json: bool, **options: Any) -> None:
    """Stop a running fire of KEY on whichever server runs it, and record it as cancelled."""
    from lockrun.fire import validate_name

    validate_name(key, "key")
    if fire is not None:
        validate_name(fire, "fire id")
    found = _admin(options).cancel(key, fire)
    if as_json:
        click.echo(json.dumps({"key": key, "fire": found[0] if found else fire,
                               "host": found[1] if found else None,
                               "requested": found is not None}))
    elif found:
        click.echo(f"asked {found[1] or 'its server'} to stop {key} fire {found[0]}: it stops "
                   "the job at its next renewal (within ttl/3), then --kill-after")
    else:
        click.echo(f"nothing of {key} is running" + (f" as fire {fire}" if fire else ""))
    if not found:
        sys.exit(ExitCode.NEGATIVE)


@admin.command(context_settings={"allow_interspersed_args": False, "max_content_width": 100},
               epilog="Exit status: 0 when it explains, whatever the decision (Redis "
               "unusable included: the decision says what a fire would do); 64 for bad "
               "input, before Redis is contacted. See lockrun(1).")
@apply([click_option(option) for option in WRAPPER])
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARG]...")
def explain(command: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """What the crontab line's lockrun would do on this server now, and why; writes nothing.

    Put explain in front of the line's options (the same options, variables and
    configuration file): it prints the fire id and how it was derived, the grace,
    the next five scheduled fires (with --schedule), what Redis holds for the fire,
    the overlap guard and the pauses, and the decision a fire would take now.
    Redis is only read, with plain read commands.
    """
    from lockrun.explain import explain as explain_line
    from lockrun.explain import render
    from lockrun.optiontable import invocation

    now = time.time()
    inv = invocation(options, tuple(command), password(click.get_current_context().obj), now)
    result = explain_line(inv.config, now, schedule=options["schedule"], tz=options["tz"],
                          fire_given=options["fire"] is not None)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else render(result))


@admin.command()
@click.argument("key")
@_schedule_options("The job's schedule: judge its last scheduled fire, and count fires "
                   "that left no trace.",
                   "With --schedule: a fire without a trace is 'ran nowhere' only this long "
                   "after its time.")
@click.option("--max-age", **duration(positive=True),
              help="CRITICAL when the last success ended longer ago than this.")
@click.option("--max-runtime", **duration(positive=True),
              help="WARNING when a run in progress has been running longer than this.")
@click.option("--textfile", metavar="DIR", callback=writable_dir,
              help="Also write the fleet gauges to DIR/lockrun_fleet_KEY.prom for "
                   "node_exporter's textfile collector.")
@_connection_options
def check(key: str, schedule: str | None, tz: str | None, grace: float, max_age: float | None,
          max_runtime: float | None, textfile: str | None, as_json: bool,
          **options: Any) -> None:
    """Nagios-style check of KEY from the lock store: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    CRITICAL when the last (scheduled) fire failed, timed out, crashed, was lost
    or ran nowhere, or the last success is older than --max-age; WARNING when a
    run exceeds --max-runtime or the job is paused; UNKNOWN when Redis cannot
    be used or holds no record of KEY. Bad input exits 64, as every verb.
    """
    from lockrun.check import Limits, run_check, unknown, write_textfile
    from lockrun.errors import LockrunError
    from lockrun.fire import validate_name

    validate_name(key, "key")
    limits = Limits(grace=grace, max_age=max_age, max_runtime=max_runtime)
    if schedule is not None:  # a bad schedule or zone is a usage error before Redis is asked
        from lockrun.schedule import normalise, validate, zone_from

        zone = zone_from(tz)
        validate(schedule, zone, time.time())
        limits.schedule = (normalise(schedule), zone)
    try:
        adm = _admin(options)
    except UsageError:
        raise
    except LockrunError as exc:
        result = unknown(key, str(exc))
    else:
        result = run_check(adm, key, limits)
    if textfile is not None:
        problem = write_textfile(textfile, result)
        if problem:
            click.echo(f"lockrun: {problem}", err=True)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else result.line)
    sys.exit(result.status)


@admin.command()
@click.argument("key")
@click.option("--fire", metavar="ID", help="The fire whose output to print.")
@click.option("--last", is_flag=True, help="The last fire whose output was kept (the "
                                           "default).")
@click.option("--failed", is_flag=True, help="The last fire with kept output whose attempt "
                                             "failed.")
@_connection_options
def logs(key: str, fire: str | None, last: bool, failed: bool, as_json: bool,
         **options: Any) -> None:
    """Print the output tail that --capture kept of a fire of KEY, from any server.

    Each kept attempt comes after a header line (host, exit status, end); the
    bytes are written as the job wrote them. Exit status: 0; 1 when nothing is
    kept (no --capture, expired, unknown key); 64 for bad input; 75 when Redis
    cannot be used.
    """
    from lockrun.capture import read_output
    from lockrun.errors import NoRecord
    from lockrun.fire import validate_name
    from lockrun.protocol import job_keys

    validate_name(key, "key")
    if fire is not None:
        validate_name(fire, "fire id")
    if (fire is not None) + last + failed > 1:
        raise UsageError("give one of --fire, --last and --failed")
    adm = _admin(options)
    where = f"in Redis at {adm.client.url} under --key-prefix {adm.prefix!r}"
    if fire is None:
        field = "last_failed_output_fire" if failed else "last_output_fire"
        job = adm.client.hgetall(job_keys(key, "", adm.prefix)["job"])
        fire = job.get(field)
        if not fire:
            what = "of a failed attempt " if failed else ""
            raise NoRecord(f"no output {what}of {key} is kept {where}: it is kept only for "
                           "runs with --capture SIZE, for the --retention")
    attempts = read_output(adm.client, key, fire, adm.prefix)
    if failed:  # a fire that failed, then succeeded on a retry: why it failed
        attempts = [a for a in attempts if a.exit != 0 or a.outcome != "exited"]
    if not attempts:
        raise NoRecord(f"no output of {key} fire {fire} is kept {where}: it ran without "
                       "--capture, its record expired (--retention), or it never ran")
    if as_json:
        click.echo(json.dumps([_attempt_json(key, fire, a) for a in attempts], indent=2))
        return
    stdout = sys.stdout.buffer
    for index, a in enumerate(attempts):
        exit_text = "exit -" if a.exit is None else f"exit {a.exit}"
        header = (f"== {key} fire {fire} attempt {a.number} on {a.host or '?'}: {exit_text} "
                  f"({a.outcome or '?'}), ended {_when(a.end_ms)}")
        if a.dropped:
            header += f"; {a.dropped} earlier bytes not kept"
        stdout.write(header.encode() + b"\n" + a.output)
        if index + 1 < len(attempts) and a.output and not a.output.endswith(b"\n"):
            stdout.write(b"\n")  # the next header on a line of its own
    stdout.flush()


def _attempt_json(key: str, fire: str, a: Any) -> dict[str, Any]:
    """One attempt for scripts: the output as text when it is UTF-8, else base64."""
    from lockrun.capture import encode

    text, encoding = encode(a.output)
    return {"key": key, "fire": fire, "attempt": a.number, "host": a.host, "exit": a.exit,
            "outcome": a.outcome, "end_ms": a.end_ms, "dropped": a.dropped,
            "output": text, "encoding": encoding}
