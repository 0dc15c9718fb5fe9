"""The wait loop of a fire that runs: forward signals, renew the lease, enforce --timeout,
reap the job's whole tree, and record its end.

lockrun.runner decides whether this server runs the fire; lockrun.process
holds the child itself (spawn, process group, tree kill, terminal).
"""

from __future__ import annotations

import os
import time

from lockrun.errors import LockrunError, PossibleDuplicate, RedisUnavailable
from lockrun.exitcodes import ExitCode, from_wait_status
from lockrun.process import Child
from lockrun.protocol import host_name
from lockrun.startup import long_lived
from lockrun.state import KeptEnd, outage_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Protocol

    from lockrun.capture import Capture
    from lockrun.config import Config
    from lockrun.notify import Notifier
    from lockrun.output import Reporter
    from lockrun.protocol import Lease, Released
    from lockrun.signals import SignalInbox
    from lockrun.state import HostState

    class JobHooks(Protocol):
        """What the loop tells monitoring (lockrun.monitor.Hooks, or nothing at all)."""

        def started(self, owner: str) -> None: ...

        def finished(self, exit_code: int, body: bytes = b"", retrying: bool = False) -> None: ...

        def slow(self) -> None: ...
else:
    import _signal as signal  # see lockrun.signals

FINISH_WAIT_MAX = 2.0
"""--capture: how long the end waits for the output's last bytes (at most ttl/6, so the
release still comes well within the lease), lest a pipe held open outside the job's tree
keep the claim waiting."""

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})


def give_back(lease: Lease, cfg: Config, out: Reporter, reason: str) -> None:
    """Leave the fire unclaimed, not done, so another server or a later tick can run it."""
    try:
        lease.abandon(reason)
    except RedisUnavailable as exc:
        out.error(f"{exc}; could not give back fire {cfg.fire} of {cfg.key}: other servers "
                  f"skip it until its claim expires within {cfg.ttl:g}s")


def release(lease: Lease, cfg: Config, out: Reporter, code: int, outcome: str,
            state: HostState, retry_ms: int = 0, prefer_ms: int = 0,
            left_ms: int = -1) -> Released | None:
    """Record the end (or the retry ticket); None when Redis could not say what it recorded."""
    try:
        released = lease.release(cfg.retention_ms(time.time()), code, outcome, retry_ms,
                                 prefer_ms, left_ms)
    except PossibleDuplicate as exc:  # recorded, but maybe not where the next server looks
        out.error(str(exc))
        return None
    except RedisUnavailable as exc:
        _end_not_recorded(lease, cfg, out, code, outcome, state, exc)
        return None
    if not released.ok:
        out.error(f"lease on {cfg.key} fire {cfg.fire} was lost before the job ended; "
                  "another server may have run this fire too")
    else:
        state.redis_ok()
    return released


def _end_not_recorded(lease: Lease, cfg: Config, out: Reporter, code: int, outcome: str,
                      state: HostState, exc: RedisUnavailable) -> None:
    """Keep the end for the next lockrun that reaches Redis (a retry ticket is not kept:
    the fire ends as this attempt did), and say so once per outage."""
    say = state.redis_failed(end=kept_end(lease, cfg, code, outcome))
    if state.kept:
        text = (f"{exc}; could not record the end of fire {cfg.fire} of {cfg.key} yet: "
                f"kept in {state.directory} until Redis answers again")
    else:
        text = (f"{exc}; could not record the end of fire {cfg.fire} of {cfg.key}: "
                f"its claim expires within {cfg.ttl:g}s")
    line = outage_line(state, say, text)
    if line:
        out.error(line)


def kept_end(lease: Lease, cfg: Config, code: int, outcome: str) -> KeptEnd:
    """What the done record and the history need, to be written once Redis answers."""
    now = time.time()
    return KeptEnd(prefix=lease.prefix, key=cfg.key, fire=cfg.fire, owner=lease.owner,
                   host=lease.host, fence=lease.fence, guard=lease.guard, exit_code=int(code),
                   outcome=outcome, ended_at=now, retention_s=cfg.retention_ms(now) / 1000)


class Supervisor:
    """The wait loop: forward signals, renew the lease, enforce --timeout, reap."""

    def __init__(self, cfg: Config, out: Reporter, inbox: SignalInbox, lease: Lease | None,
                 acquired_at: float, hooks: JobHooks, state: HostState) -> None:
        self.cfg = cfg
        self.state = state
        self.hooks = hooks
        self.out = out
        self.inbox = inbox
        self.lease = lease
        self.interval = cfg.ttl / 3
        self.retry_interval = max(0.1, min(1.0, cfg.ttl / 10))
        self.lease_deadline = acquired_at + cfg.ttl
        self.next_renew = acquired_at + self.interval
        self.lost = False
        self.renew_failing = False
        self.timed_out = False
        self.kill_at: float | None = None
        self.cleaning = False
        self.warned = False
        """--warn-after has been said (once per run)."""
        self.cancelled_by = ""
        """Who asked for the job to stop (lockrun cancel, or a fire that replaces it)."""
        self.stopped = False
        """A stop signal was forwarded: the job was told to end, so no retry follows."""
        self.attempts_run = 0
        self.capture: Capture | None = None
        """--capture: the tee of the attempt that runs or ran last."""
        self.tail = b""
        """--capture: the last attempt's output tail, for the final ping and notification."""
        self.ran_for: float | None = None
        """How long the last attempt ran, for its notification."""

    def run(self, program: str, env: dict[str, str]) -> int:
        cfg = self.cfg
        kept = _Kept() if cfg.quiet_unless_failed else None
        try:
            code = self._run(program, env, kept)
        finally:
            if self.capture is not None:
                self.capture.drain()  # the lease is released: a slow stdout takes the rest
            if kept is not None:
                kept.close()
        return code

    def _run(self, program: str, env: dict[str, str], kept: _Kept | None) -> int:
        cfg = self.cfg
        code = self._attempt(program, env, kept)
        while self._retry_here(code):
            code = self._attempt(program, env, kept)
        outcome = ("timeout" if self.timed_out else "cancelled" if self.cancelled_by
                   else "exited")
        released = None
        if self.lease is not None and self.lost:
            self._record_lost_end(code)
        elif self.lease is not None:
            released = self._release(code, outcome)
        retrying = released is not None and released.retry_due_ms > 0
        # an attempt another server will retry needs no one yet: mail only the fire's end
        if kept is not None and code != 0 and not retrying:
            kept.show()  # before lockrun's own line, as the job printed it
        if cfg.mail_on_failure and code != 0 and not self.timed_out and not retrying:
            # cron mails output only: a job that fails silently would go unnoticed
            # (a timeout said so itself)
            self.out.error(f"{cfg.key} fire {cfg.fire} failed on {host_name()} with "
                           f"exit status {code}")
        if released is not None and released.retry_due_ms:
            due = time.strftime("%H:%M:%SZ", time.gmtime(released.retry_due_ms / 1000))
            self.out.info(f"{cfg.key} fire {cfg.fire} attempt {self.lease_attempt()} failed; "
                          f"a later tick of any server may retry it from {due}")
        notifier = self._notify(code, outcome, released, env)  # the end is recorded: now
        self.hooks.finished(code, self.tail, retrying=retrying)
        if notifier is not None and (warning := notifier.finish()):
            self.out.warning(warning)
        return code

    def _notify(self, code: int, outcome: str, released: Released | None,
                env: dict[str, str]) -> Notifier | None:
        """--notify-*: which event this end is, decided once for the fleet by the server
        that ran the attempt (the release says whether the job had been failing)."""
        cfg = self.cfg
        if not (cfg.notify_url or cfg.notify_cmd):
            return None
        from lockrun.notify import Notification, Notifier

        before = released.failures_before if released is not None else 0
        attempt = self.lease_attempt()
        if self.lost:
            event, outcome = "lost", "lost"
        elif released is not None and released.retry_due_ms:
            event = "retry"
        elif code == 0:
            event = "recovery" if before else "success"
        elif cfg.retries and attempt > cfg.retries:
            event = "retries-exhausted"
        elif outcome == "timeout":
            event = "timeout"
        else:
            event = "failure"
        failures = before if code == 0 or event == "retry" else before + 1
        note = Notification(event=event, key=cfg.key, fire=cfg.fire, host=host_name(),
                            attempt=attempt, attempts=cfg.retries + 1, exit_code=code,
                            outcome=outcome, duration_s=self.ran_for, failures=failures,
                            output=self.tail)
        notifier = Notifier(cfg.notify_url, cfg.notify_format, cfg.notify_cmd, cfg.notify_on)
        return notifier if notifier.start(note, env) else None

    def lease_attempt(self) -> int:
        return self.lease.attempt if self.lease is not None else 1

    def _release(self, code: int, outcome: str) -> Released | None:
        """The end, or a retry ticket other servers may claim (--retries, not local)."""
        assert self.lease is not None
        cfg = self.cfg
        retry_ms = prefer_ms = 0
        left_ms = -1
        if (cfg.retries and not cfg.retry_local and self.lease.attempt <= cfg.retries
                and outcome != "cancelled" and cfg.retries_code(code)):
            retry_ms = int(cfg.retry_wait(self.lease.attempt) * 1000)
            prefer_ms = 0 if cfg.retry_anywhere else retry_ms
            deadline = cfg.retry_deadline()
            if deadline is not None:
                left_ms = max(0, int((deadline - time.time()) * 1000))
        return release(self.lease, cfg, self.out, code, outcome, self.state, retry_ms,
                       prefer_ms, left_ms)

    def _attempt(self, program: str, env: dict[str, str], kept: _Kept | None) -> int:
        """Run the job once, to the end of its whole tree; its exit status as lockrun's."""
        cfg = self.cfg
        self.timed_out = self.warned = self.cleaning = False
        self.kill_at = None
        capture = self._new_capture(kept)
        try:
            child = Child(cfg.command, program, env, capture.fds if capture is not None
                          else kept.fds if kept is not None else None)
        except LockrunError as exc:
            if capture is not None:
                capture.abandon()
                self.capture = None
            if self.attempts_run:  # an earlier attempt ran: this one failed to start
                self.out.error(f"{cfg.key} fire {cfg.fire}: {exc}")
                return ExitCode.NOT_EXECUTABLE
            # Nothing ran: give the fire back so a server that can run it does
            # (a missing interpreter on this host only, say), instead of
            # recording it done.
            if self.lease is not None:
                give_back(self.lease, cfg, self.out, f"cannot execute the command: {exc}")
            raise
        self.attempts_run += 1
        if capture is not None:
            capture.start()
        if child.unprotected:
            self.out.warning(f"{cfg.key}: " + "; ".join(child.unprotected))
        if self.attempts_run == 1:
            # After the spawn: the start ping and the metrics write may be slow, and
            # must never hold the job back while its lease ticks.
            self.hooks.started(self.lease.owner if self.lease else "")
            long_lived()
        started = time.monotonic()
        timeout_at = started + cfg.timeout if cfg.timeout is not None else None
        warn_at = started + cfg.warn_after if cfg.warn_after is not None else None
        while True:
            status = child.reap()
            for sig in self.inbox.take():
                if sig != signal.SIGCHLD:
                    child.forward(sig)
                    if sig in STOP_SIGNALS:  # as timeout(1): a stopped job must see it
                        self.stopped = True
                        child.forward(signal.SIGCONT)
            now = time.monotonic()
            if status is not None:
                if not child.leftovers():
                    break
                if not self.cleaning:
                    self.cleaning = True
                    self.out.warning(f"{cfg.key}: the job exited but left processes running; "
                                     "stopping them before releasing the lock")
                    self._stop(child, now)
            if timeout_at is not None and not self.timed_out and now >= timeout_at:
                self.timed_out = True
                self.out.error(f"{cfg.key} fire {cfg.fire} timed out after "
                               f"{cfg.timeout:g}s; stopping it")
                self._stop(child, now)
            if warn_at is not None and not self.warned and status is None and now >= warn_at:
                self._slow(now - started)
            if self.kill_at is not None and now >= self.kill_at:
                child.signal_tree(signal.SIGKILL)
                self.kill_at = None
            if self.lease is not None and not self.lost:
                self._keep_lease(child)
            self.inbox.wait(self._next_wake(timeout_at, None if self.warned else warn_at))
        child.restore_terminal()
        self.ran_for = time.monotonic() - started
        code = ExitCode.TIMEOUT if self.timed_out else from_wait_status(child.status or 0)
        if self.cancelled_by and not self.timed_out:
            code = ExitCode.CANCELLED  # whatever the job's own answer to SIGTERM was
        if capture is not None:  # kept beside the fire while the claim is still ours
            self.tail = self._keep_output(capture, int(code))
        return int(code)

    def _new_capture(self, kept: _Kept | None) -> Capture | None:
        """--capture: pipes in front of where the output goes (the memfds, or 1 and 2); a
        new tee for each attempt, once the previous one's bytes have gone on."""
        if not self.cfg.capture:
            return None
        from lockrun.capture import DRAIN_WAIT, Capture

        if self.capture is not None:  # between --retry-local attempts: bounded, like a renewal
            self.capture.drain(min(DRAIN_WAIT, self.cfg.ttl / 6))
        self.capture = Capture(self.cfg.capture, kept.fds if kept is not None else (1, 2))
        return self.capture

    def _retry_here(self, code: int) -> bool:
        """--retry-local: after a failed attempt, wait the delay holding the lease, then say
        whether to run again (not after a stop signal, a cancel, a lost lease, or past the
        grace)."""
        cfg, lease = self.cfg, self.lease
        if (not cfg.retry_local or lease is None or self.lost or self.cancelled_by
                or self.stopped or lease.attempt > cfg.retries or not cfg.retries_code(code)):
            return False
        wait = cfg.retry_wait(lease.attempt)
        deadline = cfg.retry_deadline()
        if deadline is not None and time.time() + wait > deadline:
            return False
        outcome = "timeout" if self.timed_out else "exited"
        try:
            lease.attempt_ended(code, outcome, int(wait * 1000))
        except RedisUnavailable:
            pass  # the renewals below say what Redis's trouble is; this is a note
        self.out.info(f"{cfg.key} fire {cfg.fire} attempt {lease.attempt} failed with exit "
                      f"status {code}; retrying here in {wait:g}s")
        until = time.monotonic() + wait
        while time.monotonic() < until:
            for sig in self.inbox.take():
                if sig in STOP_SIGNALS:
                    self.stopped = True
            if self.stopped:
                return False
            self._keep_lease(None)
            if self.lost or self.cancelled_by:
                return False
            self.inbox.wait(max(0.0, min(until, self.next_renew, self.lease_deadline)
                                - time.monotonic()))
        # The claim must be proven ours right before the next attempt starts, as before
        # the first (runner._still_ours): a delay shorter than ttl/3 saw no renewal.
        self.next_renew = time.monotonic()
        self._keep_lease(None)
        if self.lost or self.cancelled_by:
            return False
        if self.renew_failing:
            self.out.error(f"{cfg.key} fire {cfg.fire}: could not confirm the claim, so "
                           f"attempt {lease.attempt + 1} does not start")
            return False
        try:
            lease.attempt_started()
        except RedisUnavailable:
            pass  # counted here all the same; only the history misses this start
        self.timed_out = False
        return True

    def _keep_output(self, capture: Capture, code: int) -> bytes:
        """--capture: the tail, stored with the fire before the release (lockrun.capture)."""
        from lockrun.capture import store

        tail = capture.finish(min(FINISH_WAIT_MAX, self.cfg.ttl / 6))
        # one Redis call without a renewal: only while the lease outlives its timeout
        if (self.lease is not None and not self.lost
                and time.monotonic() + self.cfg.redis_timeout < self.lease_deadline):
            outcome = ("timeout" if self.timed_out else "cancelled" if self.cancelled_by
                       else "exited")
            store(self.lease, tail, code, outcome, self.cfg.retention_ms(time.time()))
        return tail.data

    def _record_lost_end(self, code: int) -> None:
        assert self.lease is not None
        try:
            self.lease.release(self.cfg.retention_ms(time.time()), code, "lost")
        except RedisUnavailable:  # the loss was already reported: keep the end, quietly
            self.state.redis_failed(end=kept_end(self.lease, self.cfg, code, "lost"))

    def _stop(self, child: Child, now: float) -> None:
        child.signal_tree(signal.SIGTERM)
        child.signal_tree(signal.SIGCONT)  # a stopped job must wake to see SIGTERM
        self.kill_at = now + self.cfg.kill_after

    def _keep_lease(self, child: Child | None) -> None:
        """Renew when due; *child* is None between two --retry-local attempts."""
        assert self.lease is not None
        now = time.monotonic()
        if now >= self.next_renew:
            try:
                renewed = self.lease.renew()
            except RedisUnavailable as exc:
                if not self.renew_failing:
                    line = outage_line(self.state, self.state.redis_failed(),
                                        f"{exc}; cannot renew the lease on {self.cfg.key}, "
                                        "retrying")
                    if line:
                        self.out.warning(line)
                self.renew_failing = True
                self.next_renew = now + self.retry_interval
            else:
                self.state.redis_ok()
                if renewed.ok:
                    self.renew_failing = False
                    self.lease_deadline = now + self.cfg.ttl
                    self.next_renew = now + self.interval
                    if renewed.cancel_by and not self.cancelled_by:
                        self._cancel(child, renewed.cancel_by)
                else:
                    self._lose(child, renewed.reason)
                    return
        if time.monotonic() >= self.lease_deadline:
            self._lose(child, f"no successful renewal within the {self.cfg.ttl:g}s ttl")

    def _slow(self, elapsed: float) -> None:
        """One line while the job keeps running, a 'slow' event beside its start in the
        history (one attempt, bounded by the Redis timeout like a renewal), and /log."""
        from lockrun.durations import format_duration, human_duration

        self.warned = True
        cfg = self.cfg
        self.out.warning(f"{cfg.key} fire {cfg.fire} has been running for "
                         f"{human_duration(elapsed)} on {host_name()} (--warn-after "
                         f"{format_duration(cfg.warn_after or 0)}); it keeps running")
        if self.lease is not None:
            try:
                self.lease.record_slow(round(elapsed * 1000))
            except RedisUnavailable:
                pass  # the renewals say what Redis's trouble is; this is only a note
        self.hooks.slow()

    def _cancel(self, child: Child | None, by: str) -> None:
        """Stop the job as --on-lost kill would: the lease stays ours until it ends, so the
        end is recorded (as 'cancelled') and nothing else starts meanwhile."""
        self.cancelled_by = by
        self.out.warning(f"{self.cfg.key} fire {self.cfg.fire} cancelled by {by}; stopping "
                         "the job")
        if child is not None and child.status is None:
            self._stop(child, time.monotonic())

    def _lose(self, child: Child | None, reason: str) -> None:
        self.lost = True
        where = f"lost the lease on {self.cfg.key} fire {self.cfg.fire} ({reason})"
        if child is None:
            self.out.error(f"{where}; not retrying it")
        elif self.cfg.on_lost == "kill" and child.status is None:
            self.out.error(f"{where}; stopping the job (--on-lost kill)")
            self._stop(child, time.monotonic())
        else:
            self.out.error(f"{where}; the job keeps running without a lock (--on-lost warn)")

    def _next_wake(self, timeout_at: float | None, warn_at: float | None = None) -> float:
        candidates = [t for t in (timeout_at if not self.timed_out else None, self.kill_at,
                                  warn_at) if t is not None]
        if self.lease is not None and not self.lost:
            candidates += [self.next_renew, self.lease_deadline]
        if self.cleaning:
            candidates.append(time.monotonic() + 0.05)  # group members don't SIGCHLD us
        if not candidates:
            return 60.0
        return max(0.0, min(candidates) - time.monotonic())


class _Kept:
    """--quiet-unless-failed: the job's stdout and stderr go to two anonymous in-memory
    files (memfd): no pipe to drain, so the wait loop stays as it is and a job that
    prints a lot cannot block on a full pipe; no disk either, because they are made
    after the claim, where nothing may block without renewing the lease. On failure
    they are copied to lockrun's own stdout and stderr, each as the job wrote it; on
    success they vanish with the descriptors."""

    def __init__(self) -> None:
        self.fds = (_memory_file("lockrun-stdout"), _memory_file("lockrun-stderr"))

    def show(self) -> None:
        import sys

        for fd, stream in zip(self.fds, (sys.stdout, sys.stderr), strict=True):
            try:
                stream.flush()
                os.lseek(fd, 0, os.SEEK_SET)
                while chunk := os.read(fd, 65536):
                    os.write(stream.fileno(), chunk)
            except (OSError, ValueError):
                pass  # a closed stdout must not change the exit status

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _memory_file(name: str) -> int:
    """memfd_create(2) where the system has it; elsewhere an unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())
