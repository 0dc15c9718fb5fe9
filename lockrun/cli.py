"""Command line: dispatch to the fast parser, the wrapper or an admin verb, map every
failure to one line and an exit code. The options live in lockrun.optiontable (the
wrapper's, read by lockrun.argv and lockrun.wrapper_cli) and lockrun.admin_cli.

click is imported only when the fast parser declines a line: a cron fire's skip
should cost little more than the interpreter's start."""

from __future__ import annotations

import os
import sys

from lockrun.errors import LockrunError, UsageError
from lockrun.exitcodes import ExitCode
from lockrun.output import Reporter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

ADMIN_VERBS = ("status", "history", "unlock", "doctor", "pause", "resume", "cancel",
               "explain", "check", "logs")


def is_admin(args: list[str]) -> bool:
    """The wrapper form starts with an option, so a verb first means an admin call."""
    return bool(args) and args[0] in ADMIN_VERBS


def _misplaced_verb(args: list[str]) -> None:
    """Say what went wrong when a verb is mistyped or follows options, not "Missing -k".

    Only a line without a key can be one of these, so a real crontab line
    (which always has -k) never pays for the check.
    """
    head = args[:args.index("--")] if "--" in args else args
    if any(a == "--key" or a.startswith(("--key=", "-k")) for a in head):
        return
    verbs = ", ".join(ADMIN_VERBS)
    if head and not head[0].startswith("-"):
        import difflib

        close = difflib.get_close_matches(head[0], ADMIN_VERBS, n=1, cutoff=0.6)
        hint = f"did you mean 'lockrun {close[0]}'?" if close else f"the commands are {verbs}"
        raise UsageError(f"unknown command {head[0]!r}: {hint} (to wrap a job: "
                         "lockrun -k KEY [OPTIONS] -- COMMAND)")
    for word in head:
        if word in ADMIN_VERBS:
            raise UsageError(f"{word!r} must come first, before its options: "
                             f"lockrun {word} [OPTIONS]")


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: nothing but parsing and mapping exceptions to exit statuses."""
    out = Reporter()
    try:
        status = _dispatch(sys.argv[1:] if argv is None else argv, out)
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
    sys.exit(status)


def _dispatch(args: list[str], out: Reporter) -> int:
    """A plain crontab line takes the fast parser; everything else, and any doubt, click."""
    if os.environ.get("_LOCKRUN_COMPLETE"):  # the shell's TAB, before any file is read
        from lockrun.completion import complete

        return complete(os.environ["_LOCKRUN_COMPLETE"])
    if not is_admin(args):
        from lockrun.argv import parse

        inv = parse(args)
        if inv is not None:
            from lockrun.runner import run

            return run(inv.config, inv.reporter())
    return _with_click(args, out)


def _with_click(args: list[str], out: Reporter) -> int:
    """The click commands, as before the fast parser: help, version, verbs and every error."""
    import click

    from lockrun.options import bad_parameter
    from lockrun.wrapper_cli import file_defaults, file_settings, wrapper

    try:
        settings = file_settings()
        defaults = file_defaults(settings)
        if is_admin(args):
            from lockrun.admin_cli import admin

            per_verb = {verb: {p.name: defaults[p.name] for p in cmd.params if p.name in defaults}
                        for verb, cmd in admin.commands.items()}
            status = admin.main(args=args, prog_name="lockrun", standalone_mode=False,
                                default_map=per_verb, obj=settings)
        else:
            _misplaced_verb(args)
            status = wrapper.main(args=args, prog_name="lockrun", standalone_mode=False,
                                  default_map=defaults, obj=settings)
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.exceptions.Abort:
        status = ExitCode.SIGNAL_BASE + 2
    except click.BadParameter as exc:
        out.error(bad_parameter(exc))
        status = ExitCode.USAGE
    except click.ClickException as exc:
        out.error(exc.format_message())
        status = ExitCode.USAGE
    return int(status) if isinstance(status, int) else 0
