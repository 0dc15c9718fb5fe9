"""The settings of one invocation; the CLI has already checked each value's range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockrun.output import Verbosity

if TYPE_CHECKING:  # neither is needed unless --schedule or TLS is used
    from lockrun.redisurl import TlsFiles
    from lockrun.schedule import Slot

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Config:
    key: str
    fire: str
    command: tuple[str, ...]
    key_prefix: str = "lockrun"
    redis_password: str | None = None
    ttl: float = 60.0
    redis_url: str = DEFAULT_REDIS_URL
    redis_timeout: float = 2.0
    overlap: str = "skip"
    retention: float = 86400.0
    on_redis_error: str = "fail"
    on_lost: str = "warn"
    timeout: float | None = None
    kill_after: float = 10.0
    skip_exit_code: int = 0
    error_exit_code: int = 75
    jitter: float = 0.0
    verbosity: Verbosity = Verbosity.NORMAL
    slot: Slot | None = None
    """Set with --schedule: the scheduled fire this tick belongs to."""
    grace: float = 60.0
    max_skew: float = 2.0
    ping_url: str | None = None
    metrics_dir: str | None = None
    tls: TlsFiles | None = None
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    strict_replicas: bool = False
    mail_on_failure: bool = False
    state_dir: str | None = None
    """None: the default for this user (lockrun.state.default_dir); '': no state."""

    def __post_init__(self) -> None:
        _check_timing(self)

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def retention_ms(self, now: float) -> int:
        """With --schedule, a done record outlives the slot, or a later tick would rerun it."""
        keep = self.retention
        if self.slot is not None:
            from lockrun.schedule import hold_until_next

            keep = max(keep, hold_until_next(self.slot, now))
        return int(keep * 1000)


RENEWALS_PER_TTL = 3
"""The lease is renewed every ttl/3: a renewal that times out still leaves time to retry."""


def _check_timing(cfg: Config) -> None:
    """Refuse settings under which a claimed fire could run unprotected.

    Everything that can block between the claim and the job's start, or
    between two renewals, is bounded by the Redis timeout (and WAIT by its own
    timeout). If those do not fit in the lease, a slow Redis reply lets the
    claim expire while this server still acts on it, and a second server can
    start the same fire.
    """
    from lockrun.durations import format_duration as fmt
    from lockrun.errors import UsageError

    if cfg.ttl < RENEWALS_PER_TTL * cfg.redis_timeout:
        raise UsageError(
            f"--ttl {fmt(cfg.ttl)} is too short for --redis-timeout {fmt(cfg.redis_timeout)}: "
            f"the ttl must be at least {RENEWALS_PER_TTL} times the Redis timeout, so a renewal "
            f"that times out can be retried before the lease expires; use --ttl "
            f"{fmt(RENEWALS_PER_TTL * cfg.redis_timeout)} or more, or --redis-timeout "
            f"{fmt(cfg.ttl / RENEWALS_PER_TTL)} or less")
    if cfg.wait_replicas:
        needed = cfg.wait_timeout + cfg.redis_timeout
        if needed > cfg.ttl / RENEWALS_PER_TTL:
            raise UsageError(
                f"--wait-timeout {fmt(cfg.wait_timeout)} does not fit in --ttl {fmt(cfg.ttl)}: "
                f"the job must start with at least 2/3 of its lease left, so --wait-timeout "
                f"plus --redis-timeout ({fmt(needed)}) must be at most ttl/3; use --ttl "
                f"{fmt(RENEWALS_PER_TTL * needed)} or more, or a shorter --wait-timeout")
