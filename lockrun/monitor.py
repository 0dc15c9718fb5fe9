"""Monitoring hooks: healthchecks-style pings and a Prometheus textfile per job.

Only the server that runs a fire pings, so a dead man's switch sees one
execution per fire and skipped servers stay neutral. A monitoring failure
must never change the job's exit status or hold the crontab up for long.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lockrun import __version__
from lockrun.output import Reporter

PING_TIMEOUT = 2.0
PING_ATTEMPTS = 2


@dataclass
class Pinger:
    """Sends ``URL/start``, then ``URL`` on success or ``URL/<exit code>`` on failure."""

    url: str
    run_id: str
    out: Reporter

    def start(self) -> None:
        self._send("/start")

    def finish(self, exit_code: int) -> None:
        self._send("" if exit_code == 0 else f"/{exit_code}")

    def _target(self, suffix: str) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        query = "&".join(q for q in (parts.query, f"rid={self.run_id}") if q)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix, query=query))

    def _send(self, suffix: str) -> None:
        import urllib.error
        import urllib.request

        target = self._target(suffix)  # the CLI only accepts http:// and https:// URLs
        request = urllib.request.Request(  # noqa: S310
            target, headers={"User-Agent": f"lockrun/{__version__}"})
        error = ""
        for attempt in range(PING_ATTEMPTS):
            try:
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:  # noqa: S310
                    response.read(1024)
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
                if attempt + 1 < PING_ATTEMPTS:
                    time.sleep(0.3)
        self.out.warning(f"ping {_hide_path(target)} failed: {error}")


def _hide_path(url: str) -> str:
    """Ping URLs embed a secret check id; show only scheme and host in messages."""
    match = re.match(r"([a-z]+://[^/]+)", url)
    return f"{match.group(1)}/..." if match else "(url)"


METRICS = (
    ("lockrun_last_start_timestamp_seconds", "gauge", "When this server last started the job."),
    ("lockrun_last_end_timestamp_seconds", "gauge", "When the job last ended on this server."),
    ("lockrun_last_exit_code", "gauge", "Exit status of the last run on this server."),
    ("lockrun_last_duration_seconds", "gauge", "Duration of the last run on this server."),
    ("lockrun_runs_total", "counter", "Fires this server ran."),
    ("lockrun_skips_total", "counter", "Fires this server skipped (another server ran them)."),
    ("lockrun_redis_errors_total", "counter", "Invocations that found Redis unusable."),
)


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.3f}"


class MetricsFile:
    """``DIR/lockrun_<key>.prom`` for node_exporter's textfile collector, replaced atomically."""

    def __init__(self, directory: str, key: str, out: Reporter) -> None:
        self.path = os.path.join(directory, f"lockrun_{key}.prom")
        self.key = key
        self.out = out

    def _read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    match = re.match(r"(lockrun_\w+)\{[^}]*\} (\S+)$", line.strip())
                    if match:
                        values[match.group(1)] = float(match.group(2))
        except (OSError, ValueError):
            pass
        return values

    def record(self, **changes: float) -> None:
        """Set gauges and add to counters (names without the lockrun_ prefix)."""
        values = self._read()
        for short, amount in changes.items():
            name = f"lockrun_{short}"
            values[name] = values.get(name, 0.0) + amount if name.endswith("_total") else amount
        lines = []
        for name, kind, text in METRICS:
            value = values.get(name, 0.0 if kind == "counter" else None)
            if value is None:  # a gauge never set must be absent, not a reassuring 0
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            lines.append(f'{name}{{key="{self.key}"}} {_number(value)}')
        temp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(temp, self.path)
        except OSError as exc:
            self.out.warning(f"cannot write metrics file {self.path}: {exc.strerror}")
            try:
                os.unlink(temp)
            except OSError:
                pass


def _never_fatal(method: Callable[..., None]) -> Callable[..., None]:
    """A monitoring failure is reported as a warning; it must not change the job's status."""

    @functools.wraps(method)
    def guarded(self: Hooks, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:  # noqa: BLE001 - any bug here must stay a warning
            self.out.warning(f"monitoring hook {method.__name__} failed: "
                             f"{type(exc).__name__}: {exc}")

    return guarded


class Hooks:
    """Everything monitoring needs at each decision; does nothing when nothing is configured."""

    def __init__(self, key: str, ping_url: str | None, metrics_dir: str | None,
                 out: Reporter) -> None:
        self.key = key
        self.ping_url = ping_url
        self.out = out
        self.metrics = MetricsFile(metrics_dir, key, out) if metrics_dir else None
        self.pinger: Pinger | None = None
        self.started_at = 0.0

    @_never_fatal
    def started(self, owner: str) -> None:
        """The job is about to start on this server."""
        self.started_at = time.time()
        if self.metrics:
            self.metrics.record(last_start_timestamp_seconds=self.started_at)
        if self.ping_url:
            import uuid

            run_id = str(uuid.UUID(hex=owner[:32])) if len(owner) >= 32 else str(uuid.uuid4())
            self.pinger = Pinger(self.ping_url, run_id, self.out)
            self.pinger.start()

    @_never_fatal
    def finished(self, exit_code: int) -> None:
        end = time.time()
        if self.metrics:
            self.metrics.record(last_end_timestamp_seconds=end, last_exit_code=exit_code,
                                last_duration_seconds=end - self.started_at, runs_total=1)
        if self.pinger:
            self.pinger.finish(exit_code)

    @_never_fatal
    def skipped(self) -> None:
        if self.metrics:
            self.metrics.record(skips_total=1)

    @_never_fatal
    def redis_unusable(self) -> None:
        if self.metrics:
            self.metrics.record(redis_errors_total=1)
