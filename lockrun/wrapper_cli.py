"""The wrapper's click command: generated from lockrun.optiontable, for --help, errors,
completion and every line the fast parser (lockrun.argv) leaves to click.

lockrun.cli dispatches between this command, the fast parser and the admin
verbs and maps every failure to an exit status; the values become a Config
in lockrun.optiontable.invocation, the same for both parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from lockrun import __version__
from lockrun.configfile import EXTRA_SETTINGS, FileSettings, load
from lockrun.options import apply, click_option, password
from lockrun.optiontable import WRAPPER, Invocation, invocation, option_kinds

if TYPE_CHECKING:
    from lockrun.optiontable import Value

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
@apply([click_option(option) for option in WRAPPER])
@click.version_option(__version__, "-V", "--version", prog_name="lockrun")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARG]...")
def wrapper(command: tuple[str, ...], **options: Value) -> int:
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
      lockrun pause KEY|--all  make every server skip a job until resumed
      lockrun resume KEY|--all lift a pause
      lockrun cancel KEY       stop a running fire, wherever it runs
      lockrun explain -k KEY [OPTIONS] -- COMMAND
                               what this line would do here now, and why
      lockrun check KEY        Nagios-style check of a job, from the lock store
      lockrun logs KEY         the output --capture kept of a fire, from any server
    """
    import time

    from lockrun.runner import run

    inv = _invocation(click.get_current_context(), command, options, time.time())
    return run(inv.config, inv.reporter())


def _invocation(ctx: click.Context, command: tuple[str, ...], options: Mapping[str, Value],
                now: float) -> Invocation:
    settings = ctx.obj if isinstance(ctx.obj, FileSettings) else None
    return invocation(options, tuple(command), password(settings), now)


def file_settings() -> FileSettings:
    """The configuration file, its values' types checked against the wrapper's options."""
    return load(option_kinds())


def file_defaults(settings: FileSettings) -> dict[str, Any]:
    """The file's values as click's default_map: below the flag and the variable."""
    return {k: v for k, v in settings.values.items() if k not in EXTRA_SETTINGS}


def parse(args: list[str], now: float) -> Invocation:
    """What click makes of a wrapper line, without running it: lockrun.argv's reference."""
    settings = file_settings()
    with wrapper.make_context("lockrun", list(args), default_map=file_defaults(settings),
                              obj=settings) as ctx:
        params = dict(ctx.params)
        command = params.pop("command")
        return _invocation(ctx, tuple(command), params, now)
