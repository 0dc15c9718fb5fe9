"""The settings of one invocation; the CLI has already checked each value's range."""

from __future__ import annotations

from lockrun.output import Verbosity

TYPE_CHECKING = False
if TYPE_CHECKING:  # neither is needed unless --schedule or TLS is used
    from typing import Final, Literal, TypeAlias

    from lockrun.redisurl import TlsFiles
    from lockrun.schedule import Slot

    # The choice options' words (tests/test_argv.py checks them against the table).
    Overlap: TypeAlias = Literal["skip", "allow", "replace"]
    OnRedisError: TypeAlias = Literal["fail", "skip", "run"]
    OnLost: TypeAlias = Literal["warn", "kill"]
    NotifyFormat: TypeAlias = Literal["json", "slack"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Config:
    """One fire's settings, immutable once built (mypy checks the Final attributes).

    A plain class, not a dataclass: importing dataclasses (and inspect, which it
    needs) and generating the methods cost more CPU than a whole skipped fire
    may. Its keyword defaults are the options' defaults (lockrun.optiontable
    reads them from ``__init__.__kwdefaults__``), so each is written once.
    """

    __slots__ = (
        'capture',
        'command',
        'error_exit_code',
        'fire',
        'grace',
        'jitter',
        'key',
        'key_prefix',
        'kill_after',
        'mail_on_failure',
        'max_skew',
        'metrics_dir',
        'notify_cmd',
        'notify_format',
        'notify_on',
        'notify_url',
        'on_lost',
        'on_redis_error',
        'overlap',
        'ping_url',
        'quiet_unless_failed',
        'redis_password',
        'redis_timeout',
        'redis_url',
        'retention',
        'retries',
        'retry_anywhere',
        'retry_backoff',
        'retry_delay',
        'retry_local',
        'retry_on',
        'skip_exit_code',
        'slot',
        'state_dir',
        'strict_replicas',
        'timeout',
        'tls',
        'ttl',
        'verbosity',
        'wait_replicas',
        'wait_timeout',
        'warn_after',
    )

    def __init__(
        self,
        *,
        key: str,
        fire: str,
        command: tuple[str, ...],
        key_prefix: str = "lockrun",
        redis_password: str | None = None,
        ttl: float = 60.0,
        redis_url: str = DEFAULT_REDIS_URL,
        redis_timeout: float = 2.0,
        overlap: Overlap = "skip",
        retention: float = 86400.0,
        on_redis_error: OnRedisError = "fail",
        on_lost: OnLost = "warn",
        timeout: float | None = None,
        kill_after: float = 10.0,
        skip_exit_code: int = 0,
        error_exit_code: int = 75,
        jitter: float = 0.0,
        verbosity: int = Verbosity.NORMAL,
        slot: Slot | None = None,
        grace: float = 60.0,
        max_skew: float = 2.0,
        ping_url: str | None = None,
        metrics_dir: str | None = None,
        notify_url: str | None = None,
        notify_format: NotifyFormat = "json",
        notify_cmd: str | None = None,
        notify_on: str = "failure,recovery",
        tls: TlsFiles | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        strict_replicas: bool = False,
        mail_on_failure: bool = False,
        quiet_unless_failed: bool = False,
        warn_after: float | None = None,
        retries: int = 0,
        retry_delay: float = 60.0,
        retry_backoff: int = 1,
        retry_on: str | None = None,
        retry_anywhere: bool = False,
        retry_local: bool = False,
        state_dir: str | None = None,
        capture: int = 0,
    ) -> None:
        self.key: Final = key
        self.fire: Final = fire
        self.command: Final = command
        self.key_prefix: Final = key_prefix
        self.redis_password: Final = redis_password
        self.ttl: Final = ttl
        self.redis_url: Final = redis_url
        self.redis_timeout: Final = redis_timeout
        self.overlap: Final = overlap
        self.retention: Final = retention
        self.on_redis_error: Final = on_redis_error
        self.on_lost: Final = on_lost
        self.timeout: Final = timeout
        self.kill_after: Final = kill_after
        self.skip_exit_code: Final = skip_exit_code
        self.error_exit_code: Final = error_exit_code
        self.jitter: Final = jitter
        self.verbosity: Final = verbosity
        self.slot: Final = slot
        """Set with --schedule: the scheduled fire this tick belongs to."""
        self.grace: Final = grace
        self.max_skew: Final = max_skew
        self.ping_url: Final = ping_url
        self.metrics_dir: Final = metrics_dir
        self.notify_url: Final = notify_url
        """A webhook's path is its secret: never shown (see __repr__, lockrun.notify)."""
        self.notify_format: Final = notify_format
        self.notify_cmd: Final = notify_cmd
        """May hold a token: never shown either."""
        self.notify_on: Final = notify_on
        """Normalised by lockrun.optiontable.notify_events; lockrun.notify.wanted reads it."""
        self.tls: Final = tls
        self.wait_replicas: Final = wait_replicas
        self.wait_timeout: Final = wait_timeout
        self.strict_replicas: Final = strict_replicas
        self.mail_on_failure: Final = mail_on_failure
        self.quiet_unless_failed: Final = quiet_unless_failed
        """Keep the job's stdout and stderr, and print them only if it fails (chronic)."""
        self.warn_after: Final = warn_after
        """Say once, while it keeps running, that the job has run this long."""
        self.retries: Final = retries
        """Further attempts of a failed fire: on whichever server ticks when one is due
        (a retry ticket), or on this one while it holds the lease (--retry-local)."""
        self.retry_delay: Final = retry_delay
        self.retry_backoff: Final = retry_backoff
        self.retry_on: Final = retry_on
        """Exit statuses worth a retry ("1,75-78"); None: every failure."""
        self.retry_anywhere: Final = retry_anywhere
        """Let a server that failed this fire take its retry as soon as it is due."""
        self.retry_local: Final = retry_local
        self.state_dir: Final = state_dir
        """None: the default for this user (lockrun.state.default_dir); '': no state."""
        self.capture: Final = capture
        """Bytes of the output's tail to keep with the fire and ping (0: off, no pipes)."""
        _check_timing(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return cls.__slots__

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Each field's default, by name (the three without one are absent)."""
        return dict(cls.__init__.__kwdefaults__ or {})

    def values(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.values() == other.values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = {n: ("***" if n in _SECRET_FIELDS and v else v)
                 for n, v in self.values().items()}
        return "Config(" + ", ".join(f"{n}={v!r}" for n, v in shown.items()) + ")"

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


    def retry_wait(self, attempt: int) -> float:
        """Seconds from the end of failed *attempt* (1 = the first run) to the next."""
        from lockrun.durations import MAX_DURATION

        return float(min(MAX_DURATION, self.retry_delay * self.retry_backoff ** (attempt - 1)))

    def retries_code(self, code: int) -> bool:
        """Whether a failed attempt that exited with *code* is worth another (--retry-on)."""
        if code == 0:
            return False
        if self.retry_on is None:
            return True
        return any(low <= code <= high for low, high in code_ranges(self.retry_on))

    def retry_deadline(self) -> float | None:
        """With --schedule, no attempt starts after the grace: the next slot is near."""
        return None if self.slot is None else self.slot.fire + self.grace


def code_ranges(text: str) -> list[tuple[int, int]]:
    """'1,75-78' as [(1, 1), (75, 78)]; the CLI has checked the text (exit_codes)."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


_SECRET_FIELDS = ("redis_password", "notify_url", "notify_cmd")
"""Fields a repr must not show: a password, a webhook (its path is the secret), a command
line that may carry a token."""

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
