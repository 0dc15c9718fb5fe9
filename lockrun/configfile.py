"""/etc/lockrun.toml: shared settings, so crontab lines stay short.

The file only supplies defaults; click applies them below the command line
and the environment (flag > LOCKRUN_* variable > file > built-in default).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lockrun.errors import UsageError

DEFAULT_PATH = "/etc/lockrun.toml"
MAX_SIZE = 64 * 1024
"""A settings file is a few hundred bytes; anything near this is not one."""

# Settings that are not wrapper options but live in the file too.
EXTRA_SETTINGS = frozenset({"redis_password"})
# Never from a file: they are per crontab line, and what lockrun hands its child.
FORBIDDEN = frozenset({"key", "fire", "command"})


@dataclass(frozen=True)
class FileSettings:
    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    text: str = field(default="", repr=False)
    """The file as read once: line numbers come from it, never from a second open."""

    def where(self, name: str) -> str:
        """'FILE, line N' for a setting, so an error points at what to edit."""
        if self.path is None:
            return "the configuration file"
        return f"{self.path}, line {_line_of(self.text, name)}"


def config_path() -> str | None:
    """$LOCKRUN_CONFIG if set (empty: no file at all), else /etc/lockrun.toml if present.

    /etc/lockrun.toml counts as present when lstat() sees anything there, so a
    file this user may not read is an error, never silently skipped.
    """
    named = os.environ.get("LOCKRUN_CONFIG")
    if named is not None:
        return named or None
    try:
        os.lstat(DEFAULT_PATH)
    except FileNotFoundError:
        return None
    except OSError:
        pass  # e.g. EACCES on /etc: present as far as we can tell; reading it will say why
    return DEFAULT_PATH


def read_regular_file(path: str, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most *limit* bytes, or a UsageError.

    A FIFO would block a plain open(), and /dev/zero or /dev/urandom would be
    read until memory runs out, so the type is checked with stat() first and,
    against a swap in between, with fstat() on a descriptor opened
    non-blocking; the read stops one byte past the limit.
    """
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        if info.st_size > limit:
            raise UsageError(f"{what} {path} is larger than {limit // 1024} KiB")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew after fstat()
            raise UsageError(f"{what} {path} is larger than {limit // 1024} KiB")
        return b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def load(allowed: Mapping[str, str]) -> FileSettings:
    """Read and check the file; any problem is a usage error naming the file and line.

    *allowed* maps each option name to its kind in lockrun.optiontable
    (duration, whole, choice, flag, string, size), so a value's TOML type is checked
    against what the option takes: click would turn 3.7 into 3 and 1e16 into a
    duration. Kinds, not click parameters: a fire reads the file without click.
    """
    path = config_path()
    if path is None:
        return FileSettings()
    raw = read_regular_file(path, "configuration file", MAX_SIZE)
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    values: dict[str, Any] = {}
    settings = FileSettings(path, values, text)
    for name, value in data.items():
        option = name.replace("-", "_")
        if option in FORBIDDEN:
            raise UsageError(f"{settings.where(name)}: {name!r} cannot be set in the "
                             "configuration file; give it on each command line")
        if option not in allowed and option not in EXTRA_SETTINGS:
            raise UsageError(f"{settings.where(name)}: unknown setting {name!r}")
        if isinstance(value, (dict, list)):
            raise UsageError(f"{settings.where(name)}: {name!r} must be a single value")
        expected = _expected_type(allowed.get(option))
        if not _has_type(value, expected):
            raise UsageError(f"{settings.where(name)}: {name!r} must be {expected}, "
                             f"not {_toml_type(value)}")
        values[option] = value
    return settings


_BOOLEAN = "true or false"
_INTEGER = "a whole number (for example 3)"
_DURATION = 'a duration string such as "90s" or a whole number of seconds'
_SIZE = 'a size string such as "64k" or a whole number of bytes'
_STRING = "a string in double quotes"


def _expected_type(kind: str | None) -> str:
    """None: a setting that is no option (redis_password), a string."""
    return {"flag": _BOOLEAN, "whole": _INTEGER, "duration": _DURATION,
            "size": _SIZE}.get(kind or "", _STRING)


def _has_type(value: object, expected: str) -> bool:
    if expected == _BOOLEAN:
        return isinstance(value, bool)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if expected == _INTEGER:
        return is_int
    if expected in (_DURATION, _SIZE):
        return is_int or isinstance(value, str)
    return isinstance(value, str)


def _toml_type(value: object) -> str:
    """What TOML made of the value, without showing it: it may be a password."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    return "a date or time"


def _line_of(text: str, name: str) -> int | str:
    spelled = "[_-]".join(re.escape(part) for part in re.split("[_-]", name))
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\[?\s*[\"']?{spelled}[\"']?\s*[=\]]", line):
            return number
    return "?"
