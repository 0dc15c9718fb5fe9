"""Notifications (--notify-url, --notify-cmd): one message per event, from one server.

The supervisor decides which event a fire's end is, once per fire for the
whole fleet, and calls deliver() after that end is recorded in Redis: the
lease no longer needs this process, so a notification can only delay
lockrun's own exit, and that delay is bounded by NOTIFY_BOUND whatever the
endpoint or the command does. A notification that fails is one warning
line; it never raises and never changes the job's exit status.

Not on the cron hot path: imported only when a notification is due.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from lockrun import __version__
from lockrun.optiontable import FINAL_FAILURES, hide_url_path, notify_events

NOTIFY_BOUND = 10.0
"""Wall time deliver() may take, the URL and the command together (they run at once).

After the end is recorded nothing is at stake but lockrun's exit: cron waits
for it, and a crontab that ticks every minute must not pile up lockruns behind
a dead endpoint. A healthy webhook (Slack, a chat bot, an alert manager)
answers in well under a second; 10s leaves two attempts of HTTP_TIMEOUT each
with a pause, and a command time to run curl or sendmail once.
"""
HTTP_TIMEOUT = 4.0
"""Per attempt: the socket's connect and read timeout (DNS is bounded by NOTIFY_BOUND
alone, because the send runs on a daemon thread that deliver() stops waiting for)."""
HTTP_PAUSE = 0.5
"""Between the two attempts of a URL."""
COMMAND_GRACE = 0.5
"""The command's process group gets SIGTERM this long before the bound, SIGKILL at it."""
OUTPUT_CAP = 16 * 1024
"""Bytes of the output's tail in the JSON document and in LOCKRUN_OUTPUT: far under the
kernel's 128 KiB limit on one environment string, and enough to see why a job failed."""
SLACK_OUTPUT_CAP = 3000
"""Characters of the tail in a Slack message: Slack advises texts under 4,000 characters
and truncates longer ones, so the summary and the block fit together."""
STDERR_SHOWN = 200
"""Characters of the command's first stderr line quoted in its warning."""


@dataclass(frozen=True)
class Notification:
    """What happened to one fire (or one attempt of it), as a notification tells it."""

    event: str
    """One of lockrun.optiontable.NOTIFY_EVENTS."""
    key: str
    fire: str
    host: str
    """The server that ran the attempt; for ran-nowhere, the one that recorded the miss."""
    attempt: int
    """This attempt's number, from 1."""
    attempts: int
    """Attempts allowed for the fire (--retries + 1)."""
    exit_code: int | None
    """None when no job ran (ran-nowhere) or its status is unknown (a lost lease)."""
    outcome: str
    """As in the fire's record: exited, timeout, lost, crashed, ran-nowhere..."""
    duration_s: float | None
    failures: int
    """Consecutive failed fires of this key, fleet-wide (before a recovery: how many)."""
    output: bytes = b""
    """The tail of the job's output, if it was captured."""

    def summary(self) -> str:
        """One line a person reads in a chat channel or a mail subject."""
        where = f"{self.key} fire {self.fire}"
        status = (f"with exit status {self.exit_code}" if self.exit_code is not None
                  else f"({self.outcome})")
        tries = f" after {self.attempt} attempts" if self.attempt > 1 else ""
        streak = (f"; {self.failures} failed fires in a row" if self.failures > 1
                  and self.event != "recovery" else "")
        took = f" in {_seconds(self.duration_s)}" if self.duration_s is not None else ""
        if self.event == "recovery":
            fires = "fire" if self.failures == 1 else "fires"
            return (f"{where} succeeded on {self.host}: recovered after {self.failures} failed "
                    f"{fires}")
        if self.event == "success":
            return f"{where} succeeded on {self.host}{took}"
        if self.event == "ran-nowhere":
            return f"{where} ran nowhere: no server started it within its grace{streak}"
        if self.event == "timeout":
            return f"{where} timed out on {self.host}{took}{tries}{streak}"
        if self.event == "lost":
            return f"{where} lost its lease on {self.host}{tries}{streak}"
        if self.event == "retry":
            return (f"{where} failed on {self.host} {status} (attempt {self.attempt} of "
                    f"{self.attempts}); a retry is scheduled")
        if self.event == "retries-exhausted":
            return f"{where} failed on {self.host} {status} after {self.attempt} attempts{streak}"
        return f"{where} failed on {self.host} {status}{tries}{streak}"

    def tail(self, limit: int = OUTPUT_CAP) -> str:
        """The output's last *limit* bytes as text (a cut UTF-8 sequence is dropped)."""
        data = self.output[-limit:]
        if len(self.output) > limit:
            data = data[next((i for i, b in enumerate(data[:4]) if b & 0xC0 != 0x80), 0):]
        return data.decode(errors="replace")

    def document(self) -> dict[str, str | int | float | bool | None]:
        """The JSON body of --notify-url and the stdin of --notify-cmd."""
        return {"event": self.event, "key": self.key, "fire": self.fire, "host": self.host,
                "attempt": self.attempt, "attempts": self.attempts,
                "exit_code": self.exit_code, "outcome": self.outcome,
                "duration_s": self.duration_s, "failures": self.failures,
                "output": self.tail(), "output_truncated": len(self.output) > OUTPUT_CAP,
                "summary": self.summary(), "lockrun_version": __version__}

    def slack(self) -> dict[str, str]:
        """An incoming webhook's body: the summary, and the tail as a code block."""
        text = self.summary()
        tail = self.tail()[-SLACK_OUTPUT_CAP:].replace("```", "`\u200b``")
        if tail.strip():
            text += f"\n```\n{tail.rstrip()}\n```"
        return {"text": text}

    def variables(self) -> dict[str, str]:
        """The LOCKRUN_* variables of --notify-cmd (no NUL: the kernel refuses one)."""
        return {"LOCKRUN_EVENT": self.event, "LOCKRUN_KEY": self.key,
                "LOCKRUN_FIRE": self.fire, "LOCKRUN_HOST": self.host,
                "LOCKRUN_ATTEMPT": str(self.attempt), "LOCKRUN_ATTEMPTS": str(self.attempts),
                "LOCKRUN_EXIT": "" if self.exit_code is None else str(self.exit_code),
                "LOCKRUN_OUTCOME": self.outcome,
                "LOCKRUN_DURATION": "" if self.duration_s is None else f"{self.duration_s:.3f}",
                "LOCKRUN_FAILURES": str(self.failures),
                "LOCKRUN_OUTPUT": self.tail().replace("\0", ""),
                "LOCKRUN_SUMMARY": self.summary()}


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}s" if value < 100 else f"{value:.0f}s"


def wanted(event: str, notify_on: str) -> bool:
    """Whether --notify-on selects *event*; failure stands for every final failure.

    The default (failure,recovery) sends one message when a fire ends failed,
    after its last retry, and one when a job works again: never one per retry.
    """
    chosen = notify_events(notify_on).split(",")
    return event in chosen or ("failure" in chosen and event in FINAL_FAILURES)


def deliver(note: Notification, *, url: str | None, fmt: str = "json", cmd: str | None,
            env: dict[str, str], bound: float = NOTIFY_BOUND) -> str | None:
    """Send *note* to *url* and run *cmd* (both at once when both are set).

    Returns None when every one that is set succeeded, else one warning line
    (both failures in it when both failed). Returns within *bound* seconds:
    the URL is sent on a daemon thread that is abandoned at the bound, and
    the command's whole process group is killed by then.
    """
    deadline = time.monotonic() + bound
    document = note.document()
    posted: list[str | None] = []
    sender = None
    if url:
        body = note.slack() if fmt == "slack" else document
        sender = threading.Thread(target=lambda: posted.append(_post(url, body, deadline)),
                                  name="notify url", daemon=True)
        sender.start()
    failed = []
    ran = _run(cmd, document, {**env, **note.variables()}, deadline, bound) if cmd else None
    if url and sender is not None:
        sender.join(max(deadline - time.monotonic(), 0.0))
        problem = posted[0] if posted else f"no answer within {bound:g}s"
        if problem:
            failed.append(f"notification to {hide_url_path(url)} failed: {problem}")
    if ran:
        failed.append(f"notify command failed: {ran}")
    return "; ".join(failed) or None


def _post(url: str, body: object, deadline: float) -> str | None:
    """POST *body* as JSON; at most two attempts, none after *deadline*. None: delivered."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode()
    target, headers = _basic_auth(url)
    headers.update({"Content-Type": "application/json", "User-Agent": f"lockrun/{__version__}"})
    request = urllib.request.Request(  # noqa: S310 - the option takes http(s) URLs only
        target, data=data, method="POST", headers=headers)
    error = "not sent"
    for attempt in range(2):
        left = deadline - time.monotonic()
        if left <= 0.05:
            break
        try:
            with urllib.request.urlopen(  # noqa: S310
                    request, timeout=min(HTTP_TIMEOUT, left)) as response:
                response.read(1024)
            return None
        except urllib.error.HTTPError as exc:
            error = f"HTTP status {exc.code}"
            if exc.code < 500:  # the endpoint refused this message: a retry says it again
                break
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc)) or type(exc).__name__
        if attempt == 0:
            time.sleep(min(HTTP_PAUSE, max(deadline - time.monotonic(), 0.0)))
    return _scrub(error, url)


def _basic_auth(url: str) -> tuple[str, dict[str, str]]:
    """https://USER:PASSWORD@host/... as the URL without them and an Authorization header:
    urllib would otherwise look the whole USER:PASSWORD@host up as a host name."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


def _scrub(text: str, url: str) -> str:
    """An error text never carries the URL's secret parts, whatever the library put in it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.username, parts.password):
        if secret and len(secret) > 1:
            text = text.replace(secret, "...")
    return text


def _run(cmd: str, document: object, env: dict[str, str], deadline: float,
         bound: float) -> str | None:
    """Run *cmd* as cron runs a line, in its own session; None when it exited 0.

    Its stdout and stderr are captured, so nothing reaches cron mail when it
    works. Everything it starts in its process group is waited for until the
    deadline, then stopped: nothing it started outlives lockrun.
    """
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        return f"cannot start /bin/sh: {exc.strerror or exc}"
    stderr = b""
    finished = True
    try:
        _, stderr = proc.communicate(json.dumps(document).encode() + b"\n",
                                     timeout=max(deadline - COMMAND_GRACE - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        finished = False
    stopped = _stop_group(proc, deadline)
    if not finished:  # the group is gone, so are the pipes' writers (unless one setsid'd)
        try:
            _, stderr = proc.communicate(timeout=0.2)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    status = proc.returncode
    if stopped and (status is None or status < 0):
        return f"still running after {bound:g}s; stopped it"
    if status is None:  # cannot be after SIGKILL; said rather than waited for
        return f"still running after {bound:g}s"
    if status < 0:
        reason = f"killed by signal {-status}"
    elif status:
        reason = f"exit status {status}"
    else:
        return None
    line = next((ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()), "")
    line = "".join(c if c >= " " and c != "\x7f" else " " for c in line.strip())
    if len(line) > STDERR_SHOWN:
        line = line[:STDERR_SHOWN] + "..."
    return f"{reason}: {line}" if line else reason


def _stop_group(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for the command's process group to empty; at the deadline, end it.

    SIGTERM COMMAND_GRACE before the deadline, SIGKILL at it; True if either
    was sent. A process that left the group (setsid) is beyond reach, as it
    would be under cron.
    """
    group = proc.pid
    signalled = False
    while True:
        if proc.returncode is None:
            proc.poll()
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            break  # empty: the shell is reaped, so not even its zombie is left
        now = time.monotonic()
        if now >= deadline:
            _signal_group(group, signal.SIGKILL)
            signalled = True
            break
        if now >= deadline - COMMAND_GRACE and not signalled:
            _signal_group(group, signal.SIGTERM)
            signalled = True
        if proc.returncode is not None:
            time.sleep(0.02)  # only what the command left behind: poll until it ends
        else:
            try:
                proc.wait(min(0.05, max(deadline - now, 0.001)))
            except subprocess.TimeoutExpired:
                pass
    if proc.returncode is None:
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
    return signalled


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Notifier:
    """deliver() for one invocation, on a thread of its own, so the final ping and the
    notification wait at the same time: lockrun's exit is held up by the longer of
    the two bounds, not by their sum."""

    def __init__(self, url: str | None, fmt: str, cmd: str | None, notify_on: str) -> None:
        self.url, self.fmt, self.cmd, self.notify_on = url, fmt, cmd, notify_on
        self._thread: threading.Thread | None = None
        self._result: list[str | None] = []

    def start(self, note: Notification, env: dict[str, str]) -> bool:
        """Begin sending *note* if --notify-on selects its event; False if it does not."""
        if not wanted(note.event, self.notify_on):
            return False

        def send() -> None:
            try:
                self._result.append(deliver(note, url=self.url, fmt=self.fmt, cmd=self.cmd,
                                            env=env))
            except Exception as exc:  # noqa: BLE001 - a bug here must stay one warning
                self._result.append(f"notification failed: {type(exc).__name__}: {exc}")

        self._thread = threading.Thread(target=send, name="notify", daemon=True)
        self._thread.start()
        return True

    def finish(self) -> str | None:
        """The warning line to print, once the send is over (NOTIFY_BOUND at most)."""
        if self._thread is None:
            return None
        self._thread.join(NOTIFY_BOUND + 1.0)
        if self._result:
            return self._result[0]
        return "notification failed: not sent within its bound"
