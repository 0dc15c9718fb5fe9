"""Fire ids from a cron schedule: the scheduled slot, not the moment cron started us.

A fleet agrees on a fire id only if every server derives it from the same
schedule instant. The id is that instant in UTC, so DST and local zones
cannot make two servers disagree; cronsim supplies Debian cron's DST rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from lockrun.errors import UsageError

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class Slot:
    """The latest scheduled fire at or before now, and the one after it (UTC epochs)."""

    fire: float
    next: float

    @property
    def fire_id(self) -> str:
        return fire_id(self.fire)


def fire_id(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise(expr: str) -> str:
    """Expand macros and insist on the five fields a crontab line has."""
    text = " ".join(expr.split())
    text = MACROS.get(text.lower(), text)
    if len(text.split()) != 5:
        raise UsageError(
            f"invalid --schedule {expr!r}: use 5 cron fields (minute hour day month weekday) "
            "or @hourly, @daily, @weekly, @monthly, @yearly"
        )
    return text


def zone_from(name: str | None) -> tzinfo:
    """--tz, else CRON_TZ or TZ, else the system zone (/etc/localtime)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    for candidate, source in ((name, "--tz"), (os.environ.get("CRON_TZ"), "CRON_TZ"),
                              (os.environ.get("TZ"), "TZ")):
        if candidate:
            try:
                return ZoneInfo(candidate.removeprefix(":"))
            except (ZoneInfoNotFoundError, ValueError):
                raise UsageError(f"unknown time zone {candidate!r} (from {source})") from None
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except OSError:
        return timezone.utc


def current_slot(expr: str, zone: tzinfo, now: float) -> Slot:
    """The slot that a cron tick at *now* belongs to.

    cronsim's reverse iteration first steps back one second, so we start one
    second past now: a fire exactly at now is then found, not skipped. It
    searches in local wall time, so in the repeated hour after a fall-back it
    can land a day early (02:10 CET reverses to yesterday's 02:30, though
    today's 02:30 CEST already passed); stepping forward while the following
    fire is not in the future corrects that in real time.
    """
    from cronsim import CronSim, CronSimError

    start = datetime.fromtimestamp(int(now) + 1, zone)
    try:
        fire = next(CronSim(expr, start, reverse=True))
        following = next(CronSim(expr, fire, reverse=False))
        for _ in range(4):
            if following.timestamp() > now:
                break
            fire, following = following, next(CronSim(expr, following, reverse=False))
    except CronSimError as exc:
        raise UsageError(f"invalid --schedule {expr!r}: {exc}") from None
    except StopIteration:
        raise UsageError(f"--schedule {expr!r} never fires") from None
    return Slot(fire.timestamp(), following.timestamp())


def validate(expr: str, zone: tzinfo, now: float) -> Slot:
    """Parse and evaluate once, so a bad expression is a usage error before Redis is touched."""
    slot = current_slot(normalise(expr), zone, now)
    if slot.next <= slot.fire:  # defensive: cronsim must move forward
        raise UsageError(f"--schedule {expr!r} gives no next fire after {fire_id(slot.fire)}")
    return slot


def hold_until_next(slot: Slot, now: float, margin: timedelta = timedelta(minutes=5)) -> float:
    """Seconds the done record must live so no later tick of this slot runs it again."""
    return max(0.0, slot.next - now) + margin.total_seconds()
