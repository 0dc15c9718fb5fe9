"""The hot path's parser: a crontab line of the wrapper form, read without click.

Why: every server starts lockrun at every fire and all but one only skip, so
click's import (about 24 ms of CPU) would be paid N-1 times for nothing. This
reads ``-k KEY [OPTIONS] -- COMMAND...`` from the option table
(lockrun.optiontable) with the converters click uses, the LOCKRUN_* variables
as click reads them and the configuration file, with click's precedence:
flag > variable > file > default.

It answers only when it is certain. On anything else (--help, --version, an
unknown option, a missing value, a value a converter refuses, a verb, no
``--``, a bad file) it returns None and lockrun.cli runs the click command,
so every message stays click's (tests/test_argv.py checks both agree).
"""

from __future__ import annotations

import os
import time

from lockrun.errors import UsageError
from lockrun.optiontable import WRAPPER, invocation, password, to_flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from lockrun.optiontable import Invocation, Option, Value

_LONG = {flag: o for o in WRAPPER for flag in o.flags if flag.startswith("--")}
_SHORT = {flag[1]: o for o in WRAPPER for flag in o.flags if len(flag) == 2}


def parse(args: list[str], now: float | None = None) -> Invocation | None:
    """The Invocation of *args*, or None to let click parse them."""
    given = _given(args)
    if given is None:
        return None
    options, command = given
    environ = os.environ
    file_values: Mapping[str, Value] = {}
    if file_named(environ):
        try:
            file_values = _file_values()
        except UsageError:
            return None
    values: dict[str, Value] = {}
    try:
        for option in WRAPPER:
            value = _raw(option, options, environ, file_values)
            values[option.name] = option.value_default if value is None else option.convert(value)
        if values["key"] is None:
            return None
        return invocation(values, command, password(environ, file_values),
                          time.time() if now is None else now)
    except (UsageError, _Unsure):
        return None


class _Unsure(Exception):
    """A value click would read differently or refuse: click's turn."""


def _raw(option: Option, given: Mapping[str, str | bool], environ: Mapping[str, str],
         file_values: Mapping[str, Value]) -> Value:
    """The value with the highest precedence, before conversion; None: the default."""
    if option.name in given:
        return given[option.name]
    if option.env is not None:
        text = environ.get(option.env)
        if text:  # click: an empty variable counts as unset
            if option.kind != "flag":
                return text
            flag = to_flag(text)
            if flag is None:
                raise _Unsure(option.env)
            return flag
    return file_values.get(option.name)


def _given(args: list[str]) -> tuple[dict[str, str | bool], tuple[str, ...]] | None:
    """The options before ``--`` as spelled (the last of a repeated one wins), and the job."""
    try:
        end = args.index("--")
    except ValueError:
        return None
    head, command = args[:end], tuple(args[end + 1:])
    given: dict[str, str | bool] = {}
    i = 0
    while i < len(head):
        word = head[i]
        i += 1
        if word.startswith("--"):
            spelled, eq, value = word.partition("=")
            option = _LONG.get(spelled)
            if option is None:
                return None
            if option.kind == "flag":
                if eq:
                    return None  # click: "does not take a value"
                given[option.name] = True
                continue
            if not eq:
                if i == len(head):  # click: the next word, whatever it is
                    return None
                value = head[i]
                i += 1
            given[option.name] = value
        elif word.startswith("-") and len(word) > 1:
            for j in range(1, len(word)):
                option = _SHORT.get(word[j])
                if option is None:
                    return None
                if option.kind == "flag":
                    given[option.name] = True
                    continue
                value = word[j + 1:]
                if not value:
                    if i == len(head):  # click: the next word, whatever it is
                        return None
                    value = head[i]
                    i += 1
                given[option.name] = value
                break
        else:
            return None  # a verb, or a word click reads as the job's first
    return given, command


def file_named(environ: Mapping[str, str]) -> bool:
    """Whether lockrun.configfile would read a file, without importing it.

    lockrun.configfile.config_path's rule: $LOCKRUN_CONFIG if set (empty: no
    file), else /etc/lockrun.toml if lstat() sees anything there. A False here
    must mean no file; a True only costs the loader.
    """
    named = environ.get("LOCKRUN_CONFIG")
    if named is not None:
        return bool(named)
    try:
        os.lstat("/etc/lockrun.toml")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _file_values() -> Mapping[str, Value]:
    """The file's values, their TOML types checked by its loader against the table."""
    from lockrun.configfile import load
    from lockrun.optiontable import option_kinds

    values: Mapping[str, Value] = load(option_kinds()).values
    return values
