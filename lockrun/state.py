"""What one server remembers between invocations, so cron mails an operator once.

Every crontab line is a separate lockrun process. Without memory, a Redis
outage makes each line on each server print its error every minute (one mail
each), and a job that ends while Redis is down loses its exit status. Here,
per user and per Redis address, the first failure creates an outage file and
says so; later failures append the fire they could not run (and any job end
they could not record) and stay quiet, except for one reminder per hour; the
first lockrun that reaches that Redis again takes the file, records the kept
ends and says, once, how long it lasted and what this server did not run.

Nothing here may change an exit status: a state directory that cannot be
created or written just means every failure is reported, as if there were no
memory at all.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

REMINDER_EVERY = 3600.0
"""While an outage lasts, one reminder per this many seconds per server and user."""

MISSED_BYTES_MAX = 256 * 1024
"""Past this size an outage file stops listing missed fires (it only counts them); the
ends it keeps are never dropped."""

SHOWN_FIRES = 10
"""Fires named in the recovery line; the rest are counted."""


def default_dir() -> str:
    """Root: /var/lib/lockrun. Others: the XDG state home, else a private dir in /var/tmp.

    Under cron a user's HOME may be /nonexistent or root-owned (nobody,
    www-data); /var/tmp survives reboots like the other two, and the
    directory is checked to be the user's own before it is used.
    """
    uid = os.geteuid()
    if uid == 0:
        return "/var/lib/lockrun"
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "lockrun")
    home = os.environ.get("HOME", "")
    if home.startswith("/"):
        try:
            st = os.stat(home)
        except OSError:
            pass
        else:
            if st.st_uid == uid and os.access(home, os.W_OK | os.X_OK):
                return os.path.join(home, ".local", "state", "lockrun")
    return f"/var/tmp/lockrun-{uid}"  # noqa: S108 - owner, type and mode checked before use


def redis_slug(url: str) -> str:
    """A file-name-safe name for one Redis address: scheme, hosts and db, no credentials."""
    scheme, sep, rest = url.partition("://")
    rest = rest.rpartition("@")[2] if sep else url
    rest = rest.split("?", 1)[0]
    text = f"{scheme}_{rest}" if sep else rest
    return "".join(c if c in _SLUG_CHARS else "_" for c in text[:150])


_SLUG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class KeptEnd:
    """A job end that could not be recorded in Redis, with what its record needs."""

    __slots__ = ("ended_at", "exit_code", "fence", "fire", "guard", "host", "key", "outcome",
                 "owner", "prefix", "retention_s")

    def __init__(self, *, prefix: str, key: str, fire: str, owner: str, host: str, fence: int,
                 guard: bool, exit_code: int, outcome: str, ended_at: float,
                 retention_s: float) -> None:
        self.prefix: Final = prefix
        self.key: Final = key
        self.fire: Final = fire
        self.owner: Final = owner
        self.host: Final = host
        self.fence: Final = fence
        self.guard: Final = guard
        self.exit_code: Final = exit_code
        self.outcome: Final = outcome
        self.ended_at: Final = ended_at
        self.retention_s: Final = retention_s

    def to_json(self) -> dict[str, object]:
        return {"prefix": self.prefix, "key": self.key, "fire": self.fire, "owner": self.owner,
                "host": self.host, "fence": self.fence, "guard": self.guard, "exit": self.exit_code,
                "outcome": self.outcome, "ended_at": self.ended_at,
                "retention_s": self.retention_s}

    @classmethod
    def from_json(cls, data: object) -> KeptEnd | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(prefix=str(data["prefix"]), key=str(data["key"]),
                       fire=str(data["fire"]), owner=str(data["owner"]),
                       host=str(data["host"]), fence=int(data["fence"]),
                       guard=bool(data["guard"]), exit_code=int(data["exit"]),
                       outcome=str(data["outcome"]), ended_at=float(data["ended_at"]),
                       retention_s=float(data["retention_s"]))
        except (KeyError, TypeError, ValueError):
            return None


class Outage:
    """An outage file taken over by the lockrun that reached Redis again."""

    __slots__ = ("ends", "missed", "missed_uncounted", "since")

    def __init__(self, since: float, missed_uncounted: bool = False) -> None:
        self.since = since
        self.missed: list[tuple[str, str]] = []
        self.missed_uncounted = missed_uncounted
        self.ends: list[KeptEnd] = []


class HostState:
    """One user's memory on this server for one Redis address.

    *directory* None means no usable directory: every call then reports
    "say it" and keeps nothing.
    """

    def __init__(self, directory: str | None, redis_url: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, redis_slug(redis_url) + ".outage") \
            if directory else None
        self.last_ok = False
        """Redis answered this invocation's latest call: it may announce a recovery."""
        self.kept = False
        """The last failure's line (a missed fire, a job's end) is in the outage file."""
        self.problem = ""
        """Why the directory could not be used, for the one line that is printed anyway."""

    # ---------------------------------------------------------------- failures

    def redis_failed(self, missed: tuple[str, str] | None = None,
                     end: KeptEnd | None = None) -> str | None:
        """Remember a failure; return what to say ('first', 'reminder') or None for silence."""
        self.last_ok = False
        self.kept = False
        if self.path is None or not self._ensure_dir():
            return "first"
        line = _record(missed, end)
        for _ in range(3):  # the file may be taken by a recovery between two steps
            if self._create(line):
                self.kept = True
                return "first"
            if self.problem:
                return "first"
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.problem = f"cannot write {self.path}: {exc.strerror}"
                return "first"
            try:
                if not self._still_current(fd):
                    continue  # taken by a recovery since we opened it: this is a new outage
                if end is not None or os.fstat(fd).st_size < MISSED_BYTES_MAX:
                    os.write(fd, line)  # O_APPEND: concurrent lines never overwrite
                    self.kept = True
            except OSError as exc:
                self.problem = f"cannot write {self.path}: {exc.strerror}"
                return "first"
            finally:
                os.close(fd)  # releases the lock
            return "reminder" if self._reminder_due() else None
        return "first"

    def _still_current(self, fd: int) -> bool:
        """Lock the opened outage file; True if it is still the one at our path.

        A recovery renames the file, then reads it under the same lock: a line
        written while we hold the lock and the file is still in place is read;
        once it has been taken, the line belongs in a new outage file, or a
        kept job end would be lost with the taken one.
        """
        import fcntl

        assert self.path is not None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _create(self, line: bytes) -> bool:
        """Make the outage file with its start time first, atomically (link fails if present)."""
        assert self.path is not None and self.directory is not None
        tmp = os.path.join(self.directory, f".new-{os.getpid()}-{time.monotonic_ns()}")
        header = b'{"since": %.3f}\n' % time.time()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, header + line)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            return True
        except OSError as exc:
            self.problem = f"cannot write in {self.directory}: {exc.strerror}"
            return False
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _reminder_due(self) -> bool:
        """One reminder per hour of outage: the first to create that hour's marker says it."""
        assert self.path is not None
        since = self._since()
        if since is None:
            return False
        hour = int((time.time() - since) // REMINDER_EVERY)
        if hour < 1:
            return False
        try:
            os.close(os.open(f"{self.path}.h{hour}", os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW, 0o600))
        except OSError:
            return False
        return True

    def _since(self) -> float | None:
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                first = f.readline(200)
        except OSError:
            return None
        import re  # only while an outage lasts

        match = re.match(rb'\{"since": ([0-9.]+)\}', first)
        return float(match.group(1)) if match else None

    def since(self) -> float | None:
        """When the outage this server is in began, if it is in one."""
        return self._since() if self.path else None

    def _ensure_dir(self) -> bool:
        """Create the directory 0700 on first use; use it only if it is ours and private."""
        assert self.directory is not None
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            st = os.lstat(self.directory)
        except OSError as exc:
            self.problem = f"cannot create {self.directory}: {exc.strerror}"
            return False
        import stat

        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            # /var/tmp is shared: a directory someone else made (or a symlink) is a trap
            self.problem = (f"{self.directory} is not a private directory of uid "
                            f"{os.geteuid()}")
            return False
        return True

    # ---------------------------------------------------------------- notices

    def notice_first(self, topic: str) -> bool:
        """True for the first report of a standing problem (a broken syslog sink) on this
        server and user; later invocations stay quiet until notice_clear."""
        if self.directory is None or not self._ensure_dir():
            return True
        try:
            os.close(os.open(os.path.join(self.directory, f"notice-{topic}"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            return False
        except OSError:
            return True
        return True

    def notice_clear(self, topic: str) -> None:
        """The problem is gone: the next occurrence is news again."""
        if self.directory is not None:
            self._remove(os.path.join(self.directory, f"notice-{topic}"))

    # ---------------------------------------------------------------- recovery

    def redis_ok(self) -> None:
        """Redis answered: a recovery may be announced at the end of this invocation."""
        self.last_ok = True

    def take_outage(self) -> Outage | None:
        """After Redis answered: take the outage file if there is one (only one process can).

        The common case costs one failed rename (no outage file); the rename also
        decides which of several processes reaching Redis at once reports the
        recovery.
        """
        if self.path is None or not self.last_ok:
            return None
        taken = f"{self.path}.taken-{os.getpid()}"
        try:
            os.rename(self.path, taken)
        except OSError:
            return None  # no outage (the common case), or another process took it
        import fcntl

        try:
            with open(taken, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # a line being appended is finished first
                data = f.read()
                self._remove(taken)
        except OSError:
            data = b""
            self._remove(taken)
        self._remove_reminders()
        return _parse(data)

    def _remove_reminders(self) -> None:
        assert self.path is not None and self.directory is not None
        prefix = os.path.basename(self.path) + ".h"
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix):
                self._remove(os.path.join(self.directory, name))

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass


def _record(missed: tuple[str, str] | None, end: KeptEnd | None) -> bytes:
    import json

    if end is not None:
        return json.dumps({"end": end.to_json()}).encode() + b"\n"
    if missed is not None:
        return json.dumps({"missed": list(missed)}).encode() + b"\n"
    return b""


def _parse(data: bytes) -> Outage:
    import json

    outage = Outage(since=time.time(), missed_uncounted=len(data) >= MISSED_BYTES_MAX)
    for raw in data.splitlines():
        try:
            item = json.loads(raw)
        except ValueError:
            continue  # a line cut short by a crash: the rest still counts
        if not isinstance(item, dict):
            continue
        if "since" in item and isinstance(item["since"], (int, float)):
            outage.since = min(outage.since, float(item["since"]))
        elif "missed" in item and isinstance(item["missed"], list) and len(item["missed"]) == 2:
            pair = (str(item["missed"][0]), str(item["missed"][1]))
            if pair not in outage.missed:
                outage.missed.append(pair)
        elif "end" in item:
            end = KeptEnd.from_json(item["end"])
            if end is not None:
                outage.ends.append(end)
    return outage


def outage_line(state: HostState, say: str | None, text: str) -> str | None:
    """The line for a Redis failure: the first of an outage, an hourly reminder, or none.

    cron mails every line, and during an outage every crontab line of every
    server fails each minute: one line per server and user says it, the rest
    stay quiet until Redis answers again (then one line says what was missed).
    """
    if say is None:
        return None
    if say == "reminder":
        from lockrun.durations import human_duration

        since = state.since()
        ago = human_duration(time.time() - since) if since is not None else "an hour"
        return f"{text} (still failing: first failure on this server {ago} ago)"
    if state.problem:
        return f"{text} (every failure is reported: {state.problem})"
    if state.path is None:
        return text
    return f"{text} (further failures on this server stay quiet until Redis is back)"
