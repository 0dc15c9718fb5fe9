"""One invocation of the wrapper: acquire the fire, supervise the job, record its end."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import TYPE_CHECKING

from lockrun.client import LockClient
from lockrun.config import Config
from lockrun.errors import LockrunError, PossibleDuplicate, RedisUnavailable
from lockrun.exitcodes import ExitCode, from_wait_status
from lockrun.output import Reporter
from lockrun.protocol import Acquired, Lease, new_owner
from lockrun.startup import long_lived
from lockrun.state import SHOWN_FIRES, HostState, KeptEnd
from lockrun.supervise import Child, SignalInbox, resolve_command

if TYPE_CHECKING:
    from lockrun.monitor import Hooks
    from lockrun.schedule import Slot

CHILD_ENV = ("LOCKRUN_KEY", "LOCKRUN_FIRE", "LOCKRUN_FENCE", "LOCKRUN_OWNER")
SECRET_ENV = ("LOCKRUN_REDIS_PASSWORD",)
"""lockrun's own secrets: never handed to the job and everything it starts."""
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})


def child_environment(cfg: Config) -> dict[str, str]:
    """The job's environment: ours, minus lockrun's secrets, plus the fire's identity."""
    from lockrun.output import redact

    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV and k not in SECRET_ENV}
    _undo_locale_coercion(env)
    url = env.get("LOCKRUN_REDIS_URL")
    if url is not None and redact(url) != url:
        del env["LOCKRUN_REDIS_URL"]  # it carries a password
    env["LOCKRUN_KEY"] = cfg.key
    env["LOCKRUN_FIRE"] = cfg.fire
    return env


def _undo_locale_coercion(env: dict[str, str]) -> None:
    """Give the job the LC_CTYPE lockrun was started with, not the one Python set.

    Under cron's C locale CPython exports LC_CTYPE=C.UTF-8 at start-up (PEP 538),
    so grep, sort and friends would behave differently inside lockrun than
    without it; a drop-in prefix must not change the job's locale. The kernel
    keeps the environment lockrun was executed with in /proc/self/environ.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            initial = f.read()
    except OSError:
        return  # not Linux: nothing to compare against
    name = b"LC_CTYPE="
    found = [item for item in initial.split(b"\0") if item.startswith(name)]
    if found:
        env["LC_CTYPE"] = os.fsdecode(found[-1][len(name):])
    else:
        env.pop("LC_CTYPE", None)


def run(cfg: Config, out: Reporter) -> int:
    """Return the exit status for the whole invocation (see exitcodes.ExitCode)."""
    hooks = _hooks(cfg, out)
    env = child_environment(cfg)
    program = resolve_command(cfg.command, env)
    client = LockClient(cfg.redis_url, cfg.redis_timeout, cfg.error_exit_code,
                        cfg.redis_password, cfg.tls)
    state = host_state(cfg)
    out.notices = state
    if cfg.slot is not None and time.time() - cfg.slot.fire > cfg.grace:
        try:
            return _too_late(cfg, out, cfg.slot, client, hooks, state)
        finally:
            _recover(cfg, out, client, state)
            client.close()
    inbox = SignalInbox()
    try:
        if cfg.jitter > 0:
            delay = cfg.jitter * int.from_bytes(os.urandom(4), "big") / 2**32
            out.info(f"waiting {delay:.1f}s of jitter before acquiring fire {cfg.fire}")
            deadline = time.monotonic() + delay
            while not inbox.pending and time.monotonic() < deadline:
                inbox.wait(deadline - time.monotonic())
            if inbox.pending:
                return ExitCode.SIGNAL_BASE + inbox.pending[0]
        lease = _lease(cfg, client, guard=cfg.overlap == "skip")
        # The lease runs from the moment the request leaves, not from the reply:
        # Redis may have set the key's expiry up to a whole round trip earlier.
        claimed_at = time.monotonic()
        sent = time.time()
        try:
            acq = lease.acquire()
        except RedisUnavailable as exc:
            if exc.reply_lost:  # first: every other server skips until it is back
                _try_give_back(lease, "the reply to the claim was lost")
            hooks.redis_unusable()
            return _redis_down(cfg, out, exc, program, env, inbox, hooks, state)
        state.redis_ok()
        _check_clock(cfg, out, (sent + time.time()) / 2 - acq.server_ms / 1000,
                     time.monotonic() - claimed_at)
        if not acq.won:
            out.info(_skip_reason(cfg, acq))
            hooks.skipped()
            return cfg.skip_exit_code
        out.info(f"acquired {cfg.key} fire {cfg.fire} (fence {acq.fence})")
        if cfg.wait_replicas and not _replicated(cfg, out, lease):
            hooks.redis_unusable()
            return cfg.error_exit_code
        env["LOCKRUN_FENCE"] = str(acq.fence)
        env["LOCKRUN_OWNER"] = lease.owner
        if inbox.pending:  # told to stop before the job could start
            sig = inbox.pending[0]
            _give_back(lease, cfg, out, f"stop signal {signal.Signals(sig).name} before the "
                                        "job started")
            return ExitCode.SIGNAL_BASE + sig
        lease_from = _still_ours(cfg, out, lease, claimed_at, state)
        if lease_from is None:
            hooks.redis_unusable()
            return cfg.error_exit_code
        return Supervisor(cfg, out, inbox, lease, lease_from, hooks, state).run(program, env)
    finally:
        inbox.close()
        _recover(cfg, out, client, state)
        client.close()


def host_state(cfg: Config) -> HostState:
    """This user's memory on this server; --state-dir '' turns it off."""
    from lockrun.state import default_dir

    directory = cfg.state_dir if cfg.state_dir is not None else default_dir()
    return HostState(directory or None, cfg.redis_url)


def _outage_line(state: HostState, say: str | None, text: str) -> str | None:
    """The line for a Redis failure: the first of an outage, an hourly reminder, or none.

    cron mails every line, and during an outage every crontab line of every
    server fails each minute: one line per server and user says it, the rest
    stay quiet until Redis answers again (then one line says what was missed).
    """
    if say is None:
        return None
    if say == "reminder":
        since = state.since()
        ago = _human(time.time() - since) if since is not None else "an hour"
        return f"{text} (still failing: first failure on this server {ago} ago)"
    if state.problem:
        return f"{text} (every failure is reported: {state.problem})"
    if state.path is None:
        return text
    return f"{text} (further failures on this server stay quiet until Redis is back)"


def _human(seconds: float) -> str:
    """4m10s, 2h5m, 3d1h: two units are enough to read an outage's length."""
    s = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts[:2])


def _recover(cfg: Config, out: Reporter, client: LockClient, state: HostState) -> None:
    """Redis answered this invocation: if this server was in an outage, close it, once.

    Records the job ends kept meanwhile, then says in one line how long Redis
    was unusable and which fires this server did not run.
    """
    if not state.last_ok:
        return
    outage = state.take_outage()
    if outage is None:
        return
    from lockrun.output import redact
    from lockrun.protocol import record_kept_end

    recorded = still_kept = 0
    for end in outage.ends:
        try:
            if record_kept_end(client, end) != "already":  # else its own release got there
                recorded += 1
        except RedisUnavailable:
            state.redis_failed(end=end)  # kept for the next lockrun that reaches Redis
            still_kept += 1
    names = [f"{key} {fire}" for key, fire in outage.missed[:SHOWN_FIRES]]
    more = len(outage.missed) - len(names)
    if outage.missed:
        what = (f"this server did not run {len(outage.missed)} "
                f"fire{'s' if len(outage.missed) != 1 else ''} meanwhile: " + ", ".join(names)
                + (f" and {more} more" if more else "")
                + (" (and more not listed)" if outage.missed_uncounted else ""))
    else:
        what = "this server missed no fire meanwhile"
    if recorded:
        what += (f"; recorded the end of {recorded} job{'s' if recorded != 1 else ''} that "
                 "finished meanwhile")
    if still_kept:
        what += f"; {still_kept} job end(s) could not be recorded yet and are kept"
    out.error(f"Redis at {redact(cfg.redis_url)} is usable again after "
              f"{_human(time.time() - outage.since)}; {what}")


def _still_ours(cfg: Config, out: Reporter, lease: Lease, claimed_at: float,
                state: HostState) -> float | None:
    """Right before the job starts: is the claim still ours, with most of its ttl left?

    Nothing between the claim and this point may block past the Redis timeout
    (and --wait-timeout), and the CLI refuses settings where those do not fit
    in ttl/3. This check makes the rule hold even when a step ran slower than
    its bound (a stopped process, a loaded machine): past ttl/3, a renewal
    proves the claim is still ours before the job is started. Returns the
    moment the lease is counted from, or None when the job must not start.
    """
    if time.monotonic() - claimed_at < cfg.ttl / 3:
        return claimed_at
    renew_sent = time.monotonic()
    try:
        renewed = lease.renew()
    except RedisUnavailable as exc:
        line = _outage_line(state, state.redis_failed(missed=(cfg.key, cfg.fire)),
                            f"{exc}; cannot confirm the claim on {cfg.key} fire {cfg.fire} "
                            "before starting the job, not running it")
        if line:
            out.error(line)
        _try_give_back(lease, "claim not confirmed before the start")  # said once, above
        return None
    if not renewed.ok:
        out.error(f"lost the claim on {cfg.key} fire {cfg.fire} before the job started "
                  f"({renewed.reason}); not running it")
        return None
    return renew_sent


def _give_back(lease: Lease, cfg: Config, out: Reporter, reason: str) -> None:
    """Leave the fire unclaimed, not done, so another server or a later tick can run it."""
    try:
        lease.abandon(reason)
    except RedisUnavailable as exc:
        out.error(f"{exc}; could not give back fire {cfg.fire} of {cfg.key}: other servers "
                  f"skip it until its claim expires within {cfg.ttl:g}s")


def _try_give_back(lease: Lease, reason: str) -> None:
    """Give back a claim Redis just failed to confirm, saying nothing if that fails too.

    After an acquire whose reply was lost (a timeout), the script may have
    claimed the fire; left alone, that claim makes every other server skip
    for a whole ttl while this one does not run the job, and the fire runs
    nowhere. The give-back compares the owner, so it removes only our own
    claim, and it runs on a new connection (the failed one was closed). The
    caller has already printed its one line about Redis.
    """
    try:
        lease.abandon(reason)
    except RedisUnavailable:
        pass


class NoHooks:
    """Neither --ping-url nor --metrics-dir: nothing to tell, and monitor.py stays unimported."""

    def started(self, owner: str) -> None:
        pass

    def finished(self, exit_code: int) -> None:
        pass

    def skipped(self) -> None:
        pass

    def redis_unusable(self) -> None:
        pass


def _hooks(cfg: Config, out: Reporter) -> Hooks | NoHooks:
    if not (cfg.ping_url or cfg.metrics_dir):
        return NoHooks()
    from lockrun.monitor import Hooks

    return Hooks(cfg.key, cfg.ping_url, cfg.metrics_dir, out)


def _lease(cfg: Config, client: LockClient, guard: bool) -> Lease:
    return Lease(client, cfg.key, cfg.fire, cfg.ttl_ms, guard, new_owner(), socket.gethostname(),
                 cfg.key_prefix)


def _too_late(cfg: Config, out: Reporter, slot: Slot, client: LockClient,
              hooks: Hooks | NoHooks, state: HostState) -> int:
    """Past the grace, this tick must not start the fire; the first to notice records it.

    A fire that ran nowhere needs an operator, so the one server that records
    the miss says so in one line (cron mails it once, fleet-wide); every other
    late server finds the record and stays silent.
    """
    late = time.time() - slot.fire
    out.info(f"skipped {cfg.key} fire {cfg.fire}: too late ({late:.0f}s after the scheduled "
             f"time, --grace {cfg.grace:g}s)")
    lease = _lease(cfg, client, guard=False)
    try:
        if lease.record_miss(cfg.retention_ms(time.time()), round(late * 1000)):
            out.error(f"fire {cfg.fire} of {cfg.key} ran nowhere: no server started it "
                      f"within --grace {cfg.grace:g}s (this one came {late:.0f}s after the "
                      "scheduled time)")
    except RedisUnavailable as exc:
        hooks.redis_unusable()
        line = _outage_line(state, state.redis_failed(missed=(cfg.key, cfg.fire)),
                            f"{exc}; fire {cfg.fire} of {cfg.key} is past its grace, not "
                            "running it")
        if line:
            out.error(line)
        return exc.exit_code if cfg.on_redis_error == "fail" else cfg.skip_exit_code
    state.redis_ok()
    hooks.skipped()
    return cfg.skip_exit_code


def _replicated(cfg: Config, out: Reporter, lease: Lease) -> bool:
    """--wait-replicas: a claim only the primary holds dies with it in a failover."""
    try:
        acked = lease.wait_replicas(cfg.wait_replicas, int(cfg.wait_timeout * 1000))
    except RedisUnavailable as exc:
        acked, detail = -1, str(exc)
    else:
        detail = f"{acked} of {cfg.wait_replicas} replicas acknowledged the claim of fire " \
                 f"{cfg.fire} within {cfg.wait_timeout:g}s"
    if acked >= cfg.wait_replicas:
        out.info(detail)
        return True
    if not cfg.strict_replicas:
        out.warning(f"{detail}; running {cfg.key} anyway (a failover now could lose the claim)")
        return True
    out.error(f"{detail}; not running {cfg.key} (--strict-replicas)")
    _give_back(lease, cfg, out, "too few replicas")
    return False


def _check_clock(cfg: Config, out: Reporter, skew: float, round_trip: float) -> None:
    """Fire ids come from the local clock, so a drifting one must be fixed (NTP), loudly.

    Redis's time is read somewhere inside the round trip, so the estimate is only
    good to half of it: a slow reply on a loaded server must not look like a
    skewed clock.
    """
    if cfg.max_skew > 0 and abs(skew) - round_trip / 2 > cfg.max_skew:
        direction = "ahead of" if skew > 0 else "behind"
        out.warning(f"this server's clock is {abs(skew):.1f}s {direction} the Redis server's "
                    f"(--max-skew {cfg.max_skew:g}s): fix NTP on {socket.gethostname()}")


def _skip_reason(cfg: Config, acq: Acquired) -> str:
    where = f"{cfg.key} fire {cfg.fire}"
    if acq.status == "done":
        return f"skipped {where}: already done by {acq.holder_host} (fence {acq.fence})"
    if acq.status == "overlap":
        return (f"skipped {where}: fire {acq.holder_detail} is still running on "
                f"{acq.holder_host} (fence {acq.fence})")
    return f"skipped {where}: held by {acq.holder_host} (fence {acq.fence})"


def _redis_down(cfg: Config, out: Reporter, exc: RedisUnavailable, program: str,
                env: dict[str, str], inbox: SignalInbox, hooks: Hooks | NoHooks,
                state: HostState) -> int:
    """Apply --on-redis-error; every policy says so on stderr (once per outage and server,
    because cron mails it)."""
    runs = cfg.on_redis_error == "run"
    say = state.redis_failed(missed=None if runs else (cfg.key, cfg.fire))
    if cfg.on_redis_error == "skip":
        text = f"{exc}; skipping fire {cfg.fire} of {cfg.key} (--on-redis-error skip)"
    elif runs:
        text = f"{exc}; running {cfg.key} WITHOUT a lock (--on-redis-error run)"
    else:
        text = f"{exc}; not running {cfg.key}"
    line = _outage_line(state, say, text)
    if line:
        out.error(line)
    if cfg.on_redis_error == "skip":
        return cfg.skip_exit_code
    if runs:
        return Supervisor(cfg, out, inbox, None, time.monotonic(), hooks, state).run(program,
                                                                                     env)
    return exc.exit_code


def _release(lease: Lease, cfg: Config, out: Reporter, code: int, outcome: str,
             state: HostState) -> None:
    try:
        if not lease.release(cfg.retention_ms(time.time()), code, outcome):
            out.error(f"lease on {cfg.key} fire {cfg.fire} was lost before the job ended; "
                      "another server may have run this fire too")
        else:
            state.redis_ok()
    except PossibleDuplicate as exc:  # recorded, but maybe not where the next server looks
        out.error(str(exc))
    except RedisUnavailable as exc:
        say = state.redis_failed(end=_kept_end(lease, cfg, code, outcome))
        if state.kept:
            text = (f"{exc}; could not record the end of fire {cfg.fire} of {cfg.key} yet: "
                    f"kept in {state.directory} until Redis answers again")
        else:
            text = (f"{exc}; could not record the end of fire {cfg.fire} of {cfg.key}: "
                    f"its claim expires within {cfg.ttl:g}s")
        line = _outage_line(state, say, text)
        if line:
            out.error(line)


def _kept_end(lease: Lease, cfg: Config, code: int, outcome: str) -> KeptEnd:
    """What the done record and the history need, to be written once Redis answers."""
    now = time.time()
    return KeptEnd(lease.prefix, cfg.key, cfg.fire, lease.owner, lease.host, lease.fence,
                   lease.guard, int(code), outcome, now, cfg.retention_ms(now) / 1000)


class Supervisor:
    """The wait loop: forward signals, renew the lease, enforce --timeout, reap."""

    def __init__(self, cfg: Config, out: Reporter, inbox: SignalInbox, lease: Lease | None,
                 acquired_at: float, hooks: Hooks | NoHooks, state: HostState) -> None:
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

    def run(self, program: str, env: dict[str, str]) -> int:
        cfg = self.cfg
        try:
            child = Child(cfg.command, program, env)
        except LockrunError as exc:
            # Nothing ran: give the fire back so a server that can run it does
            # (a missing interpreter on this host only, say), instead of
            # recording it done.
            if self.lease is not None:
                _give_back(self.lease, cfg, self.out, f"cannot execute the command: {exc}")
            raise
        if child.unprotected:
            self.out.warning(f"{cfg.key}: " + "; ".join(child.unprotected))
        # After the spawn: the start ping and the metrics write may be slow, and
        # must never hold the job back while its lease ticks.
        self.hooks.started(self.lease.owner if self.lease else "")
        long_lived()
        started = time.monotonic()
        timeout_at = started + cfg.timeout if cfg.timeout is not None else None
        while True:
            status = child.reap()
            for sig in self.inbox.take():
                if sig != signal.SIGCHLD:
                    child.forward(sig)
                    if sig in STOP_SIGNALS:  # as timeout(1): a stopped job must see it
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
            if self.kill_at is not None and now >= self.kill_at:
                child.signal_tree(signal.SIGKILL)
                self.kill_at = None
            if self.lease is not None and not self.lost:
                self._keep_lease(child)
            self.inbox.wait(self._next_wake(timeout_at))
        child.restore_terminal()
        code = ExitCode.TIMEOUT if self.timed_out else from_wait_status(child.status or 0)
        if self.lease is not None and self.lost:
            self._record_lost_end(int(code))
        elif self.lease is not None:
            outcome = "timeout" if self.timed_out else "exited"
            _release(self.lease, cfg, self.out, int(code), outcome, self.state)
        if cfg.mail_on_failure and code != 0 and not self.timed_out:  # a timeout said so
            # cron mails output only: a job that fails silently would go unnoticed
            self.out.error(f"{cfg.key} fire {cfg.fire} failed on {socket.gethostname()} with "
                           f"exit status {int(code)}")
        self.hooks.finished(int(code))
        return int(code)

    def _record_lost_end(self, code: int) -> None:
        assert self.lease is not None
        try:
            self.lease.release(self.cfg.retention_ms(time.time()), code, "lost")
        except RedisUnavailable:  # the loss was already reported: keep the end, quietly
            self.state.redis_failed(end=_kept_end(self.lease, self.cfg, code, "lost"))

    def _stop(self, child: Child, now: float) -> None:
        child.signal_tree(signal.SIGTERM)
        child.signal_tree(signal.SIGCONT)  # a stopped job must wake to see SIGTERM
        self.kill_at = now + self.cfg.kill_after

    def _keep_lease(self, child: Child) -> None:
        assert self.lease is not None
        now = time.monotonic()
        if now >= self.next_renew:
            try:
                renewed = self.lease.renew()
            except RedisUnavailable as exc:
                if not self.renew_failing:
                    line = _outage_line(self.state, self.state.redis_failed(),
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
                else:
                    self._lose(child, renewed.reason)
                    return
        if time.monotonic() >= self.lease_deadline:
            self._lose(child, f"no successful renewal within the {self.cfg.ttl:g}s ttl")

    def _lose(self, child: Child, reason: str) -> None:
        self.lost = True
        where = f"lost the lease on {self.cfg.key} fire {self.cfg.fire} ({reason})"
        if self.cfg.on_lost == "kill" and child.status is None:
            self.out.error(f"{where}; stopping the job (--on-lost kill)")
            self._stop(child, time.monotonic())
        else:
            self.out.error(f"{where}; the job keeps running without a lock (--on-lost warn)")

    def _next_wake(self, timeout_at: float | None) -> float:
        candidates = [t for t in (timeout_at if not self.timed_out else None, self.kill_at)
                      if t is not None]
        if self.lease is not None and not self.lost:
            candidates += [self.next_renew, self.lease_deadline]
        if self.cleaning:
            candidates.append(time.monotonic() + 0.05)  # group members don't SIGCHLD us
        if not candidates:
            return 60.0
        return max(0.0, min(candidates) - time.monotonic())
