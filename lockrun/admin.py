"""Admin verbs' data: status, history and unlock, read from the keys the wrapper writes.

Everything here answers an operator's question ("who ran fire X, and how did
it end?", "which fires ran nowhere?", "is the lock stuck?") from the per-fire
records and the history stream; nothing here is on the cron hot path.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from datetime import tzinfo
from typing import Any

from lockrun.client import LockClient
from lockrun.lua import Script
from lockrun.protocol import FLEET_TAG, HISTORY_MAXLEN, fleet_keys, job_keys

# Removes a stuck claim and/or overlap guard and says so in the history, in one
# step, so the record of who unlocked what can never be missing.
UNLOCK = Script(("fire_key", "guard_key", "hist_key"), ("fire", "by", "maxlen"), """
local removed = {}
if fire ~= '' then
  local h = redis.call('HMGET', fire_key, 'owner', 'state')
  if h[1] or h[2] then
    redis.call('DEL', fire_key)
    table.insert(removed,
      'fire ' .. fire .. ' (' .. (h[2] or '?') .. ', ' .. (h[1] or '-') .. ')')
  end
end
local g = redis.call('HMGET', guard_key, 'owner', 'fire')
if g[1] and (fire == '' or g[2] == fire) then
  redis.call('DEL', guard_key)
  table.insert(removed, 'overlap guard (fire ' .. (g[2] or '?') .. ', ' .. g[1] .. ')')
end
if #removed > 0 then
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'unlock',
    'fire', fire, 'by', by, 'removed', table.concat(removed, '; '))
end
return removed
""")


# Pauses a job (or, with the fleet's keys, every job) and writes who, why and
# until when into the history in the same step. A pause that ends is a key that
# expires: nothing has to run for the job to resume.
PAUSE = Script(("pause_key", "hist_key"), ("by", "reason", "until_ms", "maxlen", "scope"), """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if until_ms ~= '' and tonumber(until_ms) <= now_ms then
  return {'past', now_ms}
end
redis.call('DEL', pause_key)
redis.call('HSET', pause_key, 'by', by, 'at_ms', now_ms, 'reason', reason, 'until_ms',
  until_ms)
if until_ms ~= '' then
  redis.call('PEXPIRE', pause_key, tonumber(until_ms) - now_ms)
end
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'pause', 'by', by,
  'reason', reason, 'until_ms', until_ms, 'scope', scope)
return {'ok', now_ms}
""")

RESUME = Script(("pause_key", "hist_key"), ("by", "maxlen", "scope"), """
if redis.call('EXISTS', pause_key) == 0 then
  return {'none'}
end
redis.call('DEL', pause_key)
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'resume', 'by', by,
  'scope', scope)
return {'ok'}
""")


@dataclass
class Pause:
    """Who paused a job (or the whole fleet: scope 'all'), why, and until when."""

    scope: str
    by: str
    reason: str
    at_ms: int | None
    until_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hash(cls, scope: str, fields: dict[str, str]) -> Pause | None:
        if not fields.get("by"):
            return None
        at, until = fields.get("at_ms", ""), fields.get("until_ms", "")
        return cls(scope, fields["by"], fields.get("reason", ""),
                   int(at) if at.isdigit() else None, int(until) if until.isdigit() else None)


@dataclass
class FireRun:
    """One fire as the history tells it, newest first in listings."""

    fire: str
    outcome: str
    """ran, running, crashed, lost, skipped-too-late, given-back, possible-duplicate..."""
    host: str = ""
    owner: str = ""
    fence: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    exit: int | None = None
    recorded_late: bool = False
    """The job ended while Redis was unusable; its server recorded the end afterwards."""
    by: str = ""
    """Who asked (a pause, a resume, a cancel): user@host."""
    reason: str = ""
    attempt: int = 1
    """Which attempt of the fire this row is (--retries)."""
    retry_due_ms: int | None = None
    """This attempt failed and the fire was left for a retry due then."""

    @property
    def duration_s(self) -> float | None:
        if self.start_ms is None or self.end_ms is None:
            return None
        return (self.end_ms - self.start_ms) / 1000

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = self.duration_s
        return data


@dataclass
class JobState:
    """The job's last end and its streak, kept by the scripts that record ends, whichever
    server ran each fire."""

    last_fire: str
    last_outcome: str
    last_exit: int | None
    last_host: str
    last_end_ms: int | None
    failures: int
    """Ends in a row that failed (an exit status other than 0, a timeout, a lost lease,
    a cancel); 0 after a success."""
    last_success_ms: int | None
    last_success_fire: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> JobState | None:
        if not fields.get("last_fire"):
            return None

        def number(name: str) -> int | None:
            text = fields.get(name, "")
            return int(text) if text.lstrip("-").isdigit() else None

        return cls(fields["last_fire"], fields.get("last_outcome", ""), number("last_exit"),
                   fields.get("last_host", ""), number("last_end_ms"), number("failures") or 0,
                   number("last_success_ms"), fields.get("last_success_fire", ""))


@dataclass
class KeyStatus:
    key: str
    running: list[FireRun] = field(default_factory=list)
    guard: dict[str, str] = field(default_factory=dict)
    last: FireRun | None = None
    paused: Pause | None = None
    """The job's own pause, else the fleet's: what makes every server skip it now."""
    state: JobState | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "running": [r.to_json() for r in self.running],
                "overlap_guard": self.guard or None,
                "last": self.last.to_json() if self.last else None,
                "paused": self.paused.to_json() if self.paused else None,
                "state": self.state.to_json() if self.state else None}


class Admin:
    """The admin verbs' questions, answered through one LockClient; every public method
    fails with RedisUnavailable (exit 75) when Redis cannot be used."""

    def __init__(self, client: LockClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _keys(self, key: str, fire: str = "") -> dict[str, str]:
        return job_keys(key, fire, self.prefix)

    def job_names(self) -> list[str]:
        """Every job with a history, found with SCAN (never KEYS: it blocks Redis)."""
        pattern = f"{self.prefix}:{{*}}:hist"
        names = set()
        for name in self.client.scan(pattern):
            inner = name[len(self.prefix) + 2:]
            names.add(inner[: inner.rindex("}:hist")])
        names.discard(FLEET_TAG)  # the fleet's pause audit, not a job
        return sorted(names)

    def known(self, key: str) -> bool:
        """Whether Redis holds anything of *key*: its history or its overlap guard."""
        k = self._keys(key)
        return bool(self.client.integer("EXISTS", k["hist"]) or
                    self.client.integer("EXISTS", k["running"]))

    def first_fire(self, key: str) -> str | None:
        """The oldest fire id the history still holds: before it, nothing can be told."""
        entries = self.client.xrange(self._keys(key)["hist"], 10)
        fires = [fields.get("fire", "") for _, fields in entries]
        return min((f for f in fires if f), default=None)

    def history(self, key: str, limit: int) -> list[FireRun]:
        """Fold start/end/lost/skip events into one row per (fire, owner), newest first."""
        events = self.client.xrevrange(self._keys(key)["hist"], max(limit * 4, 50))
        runs: dict[tuple[str, str], FireRun] = {}
        order: list[FireRun] = []
        for stream_id, fields in reversed(events):  # oldest first
            at_ms = int(stream_id.split("-", 1)[0])
            fire, owner = fields.get("fire", ""), fields.get("owner", "")
            event = fields.get("event")
            ident = (fire, owner)
            if event == "unlock":
                continue
            if event in ("pause", "resume"):  # the operator's, not a fire's
                ident = ("", stream_id)
                runs[ident] = FireRun("", event, by=fields.get("by", ""),
                                      reason=fields.get("reason", ""), start_ms=at_ms)
                until = fields.get("until_ms", "")
                runs[ident].end_ms = int(until) if until.isdigit() else None
                order.append(runs[ident])
                continue
            if ident not in runs or (event == "start" and runs[ident].end_ms is not None):
                # a new row; a start after an end is the next --retry-local attempt
                runs[ident] = FireRun(fire, "", fields.get("host", ""), owner)
                order.append(runs[ident])
            run = runs[ident]
            attempt = fields.get("attempt", "")
            if attempt.isdigit():
                run.attempt = int(attempt)
            if event == "start":
                run.start_ms, run.fence, run.outcome = at_ms, fields.get("fence", ""), "started"
            elif event == "end":
                # a kept end carries the real end time; the stream id is when it arrived
                real_end = fields.get("end_ms", "")
                run.end_ms = int(real_end) if real_end.isdigit() else at_ms
                run.recorded_late = fields.get("late") == "1"
                run.exit = int(fields["exit"]) if fields.get("exit", "").lstrip("-").isdigit() \
                    else None
                outcome = fields.get("outcome", "exited")
                run.outcome = "ran" if outcome == "exited" else outcome
                run.by = fields.get("by") or run.by
                due = fields.get("retry_due_ms", "")
                run.retry_due_ms = int(due) if due.isdigit() else None
            elif event == "slow":  # passed --warn-after while it ran
                elapsed = fields.get("elapsed_ms", "")
                run.reason = (f"ran past --warn-after ({int(elapsed) / 1000:g}s)"
                              if elapsed.isdigit() else "ran past --warn-after")
            elif event == "cancel":  # asked to stop; the end says when it did
                run.by = fields.get("by", "")
            elif event == "lost" and run.end_ms is None:
                run.outcome = "lost"
            elif event == "skip":
                reason = fields.get("reason", "skip")
                run.outcome = "paused" if reason == "paused" else f"skipped-{reason}"
                run.by, run.reason = fields.get("by", ""), fields.get("why", "")
                run.end_ms = at_ms
            elif event == "abandon":  # claimed, not started, handed back to the fleet
                run.outcome = "given-back"
                run.end_ms = at_ms
            elif event == "possible-duplicate":  # the end may not be where others look
                run.outcome = "possible-duplicate"
                run.end_ms = run.end_ms or at_ms
        rows = list(reversed(order))[:limit]
        for row in rows:
            if row.outcome in ("started", "lost") and row.end_ms is None:
                row.outcome = self._open_outcome(key, row)
        return rows

    def with_expected(self, key: str, rows: list[FireRun], expr: str, zone: tzinfo, now: float,
                      limit: int, grace: float) -> list[FireRun]:
        """Add the scheduled fires that left no trace at all: they ran nowhere.

        A fire every server skipped as too late is in the history already; one
        that no server even tried (the whole fleet down past the grace) is not,
        so it can only be found by comparing with the schedule. Only from the
        oldest fire the history holds on: before it the job may not have
        existed yet, or its events were trimmed, and "ran nowhere" would be a
        guess.
        """
        from lockrun.schedule import current_slot

        first = self.first_fire(key)
        seen = {row.fire for row in rows if row.fire}
        expected: list[FireRun] = []
        t = now
        for _ in range(limit):
            slot = current_slot(expr, zone, t)
            if first is None or slot.fire_id < first:
                break
            if slot.fire_id not in seen:
                late = now - slot.fire > grace
                expected.append(FireRun(slot.fire_id, "ran-nowhere" if late else "pending"))
            t = slot.fire - 1
        merged = rows + expected
        merged.sort(key=lambda r: r.fire, reverse=True)  # ISO ids: text order is time order
        return merged[:limit]

    def _open_outcome(self, key: str, row: FireRun) -> str:
        """A start without an end is either still running or a crash (its claim is gone)."""
        record = self.client.hgetall(self._keys(key, row.fire)["fire"])
        if record.get("owner") == row.owner and record.get("state") == "running":
            return "running" if row.outcome == "started" else "lost"
        return "crashed" if row.outcome == "started" else "lost"

    def pause_of(self, key: str | None) -> Pause | None:
        """The pause that holds *key* now (its own first), or the fleet's (key None)."""
        if key is not None:
            own = Pause.from_hash("job", self.client.hgetall(self._keys(key)["pause"]))
            if own is not None:
                return own
        return Pause.from_hash("all", self.client.hgetall(fleet_keys(self.prefix)["pause"]))

    def _pause_keys(self, key: str | None) -> dict[str, str]:
        return self._keys(key) if key is not None else fleet_keys(self.prefix)

    def pause(self, key: str | None, reason: str, until_ms: int | None) -> bool:
        """Pause *key* (None: every job); False if *until_ms* had passed by Redis's clock."""
        k = self._pause_keys(key)
        r = self.client.call(PAUSE.source, *PAUSE.bind(
            {"pause_key": k["pause"], "hist_key": k["hist"]}, by=whoami(), reason=reason,
            until_ms="" if until_ms is None else str(until_ms), maxlen=HISTORY_MAXLEN,
            scope="job" if key is not None else "all"))
        return r[0] == "ok"

    def resume(self, key: str | None) -> bool:
        """Lift the pause of *key* (None: the fleet's); False if there was none."""
        k = self._pause_keys(key)
        r = self.client.call(RESUME.source, *RESUME.bind(
            {"pause_key": k["pause"], "hist_key": k["hist"]}, by=whoami(),
            maxlen=HISTORY_MAXLEN, scope="job" if key is not None else "all"))
        return r[0] == "ok"

    def cancel(self, key: str, fire: str | None) -> tuple[str, str] | None:
        """Ask the server running *fire* (default: the one the overlap guard names) to stop
        it: (fire, host), or None when nothing of *key* is running there."""
        from lockrun.protocol import request_cancel

        if fire is None:
            fire = str(self.client.hgetall(self._keys(key)["running"]).get("fire", ""))
            if not fire:
                return None
        running, host = request_cancel(self.client, key, fire, whoami(), self.prefix)
        return (fire, host) if running else None

    def status(self, key: str) -> KeyStatus:
        status = KeyStatus(key, guard=self.client.hgetall(self._keys(key)["running"]),
                           paused=self.pause_of(key),
                           state=JobState.from_hash(self.client.hgetall(self._keys(key)["job"])))
        for row in self.history(key, 20):
            if row.outcome == "running":
                status.running.append(row)
            elif status.last is None and row.fire and row.outcome != "running":
                status.last = row
        return status

    def unlock(self, key: str, fire: str = "") -> list[str]:
        k = self._keys(key, fire or "-")
        removed = self.client.call(UNLOCK.source, *UNLOCK.bind(
            {"fire_key": k["fire"], "guard_key": k["running"], "hist_key": k["hist"]},
            fire=fire, by=whoami(), maxlen=HISTORY_MAXLEN))
        return [str(r) for r in removed] if isinstance(removed, list) else []


def whoami() -> str:
    """user@host: who asked, as the history records it."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
