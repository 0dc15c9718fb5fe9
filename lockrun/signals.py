"""Signals recorded for the main loop, as gunicorn's arbiter does: handlers only note them.

lockrun stays single-threaded: the handlers record the signal and wake the loop
through a self-pipe (``signal.set_wakeup_fd``); the loop that waits on the child
is also the one that renews the lease, so a renewal can never die silently on a
thread nobody watches. The inbox is open from before the claim, so a stop
signal between the claim and the job's start gives the fire back instead of
killing lockrun with the claim held.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from types import FrameType
    from typing import TypeAlias

    _Handler: TypeAlias = Callable[[int, FrameType | None], object] | int | signal.Handlers | None
else:
    # The C module under signal.py: the same functions and numbers, without the enum
    # classes signal.py builds at import (about 4 ms of CPU, on every fire).
    import _signal as signal

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

MAX_PENDING = 16
"""At most this many signals wait for the loop: a storm cannot grow the inbox."""


def signal_name(sig: int) -> str:
    """SIGTERM for 15: what signal.Signals(sig).name says, for messages."""
    for name in dir(signal):
        if name.startswith("SIG") and not name.startswith("SIG_") \
                and getattr(signal, name) == sig and name not in ("SIGIOT", "SIGCLD", "SIGPOLL"):
            return name
    return f"signal {sig}"


class SignalInbox:
    """Records signals for the main loop; the handlers themselves do nothing else.

    The handlers in place before are put back on close, not SIG_DFL: a Python
    program or a test that runs lockrun in its own process keeps its own.
    """

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.set_blocking(self._read_fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous: dict[int, _Handler] = {}
        for sig in FORWARDED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        # SIGCHLD must have a handler (not SIG_DFL) so its arrival writes to the pipe.
        self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._ignore)

    def _record(self, signum: int, _frame: object) -> None:
        # A signal already pending adds nothing (the kernel does not queue standard
        # signals either), so the list holds each kind at most once, in order of
        # first arrival: pending[0], the signal that stops a job before its start,
        # is never displaced, and a storm cannot grow the list.
        if signum not in self.pending and len(self.pending) < MAX_PENDING:
            self.pending.append(signum)

    def _ignore(self, _signum: int, _frame: object) -> None:
        return None

    def take(self) -> list[int]:
        taken, self.pending = self.pending, []
        return taken

    def wait(self, timeout: float | None) -> None:
        """Sleep until a signal arrives or *timeout* seconds pass."""
        if timeout is not None and timeout <= 0:
            self._drain()
            return
        if self.pending:
            return
        import select  # only a fire that waits (jitter, a running job) pays for it

        try:
            select.select([self._read_fd], [], [], timeout)
        except InterruptedError:
            pass
        self._drain()

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for sig, previous in self._previous.items():
            # None: a handler set outside Python, which Python cannot put back.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._read_fd)
        os.close(self._write_fd)
