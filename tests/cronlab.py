"""A lab of simulated servers, each one running Debian's real cron daemon.

Why: README promises that its crontab block works under cron as written and that
cron mails only what an operator must read. Only the real daemon can show that:
its PATH, its ``%`` handling, its switch to the crontab's owner, its mail. Each
simulated server is one ``cron -f`` in its own UTS, mount and PID namespaces, so
servers differ in hostname and private state while sharing one machine. Every
change a server sees (its crontabs, /etc/lockrun.toml, a sendmail, a syslog
socket, lockrun in /usr/local/bin) is a mount that exists only inside its
namespaces: the host's own crontabs, /etc and /usr are never written, and
everything vanishes when the namespaces' processes die.

Nothing here depends on pytest; tests/test_real_cron.py drives it.
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
from redis_topologies import RedisServer, wait_until

ROOT = Path(__file__).resolve().parent.parent
CRON = Path("/usr/sbin/cron")
README = ROOT / "README.md"
INSTALL_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def missing_requirements() -> str | None:
    """Why this machine cannot host the lab, or None when it can."""
    if os.geteuid() != 0:
        return "needs root: every simulated server mounts over /etc, /dev and /usr/sbin"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux) for the per-server namespaces"
    if not os.access(CRON, os.X_OK):
        return f"needs Debian's cron daemon at {CRON} (apt-get install cron)"
    if shutil.which("hostname") is None:
        return "needs the hostname command"
    return None


def _die_with_us() -> None:
    """preexec_fn: if the test process dies, so does each server (unshare --kill-child)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def redis_first() -> None:
    """preexec_fn for the fleets' Redis servers: their own session, scheduled ahead of cron's jobs.

    Debian's cron starts every job in a session of its own, and with the
    kernel's autogroup scheduling each session gets an equal share of the CPU:
    at a minute boundary the lab's hundred jobs would leave a Redis server in
    pytest's session a hundredth of it, and lockrun would time out on a Redis
    that in production has a machine to itself. Dies with the test process too.
    """
    _die_with_us()
    os.setsid()
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("-10")
    except OSError:
        pass  # no autogroup scheduling: sessions do not matter then


def fire_id(epoch: float) -> str:
    """lockrun's fire id of the minute that starts at *epoch*."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ README's text


def readme_crontab_block(readme: str) -> str:
    """README's first crontab block (as tests/test_docs.py reads it): what a newcomer copies."""
    match = re.search(r"^```crontab\n(.*?)^```$", readme, re.M | re.S)
    if not match:
        raise ValueError("README has no ```crontab block")
    return match.group(1)


def readme_config_block(readme: str) -> str:
    """The first ```toml block after README's "Configuration file" (a heading or a bold lead)."""
    heading = re.search(r"^(?:#+ |\*\*)Configuration file\b", readme, re.M)
    if not heading:
        raise ValueError('README has no "Configuration file" heading or paragraph')
    match = re.search(r"^```toml\n(.*?)^```$", readme[heading.end():], re.M | re.S)
    if not match:
        raise ValueError('README has no ```toml block under "Configuration file"')
    return match.group(1)


def as_cron_runs_it(command: str) -> str:
    """What cron hands to /bin/sh: up to the first unescaped %, with \\% turned into %."""
    out, i = [], 0
    while i < len(command):
        if command[i] == "\\" and command[i + 1:i + 2] == "%":
            out.append("%")
            i += 2
            continue
        if command[i] == "%":
            break
        out.append(command[i])
        i += 1
    return "".join(out)


_ENV_LINE = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_TIME_FIELDS = re.compile(r"^(@\w+|(?:\S+\s+){4}\S+)(\s+)")
_SCHEDULE = re.compile(r"--schedule(?:\s+|=)('[^']*'|\"[^\"]*\"|\S+)")


@dataclass(frozen=True)
class JobLine:
    """One job line of README's block, and what the lab runs in its place."""

    readme: str
    """The line exactly as README has it."""
    lab: str
    """Every minute, every --schedule every minute, the probe in front of the job."""
    argv: tuple[str, ...]
    """lockrun's own arguments as /bin/sh gets them from cron (before ``--``)."""
    job: tuple[str, ...]
    """README's job command as /bin/sh gets it from cron: the probe's arguments."""

    @property
    def key(self) -> str:
        return self._option("-k", "--key") or ""

    @property
    def skip_exit_code(self) -> int:
        return int(self._option("-E", "--skip-exit-code") or 0)

    @property
    def error_exit_code(self) -> int:
        return int(self._option(None, "--error-exit-code") or 75)

    def _option(self, short: str | None, long: str) -> str | None:
        found = None
        for i, arg in enumerate(self.argv):
            if arg in (short, long) and i + 1 < len(self.argv):
                found = self.argv[i + 1]
            elif arg.startswith(long + "="):
                found = arg.split("=", 1)[1]
            elif short and arg.startswith(short) and len(arg) > len(short):
                found = arg[len(short):]
        return found


def lab_crontab(block: str, probe: Path, user: str | None = None,
                header: Iterable[str] = (),
                schedule: str = "* * * * *") -> tuple[str, list[JobLine]]:
    """README's crontab block with only the changes the lab needs, and its job lines.

    The lab changes the time fields to ``* * * * *``, every ``--schedule`` to
    ``'* * * * *'`` (so everything fires within the test) and puts *probe* in
    front of each job: the probe runs instead of the job and gets the job's
    command as its arguments, so ``%`` escapes still go through cron as README
    wrote them. Comments, variables (PATH=) and lockrun's options stay verbatim.
    *user* is the user field of a /etc/cron.d file; *header* lines go on top.
    *schedule* replaces the ``--schedule`` of lines that give no ``--tz`` (a
    schedule that matches only in some zones tells which zone lockrun used).
    """
    out = list(header)
    jobs = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or _ENV_LINE.match(line):
            out.append(line)
            continue
        timing = _TIME_FIELDS.match(line)
        if not timing:
            raise ValueError(f"not a crontab job line: {line!r}")
        command = line[timing.end():]
        argv = shlex.split(as_cron_runs_it(command))
        if argv[:1] != ["lockrun"] or "--" not in argv:
            raise ValueError(f"not a 'lockrun ... -- COMMAND' line: {line!r}")
        cut = argv.index("--")
        separator = re.search(r"(?<!\S)--(?!\S)", command)
        if not separator:
            raise ValueError(f"no ' -- ' in {line!r}")
        lab_command = (command[:separator.end()] + f" {probe}"
                       + command[separator.end():])
        own = "* * * * *" if re.search(r"(?<!\S)--tz(?![^\s=])", command) else schedule
        lab_command = _SCHEDULE.sub(f"--schedule '{own}'", lab_command)
        fields = "* * * * *" + (f" {user}" if user else "")
        lab_line = fields + timing.group(2) + lab_command
        jobs.append(JobLine(line, lab_line, tuple(argv[1:cut]), tuple(argv[cut + 1:])))
        out.append(lab_line)
    return "\n".join(out) + "\n", jobs


# ------------------------------------------------------------------ what a run leaves


@dataclass(frozen=True)
class ProbeRun:
    """One line of the probe log: which server ran which fire."""

    host: str
    key: str
    fire: str
    fence: int
    user: str


@dataclass(frozen=True)
class Mail:
    host: str
    received: float
    text: str

    @property
    def body(self) -> str:
        return self.text.split("\n\n", 1)[-1]


@dataclass(frozen=True)
class LogRecord:
    """One syslog datagram a server sent to its /dev/log."""

    received: float
    host: str
    tag: str
    message: str


@dataclass
class CronJob:
    """One job start as cron's own log (-L 15) tells it: CMD, END and the exit status."""

    host: str
    pid: int
    user: str
    command: str
    started: float
    ended: float | None = None
    status: int = 0

    @property
    def key(self) -> str:
        match = re.search(r"(?:^|\s)(?:-k|--key)(?:\s+|=)(\S+)", self.command)
        return match.group(1) if match else ""


_SYSLOG = re.compile(r"^<\d+>(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?"
                     r"(?P<tag>[^:\[\s]+)(?:\[\d+\])?: (?P<msg>.*)$", re.S)
_CMD = re.compile(r"^\((?P<user>[^)]+)\) (?P<what>CMD|END) \(\[(?P<pid>\d+)\] (?P<cmd>.*)\)$",
                  re.S)
_FAILED = re.compile(r"^\(CRON\) error \(grandchild #(?P<pid>\d+) failed with exit status "
                     r"(?P<status>\d+)\)")


def cron_jobs(records: Iterable[LogRecord]) -> list[CronJob]:
    """Pair cron's CMD, END and failure lines by (host, pid)."""
    jobs: dict[tuple[str, int], CronJob] = {}
    for r in records:
        if r.tag not in ("cron", "CRON"):
            continue
        if m := _CMD.match(r.message):
            pid = int(m["pid"])
            if m["what"] == "CMD":
                jobs[(r.host, pid)] = CronJob(r.host, pid, m["user"], m["cmd"], r.received)
            elif (job := jobs.get((r.host, pid))) is not None:
                job.ended = r.received
        elif (m := _FAILED.match(r.message)) and (job := jobs.get((r.host, int(m["pid"])))):
            job.status = int(m["status"])
    return list(jobs.values())


class SyslogReceiver:
    """Each server's /dev/log: one datagram socket per server, read by one thread.

    cron -L 15 logs every job's start, end and failed exit status there, which
    is how the scenario knows that a minute's jobs have all finished, with no
    sleeping; lockrun's ``syslog = true`` writes there too, as on a real server.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._records: list[LogRecord] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cronlab-syslog", daemon=True)
        self._sockets: list[socket.socket] = []

    def add(self, path: Path, host: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        path.chmod(0o666)  # the jobs of every crontab's user write to it
        sock.setblocking(False)
        self._sockets.append(sock)
        self._selector.register(sock, selectors.EVENT_READ, host)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                while True:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    self._keep(time.time(), str(key.data), data)

    def _keep(self, received: float, host: str, data: bytes) -> None:
        text = data.decode(errors="replace").rstrip("\n\0")
        m = _SYSLOG.match(text)
        record = (LogRecord(received, host, m["tag"], m["msg"]) if m
                  else LogRecord(received, host, "", text))
        with self._lock:
            self._records.append(record)

    def records(self) -> list[LogRecord]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self._sockets:
            self._selector.unregister(sock)
            sock.close()
        self._selector.close()


# ------------------------------------------------------------------ the lab


def _submounts(target: str) -> list[str]:
    """Mount points directly below *target* in this mount namespace (a copy of the host's).

    An overlay over *target* hides them, so each server binds them back.
    """
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
            if point.startswith(target.rstrip("/") + "/"):
                points.add(point)
    return sorted(p for p in points
                  if not any(p != q and p.startswith(q + "/") for q in points))


class Lab:
    """One temporary directory with everything the simulated servers share.

    It lives directly under /tmp with mode 755, not under pytest's 0700 tmp
    tree: the ordinary user's cron jobs must reach lockrun's venv, the probe and
    the log.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lockrun-cronlab-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.fleets: list[Fleet] = []
        self.syslog = SyslogReceiver()
        self.install_dir = self.dir / "install"
        self.mail_dir = self._dir("mail", 0o1777)
        self.args_dir = self._dir("args", 0o1777)
        self.probe_log = self.dir / "probe.log"
        self.probe_log.touch(0o666)
        self.probe_log.chmod(0o666)
        self.probe = self.dir / "probe"
        self._script(self.probe, _PROBE.format(log=self.probe_log, args=self.args_dir))
        self.sbin_layer = self._dir("layers/sbin")
        self._script(self.sbin_layer / "sendmail", _SENDMAIL.format(mail=self.mail_dir))
        self.dev_layer = self._dir("layers/dev")
        (self.dev_layer / "log").touch(0o644)  # where each server binds its syslog socket

    def _dir(self, name: str, mode: int = 0o755) -> Path:
        path = self.dir / name
        path.mkdir(parents=True)
        path.chmod(mode)
        return path

    @staticmethod
    def _script(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o755)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- set-up

    def install(self) -> float:
        """Install lockrun the way README says (install.sh); returns the seconds it took.

        install.sh runs from a copy of the checkout: bash reads a script as it
        runs it, so an edit of the working tree during the install would
        otherwise run half of each version. A private mount namespace with a
        tmpfs over /var/cache/man keeps its mandb run from rewriting the host's
        man index.
        """
        started = time.monotonic()
        source = self.dir / "source"
        shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__",
            "build", "dist", "*.egg-info"))
        prepare = ("[ ! -d /var/cache/man ] || mount -t tmpfs cronlab-man /var/cache/man; "
                   'exec bash "$0" "$@"')
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", prepare,
             str(source / "install.sh"), "--prefix", str(self.install_dir / "opt"),
             "--bin-dir", str(self.install_dir / "bin"),
             "--man-dir", str(self.install_dir / "man")],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
            preexec_fn=_die_with_us)
        if r.returncode != 0:
            raise RuntimeError(f"install.sh failed ({r.returncode}); it needs PyPI:\n"
                               f"{r.stdout}{r.stderr}")
        return time.monotonic() - started

    @property
    def bin_dir(self) -> Path:
        return self.install_dir / "bin"

    def add_fleet(self, name: str, servers: int, redis: RedisServer, config: str,
                  config_mode: int = 0o644) -> Fleet:
        fleet = Fleet(self, name, redis, config, config_mode)
        for n in range(1, servers + 1):
            fleet.servers.append(Server(fleet, f"{name}-{n}"))
        self.fleets.append(fleet)
        return fleet

    @property
    def servers(self) -> list[Server]:
        return [s for fleet in self.fleets for s in fleet.servers]

    def start(self) -> None:
        """Start every server's cron; return once each has loaded its crontabs."""
        for server in self.servers:
            self.syslog.add(server.syslog_socket, server.host)
        self.syslog.start()
        for server in self.servers:
            server.start()
        for server in self.servers:
            if not wait_until(server.settled, READY_TIMEOUT_S, 0.1):
                raise RuntimeError(f"cron on {server.host} did not start:\n{server.console()}")
            if server.exited():
                raise RuntimeError(f"cron on {server.host} exited:\n{server.console()}")

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.syslog.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- what happened

    def jobs(self) -> list[CronJob]:
        return cron_jobs(self.syslog.records())

    def jobs_done(self, servers: Iterable[Server], since: float, count: int) -> bool:
        """True once each server's cron started *count* jobs since *since* and all ended."""
        started: dict[str, list[CronJob]] = {}
        for job in self.jobs():
            if job.started >= since:
                started.setdefault(job.host, []).append(job)
        return all(len(started.get(s.host, [])) >= count
                   and all(j.ended is not None for j in started[s.host]) for s in servers)

    def probe_runs(self) -> list[ProbeRun]:
        runs = []
        for line in self.probe_log.read_text().splitlines():
            host, key, fire, fence, user = line.split(" ")
            runs.append(ProbeRun(host, key, fire, int(fence), user))
        return runs

    def mails(self) -> list[Mail]:
        """Every mail cron sent, by host; the stand-in names each file HOST.NANOSECONDS.PID."""
        found = []
        for path in sorted(self.mail_dir.glob("*.mail")):
            host, stamp, _pid, _ = path.name.rsplit(".", 3)
            found.append(Mail(host, int(stamp) / 1e9, path.read_text(errors="replace")))
        return found

    def job_arguments(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """(host, key) -> the arguments the probe got the last time it ran there."""
        found = {}
        for path in self.args_dir.iterdir():
            host, key = path.name.split(".", 1)  # host names have no dots
            found[(host, key)] = tuple(path.read_text().splitlines())
        return found


@dataclass
class Fleet:
    """Servers that share one crontab, one /etc/lockrun.toml and one Redis."""

    lab: Lab
    name: str
    redis: RedisServer
    config: str
    config_mode: int
    servers: list[Server] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = self.lab.dir / "fleet" / self.name
        self.etc_layer = self.dir / "etc"  # lies over the host's /etc inside each server
        self.etc_layer.mkdir(parents=True)
        self.cron_d = self.dir / "cron.d"
        self.cron_d.mkdir()
        self.spool = self.dir / "crontabs"
        self.spool.mkdir()
        # Debian's spool: root:crontab 1730 (crontab(1) is setgid crontab)
        os.chown(self.spool, 0, _crontab_gid())
        self.spool.chmod(0o1730)
        config = self.etc_layer / "lockrun.toml"
        config.write_text(self.config)
        config.chmod(self.config_mode)
        system = self.etc_layer / "crontab"  # no run-parts of the host's cron.hourly here
        system.write_text("# cronlab: this server's /etc/crontab has no jobs\n")
        system.chmod(0o644)

    def user_crontab(self, user: str, text: str) -> None:
        """/var/spool/cron/crontabs/USER as crontab(1) leaves it: USER:crontab, mode 600."""
        path = self.spool / user
        path.write_text(text)
        os.chown(path, _uid(user), _crontab_gid())
        path.chmod(0o600)

    def cron_d_file(self, name: str, text: str) -> None:
        """/etc/cron.d/NAME: root's, and not writable by group or others, or cron ignores it."""
        path = self.cron_d / name
        path.write_text(text)
        path.chmod(0o644)

    @property
    def hosts(self) -> list[str]:
        return [s.host for s in self.servers]


class Server:
    """One simulated server: `cron -f` as PID 1 of its own UTS, mount and PID namespaces."""

    def __init__(self, fleet: Fleet, host: str) -> None:
        self.fleet = fleet
        self.host = host
        self.dir = fleet.lab.dir / "srv" / host
        self.dir.mkdir(parents=True)
        self.state = self._dir("var-lib-lockrun", 0o755)
        self.var_tmp = self._dir("var-tmp", 0o1777)
        self.node_exporter = self._dir("node-exporter", 0o755)
        self.syslog_socket = self.dir / "log.sock"
        self.init = self.dir / "init.sh"
        self.proc: subprocess.Popen[bytes] | None = None

    def _dir(self, name: str, mode: int) -> Path:
        path = self.dir / name
        path.mkdir()
        path.chmod(mode)
        return path

    def init_script(self) -> str:
        lab, fleet, q = self.fleet.lab, self.fleet, shlex.quote
        lines = [
            "#!/bin/sh",
            f"# cronlab: server {self.host}; PID 1 of its namespaces, so everything it",
            "# mounts and starts vanishes with it.",
            "set -eu",
            f"hostname {q(self.host)}",
            "# cron's pid file (/var/run is /run) must not clash between servers",
            "mount -t tmpfs -o mode=0755 cronlab-run /run",
            "mkdir -p /run/cronlab/varlib-upper /run/cronlab/varlib-work",
            "# /dev/log: this server's syslog socket (cron -L 15 logs every job)",
            *_overlay("/dev", f"lowerdir={lab.dev_layer}:/dev"),
            f"mount --bind {q(str(self.syslog_socket))} /dev/log",
            "# /etc: the fleet's /etc/lockrun.toml and an /etc/crontab without jobs",
            *_overlay("/etc", f"lowerdir={fleet.etc_layer}:/etc"),
            f"mount --bind {q(str(fleet.cron_d))} /etc/cron.d",
            f"mount --bind {q(str(fleet.spool))} /var/spool/cron/crontabs",
            "# /var/lib writable in here only; lockrun's state there and in /var/tmp is the",
            "# server's own, kept on the host so the test can look at it",
            *_overlay("/var/lib", "lowerdir=/var/lib,upperdir=/run/cronlab/varlib-upper,"
                                  "workdir=/run/cronlab/varlib-work"),
            "mkdir -p /var/lib/lockrun /var/lib/prometheus/node-exporter",
            f"mount --bind {q(str(self.state))} /var/lib/lockrun",
            f"mount --bind {q(str(self.node_exporter))} /var/lib/prometheus/node-exporter",
            f"mount --bind {q(str(self.var_tmp))} /var/tmp",
            "# a sendmail that keeps each mail as a file; lockrun as install.sh installed it",
            *_overlay("/usr/sbin", f"lowerdir={lab.sbin_layer}:/usr/sbin"),
            f"mount --bind {q(str(lab.bin_dir))} /usr/local/bin",
            f"exec {CRON} -f -L 15",
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self.init.write_text(self.init_script())
        with open(self.dir / "console.log", "wb") as console:
            self.proc = subprocess.Popen(
                ["unshare", "--uts", "--mount", "--pid", "--mount-proc", "--fork",
                 "--propagation", "private", "--kill-child", "/bin/sh", str(self.init)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_us)

    def ready(self) -> bool:
        """cron logs this once it has read its crontabs, just before its first sleep."""
        return any(r.host == self.host and "Running @reboot jobs" in r.message
                   for r in self.fleet.lab.syslog.records())

    def settled(self) -> bool:
        return self.ready() or self.exited()

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def console(self) -> str:
        return (self.dir / "console.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL the namespace's first process: the kernel then kills all the rest."""
        if self.proc is None:
            return
        try:
            for child in psutil.Process(self.proc.pid).children():
                child.kill()
        except psutil.Error:
            pass
        self.proc.kill()  # and --kill-child would do the same
        self.proc.wait(30)


def _overlay(target: str, options: str) -> list[str]:
    """Shell lines: an overlay over *target*, then the mounts it hid bound back."""
    q = shlex.quote
    hidden = _submounts(target)
    stash = f"/run/cronlab/stash{target}"
    lines = [f"mkdir -p {q(stash)}", f"mount --rbind {q(target)} {q(stash)}"] if hidden else []
    lines.append(f"mount -t overlay cronlab-overlay -o {q(options)} {q(target)}")
    for point in hidden:
        lines.append(f"mount --rbind {q(stash + point[len(target):])} {q(point)}")
    return lines


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _crontab_gid() -> int:
    import grp

    try:
        return grp.getgrnam("crontab").gr_gid
    except KeyError:
        return 0


def boundaries(after: float, margin: float, count: int) -> list[float]:
    """The next *count* minute boundaries, the first at least *margin* s after *after*."""
    first = (int(after + margin) // 60 + 1) * 60
    return [float(first + 60 * i) for i in range(count)]


def wait_clock(epoch: float) -> None:
    """Wait for the wall clock to pass *epoch*: a minute boundary is the event cron acts on."""
    if not wait_until(lambda: time.time() >= epoch, max(0.0, epoch - time.time()) + 5, 0.05):
        raise RuntimeError(f"the wall clock did not reach {fire_id(epoch)}")


_PROBE = """#!/bin/sh
# cronlab probe: runs instead of README's job; records which server ran which fire
# (one line: HOST KEY FIRE FENCE USER) and the job's command it was given, prints nothing.
set -eu
host=$(hostname)
printf '%s\\n' "$@" > "{args}/$host.$LOCKRUN_KEY"
printf '%s %s %s %s %s\\n' "$host" "$LOCKRUN_KEY" "$LOCKRUN_FIRE" "$LOCKRUN_FENCE" \\
    "$(id -un)" >> "{log}"
"""

_SENDMAIL = """#!/bin/sh
# cronlab sendmail: cron pipes each mail here (-FCronDaemon -i -B8BITMIME -oem USER);
# keep it as one file per mail, named after the server, renamed into place when whole.
host=$(hostname)
tmp="{mail}/.$host.$$.tmp"
cat > "$tmp"
exec mv "$tmp" "{mail}/$host.$(date +%s%N).$$.mail"
"""
