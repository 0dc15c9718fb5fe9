"""Job keys and fire ids: the two names that make a per-fire lock."""

from __future__ import annotations

import time

from lockrun.errors import UsageError

NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def validate_name(value: str, what: str) -> str:
    """Keys and fire ids become part of Redis key names, so only a safe charset passes.

    Braces would break the Cluster hash tag, spaces and control characters would
    make keys unreadable in ``redis-cli``.
    """
    if not 0 < len(value) <= 200 or not NAME_CHARS.issuperset(value):
        shown = value if value.isprintable() else value.encode("unicode_escape").decode()
        raise UsageError(
            f"invalid {what} {shown!r}: use 1-200 characters, each a letter, a digit, "
            "'.', '_', '-' or ':'"
        )
    return value


def minute_fire(now: float | None = None) -> str:
    """The fire id of the current UTC minute, e.g. ``2026-11-22T03:00:00Z``.

    Every server whose cron starts the job within the same minute computes the
    same id, whatever its local time zone.
    """
    t = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y-%m-%dT%H:%M:00Z", t)
