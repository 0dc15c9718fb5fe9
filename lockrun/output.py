"""Messages on stderr: silent by default, because cron mails whatever a job prints."""

import re
import sys
from enum import IntEnum

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def redact(text: str) -> str:
    """Hide the password of any Redis URL inside *text*."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


class Verbosity(IntEnum):
    QUIET = 0
    NORMAL = 1
    VERBOSE = 2


class Reporter:
    """Writes ``lockrun: ...`` lines; errors always, warnings unless quiet, info if verbose."""

    def __init__(self, verbosity: Verbosity = Verbosity.NORMAL) -> None:
        self.verbosity = verbosity

    def _emit(self, message: str) -> None:
        line = redact(" ".join(message.split()))
        try:
            sys.stderr.write(f"lockrun: {line}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not change the exit status

    def error(self, message: str) -> None:
        self._emit(message)

    def warning(self, message: str) -> None:
        if self.verbosity >= Verbosity.NORMAL:
            self._emit(message)

    def info(self, message: str) -> None:
        if self.verbosity >= Verbosity.VERBOSE:
            self._emit(message)
