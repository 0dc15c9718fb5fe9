"""Notifications across a fleet: one message per event for the whole fleet, from the server
that ran the attempt, after the end is recorded; a dead endpoint bounded and quiet about
its secrets.

Each lockrun process is a server with a hostname of its own (tests/test_retries.py's
``on``); every server's --notify-cmd appends to one file, so the file counts the
messages the fleet sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import RedisServer, lockrun_env, on, run_lockrun, start_on, tick_until_claimed

from lockrun.notify import NOTIFY_BOUND
from lockrun.protocol import job_keys


def sent(log: Path) -> list[dict[str, Any]]:
    """Every notification the fleet's --notify-cmd received (its stdin document)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def notify_cmd(log: Path) -> tuple[str, ...]:
    # the document arrives on stdin; one line per message
    return ("--notify-cmd", f"tr -d '\\n' >> {log}; echo >> {log}")


def test_every_server_failing_sends_one_retries_exhausted_message(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    url, log = redis_server.url, tmp_path / "sent"
    args = ("-v", "-k", key, "--fire", "f1", "--retries", "2", "--retry-delay", "1s",
            "--retry-anywhere", *notify_cmd(log), "--", "sh", "-c", "echo boom; exit 4")
    assert on("srv-a", url, *args).returncode == 4
    assert tick_until_claimed("srv-b", url, args).returncode == 4
    assert sent(log) == []  # no message per retry (the default --notify-on)
    assert tick_until_claimed("srv-c", url, args).returncode == 4
    for host in ("srv-a", "srv-b", "srv-d"):  # every later tick skips the ended fire
        assert "already done" in on(host, url, *args).stderr
    [message] = sent(log)
    assert message["event"] == "retries-exhausted" and message["host"] == "srv-c"
    assert (message["attempt"], message["attempts"], message["exit_code"]) == (3, 3, 4)
    assert "after 3 attempts" in message["summary"]


def test_a_recovery_on_another_server_sends_one_message(redis_server: RedisServer, key: str,
                                                        tmp_path: Path) -> None:
    url, log = redis_server.url, tmp_path / "sent"

    def fire(host: str, name: str, job: str) -> int:
        return on(host, url, "-k", key, "--fire", name, *notify_cmd(log), "--", "sh", "-c",
                  job).returncode

    assert fire("srv-a", "f1", "exit 2") == 2
    assert fire("srv-b", "f2", "exit 2") == 2
    assert [(m["event"], m["host"], m["failures"]) for m in sent(log)] == [
        ("failure", "srv-a", 1), ("failure", "srv-b", 2)]
    assert fire("srv-c", "f3", "true") == 0
    assert fire("srv-a", "f3", "true") == 0  # the fleet's other servers skip f3
    assert fire("srv-b", "f3", "true") == 0
    assert fire("srv-a", "f4", "true") == 0  # a second success is no news
    events = [(m["event"], m["host"], m["failures"]) for m in sent(log)]
    assert events[2:] == [("recovery", "srv-c", 2)]
    assert "recovered after 2 failed fires" in sent(log)[2]["summary"]


def test_a_retry_notification_when_asked_for(redis_server: RedisServer, key: str,
                                             tmp_path: Path) -> None:
    url, log = redis_server.url, tmp_path / "sent"
    args = ("-k", key, "--fire", "f1", "--retries", "1", "--retry-delay", "1s",
            "--notify-on", "retry,success", *notify_cmd(log), "--", "sh", "-c",
            '[ "$(hostname)" = srv-b ]')
    assert on("srv-a", url, *args).returncode == 1
    tick_until_claimed("srv-b", url, ("-v", *args))
    assert [(m["event"], m["host"], m["attempt"]) for m in sent(log)] == [
        ("retry", "srv-a", 1), ("success", "srv-b", 2)]


@contextmanager
def ping_server(bodies: list[bytes] | None = None) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server that records the path of every request (and its body)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if bodies is not None:
                bodies.append(body)
            paths.append(self.path.split("?")[0])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping/check", paths
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_attempt_that_will_be_retried_pings_log_not_failure(
        redis_server: RedisServer, key: str) -> None:
    """healthchecks must not flip to down and back up on a retry: the failed attempt's
    final ping is /log, and the fire's real end is the success (or the failure)."""
    url = redis_server.url
    with ping_server() as (ping, paths):
        args = ("-v", "-k", key, "--fire", "f1", "--retries", "1", "--retry-delay", "1s",
                "--ping-url", ping, "--", "sh", "-c", '[ "$(hostname)" = srv-b ]')
        assert on("srv-a", url, *args).returncode == 1
        assert paths == ["/ping/check/start", "/ping/check/log"]
        tick_until_claimed("srv-b", url, args)
        assert paths[2:] == ["/ping/check/start", "/ping/check"]
        other = f"{key}-b"
        last = ("-k", other, "--fire", "f1", "--ping-url", ping, "--", "false")
        assert on("srv-a", url, *last).returncode == 1
        assert paths[4:] == ["/ping/check/start", "/ping/check/1"]  # no retry: a failure


@contextmanager
def hanging_endpoint() -> Iterator[tuple[str, threading.Event]]:
    """Accepts connections and never answers; the event is set at the first accept."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        try:
            while True:
                held.append(sock.accept()[0])
                accepted.set()
        except OSError:
            pass  # closed: the test is over

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", accepted
    finally:
        sock.close()
        for conn in held:
            conn.close()


SECRET = "T0SECRET/B0SECRET/xoxSECRETtoken"


def test_a_hanging_endpoint_costs_neither_the_lease_nor_more_than_its_bound(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    url = redis_server.url
    with hanging_endpoint() as (endpoint, accepted):
        proc = start_on("srv-a", url, "-k", key, "--fire", "f1", "--notify-url",
                        f"{endpoint}/services/{SECRET}?token=SECRETQUERY", "--", "sh", "-c",
                        "exit 3")
        assert accepted.wait(20), "the notification was never sent"
        accepted_at = time.monotonic()
        fire = redis_server.client().hgetall(job_keys(key, "f1")["fire"])
        assert proc.poll() is None  # lockrun is still waiting for the endpoint...
        assert fire["state"] == "done" and fire["exit"] == "3"  # ...with the end recorded
        other = run_lockrun("-v", "-k", key, "--fire", "f1", "--", "true", url=url)
        assert "already done" in other.stderr  # the fleet is not held up meanwhile
        _, stderr = proc.communicate(timeout=NOTIFY_BOUND + 30)
    waited = time.monotonic() - accepted_at
    assert proc.returncode == 3  # the job's status, whatever the notification did
    assert waited < NOTIFY_BOUND + 5, f"lockrun exited {waited:.1f}s after the send began"
    assert stderr.count("\n") == 1 and "notification to http://127.0.0.1:" in stderr, stderr
    assert "SECRET" not in stderr and "services" not in stderr


def test_a_notification_that_fails_is_one_warning_and_never_the_exit_status(
        redis_server: RedisServer, key: str) -> None:
    r = on("srv-a", redis_server.url, "-k", key, "--fire", "f1", "--notify-on", "success",
           "--notify-url", f"http://127.0.0.1:1/hooks/{SECRET}", "--", "true")
    assert r.returncode == 0
    assert r.stderr.count("\n") == 1 and "http://127.0.0.1:1/..." in r.stderr, r.stderr
    assert "SECRET" not in r.stderr
    quiet = on("srv-a", redis_server.url, "-q", "-k", key, "--fire", "f2", "--notify-on",
               "success", "--notify-url", f"http://127.0.0.1:1/hooks/{SECRET}", "--", "true")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_the_notify_destination_never_reaches_the_job(redis_server: RedisServer, key: str,
                                                      tmp_path: Path) -> None:
    """A webhook given as LOCKRUN_NOTIFY_URL is lockrun's secret, like the password."""
    env = lockrun_env(redis_server.url, LOCKRUN_NOTIFY_URL=f"http://127.0.0.1:1/{SECRET}",
                      LOCKRUN_NOTIFY_CMD="true", LOCKRUN_NOTIFY_ON="failure")
    r = on("srv-a", redis_server.url, "-k", key, "--fire", "f1", "--", "env", env=env)
    assert r.returncode == 0, r.stderr
    assert "LOCKRUN_KEY=" in r.stdout and "SECRET" not in r.stdout
    assert "LOCKRUN_NOTIFY_CMD" not in r.stdout


def test_ran_nowhere_is_told_once_by_the_server_that_records_it(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    from conftest import faketime_env

    url, log = redis_server.url, tmp_path / "sent"
    args = ("-k", key, "--schedule", "0 3 * * *", "--tz", "UTC", "--notify-on", "ran-nowhere",
            *notify_cmd(log), "--", "true")
    for host in ("srv-a", "srv-b"):
        r = on(host, url, *args, env=faketime_env(url, "@2026-11-20 03:30:00"))
        assert r.returncode == 0
    [message] = sent(log)
    assert message["event"] == "ran-nowhere" and message["host"] == "srv-a"
    assert message["exit_code"] is None and message["attempt"] == 0  # nothing ran


def test_the_failed_attempts_output_is_kept_told_and_readable_from_a_third_server(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    """--capture with a retry that moves: attempt 1's output (srv-a) is in its /log ping,
    attempt 2's (srv-b) in the final ping, and srv-c reads either with lockrun logs."""
    url, log = redis_server.url, tmp_path / "sent"
    bodies: list[bytes] = []
    with ping_server(bodies) as (ping, paths):
        args = ("-v", "-k", key, "--fire", "f1", "--retries", "1", "--retry-delay", "1s",
                "--retry-anywhere", "--capture", "4k", "--ping-url", ping,
                "--notify-on", "retry", *notify_cmd(log), "--", "sh", "-c",
                'echo "output of $(hostname)"; [ "$(hostname)" = srv-b ]')
        first = on("srv-a", url, *args)
        assert first.returncode == 1 and first.stdout == "output of srv-a\n"
        tick_until_claimed("srv-b", url, args)
    assert paths == ["/ping/check/start", "/ping/check/log", "/ping/check/start",
                     "/ping/check"]
    assert bodies[1] == b"output of srv-a\n" and bodies[3] == b"output of srv-b\n"
    [retry] = sent(log)
    assert retry["event"] == "retry" and retry["output"] == "output of srv-a\n"
    failed = on("srv-c", url, "logs", key, "--failed")
    assert failed.returncode == 0, failed.stderr
    assert "attempt 1 on srv-a" in failed.stdout and "output of srv-a" in failed.stdout
    assert "srv-b" not in failed.stdout
    both = on("srv-c", url, "logs", key, "--fire", "f1").stdout
    assert both.index("attempt 1 on srv-a") < both.index("output of srv-a") \
        < both.index("attempt 2 on srv-b") < both.index("output of srv-b")
