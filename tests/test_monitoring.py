"""Monitoring hooks: pings to a real local HTTP server, a Prometheus textfile, log formats."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer, lockrun_env, run_lockrun, wait_for
from prometheus_client.parser import text_string_to_metric_families


class PingServer:
    """A real HTTP server on loopback that records the paths it was asked for."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                time.sleep(delay)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ping/abc-123"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pings() -> Iterator[PingServer]:
    server = PingServer()
    yield server
    server.close()


def test_only_the_running_server_pings_start_and_exit_code(redis_server: RedisServer, key: str,
                                                           pings: PingServer) -> None:
    r = run_lockrun("-k", key, "--fire", "f1", "--ping-url", pings.url, "--", "sh", "-c",
                    "exit 3", url=redis_server.url)
    assert (r.returncode, r.stderr) == (3, "")
    skipped = run_lockrun("-k", key, "--fire", "f1", "--ping-url", pings.url, "--", "true",
                          url=redis_server.url)
    assert skipped.returncode == 0
    ok = run_lockrun("-k", key, "--fire", "f2", "--ping-url", pings.url, "--", "true",
                     url=redis_server.url)
    assert ok.returncode == 0
    paths = [p.split("?")[0] for p in pings.paths]
    assert paths == ["/ping/abc-123/start", "/ping/abc-123/3", "/ping/abc-123/start",
                     "/ping/abc-123"]
    run_ids = [p.split("rid=")[1] for p in pings.paths]
    assert run_ids[0] == run_ids[1] != run_ids[2] == run_ids[3]


def test_a_failing_ping_never_changes_the_exit_code(redis_server: RedisServer, key: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/ping/x"  # bound, never listening
    start = time.monotonic()
    r = run_lockrun("-k", key, "--ping-url", dead, "--", "sh", "-c", "exit 6",
                    url=redis_server.url)
    assert r.returncode == 6
    assert "ping http://127.0.0.1:" in r.stderr and "/x" not in r.stderr  # check id hidden
    assert time.monotonic() - start < 30


def test_a_slow_ping_endpoint_is_bounded(redis_server: RedisServer, key: str) -> None:
    slow = PingServer(delay=10)
    try:
        start = time.monotonic()
        r = run_lockrun("-k", key, "--ping-url", slow.url, "--", "true", url=redis_server.url)
        elapsed = time.monotonic() - start
    finally:
        slow.close()
    assert r.returncode == 0
    assert elapsed < 20  # 2 pings x 2 attempts x 2s timeout, plus start-up
    assert "failed" in r.stderr


def test_metrics_file_counts_runs_and_skips_and_parses(redis_server: RedisServer, key: str,
                                                       tmp_path: Path) -> None:
    args = ("--metrics-dir", str(tmp_path))
    run_lockrun("-k", key, "--fire", "f1", *args, "--", "sh", "-c", "sleep 0.2; exit 2",
                url=redis_server.url)
    run_lockrun("-k", key, "--fire", "f1", *args, "--", "true", url=redis_server.url)
    run_lockrun("-k", key, "--fire", "f1", *args, "--", "true", url=redis_server.url)
    run_lockrun("-k", key, *args, "--", "true", url="redis://127.0.0.1:1/0")
    path = tmp_path / f"lockrun_{key}.prom"
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    value = {name: fam.samples[0].value for name, fam in families.items()}
    assert value["lockrun_runs"] == 1  # the parser drops the _total suffix of counters
    assert value["lockrun_skips"] == 2
    assert value["lockrun_redis_errors"] == 1
    assert value["lockrun_last_exit_code"] == 2
    assert 0.2 <= value["lockrun_last_duration_seconds"] < 10
    assert value["lockrun_last_end_timestamp_seconds"] >= value[
        "lockrun_last_start_timestamp_seconds"] > time.time() - 300
    assert families["lockrun_runs"].samples[0].labels == {"key": key}
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


def test_a_server_that_only_skips_has_no_last_run_gauges(redis_server: RedisServer, key: str,
                                                         tmp_path: Path) -> None:
    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    run_lockrun("-k", key, "--fire", "f1", "--metrics-dir", str(tmp_path), "--", "true",
                url=redis_server.url)
    text = (tmp_path / f"lockrun_{key}.prom").read_text()
    families = {f.name: f.samples[0].value for f in text_string_to_metric_families(text)}
    assert families == {"lockrun_runs": 0, "lockrun_skips": 1, "lockrun_redis_errors": 0}


def test_metrics_dir_must_exist(redis_server: RedisServer, tmp_path: Path) -> None:
    r = run_lockrun("-k", "x", "--metrics-dir", str(tmp_path / "nope"), "--", "true",
                    url=redis_server.url)
    assert r.returncode == 64 and "no such directory" in r.stderr


def test_ping_url_must_be_http(redis_server: RedisServer) -> None:
    r = run_lockrun("-k", "x", "--ping-url", "file:///etc/passwd", "--", "true",
                    url=redis_server.url)
    assert r.returncode == 64


def test_json_log_lines(redis_server: RedisServer, key: str) -> None:
    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    r = run_lockrun("-v", "--log-format", "json", "-k", key, "--fire", "f1", "--", "true",
                    url=redis_server.url)
    [record] = [json.loads(line) for line in r.stderr.splitlines()]
    assert record["level"] == "info" and record["key"] == key and record["fire"] == "f1"
    assert "already done" in record["msg"]


def test_syslog_gets_every_decision_while_stderr_stays_silent(redis_server: RedisServer,
                                                              key: str,
                                                              tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    received: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.2)
        env = lockrun_env(redis_server.url, LOCKRUN_SYSLOG_SOCKET=path)
        r = run_lockrun("--syslog", "-k", key, "--fire", "f1", "--", "true",
                        url=redis_server.url, env=env)
        assert (r.returncode, r.stderr) == (0, "")

        def got_one() -> bool:
            try:
                received.append(sock.recv(4096))
            except TimeoutError:
                pass
            return bool(received)

        wait_for(got_one, 10, "a syslog datagram")
    message = received[0].decode()
    assert message.startswith("<78>lockrun[")  # facility cron (9), severity info (6)
    assert f"acquired {key} fire f1" in message
