"""Duration parsing shared by every option that takes a DURATION."""

import re

from lockrun.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")


def parse_duration(text: str, what: str = "duration") -> float:
    """Parse ``90``, ``90s``, ``1.5s``, ``500ms``, ``10m``, ``2h``, ``1d`` into seconds.

    A bare number means seconds, as in timeout(1) and flock(1).
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"invalid {what} {text!r}: expected a number with an optional unit "
            "ms, s, m, h or d (for example 90, 90s, 10m, 2h, 1d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """Render seconds back in the largest unit that divides them exactly."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
