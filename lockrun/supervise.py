"""Starting, signalling, reaping and stopping the job's process tree.

lockrun stays single-threaded: signal handlers only record the signal and
wake the loop through a self-pipe (``signal.set_wakeup_fd``); the loop that
waits on the child is also the one that renews the lease, so a renewal can
never die silently on a thread nobody watches.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence

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
        return program
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        if shutil.which(program, mode=os.F_OK, path=env.get("PATH", os.defpath)):
            raise CommandNotExecutable(f"{program}: permission denied")
        raise CommandNotFound(f"{program}: command not found")
    return found


def _libc_prctl(option: int, arg: int) -> None:
    """prctl(2) through ctypes; silently unavailable off Linux."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, arg, 0, 0, 0)


class SignalInbox:
    """Records signals for the main loop; the handlers themselves do nothing else."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.set_blocking(self._read_fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._record)
        # SIGCHLD must have a handler (not SIG_DFL) so its arrival writes to the pipe.
        signal.signal(signal.SIGCHLD, self._ignore)

    def _record(self, signum: int, _frame: object) -> None:
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
        for sig in (*FORWARDED_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._read_fd)
        os.close(self._write_fd)


class Child:
    """The job: its own process group, started with a parent-death signal."""

    def __init__(self, argv: Sequence[str], program: str, env: dict[str, str]) -> None:
        self.foreground_tty = _foreground_tty()
        _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1)
        parent = os.getpid()
        tty = self.foreground_tty

        def prepare() -> None:  # runs in the forked child, before exec
            os.setpgid(0, 0)
            _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # lockrun died before prctl took effect
                os._exit(signal.SIGKILL + 128)
            if tty is not None:
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(tty, os.getpgrp())
                signal.signal(signal.SIGTTOU, signal.SIG_DFL)

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
        self.pid = self.proc.pid
        self.pgid = self.pid
        self.status: int | None = None

    def reap(self) -> int | None:
        """Collect every exited descendant (we are their subreaper); return the job's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == self.pid:
                self.status = status
                self.proc.returncode = status  # keep Popen from reaping it again
        return self.status

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
        if self.foreground_tty is None:
            return
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(self.foreground_tty, os.getpgrp())
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
