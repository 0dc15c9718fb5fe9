"""Healthchecks-style pings: ``URL/start``, then ``URL`` or ``URL/<exit code>``.

Each call returns the warning to print instead of printing it, because it
runs on a worker thread while lockrun's loop keeps the lease (lockrun.monitor
decides what reaches stderr, and when).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lockrun import __version__

PING_TIMEOUT = 2.0
PING_ATTEMPTS = 2
PING_PAUSE = 0.3
PING_BODY_MAX = 100_000
"""The most of the output's tail sent with the final ping: what healthchecks.io keeps of a
ping's body (a self-hosted instance says its own limit; it keeps the body's start)."""


@dataclass
class Pinger:
    """Sends ``URL/start``, then ``URL`` on success or ``URL/<exit code>`` on failure."""

    url: str
    run_id: str

    def start(self, cancelled: threading.Event) -> str | None:
        return self._send("/start", cancelled)

    def log(self, cancelled: threading.Event) -> str | None:
        """healthchecks' /log: an event on the check's log that changes no state."""
        return self._send("/log", cancelled)

    def finish(self, exit_code: int, body: bytes = b"", retrying: bool = False) -> str | None:
        """The final ping; with --capture's tail a POST whose body healthchecks keeps as the
        ping's log (its last PING_BODY_MAX bytes: the end says why a job failed).

        A failed attempt that left a retry ticket sends /log instead: the fire has not
        failed yet, and a check that flips to down and back up on every retry pages
        people for nothing.
        """
        suffix = "/log" if retrying else "" if exit_code == 0 else f"/{exit_code}"
        return self._send(suffix, threading.Event(), body[-PING_BODY_MAX:] if body else None)

    def _target(self, suffix: str) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        query = "&".join(q for q in (parts.query, f"rid={self.run_id}") if q)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix, query=query))

    def _send(self, suffix: str, cancelled: threading.Event,
              body: bytes | None = None) -> str | None:
        """Return None when the monitor got the ping, else the warning to print.

        *cancelled* stops further attempts once the final ping is under way, so
        a late /start retry can never reach the monitor after the end.
        """
        import urllib.error
        import urllib.request

        target = self._target(suffix)  # the CLI only accepts http:// and https:// URLs
        headers = {"User-Agent": f"lockrun/{__version__}"}
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        request = urllib.request.Request(target, data=body, headers=headers)  # noqa: S310
        error = "not sent before the job ended"
        for attempt in range(PING_ATTEMPTS):
            if cancelled.is_set():
                break
            try:
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:  # noqa: S310
                    response.read(1024)
                return None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
                if attempt + 1 < PING_ATTEMPTS:
                    cancelled.wait(PING_PAUSE)
        return f"ping {hide_path(target)} failed: {error}"


def hide_path(url: str) -> str:
    """Ping URLs embed a secret check id (and may carry a user and password): show only
    scheme and host in messages, as --notify-url's are shown."""
    from lockrun.optiontable import hide_url_path

    return hide_url_path(url)
