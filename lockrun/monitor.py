"""Monitoring hooks: healthchecks-style pings and a Prometheus textfile per job.

Only the server that runs a fire pings, so a dead man's switch sees one
execution per fire and skipped servers stay neutral. A monitoring failure
must never change the job's exit status, never delay the job while its lease
ticks, and never hold the crontab up for long: the start work runs on a
background thread, and the end waits for it and for the final ping only up to
fixed bounds.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from lockrun.output import Reporter
from lockrun.ping import PING_ATTEMPTS, PING_PAUSE, PING_TIMEOUT, Pinger, hide_path
from lockrun.textfile import MetricsFile

START_WAIT = PING_TIMEOUT
"""How long the end waits for the start work, so /start precedes the final ping."""
FINAL_PING_WAIT = PING_ATTEMPTS * PING_TIMEOUT + PING_PAUSE + 0.2
"""How long the end waits for the final ping, DNS included (it runs on a thread)."""


class Warnings:
    """At most one monitoring warning line per invocation, whichever thread hits it first.

    A dead ping endpoint would otherwise print one line for /start and one for
    the end, on every fire, into cron mail; the first says it all. Once the end
    stops waiting, a thread that finishes later stays silent, so nothing is
    printed after lockrun's last word.
    """

    def __init__(self, out: Reporter) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._closed = False

    def warn(self, message: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.out.warning(message)

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _never_fatal(method: Callable[..., None]) -> Callable[..., None]:
    """A monitoring failure is reported as a warning; it must not change the job's status."""

    @functools.wraps(method)
    def guarded(self: Hooks, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any bug here must stay a warning
            self.warnings.warn(f"monitoring hook {method.__name__} failed: "
                               f"{type(exc).__name__}: {exc}")

    return guarded


class Hooks:
    """Everything monitoring needs at each decision; does nothing when nothing is configured.

    ``started`` is called right after the job has been spawned and returns at
    once: the lease is being renewed by the caller's loop, which a slow
    endpoint, a slow DNS answer or a busy metrics lock must never hold up.
    ``finished`` is called after the end is recorded in Redis; it waits for
    the start work and the final ping, each within a fixed bound.
    """

    def __init__(self, key: str, ping_url: str | None, metrics_dir: str | None,
                 out: Reporter) -> None:
        self.key = key
        self.ping_url = ping_url
        self.out = out
        self.warnings = Warnings(out)
        self.metrics = MetricsFile(metrics_dir, key) if metrics_dir else None
        self.pinger: Pinger | None = None
        self.started_at = 0.0
        self._start_thread: threading.Thread | None = None
        self._start_cancelled = threading.Event()

    @_never_fatal
    def started(self, owner: str) -> None:
        """The job has just been spawned on this server."""
        self.started_at = time.time()
        if self.ping_url:
            import uuid

            run_id = str(uuid.UUID(hex=owner[:32])) if len(owner) >= 32 else str(uuid.uuid4())
            self.pinger = Pinger(self.ping_url, run_id)
        self._start_thread = _background(self._start_work, "start", self.warnings)

    def _start_work(self) -> None:
        if self.metrics:
            self._warn(self.metrics.record(last_start_timestamp_seconds=self.started_at))
        if self.pinger:
            self._warn(self.pinger.start(self._start_cancelled))

    @_never_fatal
    def finished(self, exit_code: int, body: bytes = b"", retrying: bool = False) -> None:
        """*body*: --capture's tail, sent with the final ping; *retrying*: this attempt
        failed and left the fire for a retry (the ping is /log, not a failure)."""
        end = time.time()
        if self._start_thread is not None:
            self._start_thread.join(START_WAIT)
            self._start_cancelled.set()  # a /start retry now would arrive after the end
        if self.metrics:
            duration = end - self.started_at if self.started_at else 0.0
            self._warn(self.metrics.record(last_end_timestamp_seconds=end,
                                           last_exit_code=exit_code,
                                           last_duration_seconds=duration, runs_total=1))
        if self.pinger:
            pinger = self.pinger
            final = _background(lambda: self._warn(pinger.finish(exit_code, body, retrying)),
                                "final ping", self.warnings)
            final.join(FINAL_PING_WAIT)
            if final.is_alive():
                self._warn(f"ping {hide_path(pinger.url)} failed: no answer within "
                           f"{FINAL_PING_WAIT:g}s")
        self.warnings.close()

    @_never_fatal
    def slow(self) -> None:
        """--warn-after passed while the job runs: URL/log, on a thread of its own."""
        if self.pinger:
            pinger = self.pinger
            _background(lambda: self._warn(pinger.log(self._start_cancelled)), "slow ping",
                        self.warnings)

    @_never_fatal
    def skipped(self) -> None:
        if self.metrics:
            self._warn(self.metrics.record(skips_total=1))

    @_never_fatal
    def redis_unusable(self) -> None:
        if self.metrics:
            self._warn(self.metrics.record(redis_errors_total=1))

    def _warn(self, message: str | None) -> None:
        if message:
            self.warnings.warn(message)


def _background(work: Callable[[], None], name: str, warnings: Warnings) -> threading.Thread:
    """A daemon thread, so a hung ping never keeps lockrun alive after its last word."""

    def guarded() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - a thread's traceback would land in cron mail
            warnings.warn(f"monitoring thread {name} failed: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread
