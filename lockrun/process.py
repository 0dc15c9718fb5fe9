"""Starting, signalling, reaping and stopping the job's process tree.

lockrun stays single-threaded: signal handlers only record the signal and
wake the loop through a self-pipe (``signal.set_wakeup_fd``); the loop that
waits on the child is also the one that renews the lease, so a renewal can
never die silently on a thread nobody watches.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeAlias

from lockrun.errors import CommandNotExecutable, CommandNotFound

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

MAX_PENDING = 16
"""At most this many signals wait for the loop: a storm cannot grow the inbox."""

_Handler: TypeAlias = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def resolve_command(argv: Sequence[str], env: dict[str, str]) -> str:
    """Find the program before any lock is taken, so a typo costs no fire.

    Exit codes follow the shell: 127 not found, 126 found but not executable.
    """
    program = argv[0]
    if "/" in program:
        if not os.path.exists(program):
            raise CommandNotFound(f"{program}: command not found")
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise CommandNotExecutable(f"{program}: permission denied")
        _check_interpreter(program, program)
        return program
    found = _which(program, env.get("PATH", os.defpath), os.X_OK)
    if found is None:
        if _which(program, env.get("PATH", os.defpath), os.F_OK):
            raise CommandNotExecutable(f"{program}: permission denied")
        raise CommandNotFound(f"{program}: command not found")
    _check_interpreter(program, found)
    return found


def _which(program: str, path: str, mode: int) -> str | None:
    """shutil.which's search (first match on PATH, an empty entry is the current
    directory, directories skipped), without importing shutil on every fire."""
    if not path:
        return None  # as shutil.which: an empty PATH finds nothing
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, program)
        if os.access(candidate, mode) and not os.path.isdir(candidate):
            return candidate
    return None


def _check_interpreter(name: str, path: str) -> None:
    """A script whose ``#!`` interpreter is missing fails like a missing command (127).

    Found now, before the claim, it costs no fire; exec would find it only after
    the claim, when the fire must be given back. Only an absolute interpreter
    path is checked, as the kernel needs one; an unreadable script is left to exec.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    if not words or not words[0].startswith(b"/"):
        return
    interpreter = os.fsdecode(words[0])
    if not os.path.exists(interpreter):
        raise CommandNotFound(f"{name}: bad interpreter {interpreter}: no such file")
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        raise CommandNotExecutable(f"{name}: bad interpreter {interpreter}: permission denied")


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl(2), loaded once in lockrun itself so the forked child never dlopens."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return function


def _libc_prctl(option: int, arg: int) -> int:
    """prctl(2): 0 when it took effect, else the errno; 0 off Linux, where it does not exist."""
    prctl = _prctl()
    if prctl is None:
        return 0
    import ctypes

    if prctl(option, arg, 0, 0, 0) != -1:
        return 0
    return ctypes.get_errno() or errno.EINVAL


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


class Child:
    """The job: its own process group, started with a parent-death signal."""

    def __init__(self, argv: Sequence[str], program: str, env: dict[str, str]) -> None:
        self.foreground_tty = _foreground_tty()
        self.unprotected: list[str] = []
        """What could not be set up around the job, one phrase each, for one warning."""
        failed = _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1)
        if failed:
            self.unprotected.append(
                f"cannot become a child subreaper ({os.strerror(failed)}): processes the job "
                "daemonizes may outlive --timeout, --on-lost kill and its end")
        parent = os.getpid()
        tty = self.foreground_tty
        report_r, report_w = os.pipe()

        def prepare() -> None:  # runs in the forked child, before exec
            os.setpgid(0, 0)
            if _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL):
                # The job still runs: refusing would cost a claimed fire for a safety
                # net that only matters if lockrun is SIGKILLed. The child has no
                # stderr of lockrun's to speak on, so it tells the parent through the
                # pipe (read once Popen returns, i.e. after the exec).
                os.write(report_w, b"p")
            if os.getppid() != parent:  # lockrun died before prctl took effect
                os._exit(signal.SIGKILL + 128)
            if tty is not None:
                _give_terminal(tty, os.getpgrp())

        import subprocess  # only a fire that runs the job pays for it

        try:
            self.proc = subprocess.Popen(
                list(argv), executable=program, env=env, preexec_fn=prepare, close_fds=True
            )
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]}: command not found") from None
        except PermissionError:
            raise CommandNotExecutable(f"{argv[0]}: permission denied") from None
        except OSError as exc:
            if exc.errno in (errno.ENOEXEC, errno.EACCES, errno.EISDIR):
                raise CommandNotExecutable(f"{argv[0]}: {exc.strerror}") from None
            raise
        finally:
            os.close(report_w)
            os.set_blocking(report_r, False)
            try:
                no_pdeathsig = os.read(report_r, 1) == b"p"
            except BlockingIOError:
                no_pdeathsig = False
            os.close(report_r)
        if no_pdeathsig:
            self.unprotected.append(
                "cannot set the job's parent-death signal: if lockrun is killed with "
                "SIGKILL, the job keeps running")
        self.pid = self.proc.pid
        self.pgid = self.pid
        self.status: int | None = None

    def reap(self) -> int | None:
        """Collect every exited descendant (we are their subreaper); return the job's status.

        A job that stopped is followed at once (see ``_follow_stop``), so the loop
        that calls this needs no notion of job control.
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid != self.pid:
                continue  # an orphan we adopted: reaped (or stopped), nothing to report
            if os.WIFSTOPPED(status):
                self._follow_stop(os.WSTOPSIG(status))
                continue
            self.status = status
            self.proc.returncode = status  # keep Popen from reaping it again
        return self.status

    def _follow_stop(self, sig: int) -> None:
        """The job stopped (Ctrl-Z): on a manual run, stop with it, as sudo and su do.

        The shell waits for lockrun, not for the job in its own group, so lockrun
        must stop too for the shell to print "Stopped" and give its prompt back.
        This returns once lockrun runs again: ``fg`` (lockrun's group holds the
        terminal: hand it to the job) or ``bg`` (leave it to the shell); the job
        is continued either way. While stopped, lockrun cannot renew: the caller's
        next renewal, due by then, renews the lease or reports it lost. Without a
        terminal (cron) nobody could type ``fg``: the job is left as it is.
        """
        tty = self.foreground_tty
        if tty is None:
            return
        own = os.getpgrp()
        if _terminal_owner(tty) in (own, self.pgid):  # never take it from the shell (bg)
            _give_terminal(tty, own)
        stop = signal.SIGSTOP if sig == signal.SIGSTOP else signal.SIGTSTP
        previous = signal.signal(signal.SIGTSTP, signal.SIG_DFL)  # in case it was ignored
        try:
            # The whole group, as the terminal's Ctrl-Z would have stopped it (a
            # pipeline's other commands too); the kernel stops lockrun before
            # killpg returns, and discards SIGTSTP for an orphaned group, where
            # no shell could continue it, so the job then runs on at once.
            os.killpg(own, stop)
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGTSTP, previous)
        if _terminal_owner(tty) == own:
            _give_terminal(tty, self.pgid)
        self.forward(signal.SIGCONT)

    def forward(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def leftovers(self) -> bool:
        """Whether anything the job started is still alive (in its group or below us)."""
        try:
            os.killpg(self.pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            pass
        return bool(_own_children())

    def signal_tree(self, sig: int) -> None:
        """Signal the job's group and every descendant, including those that left the group."""
        self.forward(sig)
        import psutil

        try:
            descendants = psutil.Process().children(recursive=True)
        except psutil.Error:
            descendants = []
        for proc in descendants:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def restore_terminal(self) -> None:
        """Take the terminal's foreground back after the job ends."""
        if self.foreground_tty is not None:
            _give_terminal(self.foreground_tty, os.getpgrp())


def _terminal_owner(tty: int) -> int | None:
    """The terminal's foreground process group, or None if it cannot be read."""
    try:
        return os.tcgetpgrp(tty)
    except OSError:
        return None


def _give_terminal(tty: int, pgrp: int) -> None:
    """Make *pgrp* the terminal's foreground; SIGTTOU ignored, or a background caller stops."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, pgrp)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _foreground_tty() -> int | None:
    """stdin's terminal, if lockrun runs in its foreground (a manual run, not cron)."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def _own_children() -> list[int]:
    """Children of this process, read from /proc without importing psutil."""
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        import psutil

        pids = [p.pid for p in psutil.Process().children()]
    return pids
