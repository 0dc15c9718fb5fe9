"""Messages on stderr: silent by default, because cron mails whatever a job prints."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, Protocol

    class Notices(Protocol):
        """Memory across invocations (lockrun.state.HostState): a standing problem is news
        once."""

        def notice_first(self, topic: str) -> bool: ...

        def notice_clear(self, topic: str) -> None: ...

_PLAIN_USER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


def redact(text: str) -> str:
    """Hide the userinfo password of every URL inside *text*, whatever the URL's shape.

    Redaction must not depend on the URL being valid: it runs on messages
    about malformed URLs too. Every URL-looking token (any scheme, any case)
    loses everything up to its last '@', the only character that can end a
    password, so a raw '/', ':', '@' or '%' in the password cannot shorten
    what is hidden.
    """
    if "://" not in text:
        return text  # every message passes here: no regex for the common case
    import re

    return re.sub(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s]*)",
                  lambda m: m["scheme"] + _hide_userinfo(m["rest"]), text)


def redact_url(url: str) -> str:
    """*url* (one whole value, spaces included) with its password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _hide_userinfo(url)
    return f"{scheme}{sep}{_hide_userinfo(rest)}"


def _hide_userinfo(rest: str) -> str:
    """USER:***@ when the user name is plainly one; otherwise ***@ (it may be a password)."""
    userinfo, at, after = rest.rpartition("@")
    if not at:
        return rest
    user, colon, _ = userinfo.partition(":")
    if colon and set(user) <= _PLAIN_USER:
        return f"{user}:***@{after}"
    return f"***@{after}"


class Verbosity:
    """How much a Reporter says; plain ints (no enum import on every fire), compared by
    order."""

    QUIET: Final = 0
    NORMAL: Final = 1
    VERBOSE: Final = 2


SYSLOG_SOCKET = "/dev/log"
_SEVERITY = {"error": 3, "warning": 4, "info": 6}
_LOG_CRON = 9


class Reporter:
    """Writes ``lockrun: ...`` lines; errors always, warnings unless quiet, info if verbose.

    With --log-format json each line is one JSON object for log shippers; with
    --syslog every line, decisions included, also goes to syslog (facility
    cron), so operators can follow decisions without cron mailing them.
    """

    def __init__(self, verbosity: int = Verbosity.NORMAL, json_lines: bool = False,
                 syslog: bool = False) -> None:
        self.verbosity = verbosity
        self.json_lines = json_lines
        self.syslog = syslog
        self.context: dict[str, str] = {}
        self.notices: Notices | None = None

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
            self.syslog = False  # once per invocation, and once per server while it lasts:
            first = self.notices is None or self.notices.notice_first("syslog")
            self._emit("warning", f"cannot write to syslog at {path}: {exc.strerror} (said "
                       "once: lockrun stays quiet about it until syslog works again)",
                       first and self.verbosity >= Verbosity.NORMAL)
        else:
            if self.notices is not None:
                self.notices.notice_clear("syslog")

    def error(self, message: str) -> None:
        self._emit("error", message, True)

    def warning(self, message: str) -> None:
        self._emit("warning", message, self.verbosity >= Verbosity.NORMAL)

    def info(self, message: str) -> None:
        self._emit("info", message, self.verbosity >= Verbosity.VERBOSE)
