"""The wrapper's command line: every option of a crontab line, and the Config it becomes.

lockrun.cli dispatches between this command and the admin verbs and maps
every failure to an exit status; this module only declares the options and
turns their values into a Config for lockrun.runner.
"""

from __future__ import annotations

from typing import Any

import click

from lockrun import __version__
from lockrun.errors import UsageError
from lockrun.options import (
    PlainInt,
    apply,
    connection_options,
    duration,
    env,
    http_url,
    name,
    password,
    state_dir,
    tls_files,
    writable_dir,
)
from lockrun.output import Reporter, Verbosity

DURATION = duration()
EXIT_CODE = PlainInt(0, 255)
CONTEXT = {
    "help_option_names": ["-h", "--help"],
    "allow_interspersed_args": False,
    "max_content_width": 100,
}


class _Command(click.Command):
    """click without a spelling hint computed, then thrown away, for every short option.

    click tries ``-k`` as a long option first; the miss builds a NoSuchOption whose
    suggestions import difflib and score every option name (about 1 ms, on every
    cron fire) before ``-k`` matches as the short option it is. A click without
    these internals keeps its own behaviour.
    """

    def make_parser(self, ctx: click.Context) -> Any:
        parser = super().make_parser(ctx)
        shorts = getattr(parser, "_short_opt", None)
        match_long = getattr(parser, "_match_long_opt", None)
        if not isinstance(shorts, dict) or match_long is None:
            return parser

        def match(opt: str, explicit_value: str | None, state: Any) -> None:
            if opt in shorts:
                raise click.NoSuchOption(opt, ctx=ctx)  # no possibilities: no difflib
            match_long(opt, explicit_value, state)

        setattr(parser, "_match_long_opt", match)  # noqa: B010 - a method of this instance
        return parser


@click.command(cls=_Command, context_settings=CONTEXT,
               epilog="Exit status: the job's own; 128+N if it died of signal N; 0 (-E) when "
               "skipped; 75 (--error-exit-code) when Redis is unusable; 64 usage error; 124 "
               "timeout; 126 not executable; 127 not found. Defaults for every option can "
               "live in /etc/lockrun.toml (or the file named by LOCKRUN_CONFIG). "
               "See lockrun(1).")
@click.option("-k", "--key", required=True, callback=name, metavar="NAME",
              help="Job name: 1-200 of A-Z a-z 0-9 . _ - : (never read from the environment).")
@click.option("--ttl", **duration(minimum=1.0), default="60s", **env("TTL"),
              help="Lease length; renewed every ttl/3 while the job runs.  [default: 60s]")
@apply(connection_options())
@click.option("--fire", callback=name, metavar="ID",
              help="Fire id (default: the current UTC minute, e.g. 2026-11-22T03:00:00Z).")
@click.option("--schedule", metavar="EXPR", **env("SCHEDULE"),
              help="The job's cron schedule (5 fields or @daily...): the fire id becomes the "
                   "latest scheduled time, so late starts still agree.")
@click.option("--tz", metavar="ZONE", **env("TZ"),
              help="Time zone of --schedule.  [default: the one of $CRON_TZ, $TZ and the "
                   "system's in which this tick is a scheduled time]")
@click.option("--grace", **duration(positive=True), default="60s", **env("GRACE"),
              help="With --schedule: skip (too-late) when started this long after the "
                   "scheduled time.  [default: 60s]")
@click.option("--max-skew", **DURATION, default="2s", **env("MAX_SKEW"),
              help="Warn when this server's clock differs from Redis's by more "
                   "(0: never).  [default: 2s]")
@click.option("--overlap", type=click.Choice(["skip", "allow"]), default="skip",
              **env("OVERLAP"),
              help="skip: skip while an earlier fire of this key still runs.  [default: skip]")
@click.option("--retention", default="24h", **env("RETENTION"), **duration(
                  minimum=120.0, why=": a shorter one lets a late server rerun a fire"),
              help="How long a finished fire's done record is kept (>= 2m).  [default: 24h]")
@click.option("--on-redis-error", type=click.Choice(["fail", "skip", "run"]), default="fail",
              **env("ON_REDIS_ERROR"),
              help="fail: exit 75 without running; skip: exit with the skip code; "
                   "run: run without a lock.  [default: fail]")
@click.option("--on-lost", type=click.Choice(["warn", "kill"]), default="warn",
              **env("ON_LOST"),
              help="When the lease is lost mid-run: warn, or stop the job.  [default: warn]")
@click.option("--timeout", **duration(positive=True), default=None, **env("TIMEOUT"),
              help="Stop the job's whole process tree after this long; exit 124.")
@click.option("--kill-after", **DURATION, default="10s", **env("KILL_AFTER"),
              help="Grace between SIGTERM and SIGKILL when lockrun stops the job.  [default: 10s]")
@click.option("-E", "--skip-exit-code", type=EXIT_CODE, default=0, metavar="N",
              **env("SKIP_EXIT_CODE"),
              help="Exit status when another server runs this fire.  [default: 0]")
@click.option("--error-exit-code", type=EXIT_CODE, default=75, metavar="N",
              **env("ERROR_EXIT_CODE"),
              help="Exit status when Redis cannot be used.  [default: 75]")
@click.option("--jitter", **duration(maximum=3600.0), default="0", **env("JITTER"),
              help="Random delay before acquiring; the fire id is fixed first.  [default: 0]")
@click.option("--wait-replicas", type=PlainInt(0, 64), default=0, metavar="N",
              **env("WAIT_REPLICAS"),
              help="After claiming, wait until N replicas have the claim (Redis WAIT); warn "
                   "if fewer do.  [default: 0]")
@click.option("--wait-timeout", default="1s", **env("WAIT_TIMEOUT"), **duration(positive=True),
              help="How long --wait-replicas waits.  [default: 1s]")
@click.option("--strict-replicas", is_flag=True, **env("STRICT_REPLICAS"),
              help="With --wait-replicas: give the claim back and exit 75 if too few "
                   "replicas acknowledge it.")
@click.option("--ping-url", metavar="URL", callback=http_url, **env("PING_URL"),
              help="Healthchecks-style pings from the server that runs the fire: URL/start, "
                   "then URL on success or URL/<exit code> on failure.")
@click.option("--metrics-dir", metavar="DIR", callback=writable_dir, **env("METRICS_DIR"),
              help="Write a Prometheus textfile (lockrun_<key>.prom) here on every fire.")
@click.option("--state-dir", metavar="DIR", callback=state_dir, **env("STATE_DIR"),
              help="Where this user's lockrun state lives on this server (outages, job ends "
                   "to record later); '' turns it off.  [default: /var/lib/lockrun for root, "
                   "else ~/.local/state/lockrun or /var/tmp/lockrun-UID]")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              **env("LOG_FORMAT"), help="Messages as text lines or JSON objects.  "
                                        "[default: text]")
@click.option("--mail-on-failure", is_flag=True, **env("MAIL_ON_FAILURE"),
              help="When the job fails (exit status not 0), print one line on stderr, so cron "
                   "mails it even if the job printed nothing.")
@click.option("--syslog", is_flag=True, **env("SYSLOG"),
              help="Also send every message, decisions included, to syslog (facility cron).")
@click.option("-v", "--verbose", is_flag=True, **env("VERBOSE"),
              help="One line per decision on stderr (acquired, skipped and why).")
@click.option("-q", "--quiet", is_flag=True, **env("QUIET"),
              help="No warnings; errors are still printed.")
@click.version_option(__version__, "-V", "--version", prog_name="lockrun")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARG]...")
def wrapper(**options: Any) -> int:
    """Run COMMAND on exactly one server per scheduled fire, using a Redis lock.

    Put the same line in every server's crontab; the server that claims the
    fire runs the job, the others skip silently.

    \b
      0 3 * * *  lockrun --key nightly-backup --ttl 10m -- /usr/local/bin/backup.sh

    \b
    Admin commands (see lockrun COMMAND --help):
      lockrun status [KEY]     what runs now, how the last fire ended
      lockrun history KEY      who ran each fire, when, and how it ended
      lockrun unlock KEY       force-release a stuck lock
      lockrun doctor           check that Redis is safe for lockrun
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
        from lockrun.schedule import cron_zones, slot_of_tick, validate, zone_from

        if options["tz"] is not None:
            slot = validate(options["schedule"], zone_from(options["tz"]), time.time())
        else:  # the zone cron used: CRON_TZ (cronie) or the system's (Debian's cron)
            slot = slot_of_tick(options["schedule"], cron_zones(), time.time())
    verbosity = (Verbosity.VERBOSE if options["verbose"]
                 else Verbosity.QUIET if options["quiet"] else Verbosity.NORMAL)
    if not options["command"]:
        raise UsageError("no command given: use lockrun [OPTIONS] -- COMMAND [ARG]...")
    settings = click.get_current_context().obj
    cfg = Config(
        key=options["key"],
        key_prefix=options["key_prefix"],
        redis_password=password(settings),
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
        ping_url=options["ping_url"],
        metrics_dir=options["metrics_dir"],
        tls=tls_files(options),
        wait_replicas=options["wait_replicas"],
        wait_timeout=options["wait_timeout"],
        strict_replicas=options["strict_replicas"],
        mail_on_failure=options["mail_on_failure"],
        state_dir=options["state_dir"],
    )
    out = Reporter(verbosity, json_lines=options["log_format"] == "json", syslog=options["syslog"])
    out.context = {"key": cfg.key, "fire": cfg.fire}
    return run(cfg, out)
