"""Duration parsing shared by every option that takes a DURATION."""

import re

from lockrun.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# [0-9], not \d: \d also matches Arabic-Indic and other Unicode digits. At most
# 12 digits before the point: anything longer is far beyond MAX_DURATION anyway,
# and float() never sees a 400-digit number.
_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|s|m|h|d)?", re.ASCII)

MAX_DURATION = 366 * 86400.0
"""The cap of every DURATION (366d): past it, a value is a typo, and Redis expiries,
select() and timers would overflow or keep keys for millennia."""


def parse_duration(text: str, what: str = "duration") -> float:
    """Parse ``90``, ``90s``, ``1.5s``, ``500ms``, ``10m``, ``2h``, ``1d`` into seconds.

    A bare number means seconds, as in timeout(1) and flock(1). No sign, no
    exponent, no nan or inf: what cron lines need, and nothing that can
    overflow.
    """
    match = _DURATION.fullmatch(text.strip(" \t"))
    if match is None:
        long_digits = re.fullmatch(r"[0-9]{13,}(?:\.[0-9]*)?(ms|s|m|h|d)?", text, re.ASCII)
        if long_digits:
            raise UsageError(f"invalid {what}: a number of {len(text)} characters is far "
                             f"beyond the maximum of {format_duration(MAX_DURATION)}")
        raise UsageError(
            f"invalid {what} {shown(text)}: expected a number with an optional unit "
            "ms, s, m, h or d (for example 90, 90s, 10m, 2h, 1d)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_DURATION:
        raise UsageError(f"invalid {what} {shown(text)}: the maximum is "
                         f"{format_duration(MAX_DURATION)}")
    return seconds


def shown(text: str, limit: int = 40) -> str:
    """*text* quoted for a one-line message: escapes control characters, cuts long values."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


def format_duration(seconds: float) -> str:
    """Render seconds back in the largest unit that divides them exactly."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def human_duration(seconds: float) -> str:
    """4m10s, 2h5m, 3d1h: two units are enough to read an outage's length."""
    s = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts[:2])
