"""Shell completion (bash, zsh, fish) of the verbs, their options and the wrapper's options.

Why a module of its own: ``main()`` picks the wrapper or the admin group by the
first word, so click's completion of either alone knows half of lockrun's
grammar (the wrapper's never offers a verb, the group's would offer verbs after
``-k NAME``). This applies main()'s own dispatch to the words typed so far and
hands each half to click's machinery, so bash, zsh and fish keep click's
protocol and scripts (``eval "$(_LOCKRUN_COMPLETE=bash_source lockrun)"``).

Only imported when the shell asks: a cron fire pays one environment lookup. It
never contacts Redis (nor reads the configuration file): completing a key would
mean a connection, with its timeout, on every TAB, so keys are not completed.
"""

from __future__ import annotations

from typing import cast

import click
from click.shell_completion import (
    CompletionItem,
    ShellComplete,
    add_completion_class,
    get_completion_class,
    shell_complete,
)

from lockrun.admin_cli import admin
from lockrun.wrapper_cli import wrapper

PROG = "lockrun"
VAR = "_LOCKRUN_COMPLETE"
"""click's name for prog "lockrun": what its generated shell scripts set."""


def complete(instruction: str) -> int:
    """Answer ``$_LOCKRUN_COMPLETE`` (e.g. ``bash_source``, ``zsh_complete``): an exit status."""
    base = get_completion_class(instruction.partition("_")[0])
    if base is not None:  # an unknown shell: click's own answer (exit 1, nothing printed)
        add_completion_class(_with_grammar(base))
    return shell_complete(wrapper, {}, PROG, VAR, instruction)


def _job_started(args: list[str]) -> bool:
    """After ``--`` or the job's first word, every word is the job's, none is lockrun's.

    click's own rule would still offer ``warn``/``kill`` after ``-- cmd --on-lost``.
    """
    if "--" in args:
        return True
    with wrapper.make_context(PROG, list(args), resilient_parsing=True) as ctx:
        return bool(ctx.params.get("command"))


class _Grammar(ShellComplete):
    """main()'s dispatch, put in front of any shell's completion class."""

    def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem[str]]:
        if args[:1] and args[0] in admin.commands:  # as main(): a verb comes first
            return self._by_click(admin, args, incomplete)
        if _job_started(args):
            return []
        verbs: list[CompletionItem[str]] = []
        if not args:  # only the first word can be a verb; after options it is the job
            verbs = [CompletionItem(name, help=cmd.get_short_help_str())
                     for name, cmd in admin.commands.items()
                     if name.startswith(incomplete) and not cmd.hidden]
        return verbs + self._by_click(wrapper, args, incomplete)

    def _by_click(self, cli: click.Command, args: list[str],
                  incomplete: str) -> list[CompletionItem[str]]:
        self.cli = cli  # one answer per process: no other completion shares this object
        return super().get_completions(args, incomplete)


def _with_grammar(base: type[ShellComplete]) -> type[ShellComplete]:
    """*base* (registered under its shell's name) with lockrun's grammar in front."""
    return cast("type[ShellComplete]", type(f"Lockrun{base.__name__}", (_Grammar, base), {}))
