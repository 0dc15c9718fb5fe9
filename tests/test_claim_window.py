"""From the claim to the recorded end: a claimed fire never runs unprotected, never twice.

Each test reproduces a way a fire could start on two servers, or run nowhere, in
the moments around the claim, against a real redis-server and real processes.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    RedisServer,
    history,
    lockrun_env,
    run_lockrun,
    start_lockrun,
    wait_for,
)

from lockrun.protocol import ABANDON, ACQUIRE, job_keys

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py


def _fire_key(key: str, fire: str = "f1") -> str:
    return job_keys(key, fire)["fire"]


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


class Listener:
    """A TCP server that accepts and records what it is sent, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += data

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def blackhole() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


class SlowReplies:
    """A TCP proxy to Redis that holds back the replies on its first connection.

    That is a network that drops into a long delay just as the claim is sent:
    the script runs in Redis, its reply never reaches lockrun in time.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            delay = self.delay if self.accepted == 1 else 0.0
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, delay),
                             daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if delay:
                time.sleep(delay)  # the network's delay, not a synchronisation
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_a_timed_out_claim_is_given_back_so_another_server_can_run_the_fire(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    redis_server.client().script_load(ACQUIRE.source)  # as on any server that ran lockrun
    proxy = SlowReplies(redis_server.port, delay=3.0)
    try:
        marker = tmp_path / "ran"
        r = run_lockrun("-k", key, "--fire", "f1", "--redis-timeout", "500ms", "--", "touch",
                        str(marker), url=f"redis://127.0.0.1:{proxy.port}/0")
    finally:
        proxy.close()
    assert r.returncode == 75, r.stderr
    assert not marker.exists()
    # The claim the script made before its reply was lost is gone, so the fire is free
    # for another server now, not after a whole ttl in which everyone skips it.
    assert not redis_server.client().exists(_fire_key(key))
    assert [e["event"] for e in history(redis_server, key)] == ["start", "abandon"]
    other = run_lockrun("-k", key, "--fire", "f1", "--", "touch", str(marker),
                        url=redis_server.url)
    assert other.returncode == 0 and marker.exists()


def test_a_claim_that_times_out_is_sent_once_not_retried(blackhole: Listener, key: str) -> None:
    started = time.monotonic()
    r = run_lockrun("-k", key, "--fire", "f1", "--redis-timeout", "300ms", "--", "true",
                    url=f"redis://127.0.0.1:{blackhole.port}/0")
    assert r.returncode == 75 and "Timeout" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
    wait_for(lambda: _sha(ABANDON.source).encode() in blackhole.received, 10,
             "the give-back to arrive")
    # A timeout means Redis is stuck: sending the claim again would only stretch the
    # time to fail. One claim, then one give-back on a new connection.
    assert blackhole.received.count(_sha(ACQUIRE.source).encode()) == 1
    assert blackhole.connections == 2
    assert time.monotonic() - started < 30


def test_a_stop_signal_before_the_start_gives_the_fire_back(own_redis: RedisServer, key: str,
                                                           tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # No replica answers, so lockrun sits in WAIT between the claim and the start.
    proc = start_lockrun("-k", key, "--fire", "f1", "--wait-replicas", "1", "--wait-timeout",
                         "5s", "--", "touch", str(marker), url=own_redis.url)
    c = own_redis.client()
    wait_for(lambda: c.hget(_fire_key(key), "state") == "running", 30, "the claim")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not marker.exists(), "the job started although it was told to stop"
    assert not c.exists(_fire_key(key)), "the fire must not be recorded done: nothing ran"
    abandon = [e for e in history(own_redis, key) if e["event"] == "abandon"]
    assert len(abandon) == 1 and "SIGTERM" in abandon[0]["reason"]
    shown = run_lockrun("history", key, "--json", url=own_redis.url)
    assert json.loads(shown.stdout)[0]["outcome"] == "given-back", shown.stdout
    again = run_lockrun("-k", key, "--fire", "f1", "--", "touch", str(marker), url=own_redis.url)
    assert again.returncode == 0 and marker.exists()


def test_a_claim_lost_before_the_start_does_not_start_the_job(own_redis: RedisServer, key: str,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "6s", "--redis-timeout", "500ms",
                         "--wait-replicas", "1", "--wait-timeout", "1500ms", "--", "touch",
                         str(marker), url=own_redis.url)
    c = own_redis.client()
    wait_for(lambda: c.hget(_fire_key(key), "state") == "running", 30, "the claim")
    # The process stalls (a stopped VM, a swap storm) right after claiming...
    proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: not c.exists(_fire_key(key)), 30, "the claim to expire")
        # ...and meanwhile another server claims the fire after the ttl.
        c.hset(_fire_key(key), mapping={"owner": "other", "state": "running", "fence": "1"})
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert not marker.exists(), "the job started on a claim that another server holds"
    assert "before the job started" in err and len(err.splitlines()) == 2, err
    assert c.hget(_fire_key(key), "owner") == "other"


def test_a_command_that_cannot_be_executed_leaves_the_fire_to_others(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    script = tmp_path / "job"
    script.write_text("#!/nonexistent/interpreter\necho hi\n")
    script.chmod(0o755)
    r = run_lockrun("-k", key, "--fire", "f1", "--", str(script), url=redis_server.url)
    assert r.returncode == 127, r.stderr  # as sh and bash say for a missing interpreter
    assert "bad interpreter /nonexistent/interpreter" in r.stderr
    assert history(redis_server, key) == [], "checked before the claim: nothing to give back"
    marker = tmp_path / "ran"
    other = run_lockrun("-k", key, "--fire", "f1", "--", "touch", str(marker),
                        url=redis_server.url)
    assert other.returncode == 0 and marker.exists()


def test_the_fence_stays_ahead_of_its_counter_when_the_counter_is_ahead_of_the_clock(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    # As after the Redis host's clock was stepped back an hour: the counter is ahead.
    ahead = int(time.time() * 1_000_000) + 3600 * 1_000_000
    redis_server.client().set(job_keys(key, "")["fence"], str(ahead))
    out = tmp_path / "fence"
    r = run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c",
                    f'echo "$LOCKRUN_FENCE" > {out}', url=redis_server.url)
    assert r.returncode == 0, r.stderr
    assert int(out.read_text()) == ahead + 1


def _start_holding(server: RedisServer, key: str, tmp_path: Path,
                   *args: str) -> tuple[subprocess.Popen[str], Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    proc = start_lockrun("-k", key, "--fire", "f1", *args, "--", "sh", "-c",
                         f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                         url=server.url)
    wait_for(started.exists, 30, "the job to start")
    return proc, release


def test_the_end_of_a_fire_never_deletes_an_overlap_guard_another_fire_owns(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    proc, release = _start_holding(redis_server, key, tmp_path)
    guard = job_keys(key, "")["running"]
    c = redis_server.client()
    c.hset(guard, mapping={"owner": "someone-else", "fire": "f2"})  # e.g. after an unlock
    release.touch()
    assert proc.wait(60) == 0
    assert c.hget(guard, "owner") == "someone-else"


def test_a_renewal_that_finds_the_overlap_guard_taken_reports_the_loss(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    proc, release = _start_holding(redis_server, key, tmp_path, "--ttl", "3s",
                                   "--redis-timeout", "1s")
    guard = job_keys(key, "")["running"]
    redis_server.client().hset(guard, mapping={"owner": "someone-else", "fire": "f2"})
    try:
        wait_for(lambda: any(e["event"] == "lost" for e in history(redis_server, key)), 30,
                 "the renewal to notice the guard is gone")
    finally:
        release.touch()
    _, err = proc.communicate(timeout=60)
    assert "lost the lease" in err and "overlap guard" in err
    assert redis_server.client().hget(guard, "owner") == "someone-else"


def test_renewals_keep_the_claim_above_two_thirds_of_its_ttl(redis_server: RedisServer,
                                                            key: str, tmp_path: Path) -> None:
    proc, release = _start_holding(redis_server, key, tmp_path, "--ttl", "6s")
    c = redis_server.client()
    lowest = 6000
    try:
        # Two whole ttls of samples: a renewal every ttl/3 keeps the remaining time near
        # 4-6 s; one that waits until late in the ttl lets it sink toward 0.
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            lowest = min(lowest, int(c.pttl(_fire_key(key))))
            time.sleep(0.02)  # sampling rate, not synchronisation
    finally:
        release.touch()
    assert proc.wait(60) == 0
    assert lowest > 2500, f"the claim's ttl fell to {lowest} ms between renewals"


def test_options_whose_timing_cannot_protect_the_claim_are_refused(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    short = run_lockrun("-k", key, "--ttl", "1s", "--", "touch", str(marker),
                        url=redis_server.url)
    assert short.returncode == 64 and len(short.stderr.splitlines()) == 1
    assert "--ttl 1s is too short for --redis-timeout 2s" in short.stderr
    wait = run_lockrun("-k", key, "--ttl", "1s", "--redis-timeout", "300ms", "--wait-replicas",
                       "1", "--wait-timeout", "3s", "--", "touch", str(marker),
                       url=redis_server.url)
    assert wait.returncode == 64 and "--wait-timeout 3s does not fit" in wait.stderr
    assert not marker.exists()


def test_a_wait_longer_than_the_redis_timeout_is_not_a_socket_timeout(own_redis: RedisServer,
                                                                     key: str) -> None:
    r = run_lockrun("-k", key, "--redis-timeout", "300ms", "--wait-replicas", "1",
                    "--wait-timeout", "1s", "--", "sh", "-c", "exit 4", url=own_redis.url)
    assert r.returncode == 4, r.stderr
    assert "0 of 1 replicas acknowledged" in r.stderr and "Timeout" not in r.stderr


def test_a_replica_that_accepts_writes_is_never_claimed_on(own_redis: RedisServer, key: str,
                                                          tmp_path: Path) -> None:
    replica = RedisServer(tmp_path / "replica", ["--replicaof", "127.0.0.1",
                                                 str(own_redis.port), "--replica-read-only",
                                                 "no"])
    try:
        marker = tmp_path / "ran"
        r = run_lockrun("-k", key, "--fire", "f1", "--", "touch", str(marker), url=replica.url)
        assert r.returncode == 75, r.stderr
        assert "is a replica, not a primary" in r.stderr
        assert not marker.exists()
        assert not replica.client().exists(_fire_key(key))
    finally:
        replica.stop()


def test_the_job_never_sees_lockruns_redis_password(redis_server: RedisServer, key: str,
                                                    tmp_path: Path) -> None:
    user, password = f"u{key}", "S3cret-pw"
    redis_server.client().acl_setuser(user, enabled=True, passwords=[f"+{password}"],
                                      keys=["lockrun:*"], commands=["+@all"])
    try:
        dump = tmp_path / "env"
        url = redis_server.url.replace("unix://", f"unix://{user}@")
        env = lockrun_env(url, LOCKRUN_REDIS_PASSWORD=password)
        r = run_lockrun("-k", key, "--", "sh", "-c", f"env > {dump}", url=url, env=env)
        assert r.returncode == 0, r.stderr
        assert password not in dump.read_text()
        assert "LOCKRUN_KEY=" in dump.read_text()
        in_url = redis_server.url.replace("unix://", f"unix://{user}:{password}@")
        r = run_lockrun("-k", key, "--fire", "f2", "--", "sh", "-c", f"env > {dump}",
                        url=in_url)
        assert r.returncode == 0, r.stderr
        assert password not in dump.read_text()
    finally:
        redis_server.client().acl_deluser(user)


def test_a_syslog_that_stops_reading_never_blocks_lockrun(redis_server: RedisServer, key: str,
                                                          tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(path)  # a syslog daemon that never reads again
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    filler.connect(path)
    try:
        with pytest.raises(BlockingIOError):
            for _ in range(100_000):
                filler.send(b"<78>filler: x" * 10)
        env = lockrun_env(redis_server.url, LOCKRUN_SYSLOG_SOCKET=path)
        r = run_lockrun("--syslog", "-k", key, "--", "sh", "-c", "exit 3", url=redis_server.url,
                        env=env, timeout=60)
    finally:
        filler.close()
        stuck.close()
    assert r.returncode == 3
    assert r.stderr.count("cannot write to syslog") == 1, r.stderr
