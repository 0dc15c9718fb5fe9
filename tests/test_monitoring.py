"""Monitoring hooks: pings to a real local HTTP server, a Prometheus textfile, log formats."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RedisServer, lockrun_env, run_lockrun, start_lockrun, wait_for
from prometheus_client.parser import text_string_to_metric_families

from lockrun.monitor import FINAL_PING_WAIT, START_WAIT


class PingServer:
    """A real HTTP server on loopback that records the paths it was asked for."""

    def __init__(self, status: int = 200, delay: float = 0.0, start_delay: float = 0.0) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                is_start = self.path.split("?")[0].endswith("/start")
                time.sleep(start_delay if is_start else delay)  # the endpoint's slowness
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
    with_user = dead.replace("http://", "http://hcuser:hcSECRET@")
    r = run_lockrun("-k", key, "--fire", "f2", "--ping-url", with_user, "--", "true",
                    url=redis_server.url)
    assert r.returncode == 0 and "ping http://127.0.0.1:" in r.stderr
    assert "hcSECRET" not in r.stderr and "hcuser" not in r.stderr


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
    # no temp files left behind; the lock file stays for the next lockrun
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{path.name}.lock", path.name]


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


def test_a_broken_syslog_sink_is_reported_once_not_on_every_skip(redis_server: RedisServer,
                                                                  key: str,
                                                                  tmp_path: Path) -> None:
    """README's example once had syslog = true on hosts without /dev/log: 18 mails a minute."""
    path = str(tmp_path / "log.sock")
    env = lockrun_env(redis_server.url, LOCKRUN_SYSLOG_SOCKET=path)

    def fire(n: int) -> str:
        r = run_lockrun("--syslog", "-k", key, "--fire", f"f{n}", "--", "true",
                        url=redis_server.url, env=env)
        assert r.returncode == 0
        return r.stderr

    first = fire(1)
    assert "cannot write to syslog" in first and first.count("\n") == 1
    assert [fire(2), fire(3)] == ["", ""]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert fire(4) == ""  # it works again: the next breakage is news
    os.unlink(path)
    assert "cannot write to syslog" in fire(5)


def _job_keys(key: str, fire: str) -> str:
    return f"lockrun:{{{key}}}:fire:{fire}"


def test_a_slow_start_ping_never_lets_a_second_server_run_the_fire(redis_server: RedisServer,
                                                                   key: str,
                                                                   tmp_path: Path) -> None:
    """The reproduction of issue 10: a /start that answers after 10 s, a ttl of 3 s."""
    slow = PingServer(start_delay=10)
    marker, release = tmp_path / "ran", tmp_path / "release"
    job = ["sh", "-c", f'echo ran >> {marker}; while [ ! -e {release} ]; do sleep 0.05; done']
    try:
        winner = start_lockrun("-k", key, "--fire", "f1", "--ttl", "3s", "--redis-timeout", "1s",
                               "--ping-url", slow.url, "--", *job, url=redis_server.url)
        wait_for(lambda: redis_server.client().hget(_job_keys(key, "f1"), "state") == "running",
                 30, "the first lockrun's claim")
        claimed = time.monotonic()
        wait_for(marker.exists, 30, "the job to start while /start is still unanswered")
        wait_for(lambda: slow.paths, 30, "the /start request")
        assert winner.poll() is None
        # Contenders until well past the ttl counted from the claim: had the start
        # ping held the lease up, its claim would have expired and one of them won.
        contenders = 0
        while contenders < 2 or time.monotonic() < claimed + 3 + 1.5:
            late = run_lockrun("-k", key, "--fire", "f1", "-E", "3", "--ping-url", slow.url,
                               "--", "sh", "-c", f"echo late >> {marker}", url=redis_server.url)
            assert (late.returncode, late.stderr) == (3, "")
            contenders += 1
        release.touch()
        _, stderr = winner.communicate(timeout=60)
    finally:
        slow.close()
    assert winner.returncode == 0
    assert marker.read_text() == "ran\n"  # exactly once, on the first server
    assert redis_server.client().hget(_job_keys(key, "f1"), "state") == "done"
    [warning] = stderr.splitlines()  # one line for the failed /start, none for the rest
    assert "ping http://127.0.0.1:" in warning and "failed" in warning
    paths = [p.split("?")[0] for p in slow.paths]
    assert paths[-1] == "/ping/abc-123"  # the final ping still arrives, after every /start
    assert set(paths[:-1]) == {"/ping/abc-123/start"}


def test_a_hung_ping_endpoint_delays_the_end_by_a_bounded_time(redis_server: RedisServer,
                                                               key: str,
                                                               tmp_path: Path) -> None:
    """Nothing answers: the end waits for /start, then for the final ping, each bounded."""
    hung = PingServer(delay=30, start_delay=30)
    ended = tmp_path / "ended"
    try:
        proc = start_lockrun("-k", key, "--ping-url", hung.url, "--", "sh", "-c",
                             f"date +%s.%N > {ended}", url=redis_server.url)
        _, stderr = proc.communicate(timeout=60)
        after_job = time.time() - float(ended.read_text())
    finally:
        hung.close()
    assert proc.returncode == 0
    assert len(stderr.splitlines()) == 1 and "failed" in stderr
    assert after_job < START_WAIT + FINAL_PING_WAIT + 1.0


def test_concurrent_lockruns_of_one_key_never_lose_a_counter_increment(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    n = 30
    procs = [start_lockrun("-k", key, "--fire", "f1", "--metrics-dir", str(tmp_path), "-E", "3",
                           "--", "true", url=redis_server.url) for _ in range(n)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0] + [3] * (n - 1)
    assert all(err == "" for _, err in results), results
    text = (tmp_path / f"lockrun_{key}.prom").read_text()
    value = {f.name: f.samples[0].value for f in text_string_to_metric_families(text)}
    assert (value["lockrun_runs"], value["lockrun_skips"]) == (1, n - 1)


def _skip_once(redis_server: RedisServer, key: str, metrics_dir: Path,
               before_exec: Callable[[int], None] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """A lockrun that skips a done fire; *before_exec* sees its pid before it starts."""
    from conftest import LOCKRUN

    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    # sh waits for a line, then becomes lockrun with the same pid
    proc = subprocess.Popen(
        ["sh", "-c", 'read _; exec "$0" "$@"', str(LOCKRUN), "-k", key, "--fire", "f1", "-E",
         "3", "--metrics-dir", str(metrics_dir), "--", "true"],
        env=lockrun_env(redis_server.url), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    if before_exec:
        before_exec(proc.pid)
    stdout, stderr = proc.communicate("go\n", timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_a_planted_symlink_never_makes_lockrun_write_through_it(redis_server: RedisServer,
                                                                key: str,
                                                                tmp_path: Path) -> None:
    metrics, precious = tmp_path / "metrics", tmp_path / "precious"
    metrics.mkdir()
    precious.write_text("keep me\n")
    final = metrics / f"lockrun_{key}.prom"

    def plant(pid: int) -> None:
        # every name a lockrun of this pid used or might use for its temporary file
        for name in (f"{final.name}.{pid}.tmp", f".{final.name}.{pid}.tmp"):
            (metrics / name).symlink_to(precious)
        final.symlink_to(precious)

    r = _skip_once(redis_server, key, metrics, plant)
    assert (r.returncode, r.stderr) == (3, "")
    assert precious.read_text() == "keep me\n"
    assert not final.is_symlink()  # the rename replaced the link itself
    value = {f.name: f.samples[0].value for f in text_string_to_metric_families(final.read_text())}
    assert value["lockrun_skips"] == 1


def test_a_symlink_planted_at_the_lock_path_creates_nothing(redis_server: RedisServer, key: str,
                                                            tmp_path: Path) -> None:
    metrics, target = tmp_path / "metrics", tmp_path / "created-by-lockrun"
    metrics.mkdir()
    (metrics / f".lockrun_{key}.prom.lock").symlink_to(target)  # dangling: O_CREAT would make it
    r = _skip_once(redis_server, key, metrics)
    assert r.returncode == 3  # monitoring never changes the exit status
    [warning] = r.stderr.splitlines()
    assert warning.startswith("lockrun: ") and "metrics" in warning
    assert not target.exists()
    assert not (metrics / f"lockrun_{key}.prom").exists()


@pytest.mark.parametrize(("mode", "written"), [(0o777, False), (0o1777, True), (0o755, True)])
def test_metrics_are_written_only_where_no_other_user_can_swap_names(
        redis_server: RedisServer, key: str, tmp_path: Path, mode: int, written: bool) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    metrics.chmod(mode)
    r = _skip_once(redis_server, key, metrics)
    assert r.returncode == 3
    assert (metrics / f"lockrun_{key}.prom").exists() == written
    if written:
        assert r.stderr == ""
    else:
        [warning] = r.stderr.splitlines()
        assert "writable by group or others without the sticky bit" in warning
