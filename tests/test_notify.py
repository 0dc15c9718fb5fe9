"""Notifications: what is sent, to whom, and that nothing they do can hold lockrun up.

deliver() runs in this process against real endpoints: an HTTP server on a
thread, sockets that accept and never answer, a listener whose backlog is
full, a server that answers one byte at a time; and real /bin/sh commands,
with grandchildren. The option checks go through the real lockrun binary.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import RedisServer, lockrun_env, pid_alive, run_lockrun, wait_for
from redis_topologies import wait_until
from test_bad_input import Case, run_case

from lockrun.errors import UsageError
from lockrun.notify import (
    NOTIFY_BOUND,
    OUTPUT_CAP,
    SLACK_OUTPUT_CAP,
    Notification,
    deliver,
    wanted,
)
from lockrun.optiontable import NOTIFY_EVENTS, notify_events

SLACK = 1.5
"""What a bound may be exceeded by on a loaded 2-core machine: thread joins, a reap."""
SECRET = "T0SECRET/B0SECRET/xoxSECRET"
"""A webhook path: it is the credential."""


def note(**changes: object) -> Notification:
    fields: dict[str, object] = dict(
        event="retries-exhausted", key="nightly", fire="2026-11-27T03:00:00Z", host="web-2",
        attempt=3, attempts=3, exit_code=2, outcome="exited", duration_s=12.5, failures=4,
        output=b"step 1 ok\nstep 2: disk full\n")
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status = 200
        self.hold_until: Path | None = None
        """Answer only once this file exists (or after 3s): the request waits on it."""
        self.held: list[bool] = []
        """For each held request: whether the file appeared."""


@contextmanager
def http_server() -> Iterator[tuple[str, Recorded]]:
    """A real HTTP server on 127.0.0.1 that records each request and answers rec.status."""
    rec = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.requests.append((self.command, self.path, dict(self.headers), body))
            hold = rec.hold_until
            if hold is not None:
                rec.held.append(wait_until(hold.exists, 3.0))
            self.send_response(rec.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server(trickle: bool = False) -> Iterator[str]:
    """Accepts every connection and never answers (or, with *trickle*, answers one header
    byte every 0.2s forever: no socket timeout ever fires on it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not done.is_set():
            try:
                conn = sock.accept()[0]
                held.append(conn)
                if trickle:
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
            except OSError:
                pass
            for conn in held if trickle else ():
                try:
                    conn.sendall(b"X")  # a header line that never ends
                except OSError:
                    pass
            if trickle:
                done.wait(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


@contextmanager
def full_backlog() -> Iterator[str]:
    """A listener that never accepts, with its backlog filled: a connect never completes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    clients = []
    try:
        while True:
            client = socket.socket()
            client.settimeout(0.5)
            try:
                client.connect(("127.0.0.1", port))
            except OSError:
                client.close()
                break
            clients.append(client)
        yield f"http://127.0.0.1:{port}"
    finally:
        for client in clients:
            client.close()
        sock.close()


def timed(**kwargs: object) -> tuple[str | None, float]:
    """deliver()'s warning and wall time; a deliver() that hangs fails the test, not the
    suite (it runs on a daemon thread waited for a little longer than its bound)."""
    result: list[str | None] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(deliver(**kwargs)),  # type: ignore[arg-type]
                              daemon=True)
    thread.start()
    thread.join(float(kwargs.get("bound", NOTIFY_BOUND)) + 10)  # type: ignore[arg-type]
    took = time.monotonic() - start
    assert result, f"deliver() still running after {took:.1f}s"
    return result[0], took


# What the URL receives.

def test_the_json_post_carries_every_field(capfd: pytest.CaptureFixture[str]) -> None:
    with http_server() as (base, rec):
        warning = deliver(note(), url=f"{base}/hook/{SECRET}?x=1", fmt="json", cmd=None,
                          env={})
    assert warning is None
    assert len(rec.requests) == 1
    method, path, headers, body = rec.requests[0]
    assert (method, path) == ("POST", f"/hook/{SECRET}?x=1")
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("lockrun/")
    doc = json.loads(body)
    assert {k: doc[k] for k in ("event", "key", "fire", "host", "attempt", "attempts",
                                "exit_code", "outcome", "duration_s", "failures")} == {
        "event": "retries-exhausted", "key": "nightly", "fire": "2026-11-27T03:00:00Z",
        "host": "web-2", "attempt": 3, "attempts": 3, "exit_code": 2, "outcome": "exited",
        "duration_s": 12.5, "failures": 4}
    assert doc["output"] == "step 1 ok\nstep 2: disk full\n"
    assert doc["output_truncated"] is False
    assert doc["summary"] == ("nightly fire 2026-11-27T03:00:00Z failed on web-2 with exit "
                              "status 2 after 3 attempts; 4 failed fires in a row")
    assert doc["lockrun_version"]
    assert capfd.readouterr() == ("", "")


def test_the_output_sent_is_its_tail_and_capped() -> None:
    output = b"HEAD-OF-OUTPUT\n" + "é".encode() * OUTPUT_CAP + b"\xff\nLAST LINE\n"
    with http_server() as (base, rec):
        assert deliver(note(output=output), url=base, cmd=None, env={}) is None
    doc = json.loads(rec.requests[0][3])
    assert doc["output"].endswith("\ufffd\nLAST LINE\n")
    assert "HEAD-OF-OUTPUT" not in doc["output"]
    assert len(doc["output"].encode()) <= OUTPUT_CAP + 2  # b"\xff" became U+FFFD: 3 bytes
    assert doc["output_truncated"] is True
    assert doc["output"].startswith("é")  # a UTF-8 sequence cut by the cap is dropped


def test_a_slack_body_is_the_summary_and_the_tail_in_a_code_block() -> None:
    output = b"EARLY\n" + b"x" * 10_000 + b"\nboom: ``` quoted\n"
    with http_server() as (base, rec):
        assert deliver(note(event="failure", attempt=1, attempts=1, failures=1,
                            output=output), url=base, fmt="slack", cmd=None, env={}) is None
    body = json.loads(rec.requests[0][3])
    assert list(body) == ["text"]
    text = body["text"]
    summary, block = text.split("\n", 1)
    assert summary == "nightly fire 2026-11-27T03:00:00Z failed on web-2 with exit status 2"
    assert block.startswith("```\n") and block.endswith("boom: `\u200b`` quoted\n```")
    assert block.count("```") == 2  # the job's own ``` cannot close the block early
    assert "EARLY" not in text and len(text) < 4000
    assert len(block) <= SLACK_OUTPUT_CAP + 10


def test_a_server_error_is_retried_once_and_a_refusal_is_not() -> None:
    with http_server() as (base, rec):
        rec.status = 503
        warning = deliver(note(), url=base + "/h", cmd=None, env={})
        assert warning == f"notification to {base}/... failed: HTTP status 503"
        assert len(rec.requests) == 2
        rec.status = 404
        warning = deliver(note(), url=base + "/h", cmd=None, env={})
        assert warning == f"notification to {base}/... failed: HTTP status 404"
        assert len(rec.requests) == 3


@pytest.mark.parametrize("status", [500, 403])
def test_no_secret_of_the_url_appears_in_the_warning(status: int) -> None:
    with http_server() as (base, rec):
        rec.status = status
        host = base.removeprefix("http://")
        url = f"http://hookuser:PASSWORDSECRET@{host}/services/{SECRET}?token=QUERYSECRET#F"
        warning = deliver(note(), url=url, cmd=None, env={})
    assert warning == f"notification to http://{host}/... failed: HTTP status {status}"
    assert rec.requests[0][1] == f"/services/{SECRET}?token=QUERYSECRET"
    assert rec.requests[0][2]["Authorization"] == "Basic aG9va3VzZXI6UEFTU1dPUkRTRUNSRVQ="


def test_a_password_with_a_slash_is_hidden_too() -> None:
    from lockrun.optiontable import hide_url_path

    assert hide_url_path(f"https://:{SECRET}@/x") == "https://***/..."
    assert hide_url_path("https://u:p@hooks.example:8443/a?b#c") == "https://hooks.example:8443/..."


def test_an_unreachable_url_names_only_scheme_and_host() -> None:
    with full_backlog() as base:  # a port nobody listens on, once the listener is gone
        pass
    warning = deliver(note(), url=f"{base}/services/{SECRET}", cmd=None, env={}, bound=3)
    assert warning is not None and warning.startswith(f"notification to {base}/... failed: ")
    assert "SECRET" not in warning and "\n" not in warning


# What the command gets.

def test_the_command_gets_the_variables_the_job_environment_and_the_document(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cmd = (f"env > {tmp_path}/env; cat > {tmp_path}/stdin; echo to-stdout; "
           "echo to-stderr >&2")
    job_env = {"PATH": os.environ["PATH"], "JOB_SETTING": "from the job"}
    n = note(output=b"tail \x00with a NUL\n")
    assert deliver(n, url=None, cmd=cmd, env=job_env) is None
    env = dict(line.split("=", 1) for line in
               (tmp_path / "env").read_text().split("\n") if "=" in line)
    assert env["JOB_SETTING"] == "from the job"
    assert {k: v for k, v in env.items() if k.startswith("LOCKRUN_")} == {
        "LOCKRUN_EVENT": "retries-exhausted", "LOCKRUN_KEY": "nightly",
        "LOCKRUN_FIRE": "2026-11-27T03:00:00Z", "LOCKRUN_HOST": "web-2",
        "LOCKRUN_ATTEMPT": "3", "LOCKRUN_ATTEMPTS": "3", "LOCKRUN_EXIT": "2",
        "LOCKRUN_OUTCOME": "exited", "LOCKRUN_DURATION": "12.500", "LOCKRUN_FAILURES": "4",
        "LOCKRUN_OUTPUT": "tail with a NUL",  # env's own output ends the value at the newline
        "LOCKRUN_SUMMARY": n.summary()}
    assert json.loads((tmp_path / "stdin").read_text()) == n.document()
    assert capfd.readouterr() == ("", "")  # nothing for cron to mail


def test_a_ran_nowhere_note_leaves_exit_and_duration_empty(tmp_path: Path) -> None:
    n = note(event="ran-nowhere", exit_code=None, duration_s=None, outcome="ran-nowhere",
             attempt=1, attempts=1, failures=1, output=b"")
    cmd = f'printf "%s|%s|%s" "$LOCKRUN_EXIT" "$LOCKRUN_DURATION" "$LOCKRUN_OUTPUT" > {tmp_path}/v'
    assert deliver(n, url=None, cmd=cmd, env={}) is None
    assert (tmp_path / "v").read_text() == "||"
    assert n.document()["exit_code"] is None
    assert n.summary() == ("nightly fire 2026-11-27T03:00:00Z ran nowhere: no server started "
                           "it within its grace")


def test_a_failing_command_is_one_line_without_the_command_text() -> None:
    cmd = "echo 'curl: (6) Could not resolve host' >&2; echo second >&2; exit 3 # TOKEN123"
    warning = deliver(note(), url=None, cmd=cmd, env={})
    assert warning == "notify command failed: exit status 3: curl: (6) Could not resolve host"


def test_a_long_stderr_line_is_shortened() -> None:
    warning = deliver(note(), url=None, cmd="printf 'x%.0s' $(seq 500) >&2; exit 1", env={})
    assert warning is not None and warning.endswith("x" * 200 + "...")


def test_url_and_command_run_at_once(tmp_path: Path) -> None:
    """The POST is under way while the command runs, and the reverse: neither waits for
    the other (the endpoint answers only once the command has started, and the command
    ends only once the POST has arrived)."""
    with http_server() as (base, rec):
        rec.hold_until = tmp_path / "started"
        cmd = f"touch {tmp_path}/started; while [ ! -e {tmp_path}/go ]; do sleep 0.05; done"

        def release() -> None:
            if wait_until(lambda: rec.requests, 5.0):
                (tmp_path / "go").touch()

        releaser = threading.Thread(target=release)
        releaser.start()
        warning, _ = timed(note=note(), url=base, cmd=cmd, env={"PATH": os.environ["PATH"]})
        releaser.join()
    assert rec.held == [True]
    assert warning is None and len(rec.requests) == 1


# The bound.

def test_a_hanging_endpoint_and_a_hanging_command_end_at_the_bound(tmp_path: Path) -> None:
    """At the documented bound, both at once; the command's grandchild is gone too."""
    cmd = (f"echo $$ > {tmp_path}/sh; sleep 1000 & echo $! > {tmp_path}/grandchild; "
           f"trap '' TERM; sleep 1000")
    with silent_server() as base:
        warning, took = timed(note=note(), url=f"{base}/{SECRET}", cmd=cmd,
                              env={"PATH": os.environ["PATH"]})
    assert NOTIFY_BOUND - 1 <= took <= NOTIFY_BOUND + SLACK, took
    assert warning == (f"notification to {base}/... failed: timed out; notify command failed: "
                       f"still running after {NOTIFY_BOUND:g}s; stopped it")
    pids = [int((tmp_path / name).read_text()) for name in ("sh", "grandchild")]
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5,
             what=f"the command's processes {pids} to be gone")


def test_the_documented_bound_is_the_real_one() -> None:
    root = Path(__file__).resolve().parent.parent
    said = f"at most {NOTIFY_BOUND:g} seconds"
    for doc in ("man/lockrun.1", "docs/reference.md", "README.md"):
        assert said in " ".join((root / doc).read_text().split()), doc


def test_an_endpoint_that_never_accepts_ends_at_the_bound() -> None:
    with full_backlog() as base:
        warning, took = timed(note=note(), url=base, cmd=None, env={}, bound=3)
    assert took <= 3 + SLACK, took
    # the connect's own timeout and the bound end together: either may say it
    assert warning in (f"notification to {base}/... failed: timed out",
                       f"notification to {base}/... failed: no answer within 3s")


def test_an_endpoint_that_answers_a_byte_at_a_time_ends_at_the_bound() -> None:
    """No socket timeout ever fires here (as with a slow DNS answer): only the thread's
    bound ends the wait."""
    with silent_server(trickle=True) as base:
        warning, took = timed(note=note(), url=base, cmd=None, env={}, bound=3)
    assert 3 - 0.5 <= took <= 3 + SLACK, took
    assert warning == f"notification to {base}/... failed: no answer within 3s"


def test_a_command_that_exits_leaves_nothing_behind(tmp_path: Path) -> None:
    """Background processes the command started are stopped by the bound, not orphaned."""
    cmd = f"sleep 1000 >/dev/null 2>&1 & echo $! > {tmp_path}/bg; exit 0"
    warning, took = timed(note=note(), url=None, cmd=cmd, env={"PATH": os.environ["PATH"]},
                          bound=2)
    assert warning is None and took <= 2 + SLACK
    pid = int((tmp_path / "bg").read_text())
    wait_for(lambda: not pid_alive(pid), timeout=5, what="the background sleep to be gone")


# --notify-on.

def test_failure_stands_for_every_final_failure() -> None:
    for event in ("failure", "timeout", "lost", "retries-exhausted"):
        assert wanted(event, "failure"), event
    for event in ("retry", "success", "recovery", "ran-nowhere"):
        assert not wanted(event, "failure"), event


def test_the_default_is_one_alert_per_fire_and_recovery() -> None:
    from lockrun.config import Config

    default = str(Config.defaults()["notify_on"])
    assert default == "failure,recovery"
    chosen = {e for e in NOTIFY_EVENTS if wanted(e, default)}
    assert chosen == {"failure", "timeout", "lost", "retries-exhausted", "recovery"}


def test_each_word_selects_itself_only() -> None:
    for event in NOTIFY_EVENTS:
        if event == "failure":
            continue
        assert {e for e in NOTIFY_EVENTS if wanted(e, event)} == {event}, event


def test_the_events_value_is_normalised_and_checked() -> None:
    assert notify_events(" retry , success,retry") == "retry,success"
    with pytest.raises(UsageError, match="unknown event 'failures': give a comma-separated "
                                         "list of failure, timeout"):
        notify_events("failure,failures")
    with pytest.raises(UsageError, match="an empty event"):
        notify_events("failure,")


# The options, through the real binary.

JOB = ["--", "touch", "{marker}"]


@pytest.mark.parametrize(("args", "said"), [
    (["--notify-on", "failure,sucess"], "unknown event 'sucess'"),
    (["--notify-on", ""], "an empty event"),
    (["--notify-url", f"ftp://hooks.example/{SECRET}"], "'ftp://hooks.example/...' must be"),
    (["--notify-url", f"https://:{SECRET}@/x"], "'https://***/...' has an invalid host"),
    (["--notify-url", "https://u:PW@/x"], "'https:///...' has no host"),
    (["--notify-url", f"https://hooks.example:99999/{SECRET}"], "invalid host or port"),
    (["--notify-cmd", ""], "--notify-cmd: is empty"),
    (["--notify-cmd", "curl -H 'X-Token: SECRET'\nrm -rf /tmp/x"], "control character"),
    (["--notify-format", "xml"], "'xml' is not one of 'json', 'slack'"),
], ids=["unknown-event", "no-event", "url-not-http", "url-slash-in-password", "url-no-host",
        "url-bad-port",
        "cmd-empty", "cmd-newline", "format-unknown"])
def test_bad_notify_options_are_refused_before_redis(args: list[str], said: str,
                                                     tmp_path: Path) -> None:
    outcome = run_case(Case(["-k", "j", *args, *JOB]), tmp_path)
    assert outcome.problems() == []
    assert said in outcome.stderr
    assert "SECRET" not in outcome.stderr and "PW" not in outcome.stderr


def test_a_bad_variable_is_refused_naming_it(tmp_path: Path) -> None:
    outcome = run_case(Case(["-k", "j", *JOB], env={"LOCKRUN_NOTIFY_ON": "falure"}), tmp_path)
    assert outcome.problems() == []
    assert "LOCKRUN_NOTIFY_ON: unknown event 'falure'" in outcome.stderr


def test_notify_settings_without_a_destination_are_accepted(redis_server: RedisServer,
                                                            key: str, tmp_path: Path) -> None:
    """A server-wide default (file or variable) must not break lines without a URL."""
    env = lockrun_env(redis_server.url, LOCKRUN_NOTIFY_ON="retry,success",
                      LOCKRUN_NOTIFY_FORMAT="slack")
    r = run_lockrun("-k", key, "--", "touch", str(tmp_path / "ran"), url=redis_server.url,
                    env=env)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "ran").exists()


def test_the_configs_repr_hides_the_url_and_the_command() -> None:
    from lockrun.wrapper_cli import parse

    inv = parse(["-k", "j", "--notify-url", f"https://hooks.example/{SECRET}",
                 "--notify-cmd", "page --token TOKEN123", "--notify-on", "failure,retry",
                 "--", "true"], time.time())
    assert inv.config.notify_url == f"https://hooks.example/{SECRET}"
    assert inv.config.notify_on == "failure,retry"
    shown = repr(inv)
    assert "SECRET" not in shown and "TOKEN123" not in shown
    assert "notify_url='***'" in shown and "notify_cmd='***'" in shown


def test_deliver_never_raises_on_a_command_sh_cannot_start(tmp_path: Path) -> None:
    warning = deliver(note(), url=None, cmd="exec /nonexistent/notifier", env={})
    assert warning is not None and warning.startswith("notify command failed: exit status 127")


def test_the_summaries_read_as_sentences() -> None:
    assert note(event="recovery", failures=4, exit_code=0, host="web-1").summary() == (
        "nightly fire 2026-11-27T03:00:00Z succeeded on web-1: recovered after 4 failed fires")
    assert note(event="timeout", attempt=1, failures=1, exit_code=124,
                outcome="timeout").summary() == (
        "nightly fire 2026-11-27T03:00:00Z timed out on web-2 in 12.5s")
    assert note(event="retry", attempt=1).summary() == (
        "nightly fire 2026-11-27T03:00:00Z failed on web-2 with exit status 2 (attempt 1 of 3); "
        "a retry is scheduled")
    assert note(event="lost", exit_code=None, outcome="lost", attempt=1,
                failures=1).summary() == (
        "nightly fire 2026-11-27T03:00:00Z lost its lease on web-2")
