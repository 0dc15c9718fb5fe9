"""lockrun explain: what a fire of one crontab line would do on this server now, and why.

Why a verb of its own: when a job "did not run", the answer is spread over the
fire id (the clock, --fire, or --schedule and the zone cron used), the grace,
and the records other servers left in Redis (a done or running fire, the
overlap guard, a pause). This computes the fire id with the code a fire uses
(lockrun.optiontable.invocation, lockrun.schedule), then takes the decision
the claim's script would take, from the same keys in the same order, but reads
them with plain read commands (TIME, INFO, HGETALL, PTTL, GET): asking must
never change the answer, so no script runs and nothing is written.

The decision mirrors lockrun.runner (command lookup, too late, Redis unusable
and --on-redis-error) and lockrun.protocol.ACQUIRE (fire record, paused
record, job pause, fleet pause, overlap guard); tests/test_explain.py runs a
real fire after each explanation and checks they agree.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from lockrun.client import LockClient
from lockrun.config import Config
from lockrun.errors import CommandNotExecutable, CommandNotFound, RedisUnavailable
from lockrun.exitcodes import ExitCode
from lockrun.protocol import fleet_keys, host_name, job_keys
from lockrun.resp import ServerError

if TYPE_CHECKING:
    from collections.abc import Callable

NEXT_FIRES = 5
"""How many scheduled fires after now are listed."""


@dataclass
class ZoneChoice:
    """One zone lockrun considered for --schedule, and the fire id it gives now."""

    zone: str
    source: str
    """--tz, CRON_TZ, TZ or system."""
    fire_id: str


@dataclass
class Derivation:
    """How the fire id was made: what an operator compares with the other servers'."""

    source: str
    """minute (the current UTC minute), fire (--fire) or schedule (--schedule)."""
    text: str
    schedule: str | None = None
    zone: str | None = None
    zone_source: str | None = None
    considered: list[ZoneChoice] = field(default_factory=list)
    """Without --tz: every zone cron may have used; the chosen one's slot is the latest."""


@dataclass
class NextFire:
    fire_id: str
    local: str
    utc: str
    utc_offset: str
    notes: list[str] = field(default_factory=list)
    """DST: a gap or fold at this fire, or an offset that differs from now's."""


@dataclass
class ScheduleView:
    expr: str
    zone: str
    scheduled_epoch: float
    scheduled_local: str
    scheduled_utc: str
    grace_s: float
    deadline_epoch: float
    deadline_local: str
    deadline_utc: str
    too_late: bool
    late_s: float
    """Seconds since the scheduled time (negative: never; the slot is at or before now)."""
    next: list[NextFire] = field(default_factory=list)


@dataclass
class Record:
    """One Redis key as read: a hash's fields (empty: no such key) and its remaining TTL."""

    name: str
    fields: dict[str, str]
    pttl_ms: int | None
    """Milliseconds left; -1 no expiry, -2 no key, None unknown (PTTL refused by the ACL)."""

    @property
    def exists(self) -> bool:
        return bool(self.fields)


@dataclass
class RedisView:
    url: str
    usable: bool
    error: str = ""
    role: str | None = None
    """None on Cluster (each key's slot has its own primary) or when unreachable."""
    skew_s: float | None = None
    """This server's clock minus the Redis server's, in seconds."""
    fire: Record | None = None
    guard: Record | None = None
    pause: Record | None = None
    fleet_pause: Record | None = None
    tries: Record | None = None
    """--retries: the fire's attempts that ended and the hosts that failed them."""
    last_fence: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Decision:
    action: str
    """run, run-without-lock, skip or fail."""
    reason: str
    """claim, replace, done, held, paused, overlap, too-late, redis-unusable, command-not-found,
    command-not-executable."""
    text: str
    exit_status: int | None
    """What the fire would exit with; None: the job's own status."""
    exit_text: str
    notes: list[str] = field(default_factory=list)
    within_grace: Decision | None = None
    """When too late: what a tick within the grace would decide with Redis as it is now
    (the pause, the guard...), so "and the next fire?" has an answer too."""


@dataclass
class Explanation:
    key: str
    host: str
    now_epoch: float
    now_utc: str
    fire: str
    derivation: Derivation
    schedule: ScheduleView | None
    command: list[str]
    command_path: str | None
    command_problem: str | None
    redis: RedisView
    decision: Decision

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def explain(cfg: Config, now: float, *, schedule: str | None, tz: str | None,
            fire_given: bool) -> Explanation:
    """Everything a fire of *cfg* at *now* would decide, read from Redis without writing.

    *schedule*, *tz* and *fire_given* are the line's own values: Config keeps only
    their result (the slot and the fire id), and the explanation is how it came to be.
    """
    derivation, zone = _derivation(cfg, now, schedule, tz, fire_given)
    view = _schedule_view(cfg, now, schedule, zone) if schedule is not None and zone else None
    path, problem, problem_status = _command(cfg)
    redis = read_redis(cfg)
    decision = decide(cfg, view, problem, problem_status, redis)
    return Explanation(
        key=cfg.key, host=host_name(), now_epoch=now, now_utc=_utc(now), fire=cfg.fire,
        derivation=derivation, schedule=view, command=list(cfg.command), command_path=path,
        command_problem=problem, redis=redis, decision=decision)


# The fire id and the schedule.

def _derivation(cfg: Config, now: float, schedule: str | None, tz: str | None,
                fire_given: bool) -> tuple[Derivation, tzinfo | None]:
    if schedule is None:
        if fire_given:
            return Derivation("fire", "given with --fire: every server's line must give the "
                                      "same id"), None
        return Derivation("minute", "the current UTC minute (no --fire, no --schedule): a "
                                    "server whose cron starts it in another minute uses "
                                    "another id"), None
    from lockrun.schedule import cron_zones, validate, zone_from

    if tz is not None:
        zone = zone_from(tz)
        return Derivation("schedule", f"the latest time of --schedule {schedule!r} at or "
                                      f"before now, in {zone_name(zone)} (--tz)",
                          schedule, zone_name(zone), "--tz"), zone
    sources = [v for v in ("CRON_TZ", "TZ") if os.environ.get(v)] + ["system"]
    considered: list[tuple[ZoneChoice, float, tzinfo]] = []
    for source, zone in zip(sources, cron_zones(), strict=False):
        slot = validate(schedule, zone, now)
        considered.append((ZoneChoice(zone_name(zone), source, slot.fire_id), slot.fire, zone))
    # lockrun.schedule.slot_of_tick: max() keeps the first of equal slots
    chosen, _, zone = max(considered, key=lambda c: c[1])
    others = [c for c, _, _ in considered if c is not chosen]
    text = (f"the latest time of --schedule {schedule!r} at or before now, in "
            f"{chosen.zone} (from {_source(chosen.source)})")
    if others:
        text += ("; without --tz lockrun takes the zone whose slot is the latest, among "
                 + ", ".join(f"{c.zone} (from {_source(c.source)}: {c.fire_id})" for c in others))
    return Derivation("schedule", text, schedule, chosen.zone, chosen.source,
                      [c for c, _, _ in considered]), zone


def _source(source: str) -> str:
    return {"system": "the system, /etc/localtime", "--tz": "--tz"}.get(source, f"${source}")


def zone_name(zone: tzinfo) -> str:
    """The zone as an operator knows it: Europe/Berlin, not 'localtime'."""
    key = getattr(zone, "key", None)
    if key == "localtime":
        target = os.path.realpath("/etc/localtime")
        return target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else "/etc/localtime"
    if isinstance(key, str) and key:
        return key
    return str(zone)


def _schedule_view(cfg: Config, now: float, expr: str, zone: tzinfo) -> ScheduleView:
    from lockrun.schedule import normalise

    slot = cfg.slot
    assert slot is not None, "--schedule always gives a slot"
    deadline = slot.fire + cfg.grace
    return ScheduleView(
        expr=expr, zone=zone_name(zone), scheduled_epoch=slot.fire,
        scheduled_local=_local(slot.fire, zone), scheduled_utc=_utc(slot.fire),
        grace_s=cfg.grace, deadline_epoch=deadline, deadline_local=_local(deadline, zone),
        deadline_utc=_utc(deadline), too_late=now - slot.fire > cfg.grace,  # as lockrun.runner
        late_s=now - slot.fire, next=next_fires(normalise(expr), zone, slot.fire, now))


def next_fires(expr: str, zone: tzinfo, current: float, now: float,
               count: int = NEXT_FIRES) -> list[NextFire]:
    """The *count* scheduled fires after *now*, as lockrun.schedule (cronsim) finds them,
    each with what DST does to it."""
    from cronsim import CronSim

    fires: list[float] = []
    it = CronSim(expr, datetime.fromtimestamp(now, zone))
    for _ in range(count * 4):  # bounded; a fold can hand back a time already passed
        if len(fires) == count:
            break
        try:
            t = next(it).timestamp()
        except StopIteration:
            break
        if t > now and (not fires or t > fires[-1]):
            fires.append(t)
    fixed = _fixed_time(expr)
    now_offset = datetime.fromtimestamp(now, zone).utcoffset()
    result = []
    previous = current
    for t in fires:
        local = datetime.fromtimestamp(t, zone)
        notes = _gap_notes(expr, zone, previous, t, fixed) + _fold_notes(local, fixed)
        if local.utcoffset() != now_offset:
            notes.append(f"UTC offset {_offset(local)} ({local.tzname()}); now it is "
                         f"{_offset(datetime.fromtimestamp(now, zone))}")
        result.append(NextFire(_fire_id(t), _local(t, zone), _utc(t), _offset(local), notes))
        previous = t
    return result


def _fixed_time(expr: str) -> bool:
    """cronsim's (and Debian cron's) rule: a job at a fixed hour and minute keeps local
    wall time across DST (moved out of a gap, run once in a fold); any other runs by
    the clock (skipped in a gap, run twice in a fold)."""
    minute, hour = expr.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def _imaginary(wall: datetime, zone: tzinfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != wall


def _gap_notes(expr: str, zone: tzinfo, previous: float, t: float, fixed: bool) -> list[str]:
    """Scheduled wall times between the previous fire and *t* that do not exist here."""
    from cronsim import CronSim

    start = datetime.fromtimestamp(previous, zone).replace(tzinfo=None)
    end = datetime.fromtimestamp(t, zone).replace(tzinfo=None)
    missing: list[str] = []
    it = CronSim(expr, start)  # naive: wall times, no DST
    for _ in range(200):
        try:
            wall = next(it)
        except StopIteration:
            break
        if wall > end:
            break
        if _imaginary(wall, zone):
            missing.append(wall.strftime("%H:%M"))
    if not missing:
        return []
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    local = datetime.fromtimestamp(t, zone)
    if fixed:
        return [f"in a DST gap: local {shown} does not exist that day; cron runs it at "
                f"{local.strftime('%H:%M')} {local.tzname()} instead"]
    one = len(missing) == 1
    return [f"after a DST gap: local {shown} {'does' if one else 'do'} not exist that day, "
            f"so no fire for {'it' if one else 'them'}"]


def _fold_notes(local: datetime, fixed: bool) -> list[str]:
    other = local.replace(fold=1 - local.fold)
    if other.utcoffset() == local.utcoffset():
        return []
    which = "second" if local.fold else "first"
    wall = local.strftime("%H:%M")
    if fixed:
        return [f"in a DST fold: local {wall} occurs twice; cron runs it once, at the "
                f"{which} ({local.tzname()})"]
    return [f"in a DST fold: local {wall} occurs twice; this is the {which} "
            f"({local.tzname()}), each with its own fire id"]


def _fire_id(epoch: float) -> str:
    from lockrun.schedule import fire_id

    return fire_id(epoch)


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(epoch: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(epoch, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _offset(local: datetime) -> str:
    delta = local.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# The command, as a fire looks it up before it contacts Redis.

def _command(cfg: Config) -> tuple[str | None, str | None, int | None]:
    from lockrun.command import resolve_command
    from lockrun.runner import child_environment

    try:
        return resolve_command(cfg.command, child_environment(cfg)), None, None
    except (CommandNotFound, CommandNotExecutable) as exc:
        return None, str(exc), exc.exit_code


# Redis, read only.

def read_redis(cfg: Config) -> RedisView:
    """The keys the claim's script reads, with plain read commands; never a script."""
    view = RedisView(url=_shown_url(cfg.redis_url), usable=False)
    try:
        client = LockClient(cfg.redis_url, cfg.redis_timeout, cfg.redis_password, cfg.tls)
    except RedisUnavailable as exc:
        view.error = str(exc)
        return view
    try:
        _read(cfg, client, view)
    except RedisUnavailable as exc:
        view.error = str(exc)
        view.usable = False
    finally:
        client.close()
    return view


def _shown_url(url: str) -> str:
    from lockrun.output import redact_url

    return redact_url(url)


def _read(cfg: Config, client: LockClient, view: RedisView) -> None:
    sent = time.time()
    server = client.server_time()
    view.skew_s = round((sent + time.time()) / 2 - server, 3) + 0.0
    if not client.cluster:  # on Cluster each slot's primary answers for its own keys
        view.role = _role(client)
        if view.role != "master":
            view.error = (f"Redis at {view.url} is a {view.role}, not a primary: lockrun claims "
                          "fires only on a primary")
            return
    keys = job_keys(cfg.key, cfg.fire, cfg.key_prefix)
    view.fire = _record(client, keys["fire"], view)
    view.guard = _record(client, keys["running"], view)
    view.pause = _record(client, keys["pause"], view)
    view.fleet_pause = _record(client, fleet_keys(cfg.key_prefix)["pause"], view)
    if cfg.retries:
        view.tries = _record(client, keys["try"], view)
    fence = client.text("GET", keys["fence"])
    view.last_fence = None if fence is None else str(fence)
    view.usable = True


def _role(client: LockClient) -> str:
    return client.info("replication").get("role", "?").strip()


def _record(client: LockClient, name: str, view: RedisView) -> Record:
    fields = client.hgetall(name)
    pttl: int | None
    try:
        pttl = client.integer("PTTL", name)
    except RedisUnavailable as exc:
        cause = exc.__cause__
        if not (isinstance(cause, ServerError) and cause.code == "NOPERM"):
            raise
        pttl = None  # README's ACL user needs no PTTL for fires; say so once
        note = "the Redis user may not run PTTL: expiries are not shown (grant +pttl)"
        if note not in view.notes:
            view.notes.append(note)
    return Record(name, fields, pttl)


# The decision.

def decide(cfg: Config, schedule: ScheduleView | None, problem: str | None,
           problem_status: int | None, redis: RedisView) -> Decision:
    """lockrun.runner's and ACQUIRE's decision, in their order, from what was read."""
    skip_exit = (cfg.skip_exit_code, f"{cfg.skip_exit_code} (the skip status, -E)")
    if problem is not None:
        status = problem_status or ExitCode.NOT_FOUND
        reason = "command-not-found" if status == ExitCode.NOT_FOUND \
            else "command-not-executable"
        return Decision("fail", reason, f"{problem}: a fire stops here, before it contacts "
                        "Redis, and claims nothing", status, str(status))
    if schedule is not None and schedule.too_late:
        return _too_late(cfg, schedule, redis, skip_exit)
    if not redis.usable:
        return _unusable(cfg, redis, skip_exit)
    decision = _acquire(cfg, redis, skip_exit)
    decision.notes += _fire_notes(cfg, redis)
    return decision


def _too_late(cfg: Config, schedule: ScheduleView, redis: RedisView,
              skip_exit: tuple[int, str]) -> Decision:
    text = (f"too late: {_human(schedule.late_s)} after the scheduled time "
            f"{schedule.scheduled_utc}, more than --grace {_duration(cfg.grace)}")
    if not redis.usable:
        if cfg.on_redis_error == "fail":
            return Decision("fail", "too-late", f"{text}; and Redis cannot be used "
                            f"({redis.error}): a fire exits with --error-exit-code",
                            cfg.error_exit_code, f"{cfg.error_exit_code} (--error-exit-code)")
        return Decision("skip", "too-late", f"{text}; and Redis cannot be used "
                        f"({redis.error}): a fire exits with the skip status "
                        f"(--on-redis-error {cfg.on_redis_error}; a late fire never runs)",
                        *skip_exit)
    fire = redis.fire
    if fire is not None and fire.exists:
        text += f"; fire {cfg.fire} has a record already ({_record_text(fire.fields)})"
    else:
        text += (f"; no server has a record of fire {cfg.fire}: the first late server "
                 f"records it and prints \"fire {cfg.fire} of {cfg.key} ran nowhere\"")
    late = Decision("skip", "too-late", text, *skip_exit)
    late.within_grace = _acquire(cfg, redis, skip_exit)
    return late


def _unusable(cfg: Config, redis: RedisView, skip_exit: tuple[int, str]) -> Decision:
    policy = f"--on-redis-error {cfg.on_redis_error}"
    if cfg.on_redis_error == "skip":
        return Decision("skip", "redis-unusable", f"Redis unusable: {redis.error}; a fire "
                        f"skips ({policy})", *skip_exit)
    if cfg.on_redis_error == "run":
        return Decision("run-without-lock", "redis-unusable", f"Redis unusable: {redis.error}"
                        f"; a fire runs the job WITHOUT a lock ({policy}), on every server "
                        "that cannot use Redis", None, "the job's own")
    return Decision("fail", "redis-unusable", f"Redis unusable: {redis.error}; a fire does "
                    f"not run the job and exits {cfg.error_exit_code} ({policy})",
                    cfg.error_exit_code, f"{cfg.error_exit_code} (--error-exit-code)")


def _acquire(cfg: Config, redis: RedisView, skip_exit: tuple[int, str]) -> Decision:
    """ACQUIRE's order: the fire's record, a paused record, the job's pause, the fleet's
    pause, the overlap guard; else the claim."""
    fire = redis.fire.fields if redis.fire else {}
    where = f"fire {cfg.fire}"
    if fire.get("state") == "retry":
        ticket = _ticket(cfg, redis, fire, skip_exit)
        if ticket is not None:
            return ticket
    elif fire.get("owner"):
        if fire.get("state") == "running" and fire.get("cancel_by"):
            return Decision("skip", "held", f"{where} is held by {fire.get('host', '?')} "
                            f"({_record_text(fire, brief=True)}), and {fire['cancel_by']} "
                            "asked it to stop: it ends at its next renewal", *skip_exit)
        if fire.get("state") == "done":
            return Decision("skip", "done", f"{where} is already done by "
                            f"{fire.get('host', '?')} ({_record_text(fire, brief=True)})",
                            *skip_exit)
        return Decision("skip", "held", f"{where} is held by {fire.get('host', '?')} "
                        f"({_record_text(fire, brief=True)})", *skip_exit)
    if fire.get("state") == "paused":
        return Decision("skip", "paused", f"{where} was skipped as paused (by "
                        f"{fire.get('by', '?')}{_why(fire)}); it stays skipped after a resume",
                        *skip_exit)
    for record, scope in ((redis.pause, "job"), (redis.fleet_pause, "all")):
        pause = record.fields if record else {}
        if pause.get("by"):
            what = "paused" if scope == "job" else "every job is paused (pause --all)"
            until = pause.get("until_ms", "")
            text = (f"{what} by {pause['by']}"
                    + (f" until {_utc(int(until) / 1000)}" if until.isdigit() else
                       " until resumed") + _why(pause)
                    + f"; a fire records {where} as paused for the whole fleet")
            return Decision("skip", "paused", text, *skip_exit)
    guard = redis.guard.fields if redis.guard else {}
    if guard.get("owner") and cfg.overlap == "skip":
        return Decision("skip", "overlap", f"fire {guard.get('fire', '?')} is still running "
                        f"on {guard.get('host', '?')} (fence {guard.get('fence', '?')}; "
                        "--overlap skip)", *skip_exit)
    text = f"this server would claim {where} and run the job"
    if redis.last_fence is not None:
        text += f" (fence above {redis.last_fence})"
    if guard.get("owner") and cfg.overlap == "replace":
        from lockrun.config import RENEWALS_PER_TTL

        bound = cfg.ttl / RENEWALS_PER_TTL + cfg.kill_after + 2 * cfg.redis_timeout
        text = (f"this server would ask fire {guard.get('fire', '?')} on "
                f"{guard.get('host', '?')} to stop (--overlap replace), wait up to "
                f"{bound:g}s for it to end, then claim {where} and run the job; if it has "
                "not ended by then, skip with one error line")
        return Decision("run", "replace", text, None, "the job's own (the replaced run: 143)")
    decision = Decision("run", "claim", text, None, "the job's own")
    if guard.get("owner"):
        decision.notes.append(f"the overlap guard is held by fire {guard.get('fire', '?')} on "
                              f"{guard.get('host', '?')}, ignored with --overlap {cfg.overlap}")
    if fire.get("state") == "retry":
        decision.notes.append(f"it would be attempt {int(fire.get('attempt', '1') or 1) + 1} "
                              f"of {cfg.retries + 1}: attempt {fire.get('attempt', '1')} failed "
                              f"on {fire.get('host', '?')}")
    if fire.get("state") == "missed":
        decision.notes.append(f"{where} has a too-late record from {fire.get('host', '?')}; "
                              "a server within the grace still claims it")
    if cfg.wait_replicas:
        decision.notes.append(f"after the claim it waits for {cfg.wait_replicas} replica(s) "
                              f"(--wait-replicas, up to {cfg.wait_timeout:g}s)")
    return decision


def _ticket(cfg: Config, redis: RedisView, fire: dict[str, str],
            skip_exit: tuple[int, str]) -> Decision | None:
    """A failed attempt left the fire for a retry: not due yet, left to servers that have
    not failed it, or claimable now (None: ACQUIRE's other checks decide)."""
    from lockrun.protocol import host_name

    now_ms = (time.time() - (redis.skew_s or 0.0)) * 1000
    attempt = fire.get("attempt", "1")
    last = f"attempt {attempt} failed on {fire.get('host', '?')}"
    due, prefer = fire.get("due_ms", ""), fire.get("prefer_ms", "")
    if due.isdigit() and now_ms < int(due):
        return Decision("skip", "retry-wait", f"{last}; its retry is due at "
                        f"{_utc(int(due) / 1000)}: a tick from then claims it", *skip_exit)
    tries = redis.tries.fields if redis.tries else {}
    failed = tries.get("failed", "").split(",")
    if (not cfg.retry_anywhere and prefer.isdigit() and now_ms < int(prefer)
            and host_name() in failed):
        return Decision("skip", "retry-elsewhere", f"{last}; this server failed it too, so it "
                        f"leaves the retry to another server until {_utc(int(prefer) / 1000)}",
                        *skip_exit)
    return None


def _fire_notes(cfg: Config, redis: RedisView) -> list[str]:
    notes = []
    if cfg.jitter > 0:
        notes.append(f"a fire first waits up to {cfg.jitter:g}s (--jitter): by then another "
                     "server may have claimed it")
    if redis.skew_s is not None and cfg.max_skew > 0 and abs(redis.skew_s) > cfg.max_skew:
        notes.append(f"this server's clock is {abs(redis.skew_s):.1f}s "
                     f"{'ahead of' if redis.skew_s > 0 else 'behind'} Redis's: a fire warns "
                     f"(--max-skew {cfg.max_skew:g}s)")
    return notes


def _why(fields: dict[str, str]) -> str:
    return f": {fields['reason']}" if fields.get("reason") else ""


def _record_text(fire: dict[str, str], brief: bool = False) -> str:
    """A fire hash in one phrase, worded for its state (*brief*: the state and the host
    are said around it, as in "already done by web2 (...)")."""
    state = fire.get("state", "?")
    host = fire.get("host", "?")
    if state == "paused":
        return f"paused by {fire.get('by', '?')}{_why(fire)} (recorded by {host})"
    if state == "missed":
        return f"too late: no server started it within its grace (recorded by {host})"
    details = []
    if fire.get("start", "").isdigit():
        details.append(f"started {_utc(int(fire['start']) / 1000)}")
    if fire.get("end", "").isdigit():
        details.append(f"ended {_utc(int(fire['end']) / 1000)}")
    if fire.get("outcome"):
        details.append(f"outcome {fire['outcome']}")
    if fire.get("exit"):
        details.append(f"exit {fire['exit']}")
    if fire.get("fence"):
        details.append(f"fence {fire['fence']}")
    if fire.get("pid") and state == "running":
        details.append(f"pid {fire['pid']}")
    if brief:
        return ", ".join(details)
    return f"{state} on {host}" + (f" ({', '.join(details)})" if details else "")


# Text for people.

def render(x: Explanation) -> str:
    lines = [f"{x.key} on {x.host} at {x.now_utc}: {_verdict(x.decision)}", ""]
    lines.append(f"fire id        {x.fire}")
    lines.append(f"  derived as   {x.derivation.text}")
    if x.schedule is not None:
        s = x.schedule
        lines.append(f"scheduled      {s.scheduled_local} ({s.scheduled_utc})")
        state = (f"passed {_human(s.late_s - s.grace_s)} ago: too late" if s.too_late
                 else f"{_human(s.deadline_epoch - x.now_epoch)} left")
        lines.append(f"grace until    {s.deadline_local} ({s.deadline_utc}, --grace "
                     f"{_duration(s.grace_s)}): {state}")
        lines.append(f"next fires     in {s.zone}")
        for n in s.next:
            lines.append(f"  {n.local:<28} {n.utc}")
            lines.extend(f"    {note}" for note in n.notes)
    else:
        lines.append("next fires     unknown without --schedule (cron's schedule is not "
                     "passed to lockrun)")
    lines.append("command        " + (x.command_problem or x.command_path or "?"))
    r = x.redis
    if not r.usable:
        lines.append(f"redis          unusable: {r.error}")
    else:
        role = {"master": "primary", None: "Cluster"}.get(r.role, str(r.role))
        skew = "" if r.skew_s is None else (
            ", this server's clock "
            + (f"{abs(r.skew_s):.3f}s" if abs(r.skew_s) < 60 else _human(abs(r.skew_s)))
            + f" {'ahead of' if r.skew_s >= 0 else 'behind'} Redis's")
        lines.append(f"redis          {r.url} ({role}{skew})")
        lines.append(f"  fire record  {_shown_record(r.fire, _record_text)}")
        lines.append(f"  overlap      {_shown_record(r.guard, _guard_text)}")
        lines.append(f"  job pause    {_shown_record(r.pause, _pause_text)}")
        lines.append(f"  fleet pause  {_shown_record(r.fleet_pause, _pause_text)}")
        lines.extend(f"  note         {note}" for note in r.notes)
    d = x.decision
    lines.append(f"decision       {d.action} ({d.reason}): {d.text}")
    lines.extend(f"  note         {note}" for note in d.notes)
    if d.within_grace is not None:
        g = d.within_grace
        lines.append(f"  in time      a tick within the grace would: {g.action} ({g.reason}): "
                     f"{g.text}")
    lines.append(f"exit status    {d.exit_text}")
    return "\n".join(_wrap(line) for line in lines)


WIDTH = 100


def _wrap(line: str) -> str:
    """Long values continue under their value column, so the labels stay readable."""
    if len(line) <= WIDTH:
        return line
    import textwrap

    return "\n".join(textwrap.wrap(line, WIDTH, subsequent_indent=" " * 15,
                                    break_on_hyphens=False, break_long_words=False))


def _verdict(d: Decision) -> str:
    if d.action == "run":
        return "would run the job"
    if d.action == "run-without-lock":
        return "would run the job WITHOUT a lock"
    if d.action == "skip":
        return f"would skip ({d.reason}), exit {d.exit_status}"
    return f"would not run ({d.reason}), exit {d.exit_status}"


def _shown_record(record: Record | None, text: Callable[[dict[str, str]], str]) -> str:
    if record is None:
        return "-"
    if not record.exists:
        return f"none ({record.name})"
    return f"{text(record.fields)}; {_ttl(record.pttl_ms)} ({record.name})"


def _ttl(pttl_ms: int | None) -> str:
    if pttl_ms is None:
        return "expiry unknown"
    if pttl_ms < 0:
        return "no expiry"
    return f"expires in {_human(pttl_ms / 1000)}"


def _duration(seconds: float) -> str:
    """An option's value as it would be written: --grace 1h."""
    from lockrun.durations import format_duration

    return format_duration(seconds)


def _human(seconds: float) -> str:
    from lockrun.durations import human_duration

    return human_duration(seconds)


def _guard_text(g: dict[str, str]) -> str:
    return (f"held by fire {g.get('fire', '?')} on {g.get('host', '?')} "
            f"(fence {g.get('fence', '?')}, pid {g.get('pid', '?')})")


def _pause_text(p: dict[str, str]) -> str:
    until = p.get("until_ms", "")
    return (f"by {p.get('by', '?')}" + (f" until {_utc(int(until) / 1000)}" if until.isdigit()
                                        else " until resumed") + _why(p))
