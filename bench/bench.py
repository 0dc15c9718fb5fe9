#!/usr/bin/env python3
"""Per-invocation cost of lockrun next to the interpreter floor and its peers: issue 12's goals.

Why: lockrun is a crontab prefix, so every server of a fleet starts it on every
fire and all but one of them skip. The skip path's CPU, wall time and peak RSS,
paid once per server per fire, is the cost that matters. Absolute figures move
with the machine and its load, so every goal is a ratio taken in one run, side
by side (round-robin, medians): lockrun against ``python3 -I -S -c pass`` run by
the same interpreter (the floor no Python program goes below), and against the
tools an operator would use instead (flock, redis-cli, a bash + redis-cli
wrapper, etcdctl). lockrun is measured as users run it: installed by install.sh
(its launcher, ``python3 -IS``) into a temporary directory, by this interpreter,
which the floor row runs too; ``--lockrun PATH`` measures another executable.
Then what a long job's supervision holds in memory, 200 lockruns on one fire,
what a job costs Redis in bytes per day, and a capacity table (servers x jobs x
frequency) from a bounded load test.

It prints figures and PASS/MISS per goal and asserts nothing: a failed sanity
check is a WARNING line, and the exit status is 0 unless the bench itself broke.

    python bench/bench.py [--runs N] [--quick] [--json FILE] [--output FILE] [--no-scenarios]
                          [--lockrun PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import redis

BENCH_DIR = Path(__file__).resolve().parent
INSTALL_SH = BENCH_DIR.parent / "install.sh"
INSTALL_TIMEOUT_S = 600.0
CRON_LOCK_SH = BENCH_DIR / "redis-cron-lock.sh"
README = BENCH_DIR.parent / "README.md"

DEFAULT_RUNS = 30
QUICK_RUNS = 5
START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 5.0
CHECK_TIMEOUT_S = 60.0
MIB = 1024 * 1024

SKIP_KEY = "bench-skip"
SKIP_FIRE = "done-fire"
RUN_KEY = "bench-run"
SKIP_FIRE_KEY = f"lockrun:{{{SKIP_KEY}}}:fire:{SKIP_FIRE}"
SKIP_HIST_KEY = f"lockrun:{{{SKIP_KEY}}}:hist"
ACL_USER = "bench"
ACL_PASSWORD = "bench-acl-password"
ACL_FALLBACK = ["~lockrun:*", "+@all"]
"""Used only when README.md's ``ACL SETUSER lockrun on ...`` line cannot be read."""
HISTORY_CAP = 1000
"""lockrun's ``XADD MAXLEN ~`` of the per-job history; the memory section checks it holds."""
FIRES_PER_DAY = 1440

FLOOR = "python3 -I -S -c pass (floor)"
SKIP_UNIX = "lockrun skip, unix socket"
SKIP_UNIX_ACL = "lockrun skip, unix socket, ACL user+password"
SKIP_TCP = "lockrun skip, TCP"
SKIP_TCP_ACL = "lockrun skip, TCP, ACL user+password"
SKIP_PAUSED = "lockrun skip, paused job, unix socket"
PAUSED_KEY = "bench-paused"
"""Paused with lockrun pause before the runs; each run is a fresh fire, so every one
reads the pause flags and writes the fire's 'paused' record (issue 13)."""
SKIP_CASES = (SKIP_UNIX, SKIP_UNIX_ACL, SKIP_TCP, SKIP_TCP_ACL, SKIP_PAUSED)
PIP_SKIP_CASE = "lockrun skip via pip's console script (site imported)"
RUN_CASE = "lockrun run (-- true), unix socket"
HELP_CASE = "lockrun --help"
STATUS_CASE = "lockrun status KEY"
HISTORY_CASE = "lockrun history KEY"
FLOCK_CASE = "peer: flock -n FILE true"
CLI_CASE = "peer: redis-cli SET k v NX PX 1000"
BASH_CASE = "peer: bash+redis-cli cron-lock, skip"
BASH_RUN_CASE = "peer: bash+redis-cli cron-lock, run true"
ETCD_TXN_CASE = "peer: etcdctl txn put-if-absent, skip"
ETCD_LOCK_CASE = "peer: etcdctl lock NAME true"

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
    stdin: Path | None = None
    """A file fed as stdin (etcdctl txn reads its request there); /dev/null otherwise."""
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


@dataclass
class Goal:
    """One line of issue 12's goals: a measured ratio (or size) against its limit."""

    goal: str
    measured: str
    value: float
    limit: float
    unit: str
    """``x`` for a ratio, ``MiB`` or ``s`` for the absolute goals the issue sets."""

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "MISS"


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks; works for any n >= 1, unlike quantiles()."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def child_env(state_dir: Path) -> dict[str, str]:
    """Our environment minus LOCKRUN_*, so a user's settings cannot change what is measured.

    No configuration file (the host's /etc/lockrun.toml would add its parsing to
    every figure) and a private state directory (the outage scenarios must not
    leave state in the host's).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKRUN_")}
    env["LOCKRUN_CONFIG"] = ""
    env["LOCKRUN_STATE_DIR"] = str(state_dir)
    return env


def spawn_wait4(argv: Argv, env: dict[str, str],
                stdin: Path | None = None) -> tuple[int, float, Any]:
    """Run *argv* to completion; return exit code, wall seconds and its wait4 rusage.

    wait4 on the pid gives the rusage of exactly this process and the children it
    reaped (the bash wrapper's redis-cli counts, as it should), where
    getrusage(RUSAGE_CHILDREN) deltas would mix in anything else we reaped. stdin
    is /dev/null as under cron; output is discarded.
    """
    with (open(stdin, "rb") if stdin else open(os.devnull, "rb")) as fin:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=fin, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
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
    def find(cls, tmp: Path, env: dict[str, str]) -> RssProbe | None:
        """GNU time if it is on PATH and understands -f/-o; None otherwise."""
        binary = shutil.which("time")
        if binary is None:
            return None
        probe = cls(binary, tmp / "time.out")
        return probe if probe.measure(["true"], env) is not None else None

    def measure(self, argv: Argv, env: dict[str, str], stdin: Path | None = None) -> int | None:
        try:
            self.out.unlink(missing_ok=True)
            spawn_wait4([self.binary, "-f", "%M", "-o", str(self.out), "--", *argv], env, stdin)
            last = self.out.read_text().strip().splitlines()[-1]
            return int(last)
        except (OSError, ValueError, IndexError):
            return None


def measure(case: Case, tag: str, env: dict[str, str], probe: RssProbe | None) -> Sample:
    """Wall and CPU from a direct run; peak RSS from a second run under GNU time if we can."""
    code, wall, usage = spawn_wait4(case.argv(tag), env, case.stdin)
    raw_rss = int(usage.ru_maxrss)  # KiB on Linux
    rss = probe.measure(case.argv(f"{tag}-rss"), env, case.stdin) if probe else None
    return Sample(
        exit_code=code,
        wall_ms=wall * 1000,
        cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000,
        maxrss_kib=raw_rss if rss is None else rss,
        maxrss_wait4_kib=raw_rss,
    )


def run_checked(argv: Argv, env: dict[str, str], stdin: Path | None = None,
                ) -> tuple[int, str, str]:
    """Run once outside the measurement: exit code, stdout, and stderr's last line."""
    with (open(stdin, "rb") if stdin else open(os.devnull, "rb")) as fin:
        done = subprocess.run(argv, stdin=fin, capture_output=True, env=env,
                              timeout=CHECK_TIMEOUT_S, check=False)
    err = done.stderr.decode(errors="replace").strip().splitlines() or [""]
    return done.returncode, done.stdout.decode(errors="replace"), err[-1]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; safe to call twice."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_until(predicate: Callable[[], bool], deadline_s: float, what: str,
               alive: Callable[[], None] | None = None) -> None:
    """Poll with a deadline: the bench synchronises on conditions, never on a fixed sleep."""
    deadline = time.monotonic() + deadline_s
    while True:
        if alive is not None:
            alive()
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what}: not after {deadline_s:g}s")
        time.sleep(0.01)


class RedisServer:
    """A throwaway redis-server on a unix socket and on 127.0.0.1, nothing persisted."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.socket = workdir / "redis.sock"
        self.log = workdir / "redis.log"
        self.port = free_port()
        self._markers = 0
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(workdir),
             "--logfile", str(self.log), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = self._connect()

    def _connect(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), decode_responses=True,
                           socket_timeout=CHECK_TIMEOUT_S)

    def url(self, tcp: bool = False, acl: bool = False) -> str:
        auth = f"{ACL_USER}:{ACL_PASSWORD}@" if acl else ""
        if tcp:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"unix://{auth}{self.socket}"

    def _ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    def wait_ready(self, deadline_s: float) -> None:
        poll_until(self._ping, deadline_s, f"redis-server ready ({self._tail()})",
                   self.check_alive)

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
        stop_process(self.proc)

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))

    def add_acl_user(self) -> str:
        """The README's lockrun ACL user (its rules, our password): the ACL rows measure AUTH."""
        rules, source = ACL_FALLBACK, "fallback rules (README line not found)"
        try:
            line = next(x for x in README.read_text().splitlines()
                        if x.startswith("ACL SETUSER lockrun on "))
            rules = [r for r in line.split()[4:] if not r.startswith(">")]
            source = "README.md's rules"
        except (OSError, StopIteration):
            pass
        self.client.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", ACL_USER, "reset", "on", f">{ACL_PASSWORD}", *rules)
        return f"user {ACL_USER!r} with a password, {source}: {' '.join(rules)}"

    def hget(self, key: str, name: str) -> str | None:
        value = self.client.hget(key, name)
        return None if value is None else str(value)

    def xlen(self, key: str) -> int:
        return int(self.client.xlen(key))

    def info_int(self, section: str, name: str) -> int:
        return int(self.client.info(section).get(name, 0))

    def cpu_s(self) -> float:
        """Redis's own CPU (main thread and any I/O threads), user + system."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def memory_usage(self, key: str) -> int:
        """MEMORY USAGE with every element counted (SAMPLES 0), not an estimate from 5."""
        return int(self.client.memory_usage(key, samples=0) or 0)

    def scan(self, pattern: str) -> list[str]:
        return sorted(str(k) for k in self.client.scan_iter(match=pattern, count=1000))

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
                code, _, err = run_checked(argv, env)
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
                        if name in ("HELLO", "AUTH") and len(words) > 1:
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


class Etcd:
    """A private single-member etcd on 127.0.0.1, for the etcdctl peers."""

    def __init__(self, binary: str, etcdctl: str, workdir: Path) -> None:
        self.etcdctl = etcdctl
        self.dir = workdir / "etcd"
        self.dir.mkdir()
        client, peer = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.log = self.dir / "etcd.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--name", "bench", "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                 "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                 "--initial-cluster", f"bench={peer_url}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def ctl(self, *args: str) -> Argv:
        return [self.etcdctl, "--endpoints", self.endpoint, *args]

    def _healthy(self, env: dict[str, str]) -> bool:
        code, _, _ = run_checked(self.ctl("endpoint", "health"), env)
        return code == 0

    def wait_ready(self, env: dict[str, str]) -> None:
        def alive() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.proc.returncode}); see {self.log}")
        poll_until(lambda: self._healthy(env), START_DEADLINE_S, "etcd healthy", alive)

    def stop(self) -> None:
        stop_process(self.proc)


def format_invocation(inv: Invocation) -> list[str]:
    """Round trips first (what costs latency), then the raw commandstats."""
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


def _first_line(argv: Argv) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                              check=False)
    except OSError:
        return "not installed"
    return (done.stdout.strip().splitlines() or ["?"])[0]


def machine_info(redis_server: str, redis_version: str) -> dict[str, Any]:
    """What a reader needs to compare figures across machines, and how loaded this one was."""
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

    etcd = shutil.which("etcd")
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": nproc,
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": f"{platform.python_version()} ({sys.executable})",
        "redis_server": f"{redis_version} ({redis_server})",
        "lockrun": version_of("lockrun"),
        "redis_py": version_of("redis"),
        "click": version_of("click"),
        "psutil": version_of("psutil"),
        "bash": _first_line(["bash", "--version"]),
        "etcd": _first_line([etcd, "--version"]) if etcd else "not installed",
    }


def own_peak_rss_kib() -> int:
    """This script's VmHWM: the floor that wait4's ru_maxrss cannot go below."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


@dataclass
class Measured:
    """The lockrun the rows measure, the interpreter the floor row runs, and how, for the header."""

    lockrun: Argv
    python: str
    """The floor's interpreter: the one lockrun's #! line names, else this one."""
    how: list[str]
    pip_script: Path | None = None
    """pip's console script for the same install, for the informational row; None: no row."""
    versions: dict[str, str] = field(default_factory=dict)
    """Versions of lockrun and its dependencies as the measured install has them."""


def script_python(script: Path) -> str | None:
    """The interpreter a Python script's #! line names (or install.sh's /bin/sh fallback's)."""
    try:
        with script.open(errors="replace") as f:
            first, second = f.readline(), f.readline()
    except OSError:
        return None
    words = first[2:].split() if first.startswith("#!") else []
    if words and Path(words[0]).name.startswith("python"):
        return words[0]
    found = re.match(r"'''exec' \"([^\"]+)\"", second)  # '''exec' "PYTHON" -IS "$0" "$@"
    return found.group(1) if found else None


def _private_man_cache(argv: Argv) -> Argv:
    """*argv* in a mount namespace of its own with a tmpfs over /var/cache/man, when root.

    install.sh runs mandb, which as root rewrites the host's man index: a bench must not
    change the host (tests/cronlab.py does the same for the real-cron test). Not root,
    mandb cannot write there anyway; without unshare (or the right to use it) as is.
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or subprocess.run(
            [unshare, "--mount", "true"], capture_output=True, check=False).returncode != 0:
        return argv
    prepare = ('[ ! -d /var/cache/man ] || mount -t tmpfs lockrun-bench-man /var/cache/man; '
               'exec "$0" "$@"')
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", prepare, *argv]


def install_lockrun(tmp: Path) -> Measured:
    """lockrun as a server runs it: install.sh from this checkout into *tmp*.

    ``--python`` is this interpreter, so the venv python that the launcher's #! line
    names is this very binary, and the floor row runs that same venv python. The
    informational row's console script is written by the venv's own pip (its
    ScriptMaker, as ``pip install`` writes ``bin/lockrun`` before install.sh replaces it).
    install.sh runs from a copy of the checkout: bash reads a script as it runs it, so an
    edit of the working tree during the install would otherwise run half of each version.
    """
    source = tmp / "source"
    shutil.copytree(INSTALL_SH.parent, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__",
        "build", "dist", "*.egg-info"))
    prefix, bin_dir = tmp / "prefix", tmp / "bin"
    argv = ["bash", str(source / INSTALL_SH.name), "--python", sys.executable,
            "--prefix", str(prefix), "--bin-dir", str(bin_dir), "--man-dir", str(tmp / "man")]
    started = time.monotonic()
    done = subprocess.run(_private_man_cache(argv), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=INSTALL_TIMEOUT_S, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"install.sh exited {done.returncode}:\n{tail}")
    link = bin_dir / "lockrun"
    launcher = link.resolve()
    python = script_python(launcher)
    if python is None:
        raise RuntimeError(f"{launcher} names no Python interpreter: not install.sh's launcher")
    with launcher.open() as f:
        shebang = f.readline().strip()
    venv_python = str(prefix / "venv" / "bin" / "python")
    versions = json.loads(subprocess.run(
        [venv_python, "-I", "-c", _VERSIONS], capture_output=True, text=True,
        timeout=CHECK_TIMEOUT_S, check=True).stdout)

    def short(path: object) -> str:
        return str(path).replace(str(tmp), "TMP")

    how = [f"install.sh --python {sys.executable} --prefix TMP/prefix --bin-dir TMP/bin "
           f"--man-dir TMP/man, from a copy of this checkout ({took:.0f} s; TMP: the bench's "
           "temporary directory)",
           f"{short(link)} -> {short(launcher)}, install.sh's launcher: {short(shebang)}"]
    pip_dir = tmp / "pip-console-script"
    made = subprocess.run([venv_python, "-I", "-c", _PIP_SCRIPT, str(pip_dir)],
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False)
    pip_script: Path | None = pip_dir / "lockrun"
    if made.returncode == 0 and pip_script is not None and pip_script.is_file():
        with pip_script.open() as f:
            how.append(f"info row: {PIP_SKIP_CASE!r} is the unix-socket skip through the "
                       f"console script pip writes for this install ({short(f.readline().strip())}"
                       ", so site is imported); it has no goal")
    else:
        pip_script = None
        how.append("info row on pip's console script left out: pip's ScriptMaker failed: "
                   + ((made.stderr.strip().splitlines() or ["?"])[-1]))
    return Measured([str(link)], python, how, pip_script, versions)


_VERSIONS = """
import importlib.metadata as m, json
def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return "not installed"
print(json.dumps({k: v(d) for k, d in (("lockrun", "lockrun"), ("redis_py", "redis"),
                                        ("click", "click"), ("psutil", "psutil"))}))
"""
"""Run by the installed venv's python: the versions the measured lockrun imports."""

_PIP_SCRIPT = """
import sys
from pip._internal.operations.install.wheel import PipScriptMaker
maker = PipScriptMaker(None, sys.argv[1])
maker.clobber, maker.variants, maker.set_mode = True, {""}, True  # as pip's install does
maker.make("lockrun = lockrun.entry:main")
"""
"""Run by the installed venv's python: its pip writes lockrun's console script, as
``pip install`` does (same ScriptMaker, same settings, same interpreter for #!)."""


def given_lockrun(path: Path) -> Measured:
    """``--lockrun PATH``: that executable; the floor runs the interpreter its #! names."""
    python = script_python(path.resolve()) or sys.executable
    how = [f"{path} (--lockrun); {compile_package()}"]
    return Measured([str(path)], python, how)


def compile_package() -> str:
    """With --lockrun: byte-compile this interpreter's lockrun, as an installed package is.

    A checkout's editable install may lack current .pyc files, and with
    PYTHONDONTWRITEBYTECODE set every start would compile the changed modules
    again: that is not what a server pays, and it would swamp the figures.
    """
    import compileall

    import lockrun

    package = Path(lockrun.__file__).parent
    ok = compileall.compile_dir(str(package), quiet=1, force=False)
    return f"{package} byte-compiled" if ok else f"{package}: byte-compiling failed"


def fire_argv(lockrun: Argv, url: str, key: str, fire: str, *job: str) -> Argv:
    """A lockrun line as a crontab would hold it, with true (found via PATH) as the job."""
    return [*lockrun, "-k", key, "--fire", fire, "--redis-url", url, "--", *(job or ("true",))]


def run_fire_key(fire: str) -> str:
    return f"lockrun:{{{RUN_KEY}}}:fire:{fire}"


@dataclass
class Peers:
    """Where the peers live: the bash wrapper's redis-cli options and the private etcd."""

    cli: str | None
    sock: str
    lock_file: str
    etcd: Etcd | None
    txn_file: Path
    notes: list[str]


BASH_HELD_KEY = "bench-cronlock-held"
BASH_FREE_KEY = "bench-cronlock-free"
ETCD_HELD_KEY = "bench-etcd-held"
ETCD_LOCK_NAME = "bench-etcd-lock"


def bash_env(env: dict[str, str], sock: str) -> dict[str, str]:
    return {**env, "REDIS_CLI_OPTS": f"-s {sock}"}


def build_cases(measured: Measured, server: RedisServer, peers: Peers) -> list[Case]:
    """Every case of the table: the floor, lockrun's paths, its verbs, then the peers."""
    py, lockrun = measured.python, measured.lockrun
    unix, tcp = server.url(), server.url(tcp=True)
    unix_acl, tcp_acl = server.url(acl=True), server.url(tcp=True, acl=True)
    cases = [
        Case(FLOOR, lambda _: [py, "-I", "-S", "-c", "pass"]),
        Case(SKIP_UNIX, lambda _: fire_argv(lockrun, unix, SKIP_KEY, SKIP_FIRE)),
        Case(SKIP_UNIX_ACL, lambda _: fire_argv(lockrun, unix_acl, SKIP_KEY, SKIP_FIRE)),
        Case(SKIP_TCP, lambda _: fire_argv(lockrun, tcp, SKIP_KEY, SKIP_FIRE)),
        Case(SKIP_TCP_ACL, lambda _: fire_argv(lockrun, tcp_acl, SKIP_KEY, SKIP_FIRE)),
        Case(SKIP_PAUSED, lambda tag: fire_argv(lockrun, unix, PAUSED_KEY, f"paused-{tag}")),
    ]
    pip_script = measured.pip_script
    if pip_script is not None:
        cases.append(Case(PIP_SKIP_CASE,
                          lambda _: fire_argv([str(pip_script)], unix, SKIP_KEY, SKIP_FIRE)))
    cases += [
        Case(RUN_CASE, lambda tag: fire_argv(lockrun, unix, RUN_KEY, f"run-{tag}")),
        Case(HELP_CASE, lambda _: [*lockrun, "--help"]),
        Case(STATUS_CASE, lambda _: [*lockrun, "status", SKIP_KEY, "--redis-url", unix]),
        Case(HISTORY_CASE, lambda _: [*lockrun, "history", SKIP_KEY, "--redis-url", unix]),
    ]
    flock = shutil.which("flock")
    if flock:
        cases.append(Case(FLOCK_CASE, lambda _: [flock, "-n", peers.lock_file, "true"]))
    cli = peers.cli
    if cli:
        sock = peers.sock
        cases.append(Case(CLI_CASE, lambda _: [cli, "-s", sock, "SET", "k", "v", "NX", "PX",
                                               "1000"]))
        script = str(CRON_LOCK_SH)
        cases.append(Case(BASH_CASE, lambda _: [script, BASH_HELD_KEY, "60000", "true"]))
        cases.append(Case(BASH_RUN_CASE, lambda _: [script, BASH_FREE_KEY, "60000", "true"]))
    etcd = peers.etcd
    if etcd:
        cases.append(Case(ETCD_TXN_CASE, lambda _: etcd.ctl("txn"), stdin=peers.txn_file))
        cases.append(Case(ETCD_LOCK_CASE, lambda _: etcd.ctl("lock", ETCD_LOCK_NAME, "true")))
    return cases


def setup_peers(server: RedisServer, env: dict[str, str], tmp: Path) -> Peers:
    """Find the peers' binaries, start etcd if installed; a missing one is a printed note."""
    notes: list[str] = []
    if not shutil.which("flock"):
        notes.append("peer flock skipped: flock not on PATH")
    cli = shutil.which("redis-cli")
    if cli is None:
        notes.append("peers redis-cli and the bash cron-lock script skipped: no redis-cli")
    txn = tmp / "etcd-txn.txt"
    # compares, blank line, requests on success, blank line, requests on failure
    txn.write_text(f'create("{ETCD_HELD_KEY}") = "0"\n\nput {ETCD_HELD_KEY} me\n\n\n')
    etcd: Etcd | None = None
    etcd_bin, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    if etcd_bin is None or etcdctl is None:
        missing = " and ".join(n for n, b in (("etcd", etcd_bin), ("etcdctl", etcdctl))
                               if b is None)
        notes.append(f"peers etcdctl txn / etcdctl lock skipped: {missing} not on PATH "
                     "(Debian: apt-get install etcd-server etcd-client)")
    else:
        etcd = Etcd(etcd_bin, etcdctl, tmp)
        try:
            etcd.wait_ready(env)
        except RuntimeError as exc:
            etcd.stop()
            etcd = None
            notes.append(f"peers etcdctl skipped: {exc}")
    return Peers(cli, str(server.socket), str(tmp / "flock.lock"), etcd, txn, notes)


def prepare_and_check(server: RedisServer, measured: Measured, env: dict[str, str],
                      peers: Peers, warnings: list[str]) -> dict[str, Invocation]:
    """Complete the skip case's fire once, then prove every case does what its row claims.

    The lockrun invocations also give the commands-per-fire figures: the first one
    meets an empty script cache, the later ones the warm cache a real fleet sees.
    """
    found: dict[str, Invocation] = {}
    lockrun = measured.lockrun
    unix = server.url()
    skip = fire_argv(lockrun, unix, SKIP_KEY, SKIP_FIRE)

    inv = found["first fire on this server, cold script cache (completes the skip fire)"] = (
        server.invocation(skip, env))
    state = server.hget(SKIP_FIRE_KEY, "state")
    if inv.exit_code != 0 or state != "done":
        warnings.append(f"setup run of the skip fire: exit {inv.exit_code}, state={state!r} "
                        f"(expected 0, 'done') {inv.stderr_tail}")

    hist_before = server.xlen(SKIP_HIST_KEY)
    for label, url in (("skip path, unix socket (fire already done)", unix),
                       ("skip path, unix socket, ACL user", server.url(acl=True)),
                       ("skip path, TCP, ACL user", server.url(tcp=True, acl=True))):
        inv = found[label] = server.invocation(fire_argv(lockrun, url, SKIP_KEY, SKIP_FIRE), env)
        if inv.exit_code != 0:
            warnings.append(f"{label}: exit {inv.exit_code} {inv.stderr_tail}")
    if measured.pip_script is not None:
        code, _, err = run_checked(fire_argv([str(measured.pip_script)], unix, SKIP_KEY,
                                             SKIP_FIRE), env)
        if code != 0:
            warnings.append(f"skip via pip's console script: exit {code} {err}")
    if server.xlen(SKIP_HIST_KEY) != hist_before:
        warnings.append("a skip case appended history: it ran the job instead of skipping")

    code, _, err = run_checked([*lockrun, "pause", PAUSED_KEY, "--reason", "bench",
                                "--redis-url", unix], env)
    inv = found["skip path, paused job (fresh fire: records it paused)"] = server.invocation(
        fire_argv(lockrun, unix, PAUSED_KEY, "paused-check"), env)
    state = server.hget(f"lockrun:{{{PAUSED_KEY}}}:fire:paused-check", "state")
    if code != 0 or inv.exit_code != 0 or state != "paused":
        warnings.append(f"paused case: pause exit {code} {err}, fire exit {inv.exit_code}, "
                        f"state={state!r} (expected 0, 0, 'paused')")

    fire = "run-check"
    inv = found["run path (fresh fire: acquire, run true, release)"] = server.invocation(
        fire_argv(lockrun, unix, RUN_KEY, fire), env)
    state = server.hget(run_fire_key(fire), "state")
    recorded = server.hget(run_fire_key(fire), "exit")
    if inv.exit_code != 0 or state != "done" or recorded != "0":
        warnings.append(f"run case: exit {inv.exit_code}, state={state!r}, recorded "
                        f"exit={recorded!r} (expected 0, 'done', '0') {inv.stderr_tail}")

    for verb in ("status", "history"):
        code, out, err = run_checked([*lockrun, verb, SKIP_KEY, "--redis-url", unix], env)
        if code != 0 or SKIP_FIRE not in out:
            warnings.append(f"lockrun {verb}: exit {code}, fire {SKIP_FIRE!r} "
                            f"{'' if SKIP_FIRE in out else 'not '}shown {err}")
    check_peers(server, peers, env, warnings)
    return found


def check_peers(server: RedisServer, peers: Peers, env: dict[str, str],
                warnings: list[str]) -> None:
    """Each peer row measures what it says: the skip rows skip, the run rows run."""
    if peers.cli:
        server.client.set(BASH_HELD_KEY, "another-server")  # held for the whole bench
        benv = bash_env(env, peers.sock)
        marker = Path(peers.lock_file).with_name("bash-ran")
        script = str(CRON_LOCK_SH)
        code, _, err = run_checked([script, BASH_HELD_KEY, "60000", "touch", str(marker)], benv)
        if code != 0 or marker.exists():
            warnings.append(f"bash cron-lock skip: exit {code}, job ran={marker.exists()} {err}")
        code, _, err = run_checked([script, BASH_FREE_KEY, "60000", "sh", "-c", "exit 7"], benv)
        if code != 7 or server.client.exists(BASH_FREE_KEY):
            warnings.append(f"bash cron-lock run: exit {code} (expected 7, the job's), key "
                            f"left={bool(server.client.exists(BASH_FREE_KEY))} {err}")
    etcd = peers.etcd
    if etcd:
        code, _, err = run_checked(etcd.ctl("put", ETCD_HELD_KEY, "another-server"), env)
        if code != 0:
            warnings.append(f"etcdctl put of the held key: exit {code} {err}")
        code, out, err = run_checked(etcd.ctl("txn"), env, peers.txn_file)
        if code != 0 or "FAILURE" not in out:
            warnings.append(f"etcdctl txn skip: exit {code}, output {out.strip()!r} "
                            f"(expected FAILURE: the key exists) {err}")
        # etcdctl lock runs the job but does not pass its status through: 1 and a message
        code, _, err = run_checked(
            etcd.ctl("lock", ETCD_LOCK_NAME, "--", "sh", "-c", "exit 7"), env)
        if code == 0 or "exit status 7" not in err:
            warnings.append(f"etcdctl lock: exit {code}, expected it to report the job's "
                            f"'exit status 7' {err}")


def measure_all(server: RedisServer, cases: list[Case], runs: int, env: dict[str, str],
                probe: RssProbe | None, warm_up: bool) -> None:
    """A warm-up round, then *runs* rounds round-robin so noise hits every case alike."""
    if warm_up:
        for case in cases:
            measure(case, "warmup", env, probe)
    progress = sys.stderr.isatty()
    for n in range(1, runs + 1):
        for case in cases:
            case.samples.append(measure(case, str(n), case_env(case, env), probe))
        server.check_alive()
        if progress:
            print(f"\r  round {n}/{runs}", end="", file=sys.stderr, flush=True)
    if progress:
        print("\r\033[K", end="", file=sys.stderr, flush=True)


_BASH_ENV: dict[str, str] = {}


def case_env(case: Case, env: dict[str, str]) -> dict[str, str]:
    """The bash wrapper's rows get its redis-cli options; every other row the common env."""
    return _BASH_ENV if case.name.startswith("peer: bash") and _BASH_ENV else env


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


# --- supervising a long job ----------------------------------------------------------------

SUPERVISE_WATCH_S = 1.0
INFO_POLL_S = 0.1


@dataclass
class Supervised:
    """What a supervisor process holds while its job runs (smaps_rollup, max over a window)."""

    name: str
    rss_kib: int
    pss_kib: int


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _rollup(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    rss = re.search(r"^Rss:\s+(\d+) kB", text, re.M)
    pss = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return (int(rss.group(1)) if rss else 0, int(pss.group(1)) if pss else 0)


def supervised(name: str, argv: Argv, env: dict[str, str], watch_s: float) -> Supervised:
    """Start *argv* (whose job is ``sleep 30``), read its memory once the job runs, stop it.

    The figure is the supervisor's own, not the job's: lockrun, the bash wrapper
    and etcdctl each stay alive as the sleep's parent. It is read every 100 ms
    for *watch_s* after the job appeared and the highest reading kept,
    so start-up work still finishing (a renewal thread, late imports) counts.
    """
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job: list[int] = []
    try:
        def started() -> bool:
            job[:] = _children(proc.pid)
            return bool(job)

        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: exited {proc.returncode} before its job started")

        poll_until(started, CHECK_TIMEOUT_S, f"{name}: its job started", alive)
        rss = pss = 0
        until = time.monotonic() + watch_s
        while True:
            r, p = _rollup(proc.pid)
            rss, pss = max(rss, r), max(pss, p)
            if time.monotonic() >= until:
                break
            time.sleep(0.1)  # a sampling interval, not a synchronisation
        return Supervised(name, rss, pss)
    finally:
        proc.terminate()
        for pid in job:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def supervision(lockrun: Argv, server: RedisServer, peers: Peers, env: dict[str, str],
                watch_s: float) -> list[Supervised]:
    """lockrun first (the goal's figure), then the peers that also stay the job's parent."""
    found = [supervised("lockrun -k K -- sleep 30",
                        fire_argv(lockrun, server.url(), "bench-supervise", "s0", "sleep", "30"),
                        env, watch_s)]
    if peers.cli:
        found.append(supervised("bash+redis-cli cron-lock -- sleep 30",
                                [str(CRON_LOCK_SH), "bench-supervise-sh", "60000", "sleep", "30"],
                                bash_env(env, peers.sock), watch_s))
    if peers.etcd:
        found.append(supervised("etcdctl lock NAME sleep 30",
                                peers.etcd.ctl("lock", "bench-supervise", "sleep", "30"), env,
                                watch_s))
    return found


# --- fleet scenarios -----------------------------------------------------------------------


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
CONTENTION_GOAL_S = 4.0
FAIL_ROUNDS = 5
TAKEOVER_TTLS = (1.0, 3.0)
TAKEOVER_POLL_S = 0.05


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def contention(lockrun: Argv, url: str, env: dict[str, str], tmp: Path,
               rounds: int) -> Scenario:
    """200 servers' lockruns on one fire at once: exactly one job runs, and all exit 0."""
    walls: list[float] = []
    cpus: list[float] = []
    bad_runs = 0
    exits: Counter[int] = Counter()
    for r in range(rounds):
        marker = tmp / f"contention-{r}"
        argv = [*lockrun, "-k", "bench-contention", "--fire", f"c{r}", "--redis-url", url,
                "--", "sh", "-c", f'echo ran >> "{marker}"']
        cpu0 = _children_cpu()
        start = time.perf_counter()
        procs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(CONTENDERS)]
        codes = [p.wait(CHECK_TIMEOUT_S * 4) for p in procs]
        walls.append(time.perf_counter() - start)
        cpus.append((_children_cpu() - cpu0) * 1000 / CONTENDERS)
        runs = len(marker.read_text().splitlines()) if marker.exists() else 0
        bad_runs += runs != 1
        exits.update(codes)
    return Scenario(
        f"contention: {CONTENDERS} lockruns on one fire",
        f"{CONTENDERS} processes started back to back, {rounds} round(s) (one fire "
        "each); job appends a line to a file",
        {"wall_until_all_exited_s_median": round(statistics.median(walls), 2),
         "wall_until_all_exited_s_max": round(max(walls), 2),
         "cpu_ms_per_process_median": round(statistics.median(cpus), 1),
         "rounds_with_not_exactly_one_run": bad_runs,
         "exit_codes": ", ".join(f"{c}: {n}" for c, n in sorted(exits.items()))},
        bad_runs == 0 and set(exits) == {0}, "exactly one run per round, every process exit 0")


def time_to_fail(lockrun: Argv, env: dict[str, str], binary: str, tmp: Path) -> list[Scenario]:
    """Redis refusing connections, and Redis blackholed (SIGSTOPped), with default settings."""
    found = []
    refused = f"redis://127.0.0.1:{free_port()}/0"
    stopped_dir = tmp / "stopped"
    stopped_dir.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(stopped_dir), "--logfile", str(stopped_dir / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(probe.ping())
            except redis.exceptions.RedisError:
                return False

        poll_until(answers, START_DEADLINE_S, "the redis-server to blackhole started")
        probe.close()
        server.send_signal(signal.SIGSTOP)
        for label, url, bound in (("refused", refused, 1.0),
                                  ("blackholed", f"redis://127.0.0.1:{port}/0", 5.0)):
            walls, codes, lines = [], [], []
            for i in range(FAIL_ROUNDS):
                argv = [*lockrun, "-k", "bench-fail", "--fire", f"f{i}", "--redis-url", url,
                        "--", "true"]
                # a state directory per run: lockrun reports an outage once and stays quiet
                # on the next fires of the same outage, and each run here is a first failure
                state = tmp / f"fail-state-{label}-{i}"
                state.mkdir()
                start = time.perf_counter()
                done = subprocess.run(argv, env={**env, "LOCKRUN_STATE_DIR": str(state)},
                                      stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
                walls.append(time.perf_counter() - start)
                codes.append(done.returncode)
                lines.append(len(done.stderr.splitlines()))
            found.append(Scenario(
                f"time to fail: Redis {label}",
                ("nothing listens on the port" if label == "refused" else
                 "redis-server SIGSTOPped: the kernel accepts, nothing answers") +
                f"; default --redis-timeout; {FAIL_ROUNDS} runs, each the outage's first",
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
        # lockrun refuses a ttl under 3 Redis timeouts (a renewal must get a retry)
        lease = ["--ttl", f"{ttl:g}s", "--redis-timeout", f"{round(ttl * 250)}ms"]
        started, took = tmp / f"{key}.started", tmp / f"{key}.took"
        err = tmp / f"{key}.stderr"
        with err.open("wb") as err_file:
            holder = subprocess.Popen(
                [*lockrun, "-k", key, "--fire", "f0", *lease, "--redis-url", url,
                 "--", "sh", "-c", f'touch "{started}"; exec sleep 60'],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file)

        def holder_alive() -> None:
            if holder.poll() is not None:  # noqa: B023 - used before the loop moves on
                raise RuntimeError(
                    f"the takeover holder exited {holder.returncode} before its job "  # noqa: B023
                    f"started: {err.read_text(errors='replace').strip()[-300:]}")  # noqa: B023

        poll_until(started.exists, CHECK_TIMEOUT_S, "the takeover holder's job started",
                   holder_alive)
        held = subprocess.run(
            [*lockrun, "-k", key, "--fire", "f1", *lease, "--redis-url", url,
             "--", "touch", str(took)], env=env, capture_output=True, timeout=CHECK_TIMEOUT_S)
        guarded = held.returncode == 0 and not took.exists()
        holder.kill()
        killed = time.perf_counter()
        holder.wait()
        attempts = 0
        while not took.exists() and time.perf_counter() - killed < ttl + 30:
            attempts += 1
            subprocess.run([*lockrun, "-k", key, "--fire", f"f{attempts + 1}", *lease,
                            "--redis-url", url, "--", "touch", str(took)],
                           env=env, capture_output=True, timeout=CHECK_TIMEOUT_S)
            if not took.exists():
                time.sleep(TAKEOVER_POLL_S)  # the contender's polling period, as cron's would be
        elapsed = time.perf_counter() - killed
        found.append(Scenario(
            f"takeover after SIGKILL, --ttl {ttl:g}s",
            "holder runs `sleep 60` under the overlap guard (--redis-timeout ttl/4); SIGKILL to "
            "lockrun; a contender "
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


# --- Redis memory ---------------------------------------------------------------------------

MEMORY_KEY = "bench-mem"
STEADY_KEY = "bench-mem-steady"


@dataclass
class MemoryReport:
    """What one every-minute job keeps in Redis, measured on real fires and extrapolated."""

    fires: int
    record_bytes_mean: float
    """MEMORY USAGE (SAMPLES 0) of one done record, mean over the measured fires."""
    record_ttl_s: float
    used_memory_per_fire: float
    """INFO used_memory delta over the measured fires, divided by their number."""
    hist_entries_per_fire: float
    other_keys_bytes: int
    """The job's keys other than fire records and history (the fence counter...)."""
    steady_hist_len: int
    """XLEN once lockrun itself trimmed a history pre-filled with a full day of entries."""
    steady_hist_bytes: int
    per_day_bytes: float
    """1440 done records + the capped history + the other keys: one every-minute job."""

    def hist_bytes(self, entries: float) -> float:
        """History bytes for *entries* a day, at most what the cap keeps."""
        per_entry = ratio(self.steady_hist_bytes, self.steady_hist_len)
        return per_entry * min(entries, self.steady_hist_len)

    def job_bytes_per_day(self, every_min: int) -> float:
        fires = FIRES_PER_DAY / every_min
        return (fires * self.record_bytes_mean + self.hist_bytes(fires * self.hist_entries_per_fire)
                + self.other_keys_bytes)


def fire_id(n: int) -> str:
    """Consecutive UTC minutes, as lockrun's default fire ids of an every-minute job."""
    t = time.gmtime(1_767_225_600 + 60 * n)  # 2026-01-01T00:00Z onwards
    return time.strftime("%Y-%m-%dT%H:%M:00Z", t)


def redis_memory(server: RedisServer, lockrun: Argv, env: dict[str, str],
                 fires: int, warnings: list[str]) -> MemoryReport:
    """Run *fires* real fires of one job, measure its keys, then a day's capped history.

    The history's steady state needs a day of entries (2 per fire); running 1440
    lockruns would take minutes, so that stream is pre-filled with copies of the
    entries real fires wrote, 30 s apart in id as an every-minute job's are, and
    one real lockrun fire then trims it with lockrun's own ``XADD MAXLEN ~``.
    """
    url = server.url()
    prefix = f"lockrun:{{{MEMORY_KEY}}}:"
    run_checked(fire_argv(lockrun, url, "bench-mem-warm", fire_id(0)), env)  # scripts cached
    before = server.info_int("memory", "used_memory")
    for n in range(fires):
        code, _, err = run_checked(fire_argv(lockrun, url, MEMORY_KEY, fire_id(n)), env)
        if code != 0:
            warnings.append(f"memory fire {n}: exit {code} {err}")
    after = server.info_int("memory", "used_memory")
    keys = server.scan(prefix + "*")
    records = [k for k in keys if k.startswith(prefix + "fire:")]
    hist = prefix + "hist"
    others = [k for k in keys if k not in records and k != hist]
    if len(records) != fires:
        warnings.append(f"memory: {len(records)} done records for {fires} fires")
    record_bytes = [server.memory_usage(k) for k in records]
    ttl_ms = int(server.client.pttl(records[0])) if records else -1
    hist_len = server.xlen(hist)

    steady = f"lockrun:{{{STEADY_KEY}}}:hist"
    Fields = dict[bytes | bytearray | memoryview | str | int | float,
                  bytes | bytearray | memoryview | str | int | float]
    entries: list[Fields] = [
        {str(k): str(v) for k, v in (fields or {}).items()}
        for _, fields in server.client.xrange(hist) or []]
    per_fire = ratio(hist_len, fires)
    day_entries = round(FIRES_PER_DAY * per_fire)
    start_ms = int(time.time() * 1000) - 2 * 86_400_000
    pipe = server.client.pipeline(transaction=False)
    for i in range(day_entries):
        pipe.xadd(steady, entries[i % len(entries)], id=f"{start_ms + i * 30_000}-0")
    pipe.execute()
    code, _, err = run_checked(fire_argv(lockrun, url, STEADY_KEY, fire_id(0)), env)
    if code != 0:
        warnings.append(f"memory: the trimming fire exited {code} {err}")
    steady_len = server.xlen(steady)
    if not HISTORY_CAP <= steady_len <= HISTORY_CAP * 1.2:
        warnings.append(f"memory: history holds {steady_len} entries after lockrun's XADD on a "
                        f"day of them; expected about {HISTORY_CAP} (MAXLEN ~)")
    report = MemoryReport(
        fires=fires,
        record_bytes_mean=statistics.mean(record_bytes) if record_bytes else float("nan"),
        record_ttl_s=ttl_ms / 1000,
        used_memory_per_fire=(after - before) / fires,
        hist_entries_per_fire=per_fire,
        other_keys_bytes=sum(server.memory_usage(k) for k in others),
        steady_hist_len=steady_len,
        steady_hist_bytes=server.memory_usage(steady),
        per_day_bytes=0.0,
    )
    report.per_day_bytes = report.job_bytes_per_day(1)
    return report


# --- capacity: a bounded load test ---------------------------------------------------------

LOAD_WORKERS = 4


@dataclass
class LoadPhase:
    """Redis's cost of one kind of lockrun invocation, from a bounded load of them."""

    name: str
    invocations: int
    wall_s: float
    redis_cpu_us_per_invocation: float
    """INFO cpu delta, minus Redis's idle rate over the same wall time, per invocation."""
    commands_per_invocation: float
    """INFO commandstats calls (inside Lua scripts included), per invocation."""
    command_us_per_invocation: float
    """INFO commandstats usec: time inside the commands only (no accept, no I/O), a floor
    under ``redis_cpu_us_per_invocation`` that the idle-rate subtraction cannot blur."""
    connections_per_invocation: float
    peak_instantaneous_ops_per_sec: int
    failures: int
    first_failure: str


def _commands(server: RedisServer) -> tuple[int, int]:
    """Commands executed and the microseconds Redis spent inside them (INFO commandstats)."""
    stats = [dict(v) for v in server.client.info("commandstats").values()]
    return (sum(int(v.get("calls", 0)) for v in stats),
            sum(int(v.get("usec", 0)) for v in stats))


def idle_cpu_rate(server: RedisServer, window_s: float) -> float:
    """Redis's CPU per second with no lockrun, to subtract from the load figures.

    Its own cron, plus the INFO polling the load phases do (each INFO costs Redis
    tens of microseconds: at 10 a second that is not negligible next to a skip).
    """
    cpu0, t0 = server.cpu_s(), time.monotonic()
    while time.monotonic() - t0 < window_s:
        server.info_int("stats", "instantaneous_ops_per_sec")
        time.sleep(INFO_POLL_S)  # the load phases' polling period: a measurement window
    return (server.cpu_s() - cpu0) / (time.monotonic() - t0)


def load_phase(server: RedisServer, name: str, argvs: list[Argv], env: dict[str, str],
               idle_rate: float) -> LoadPhase:
    """Run *argvs* by LOAD_WORKERS concurrent loops, reading Redis's counters around them."""
    server.client.config_resetstat()
    cmd0, usec0 = _commands(server)
    conn0 = server.info_int("stats", "total_connections_received")
    cpu0, t0 = server.cpu_s(), time.monotonic()
    peak = 0
    with ThreadPoolExecutor(LOAD_WORKERS) as pool:
        futures = [pool.submit(run_checked, argv, env) for argv in argvs]
        while not all(f.done() for f in futures):
            peak = max(peak, server.info_int("stats", "instantaneous_ops_per_sec"))
            time.sleep(INFO_POLL_S)  # sampling INFO while the load runs
        failed = [f.result() for f in futures if f.result()[0] != 0]
        failures = len(failed)
        first_failure = f"exit {failed[0][0]}: {failed[0][2]}" if failed else ""
    wall = time.monotonic() - t0
    cpu = server.cpu_s() - cpu0 - idle_rate * wall
    # our own INFO and CONFIG calls: one per 0.1 s poll plus the reads around the load
    own = 2 + int(wall / INFO_POLL_S) + 1
    n = len(argvs)
    cmd1, usec1 = _commands(server)
    return LoadPhase(
        name=name,
        invocations=n,
        wall_s=wall,
        redis_cpu_us_per_invocation=max(cpu, 0.0) * 1e6 / n,
        commands_per_invocation=(cmd1 - cmd0 - own) / n,
        command_us_per_invocation=(usec1 - usec0) / n,
        connections_per_invocation=(server.info_int("stats", "total_connections_received")
                                    - conn0) / n,
        peak_instantaneous_ops_per_sec=peak,
        failures=failures,
        first_failure=first_failure,
    )


def capacity(server: RedisServer, lockrun: Argv, env: dict[str, str], invocations: int,
             idle_window_s: float) -> tuple[float, list[LoadPhase]]:
    url = server.url()
    idle = idle_cpu_rate(server, idle_window_s)
    skip = [fire_argv(lockrun, url, SKIP_KEY, SKIP_FIRE) for _ in range(invocations)]
    run = [fire_argv(lockrun, url, "bench-load", f"load-{i}") for i in range(invocations)]
    return idle, [load_phase(server, "skip (fire done)", skip, env, idle),
                  load_phase(server, "run (-- true: acquire, release)", run, env, idle)]


CAPACITY_ROWS = ((10, 10, 1), (100, 10, 1), (100, 100, 1), (1000, 10, 1), (1000, 100, 1),
                 (1000, 100, 5))


def capacity_table(memory: MemoryReport, skip: LoadPhase, run: LoadPhase,
                   ) -> list[dict[str, float | int]]:
    """Per row: S servers each start J jobs every E minutes, all at the same second.

    Each fire is S lockruns: one run (acquire + release, no renewal for a job
    shorter than ttl/3) and S-1 skips. Skips write nothing, so memory depends on
    the jobs and their frequency only.
    """
    rows: list[dict[str, float | int]] = []
    for servers, jobs, every in CAPACITY_ROWS:
        burst = servers * jobs
        cpu_burst_s = jobs * ((servers - 1) * skip.redis_cpu_us_per_invocation
                              + run.redis_cpu_us_per_invocation) / 1e6
        commands = jobs * ((servers - 1) * skip.commands_per_invocation
                           + run.commands_per_invocation)
        rows.append({
            "servers": servers, "jobs": jobs, "every_min": every,
            "lockruns_per_fire": burst,
            "redis_cpu_s_per_fire": cpu_burst_s,
            "redis_cpu_pct_avg": 100 * cpu_burst_s / (60 * every),
            "commands_per_fire": commands,
            "commands_per_s_avg": commands / (60 * every),
            "memory_mib": jobs * memory.job_bytes_per_day(every) / MIB,
        })
    return rows


# --- goals and output -----------------------------------------------------------------------


def summarize(case: Case) -> Summary:
    walls = [s.wall_ms for s in case.samples]
    cpus = [s.cpu_ms for s in case.samples]
    rss = [float(s.maxrss_kib) for s in case.samples]
    return Summary(
        name=case.name,
        command=" ".join(case.argv("N")) + (f" < {case.stdin.name}" if case.stdin else ""),
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


def print_table(summaries: list[Summary], floor: Summary) -> None:
    width = max(len(s.name) for s in summaries)
    print(f"{'case':<{width}}  {'CPU ms':>13}  {'wall ms':>13}  {'RSS':>5}  "
          f"{'x floor (medians)':>18}")
    print(f"{'':<{width}}  {'median':>6} {'p90':>6}  {'median':>6} {'p90':>6}  {'MiB':>5}  "
          f"{'CPU':>6} {'wall':>5} {'RSS':>5}")
    for s in summaries:
        print(f"{s.name:<{width}}  {s.cpu_median_ms:6.1f} {s.cpu_p90_ms:6.1f}  "
              f"{s.wall_median_ms:6.1f} {s.wall_p90_ms:6.1f}  {s.maxrss_median_kib / 1024:5.1f}  "
              f"{ratio(s.cpu_median_ms, floor.cpu_median_ms):6.2f} "
              f"{ratio(s.wall_median_ms, floor.wall_median_ms):5.2f} "
              f"{ratio(s.maxrss_median_kib, floor.maxrss_median_kib):5.2f}")


def goals(by_name: dict[str, Summary], supervision_: list[Supervised],
          contention_: Scenario | None) -> tuple[list[Goal], list[str]]:
    """Issue 12's goals as measured here, and the unlimited costs it asks to state."""
    floor = by_name[FLOOR]
    found: list[Goal] = []
    for name in SKIP_CASES:
        s = by_name[name]
        short = name.removeprefix("lockrun ")
        found += [
            Goal(f"{short}: CPU vs floor", f"{s.cpu_median_ms:.1f} / {floor.cpu_median_ms:.1f} ms",
                 ratio(s.cpu_median_ms, floor.cpu_median_ms), 2.0, "x"),
            Goal(f"{short}: wall vs floor",
                 f"{s.wall_median_ms:.1f} / {floor.wall_median_ms:.1f} ms",
                 ratio(s.wall_median_ms, floor.wall_median_ms), 2.0, "x"),
            Goal(f"{short}: peak RSS vs floor",
                 f"{s.maxrss_median_kib / 1024:.1f} / {floor.maxrss_median_kib / 1024:.1f} MiB",
                 ratio(s.maxrss_median_kib, floor.maxrss_median_kib), 1.35, "x"),
        ]
    run = by_name[RUN_CASE]
    found.append(Goal("run (-- true): CPU vs floor",
                      f"{run.cpu_median_ms:.1f} / {floor.cpu_median_ms:.1f} ms",
                      ratio(run.cpu_median_ms, floor.cpu_median_ms), 2.5, "x"))
    if supervision_:
        sup = supervision_[0]
        found += [Goal("supervising a long job: PSS", f"{sup.pss_kib / 1024:.1f} MiB",
                       sup.pss_kib / 1024, 6.0, "MiB"),
                  Goal("supervising a long job: RSS", f"{sup.rss_kib / 1024:.1f} MiB",
                       sup.rss_kib / 1024, 12.0, "MiB")]
    if contention_ is not None:
        wall = float(contention_.results["wall_until_all_exited_s_median"])
        bad = int(contention_.results["rounds_with_not_exactly_one_run"])
        nproc = len(os.sched_getaffinity(0))
        found.append(Goal(
            f"{CONTENDERS} lockruns on one fire: all exited (median round)",
            f"in {wall:.2f} s, {nproc} cores, "
            + ("one run" if bad == 0 else f"{bad} round(s) NOT one run"),
            wall if bad == 0 else float("inf"), CONTENTION_GOAL_S, "s"))
    skip = by_name[SKIP_UNIX]
    for peer in (BASH_CASE, ETCD_TXN_CASE, ETCD_LOCK_CASE):
        p = by_name.get(peer)
        if p is None:
            continue
        short = peer.removeprefix("peer: ")
        found += [
            Goal(f"skip beats {short}: CPU",
                 f"{skip.cpu_median_ms:.1f} vs {p.cpu_median_ms:.1f} ms",
                 ratio(skip.cpu_median_ms, p.cpu_median_ms), 1.0, "x"),
            Goal(f"skip beats {short}: wall",
                 f"{skip.wall_median_ms:.1f} vs {p.wall_median_ms:.1f} ms",
                 ratio(skip.wall_median_ms, p.wall_median_ms), 1.0, "x"),
        ]
    costs = []
    for name in (HELP_CASE, STATUS_CASE, HISTORY_CASE):
        s = by_name[name]
        costs.append(f"{name}: CPU {ratio(s.cpu_median_ms, floor.cpu_median_ms):.2f}x floor "
                     f"({ratio(s.cpu_median_ms, skip.cpu_median_ms):.2f}x the skip), wall "
                     f"{ratio(s.wall_median_ms, floor.wall_median_ms):.2f}x floor, peak RSS "
                     f"{ratio(s.maxrss_median_kib, floor.maxrss_median_kib):.2f}x floor")
    return found, costs


def print_goals(found: list[Goal], costs: list[str]) -> None:
    width = max(len(g.goal) for g in found)
    mwidth = max(len(g.measured) for g in found)
    print(f"  {'goal':<{width}}  {'measured':<{mwidth}}  {'value':>7}  {'limit':>9}  verdict")
    for g in found:
        unit = g.unit[0]  # x, M(iB), s
        print(f"  {g.goal:<{width}}  {g.measured:<{mwidth}}  {g.value:6.2f}{unit} "
              f"<= {g.limit:5.2f}{unit}  {g.verdict}")
    met = sum(g.met for g in found)
    print(f"  {met}/{len(found)} goals met (x: ratio of medians; M: MiB; s: seconds; "
          "a peer ratio below 1.00 means lockrun is cheaper)")
    print("  no limit, the cost stated (issue 12: 'the verbs may cost more; say how much'):")
    for line in costs:
        print(f"    {line}")


def print_memory(mem: MemoryReport) -> None:
    print(f"  {mem.fires} real fires of one job (consecutive minutes, default --retention):")
    print(f"    done record: {mem.record_bytes_mean:.0f} B (MEMORY USAGE), kept "
          f"{mem.record_ttl_s / 3600:.1f} h (PTTL)")
    print(f"    history: {mem.hist_entries_per_fire:.1f} entries per fire; used_memory grew "
          f"{mem.used_memory_per_fire:.0f} B per fire (record + entries + expiry)")
    print(f"    other keys of the job: {mem.other_keys_bytes} B")
    print(f"  history at steady state: {mem.steady_hist_len} entries after lockrun's own XADD "
          f"MAXLEN ~{HISTORY_CAP} on a day's {round(FIRES_PER_DAY * mem.hist_entries_per_fire)},"
          f" {mem.steady_hist_bytes / 1024:.0f} KiB")
    print(f"  one every-minute job per day: {FIRES_PER_DAY} x {mem.record_bytes_mean:.0f} B "
          f"records + {mem.steady_hist_bytes / 1024:.0f} KiB history + {mem.other_keys_bytes} B "
          f"= {mem.per_day_bytes / MIB:.2f} MiB ({mem.per_day_bytes / 1024:.0f} KiB)")


def print_capacity(idle: float, phases: list[LoadPhase],
                   rows: list[dict[str, float | int]]) -> None:
    print(f"  load: {LOAD_WORKERS} concurrent loops of lockrun against the private Redis; "
          f"Redis idle CPU {idle * 1e6:.0f} us/s subtracted")
    for p in phases:
        print(f"    {p.name}: {p.invocations} lockruns in {p.wall_s:.1f} s, Redis CPU "
              f"{p.redis_cpu_us_per_invocation:.0f} us (inside commands "
              f"{p.command_us_per_invocation:.0f} us), {p.commands_per_invocation:.1f} commands "
              f"(Lua included), {p.connections_per_invocation:.1f} connections per lockrun; "
              f"peak instantaneous_ops_per_sec {p.peak_instantaneous_ops_per_sec}"
              + (f"; {p.failures} FAILED" if p.failures else ""))
    print("  every server starts each job at the same second: one run and servers-1 skips per "
          "fire. Redis CPU s/fire is also how long")
    print("  that burst keeps single-threaded Redis busy; memory: done records (24 h) + capped "
          "history, skips write nothing")
    head = (f"  {'servers':>7} {'jobs':>5} {'every':>6} {'lockruns':>9} {'Redis CPU':>10} "
            f"{'CPU avg':>8} {'commands':>9} {'cmds/s':>8} {'memory':>8}")
    print(head)
    print(f"  {'':>7} {'':>5} {'':>6} {'per fire':>9} {'s/fire':>10} {'% core':>8} "
          f"{'per fire':>9} {'avg':>8} {'MiB':>8}")
    for r in rows:
        print(f"  {r['servers']:>7} {r['jobs']:>5} {str(r['every_min']) + ' min':>6} "
              f"{r['lockruns_per_fire']:>9} {r['redis_cpu_s_per_fire']:>10.3f} "
              f"{r['redis_cpu_pct_avg']:>8.2f} {r['commands_per_fire']:>9.0f} "
              f"{r['commands_per_s_avg']:>8.0f} {r['memory_mib']:>8.1f}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so the finally blocks stop redis-server and etcd."""

    def handler(signum: int, _frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, metavar="N",
                        help=f"measured rounds per case (default {DEFAULT_RUNS}, "
                             f"{QUICK_RUNS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few rounds, no warm-up, one contention round, few "
                             "memory fires and a small load test")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="also write what is printed to FILE (bench/results.txt is the "
                             "copy kept in the repository)")
    parser.add_argument("--no-scenarios", action="store_true",
                        help="leave out the slow fleet scenarios (200-process contention, time "
                             "to fail, takeover)")
    parser.add_argument("--lockrun", type=Path, metavar="PATH",
                        help="measure this lockrun executable instead of installing this "
                             "checkout with install.sh (the floor then runs the interpreter "
                             "its #! line names, else this one)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.memory_fires = 5 if args.quick else 60
    args.load_invocations = 8 if args.quick else 120
    args.idle_window_s = 0.5 if args.quick else 3.0
    args.watch_s = 0.3 if args.quick else SUPERVISE_WATCH_S
    args.contention_rounds = 1 if args.quick else CONTENTION_ROUNDS
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
    warnings: list[str] = []
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="lockrun-bench-") as tmpdir, sigterm_as_interrupt():
        tmp = Path(tmpdir)
        measured = given_lockrun(args.lockrun) if args.lockrun else install_lockrun(tmp)
        lockrun = measured.lockrun
        if os.path.realpath(measured.python) != os.path.realpath(sys.executable):
            warnings.append(f"the floor runs {measured.python}, not this interpreter "
                            f"({sys.executable}): lockrun and the floor differ in interpreter")
        (tmp / "state").mkdir()
        env = child_env(tmp / "state")
        probe = RssProbe.find(tmp, env)
        server = RedisServer(binary, tmp)
        peers: Peers | None = None
        try:
            server.wait_ready(START_DEADLINE_S)
            acl = server.add_acl_user()
            machine = machine_info(binary, server.version())
            machine.update(measured.versions)
            machine["loadavg"] = load_at_start
            print("lockrun benchmark (issue 12's goals)")
            for key, value in machine.items():
                print(f"  {key:<12} {value}")
            for n, line in enumerate(measured.how):
                print(f"  {'lockrun via' if n == 0 else '':<12} {line}")
            same = os.path.realpath(measured.python) == os.path.realpath(sys.executable)
            print(f"  {'floor':<12} {measured.python.replace(tmpdir, 'TMP')} -I -S -c pass: "
                  "the interpreter lockrun's #! line names"
                  + (", the same binary as this one" if same else " (NOT this one)"))
            print(f"  {'redis':<12} private redis-server, unix socket and 127.0.0.1, no "
                  "persistence")
            print(f"  {'ACL rows':<12} {acl}")
            print(f"  {'peak RSS':<12} "
                  + (f"{probe.binary} -f %M, a separate run per sample" if probe else
                     "wait4 ru_maxrss (no GNU time: floored at this script's own peak)"))
            print(f"  {'runs':<12} {args.runs} per case, round-robin"
                  + ("" if args.quick else ", after 1 warm-up round"))
            print(flush=True)

            peers = setup_peers(server, env, tmp)
            _BASH_ENV.update(bash_env(env, peers.sock))
            cases = build_cases(measured, server, peers)
            invocations = prepare_and_check(server, measured, env, peers, warnings)
            hist_len = server.xlen(SKIP_HIST_KEY)
            measure_all(server, cases, args.runs, env, probe, warm_up=not args.quick)
            post_check(server, args.runs, probe, hist_len, warnings)
            supervision_ = supervision(lockrun, server, peers, env, args.watch_s)
            memory = redis_memory(server, lockrun, env, args.memory_fires, warnings)
            idle, phases = capacity(server, lockrun, env, args.load_invocations,
                                    args.idle_window_s)
            warnings += [f"load {p.name}: {p.failures} lockruns failed, the first {p.first_failure}"
                         for p in phases if p.failures]
            scenarios: list[Scenario] = []
            contention_: Scenario | None = None
            if not args.no_scenarios:
                contention_ = contention(lockrun, server.url(), env, tmp, args.contention_rounds)
                scenarios.append(contention_)
                # a broken scenario is a warning: it must not lose every figure taken before
                later: list[tuple[str, Callable[[], list[Scenario]]]] = [
                    ("time to fail", lambda: time_to_fail(lockrun, env, binary, tmp)),
                    ("takeover", lambda: takeover(lockrun, server.url(), env, tmp))]
                for name, scenario in later:
                    try:
                        scenarios += scenario()
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        warnings.append(f"scenario {name} broke: {exc}")
        finally:
            if peers is not None and peers.etcd is not None:
                peers.etcd.stop()
            server.stop()
    own_peak = own_peak_rss_kib()

    summaries = [summarize(c) for c in cases]
    by_name = {s.name: s for s in summaries}
    for s in summaries:
        if s.nonzero_exits:
            warnings.append(f"{s.name}: {s.nonzero_exits}/{s.runs} runs exited non-zero")
    for note in peers.notes:
        print(f"note: {note}")
    for warning in warnings:
        print(f"WARNING: {warning}")
    if peers.notes or warnings:
        print()

    print_table(summaries, by_name[FLOOR])
    floor_rss = min(s.maxrss_wait4_median_kib for s in summaries)
    print(f"(wait4's own ru_maxrss was >= {floor_rss:.0f} KiB for every case, this script's peak "
          f"being {own_peak} KiB: Linux keeps the parent's high-water mark across fork+exec)")
    print()
    found, costs = goals(by_name, supervision_, contention_)
    print("goals (issue 12), medians of this run:")
    print_goals(found, costs)
    print()
    print(f"supervising a long job (smaps_rollup of the supervisor, max over "
          f"{args.watch_s:g} s after its job started):")
    for sup in supervision_:
        print(f"  {sup.name:<38} RSS {sup.rss_kib / 1024:5.1f} MiB  PSS {sup.pss_kib / 1024:5.1f}"
              " MiB")
    print()
    print("Redis memory of one every-minute job:")
    print_memory(memory)
    print()
    rows = capacity_table(memory, phases[0], phases[1])
    print("capacity of one Redis (bounded load test, then extrapolated):")
    print_capacity(idle, phases, rows)
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
            "lockrun_via": [line.replace(tmpdir, "TMP") for line in measured.how],
            "floor_python": measured.python.replace(tmpdir, "TMP"),
            "peak_rss_source": probe.binary if probe else "wait4",
            "bench_own_peak_rss_kib": own_peak,
            "runs": args.runs,
            "notes": peers.notes,
            "warnings": warnings,
            "summary": [asdict(s) for s in summaries],
            "goals": [{**asdict(g), "verdict": g.verdict} for g in found],
            "costs_without_limit": costs,
            "supervision": [asdict(s) for s in supervision_],
            "redis_memory": asdict(memory),
            "capacity": {"redis_idle_cpu_s_per_s": idle,
                         "load": [asdict(p) for p in phases], "table": rows},
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
