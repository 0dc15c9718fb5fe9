"""Monitoring hooks: healthchecks-style pings and a Prometheus textfile per job.

Only the server that runs a fire pings, so a dead man's switch sees one
execution per fire and skipped servers stay neutral. A monitoring failure
must never change the job's exit status, never delay the job while its lease
ticks, and never hold the crontab up for long: the start work runs on a
background thread, and the end waits for it and for the final ping only up to
fixed bounds.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lockrun import __version__
from lockrun.output import Reporter

PING_TIMEOUT = 2.0
PING_ATTEMPTS = 2
PING_PAUSE = 0.3
START_WAIT = PING_TIMEOUT
"""How long the end waits for the start work, so /start precedes the final ping."""
FINAL_PING_WAIT = PING_ATTEMPTS * PING_TIMEOUT + PING_PAUSE + 0.2
"""How long the end waits for the final ping, DNS included (it runs on a thread)."""
METRICS_LOCK_WAIT = 2.0
"""How long a metrics update waits for another lockrun of the same key on this host."""
METRICS_MAX_BYTES = 64 * 1024
"""lockrun's own file is under 2 KiB; anything much larger is not ours to parse."""


class Warnings:
    """At most one monitoring warning line per invocation, whichever thread hits it first.

    A dead ping endpoint would otherwise print one line for /start and one for
    the end, on every fire, into cron mail; the first says it all. Once the end
    stops waiting, a thread that finishes later stays silent, so nothing is
    printed after lockrun's last word.
    """

    def __init__(self, out: Reporter) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._closed = False

    def warn(self, message: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.out.warning(message)

    def close(self) -> None:
        with self._lock:
            self._closed = True


@dataclass
class Pinger:
    """Sends ``URL/start``, then ``URL`` on success or ``URL/<exit code>`` on failure."""

    url: str
    run_id: str

    def start(self, cancelled: threading.Event) -> str | None:
        return self._send("/start", cancelled)

    def finish(self, exit_code: int) -> str | None:
        return self._send("" if exit_code == 0 else f"/{exit_code}", threading.Event())

    def _target(self, suffix: str) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        query = "&".join(q for q in (parts.query, f"rid={self.run_id}") if q)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix, query=query))

    def _send(self, suffix: str, cancelled: threading.Event) -> str | None:
        """Return None when the monitor got the ping, else the warning to print.

        *cancelled* stops further attempts once the final ping is under way, so
        a late /start retry can never reach the monitor after the end.
        """
        import urllib.error
        import urllib.request

        target = self._target(suffix)  # the CLI only accepts http:// and https:// URLs
        request = urllib.request.Request(  # noqa: S310
            target, headers={"User-Agent": f"lockrun/{__version__}"})
        error = "not sent before the job ended"
        for attempt in range(PING_ATTEMPTS):
            if cancelled.is_set():
                break
            try:
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:  # noqa: S310
                    response.read(1024)
                return None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
                if attempt + 1 < PING_ATTEMPTS:
                    cancelled.wait(PING_PAUSE)
        return f"ping {_hide_path(target)} failed: {error}"


def _hide_path(url: str) -> str:
    """Ping URLs embed a secret check id; show only scheme and host in messages."""
    match = re.match(r"([a-z]+://[^/]+)", url)
    return f"{match.group(1)}/..." if match else "(url)"


METRICS = (
    ("lockrun_last_start_timestamp_seconds", "gauge", "When this server last started the job."),
    ("lockrun_last_end_timestamp_seconds", "gauge", "When the job last ended on this server."),
    ("lockrun_last_exit_code", "gauge", "Exit status of the last run on this server."),
    ("lockrun_last_duration_seconds", "gauge", "Duration of the last run on this server."),
    ("lockrun_runs_total", "counter", "Fires this server ran."),
    ("lockrun_skips_total", "counter", "Fires this server skipped (another server ran them)."),
    ("lockrun_redis_errors_total", "counter", "Invocations that found Redis unusable."),
)


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.3f}"


class UnsafeFile(Exception):
    """A metrics path lockrun must not write through; the message says what to fix."""


def _unsafe_directory(st: os.stat_result) -> str | None:
    """Why another user could redirect our writes in this directory, or None if none can.

    Whoever may rename entries in DIR may swap a name for a symlink between our
    checks and our writes, and a root lockrun would then write where they
    chose. Only root and the user lockrun runs as may own DIR; group and others
    may write only with the sticky bit, which stops them renaming our files.
    """
    import stat

    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not by root or by the user lockrun runs as"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return "writable by group or others without the sticky bit"
    return None


class MetricsFile:
    """``DIR/lockrun_<key>.prom`` for node_exporter's textfile collector, replaced atomically.

    Every path lockrun opens in DIR is opened relative to one directory handle
    and never through a symlink; the temporary file gets a random name and
    O_EXCL. The read-modify-write of the counters holds an flock on
    ``DIR/.lockrun_<key>.prom.lock``, so concurrent lockruns of one key on one
    host never lose an increment.
    """

    def __init__(self, directory: str, key: str) -> None:
        self.directory = directory
        self.name = f"lockrun_{key}.prom"
        self.path = os.path.join(directory, self.name)
        self.key = key

    def record(self, **changes: float) -> str | None:
        """Set gauges and add to counters (names without the lockrun_ prefix).

        Returns None when written, else the warning to print.
        """
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot write metrics file {self.path}: {exc.strerror}"
        try:
            problem = _unsafe_directory(os.fstat(dir_fd))
            if problem:
                return f"not writing metrics file {self.path}: {self.directory} is {problem}"
            lock_fd = self._lock(dir_fd)
            try:
                self._update(dir_fd, changes)
            finally:
                os.close(lock_fd)  # closing the only descriptor releases the flock
        except UnsafeFile as exc:
            return f"not writing metrics file {self.path}: {exc}"
        except OSError as exc:
            return f"cannot write metrics file {self.path}: {exc.strerror or exc}"
        finally:
            os.close(dir_fd)
        return None

    def _lock(self, dir_fd: int) -> int:
        """An exclusive flock on the lock file beside the textfile, waited for within a bound."""
        import fcntl

        fd = _open_regular(f".{self.name}.lock", os.O_RDONLY | os.O_CREAT, dir_fd)
        deadline = time.monotonic() + METRICS_LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise UnsafeFile(f"another lockrun held its lock for "
                                     f"{METRICS_LOCK_WAIT:g}s") from None
                time.sleep(0.01)  # flock has no timeout; a blocking wait could hang the end

    def _read(self, dir_fd: int) -> dict[str, float]:
        values: dict[str, float] = {}
        try:
            fd = _open_regular(self.name, os.O_RDONLY, dir_fd)
        except (OSError, UnsafeFile):
            return values  # missing or not ours: start the counters again
        with os.fdopen(fd, "rb") as f:
            data = f.read(METRICS_MAX_BYTES + 1)
        if len(data) > METRICS_MAX_BYTES:
            return values
        for line in data.decode("utf-8", "replace").splitlines():
            match = re.match(r"(lockrun_\w+)\{[^}]*\} (\S+)$", line.strip())
            if match:
                try:
                    values[match.group(1)] = float(match.group(2))
                except ValueError:
                    pass
        return values

    def _update(self, dir_fd: int, changes: dict[str, float]) -> None:
        import secrets

        values = self._read(dir_fd)
        for short, amount in changes.items():
            name = f"lockrun_{short}"
            values[name] = values.get(name, 0.0) + amount if name.endswith("_total") else amount
        lines = []
        for name, kind, text in METRICS:
            value = values.get(name, 0.0 if kind == "counter" else None)
            if value is None:  # a gauge never set must be absent, not a reassuring 0
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            lines.append(f'{name}{{key="{self.key}"}} {_number(value)}')
        temp = f".{self.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(temp, self.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise


def _open_regular(name: str, flags: int, dir_fd: int) -> int:
    """Open *name* in the directory, refusing symlinks, FIFOs and devices without blocking."""
    import stat

    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644,
                 dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        os.close(fd)
        raise UnsafeFile(f"{name} is not a regular file owned by root or by lockrun's user")
    os.set_blocking(fd, True)
    return fd


def _never_fatal(method: Callable[..., None]) -> Callable[..., None]:
    """A monitoring failure is reported as a warning; it must not change the job's status."""

    @functools.wraps(method)
    def guarded(self: Hooks, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:  # noqa: BLE001 - any bug here must stay a warning
            self.warnings.warn(f"monitoring hook {method.__name__} failed: "
                               f"{type(exc).__name__}: {exc}")

    return guarded


class Hooks:
    """Everything monitoring needs at each decision; does nothing when nothing is configured.

    ``started`` is called right after the job has been spawned and returns at
    once: the lease is being renewed by the caller's loop, which a slow
    endpoint, a slow DNS answer or a busy metrics lock must never hold up.
    ``finished`` is called after the end is recorded in Redis; it waits for
    the start work and the final ping, each within a fixed bound.
    """

    def __init__(self, key: str, ping_url: str | None, metrics_dir: str | None,
                 out: Reporter) -> None:
        self.key = key
        self.ping_url = ping_url
        self.out = out
        self.warnings = Warnings(out)
        self.metrics = MetricsFile(metrics_dir, key) if metrics_dir else None
        self.pinger: Pinger | None = None
        self.started_at = 0.0
        self._start_thread: threading.Thread | None = None
        self._start_cancelled = threading.Event()

    @_never_fatal
    def started(self, owner: str) -> None:
        """The job has just been spawned on this server."""
        self.started_at = time.time()
        if self.ping_url:
            import uuid

            run_id = str(uuid.UUID(hex=owner[:32])) if len(owner) >= 32 else str(uuid.uuid4())
            self.pinger = Pinger(self.ping_url, run_id)
        self._start_thread = _background(self._start_work, "start", self.warnings)

    def _start_work(self) -> None:
        if self.metrics:
            self._warn(self.metrics.record(last_start_timestamp_seconds=self.started_at))
        if self.pinger:
            self._warn(self.pinger.start(self._start_cancelled))

    @_never_fatal
    def finished(self, exit_code: int) -> None:
        end = time.time()
        if self._start_thread is not None:
            self._start_thread.join(START_WAIT)
            self._start_cancelled.set()  # a /start retry now would arrive after the end
        if self.metrics:
            duration = end - self.started_at if self.started_at else 0.0
            self._warn(self.metrics.record(last_end_timestamp_seconds=end,
                                           last_exit_code=exit_code,
                                           last_duration_seconds=duration, runs_total=1))
        if self.pinger:
            pinger = self.pinger
            final = _background(lambda: self._warn(pinger.finish(exit_code)), "final ping",
                                self.warnings)
            final.join(FINAL_PING_WAIT)
            if final.is_alive():
                self._warn(f"ping {_hide_path(pinger.url)} failed: no answer within "
                           f"{FINAL_PING_WAIT:g}s")
        self.warnings.close()

    @_never_fatal
    def skipped(self) -> None:
        if self.metrics:
            self._warn(self.metrics.record(skips_total=1))

    @_never_fatal
    def redis_unusable(self) -> None:
        if self.metrics:
            self._warn(self.metrics.record(redis_errors_total=1))

    def _warn(self, message: str | None) -> None:
        if message:
            self.warnings.warn(message)


def _background(work: Callable[[], None], name: str, warnings: Warnings) -> threading.Thread:
    """A daemon thread, so a hung ping never keeps lockrun alive after its last word."""

    def guarded() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - a thread's traceback would land in cron mail
            warnings.warn(f"monitoring thread {name} failed: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread
