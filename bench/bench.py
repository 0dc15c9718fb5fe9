#!/usr/bin/env python3
"""Per-invocation cost of lockrun, next to the floors it cannot go below.

Why: lockrun is a crontab prefix, so every server of a fleet starts it on every
fire and all but one of them skip. The skip path's wall time, CPU time and peak
RSS, paid once per server per fire, is the cost that matters; this script
measures it (and the run path, and ``--help``) against a bare interpreter and a
bare ``import redis``, all against a private redis-server on a unix socket.

It prints figures and asserts nothing: a failed sanity check is a warning line.

    python bench/bench.py [--runs N | --quick] [--json FILE] [--output FILE] [--no-scenarios]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import redis

DEFAULT_RUNS = 30
QUICK_RUNS = 5
START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
CHECK_TIMEOUT_S = 60.0
SKIP_KEY = "bench-skip"
SKIP_FIRE = "done-fire"
RUN_KEY = "bench-run"
SKIP_FIRE_KEY = f"lockrun:{{{SKIP_KEY}}}:fire:{SKIP_FIRE}"
SKIP_HIST_KEY = f"lockrun:{{{SKIP_KEY}}}:hist"
IMPORT_REDIS = "python -c 'import redis'"
IMPORT_REDIS_NO_GC = "import redis, GC held off (as lockrun)"
GC_OFF_IMPORT = "import gc; gc.disable(); import redis; gc.freeze()"
SKIP_CASE = "lockrun skip (done fire)"
RUN_CASE = "lockrun run (fresh fire)"

Argv = list[str]
Stats = dict[str, dict[str, int]]


@dataclass
class Sample:
    """One measured invocation: exit code, wall time, CPU and peak RSS of that process."""

    exit_code: int
    wall_ms: float
    cpu_ms: float
    maxrss_kib: int
    """From the GNU time run when available, else the same as ``maxrss_wait4_kib``."""
    maxrss_wait4_kib: int
    """ru_maxrss as wait4 reports it to us: floored at this script's own peak (see RssProbe)."""


@dataclass
class Case:
    """A command to time; ``argv`` gets a per-run tag so the run case can use fresh fires."""

    name: str
    argv: Callable[[str], Argv]
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Summary:
    """Median and p90 of one case: what the table and the ratios use."""

    name: str
    command: str
    runs: int
    wall_median_ms: float
    wall_p90_ms: float
    cpu_median_ms: float
    cpu_p90_ms: float
    maxrss_median_kib: float
    maxrss_p90_kib: float
    maxrss_wait4_median_kib: float
    nonzero_exits: int


@dataclass
class Invocation:
    """What one invocation did to Redis: commandstats deltas and the MONITOR lines."""

    exit_code: int
    stderr_tail: str
    stats: Stats
    client_commands: list[str]
    lua_commands: list[str]


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks; works for any n >= 1, unlike quantiles()."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def child_env() -> dict[str, str]:
    """Our environment minus LOCKRUN_*, so a user's settings cannot change what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCKRUN_")}


def spawn_wait4(argv: Argv, env: dict[str, str]) -> tuple[int, float, Any]:
    """Run *argv* to completion; return exit code, wall seconds and its wait4 rusage.

    wait4 on the pid gives the rusage of exactly this process (and whatever it
    reaped), where getrusage(RUSAGE_CHILDREN) deltas would mix in anything
    else we reaped. stdin is /dev/null as under cron; output is discarded.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return proc.returncode, wall, usage


class RssProbe:
    """Peak RSS measured by GNU time, a small C parent, instead of by us.

    Linux carries the parent's RSS high-water mark into a child across
    fork/vfork + exec, so ru_maxrss of anything this script (30+ MiB with
    redis-py loaded) starts is at least our own peak. GNU time is a ~1.5 MiB
    parent, so its %M is the child's real peak; it needs its own run, because
    its 10 ms CPU resolution is too coarse for the CPU figures.
    """

    def __init__(self, binary: str, out: Path) -> None:
        self.binary = binary
        self.out = out

    @classmethod
    def find(cls, tmp: Path) -> RssProbe | None:
        """GNU time if it is on PATH and understands -f/-o; None otherwise."""
        binary = shutil.which("time")
        if binary is None:
            return None
        probe = cls(binary, tmp / "time.out")
        return probe if probe.measure(["true"], child_env()) is not None else None

    def measure(self, argv: Argv, env: dict[str, str]) -> int | None:
        try:
            self.out.unlink(missing_ok=True)
            spawn_wait4([self.binary, "-f", "%M", "-o", str(self.out), "--", *argv], env)
            last = self.out.read_text().strip().splitlines()[-1]
            return int(last)
        except (OSError, ValueError, IndexError):
            return None


def measure(argv: Argv, rss_argv: Argv, env: dict[str, str], probe: RssProbe | None) -> Sample:
    """Wall and CPU from a direct run; peak RSS from a second run under GNU time if we can."""
    code, wall, usage = spawn_wait4(argv, env)
    raw_rss = int(usage.ru_maxrss)  # KiB on Linux
    rss = probe.measure(rss_argv, env) if probe is not None else None
    return Sample(
        exit_code=code,
        wall_ms=wall * 1000,
        cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000,
        maxrss_kib=raw_rss if rss is None else rss,
        maxrss_wait4_kib=raw_rss,
    )


def run_checked(argv: Argv, env: dict[str, str]) -> tuple[int, str]:
    """Run once outside the measurement, keeping stderr's last line for a warning."""
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=CHECK_TIMEOUT_S, check=False)
    return done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


class RedisServer:
    """A throwaway redis-server on a unix socket: nothing persisted, nothing on TCP."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.socket = workdir / "redis.sock"
        self.log = workdir / "redis.log"
        self._markers = 0
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(workdir),
             "--logfile", str(self.log), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = self._connect()

    def _connect(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), decode_responses=True,
                           socket_timeout=CHECK_TIMEOUT_S)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def wait_ready(self, deadline_s: float) -> None:
        """Poll PING until it answers or the deadline passes; fail early if the server died."""
        deadline = time.monotonic() + deadline_s
        while True:
            self.check_alive()
            if self.socket.exists():
                try:
                    if self.client.ping():
                        return
                except redis.exceptions.RedisError:
                    pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server not ready after {deadline_s:g}s: {self._tail()}")
            time.sleep(0.01)

    def check_alive(self) -> None:
        """Figures taken against a dead server would be error paths, not lockrun's."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({self.proc.returncode}) during the "
                               f"benchmark: {self._tail()}")

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; safe to call twice."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))

    def hget(self, key: str, name: str) -> str | None:
        value = self.client.hget(key, name)
        return None if value is None else str(value)

    def xlen(self, key: str) -> int:
        return int(self.client.xlen(key))

    def _stats(self) -> Stats:
        """INFO commandstats as ints, plus accepted connections as a pseudo-command."""
        stats: Stats = {}
        for name, fields in self.client.info("commandstats").items():
            stats[str(name)] = {k: int(v) for k, v in dict(fields).items()
                                if k in ("calls", "usec", "failed_calls", "rejected_calls")}
        conns = self.client.info("stats").get("total_connections_received", 0)
        stats["connections"] = {"calls": int(conns)}
        return stats

    def _marker(self, what: str) -> str:
        self._markers += 1
        marker = f"lockrun-bench-{what}-{self._markers}"
        self.client.echo(marker)
        return marker

    def invocation(self, argv: Argv, env: dict[str, str]) -> Invocation:
        """Run once and return what it sent to Redis.

        CONFIG RESETSTAT, run, INFO commandstats: the counts then also hold the
        bench's own CONFIG and ECHO calls, so an idle pass of the same sequence
        is subtracted. MONITOR lines between two ECHO markers split what the
        client sent (round trips) from what ran inside the Lua scripts.
        """
        monitor_client = self._connect()
        try:
            with monitor_client.monitor() as monitor:  # type: ignore[no-untyped-call]
                self.client.config_resetstat()
                self._marker("idle-start")
                self._marker("idle-end")
                baseline = self._stats()
                self.client.config_resetstat()
                start = self._marker("start")
                code, err = run_checked(argv, env)
                end = self._marker("end")
                after = self._stats()
                client: list[str] = []
                lua: list[str] = []
                inside = False
                while True:
                    line = monitor.next_command()
                    if line is None:
                        continue
                    command = str(line["command"])
                    if command == f"ECHO {start}":
                        inside = True
                    elif command == f"ECHO {end}":
                        break
                    elif inside:
                        words = command.split()
                        name = words[0].upper() if words else "?"
                        if name == "HELLO" and len(words) > 1:
                            name += f" {words[1]}"
                        (lua if line["client_type"] == "lua" else client).append(name)
        finally:
            monitor_client.close()
        stats: Stats = {}
        for name, fields in after.items():
            base = baseline.get(name, {})
            diff = {k: v - base.get(k, 0) for k, v in fields.items()}
            if diff.get("calls", 0) > 0:
                stats[name] = diff
        return Invocation(code, err, stats, client, lua)


def format_invocation(inv: Invocation) -> list[str]:
    """Round trips first (what costs latency), then the raw commandstats the brief asks for."""
    conns = inv.stats.get("connections", {}).get("calls", 0)
    client = ", ".join(inv.client_commands) or "none"
    lua = ", ".join(inv.lua_commands) or "none"
    lines = [
        f"connections={conns}, client commands={len(inv.client_commands)} ({client})",
        f"inside Lua={len(inv.lua_commands)} ({lua})",
    ]
    parts = []
    for name, fields in sorted(inv.stats.items()):
        if name == "connections":
            continue
        text = f"{name.removeprefix('cmdstat_')}={fields['calls']}"
        failed = fields.get("failed_calls", 0) + fields.get("rejected_calls", 0)
        if failed:
            text += f" ({failed} failed)"
        parts.append(text)
    lines.append("commandstats calls: " + (", ".join(parts) or "none"))
    return lines


def machine_info(redis_server: str, redis_version: str) -> dict[str, Any]:
    """What a reader needs to compare figures across machines."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        nproc = os.cpu_count() or 0

    def version_of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": nproc,
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": f"{platform.python_version()} ({sys.executable})",
        "redis_server": f"{redis_version} ({redis_server})",
        "redis_py": version_of("redis"),
        "click": version_of("click"),
        "psutil": version_of("psutil"),
        "lockrun": version_of("lockrun"),
    }


def own_peak_rss_kib() -> int:
    """This script's VmHWM: the floor that wait4's ru_maxrss cannot go below."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def lockrun_command() -> tuple[Argv, str]:
    """The console script next to our interpreter, as cron would run it; else ``-m lockrun``."""
    script = Path(sys.executable).parent / "lockrun"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], f"console script {script}"
    return [sys.executable, "-m", "lockrun"], f"{sys.executable} -m lockrun (no {script})"


def fire_argv(lockrun: Argv, url: str, key: str, fire: str) -> Argv:
    """A lockrun line as a crontab would hold it, with true (found via PATH) as the job."""
    return [*lockrun, "-k", key, "--fire", fire, "--redis-url", url, "--", "true"]


def run_fire_key(fire: str) -> str:
    return f"lockrun:{{{RUN_KEY}}}:fire:{fire}"


def build_cases(lockrun: Argv, url: str, tmp: Path) -> tuple[list[Case], list[str]]:
    """Every case of the table, plus a note for each reference left out."""
    py = sys.executable
    notes: list[str] = []
    cases = [
        Case("python -c pass", lambda _: [py, "-c", "pass"]),
        Case(IMPORT_REDIS, lambda _: [py, "-c", "import redis"]),
        # lockrun.entry holds the cyclic GC off during start-up, which also makes its own
        # import of redis cheaper: this floor shows lockrun's overhead without that gain
        Case(IMPORT_REDIS_NO_GC, lambda _: [py, "-c", GC_OFF_IMPORT]),
        Case(SKIP_CASE, lambda _: fire_argv(lockrun, url, SKIP_KEY, SKIP_FIRE)),
        Case(RUN_CASE, lambda tag: fire_argv(lockrun, url, RUN_KEY, f"run-{tag}")),
        Case("lockrun --help", lambda _: [*lockrun, "--help"]),
    ]
    flock = shutil.which("flock")
    if flock:
        lock_file = str(tmp / "flock.lock")
        cases.append(Case("ref: flock -n FILE true", lambda _: [flock, "-n", lock_file, "true"]))
    else:
        notes.append("reference flock skipped: flock not on PATH")
    cli = shutil.which("redis-cli")
    if cli:
        sock = url.removeprefix("unix://")
        cases.append(Case("ref: redis-cli SET NX PX",
                          lambda _: [cli, "-s", sock, "SET", "k", "v", "NX", "PX", "1000"]))
    else:
        notes.append("reference redis-cli skipped: redis-cli not on PATH")
    return cases, notes


def prepare_and_check(server: RedisServer, lockrun: Argv, env: dict[str, str],
                      warnings: list[str]) -> dict[str, Invocation]:
    """Complete the skip case's fire once, then prove both lockrun cases do what they claim.

    The same invocations give the commands-per-fire figures: the first one meets
    an empty script cache, the later ones the warm cache a real fleet would see.
    """
    found: dict[str, Invocation] = {}
    skip = fire_argv(lockrun, server.url, SKIP_KEY, SKIP_FIRE)

    inv = found["first fire on this server, cold script cache (completes the skip fire)"] = (
        server.invocation(skip, env))
    state = server.hget(SKIP_FIRE_KEY, "state")
    if inv.exit_code != 0 or state != "done":
        warnings.append(f"setup run of the skip fire: exit {inv.exit_code}, state={state!r} "
                        f"(expected 0, 'done') {inv.stderr_tail}")

    hist_before = server.xlen(SKIP_HIST_KEY)
    inv = found["skip path (fire already done)"] = server.invocation(skip, env)
    state = server.hget(SKIP_FIRE_KEY, "state")
    if inv.exit_code != 0 or state != "done":
        warnings.append(f"skip case: exit {inv.exit_code}, state={state!r} "
                        f"(expected 0, 'done') {inv.stderr_tail}")
    if server.xlen(SKIP_HIST_KEY) != hist_before:
        warnings.append("skip case appended history: it ran the job instead of skipping")

    fire = "run-check"
    inv = found["run path (fresh fire: acquire, run true, release)"] = server.invocation(
        fire_argv(lockrun, server.url, RUN_KEY, fire), env)
    state = server.hget(run_fire_key(fire), "state")
    recorded = server.hget(run_fire_key(fire), "exit")
    if inv.exit_code != 0 or state != "done" or recorded != "0":
        warnings.append(f"run case: exit {inv.exit_code}, state={state!r}, recorded "
                        f"exit={recorded!r} (expected 0, 'done', '0') {inv.stderr_tail}")
    return found


def measure_all(server: RedisServer, cases: list[Case], runs: int, env: dict[str, str],
                probe: RssProbe | None) -> None:
    """One warm-up round, then *runs* rounds round-robin so noise hits every case alike."""
    for case in cases:
        measure(case.argv("warmup"), case.argv("warmup-rss"), env, probe)
    progress = sys.stderr.isatty()
    for n in range(1, runs + 1):
        for case in cases:
            case.samples.append(measure(case.argv(str(n)), case.argv(f"{n}-rss"), env, probe))
        server.check_alive()
        if progress:
            print(f"\r  round {n}/{runs}", end="", file=sys.stderr, flush=True)
    if progress:
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def post_check(server: RedisServer, runs: int, probe: RssProbe | None, hist_len: int,
               warnings: list[str]) -> None:
    """After the fact: every measured run fire ran and finished, every skip skipped."""
    tags = [str(n) for n in range(1, runs + 1)]
    if probe is not None:
        tags += [f"{n}-rss" for n in range(1, runs + 1)]
    not_done = [tag for tag in tags
                if server.hget(run_fire_key(f"run-{tag}"), "state") != "done"]
    if not_done:
        warnings.append(f"run fires not done after measuring: {not_done[:10]}")
    if server.xlen(SKIP_HIST_KEY) != hist_len:
        warnings.append("skip fire's history grew while measuring: some skip runs did not skip")


@dataclass
class Scenario:
    """A fleet-level figure: many processes or a failure, timed end to end."""

    name: str
    setup: str
    results: dict[str, float | int | str]
    ok: bool
    check: str


CONTENDERS = 200
CONTENTION_ROUNDS = 3
FAIL_ROUNDS = 5
TAKEOVER_TTLS = (1.0, 3.0)
TAKEOVER_POLL_S = 0.05


def contention(lockrun: Argv, url: str, env: dict[str, str], tmp: Path) -> Scenario:
    """200 servers' lockruns on one fire at once: exactly one job runs, and all exit 0."""
    walls: list[float] = []
    cpus: list[float] = []
    bad_runs = 0
    exits: Counter[int] = Counter()
    for r in range(CONTENTION_ROUNDS):
        marker = tmp / f"contention-{r}"
        argv = [*lockrun, "-k", "bench-contention", "--fire", f"c{r}", "--redis-url", url,
                "--", "sh", "-c", f'echo ran >> "{marker}"']
        cpu0 = _children_cpu()
        start = time.perf_counter()
        procs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(CONTENDERS)]
        codes = [p.wait(CHECK_TIMEOUT_S) for p in procs]
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((_children_cpu() - cpu0) * 1000 / CONTENDERS)
        runs = len(marker.read_text().splitlines()) if marker.exists() else 0
        bad_runs += runs != 1
        exits.update(codes)
    return Scenario(
        f"contention: {CONTENDERS} lockruns on one fire",
        f"{CONTENDERS} processes started back to back, {CONTENTION_ROUNDS} rounds (one fire "
        "each); job appends a line to a file",
        {"wall_until_all_exited_ms_median": round(statistics.median(walls), 1),
         "wall_until_all_exited_ms_max": round(max(walls), 1),
         "cpu_ms_per_process_median": round(statistics.median(cpus), 1),
         "rounds_with_not_exactly_one_run": bad_runs,
         "exit_codes": ", ".join(f"{c}: {n}" for c, n in sorted(exits.items()))},
        bad_runs == 0 and set(exits) == {0}, "exactly one run per round, every process exit 0")


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_to_fail(lockrun: Argv, env: dict[str, str], binary: str, tmp: Path) -> list[Scenario]:
    """Redis refusing connections, and Redis blackholed (SIGSTOPped), with default settings."""
    found = []
    refused = f"redis://127.0.0.1:{_free_port()}/0"
    stopped_dir = tmp / "stopped"
    stopped_dir.mkdir()
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(stopped_dir), "--logfile", str(stopped_dir / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                probe.ping()
                break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the redis-server to blackhole did not start") from None
                time.sleep(0.01)
        probe.close()
        server.send_signal(signal.SIGSTOP)
        for label, url, bound in (("refused", refused, 1.0),
                                  ("blackholed", f"redis://127.0.0.1:{port}/0", 5.0)):
            walls, codes, lines = [], [], []
            for i in range(FAIL_ROUNDS):
                argv = [*lockrun, "-k", "bench-fail", "--fire", f"f{i}", "--redis-url", url,
                        "--", "true"]
                start = time.perf_counter()
                done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
                walls.append(time.perf_counter() - start)
                codes.append(done.returncode)
                lines.append(len(done.stderr.splitlines()))
            found.append(Scenario(
                f"time to fail: Redis {label}",
                ("nothing listens on the port" if label == "refused" else
                 "redis-server SIGSTOPped: the kernel accepts, nothing answers") +
                f"; default --redis-timeout; {FAIL_ROUNDS} runs",
                {"wall_s_median": round(statistics.median(walls), 3),
                 "wall_s_max": round(max(walls), 3),
                 "exit_codes": ",".join(sorted({str(c) for c in codes})),
                 "stderr_lines": ",".join(sorted({str(n) for n in lines}))},
                max(walls) < bound and set(codes) == {75} and set(lines) == {1},
                f"exit 75 with one stderr line, every run under {bound:g}s"))
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()
    return found


def takeover(lockrun: Argv, url: str, env: dict[str, str], tmp: Path) -> list[Scenario]:
    """The holder SIGKILLed mid-job: how long until another server's next fire runs.

    The overlap guard keeps the next fires off while the holder lives; killed, it
    stops renewing, and the guard expires one ttl after the last renewal, which
    was at most ttl/3 before the kill. A contender polls, as a fleet of crontabs
    would, with a new lockrun every TAKEOVER_POLL_S.
    """
    found = []
    for ttl in TAKEOVER_TTLS:
        key = f"bench-takeover-{ttl:g}"
        started, took = tmp / f"{key}.started", tmp / f"{key}.took"
        holder = subprocess.Popen(
            [*lockrun, "-k", key, "--fire", "f0", "--ttl", f"{ttl:g}s", "--redis-url", url,
             "--", "sh", "-c", f'touch "{started}"; exec sleep 60'],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + CHECK_TIMEOUT_S
        while not started.exists():
            if time.monotonic() > deadline or holder.poll() is not None:
                raise RuntimeError("the takeover holder's job did not start")
            time.sleep(0.01)
        held = subprocess.run(
            [*lockrun, "-k", key, "--fire", "f1", "--ttl", f"{ttl:g}s", "--redis-url", url,
             "--", "touch", str(took)], env=env, capture_output=True, timeout=CHECK_TIMEOUT_S)
        guarded = held.returncode == 0 and not took.exists()
        holder.kill()
        killed = time.perf_counter()
        holder.wait()
        attempts = 0
        while not took.exists() and time.perf_counter() - killed < ttl + 30:
            attempts += 1
            subprocess.run([*lockrun, "-k", key, "--fire", f"f{attempts + 1}", "--ttl",
                            f"{ttl:g}s", "--redis-url", url, "--", "touch", str(took)],
                           env=env, capture_output=True, timeout=CHECK_TIMEOUT_S)
            if not took.exists():
                time.sleep(TAKEOVER_POLL_S)
        elapsed = time.perf_counter() - killed
        found.append(Scenario(
            f"takeover after SIGKILL, --ttl {ttl:g}s",
            "holder runs `sleep 60` under the overlap guard; SIGKILL to lockrun; a contender "
            f"starts a new fire every {TAKEOVER_POLL_S * 1000:g} ms until one runs",
            {"takeover_s": round(elapsed, 3), "contender_attempts": attempts,
             "guard_held_while_alive": str(guarded)},
            guarded and took.exists() and ttl * 2 / 3 * 0.95 <= elapsed <= ttl + 5.0,
            "a contender is kept off while the holder lives, and runs between 2/3 of a ttl "
            "and one ttl (plus start-up) after the kill"))
    return found


def print_scenarios(scenarios: list[Scenario]) -> None:
    for sc in scenarios:
        print(f"  {sc.name}: " + ", ".join(f"{k}={v}" for k, v in sc.results.items()))
        print(f"    {sc.setup}")
        print(f"    check ({sc.check}): {'ok' if sc.ok else 'FAILED'}")


def summarize(case: Case) -> Summary:
    walls = [s.wall_ms for s in case.samples]
    cpus = [s.cpu_ms for s in case.samples]
    rss = [float(s.maxrss_kib) for s in case.samples]
    return Summary(
        name=case.name,
        command=" ".join(case.argv("N")),
        runs=len(case.samples),
        wall_median_ms=statistics.median(walls),
        wall_p90_ms=percentile(walls, 90),
        cpu_median_ms=statistics.median(cpus),
        cpu_p90_ms=percentile(cpus, 90),
        maxrss_median_kib=statistics.median(rss),
        maxrss_p90_kib=percentile(rss, 90),
        maxrss_wait4_median_kib=statistics.median(float(s.maxrss_wait4_kib)
                                                  for s in case.samples),
        nonzero_exits=sum(1 for s in case.samples if s.exit_code != 0),
    )


def print_table(summaries: list[Summary]) -> None:
    width = max(len(s.name) for s in summaries)
    print(f"{'case':<{width}}  {'wall ms':>15}  {'CPU ms':>15}  {'peak RSS KiB':>12}")
    print(f"{'':<{width}}  {'median':>7} {'p90':>7}  {'median':>7} {'p90':>7}  {'median':>12}")
    for s in summaries:
        print(f"{s.name:<{width}}  {s.wall_median_ms:7.1f} {s.wall_p90_ms:7.1f}  "
              f"{s.cpu_median_ms:7.1f} {s.cpu_p90_ms:7.1f}  {s.maxrss_median_kib:12.0f}")


def ratios(by_name: dict[str, Summary]) -> dict[str, float]:
    """The lockrun cases relative to ``import redis``: how far above the unavoidable floor."""
    base, skip, run = by_name[IMPORT_REDIS], by_name[SKIP_CASE], by_name[RUN_CASE]
    same_gc = by_name[IMPORT_REDIS_NO_GC]

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "CPU(skip)/CPU(import redis)": ratio(skip.cpu_median_ms, base.cpu_median_ms),
        "CPU(run)/CPU(import redis)": ratio(run.cpu_median_ms, base.cpu_median_ms),
        "RSS(skip)/RSS(import redis)": ratio(skip.maxrss_median_kib, base.maxrss_median_kib),
        "RSS(run)/RSS(import redis)": ratio(run.maxrss_median_kib, base.maxrss_median_kib),
        "CPU(skip)/CPU(import redis, GC off)": ratio(skip.cpu_median_ms, same_gc.cpu_median_ms),
        "CPU(run)/CPU(import redis, GC off)": ratio(run.cpu_median_ms, same_gc.cpu_median_ms),
        "wall(skip)/wall(import redis)": ratio(skip.wall_median_ms, base.wall_median_ms),
        "wall(run)/wall(import redis)": ratio(run.wall_median_ms, base.wall_median_ms),
    }


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so the finally blocks stop redis-server."""

    def handler(signum: int, _frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--runs", type=int, default=DEFAULT_RUNS, metavar="N",
                       help=f"measured rounds per case (default {DEFAULT_RUNS})")
    group.add_argument("--quick", action="store_true", help=f"same as --runs {QUICK_RUNS}")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="also write what is printed to FILE (bench/results.txt is the "
                             "copy kept in the repository)")
    parser.add_argument("--no-scenarios", action="store_true",
                        help="only the per-invocation table (skip contention, time to fail "
                             "and takeover)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = QUICK_RUNS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


class Tee:
    """stdout that is also written to a file, so the kept copy is exactly what was printed."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")
        self.out = sys.stdout

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.output:
        sys.stdout = Tee(args.output)
    binary = shutil.which("redis-server")
    if binary is None:
        print("bench: redis-server not found on PATH", file=sys.stderr)
        return 2
    lockrun, lockrun_how = lockrun_command()
    env = child_env()
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lockrun-bench-") as tmpdir, sigterm_as_interrupt():
        tmp = Path(tmpdir)
        probe = RssProbe.find(tmp)
        server = RedisServer(binary, tmp)
        try:
            server.wait_ready(START_DEADLINE_S)
            machine = machine_info(binary, server.version())
            print("lockrun benchmark")
            for key, value in machine.items():
                print(f"  {key:<12} {value}")
            print(f"  {'lockrun via':<12} {lockrun_how}")
            print(f"  {'redis':<12} {server.url} (private, no persistence)")
            print(f"  {'peak RSS':<12} "
                  + (f"from {probe.binary} -f %M, a separate run per sample" if probe else
                     "from wait4 ru_maxrss (no GNU time: floored at this script's own peak)"))
            print(f"  {'runs':<12} {args.runs} per case, round-robin, after 1 warm-up round")
            print(flush=True)

            cases, notes = build_cases(lockrun, server.url, tmp)
            invocations = prepare_and_check(server, lockrun, env, warnings)
            hist_len = server.xlen(SKIP_HIST_KEY)
            measure_all(server, cases, args.runs, env, probe)
            post_check(server, args.runs, probe, hist_len, warnings)
            scenarios: list[Scenario] = []
            if not args.no_scenarios:
                scenarios.append(contention(lockrun, server.url, env, tmp))
                scenarios += time_to_fail(lockrun, env, binary, tmp)
                scenarios += takeover(lockrun, server.url, env, tmp)
        finally:
            server.stop()
    own_peak = own_peak_rss_kib()

    summaries = [summarize(c) for c in cases]
    for s in summaries:
        if s.nonzero_exits:
            warnings.append(f"{s.name}: {s.nonzero_exits}/{s.runs} runs exited non-zero")
    for note in notes:
        print(f"note: {note}")
    for warning in warnings:
        print(f"WARNING: {warning}")
    if notes or warnings:
        print()

    print_table(summaries)
    floor = min(s.maxrss_wait4_median_kib for s in summaries)
    print(f"(wait4's own ru_maxrss was >= {floor:.0f} KiB for every case, this script's peak "
          f"being {own_peak} KiB: Linux keeps the parent's high-water mark across fork+exec)")
    print()
    rat = ratios({s.name: s for s in summaries})
    print("ratios (medians, same run):")
    for name, value in rat.items():
        print(f"  {name:<36} {value:5.2f}")
    print()
    print("Redis traffic per invocation (CONFIG RESETSTAT, run once, INFO commandstats; MONITOR):")
    for label, inv in invocations.items():
        print(f"  {label}:")
        for line in format_invocation(inv):
            print(f"    {line}")

    if scenarios:
        print()
        print("fleet scenarios:")
        print_scenarios(scenarios)
        warnings += [f"scenario check failed: {sc.name}" for sc in scenarios if not sc.ok]

    if args.json:
        result = {
            "machine": machine,
            "lockrun_via": lockrun_how,
            "peak_rss_source": probe.binary if probe else "wait4",
            "bench_own_peak_rss_kib": own_peak,
            "runs": args.runs,
            "notes": notes,
            "warnings": warnings,
            "summary": [asdict(s) for s in summaries],
            "ratios": rat,
            "redis_traffic": {label: asdict(inv) for label, inv in invocations.items()},
            "scenarios": [asdict(sc) for sc in scenarios],
            "samples": {c.name: [asdict(s) for s in c.samples] for c in cases},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        sys.exit(130)
    except (RuntimeError, redis.exceptions.RedisError) as exc:
        print(f"\nbench: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
