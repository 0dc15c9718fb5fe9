"""One invocation of the wrapper: decide whether this server runs the fire (acquire,
skip, too late, Redis down), hand a won fire to lockrun.supervisor, and close an outage."""

from __future__ import annotations

import os
import time

from lockrun.client import LockClient
from lockrun.command import resolve_command
from lockrun.errors import RedisUnavailable
from lockrun.exitcodes import ExitCode
from lockrun.protocol import Lease, host_name, new_owner
from lockrun.signals import SignalInbox
from lockrun.state import SHOWN_FIRES, HostState, outage_line

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs its import on every fire: annotations only
    from lockrun.config import Config
    from lockrun.monitor import Hooks
    from lockrun.output import Reporter
    from lockrun.protocol import Acquired
    from lockrun.schedule import Slot

CHILD_ENV = ("LOCKRUN_KEY", "LOCKRUN_FIRE", "LOCKRUN_FENCE", "LOCKRUN_OWNER")
SECRET_ENV = ("LOCKRUN_REDIS_PASSWORD", "LOCKRUN_NOTIFY_URL", "LOCKRUN_NOTIFY_CMD")
"""lockrun's own secrets (a password, a webhook whose path is its key, a command that may
carry a token): never handed to the job, everything it starts, or --notify-cmd."""


def child_environment(cfg: Config) -> dict[str, str]:
    """The job's environment: ours, minus lockrun's secrets, plus the fire's identity."""
    from lockrun.output import redact_url

    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV and k not in SECRET_ENV}
    _undo_locale_coercion(env)
    url = env.get("LOCKRUN_REDIS_URL")
    if url is not None and redact_url(url) != url:
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
    try:
        return _run(cfg, out)
    except RedisUnavailable as exc:  # every path says its own line; this is a safety net
        out.error(str(exc))
        return cfg.error_exit_code


def _run(cfg: Config, out: Reporter) -> int:
    hooks = _hooks(cfg, out)
    env = child_environment(cfg)
    program = resolve_command(cfg.command, env)
    client = LockClient(cfg.redis_url, cfg.redis_timeout, cfg.redis_password, cfg.tls)
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
        lease = _lease(cfg, client, guard=cfg.overlap != "allow")
        # The lease runs from the moment the request leaves, not from the reply:
        # Redis may have set the key's expiry up to a whole round trip earlier.
        claimed_at = time.monotonic()
        sent = time.time()
        try:
            acq = lease.acquire(cfg.retention_ms(sent))
        except RedisUnavailable as exc:
            if exc.reply_lost:  # first: every other server skips until it is back
                _trygive_back(lease, "the reply to the claim was lost")
            hooks.redis_unusable()
            return _redis_down(cfg, out, exc, program, env, inbox, hooks, state)
        state.redis_ok()
        _check_clock(cfg, out, (sent + time.time()) / 2 - acq.server_ms / 1000,
                     time.monotonic() - claimed_at)
        if acq.status == "overlap" and cfg.overlap == "replace":
            replaced = _replace(cfg, out, lease, acq, inbox)
            if isinstance(replaced, int):
                return replaced
            acq, claimed_at = replaced
        if acq.status == "exhausted":  # this claim found the last attempt crashed
            out.error(f"fire {cfg.fire} of {cfg.key} failed: attempt {acq.attempt} on "
                      f"{acq.holder_host} crashed (its lease expired without an end) and was "
                      "the last allowed by --retries")
            _notify(cfg, out, "retries-exhausted", acq.holder_host, acq.attempt, None,
                    "crashed")
        elif not acq.won:
            out.info(_skip_reason(cfg, acq))
        if not acq.won:
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
            from lockrun.signals import signal_name
            from lockrun.supervisor import give_back

            give_back(lease, cfg, out, f"stop signal {signal_name(sig)} before the job started")
            return ExitCode.SIGNAL_BASE + sig
        lease_from = _still_ours(cfg, out, lease, claimed_at, state)
        if lease_from is None:
            hooks.redis_unusable()
            return cfg.error_exit_code
        from lockrun.supervisor import Supervisor  # only the server that runs the fire

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
    from lockrun.durations import human_duration

    out.error(f"Redis at {redact(cfg.redis_url)} is usable again after "
              f"{human_duration(time.time() - outage.since)}; {what}")


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
        line = outage_line(state, state.redis_failed(missed=(cfg.key, cfg.fire)),
                            f"{exc}; cannot confirm the claim on {cfg.key} fire {cfg.fire} "
                            "before starting the job, not running it")
        if line:
            out.error(line)
        _trygive_back(lease, "claim not confirmed before the start")  # said once, above
        return None
    if not renewed.ok:
        out.error(f"lost the claim on {cfg.key} fire {cfg.fire} before the job started "
                  f"({renewed.reason}); not running it")
        return None
    return renew_sent


def _trygive_back(lease: Lease, reason: str) -> None:
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

    def finished(self, exit_code: int, body: bytes = b"", retrying: bool = False) -> None:
        pass

    def slow(self) -> None:
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
    return Lease(client, key=cfg.key, fire=cfg.fire, ttl_ms=cfg.ttl_ms, guard=guard,
                 owner=new_owner(), host=host_name(), prefix=cfg.key_prefix,
                 attempts=cfg.retries + 1, retry_delay_ms=int(cfg.retry_delay * 1000),
                 elsewhere=not (cfg.retry_anywhere or cfg.retry_local))


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
        missed = lease.record_miss(cfg.retention_ms(time.time()), round(late * 1000))
        if missed.recorded:
            out.error(f"fire {cfg.fire} of {cfg.key} ran nowhere: no server started it "
                      f"within --grace {cfg.grace:g}s (this one came {late:.0f}s after the "
                      "scheduled time)")
            _notify(cfg, out, "ran-nowhere", host_name(), 0, None, "ran-nowhere")
        elif missed.retry_ended:
            out.error(f"fire {cfg.fire} of {cfg.key} failed: no server started its retry "
                      f"within --grace {cfg.grace:g}s (attempt {missed.attempts} on "
                      f"{missed.host} ended {_ended(missed.outcome, missed.exit_code)})")
            _notify(cfg, out, "failure", missed.host, missed.attempts, missed.exit_code,
                    missed.outcome)
    except RedisUnavailable as exc:
        hooks.redis_unusable()
        line = outage_line(state, state.redis_failed(missed=(cfg.key, cfg.fire)),
                            f"{exc}; fire {cfg.fire} of {cfg.key} is past its grace, not "
                            "running it")
        if line:
            out.error(line)
        return cfg.error_exit_code if cfg.on_redis_error == "fail" else cfg.skip_exit_code
    state.redis_ok()
    hooks.skipped()
    return cfg.skip_exit_code


def _replace(cfg: Config, out: Reporter, lease: Lease, acq: Acquired,
             inbox: SignalInbox) -> tuple[Acquired, float] | int:
    """--overlap replace: ask the earlier run to stop, wait for its guard to go, then claim.

    The earlier run's next renewal (within its ttl/3) sees the request and stops
    its job's tree as --on-lost kill does; its release removes the guard. Until
    then this server claims nothing, so the two runs never overlap, and the new
    claim's fence is higher. The wait is bounded by ttl/3 + --kill-after (plus
    two Redis timeouts), computed from this line's options; a stop signal ends
    it at once. Returns the new claim (and when it was sent) or an exit status.
    """
    from lockrun.config import RENEWALS_PER_TTL
    from lockrun.protocol import request_cancel

    old, old_host = acq.holder_detail, acq.holder_host
    by = f"fire {cfg.fire} on {host_name()} (--overlap replace)"
    request_cancel(lease.client, cfg.key, old, by, cfg.key_prefix)
    out.info(f"asked fire {old} of {cfg.key} on {old_host} to stop: fire {cfg.fire} "
             "replaces it")
    bound = cfg.ttl / RENEWALS_PER_TTL + cfg.kill_after + 2 * cfg.redis_timeout
    deadline = time.monotonic() + bound
    step = min(0.5, max(0.05, cfg.ttl / 20))
    while True:
        inbox.wait(min(step, max(0.0, deadline - time.monotonic())))
        if inbox.pending:  # nothing claimed yet: nothing to give back
            return ExitCode.SIGNAL_BASE + inbox.pending[0]
        claimed_at = time.monotonic()
        acq = lease.acquire(cfg.retention_ms(time.time()))
        if acq.status != "overlap" or acq.holder_detail != old:
            return acq, claimed_at  # claimed, or something else now decides: say it
        if time.monotonic() >= deadline:
            out.error(f"fire {old} of {cfg.key} on {old_host} did not stop within "
                      f"{bound:g}s of being asked; not running fire {cfg.fire} "
                      "(--overlap replace)")
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
    from lockrun.supervisor import give_back

    give_back(lease, cfg, out, "too few replicas")
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
                    f"(--max-skew {cfg.max_skew:g}s): fix NTP on {host_name()}")


def _notify(cfg: Config, out: Reporter, event: str, host: str, attempt: int,
            exit_code: int | None, outcome: str) -> None:
    """A fire's end that this server recorded without running it (ran nowhere, a retry
    nobody started in time, a last attempt that crashed): this server tells, once."""
    if not (cfg.notify_url or cfg.notify_cmd):
        return
    from lockrun.notify import Notification, Notifier

    note = Notification(event=event, key=cfg.key, fire=cfg.fire, host=host, attempt=attempt,
                        attempts=cfg.retries + 1, exit_code=exit_code, outcome=outcome,
                        duration_s=None, failures=0)
    notifier = Notifier(cfg.notify_url, cfg.notify_format, cfg.notify_cmd, cfg.notify_on)
    if notifier.start(note, child_environment(cfg)) and (warning := notifier.finish()):
        out.warning(warning)


def _ended(outcome: str, exit_code: int | None) -> str:
    if outcome == "exited":
        return f"with exit status {exit_code}"
    return outcome if exit_code is None else f"{outcome}, exit status {exit_code}"


def _skip_reason(cfg: Config, acq: Acquired) -> str:
    where = f"{cfg.key} fire {cfg.fire}"
    if acq.status == "retry-wait":
        return (f"skipped {where}: attempt {acq.attempt} failed on {acq.holder_host}; its "
                f"retry is due at {_clock(acq.holder_detail)}")
    if acq.status == "retry-elsewhere":
        return (f"skipped {where}: it failed here; its retry is left to another server "
                f"until {_clock(acq.holder_detail)} (--retry-anywhere to take it at once)")
    if acq.status == "paused":
        why = f": {acq.holder_detail}" if acq.holder_detail else ""
        return f"skipped {where}: paused by {acq.holder_host}{why}"
    if acq.status == "done":
        return f"skipped {where}: already done by {acq.holder_host} (fence {acq.fence})"
    if acq.status == "overlap":
        return (f"skipped {where}: fire {acq.holder_detail} is still running on "
                f"{acq.holder_host} (fence {acq.fence})")
    return f"skipped {where}: held by {acq.holder_host} (fence {acq.fence})"


def _clock(ms: str) -> str:
    """A Redis time in ms as UTC, to the second (the skip lines' times)."""
    if not ms.isdigit():
        return "?"
    return time.strftime("%H:%M:%SZ", time.gmtime(int(ms) / 1000))


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
    line = outage_line(state, say, text)
    if line:
        out.error(line)
    if cfg.on_redis_error == "skip":
        return cfg.skip_exit_code
    if runs:
        from lockrun.supervisor import Supervisor

        return Supervisor(cfg, out, inbox, None, time.monotonic(), hooks, state).run(program,
                                                                                     env)
    return cfg.error_exit_code


