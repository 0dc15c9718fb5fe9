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


SYSLOG_SOCKET = "/dev/log"
_SEVERITY = {"error": 3, "warning": 4, "info": 6}
_LOG_CRON = 9


class Reporter:
    """Writes ``lockrun: ...`` lines; errors always, warnings unless quiet, info if verbose.

    With --log-format json each line is one JSON object for log shippers; with
    --syslog every line, decisions included, also goes to syslog (facility
    cron), so operators can follow decisions without cron mailing them.
    """

    def __init__(self, verbosity: Verbosity = Verbosity.NORMAL, json_lines: bool = False,
                 syslog: bool = False) -> None:
        self.verbosity = verbosity
        self.json_lines = json_lines
        self.syslog = syslog
        self.context: dict[str, str] = {}

    def _emit(self, level: str, message: str, shown: bool) -> None:
        if not (shown or self.syslog):
            return  # a silent skip is the common case: do no work for it
        line = redact(" ".join(message.split()))
        if self.syslog:
            self._to_syslog(level, line)
        if not shown:
            return
        if self.json_lines:
            import json
            import time

            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "level": level, **self.context, "msg": line}
            text = json.dumps(record)
        else:
            text = f"lockrun: {line}"
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not change the exit status

    def _to_syslog(self, level: str, line: str) -> None:
        import os
        import socket

        path = os.environ.get("LOCKRUN_SYSLOG_SOCKET", SYSLOG_SOCKET)
        priority = _LOG_CRON * 8 + _SEVERITY[level]
        data = f"<{priority}>lockrun[{os.getpid()}]: {line}".encode(errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A syslog daemon that stops reading fills the socket's queue; a
                # blocking send would then hold the supervision loop, and with it
                # the lease renewals. A message dropped is better than a lost lease.
                sock.setblocking(False)
                sock.connect(path)
                sock.send(data)
        except OSError as exc:
            self.syslog = False  # say it once, then stop trying
            self._emit("warning", f"cannot write to syslog at {path}: {exc.strerror}",
                       self.verbosity >= Verbosity.NORMAL)

    def error(self, message: str) -> None:
        self._emit("error", message, True)

    def warning(self, message: str) -> None:
        self._emit("warning", message, self.verbosity >= Verbosity.NORMAL)

    def info(self, message: str) -> None:
        self._emit("info", message, self.verbosity >= Verbosity.VERBOSE)
