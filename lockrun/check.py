"""``lockrun check``: a Nagios-style verdict on one job, computed from the lock store.

Per-host pings and per-host metrics only see the runs that happened; a fire
that no server ran leaves no ping and no metric anywhere. The lock store holds
every fire the fleet claimed, skipped or gave back, and with the job's
schedule the fires that left no trace at all, so this check can say "the
03:00 fire ran nowhere" where no host can.

Statuses follow the Nagios plugin convention (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN); bad input stays lockrun's usage error (64), raised before Redis
is contacted, like every verb's.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from lockrun.admin import Admin, FireRun, Pause
from lockrun.errors import LockrunError, UsageError
from lockrun.protocol import HISTORY_MAXLEN, job_keys

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")

WINDOW_S = 86_400
"""Fires that ran nowhere are counted over the last day: a gauge that never forgets
would keep an alert firing after the job has long recovered."""
MAX_SLOTS = 1_440
"""Schedule slots walked at most: one day of a job that fires every minute."""

OUTCOMES = ("success", "failed", "timeout", "crashed", "lost", "cancelled", "ran-nowhere",
            "running", "paused", "other", "none")
"""The values of lockrun_fleet_last_outcome's label: a fixed set, each series always written
(1 for the current outcome, 0 for the others), so no series goes stale when it changes."""

FAILED_OUTCOMES = ("timeout", "crashed", "lost", "cancelled")
NOWHERE_OUTCOMES = ("skipped-too-late", "given-back", "ran-nowhere")
_SLOT_ID = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


def kind(row: FireRun) -> str:
    """What one server's row says of its fire: ok, failed, running, paused, nowhere, pending.

    Anything not known to be good counts as failed (an outcome a newer lockrun
    writes, an end without an exit status): a check must not read OK by default.
    """
    if row.outcome == "running":
        return "running"
    if row.retry_due_ms is not None:  # failed, and left for a retry: not the fire's end
        return "pending"
    if row.outcome in ("ran", "possible-duplicate"):
        return "ok" if row.exit == 0 else "failed"
    if row.outcome == "paused":
        return "paused"
    if row.outcome in NOWHERE_OUTCOMES:
        return "nowhere"
    if row.outcome == "pending":
        return "pending"
    return "failed"


_PRECEDENCE = ("failed", "running", "ok", "paused", "nowhere", "pending")


@dataclass
class Fire:
    """One fire as the whole fleet left it: the rows of every server that touched it."""

    fire: str
    rows: list[FireRun]

    @property
    def verdict(self) -> FireRun:
        """The row that decides: a failure anywhere beats a run elsewhere (a crash followed by
        a late server's rerun is still a crash to look at), a run beats a skip.

        With --retries the last attempt decides instead: an earlier attempt's failure was
        retried, not left alone; a retry no server started within the grace ends the fire
        as failed.
        """
        for row in self.rows:
            if row.outcome == "skipped-retry-too-late":
                return row
        if any(r.attempt > 1 or r.retry_due_ms is not None for r in self.rows):
            return max(self.rows, key=lambda r: (r.attempt, r.start_ms or 0))
        return min(self.rows, key=lambda r: _PRECEDENCE.index(kind(r)))

    @property
    def kind(self) -> str:
        return kind(self.verdict)

    @property
    def at_ms(self) -> int:
        return max((r.end_ms or r.start_ms or 0) for r in self.rows)


def label(row: FireRun | None) -> str:
    """The row's value of lockrun_fleet_last_outcome's outcome label."""
    if row is None:
        return "none"
    k = kind(row)
    if k == "ok":
        return "success"
    if k == "nowhere":
        return "ran-nowhere"
    if k in ("running", "paused"):
        return k
    if row.outcome in FAILED_OUTCOMES:
        return row.outcome
    return "failed" if row.outcome in ("ran", "possible-duplicate") else "other"


@dataclass
class Limits:
    """What the operator asked the check to hold the job to."""

    schedule: tuple[str, tzinfo] | None = None
    grace: float = 60.0
    max_age: float | None = None
    max_runtime: float | None = None


@dataclass
class Result:
    key: str
    status: int
    summary: str
    problems: list[str] = field(default_factory=list)
    last: FireRun | None = None
    """The row that decided the last (scheduled) fire's verdict."""
    last_success_ms: int | None = None
    last_success_age_s: float | None = None
    consecutive_failures: int = 0
    ran_nowhere: int = 0
    running: list[FireRun] = field(default_factory=list)
    running_for_s: float = 0.0
    paused: Pause | None = None
    limits: Limits = field(default_factory=Limits)
    known: bool = True
    """False for UNKNOWN: none of the facts below the summary could be read."""

    @property
    def line(self) -> str:
        """The plugin's one line: status, summary and, when the facts are known, perfdata."""
        text = f"LOCKRUN {STATUS[self.status]} - {self.summary}"
        return f"{text} | {self.perfdata}" if self.known else text

    @property
    def perfdata(self) -> str:
        """Nagios plugin guidelines' syntax: 'label'=value[UOM];[warn];[crit];[min];[max]."""
        age = "U" if self.last_success_age_s is None else f"{_num(self.last_success_age_s)}s"
        max_age = "" if self.limits.max_age is None else _num(self.limits.max_age)
        max_run = "" if self.limits.max_runtime is None else _num(self.limits.max_runtime)
        return " ".join([
            f"last_success_age={age};;{max_age};0",
            f"consecutive_failures={self.consecutive_failures};;;0",
            f"running_for={_num(self.running_for_s)}s;{max_run};;0",
            f"ran_nowhere={self.ran_nowhere};;;0",
            f"paused={1 if self.paused else 0};;;0;1",
        ])

    def to_json(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "key": self.key, "status": STATUS[self.status], "exit": self.status,
            "summary": self.summary, "problems": self.problems}
        if not self.known:
            return facts
        return facts | {
            "perfdata": self.perfdata,
            "last_fire": None if self.last is None else self.last.to_json(),
            "last_outcome": label(self.last),
            "last_success_ms": self.last_success_ms,
            "last_success_age_s": self.last_success_age_s,
            "consecutive_failures": self.consecutive_failures,
            "ran_nowhere_fires": self.ran_nowhere,
            "running": [r.to_json() for r in self.running],
            "running_for_s": self.running_for_s,
            "paused": None if self.paused is None else self.paused.to_json(),
            "schedule": None if self.limits.schedule is None else self.limits.schedule[0],
            "max_age_s": self.limits.max_age, "max_runtime_s": self.limits.max_runtime,
            "window_s": WINDOW_S,
        }


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def age(seconds: float) -> str:
    """3d04h, 2h05m, 7m12s, 42s: what a person reads in a one-line summary."""
    s = max(0, int(seconds))
    for unit, size, sub, subsize in (("d", 86_400, "h", 3_600), ("h", 3_600, "m", 60),
                                     ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // subsize:02d}{sub}"
    return f"{s}s"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def _clean(text: str) -> str:
    """One line without a '|': the pipe starts the perfdata, a newline ends the output."""
    return "".join(c if c.isprintable() else "?" for c in text).replace("|", "/")


def unknown(key: str, why: str) -> Result:
    return Result(key, UNKNOWN, _clean(why), [why], known=False)


def run_check(adm: Admin, key: str, limits: Limits, now: float | None = None) -> Result:
    """The verdict on *key*; UNKNOWN (not an exception) when Redis cannot answer, or knows
    nothing of the key: a typo in a key or a prefix must not read OK."""
    try:
        if not adm.known(key):
            return unknown(key, f"no record of job {key!r} in Redis at {adm.client.url} under "
                                f"--key-prefix {adm.prefix!r}: check the key, the prefix and "
                                "the URL")
        return _judge(adm, key, limits, time.time() if now is None else now)
    except UsageError:
        raise
    except LockrunError as exc:
        return unknown(key, str(exc))


def _redis_ms(adm: Admin) -> int:
    """Redis's clock: every time in the history is Redis's, so ages are measured on it."""
    return round(adm.client.server_time() * 1000)


def _judge(adm: Admin, key: str, limits: Limits, now: float) -> Result:
    rows = adm.history(key, HISTORY_MAXLEN * 2)  # the whole stream: it is capped near 1000
    paused = adm.pause_of(key)
    now_ms = _redis_ms(adm)
    oldest = adm.client.xrange(job_keys(key, "", adm.prefix)["hist"], 1)
    begun_ms = int(oldest[0][0].split("-", 1)[0]) if oldest else now_ms

    fires: dict[str, Fire] = {}
    for row in rows:  # newest first: a fire's place is that of its newest row
        if row.fire:
            fires.setdefault(row.fire, Fire(row.fire, [])).rows.append(row)
    order = list(fires.values())

    if limits.schedule is not None:
        last, nowhere = _scheduled(fires, limits, now)
    else:
        last = order[0] if order else None
        nowhere = sum(1 for f in order if f.kind == "nowhere" and now_ms - f.at_ms <= WINDOW_S
                      * 1000)

    result = Result(key, OK, "", last=last.verdict if last else None, ran_nowhere=nowhere,
                    paused=paused, limits=limits)
    successes = [r.end_ms for r in rows if kind(r) == "ok" and r.end_ms is not None]
    result.last_success_ms = max(successes) if successes else None
    if result.last_success_ms is not None:
        result.last_success_age_s = max(0.0, (now_ms - result.last_success_ms) / 1000)
    for f in order:
        if f.kind == "ok":
            break
        if f.kind == "failed":
            result.consecutive_failures += 1
    result.running = [r for r in rows if r.outcome == "running" and r.start_ms is not None]
    if result.running:
        result.running_for_s = max(0.0, max((now_ms - (r.start_ms or now_ms)) / 1000
                                            for r in result.running))

    critical, warning = _problems(result, last, limits, now_ms, begun_ms)
    result.problems = critical + warning
    result.status = CRITICAL if critical else WARNING if warning else OK
    result.summary = _clean(f"{key}: " + "; ".join(result.problems or [_describe(last)])
                            + _success_note(result))
    return result


def _scheduled(fires: dict[str, Fire], limits: Limits, now: float) -> tuple[Fire | None, int]:
    """The last scheduled fire that is due (past its grace, or with a trace), and how many
    fires of the last day ran nowhere.

    A slot no server left a trace of is a fire that ran nowhere, but only from
    the oldest scheduled fire the history holds on: before it the job may not
    have existed yet, or its records were trimmed, and "ran nowhere" would be
    a guess (as in ``history --schedule``).
    """
    from lockrun.schedule import current_slot

    assert limits.schedule is not None
    expr, zone = limits.schedule
    slot_ids = [f for f in fires if _SLOT_ID.match(f)]
    oldest = min(slot_ids) if slot_ids else None
    last: Fire | None = None
    nowhere = 0
    t = now
    for _ in range(MAX_SLOTS):
        slot = current_slot(expr, zone, t)
        if oldest is None or slot.fire_id < oldest:
            break
        recent = now - slot.fire <= WINDOW_S
        if not recent and last is not None:
            break
        fire = fires.get(slot.fire_id)
        if fire is None or fire.kind == "nowhere":
            late = now - slot.fire > limits.grace
            outcome = "ran-nowhere" if late else "pending"
            if fire is None:
                fire = Fire(slot.fire_id, [FireRun(slot.fire_id, outcome)])
            elif not late:  # given back or too late on some server; another may still run it
                fire = Fire(slot.fire_id, [FireRun(slot.fire_id, "pending")])
        if fire.kind != "pending":
            last = last or fire
            nowhere += fire.kind == "nowhere" and recent
        t = slot.fire - 1
    return last, nowhere


def _problems(result: Result, last: Fire | None, limits: Limits, now_ms: int,
              begun_ms: int) -> tuple[list[str], list[str]]:
    critical: list[str] = []
    warning: list[str] = []
    if last is not None and last.kind in ("failed", "nowhere"):
        critical.append(_describe(last))
    if limits.max_age is not None:
        if result.last_success_age_s is not None:
            if result.last_success_age_s > limits.max_age:
                critical.append(f"last success {age(result.last_success_age_s)} ago, more than "
                                f"--max-age {age(limits.max_age)}")
        elif (now_ms - begun_ms) / 1000 > limits.max_age:
            critical.append(f"no success in the history, which begins "
                            f"{age((now_ms - begun_ms) / 1000)} ago (--max-age "
                            f"{age(limits.max_age)})")
    if limits.max_runtime is not None and result.running_for_s > limits.max_runtime:
        longest = min(result.running, key=lambda r: r.start_ms or 0)
        warning.append(f"fire {longest.fire} running on {longest.host or '?'} for "
                       f"{age(result.running_for_s)}, more than --max-runtime "
                       f"{age(limits.max_runtime)}")
    if result.paused is not None:
        p = result.paused
        until = f" until {_when(p.until_ms)}" if p.until_ms is not None else " until resumed"
        scope = " (pause --all: every job)" if p.scope == "all" else ""
        warning.append(f"paused by {p.by}{until}{scope}" + (f": {p.reason}" if p.reason else ""))
    return critical, warning


def _describe(fire: Fire | None) -> str:
    """What became of the fire, in the words an operator would use."""
    if fire is None:
        return "no fire recorded yet"
    row = fire.verdict
    where = f" on {row.host}" if row.host else ""
    k = kind(row)
    if k == "ok":
        took = f", {age(row.duration_s)}" if row.duration_s is not None else ""
        return f"fire {fire.fire} ran{where} (exit 0{took})"
    if k == "running":
        return f"fire {fire.fire} running{where} since {_when(row.start_ms)}"
    if k == "paused":
        return f"fire {fire.fire} skipped: paused by {row.by or '?'}"
    if k == "nowhere":
        why = {"skipped-too-late": "every server that tried came after its grace",
               "given-back": "given back, and no server ran it"}.get(row.outcome,
                                                                     "no server claimed it")
        return f"fire {fire.fire} ran nowhere ({why})"
    if row.outcome in ("ran", "possible-duplicate"):
        return f"fire {fire.fire} failed{where} (exit {row.exit})"
    exit_text = f", exit {row.exit}" if row.exit is not None else ""
    return f"fire {fire.fire} {row.outcome}{where}{exit_text}"


def _success_note(result: Result) -> str:
    if result.last_success_age_s is None or any("last success" in p for p in result.problems):
        return ""
    return f"; last success {age(result.last_success_age_s)} ago"


FLEET_METRICS = (
    ("lockrun_fleet_last_success_timestamp_seconds", "When the last successful run of the job "
     "ended, on any server (from the lock store)."),
    ("lockrun_fleet_last_outcome", "Outcome of the job's last (scheduled) fire across the "
     "fleet: 1 for the current outcome, 0 for the others."),
    ("lockrun_fleet_consecutive_failures", "Failed fires since the last success."),
    ("lockrun_fleet_ran_nowhere_fires", "Fires of the last day that no server ran."),
    ("lockrun_fleet_running_seconds", "How long the longest run in progress has been running "
     "(0: none)."),
    ("lockrun_fleet_paused", "1 while the job (or every job) is paused."),
    ("lockrun_fleet_check_status", "lockrun check's status: 0 OK, 1 WARNING, 2 CRITICAL, "
     "3 UNKNOWN."),
)
"""Every gauge ``check --textfile`` writes; the dashboard test holds docs/grafana to these."""


def textfile_text(result: Result) -> str:
    """The fleet gauges in the text exposition format; when the check is UNKNOWN only its
    status, since every other value would be a guess (an absent gauge, not a reassuring 0)."""
    k = f'key="{result.key}"'
    values: dict[str, list[tuple[str, float]]] = {"lockrun_fleet_check_status":
                                                  [(k, result.status)]}
    if result.known:
        outcome = label(result.last)
        values |= {
            "lockrun_fleet_last_outcome": [(f'{k},outcome="{o}"', int(o == outcome))
                                           for o in OUTCOMES],
            "lockrun_fleet_consecutive_failures": [(k, result.consecutive_failures)],
            "lockrun_fleet_ran_nowhere_fires": [(k, result.ran_nowhere)],
            "lockrun_fleet_running_seconds": [(k, result.running_for_s)],
            "lockrun_fleet_paused": [(k, 1 if result.paused else 0)],
        }
        if result.last_success_ms is not None:
            values["lockrun_fleet_last_success_timestamp_seconds"] = [
                (k, result.last_success_ms / 1000)]
    lines = []
    for name, text in FLEET_METRICS:
        if name not in values:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{{{labels}}} {_num(value)}" for labels, value in values[name]]
    return "\n".join(lines) + "\n"


def write_textfile(directory: str, result: Result) -> str | None:
    """Replace ``DIR/lockrun_fleet_<key>.prom`` atomically; None when written, else why not.

    As lockrun.textfile does for the per-host file: a temporary file with a
    random name, created with O_EXCL and never through a symlink, in a
    directory no other user can rename entries in, then renamed over the old
    one, so node_exporter never reads half a file.
    """
    from lockrun.textfile import _unsafe_directory, replace_file

    name = f"lockrun_fleet_{result.key}.prom"
    path = os.path.join(directory, name)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    try:
        problem = _unsafe_directory(os.fstat(dir_fd))
        if problem:
            return f"not writing {path}: {directory} is {problem}"
        replace_file(dir_fd, name, textfile_text(result))
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    finally:
        os.close(dir_fd)
    return None
