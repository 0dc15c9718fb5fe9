"""``DIR/lockrun_<key>.prom``: this server's metrics for node_exporter's textfile collector.

Written by root on many hosts, in a directory other users may reach, by
several lockruns of one key at once: so every path is opened relative to one
checked directory handle, never through a symlink, and each update holds an
flock so no counter increment is lost.
"""

from __future__ import annotations

import os
import re
import time

METRICS_LOCK_WAIT = 2.0
"""How long a metrics update waits for another lockrun of the same key on this host."""
METRICS_MAX_BYTES = 64 * 1024
"""lockrun's own file is under 2 KiB; anything much larger is not ours to parse."""


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
        replace_file(dir_fd, self.name, "\n".join(lines) + "\n")


def replace_file(dir_fd: int, name: str, text: str) -> None:
    """Write *name* in the directory atomically, so node_exporter never reads half a file:
    a temporary file with a random name, created with O_EXCL and never through a
    symlink, then renamed over the old one (by lockrun.check's fleet file too)."""
    import secrets

    temp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
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
