"""Duration parsing shared by every option that takes a DURATION."""

from __future__ import annotations

from lockrun.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MAX_DURATION = 366 * 86400.0
"""The cap of every DURATION (366d): past it, a value is a typo, and Redis expiries,
select() and timers would overflow or keep keys for millennia."""


def parse_duration(text: str, what: str = "duration") -> float:
    """Parse ``90``, ``90s``, ``1.5s``, ``500ms``, ``10m``, ``2h``, ``1d`` into seconds.

    A bare number means seconds, as in timeout(1) and flock(1). No sign, no
    exponent, no nan or inf: what cron lines need, and nothing that can
    overflow.
    """
    number, unit = _split_unit(text.strip(" \t"))
    whole, point, fraction = number.partition(".")
    # ASCII digits only: str.isdigit() also takes '٣' and '²'. At most 12 digits
    # before the point: anything longer is far beyond MAX_DURATION anyway, and
    # float() never sees a 400-digit number.
    if not (_digits(whole, 12) and (not point or _digits(fraction, 9))):
        raw_whole, raw_point, raw_fraction = _split_unit(text)[0].partition(".")
        if len(raw_whole) > 12 and _digits(raw_whole, len(raw_whole)) \
                and (not raw_point or _digits(raw_fraction, len(raw_fraction), empty=True)):
            raise UsageError(f"invalid {what}: a number of {len(text)} characters is far "
                             f"beyond the maximum of {format_duration(MAX_DURATION)}")
        raise UsageError(
            f"invalid {what} {shown(text)}: expected a number with an optional unit "
            "ms, s, m, h or d (for example 90, 90s, 10m, 2h, 1d)"
        )
    seconds = float(number) * _UNITS[unit]
    if seconds > MAX_DURATION:
        raise UsageError(f"invalid {what} {shown(text)}: the maximum is "
                         f"{format_duration(MAX_DURATION)}")
    return seconds


def _split_unit(text: str) -> tuple[str, str]:
    """'90s' -> ('90', 's'); a bare number is seconds, as in timeout(1) and flock(1)."""
    for unit in ("ms", "s", "m", "h", "d"):  # "ms" before "s"
        if text.endswith(unit):
            return text[:-len(unit)], unit
    return text, "s"


def _digits(text: str, most: int, empty: bool = False) -> bool:
    """1..*most* ASCII digits (0..most with *empty*)."""
    return (empty or 0 < len(text)) and len(text) <= most and text.isascii() \
        and (not text or text.isdigit())


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
