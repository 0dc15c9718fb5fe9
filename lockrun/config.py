"""The validated settings of one lockrun invocation."""

from __future__ import annotations

from dataclasses import dataclass

from lockrun.errors import UsageError
from lockrun.output import Verbosity
from lockrun.schedule import Slot, hold_until_next

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
MIN_TTL = 1.0
MIN_RETENTION = 120.0


@dataclass(frozen=True)
class Config:
    key: str
    fire: str
    command: tuple[str, ...]
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

    def __post_init__(self) -> None:
        if not self.command:
            raise UsageError("no command given: use lockrun [OPTIONS] -- COMMAND [ARG]...")
        if self.ttl < MIN_TTL:
            raise UsageError(f"--ttl must be at least {MIN_TTL:g}s")
        if self.retention < MIN_RETENTION:
            raise UsageError(
                "--retention must be at least 2m: a shorter one lets a late server rerun a fire"
            )
        if not 0 < self.redis_timeout <= 60:
            raise UsageError("--redis-timeout must be between 0 and 60s")
        if self.grace <= 0:
            raise UsageError("--grace must be greater than 0")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("--timeout must be greater than 0")
        for name, code in (("--skip-exit-code", self.skip_exit_code),
                           ("--error-exit-code", self.error_exit_code)):
            if not 0 <= code <= 255:
                raise UsageError(f"{name} must be between 0 and 255")

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def retention_ms(self, now: float) -> int:
        """With --schedule, a done record outlives the slot, or a later tick would rerun it."""
        keep = self.retention
        if self.slot is not None:
            keep = max(keep, hold_until_next(self.slot, now))
        return int(keep * 1000)
