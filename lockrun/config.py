"""The settings of one invocation; the CLI has already checked each value's range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockrun.output import Verbosity

if TYPE_CHECKING:  # neither is needed unless --schedule or TLS is used
    from lockrun.protocol import TlsFiles
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
