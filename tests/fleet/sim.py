#!/usr/bin/env python3
"""Fleet simulation: one crontab line on N servers, one real Redis, real lockrun processes.

Why: lockrun's promise is about a fleet, not one process. Every server starts
the same line a little late and with its own clock, and exactly one of them
must run each fire. This script reproduces that with one real ``lockrun``
process per server per fire (each with its own hostname and a faked wall
clock) against a private redis-server. It counts the runs of every fire,
injects the faults the README discusses, and writes a Markdown report. It exits
non-zero when a fire ran twice or not at all outside a documented case, so CI
can run its short form (``tests/test_fleet.py``). Its flaky mode runs a job
that fails often on some servers with ``--retries``, and checks that the
retries move to other servers, start only when due, never overlap, and that
no fire succeeds twice.

    python tests/fleet/sim.py [--servers N] [--fires N] [--fault-fires N] [--seed N]
                              [--mode default|schedule|faults|flaky|all] [--short]
                              [--flaky-fires N] [--flaky-p P] [--flaky-q Q]
                              [--report FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the topologies the tests start, started the same way
from redis_topologies import Cluster, RedisServer, SentinelSet  # noqa: E402

KEY = "simjob"
T0 = datetime(2026, 11, 22, tzinfo=timezone.utc).timestamp()
"""Virtual time of the first fire; fire k of a clean mode is T0 + k minutes."""
DEFAULT_SEED = 20261122
SKEW_MAX_S = 30.0
DELAY_DEFAULT_S = 20.0
DELAY_SCHEDULE_S = 50.0
MS_PER_VSEC = 8.0
"""Real milliseconds per virtual second when spreading the starts of one fire."""
CLEAN_TTL = "3s"
FIRE_DEADLINE_S = 120.0
"""Longest a fire's processes may take (on a loaded machine) before they count as hung."""
POLL_S = 0.005
SENTINEL_DOWN_AFTER_MS = 5000
"""Longer than fault 5's pause (ttl + 1.5s), so a SIGSTOP is not mistaken for a dead primary."""
EXPIRY_DEADLINE_S = 20.0
FAILOVER_TTL_S = 3
RETRY_TICKS = 4
"""Crontab ticks (one a minute) after a crashed fire that stay inside --schedule '*/5' grace."""
TICK_REAL_S = 1.0
"""Real seconds between two retry ticks; each stands for one crontab minute."""
LOST = "lost the lease"
JOB = ('echo "$LOCKRUN_FIRE $SIM_SERVER $LOCKRUN_FENCE $$" >> "$SIM_RUNS_LOG"; '
       '[ "$SIM_JOB_SLEEP" = 0 ] || exec sleep "$SIM_JOB_SLEEP"')
"""The job: one line per start in the runs log; ``exec`` makes the sleep the job's main
process, so PDEATHSIG (and our SIGKILL of the child) reach what actually runs."""

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_us() -> None:
    """preexec_fn: every process we start dies with the sim, even if it is SIGKILLed."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def fire_id(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def faketime_spec(epoch: float) -> str:
    """libfaketime's absolute start (parsed in TZ, which we set to UTC)."""
    return "@" + datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = POLL_S) -> bool:
    """Poll with a deadline; never a fixed sleep as synchronisation."""
    from redis_topologies import wait_until as poll

    return poll(predicate, timeout, interval)


def pace_until(target: float) -> None:
    """Keep a launch timetable (pacing, not synchronisation)."""
    delay = target - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# --------------------------------------------------------------------------- Redis


class Single:
    """One redis-server; lockrun reaches it on its unix socket."""

    def __init__(self, workdir: Path, persistent: bool) -> None:
        self.server = RedisServer(workdir, persistent=persistent, preexec_fn=_die_with_us)
        self.persistence = self.server.persistence
        self.url = self.server.url

    def client(self) -> Any:
        return self.server.client()

    def holder(self, key: str) -> RedisServer:
        """The process that stores *key*: the one a fault is injected into."""
        return self.server

    def failover(self, key: str) -> tuple[str, RedisServer]:
        raise RuntimeError("a single redis-server has no replica to fail over to")

    def stop(self) -> None:
        self.server.stop()


class Sentinels:
    """A primary, two replicas and three sentinels; lockrun gets a redis+sentinel:// URL.

    Two replicas, because a failover then reconfigures the other replica before
    it completes, and the old primary stays writable meanwhile (issue 10 point 8).
    """

    def __init__(self, workdir: Path, persistent: bool) -> None:
        self.set = SentinelSet(workdir, persistent=persistent,
                               down_after_ms=SENTINEL_DOWN_AFTER_MS, preexec_fn=_die_with_us)
        self.persistence = self.set.servers[0].persistence + "; primary + 2 replicas + 3 sentinels"
        self.url = self.set.url

    def client(self) -> Any:
        return self.set.client()

    def holder(self, key: str) -> RedisServer:
        return self.set.holder(key)

    def failover(self, key: str) -> tuple[str, RedisServer]:
        old = self.set.primary_port()
        new = self.set.failover()
        return (f"SENTINEL FAILOVER: primary {old} -> {new}",
                next(s for s in self.set.servers if s.port == new))

    def stop(self) -> None:
        self.set.stop()


class Clustered:
    """Three primaries with a replica each; lockrun gets a redis+cluster:// URL."""

    def __init__(self, workdir: Path, persistent: bool) -> None:
        self.cluster = Cluster(workdir, 3, 1, persistent=persistent, preexec_fn=_die_with_us)
        self.persistence = self.cluster.nodes[0].persistence + "; 3 primaries x 1 replica"
        self.url = self.cluster.url

    def client(self) -> Any:
        return self.cluster.client()

    def holder(self, key: str) -> RedisServer:
        return self.cluster.holder(key)

    def failover(self, key: str) -> tuple[str, RedisServer]:
        old = self.cluster.holder(key).port
        new = self.cluster.failover(key)
        return f"CLUSTER FAILOVER: slot primary {old} -> {new.port}", new

    def stop(self) -> None:
        self.cluster.stop()


Topology = Single | Sentinels | Clustered
TOPOLOGIES: dict[str, type[Single] | type[Sentinels] | type[Clustered]] = {
    "single": Single, "sentinel": Sentinels, "cluster": Clustered}
RUNNING_KEY = f"lockrun:{{{KEY}}}:running"


TOPOLOGY_TEXT = {
    "single": "Topology `single`: one real, private `redis-server`, which lockrun reaches on "
              "its unix socket.",
    "sentinel": "Topology `sentinel`: a primary, two replicas and three sentinels (quorum 2, "
                f"`down-after-milliseconds {SENTINEL_DOWN_AFTER_MS}`), all real "
                "`redis-server` processes on 127.0.0.1; lockrun gets a `redis+sentinel://` "
                "URL naming the three sentinels.",
    "cluster": "Topology `cluster`: a real Redis Cluster of 3 primaries with a replica each "
               "(`cluster-node-timeout 5000`) on 127.0.0.1; lockrun gets a `redis+cluster://` "
               "URL naming two seed nodes.",
}


def start_topology(opts: Options, workdir: Path, persistent: bool) -> Topology:
    return TOPOLOGIES[opts.topology](workdir, persistent)


# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class Server:
    name: str
    skew: float
    """Seconds this server's clock is ahead of true time (negative: behind)."""


@dataclass(frozen=True)
class Start:
    """One server's cron tick for one fire: it starts lockrun ``delay`` s after its clock
    reads the scheduled time, i.e. at true time T - skew + delay."""

    server: Server
    delay: float

    @property
    def true_offset(self) -> float:
        return self.delay - self.server.skew


@dataclass
class Proc:
    """A running lockrun (pid == the lockrun process: unshare and sh exec into it)."""

    popen: subprocess.Popen[bytes]
    server: str
    role: str
    err_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr_now(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Outcome:
    """A finished lockrun: exit status (None if it hung and we killed it) and stderr."""

    server: str
    role: str
    code: int | None
    stderr: list[str]
    pid: int = 0


@dataclass(frozen=True)
class Run:
    """One line of the runs log: a start of the job."""

    fire: str
    server: str
    fence: int
    pid: int


class Fleet:
    """Starts lockrun the way each server's cron would: own hostname, own clock."""

    def __init__(self, workdir: Path, lockrun: Path, servers: list[Server], uts: bool,
                 ms_per_vsec: float) -> None:
        self.workdir = workdir
        self.lockrun = lockrun
        self.servers = servers
        self.uts = uts
        self.scale = ms_per_vsec / 1000.0
        self.errdir = workdir / "stderr"
        self.errdir.mkdir(parents=True, exist_ok=True)
        libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
        if not libs:
            raise SystemExit("sim: libfaketime is not installed (apt-get install faketime)")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LOCKRUN_", "FAKETIME", "SIM_")) and k != "CRON_TZ"}
        # LOCKRUN_CONFIG="": no /etc/lockrun.toml either; every setting is on the command line.
        # The monotonic clock is faked too (shifted, still ticking at real speed): with
        # FAKETIME_DONT_FAKE_MONOTONIC=1 libfaketime makes Python's time.sleep() fail with
        # EINVAL, which redis-py's cluster client calls when the cluster is down.
        # LOCKRUN_REDIS_TIMEOUT: the ttls here are 2-3s, and lockrun wants ttl >= 3 x timeout.
        env.update(LD_PRELOAD=libs[0], FAKETIME_DONT_FAKE_MONOTONIC="0", FAKETIME_NO_CACHE="1",
                   TZ="UTC", LOCKRUN_CONFIG="", LOCKRUN_REDIS_TIMEOUT="600ms")
        self.base_env = env
        self.live: list[Proc] = []
        self.job_pids: set[int] = set()
        self._seq = 0
        self.spawned = 0

    def spawn(self, start: Start, clock: float, args: Sequence[str], url: str, log: Path,
              role: str, job_sleep: float = 0.0, job: str = JOB,
              extra_env: Mapping[str, str] | None = None) -> Proc:
        """Start lockrun now, its wall clock reading *clock*."""
        env = dict(self.base_env)
        # each simulated server keeps its own lockrun state, as real servers do
        env.update(FAKETIME=faketime_spec(clock), LOCKRUN_REDIS_URL=url,
                   LOCKRUN_STATE_DIR=str(self.workdir / "state" / start.server.name),
                   SIM_SERVER=start.server.name, SIM_RUNS_LOG=str(log),
                   SIM_JOB_SLEEP=f"{job_sleep:g}")
        env.update(extra_env or {})
        cmd = [str(self.lockrun), "--max-skew", "0", *args, "--", "sh", "-c", job]
        if self.uts:
            cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                   start.server.name, *cmd]
        self._seq += 1
        err_path = self.errdir / f"{self._seq}.err"
        with open(err_path, "wb") as err:
            popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err,
                                     start_new_session=True, preexec_fn=_die_with_us)
        proc = Proc(popen, start.server.name, role, err_path)
        self.live.append(proc)
        self.spawned += 1
        return proc

    def launch(self, starts: Sequence[Start], clock_of: Callable[[Start], float],
               args: Sequence[str], url: str, log: Path, role: str,
               job_sleep: float = 0.0, job: str = JOB,
               env_of: Callable[[Start], Mapping[str, str]] | None = None) -> list[Proc]:
        """Start these servers in the order of their true start, compressed in real time."""
        order = sorted(starts, key=lambda s: s.true_offset)
        if not order:
            return []
        t0, first = time.monotonic(), order[0].true_offset
        procs = []
        for s in order:
            pace_until(t0 + (s.true_offset - first) * self.scale)
            procs.append(self.spawn(s, clock_of(s), args, url, log, role, job_sleep, job,
                                    env_of(s) if env_of is not None else None))
        return procs

    def collect(self, procs: Iterable[Proc], timeout: float = FIRE_DEADLINE_S) -> list[Outcome]:
        """Wait for every process (bounded); a process past the deadline is killed: hung."""
        deadline = time.monotonic() + timeout
        outcomes = []
        for p in procs:
            try:
                code: int | None = p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(10)
                code = None
            lines = [ln for ln in p.stderr_now().splitlines() if ln.strip()]
            p.err_path.unlink(missing_ok=True)
            if p in self.live:
                self.live.remove(p)
            outcomes.append(Outcome(p.server, p.role, code, lines, p.pid))
        return outcomes

    def cleanup(self) -> None:
        """Kill whatever is still running: lockruns, then any job they left (exec'd sleeps)."""
        for p in self.live:
            if p.popen.poll() is None:
                p.popen.kill()
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.live.clear()
        for pid in self.job_pids:
            if pid_alive(pid) and _is_our_job(pid, self.workdir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _is_our_job(pid: int, workdir: Path) -> bool:
    """Guard against pid reuse: only a process whose environment names our workdir."""
    try:
        return str(workdir).encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def read_runs(log: Path) -> list[Run]:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    runs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            runs.append(Run(parts[0], parts[1], int(parts[2] or 0), int(parts[3])))
        elif parts:
            runs.append(Run(parts[0], parts[1] if len(parts) > 1 else "?", 0, 0))
    return runs


def normalise(line: str, workdir: Path) -> str:
    """Stderr lines differ only in ids; strip those so equal messages count together."""
    line = line.replace(str(workdir), "<tmp>")
    line = re.sub(r"[0-9a-f]{32}@[\w.-]+:\d+", "<owner>", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<fire>", line)
    line = re.sub(r"\bsrv-\d+\b", "<srv>", line)
    return re.sub(r"\b\d{6,}\b", "<n>", line)


def probe_uts() -> tuple[bool, str]:
    """Can we give each lockrun its own hostname (a UTS namespace)? Say why not if not."""
    if shutil.which("unshare") is None or shutil.which("hostname") is None:
        return False, "unshare or hostname is not installed"
    try:
        r = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec hostname',
                            "sim-probe"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if r.returncode == 0 and r.stdout.strip() == "sim-probe":
        return True, ""
    return False, (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]


# --------------------------------------------------------------------------- clean modes


@dataclass
class ModeResult:
    mode: str
    servers: int
    fires: int
    lockrun_args: str
    skew_range: tuple[float, float]
    delay_range: tuple[float, float]
    delay_max: float
    processes: int = 0
    runs: int = 0
    duplicates: int = 0
    misses: int = 0
    wrong_fire_id: int = 0
    hung: int = 0
    record_mismatches: int = 0
    fences_increasing: bool = True
    exit_codes: dict[str, int] = field(default_factory=dict)
    stderr_lines: dict[str, int] = field(default_factory=dict)
    stderr_total: int = 0
    wall_s: float = 0.0
    cpu_ms_per_process: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return self.duplicates + self.misses + self.wrong_fire_id + self.hung


def children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def code_name(code: int | None) -> str:
    if code is None:
        return "hung (killed)"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return str(code)


def clean_mode(mode: str, opts: Options, fleet: Fleet, sabotage: str | None) -> ModeResult:
    """Every server starts every fire; count the job's runs per fire. Nothing is injected."""
    schedule = mode == "schedule"
    delay_max = DELAY_SCHEDULE_S if schedule else DELAY_DEFAULT_S
    args = ["-k", KEY, "--ttl", CLEAN_TTL]
    if schedule:
        args[2:2] = ["--schedule", "* * * * *", "--tz", "UTC"]
    rng = random.Random(f"{opts.seed}:{mode}")
    workdir = fleet.workdir / mode
    log = workdir / "runs.log"
    server = start_topology(opts, workdir / "redis", persistent=False)
    skews = [s.skew for s in fleet.servers]
    result = ModeResult(mode, len(fleet.servers), opts.fires,
                        " ".join(shlex.quote(a) for a in args), (min(skews), max(skews)),
                        (delay_max, 0.0), delay_max)
    codes: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    fences: list[int] = []
    started, cpu0 = time.monotonic(), children_cpu()
    try:
        client = server.client()
        for k in range(opts.fires):
            at = T0 + 60 * k
            fid = fire_id(at)
            starts = [Start(s, rng.uniform(0, delay_max)) for s in fleet.servers]
            lo, hi = result.delay_range
            result.delay_range = (min([lo, *(s.delay for s in starts)]),
                                  max([hi, *(s.delay for s in starts)]))
            before = len(read_runs(log))

            def clock(s: Start, at: float = at) -> float:
                return at + s.delay

            if sabotage == "fire-per-server":  # self-check: a fleet that disagrees on ids
                broken = [*args, "--overlap", "allow"]
                procs = [fleet.spawn(s, clock(s), [*broken, "--fire", f"{fid}.{s.server.name}"],
                                     server.url, log, "server") for s in starts]
            else:
                procs = fleet.launch(starts, clock, args, server.url, log, "server")
            outs = fleet.collect(procs)
            result.processes += len(outs)
            for o in outs:
                codes[code_name(o.code)] += 1
                result.hung += o.code is None
                for ln in o.stderr:
                    lines[normalise(ln, fleet.workdir)] += 1
            runs = read_runs(log)[before:]
            fleet.job_pids.update(r.pid for r in runs)
            result.runs += len(runs)
            wrong = [r for r in runs if r.fire != fid]
            result.wrong_fire_id += len(wrong)
            if len(runs) > 1:
                result.duplicates += 1
                _problem(result.problems, f"fire {fid}: {len(runs)} runs on "
                         + ", ".join(f"{r.server} ({r.fire}, fence {r.fence})" for r in runs))
            elif not runs:
                result.misses += 1
                _problem(result.problems, f"fire {fid}: no run; exit codes "
                         + ", ".join(f"{o.server}={code_name(o.code)}" for o in outs))
            if len(runs) == 1 and not wrong:
                fences.append(runs[0].fence)
                rec = client.hgetall(f"lockrun:{{{KEY}}}:fire:{fid}")
                host_ok = not fleet.uts or rec.get("host") == runs[0].server
                if not (rec.get("state") == "done" and rec.get("exit") == "0" and host_ok
                        and rec.get("fence") == str(runs[0].fence)):
                    result.record_mismatches += 1
                    _problem(result.problems, f"fire {fid}: done record {rec} does not match "
                             f"the run {runs[0]}")
            if (k + 1) % 100 == 0 or k + 1 == opts.fires:
                print(f"sim: {mode}: {k + 1}/{opts.fires} fires, {result.runs} runs, "
                      f"{result.duplicates} duplicates, {result.misses} misses, "
                      f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    finally:
        server.stop()
    result.wall_s = time.monotonic() - started
    result.cpu_ms_per_process = 1000 * (children_cpu() - cpu0) / max(1, result.processes)
    result.fences_increasing = all(a < b for a, b in itertools.pairwise(fences))
    result.exit_codes = dict(codes.most_common())
    result.stderr_lines = dict(lines.most_common())
    result.stderr_total = sum(lines.values())
    return result


def _problem(problems: list[str], text: str, limit: int = 20) -> None:
    """Keep the first few problem descriptions; the counters carry the totals."""
    if len(problems) < limit:
        problems.append(text)


# --------------------------------------------------------------------------- faults


@dataclass
class FaultFire:
    """What one faulted fire did. ``expected`` runs: 1, or 2 for a crash plus its retry."""

    fire: str
    expected: int
    runs: list[Run] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    lost_detected: bool = False
    notes: list[str] = field(default_factory=list)
    applied: bool = True
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def extra_runs(self) -> int:
        return max(0, len(self.runs) - self.expected)


@dataclass
class FaultResult:
    num: str
    title: str
    redis: str
    lockrun_args: str
    by_nature: bool
    expectation: str
    how: str
    fires: int = 0
    runs: int = 0
    duplicates: int = 0
    duplicates_detected: int = 0
    misses: int = 0
    not_applied: int = 0
    hung: int = 0
    exit_codes: dict[str, int] = field(default_factory=dict)
    stderr_lines: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    outcome: str = ""

    @property
    def violations(self) -> int:
        undetected = self.duplicates - (self.duplicates_detected if self.by_nature else 0)
        return undetected + self.misses + self.not_applied + self.hung


class FaultCtx:
    """Shared plumbing of one fault: its Redis, runs log, plan of starts and lockrun args."""

    def __init__(self, fleet: Fleet, server: Topology, log: Path, args: list[str],
                 rng: random.Random, delay_max: float) -> None:
        self.fleet = fleet
        self.redis = server
        self.log = log
        self.args = args
        self.rng = rng
        self.delay_max = delay_max

    def plan(self, servers: Sequence[Server] | None = None) -> list[Start]:
        """Starts of one tick, earliest true start first: that server will be the winner."""
        chosen = self.fleet.servers if servers is None else servers
        starts = [Start(s, self.rng.uniform(0, self.delay_max)) for s in chosen]
        return sorted(starts, key=lambda s: s.true_offset)

    def spawn(self, start: Start, clock: float, role: str, job_sleep: float) -> Proc:
        return self.fleet.spawn(start, clock, self.args, self.redis.url, self.log, role,
                                job_sleep)

    def launch(self, starts: Sequence[Start], at: float, role: str,
               job_sleep: float = 0.0) -> list[Proc]:
        return self.fleet.launch(starts, lambda s: at + s.delay, self.args, self.redis.url,
                                 self.log, role, job_sleep)

    def start_winner(self, fid: str, at: float,
                     job_sleep: float) -> tuple[list[Start], Proc, Run | None]:
        """Plan one fire, start its first server alone and wait for its job to start.

        Returns the plan (the others start later, as each fault decides), the
        winner, and its run (None if the job never started: the fault is then
        not applied).
        """
        plan = self.plan()
        winner = self.spawn(plan[0], at + plan[0].delay, "winner", job_sleep)
        return plan, winner, self.wait_job_start(fid, winner)

    def runs_of(self, fid: str) -> list[Run]:
        return [r for r in read_runs(self.log) if r.fire == fid]

    def wait_job_start(self, fid: str, winner: Proc, count: int = 1) -> Run | None:
        """Poll the runs log until the winner's job has started (or the winner exited)."""
        found: list[Run] = []

        def started() -> bool:
            found[:] = self.runs_of(fid)
            return len(found) >= count or winner.popen.poll() is not None

        wait_until(started, FIRE_DEADLINE_S)
        found[:] = self.runs_of(fid)
        if len(found) < count:
            return None
        self.fleet.job_pids.add(found[count - 1].pid)
        return found[count - 1]

    def wait_guard_gone(self) -> bool:
        """The next fire must not meet this one's claim: wait for the overlap guard to go."""
        client = self.redis.client()
        return wait_until(lambda: not client.exists(RUNNING_KEY),
                          EXPIRY_DEADLINE_S)

    def record(self, fid: str) -> dict[str, str]:
        return dict(self.redis.client().hgetall(f"lockrun:{{{KEY}}}:fire:{fid}"))


def _finish(ctx: FaultCtx, ff: FaultFire, procs: Iterable[Proc]) -> FaultFire:
    ff.outcomes += ctx.fleet.collect(procs)
    ff.runs = ctx.runs_of(ff.fire)
    ctx.fleet.job_pids.update(r.pid for r in ff.runs)
    if not ctx.wait_guard_gone():
        ff.notes.append("the overlap guard did not go away")
    return ff


def _not_applied(ctx: FaultCtx, ff: FaultFire, winner: Proc) -> FaultFire:
    ff.applied = False
    ff.notes.append("the first server's job did not start, so the fault was not injected")
    return _finish(ctx, ff, [winner])


def fault_crash(ctx: FaultCtx, at: float, retry: bool) -> FaultFire:
    """SIGKILL the winning lockrun mid-run, after every other server has skipped."""
    fid = fire_id(at)
    ff = FaultFire(fid, expected=2 if retry else 1)
    plan, w, run = ctx.start_winner(fid, at, job_sleep=60)
    if run is None:
        return _not_applied(ctx, ff, w)
    ff.outcomes += ctx.fleet.collect(ctx.launch(plan[1:], at, "late"))
    os.kill(w.pid, signal.SIGKILL)
    killed_wall, killed_mono = time.time(), time.monotonic()
    ff.outcomes += ctx.fleet.collect([w])
    job_gone = wait_until(lambda: not pid_alive(run.pid), 5.0)
    ff.metrics["pdeathsig_ok"] = float(job_gone)
    ff.notes.append("job killed by PDEATHSIG" if job_gone else "job SURVIVED lockrun's SIGKILL")
    if not retry:
        return _finish(ctx, ff, [])
    # The crashed server stays down; the others' crontab ticks every minute inside the grace.
    others = [s for s in ctx.fleet.servers if s.name != plan[0].server.name]
    procs: list[Proc] = []
    for j in range(1, RETRY_TICKS + 1):
        if len(ctx.runs_of(fid)) >= 2:
            break
        pace_until(killed_mono + (j - 1) * TICK_REAL_S)
        procs += ctx.launch(ctx.plan(others), at + 60 * j, f"tick {j}", job_sleep=1)
    _finish(ctx, ff, procs)
    if len(ff.runs) >= 2:
        retry_run = ff.runs[1]
        rec = ctx.record(fid)
        start_ms = float(rec.get("start", "0"))
        ff.metrics["takeover_s"] = start_ms / 1000 - killed_wall
        owner_pid = rec.get("owner", "").rpartition(":")[2]
        tick = next((o.role for o in ff.outcomes if str(o.pid) == owner_pid), "?")
        ff.notes.append(f"retried by {retry_run.server} on {tick}, "
                        f"{ff.metrics['takeover_s']:.2f}s after the kill"
                        + ("" if retry_run.server != run.server else " (SAME server)"))
    return ff


def fault_kill_child(ctx: FaultCtx, at: float) -> FaultFire:
    """SIGKILL the job itself; the late servers arrive after lockrun has recorded the end."""
    fid = fire_id(at)
    ff = FaultFire(fid, expected=1)
    plan, w, run = ctx.start_winner(fid, at, job_sleep=30)
    if run is None:
        return _not_applied(ctx, ff, w)
    os.kill(run.pid, signal.SIGKILL)
    ff.outcomes += ctx.fleet.collect([w])
    rec = ctx.record(fid)
    done = rec.get("state") == "done" and rec.get("exit") == "137"
    ff.metrics["done_137"] = float(done)
    ff.notes.append(f"record after the kill: state={rec.get('state')} exit={rec.get('exit')} "
                    f"outcome={rec.get('outcome')}")
    return _finish(ctx, ff, ctx.launch(plan[1:], at, "late"))


def fault_restart(ctx: FaultCtx, at: float) -> FaultFire:
    """Crash-restart Redis while the winner runs; the late servers arrive after the restart."""
    fid = fire_id(at)
    ff = FaultFire(fid, expected=1)
    plan, w, run = ctx.start_winner(fid, at, job_sleep=3)
    if run is None:
        return _not_applied(ctx, ff, w)
    ctx.redis.holder(RUNNING_KEY).crash_restart()
    rec = ctx.record(fid)
    survived = rec.get("state") == "running" and rec.get("fence") == str(run.fence)
    ff.metrics["claim_survived"] = float(survived)
    ff.notes.append("claim survived the restart" if survived else "claim LOST in the restart")
    _finish(ctx, ff, [w, *ctx.launch(plan[1:], at, "late")])
    _check_loss(ff, run)
    return ff


def fault_pause(ctx: FaultCtx, at: float, ttl: float) -> FaultFire:
    """SIGSTOP Redis for longer than the ttl while the winner runs, then SIGCONT."""
    fid = fire_id(at)
    ff = FaultFire(fid, expected=1)
    plan, w, run = ctx.start_winner(fid, at, job_sleep=6)
    if run is None:
        return _not_applied(ctx, ff, w)
    node = ctx.redis.holder(RUNNING_KEY)
    node.pause()
    paused = time.monotonic()
    try:
        wait_until(lambda: time.monotonic() - paused >= ttl + 1.5 and LOST in w.stderr_now(),
                   ttl + 15)
    finally:
        node.resume()
    ff.metrics["paused_s"] = time.monotonic() - paused
    ff.notes.append(f"Redis stopped for {ff.metrics['paused_s']:.1f}s (ttl {ttl:g}s)")
    _finish(ctx, ff, [w, *ctx.launch(plan[1:], at, "late")])
    _check_loss(ff, run)
    return ff


def fault_client_kill(ctx: FaultCtx, at: float) -> FaultFire:
    """CLIENT KILL TYPE normal right after the acquire, and again after the first renewal."""
    fid = fire_id(at)
    ff = FaultFire(fid, expected=1)
    plan, w, run = ctx.start_winner(fid, at, job_sleep=3)
    if run is None:
        return _not_applied(ctx, ff, w)
    admin: Any = ctx.redis.holder(RUNNING_KEY).client()
    first = int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    me = int(admin.client_id())

    def reconnected() -> bool:
        listing = str(admin.execute_command("CLIENT", "LIST", "TYPE", "normal"))
        return any(f"id={me} " not in ln for ln in listing.splitlines() if ln.strip())

    back = wait_until(reconnected, 10.0)
    second = int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    ff.metrics["killed_connections"] = float(first + second)
    ff.notes.append(f"killed {first} connection(s) at the job's start and {second} after the "
                    + ("winner reconnected" if back else "wait for a reconnect timed out"))
    _finish(ctx, ff, [w, *ctx.launch(plan[1:], at, "late")])
    _check_loss(ff, run)
    return ff


def _check_loss(ff: FaultFire, first: Run) -> None:
    """Did the first winner say it lost the lease? Do fences still increase across runs?"""
    ff.lost_detected = any(LOST in ln for o in ff.outcomes if o.role == "winner"
                           for ln in o.stderr)
    if len(ff.runs) > 1:
        fences = [r.fence for r in ff.runs]
        ok = all(a < b for a, b in itertools.pairwise(fences))
        ff.notes.append(f"ran on {', '.join(r.server for r in ff.runs)}; fences "
                        + ("increase" if ok else f"DO NOT increase: {fences}")
                        + (f"; {first.server} reported the lost lease" if ff.lost_detected
                           else "; NO lost-lease line"))


@dataclass(frozen=True)
class FaultSpec:
    num: str
    title: str
    persistent: bool
    ttl: float
    by_nature: bool
    expectation: str
    how: str
    extra_args: tuple[str, ...] = ()
    delay_max: float = DELAY_DEFAULT_S
    topologies: tuple[str, ...] = ("single", "sentinel", "cluster")


FAULTS = (
    FaultSpec("1a", "winning lockrun SIGKILLed mid-run", False, 2, False,
              "1 partial run; job killed by PDEATHSIG; the others skipped (held)",
              "job `exec sleep 60`; the other servers start and skip while it runs; then "
              "SIGKILL to the winning lockrun. Every other server had arrived within the ttl; "
              "one arriving after the orphaned claim expired would start the fire again "
              "(what 1b relies on)"),
    FaultSpec("1b", "winning lockrun SIGKILLed, then retry ticks (--schedule)", False, 2, False,
              "1 partial run + 1 retry on another server after the ttl (documented retry)",
              "as 1a, with `--schedule '*/5 * * * *' --grace 5m`; the crashed server stays "
              f"down, the others' crontab ticks every minute: up to {RETRY_TICKS} ticks (all "
              f"inside the grace), {TICK_REAL_S:g}s of real time apart, the first right after "
              "the kill; retry jobs sleep 1s",
              ("--schedule", "*/5 * * * *", "--tz", "UTC", "--grace", "5m"), DELAY_SCHEDULE_S),
    FaultSpec("2", "the job (child) SIGKILLed", False, 2, False,
              "exit 137, done record written, late servers skip",
              "job `exec sleep 30`; SIGKILL to the job's pid (from the runs log); the other "
              "servers start after the winner exited"),
    FaultSpec("3", "Redis crash-restarted WITH persistence", True, 3, False,
              "claim survives; no duplicate",
              "job `exec sleep 3`; SIGKILL to redis-server right after the job started, then "
              "start it again on the same directory; the other servers start after the restart"),
    FaultSpec("4", "Redis crash-restarted WITHOUT persistence", False, 2, True,
              "claim lost: a late server runs it again (by nature), winner reports it",
              "as 3, but Redis keeps nothing across the restart"),
    FaultSpec("5", "Redis SIGSTOPped longer than the ttl", False, 2, True,
              "lease lost (local deadline): a late server may run it again, reported",
              "job `exec sleep 6`; SIGSTOP to redis-server right after the job started, SIGCONT "
              "once ttl + 1.5s have passed and the winner has printed its lost-lease line; the "
              "other servers start after the SIGCONT"),
    FaultSpec("6", "CLIENT KILL TYPE normal after the acquire", False, 2, False,
              "renewal reconnects; no duplicate, no lost lease",
              "job `exec sleep 3`; `CLIENT KILL TYPE normal` right after the job started, and "
              "again once the winner had reconnected (polled with `CLIENT LIST`); the other "
              "servers start after that"),
    FaultSpec("7", "failover to a replica during the job", False, FAILOVER_TTL_S, False,
              "claim survives on the new primary; no duplicate, no lost lease",
              "job `exec sleep 6`; once the replica has acknowledged the claim (`WAIT 1`), "
              "`SENTINEL FAILOVER` or `CLUSTER FAILOVER` on the replica of the job's slot; the "
              "other servers start once the new primary serves the slot, and one more once "
              "the claim's ttl is over",
              topologies=("sentinel", "cluster")),
)


def fault_failover(ctx: FaultCtx, at: float) -> FaultFire:
    """Promote the replica of the job's primary while the winner's job runs."""
    fid = fire_id(at)
    ff = FaultFire(fid, expected=1)
    node: Any = ctx.redis.holder(RUNNING_KEY).client()
    # A planned failover waits for a replica in sync. After the previous fire's failover
    # the demoted primary resyncs for a while; promoting it before that would be the
    # documented data-loss case, not this fault.
    if not wait_until(lambda: node.execute_command("WAIT", 1, 100) == 1, FIRE_DEADLINE_S):
        ff.notes.append("the replica never caught up before the fire")
    claimed = time.monotonic()
    plan, w, run = ctx.start_winner(fid, at, job_sleep=6)
    if run is None:
        return _not_applied(ctx, ff, w)
    acked = wait_until(lambda: node.execute_command("WAIT", 1, 100) == 1, 3.0)
    try:
        note, promoted = ctx.redis.failover(RUNNING_KEY)
    except RuntimeError as exc:
        ff.applied = False
        ff.notes.append(f"the failover was not carried out: {exc}")
        return _finish(ctx, ff, [w])
    ff.notes.append(note + ("" if acked else " (the replica had NOT acknowledged the claim)"))
    rec = promoted.client().hgetall(f"lockrun:{{{KEY}}}:fire:{fid}")
    survived = rec.get("state") == "running" and rec.get("fence") == str(run.fence)
    ff.metrics["claim_survived"] = float(survived)
    _finish(ctx, ff, [w, *ctx.launch(plan[1:], at, "late")])
    done = ctx.record(fid)
    ff.metrics["done_on_new_primary"] = float(done.get("state") == "done"
                                              and done.get("fence") == str(run.fence))
    # One more server once the claim's ttl is over: if the end had gone to the old
    # primary (wiped when it is demoted), the claim would have expired and this
    # server would run the fire again. (issue 10 point 8)
    ttl_over = claimed + FAILOVER_TTL_S
    wait_until(lambda: time.monotonic() >= ttl_over
               and ctx.record(fid).get("state") != "running", EXPIRY_DEADLINE_S)
    _finish(ctx, ff, ctx.launch(plan[-1:], at, "late"))
    _check_loss(ff, run)
    return ff


def fault_mode(opts: Options, fleet: Fleet) -> list[FaultResult]:
    """Each fault on its own fresh Redis, ``opts.fault_fires`` fires each, one at a time."""
    results = []
    for idx, spec in enumerate(FAULTS):
        if opts.topology not in spec.topologies or (opts.faults and spec.num not in opts.faults):
            continue
        args = ["-k", KEY, *spec.extra_args, "--ttl", f"{spec.ttl:g}s"]
        workdir = fleet.workdir / f"fault-{spec.num}"
        server = start_topology(opts, workdir / "redis", persistent=spec.persistent)
        ctx = FaultCtx(fleet, server, workdir / "runs.log", args,
                       random.Random(f"{opts.seed}:fault:{spec.num}"), spec.delay_max)
        res = FaultResult(spec.num, spec.title, server.persistence,
                          " ".join(shlex.quote(a) for a in args), spec.by_nature,
                          spec.expectation, spec.how)
        codes: Counter[str] = Counter()
        lines: Counter[str] = Counter()
        started = time.monotonic()
        try:
            for k in range(opts.fault_fires):
                at = T0 + 3600 * 24 * (idx + 1) + 600 * k  # a 10-minute slot per fire
                if spec.num in ("1a", "1b"):
                    ff = fault_crash(ctx, at, retry=spec.num == "1b")
                elif spec.num == "2":
                    ff = fault_kill_child(ctx, at)
                elif spec.num in ("3", "4"):
                    ff = fault_restart(ctx, at)
                elif spec.num == "5":
                    ff = fault_pause(ctx, at, spec.ttl)
                elif spec.num == "6":
                    ff = fault_client_kill(ctx, at)
                else:
                    ff = fault_failover(ctx, at)
                _tally(res, ff, codes, lines, fleet.workdir)
        finally:
            server.stop()
            fleet.cleanup()
        res.exit_codes = dict(codes.most_common())
        res.stderr_lines = dict(lines.most_common())
        res.outcome = _fault_outcome(res)
        print(f"sim: fault {spec.num}: {res.fires} fires, {res.runs} runs, "
              f"{res.duplicates} duplicates ({res.duplicates_detected} detected), "
              f"{res.misses} misses, {time.monotonic() - started:.0f}s: {res.outcome}",
              file=sys.stderr, flush=True)
        results.append(res)
    return results


def _tally(res: FaultResult, ff: FaultFire, codes: Counter[str], lines: Counter[str],
           workdir: Path) -> None:
    res.fires += 1
    res.runs += len(ff.runs)
    res.not_applied += not ff.applied
    if ff.extra_runs:
        res.duplicates += 1
        res.duplicates_detected += ff.lost_detected
    if len(ff.runs) < ff.expected:
        res.misses += 1
        ff.notes.append(f"{len(ff.runs)} runs, expected {ff.expected}")
    for o in ff.outcomes:
        label = code_name(o.code)
        unlabelled = o.role == "late" or o.role.startswith("tick")
        codes[label if unlabelled else f"{label} ({o.role})"] += 1
        res.hung += o.code is None
        for ln in o.stderr:
            lines[f"{o.role.split()[0]}: {normalise(ln, workdir)}"] += 1
    for name, value in ff.metrics.items():
        res.metrics.setdefault(name, []).append(value)
    res.notes.append(f"{ff.fire}: {len(ff.runs)} run(s); " + "; ".join(ff.notes))


def _fault_outcome(res: FaultResult) -> str:
    if res.violations:
        return "VIOLATION"
    if res.duplicates:
        return "by nature: duplicate detected and reported"
    return "guarantee held"


# --------------------------------------------------------------------------- flaky job

FLAKY_SCHEDULE = "*/10 * * * *"
FLAKY_GRACE_S = 300
FLAKY_TICKS = 5
"""Crontab ticks of one fire inside its grace: the slot's minutes 0-4."""
FLAKY_LATE_TICKS = 5
"""Ticks after the grace (minutes 5-9 of the slot), made only while the fire is still open:
the first of them ends a retry ticket that nobody claimed in time."""
FLAKY_DELAY_S = 20.0
"""Start delay of a tick: cron starts every line of a minute within a few seconds; with
d < 20s, tick 4 (at 240 + d) is still inside the 300s grace."""
FLAKY_RETRIES = 2
FLAKY_EXIT = 3
FLAKY_JOB_S = 0.3
FLAKY_P = 0.7
FLAKY_Q = 0.1
FLAKY_TICK_S = 1.0
CLAIM_TOLERANCE_MS = 5
"""A history event's stream id is stamped by Redis in the same script as the TIME the
script compared; a few ms of slack keeps the due/preference checks free of rounding."""
JOB_FLAKY = (
    'read up _ < /proc/uptime; '
    'echo "start $SIM_FIRE $LOCKRUN_FIRE $SIM_SERVER $LOCKRUN_FENCE $$ $up" >> "$SIM_RUNS_LOG"; '
    'sleep "$SIM_JOB_SLEEP"; read up _ < /proc/uptime; '
    'echo "end $SIM_FIRE $LOCKRUN_FIRE $SIM_SERVER $LOCKRUN_FENCE $$ $up $SIM_EXIT" '
    '>> "$SIM_RUNS_LOG"; exit "$SIM_EXIT"')
"""The flaky job: a start line and an end line (with its exit status) per attempt, each
stamped with /proc/uptime, which libfaketime does not fake: a monotonic clock common to all
servers (10 ms resolution), so two attempts of one fire can be checked for overlap. The
exit status was drawn by the script before lockrun started (SIM_EXIT); SIM_FIRE is the fire
the script meant, LOCKRUN_FIRE the one lockrun says it ran."""


@dataclass(frozen=True)
class Attempt:
    """One attempt as the job logged it (end and exit None: it never logged its end)."""

    fire: str
    lockrun_fire: str
    server: str
    fence: int
    pid: int
    start: float
    end: float | None = None
    exit: int | None = None


def read_attempts(log: Path) -> list[Attempt]:
    """The job's log as attempts, in the order they started; an end pairs by fire and pid."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    starts: dict[tuple[str, int], Attempt] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] == "start":
            starts[(parts[1], int(parts[5]))] = Attempt(
                parts[1], parts[2], parts[3], int(parts[4] or 0), int(parts[5]),
                float(parts[6]))
        elif len(parts) == 8 and parts[0] == "end" and (parts[1], int(parts[5])) in starts:
            a = starts[(parts[1], int(parts[5]))]
            starts[(a.fire, a.pid)] = Attempt(a.fire, a.lockrun_fire, a.server, a.fence, a.pid,
                                              a.start, float(parts[6]), int(parts[7]))
    return sorted(starts.values(), key=lambda a: a.start)


@dataclass
class FlakyResult:
    servers: int
    fires: int
    lockrun_args: str
    bad_hosts: list[str]
    p: float
    q: float
    tick_s: float
    retry_delay_ms: int
    job_s: float
    processes: int = 0
    ticks: int = 0
    late_ticks: int = 0
    attempts: int = 0
    attempts_per_fire: dict[str, int] = field(default_factory=dict)
    failed_attempts: int = 0
    retries: int = 0
    retries_moved: int = 0
    """Retries claimed by a host that had not failed the fire."""
    retries_moved_healthy: int = 0
    retries_moved_bad: int = 0
    """Moved, but to another of the bad hosts (one that had not failed this fire yet)."""
    retries_stayed: int = 0
    """Retries claimed by a host that had failed the fire, after the preference window."""
    first_try_success: int = 0
    success_after_retry: int = 0
    exhausted: int = 0
    ended_by_grace: int = 0
    other_end: int = 0
    successes_per_fire: dict[str, int] = field(default_factory=dict)
    retry_lag_ms: list[int] = field(default_factory=list)
    """Per retry: its claim (Redis time) minus the ticket's due time."""
    # violations
    double_successes: int = 0
    overlaps: int = 0
    too_many_attempts: int = 0
    left_open: int = 0
    ran_nowhere: int = 0
    before_due: int = 0
    within_preference: int = 0
    log_history_mismatches: int = 0
    record_mismatches: int = 0
    exit_mismatches: int = 0
    hung: int = 0
    exit_codes: dict[str, int] = field(default_factory=dict)
    stderr_lines: dict[str, int] = field(default_factory=dict)
    stderr_total: int = 0
    """Lines other than -v's info lines: warnings, errors, anything unexpected."""
    verbose_lines: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    """Ticks at which a host that had failed the fire found its ticket due and left it to
    the others (the preference window)."""
    wall_s: float = 0.0
    timeline: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (self.double_successes + self.overlaps + self.too_many_attempts + self.left_open
                + self.ran_nowhere + self.before_due + self.within_preference
                + self.log_history_mismatches + self.record_mismatches + self.exit_mismatches
                + self.hung)


def bad_hosts(servers: Sequence[Server]) -> set[str]:
    """Every third server in the order they arrive, starting with the earliest.

    Arrival order is mostly the clock skew (a clock ahead starts its cron line
    first), so the server that takes most first attempts is a bad one, and the
    servers arriving right after it are healthy: the retry has somewhere to go,
    and the failed host, which also arrives first at the retry's tick, must defer.
    """
    ranked = sorted(servers, key=lambda s: -s.skew)
    return {s.name for s in ranked[::3]}


def read_history(client: Any, key: str, after: str) -> tuple[list[tuple[int, dict[str, str]]],
                                                             str]:
    """History events after stream id *after*: (Redis ms of the event, fields), new last id."""
    raw = client.xrange(f"lockrun:{{{key}}}:hist", min=f"({after}", max="+") or []
    events = [(int(str(i).split("-")[0]), {str(k): str(v) for k, v in f.items()})
              for i, f in raw]
    return events, (str(raw[-1][0]) if raw else after)


def flaky_mode(opts: Options, fleet: Fleet) -> FlakyResult:
    """One flaky job, fire after fire; every server ticks each (virtual) minute until the fire
    is done, as a crontab that ticks more often than the schedule does."""
    rng = random.Random(f"{opts.seed}:flaky")
    bad = bad_hosts(fleet.servers)
    delay_ms = round(opts.flaky_tick * 1000 / 2)
    retry = ["--retries", str(FLAKY_RETRIES), "--retry-delay", f"{delay_ms}ms", "--ttl",
             CLEAN_TTL]
    args = ["-v", "--log-format", "json", "-k", KEY, "--schedule", FLAKY_SCHEDULE, "--tz",
            "UTC", "--grace", f"{FLAKY_GRACE_S // 60}m", *retry]
    # self-check: each server its own fire id, so every server runs every fire
    broken = ["-v", "--log-format", "json", "-k", KEY, "--overlap", "allow", *retry]
    workdir = fleet.workdir / "flaky"
    log = workdir / "runs.log"
    server = start_topology(opts, workdir / "redis", persistent=False)
    shown = [*broken, "--fire", "FIRE.SERVER"] if opts.sabotage else args
    result = FlakyResult(len(fleet.servers), opts.flaky_fires,
                         " ".join(shlex.quote(a) for a in shown),
                         sorted(bad), opts.flaky_p, opts.flaky_q, opts.flaky_tick, delay_ms,
                         FLAKY_JOB_S)
    codes: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    verbose: Counter[str] = Counter()
    per_fire: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    started = time.monotonic()
    try:
        client = server.client()
        last_id = "0-0"
        for k in range(opts.flaky_fires):
            at = T0 + 600 * k  # one */10 slot per fire
            fid = fire_id(at)
            fire_key = f"lockrun:{{{KEY}}}:fire:{fid}"
            procs: list[Proc] = []
            t0 = time.monotonic()

            def done(fire_key: str = fire_key) -> bool:
                return bool(client.hget(fire_key, "state") == "done")

            for j in range(FLAKY_TICKS + FLAKY_LATE_TICKS):
                # a done record is final: no later tick can start the fire again
                if j and wait_until(done, t0 + j * opts.flaky_tick - time.monotonic(), 0.02):
                    break
                starts = [Start(s, rng.uniform(0, FLAKY_DELAY_S)) for s in fleet.servers]
                exits = {s.server.name: FLAKY_EXIT if rng.random() < (
                    opts.flaky_p if s.server.name in bad else opts.flaky_q) else 0
                    for s in starts}

                def clock(s: Start, j: int = j, at: float = at) -> float:
                    return at + 60 * j + s.delay

                def env(s: Start, exits: dict[str, int] = exits,
                        fid: str = fid) -> dict[str, str]:
                    return {"SIM_EXIT": str(exits[s.server.name]), "SIM_FIRE": fid}

                if opts.sabotage == "fire-per-server":
                    procs += [fleet.spawn(s, clock(s), [*broken, "--fire",
                                                        f"{fid}.{s.server.name}"],
                                          server.url, log, f"tick {j}", FLAKY_JOB_S,
                                          JOB_FLAKY, env(s)) for s in starts]
                else:
                    procs += fleet.launch(starts, clock, args, server.url, log, f"tick {j}",
                                          FLAKY_JOB_S, JOB_FLAKY, env)
                result.ticks += 1
                result.late_ticks += j >= FLAKY_TICKS
            outs = fleet.collect(procs)
            result.processes += len(outs)
            for o in outs:
                codes[code_name(o.code)] += 1
                result.hung += o.code is None
                for ln in o.stderr:
                    info, text = _said(ln)
                    if info:
                        verbose[text] += 1
                    else:
                        lines[normalise(text, fleet.workdir)] += 1
            attempts = [a for a in read_attempts(log) if a.fire == fid]
            fleet.job_pids.update(a.pid for a in attempts)
            events, last_id = read_history(client, KEY, last_id)
            record = dict(client.hgetall(fire_key))
            _check_flaky_fire(result, fid, attempts, [e for e in events if
                                                       e[1].get("fire") == fid],
                              record, outs, bad, delay_ms)
            per_fire[str(len(attempts))] += 1
            successes[str(sum(a.exit == 0 for a in attempts))] += 1
            if (k + 1) % 10 == 0 or k + 1 == opts.flaky_fires:
                print(f"sim: flaky: {k + 1}/{opts.flaky_fires} fires, {result.attempts} "
                      f"attempts, {result.retries_moved}/{result.retries} retries moved, "
                      f"{result.violations} violations, {time.monotonic() - started:.0f}s",
                      file=sys.stderr, flush=True)
    finally:
        server.stop()
        fleet.cleanup()
    result.wall_s = time.monotonic() - started
    result.attempts_per_fire = dict(sorted(per_fire.items()))
    result.successes_per_fire = dict(sorted(successes.items()))
    result.exit_codes = dict(codes.most_common())
    result.stderr_lines = dict(lines.most_common())
    result.stderr_total = sum(lines.values())
    result.verbose_lines = dict(verbose.most_common())
    result.deferred = verbose[VERBOSE_KINDS["its retry is left to another server"]]
    return result


VERBOSE_KINDS = {
    "acquired ": "acquired the fire (an attempt starts)",
    "a later tick of any server may retry it": "attempt failed, left a retry ticket",
    "its retry is due at": "skipped: the ticket is not due yet",
    "its retry is left to another server": "skipped: failed here, left the retry to others "
                                           "(the preference)",
    "already done by": "skipped: the fire is done",
    "held by": "skipped: an attempt is running",
    "too late": "skipped: past the grace",
}


def _said(line: str) -> tuple[bool, str]:
    """(True, its kind) for an info line of lockrun -v (JSON lines); (False, the line) for
    anything else (a warning, an error, a traceback), which the report lists in full."""
    try:
        record = json.loads(line)
    except ValueError:
        return False, line
    if not isinstance(record, dict):
        return False, line
    msg = str(record.get("msg", ""))
    if record.get("level") != "info":
        return False, f"{record.get('level')}: {msg}"
    return True, next((kind for text, kind in VERBOSE_KINDS.items() if text in msg),
                      "other: " + re.sub(r"\d", "N", msg))


def _check_flaky_fire(res: FlakyResult, fid: str, attempts: list[Attempt],
                      events: list[tuple[int, dict[str, str]]], record: dict[str, str],
                      outs: list[Outcome], bad: set[str], delay_ms: int) -> None:
    """Count one fire's attempts from the job's log and from the history, and check them."""
    def problem(text: str) -> None:
        _problem(res.problems, f"fire {fid}: {text}")

    res.attempts += len(attempts)
    failed = [a for a in attempts if a.exit != 0]
    res.failed_attempts += len(failed)
    wins = [a for a in attempts if a.exit == 0]
    if len(wins) > 1:
        res.double_successes += 1
        problem("succeeded " + str(len(wins)) + " times: "
                + ", ".join(f"{a.server} (fence {a.fence})" for a in wins))
    for i, a in enumerate(attempts):
        later = [b for b in attempts[i + 1:] if a.end is None or b.start < a.end]
        if later:
            res.overlaps += 1
            problem(f"attempt on {a.server} [{a.start:.2f}, {a.end}] overlaps "
                    + ", ".join(f"{b.server} from {b.start:.2f}" for b in later))
            break
    if len(attempts) > FLAKY_RETRIES + 1:
        res.too_many_attempts += 1
        problem(f"{len(attempts)} attempts with --retries {FLAKY_RETRIES}")
    if not attempts:
        res.ran_nowhere += 1
        problem(f"no attempt; record {record}")
    # the history: one start and one end per attempt, the same hosts, fences and exits
    starts = [(ms, e) for ms, e in events if e.get("event") == "start"]
    ends = {e.get("fence", ""): (ms, e) for ms, e in events if e.get("event") == "end"}
    logged = [(str(a.fence), a.server) for a in attempts]
    wrong = [a for a in attempts if a.lockrun_fire != fid]
    if wrong:
        res.log_history_mismatches += 1
        problem(f"lockrun ran {', '.join(sorted({a.lockrun_fire for a in wrong}))}")
    if [(e.get("fence", ""), e.get("host", "")) for _, e in starts] != logged \
            or [e.get("attempt") for _, e in starts] != [str(i + 1) for i in range(len(starts))]:
        res.log_history_mismatches += 1
        problem(f"job log {logged} but history starts "
                f"{[(e.get('fence'), e.get('host'), e.get('attempt')) for _, e in starts]}")
    for a in attempts:
        end = ends.get(str(a.fence))
        if a.end is None or end is None:
            res.left_open += 1
            problem(f"attempt on {a.server} (fence {a.fence}) has no end in the "
                    + ("job's log" if a.end is None else "history"))
        elif end[1].get("exit") != str(a.exit):
            res.log_history_mismatches += 1
            problem(f"attempt on {a.server} exited {a.exit}, history says {end[1]}")
    if record.get("state") != "done":
        res.left_open += 1
        problem(f"left as {record.get('state')!r}: {record}")
    elif attempts and (record.get("exit") != str(attempts[-1].exit)
                       or record.get("attempt") != str(len(attempts))):
        res.record_mismatches += 1
        problem(f"done record {record} does not match the last attempt {attempts[-1]}")
    # lockrun passes the attempt's status through; every other tick skips with 0
    codes = Counter(o.code for o in outs)
    if codes[FLAKY_EXIT] != len(failed) or codes[0] != len(outs) - len(failed):
        res.exit_mismatches += 1
        problem(f"{len(failed)} failed attempts but lockrun exit codes {dict(codes)}")
    # the retries: due, preferring the hosts that have not failed the fire
    steps = []
    for i, (ms, e) in enumerate(starts):
        host = e.get("host", "")
        tag = f"{host}{'*' if host in bad else ''}"
        end = ends.get(e.get("fence", ""))
        outcome = (f"exit {end[1].get('exit')}" if end else "no end")
        if i == 0:
            steps.append(f"{tag} {outcome}")
            continue
        prev = ends.get(starts[i - 1][1].get("fence", ""))
        due_text = prev[1].get("retry_due_ms", "") if prev else ""
        if not due_text:
            res.log_history_mismatches += 1
            problem(f"attempt {i + 1} on {host} started, but attempt {i} left no ticket")
            continue
        due = int(due_text)
        prefer = due + delay_ms
        failed_hosts = {s[1].get("host") for s in starts[:i]
                        if (x := ends.get(s[1].get("fence", ""))) and x[1].get("exit") != "0"}
        res.retries += 1
        res.retry_lag_ms.append(ms - due)
        if ms + CLAIM_TOLERANCE_MS < due:
            res.before_due += 1
            problem(f"attempt {i + 1} on {host} claimed {due - ms} ms before its ticket was due")
        if host in failed_hosts:
            if ms + CLAIM_TOLERANCE_MS < prefer:
                res.within_preference += 1
                problem(f"attempt {i + 1} on {host}, which had failed the fire, claimed "
                        f"{prefer - ms} ms before the other servers' turn was over")
            res.retries_stayed += 1
            move = "stayed on"
        else:
            res.retries_moved += 1
            if host in bad:
                res.retries_moved_bad += 1
            else:
                res.retries_moved_healthy += 1
            move = "moved to"
        steps.append(f"{move} {tag} {ms - due:+d} ms after due, {outcome}")
    reason = record.get("reason", "")
    if attempts and attempts[-1].exit == 0:
        if len(attempts) == 1:
            res.first_try_success += 1
        else:
            res.success_after_retry += 1
    elif attempts and reason == "retry-too-late":
        res.ended_by_grace += 1
        steps.append("ticket ended after the grace (retry-too-late)")
    elif len(attempts) == FLAKY_RETRIES + 1:
        res.exhausted += 1
        steps.append("retries exhausted")
    elif attempts:
        res.other_end += 1
        steps.append(f"ended: {record}")
    if len(attempts) > 1 and len(res.timeline) < 60:
        res.timeline.append(f"{fid}: " + " → ".join(steps))


# --------------------------------------------------------------------------- report


@dataclass
class Options:
    servers: int
    fires: int
    fault_fires: int
    mode: str
    seed: int
    short: bool
    ms_per_vsec: float
    lockrun: Path
    report: Path | None
    json_path: Path | None
    sabotage: str | None
    workdir: Path | None
    topology: str = "single"
    faults: tuple[str, ...] = ()
    flaky_fires: int = 100
    flaky_p: float = FLAKY_P
    flaky_q: float = FLAKY_Q
    flaky_tick: float = FLAKY_TICK_S


def lockrun_source(lockrun: Path) -> str:
    """Which lockrun code ran: the git commit of the package the executable imports."""
    python = lockrun.parent / "python"
    try:
        where = subprocess.run([str(python if python.exists() else sys.executable), "-c",
                                "import lockrun; print(lockrun.__file__)"],
                               capture_output=True, text=True, timeout=30,
                               cwd="/").stdout.strip()  # not "" = cwd on sys.path: a checkout
        commit = subprocess.run(["git", "-C", str(Path(where).parent), "describe", "--always",
                                 "--dirty", "--abbrev=12"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"git {commit}" if commit else "not in a git checkout"


def machine(lockrun: Path) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return out.strip() or "unknown"

    redis_v = version(["redis-server", "--version"])
    match = re.search(r"v=(\S+)", redis_v)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis-py": metadata.version("redis"),
        "redis-server": match.group(1) if match else redis_v,
        "lockrun": f"{metadata.version('lockrun')} ({lockrun_source(lockrun)})",
        "libfaketime": version(["dpkg-query", "-W", "-f", "${Version}", "libfaketime"]),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def command_line(opts: Options) -> str:
    parts = ["python", "tests/fleet/sim.py"]
    if opts.short:
        parts.append("--short")
    if opts.topology != "single":
        parts += ["--topology", opts.topology]
    if opts.faults:
        parts += ["--faults", ",".join(opts.faults)]
    parts += ["--mode", opts.mode, "--servers", str(opts.servers), "--fires", str(opts.fires),
              "--fault-fires", str(opts.fault_fires), "--seed", str(opts.seed)]
    if opts.ms_per_vsec != MS_PER_VSEC:
        parts += ["--ms-per-vsec", f"{opts.ms_per_vsec:g}"]
    if opts.mode in ("flaky", "all"):
        parts += ["--flaky-fires", str(opts.flaky_fires), "--flaky-p", f"{opts.flaky_p:g}",
                  "--flaky-q", f"{opts.flaky_q:g}"]
        if opts.flaky_tick != max(FLAKY_TICK_S, opts.servers / 10):
            parts += ["--flaky-tick", f"{opts.flaky_tick:g}"]
    if opts.sabotage:
        parts += ["--sabotage", opts.sabotage]
    if opts.report:
        try:
            shown = str(opts.report.resolve().relative_to(ROOT))
        except ValueError:
            shown = str(opts.report)
        parts += ["--report", shown]
    return " ".join(shlex.quote(p) for p in parts)


def _dist(values: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items()) or "none"


def _stderr_block(lines: dict[str, int]) -> list[str]:
    if not lines:
        return ["  - stderr: none"]
    out = ["  - stderr (de-duplicated, with counts):"]
    out += [f"    - {n} x `{text}`" for text, n in lines.items()]
    return out


def render(opts: Options, info: dict[str, str], uts: tuple[bool, str],
           modes: list[ModeResult], faults: list[FaultResult], flaky: FlakyResult | None,
           wall: float) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [
        "# lockrun fleet simulation",
        "",
        f"Written by `tests/fleet/sim.py` on {now}; do not edit by hand. Regenerate it from "
        "the repository root, with the venv's Python, with:",
        "",
        "```sh",
        command_line(opts),
        "```",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, load average "
        f"{info['load']} at the start. Versions: Python {info['python']}, redis-py "
        f"{info['redis-py']}, Redis {info['redis-server']}, lockrun {info['lockrun']}, "
        f"libfaketime {info['libfaketime']}. Total wall time {wall / 60:.1f} min.",
        "",
        "## Model",
        "",
        "- " + TOPOLOGY_TEXT[opts.topology] + " Started and stopped by the script, afresh "
        "for each mode and each fault; `--save '' --appendonly no` unless a fault says "
        "otherwise. Faults that act on Redis act on the server that holds the job's keys "
        "(the primary of its slot).",
        f"- {opts.servers} simulated servers `srv-01`…`srv-{opts.servers:02d}`. Server *i* has a "
        f"fixed clock skew s_i drawn uniformly in [-{SKEW_MAX_S:g}s, +{SKEW_MAX_S:g}s] (seed "
        f"{opts.seed}), and per fire a start delay d_i drawn uniformly in [0, D] (D = "
        f"{DELAY_DEFAULT_S:g}s without `--schedule`, {DELAY_SCHEDULE_S:g}s with it).",
        "- Identity: " + ("every lockrun runs in its own UTS namespace (`unshare --uts`) with "
                          "the hostname of its server, so owner tokens, `host` fields and skip "
                          "messages name the server." if uts[0] else
                          "`unshare --uts` is not permitted here "
                          f"({uts[1]}), so every lockrun has the same hostname; the job's output "
                          "still names the server (SIM_SERVER)."),
        "- Time is virtual. Fire k is scheduled at T_k (2026-11-22T00:00:00Z + k minutes in the "
        "clean modes). Cron on server *i* starts lockrun when its own clock reads T_k, i.e. at "
        "true time T_k - s_i, plus d_i; lockrun's clock (libfaketime, "
        "`FAKETIME=@<T_k + d_i>`; the monotonic clock is shifted alike, both tick at real "
        "speed) then reads T_k + d_i. The "
        "processes of one fire are started concurrently, in the order of their true start "
        f"(d_i - s_i), compressed to {opts.ms_per_vsec:g} ms of real time per virtual second. "
        "The skew decides who arrives first in true time; it cannot change a fire id, because "
        "each cron fires by its own clock. lockrun gets `--max-skew 0`, because the faked clocks "
        "differ from the Redis server's real one by design.",
        "- Fires run one after another: the script waits for every process of fire k (and, "
        "after a fault, for an orphaned claim to expire) before it starts fire k+1. In reality "
        "fires are a minute apart, so a fire never meets the previous one's processes.",
        "- The job is `sh -c 'echo \"$LOCKRUN_FIRE $SIM_SERVER $LOCKRUN_FENCE $$\" >> RUNS_LOG'` "
        "(faults: followed by `exec sleep S`, so there is something to kill). A fire's runs are "
        "the lines it added to RUNS_LOG: more than one is a duplicate, none is a miss. Every "
        "lockrun's exit status and stderr are recorded. After each clean fire the done record in "
        "Redis is checked against the run (state `done`, exit 0, same fence, host = the server "
        "that ran it).",
    ]
    if opts.mode != "flaky":
        md += _render_clean(modes)
        md += _render_faults(opts, faults)
    if flaky is not None:
        md += _render_flaky(flaky)
    md += ["", "## Conclusion", ""]
    md += conclusion(modes, faults, flaky)
    return "\n".join(md) + "\n"


def _render_clean(modes: list[ModeResult]) -> list[str]:
    md = [
        "",
        "## Clean runs",
        "",
        "| mode | lockrun arguments | servers | fires | skew range | delay range | lockrun "
        "processes | runs | duplicates | misses | exit codes | stderr lines | wall time | CPU per "
        "process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in modes:
        md.append(
            f"| {m.mode} | `{m.lockrun_args}` | {m.servers} | {m.fires} | {m.skew_range[0]:+.1f}s "
            f"… {m.skew_range[1]:+.1f}s | {m.delay_range[0]:.1f}s … {m.delay_range[1]:.1f}s "
            f"(D = {m.delay_max:g}s) | {m.processes} | {m.runs} | {m.duplicates} | {m.misses} | "
            f"{_dist(m.exit_codes)} | {m.stderr_total} | {m.wall_s / 60:.1f} min | "
            f"{m.cpu_ms_per_process:.0f} ms |")
    if not modes:
        md.append("| (not run) | | | | | | | | | | | | | |")
    for m in modes:
        extra = []
        if m.wrong_fire_id:
            extra.append(f"{m.wrong_fire_id} runs carried an unexpected fire id")
        if m.record_mismatches:
            extra.append(f"{m.record_mismatches} done records did not match their run")
        if not m.fences_increasing:
            extra.append("fencing tokens did not increase from fire to fire")
        if m.hung:
            extra.append(f"{m.hung} processes hung and were killed")
        if extra or m.problems or m.stderr_lines:
            md += ["", f"{m.mode}: " + ("; ".join(extra) or "details") + ":"]
            md += [f"- {p}" for p in m.problems]
            md += _stderr_block(m.stderr_lines)
    if modes and all(not m.record_mismatches and m.fences_increasing for m in modes):
        md += ["", "In every clean fire the done record matched its run, and the fencing "
               "tokens increased from fire to fire."]
    return md


def _render_faults(opts: Options, faults: list[FaultResult]) -> list[str]:
    md = ["", "## Faults", ""]
    if faults:
        md += [
            f"Each fault is injected into {opts.fault_fires} fire(s), on its own fresh Redis. "
            "The first server in true start order is started alone and wins; the fault is "
            "injected once its job has started (the script polls the runs log); the other "
            "servers then arrive in their start order (\"late\" servers). Exit codes of the "
            "late servers and retry ticks are unlabelled.",
            "",
            "| # | fault | Redis | lockrun arguments | fires | runs | duplicates | misses | exit "
            "codes | lost-lease lines | outcome |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in faults:
            lost = sum(n for ln, n in f.stderr_lines.items() if LOST in ln)
            dup = f"{f.duplicates}" + (f" ({f.duplicates_detected} detected)"
                                       if f.duplicates else "")
            md.append(f"| {f.num} | {f.title} | `{f.redis}` | `{f.lockrun_args}` | {f.fires} | "
                      f"{f.runs} | {dup} | {f.misses} | {_dist(f.exit_codes)} | {lost} | "
                      f"{f.outcome} |")
        md += ["", "### Notes per fault", ""]
        for f in faults:
            md.append(f"- **{f.num}. {f.title}.** Injected: {f.how}. Expected: "
                      f"{f.expectation}. Outcome: {f.outcome}.")
            md += _fault_metrics(f)
            md += _stderr_block(f.stderr_lines)
            md += [f"  - {n}" for n in f.notes]
    else:
        md.append("(not run)")
    return md


def _fault_metrics(f: FaultResult) -> list[str]:
    out = []
    m = f.metrics
    if "pdeathsig_ok" in m:
        out.append(f"  - job killed by PDEATHSIG when lockrun was SIGKILLed: "
                   f"{sum(m['pdeathsig_ok']):.0f}/{len(m['pdeathsig_ok'])}")
    if "takeover_s" in m:
        t = m["takeover_s"]
        out.append(f"  - time to take over after a crash (kill → retry's claim, real seconds): "
                   f"min {min(t):.2f}, median {statistics.median(t):.2f}, max {max(t):.2f}; "
                   f"ticks came every {TICK_REAL_S:g}s here, the first one right after the "
                   "kill. With a real crontab a tick comes every minute, so expect up to "
                   "ttl + 60s + the start delay.")
    if "done_137" in m:
        out.append(f"  - done record with exit 137 right after lockrun exited: "
                   f"{sum(m['done_137']):.0f}/{len(m['done_137'])}")
    if "claim_survived" in m:
        out.append(f"  - claim still in Redis after the restart: "
                   f"{sum(m['claim_survived']):.0f}/{len(m['claim_survived'])}")
    if "paused_s" in m:
        out.append(f"  - Redis stopped for {min(m['paused_s']):.1f}-{max(m['paused_s']):.1f}s")
    if "killed_connections" in m:
        out.append(f"  - connections killed per fire: "
                   f"{', '.join(f'{x:.0f}' for x in m['killed_connections'])}")
    return out


def conclusion(modes: list[ModeResult], faults: list[FaultResult],
               flaky: FlakyResult | None = None) -> list[str]:
    lines = []
    bad_modes = [m for m in modes if m.violations]
    if modes:
        total = sum(m.fires for m in modes)
        procs = sum(m.processes for m in modes)
        if bad_modes:
            lines.append("- **Violation.** " + "; ".join(
                f"{m.mode}: {m.duplicates} duplicates, {m.misses} misses, {m.wrong_fire_id} "
                f"wrong fire ids, {m.hung} hung" for m in bad_modes) + ". See the details above.")
        else:
            lines.append(f"- Clean runs: {total} fires, {procs} lockrun processes, every fire "
                         "ran exactly once, with no duplicate and no miss.")
        noisy = [m for m in modes if m.stderr_total or set(m.exit_codes) != {"0"}]
        if noisy:
            lines.append("- Not silent: " + "; ".join(
                f"{m.mode}: exit codes {_dist(m.exit_codes)}, {m.stderr_total} stderr lines"
                for m in noisy) + ".")
        else:
            lines.append("- Every lockrun exited 0 and printed nothing, winners and skippers "
                         "alike.")
    if faults:
        bad = [f for f in faults if f.violations]
        nature = [f for f in faults if f.duplicates and not f.violations]
        held = [f for f in faults if not f.duplicates and not f.violations]
        if bad:
            lines.append("- **Fault violations:** " + ", ".join(
                f"{f.num} ({f.title})" for f in bad) + ".")
        if held:
            lines.append("- No duplicate under faults " + ", ".join(f.num for f in held)
                         + ": while Redis keeps its data, each fire started at most once "
                         "(1b's second start is the documented retry after a crash).")
        if nature:
            lines.append("- Duplicates by nature under faults " + ", ".join(
                f"{f.num} ({f.duplicates}/{f.fires} fires)" for f in nature)
                + ": Redis forgot or expired a running claim, which the README lists as "
                "outside the guarantee. In every such fire the first winner printed a "
                "`lost the lease` line, so the duplicate did not go unnoticed.")
    if (modes or faults) and not bad_modes and not any(f.violations for f in faults):
        lines.append("- Overall: at most one start per fire while Redis keeps its data; the "
                     "documented data-loss cases happen and lockrun reports them.")
    if flaky is not None:
        f = flaky
        if f.violations:
            lines.append(f"- **Flaky job: {f.violations} violation(s)**, listed in its "
                         "section above.")
        lines.append(
            f"- Flaky job: {f.fires} fires, {f.attempts} attempts, {f.retries} retries; "
            f"{f.retries_moved} of them moved to a server that had not failed the fire "
            f"({f.retries_moved_healthy} to a healthy one), {f.retries_stayed} stayed; "
            f"{f.success_after_retry} fires succeeded after a retry, {f.exhausted} exhausted "
            f"their retries, {f.ended_by_grace} ran out of grace. At most "
            f"{max((int(n) for n in f.successes_per_fire), default=0)} successful run per "
            f"fire, {f.double_successes} fires succeeded twice, {f.overlaps} had overlapping "
            "attempts.")
    return lines


def _render_flaky(f: FlakyResult) -> list[str]:
    lag = sorted(f.retry_lag_ms)
    lag_text = (f"min {lag[0]:+d} ms, median {statistics.median(lag):+.0f} ms, max "
                f"{lag[-1]:+d} ms" if lag else "no retry")
    successes = max((int(n) for n in f.successes_per_fire), default=0)
    md = [
        "",
        "## Flaky job: retries that move",
        "",
        f"- lockrun arguments: `{f.lockrun_args}`, on a fresh Redis.",
        "- Every server's crontab ticks every minute (a line `* * * * *` with the schedule "
        "given to lockrun), so one fire gets several ticks. Minutes 0-4 of a slot are inside "
        f"the {FLAKY_GRACE_S // 60}m grace; each server starts lockrun at minute j plus a "
        f"start delay drawn in [0, {FLAKY_DELAY_S:g}s] per tick, its clock reading that "
        "(libfaketime). The script ticks until the fire's record is done; after the grace "
        f"(minutes 5-{4 + FLAKY_LATE_TICKS}) only while the fire is still open, so the first "
        "late tick ends a ticket nobody claimed in time (`retry-too-late`).",
        f"- Time is compressed: a crontab minute is {f.tick_s:g}s of real time. The retry "
        "delay is decided by Redis's clock, which is real, so it is given in the same "
        f"compressed unit: `--retry-delay {f.retry_delay_ms}ms` is half a tick, as "
        "`--retry-delay 30s` would be with a real crontab. A short job's ticket is then due "
        "before the next tick, and until one more delay has passed only servers that have "
        "not failed the fire may claim it, so the next tick normally falls in that window. "
        "(The grace is measured by lockrun's faked clocks in virtual minutes, so a failure "
        "at minute 4 still leaves a ticket due half a second later, which a real `30s` "
        "delay would not: such tickets are the ones a late tick ends.) Lockrun's own start "
        "(Python, about 0.1-0.3 s of real time) is not compressed: it stands for several "
        "virtual seconds, and more on a loaded machine.",
        f"- Bad hosts: {', '.join(f.bad_hosts)} ({len(f.bad_hosts)} of {f.servers}): every "
        "third server in arrival order, starting with the one whose clock is furthest ahead "
        "(it starts first at almost every tick, so it takes most first attempts, and it "
        "also arrives first at the retry's tick, where it must let another server go "
        f"first). The job fails (exit {FLAKY_EXIT}) with probability p = {f.p:g} on a bad "
        f"host and q = {f.q:g} on any host; the script draws it for every lockrun process "
        "before starting it (seeded, SIM_EXIT).",
        f"- The job appends `start FIRE SERVER FENCE PID UPTIME` to its log, sleeps "
        f"{f.job_s:g}s, appends `end ... UPTIME EXIT` and exits with its status. UPTIME is "
        "`/proc/uptime`, which libfaketime does not fake: a monotonic clock shared by all "
        "servers (10 ms resolution), used to check that no two attempts of a fire overlap.",
        "- After each fire the script reads the fire's events from the history stream "
        "(`start` and `end` carry the attempt, host and fence; an end that left a ticket "
        "carries `retry_due_ms`), the done record and every lockrun's exit status, and "
        "checks them against the job's log. A retry *moved* when the host that claimed it "
        "had not failed this fire; it *stayed* otherwise, which is allowed only once the "
        "preference window (due + one delay, Redis time) is over: the failed host then "
        "arrived first at a tick after the window, because the machine lagged behind the "
        "tick rate. The claim time is the Redis time of the `start` event's stream id.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| servers | {f.servers} |",
        f"| fires | {f.fires} |",
        f"| ticks (of which after the grace) | {f.ticks} ({f.late_ticks}) |",
        f"| lockrun processes | {f.processes} |",
        f"| exit codes | {_dist(f.exit_codes)} |",
        f"| attempts (failed) | {f.attempts} ({f.failed_attempts}) |",
        "| attempts per fire | " + ", ".join(f"{n}: {c} fires"
                                           for n, c in f.attempts_per_fire.items()) + " |",
        f"| retries | {f.retries} |",
        f"| retries that moved to a server that had not failed the fire | {f.retries_moved} "
        f"({f.retries_moved_healthy} to a healthy host, {f.retries_moved_bad} to another bad "
        "host) |",
        f"| retries that stayed on a host that had failed the fire | {f.retries_stayed} |",
        f"| ticks at which a host that had failed the fire left its due retry to others | "
        f"{f.deferred} |",
        f"| retry claimed after its due time | {lag_text} |",
        f"| fires that succeeded at the first attempt | {f.first_try_success} |",
        f"| fires that succeeded after a retry | {f.success_after_retry} |",
        f"| fires that exhausted their retries ({FLAKY_RETRIES + 1} failed attempts) | "
        f"{f.exhausted} |",
        f"| fires whose ticket ran out of grace (`retry-too-late`) | {f.ended_by_grace} |",
        f"| fires that ended otherwise | {f.other_end} |",
        "| successful runs per fire | " + ", ".join(
            f"{n}: {c} fires" for n, c in f.successes_per_fire.items())
        + f" (max {successes}) |",
        f"| stderr lines other than `-v` info lines | {f.stderr_total} |",
        f"| wall time | {f.wall_s / 60:.1f} min |",
        "",
        "Checks (each must be 0):",
        "",
        "| check | count |",
        "|---|---|",
        f"| fires that succeeded twice or more | {f.double_successes} |",
        f"| fires with two attempts running at once (job log, monotonic) | {f.overlaps} |",
        f"| fires with more than {FLAKY_RETRIES + 1} attempts | {f.too_many_attempts} |",
        f"| fires left open (a ticket, or an attempt without an end) | {f.left_open} |",
        f"| fires that ran nowhere | {f.ran_nowhere} |",
        f"| retries claimed before their ticket was due | {f.before_due} |",
        f"| retries taken by a host that had failed the fire before the others' turn was "
        f"over | {f.within_preference} |",
        f"| job log and history disagree (hosts, fences, attempts, exits) | "
        f"{f.log_history_mismatches} |",
        f"| done record does not match the last attempt | {f.record_mismatches} |",
        f"| lockrun exit statuses do not match the attempts | {f.exit_mismatches} |",
        f"| lockrun processes hung | {f.hung} |",
    ]
    if f.problems:
        md += ["", "Problems:"] + [f"- {p}" for p in f.problems]
    md += ["", "What the lockrun processes said (`-v --log-format json`; info lines by kind):",
           ""]
    md += [f"- {n} x {kind}" for kind, n in f.verbose_lines.items()]
    md += ["", "Other stderr lines (warnings, errors, anything else), de-duplicated:", ""]
    md += [f"- {n} x `{text}`" for text, n in f.stderr_lines.items()] or ["- none"]
    if f.timeline:
        md += ["", f"Fires with retries (the first {len(f.timeline)}; `*` marks a bad host):",
               ""]
        md += [f"- {t}" for t in f.timeline]
    return md


# --------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--servers", type=int, help="simulated servers (default 20; --short: 8)")
    p.add_argument("--fires", type=int, help="fires per clean mode (default 1000; --short: 12)")
    p.add_argument("--fault-fires", type=int, help="fires per fault (default 5; --short: 1)")
    p.add_argument("--mode", choices=["default", "schedule", "faults", "flaky", "all"],
                   default="all")
    p.add_argument("--report", type=Path, help="write the Markdown report here (else print it)")
    p.add_argument("--json", dest="json_path", type=Path, help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--short", action="store_true", help="the CI form: few servers and fires")
    p.add_argument("--ms-per-vsec", type=float, default=MS_PER_VSEC,
                   help="real ms per virtual second when spreading one fire's starts")
    p.add_argument("--lockrun", type=Path, default=Path(sys.executable).parent / "lockrun",
                   help="the lockrun executable (default: next to this Python)")
    p.add_argument("--sabotage", choices=["fire-per-server"],
                   help="deliberately misconfigure the clean and flaky modes (each server its "
                        "own fire id, --overlap allow) to prove that the checks fail; used by "
                        "tests/test_fleet.py")
    p.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    p.add_argument("--topology", choices=sorted(TOPOLOGIES), default="single",
                   help="one redis-server (default), a primary + 2 replicas + 3 sentinels, or a "
                        "cluster of 3 primaries with a replica each")
    p.add_argument("--faults", help="comma-separated fault numbers to run (default: every "
                                    "fault that applies to the topology)")
    p.add_argument("--flaky-fires", type=int,
                   help="fires of the flaky mode (default 100; --short: 12)")
    p.add_argument("--flaky-p", type=float, default=FLAKY_P,
                   help=f"probability that the job fails on a bad host (default {FLAKY_P:g})")
    p.add_argument("--flaky-q", type=float, default=FLAKY_Q,
                   help=f"probability that it fails on any host (default {FLAKY_Q:g})")
    p.add_argument("--flaky-tick", type=float,
                   help="real seconds per crontab minute in the flaky mode; its --retry-delay "
                        "is half that (default: servers / 10, at least 1: a tick's lockruns "
                        "must mostly start before the next tick)")
    a = p.parse_args(argv)
    opts = Options(
        servers=a.servers or (8 if a.short else 20),
        fires=a.fires if a.fires is not None else (12 if a.short else 1000),
        fault_fires=a.fault_fires if a.fault_fires is not None else (1 if a.short else 5),
        mode=a.mode, seed=a.seed, short=a.short, ms_per_vsec=a.ms_per_vsec,
        lockrun=a.lockrun, report=a.report, json_path=a.json_path, sabotage=a.sabotage,
        workdir=a.workdir, topology=a.topology,
        faults=tuple(f for f in (a.faults or "").split(",") if f),
        flaky_fires=a.flaky_fires if a.flaky_fires is not None else (12 if a.short else 100),
        flaky_p=a.flaky_p, flaky_q=a.flaky_q,
        flaky_tick=a.flaky_tick or max(FLAKY_TICK_S, (a.servers or (8 if a.short else 20)) / 10),
    )
    if not 2 <= opts.servers <= 99 or opts.fires < 1 or opts.fault_fires < 1 \
            or opts.flaky_fires < 1:
        p.error("need 2-99 servers, at least 1 fire, 1 fault fire and 1 flaky fire")
    if not (0 <= opts.flaky_p <= 1 and 0 <= opts.flaky_q <= 1 and 0.1 <= opts.flaky_tick <= 60):
        p.error("--flaky-p and --flaky-q are probabilities; --flaky-tick is 0.1-60 seconds")
    unknown = set(opts.faults) - {f.num for f in FAULTS}
    if unknown:
        p.error(f"no such fault: {', '.join(sorted(unknown))}")
    if not os.access(opts.lockrun, os.X_OK):
        p.error(f"{opts.lockrun} is not executable")
    return opts


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    info = machine(opts.lockrun)
    uts = probe_uts()
    rng = random.Random(opts.seed)
    servers = [Server(f"srv-{i + 1:02d}", rng.uniform(-SKEW_MAX_S, SKEW_MAX_S))
               for i in range(opts.servers)]
    made_workdir = opts.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="lockrun-fleet-")) if opts.workdir is None \
        else opts.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(workdir, opts.lockrun, servers, uts[0], opts.ms_per_vsec)
    if not uts[0]:
        print(f"sim: unshare --uts is not available ({uts[1]}): all servers share one hostname",
              file=sys.stderr)
    started = time.monotonic()
    modes: list[ModeResult] = []
    faults: list[FaultResult] = []
    flaky: FlakyResult | None = None
    try:
        for mode in ("default", "schedule"):
            if opts.mode in (mode, "all"):
                modes.append(clean_mode(mode, opts, fleet, opts.sabotage))
        if opts.mode in ("faults", "all"):
            faults = fault_mode(opts, fleet)
        if opts.mode in ("flaky", "all"):
            flaky = flaky_mode(opts, fleet)
    finally:
        fleet.cleanup()
        if made_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - started
    text = render(opts, info, uts, modes, faults, flaky, wall)
    if opts.report:
        opts.report.parent.mkdir(parents=True, exist_ok=True)
        opts.report.write_text(text)
    else:
        sys.stdout.write(text)
    violations = (sum(m.violations for m in modes) + sum(f.violations for f in faults)
                  + (flaky.violations if flaky is not None else 0))
    if opts.json_path:
        payload = {
            "uts": uts[0], "violations": violations, "wall_s": wall,
            "modes": {m.mode: {**asdict(m), "violations": m.violations} for m in modes},
            "faults": {f.num: {**asdict(f), "violations": f.violations} for f in faults},
        }
        if flaky is not None:
            payload["flaky"] = {**asdict(flaky), "violations": flaky.violations}
        opts.json_path.write_text(json.dumps(payload, indent=2))
    print(f"sim: done in {wall:.0f}s, {violations} violation(s)", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
