"""--capture: the tail of the job's output, kept with its fire and sent with the final ping.

The job's stdout and stderr become the write ends of two pipes; a daemon
thread per pipe writes every byte on to where the output went before
(lockrun's own stdout and stderr, or --quiet-unless-failed's memfds) and
keeps the last SIZE bytes of both, interleaved in arrival order. Threads,
not the wait loop: the loop renews the lease and must never block on a full
stdout, while a reader that blocks on a slow stdout only holds the job's own
writes back, as without lockrun. Only the server that runs a fire with
--capture imports this module.

After the job's end, the tail is written beside the fire (``PREFIX:{KEY}:out:FIRE``,
one set of fields per attempt) by one script, before the release, while the
claim is still ours; ``lockrun logs`` reads it from any server.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

from lockrun.errors import RedisUnavailable
from lockrun.lua import Script
from lockrun.protocol import job_keys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lockrun.client import LockClient
    from lockrun.protocol import Lease

FINISH_WAIT = 2.0
"""How long the end waits for the pipes' last bytes once the job's tree is reaped. Normally
the readers see end-of-file at once; a process outside the tree that holds the pipe (a
descriptor passed to a daemon) would otherwise keep lockrun, and its claim, waiting."""
DRAIN_WAIT = 10.0
"""After the release: how long lockrun still waits for a reader that is writing what it
read to a slow stdout, so the job's last bytes are not lost when lockrun exits."""
READ_SIZE = 65536


@dataclass
class Tail:
    """The last bytes of the job's output, and how many came before them."""

    data: bytes
    dropped: int


class Capture:
    """Two pipes in place of the job's stdout and stderr, and their readers."""

    def __init__(self, size: int, sinks: tuple[int, int]) -> None:
        """*sinks*: where the output went before (fds 1 and 2, or the memfds)."""
        self.size = size
        self._chunks: deque[bytes] = deque()
        self._kept = 0
        self._dropped = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._writing = [False, False]
        """Which reader is forwarding bytes (not waiting for the pipe): worth waiting for."""
        self._threads: list[threading.Thread] = []
        reads, writes = [], []
        for _ in range(2):
            r, w = os.pipe()
            reads.append(r)
            writes.append(w)
        self.fds: tuple[int, int] = (writes[0], writes[1])
        """The write ends, for the job (lockrun.process.Child dups them to 1 and 2)."""
        self._reads = reads
        # our own copies: --quiet-unless-failed closes its memfds while a reader that
        # outlived FINISH_WAIT may still write
        self._sinks = [os.dup(sinks[0]), os.dup(sinks[1])]

    def start(self) -> None:
        """Close our write ends (the job holds its copies) and start reading.

        Called after the fork: a process that forks while other threads run can
        deadlock in the child (Python warns), and the job's first 64 KiB wait in
        the pipe meanwhile.
        """
        for fd in self.fds:
            os.close(fd)
        for index in range(2):
            thread = threading.Thread(target=self._pump, args=(index,), daemon=True,
                                      name=("stdout", "stderr")[index] + " capture")
            thread.start()
            self._threads.append(thread)

    def abandon(self) -> None:
        """The job never started: close everything."""
        for fd in (*self.fds, *self._reads, *self._sinks):
            try:
                os.close(fd)
            except OSError:
                pass

    def _pump(self, index: int) -> None:
        source, sink = self._reads[index], self._sinks[index]
        try:
            while True:
                try:
                    chunk = os.read(source, READ_SIZE)
                except OSError:
                    break
                if not chunk:
                    break
                self._keep(chunk, index, writing=True)
                if sink >= 0 and not _write_all(sink, chunk):
                    # lockrun's own stdout is closed: go on reading, so the job neither
                    # blocks nor dies of SIGPIPE for it
                    os.close(sink)
                    sink = -1
                with self._changed:
                    self._writing[index] = False
                    self._changed.notify_all()
        finally:
            os.close(source)
            if sink >= 0:
                os.close(sink)
            with self._changed:
                self._writing[index] = False
                self._changed.notify_all()

    def _keep(self, chunk: bytes, index: int, writing: bool) -> None:
        """Append *chunk* to the tail, dropping from the front beyond the size."""
        with self._changed:
            self._writing[index] = writing
            self._chunks.append(chunk)
            self._kept += len(chunk)
            while self._kept > self.size:
                excess = self._kept - self.size
                first = self._chunks[0]
                if len(first) <= excess:
                    self._chunks.popleft()
                    cut = len(first)
                else:
                    self._chunks[0] = first[excess:]
                    cut = excess
                self._kept -= cut
                self._dropped += cut

    def finish(self, wait: float = FINISH_WAIT) -> Tail:
        """The tail, once both pipes reached end-of-file or *wait* seconds have passed."""
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return Tail(b"".join(self._chunks), self._dropped)

    def drain(self, wait: float = DRAIN_WAIT) -> None:
        """Before lockrun exits: let a reader finish writing what it read (a slow stdout),
        but never wait for a pipe that someone outside the job's tree keeps open."""
        deadline = time.monotonic() + wait
        with self._changed:
            while any(t.is_alive() and self._writing[i] for i, t in enumerate(self._threads)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, 0.1))


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of *data*; False once *fd* cannot take it (closed, broken pipe)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # a stdout someone set O_NONBLOCK on: wait, as a job would
            import select

            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return False
        view = view[written:]
    return True


# The tail of one attempt, beside the fire: only while the fire's record is still
# ours (the release has not run yet), so a server that lost the claim never writes
# over the output of the one that holds it. The attempt number is the fire's own
# (a retry that claims the fire sets it; absent means 1). The hash expires with the
# done record; the job's hash names the last fire with output, and the last whose
# attempt failed, for `lockrun logs --last/--failed`.
STORE = Script(("fire_key", "out_key", "job_key"),
               ("owner", "fire", "host", "exit", "outcome", "dropped", "out", "enc",
                "retention_ms"), """
local h = redis.call('HMGET', fire_key, 'owner', 'attempt')
if h[1] ~= owner then
  return {0}
end
local t = redis.call('TIME')
local end_ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local n = tonumber(h[2] or '1') or 1
local a = tostring(n)
redis.call('HSET', out_key, 'out:' .. a, out, 'enc:' .. a, enc, 'host:' .. a, host,
  'exit:' .. a, exit, 'outcome:' .. a, outcome, 'end_ms:' .. a, end_ms,
  'dropped:' .. a, dropped)
if n > (tonumber(redis.call('HGET', out_key, 'attempts') or '0') or 0) then
  redis.call('HSET', out_key, 'attempts', a)
end
redis.call('PEXPIRE', out_key, retention_ms)
redis.call('HSET', job_key, 'last_output_fire', fire)
if exit ~= '0' or outcome ~= 'exited' then
  redis.call('HSET', job_key, 'last_failed_output_fire', fire)
end
return {n}
""")


def encode(data: bytes) -> tuple[str, str]:
    """(text, encoding) to store: UTF-8 as it is (readable with redis-cli), other bytes as
    base64, because both Redis transports hand replies back as text."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def decode(text: str, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8", errors="surrogateescape")


def store(lease: Lease, tail: Tail, exit_code: int, outcome: str, retention_ms: int) -> None:
    """Write the attempt's tail (one attempt, bounded by the Redis timeout, like
    record_slow); a Redis failure keeps nothing and says nothing of its own: the
    release, next, reports it."""
    text, encoding = encode(tail.data)
    k = job_keys(lease.key, lease.fire, lease.prefix)
    try:
        lease.client.call(STORE.source, *STORE.bind(
            {"fire_key": k["fire"], "out_key": k["out"], "job_key": k["job"]},
            owner=lease.owner, fire=lease.fire, host=lease.host, exit=int(exit_code),
            outcome=outcome, dropped=tail.dropped, out=text, enc=encoding,
            retention_ms=retention_ms))
    except RedisUnavailable:
        pass


@dataclass
class Attempt:
    """One attempt's kept output, as `lockrun logs` shows it."""

    number: int
    host: str
    exit: int | None
    outcome: str
    end_ms: int | None
    dropped: int
    output: bytes


def read_output(client: LockClient, key: str, fire: str, prefix: str) -> list[Attempt]:
    """Every kept attempt of *fire*, oldest first ([] if nothing is kept)."""
    fields = client.hgetall(job_keys(key, fire, prefix)["out"])
    attempts = []
    for n in range(1, min(_number(fields.get("attempts")), 1000) + 1):
        if f"out:{n}" not in fields:
            continue  # an attempt that ran without --capture, or whose write failed
        attempts.append(Attempt(
            number=n, host=fields.get(f"host:{n}", ""), exit=_maybe(fields.get(f"exit:{n}")),
            outcome=fields.get(f"outcome:{n}", ""), end_ms=_maybe(fields.get(f"end_ms:{n}")),
            dropped=_number(fields.get(f"dropped:{n}")),
            output=decode(fields[f"out:{n}"], fields.get(f"enc:{n}", "utf-8"))))
    return attempts


def _maybe(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _number(text: str | None) -> int:
    return _maybe(text) or 0
