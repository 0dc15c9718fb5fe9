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
    """--tz, else CRON_TZ or TZ, else the system zone (/etc/localtime).

    Each value is read the way glibc reads TZ, so the schedule lockrun
    computes is the one cron keeps: a zone name, ``:NAME``, a TZif file as
    ``:/PATH`` (or ``/PATH``), or a POSIX rule such as ``JST-9`` or
    ``EST5EDT,M3.2.0,M11.1.0``; a leading colon changes nothing, as in glibc.
    Whatever none of these accepts is an error naming the value's source:
    glibc would quietly use UTC instead.
    """
    if name == "":
        raise UsageError("invalid value for --tz: empty; give a zone such as Europe/Berlin, "
                         "or leave --tz out for $CRON_TZ, $TZ or the system zone")
    for candidate, source in ((name, "--tz"), (os.environ.get("CRON_TZ"), "CRON_TZ"),
                              (os.environ.get("TZ"), "TZ")):
        if candidate:  # an empty variable counts as unset, as it always has
            return _zone(candidate, source)
    return _system_zone()


def _system_zone() -> tzinfo:
    from zoneinfo import ZoneInfo

    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


TZIF_MAX = 1024 * 1024
"""Real TZif files are a few KiB; the cap keeps a device or a huge file from being read."""


def _zone(value: str, source: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from lockrun.durations import shown

    def unknown(why: str) -> UsageError:
        return UsageError(f"unknown time zone {shown(value, 60)} (from {source}): {why}")

    if not value.isascii() or not value.isprintable() or " " in value:
        raise unknown("it holds a space, a control character or a non-ASCII character")
    text = value.removeprefix(":")
    if not text:
        return _system_zone()  # glibc: TZ=":" means the system's default zone
    if text.startswith("/"):
        import io

        from lockrun.configfile import read_regular_file

        try:
            data = read_regular_file(text, "time zone file", TZIF_MAX)
        except UsageError as exc:
            raise unknown(str(exc)) from None
        try:
            return ZoneInfo.from_file(io.BytesIO(data), key=text)
        except ValueError:
            raise unknown(f"{text} is not a TZif time zone file") from None
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    zone = posix_zone(text)  # glibc, too, tries a file first, then a rule
    if zone is None:
        raise unknown("neither a zone name (like Europe/Berlin) nor a POSIX TZ rule "
                      "(like UTC0, JST-9 or EST5EDT,M3.2.0,M11.1.0)")
    return zone


US_RULES = ",M3.2.0,M11.1.0"
"""glibc's rule for a POSIX zone with a DST name but no rule (its posixrules file)."""


def posix_zone(rule: str) -> tzinfo | None:
    """A POSIX TZ rule as a tzinfo, or None if it is not one.

    The stdlib already implements POSIX rules, for the footer of TZif files;
    a TZif file with no transitions and *rule* as its footer uses the rule
    for every instant, with zoneinfo's own validation of the string.
    """
    import io
    import struct
    from zoneinfo import ZoneInfo

    if not rule[:1].isalpha() and not rule.startswith("<"):
        return None
    for footer in (rule, rule + US_RULES) if "," not in rule else (rule,):
        # counts: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt; one UTC type
        block = b"TZif2" + bytes(15) + struct.pack(">6l", 0, 0, 0, 0, 1, 1)
        block += struct.pack(">lBB", 0, 0, 0) + b"\0"
        data = block + block + b"\n" + footer.encode("ascii") + b"\n"
        try:
            return ZoneInfo.from_file(io.BytesIO(data), key=rule)
        except ValueError:
            continue
    return None


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


def cron_zones() -> list[tzinfo]:
    """The zones a cron daemon may have scheduled this tick in, when --tz is not given.

    cronie schedules a crontab in its CRON_TZ; Debian's cron ignores CRON_TZ
    and schedules in the system zone, yet hands CRON_TZ (and TZ) to the job.
    Trusting one of them breaks every --schedule line under the other daemon:
    each tick is "too late" in the zone the daemon did not use, silently.
    """
    zones: list[tzinfo] = []
    for variable in ("CRON_TZ", "TZ"):
        value = os.environ.get(variable)
        if value:  # an empty variable counts as unset
            zones.append(_zone(value, variable))
    system = _system_zone()
    if not any(_same_zone(system, z) for z in zones):
        zones.append(system)
    return zones


def _same_zone(a: tzinfo, b: tzinfo) -> bool:
    return a is b or str(a) == str(b)


def slot_of_tick(expr: str, zones: list[tzinfo], now: float) -> Slot:
    """The slot this tick belongs to in the zone that explains it: the latest among *zones*.

    A tick cron started in one zone is a scheduled time (within the grace) in
    that zone; in another zone whose offset differs, the latest slot is hours
    old. Zone offsets differ by at least 15 minutes, so with any grace below
    that the choice is unambiguous.
    """
    slots = [validate(expr, zone, now) for zone in zones]
    return max(slots, key=lambda slot: slot.fire)


def validate(expr: str, zone: tzinfo, now: float) -> Slot:
    """Parse and evaluate once, so a bad expression is a usage error before Redis is touched."""
    slot = current_slot(normalise(expr), zone, now)
    if slot.next <= slot.fire:  # defensive: cronsim must move forward
        raise UsageError(f"--schedule {expr!r} gives no next fire after {fire_id(slot.fire)}")
    return slot


def hold_until_next(slot: Slot, now: float, margin: timedelta = timedelta(minutes=5)) -> float:
    """Seconds the done record must live so no later tick of this slot runs it again."""
    return max(0.0, slot.next - now) + margin.total_seconds()
