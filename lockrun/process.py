"""Starting, signalling, reaping and stopping the job's process tree.

Only the server that runs the fire imports this (lockrun.supervisor); the
signals it waits on are recorded by lockrun.signals.
"""

from __future__ import annotations

import errno
import os
import sys

from lockrun.errors import CommandNotExecutable, CommandNotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Sequence
else:
    import _signal as signal  # see lockrun.signals

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_prctl_cache: list[Callable[..., int] | None] = []


def _prctl() -> Callable[..., int] | None:
    """libc's prctl(2), loaded once in lockrun itself so the forked child never dlopens."""
    if not _prctl_cache:
        function: Callable[..., int] | None = None
        if sys.platform.startswith("linux"):
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).prctl
        _prctl_cache.append(function)
    return _prctl_cache[0]


def _libc_prctl(option: int, arg: int) -> int:
    """prctl(2): 0 when it took effect, else the errno; 0 off Linux, where it does not exist."""
    prctl = _prctl()
    if prctl is None:
        return 0
    import ctypes

    if prctl(option, arg, 0, 0, 0) != -1:
        return 0
    return ctypes.get_errno() or errno.EINVAL


class Child:
    """The job: its own process group, started with a parent-death signal."""

    def __init__(self, argv: Sequence[str], program: str, env: dict[str, str],
                 output: tuple[int, int] | None = None) -> None:
        """*output*: descriptors that become the job's stdout and stderr (None: lockrun's
        own, inherited)."""
        self.foreground_tty = _foreground_tty()
        self.unprotected: list[str] = []
        """What could not be set up around the job, one phrase each, for one warning."""
        failed = _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1)
        if failed:
            self.unprotected.append(
                f"cannot become a child subreaper ({os.strerror(failed)}): processes the job "
                "daemonizes may outlive --timeout, --on-lost kill and its end")
        self.pid, no_pdeathsig, exec_errno = _spawn(list(argv), program, env,
                                                    self.foreground_tty, output)
        if exec_errno is not None:
            if exec_errno == errno.ENOENT:
                raise CommandNotFound(f"{argv[0]}: command not found")
            if exec_errno == errno.EACCES:
                raise CommandNotExecutable(f"{argv[0]}: permission denied")
            if exec_errno in (errno.ENOEXEC, errno.EISDIR):
                raise CommandNotExecutable(f"{argv[0]}: {os.strerror(exec_errno)}")
            raise OSError(exec_errno, f"cannot start {argv[0]}: {os.strerror(exec_errno)}")
        if no_pdeathsig:
            self.unprotected.append(
                "cannot set the job's parent-death signal: if lockrun is killed with "
                "SIGKILL, the job keeps running")
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


def _spawn(argv: list[str], program: str, env: dict[str, str], tty: int | None,
           output: tuple[int, int] | None = None) -> tuple[int, bool, int | None]:
    """fork and exec the job: (pid, parent-death signal missing, exec's errno or None).

    What subprocess.Popen(preexec_fn=..., close_fds=True) does, without importing
    subprocess (and threading, selectors...) on every run: in the child, a
    process group of its own, the parent-death signal, the terminal's
    foreground for a manual run, SIGPIPE and SIGXFSZ back to their defaults
    (Python ignores them), every descriptor but 0-2 closed, then exec. The
    child reports through a close-on-exec pipe, so reading it to its end
    waits exactly until the exec happened or failed, and says which.
    """
    parent = os.getpid()
    report_r, report_w = os.pipe()  # close-on-exec, as every descriptor Python makes
    pid = os.fork()
    if pid == 0:  # the child: no Python exception may escape this block
        try:
            os.close(report_r)
            os.setpgid(0, 0)
            if _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL):
                # The job still runs: refusing would cost a claimed fire for a safety
                # net that only matters if lockrun is SIGKILLed. The child has no
                # stderr of lockrun's to speak on, so it tells the parent.
                os.write(report_w, b"p")
            if os.getppid() != parent:  # lockrun died before prctl took effect
                os._exit(signal.SIGKILL + 128)
            if tty is not None:
                _give_terminal(tty, os.getpgrp())
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            if output is not None:
                os.dup2(output[0], 1)
                os.dup2(output[1], 2)
            os.closerange(3, report_w)
            os.closerange(report_w + 1, _max_fd())
            os.execve(program, argv, env)  # noqa: S606 - the job's own argv, as Popen ran it
        except OSError as exc:
            os.write(report_w, b"e%d" % (exc.errno or errno.EINVAL))
        except BaseException:  # noqa: BLE001 - nothing of lockrun's may run twice
            os.write(report_w, b"e%d" % errno.EINVAL)
        finally:
            os._exit(127)
    os.close(report_w)
    report = b""
    while True:
        chunk = os.read(report_r, 64)
        if not chunk:
            break
        report += chunk
    os.close(report_r)
    no_pdeathsig = report.startswith(b"p")
    report = report.removeprefix(b"p")
    if report.startswith(b"e"):
        os.waitpid(pid, 0)  # it exited at once: reap it, as Popen does
        return pid, no_pdeathsig, int(report[1:] or errno.EINVAL)
    return pid, no_pdeathsig, None


def _max_fd() -> int:
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 256)
    except (OSError, ValueError):
        return 65536


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
