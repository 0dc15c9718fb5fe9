"""/etc/lockrun.toml: shared settings, so crontab lines stay short.

The file only supplies defaults; click applies them below the command line
and the environment (flag > LOCKRUN_* variable > file > built-in default).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from lockrun.errors import UsageError

DEFAULT_PATH = "/etc/lockrun.toml"

# Settings that are not wrapper options but live in the file too.
EXTRA_SETTINGS = frozenset({"redis_password"})
# Never from a file: they are per crontab line, and what lockrun hands its child.
FORBIDDEN = frozenset({"key", "fire", "command"})


@dataclass(frozen=True)
class FileSettings:
    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def where(self, name: str) -> str:
        """'FILE, line N' for a setting, so an error points at what to edit."""
        if self.path is None:
            return "the configuration file"
        return f"{self.path}, line {_line_of(self.path, name)}"


def config_path() -> str | None:
    """$LOCKRUN_CONFIG if set (empty: no file at all), else /etc/lockrun.toml if present."""
    named = os.environ.get("LOCKRUN_CONFIG")
    if named is not None:
        return named or None
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def load(allowed: set[str]) -> FileSettings:
    """Read and check the file; any problem is a usage error naming the file and line."""
    path = config_path()
    if path is None:
        return FileSettings()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read configuration file {path}: {exc.strerror}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    values: dict[str, Any] = {}
    settings = FileSettings(path, values)
    for name, value in data.items():
        option = name.replace("-", "_")
        if option in FORBIDDEN:
            raise UsageError(f"{settings.where(name)}: {name!r} cannot be set in the "
                             "configuration file; give it on each command line")
        if option not in allowed and option not in EXTRA_SETTINGS:
            raise UsageError(f"{settings.where(name)}: unknown setting {name!r}")
        if isinstance(value, (dict, list)):
            raise UsageError(f"{settings.where(name)}: {name!r} must be a single value")
        values[option] = value
    return settings


def _line_of(path: str, name: str) -> int | str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if re.match(rf"\s*\[?\s*[\"']?{re.escape(name)}[\"']?\s*[=\]]", line):
                    return number
    except OSError:
        pass
    return "?"
