"""Command line: click parses, this module maps every failure to one line and an exit code."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from lockrun import __version__
from lockrun.errors import LockrunError, UsageError
from lockrun.exitcodes import ExitCode
from lockrun.output import Reporter, Verbosity


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from lockrun.durations import parse_duration

    try:
        return parse_duration(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A key or fire id: the characters that are safe inside a Redis key name."""
    if value is None:
        return None
    from lockrun.fire import validate_name

    try:
        return validate_name(value, "value")
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid value "), ctx, param) from None


DURATION: dict[str, Any] = {"callback": _duration, "metavar": "DURATION"}
EXIT_CODE = click.IntRange(0, 255)
CONTEXT = {
    "help_option_names": ["-h", "--help"],
    "allow_interspersed_args": False,
    "max_content_width": 100,
}


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"LOCKRUN_{name}", "show_envvar": True}


@click.command(context_settings=CONTEXT, epilog="Exit status: the job's own; 128+N if it died of "
               "signal N; 0 (-E) when skipped; 75 (--error-exit-code) when Redis is unusable; "
               "64 usage error; 124 timeout; 126 not executable; 127 not found. See lockrun(1).")
@click.option("-k", "--key", required=True, callback=_name, metavar="NAME",
              help="Job name: 1-200 of A-Z a-z 0-9 . _ - : (never read from the environment).")
@click.option("--ttl", **DURATION, default="60s", **_env("TTL"),
              help="Lease length; renewed every ttl/3 while the job runs.  [default: 60s]")
@click.option("--redis-url", metavar="URL", default="redis://localhost:6379/0", **_env("REDIS_URL"),
              help="redis://, rediss:// or unix:// URL.  [default: redis://localhost:6379/0]")
@click.option("--redis-timeout", **DURATION, default="2s", **_env("REDIS_TIMEOUT"),
              help="Connect and reply timeout of every Redis call.  [default: 2s]")
@click.option("--fire", callback=_name, metavar="ID",
              help="Fire id (default: the current UTC minute, e.g. 2026-11-22T03:00:00Z).")
@click.option("--schedule", metavar="EXPR", **_env("SCHEDULE"),
              help="The job's cron schedule (5 fields or @daily...): the fire id becomes the "
                   "latest scheduled time, so late starts still agree.")
@click.option("--tz", metavar="ZONE", **_env("TZ"),
              help="Time zone of --schedule.  [default: $CRON_TZ, $TZ, else the system's]")
@click.option("--grace", **DURATION, default="60s", **_env("GRACE"),
              help="With --schedule: skip (too-late) when started this long after the "
                   "scheduled time.  [default: 60s]")
@click.option("--max-skew", **DURATION, default="2s", **_env("MAX_SKEW"),
              help="Warn when this server's clock differs from Redis's by more "
                   "(0: never).  [default: 2s]")
@click.option("--overlap", type=click.Choice(["skip", "allow"]), default="skip",
              **_env("OVERLAP"),
              help="skip: skip while an earlier fire of this key still runs.  [default: skip]")
@click.option("--retention", **DURATION, default="24h", **_env("RETENTION"),
              help="How long a finished fire's done record is kept (>= 2m).  [default: 24h]")
@click.option("--on-redis-error", type=click.Choice(["fail", "skip", "run"]), default="fail",
              **_env("ON_REDIS_ERROR"),
              help="fail: exit 75 without running; skip: exit with the skip code; "
                   "run: run without a lock.  [default: fail]")
@click.option("--on-lost", type=click.Choice(["warn", "kill"]), default="warn",
              **_env("ON_LOST"),
              help="When the lease is lost mid-run: warn, or stop the job.  [default: warn]")
@click.option("--timeout", **DURATION, default=None, **_env("TIMEOUT"),
              help="Stop the job's whole process tree after this long; exit 124.")
@click.option("--kill-after", **DURATION, default="10s", **_env("KILL_AFTER"),
              help="Grace between SIGTERM and SIGKILL when lockrun stops the job.  [default: 10s]")
@click.option("-E", "--skip-exit-code", type=EXIT_CODE, default=0, metavar="N",
              **_env("SKIP_EXIT_CODE"),
              help="Exit status when another server runs this fire.  [default: 0]")
@click.option("--error-exit-code", type=EXIT_CODE, default=75, metavar="N",
              **_env("ERROR_EXIT_CODE"),
              help="Exit status when Redis cannot be used.  [default: 75]")
@click.option("--jitter", **DURATION, default="0", **_env("JITTER"),
              help="Random delay before acquiring; the fire id is fixed first.  [default: 0]")
@click.option("-v", "--verbose", is_flag=True, **_env("VERBOSE"),
              help="One line per decision on stderr (acquired, skipped and why).")
@click.option("-q", "--quiet", is_flag=True, **_env("QUIET"),
              help="No warnings; errors are still printed.")
@click.version_option(__version__, "-V", "--version", prog_name="lockrun")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARG]...")
def wrapper(**options: Any) -> int:
    """Run COMMAND on exactly one server per scheduled fire, using a Redis lock.

    Put the same line in every server's crontab; the server that claims the
    fire runs the job, the others skip silently.

    \b
      0 3 * * *  lockrun --key nightly-backup --ttl 10m -- /usr/local/bin/backup.sh
    """
    import time

    from lockrun.config import Config
    from lockrun.fire import minute_fire
    from lockrun.runner import run

    if options["verbose"] and options["quiet"]:
        raise UsageError("--verbose and --quiet cannot be used together")
    slot = None
    if options["schedule"] is not None:
        if options["fire"] is not None:
            raise UsageError("--fire and --schedule cannot be used together: "
                             "--schedule derives the fire id")
        from lockrun.schedule import validate, zone_from

        slot = validate(options["schedule"], zone_from(options["tz"]), time.time())
    verbosity = (Verbosity.VERBOSE if options["verbose"]
                 else Verbosity.QUIET if options["quiet"] else Verbosity.NORMAL)
    cfg = Config(
        key=options["key"],
        fire=slot.fire_id if slot else options["fire"] or minute_fire(),
        command=tuple(options["command"]),
        ttl=options["ttl"],
        redis_url=options["redis_url"],
        redis_timeout=options["redis_timeout"],
        overlap=options["overlap"],
        retention=options["retention"],
        on_redis_error=options["on_redis_error"],
        on_lost=options["on_lost"],
        timeout=options["timeout"],
        kill_after=options["kill_after"],
        skip_exit_code=options["skip_exit_code"],
        error_exit_code=options["error_exit_code"],
        jitter=options["jitter"],
        verbosity=verbosity,
        slot=slot,
        grace=options["grace"],
        max_skew=options["max_skew"],
    )
    return run(cfg, Reporter(verbosity))


def _bad_parameter(exc: click.BadParameter) -> str:
    """Name the flag or the environment variable the bad value actually came from."""
    param, ctx = exc.param, exc.ctx
    if isinstance(exc, click.MissingParameter):
        return exc.format_message()
    if param is None or param.name is None or ctx is None:
        return exc.format_message()
    source = ctx.get_parameter_source(param.name)
    if source is click.core.ParameterSource.ENVIRONMENT and isinstance(param, click.Option):
        where = str(param.envvar)
    else:
        where = "/".join(getattr(param, "opts", [param.name]))
    return f"invalid value for {where}: {exc.message}"


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: nothing but parsing and mapping exceptions to exit statuses."""
    out = Reporter()
    try:
        status = wrapper.main(args=argv, prog_name="lockrun", standalone_mode=False)
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.exceptions.Abort:
        status = ExitCode.SIGNAL_BASE + 2
    except click.BadParameter as exc:
        out.error(_bad_parameter(exc))
        status = ExitCode.USAGE
    except click.ClickException as exc:
        out.error(exc.format_message())
        status = ExitCode.USAGE
    except LockrunError as exc:
        out.error(str(exc))
        status = exc.exit_code
    except KeyboardInterrupt:
        status = ExitCode.SIGNAL_BASE + 2
    except Exception as exc:  # a bug must still give one line, not a traceback
        if os.environ.get("LOCKRUN_DEBUG"):
            raise
        out.error(f"internal error: {type(exc).__name__}: {exc} "
                  "(LOCKRUN_DEBUG=1 shows a traceback)")
        status = ExitCode.SOFTWARE
    sys.exit(int(status) if isinstance(status, int) else 0)
