"""lockrun.resp and redis-py say the same thing about the same failure, and answer alike.

Users and scripts read lockrun's one error line, and call_retrying and the
claim window act on what kind of failure it was (dropped: send again; reply
lost: give the claim back). So for each way Redis can fail, the stdlib
transport must give redis-py's exact line, the same reply_lost and the same
retry decision; and the plain commands the admin verbs use must come back in
the same shapes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TRANSPORTS, RedisServer, free_port
from redis_topologies import make_certs

from lockrun.client import LockClient
from lockrun.errors import RedisUnavailable
from lockrun.protocol import ACQUIRE, job_keys
from lockrun.redisurl import TlsFiles
from lockrun.resp import TransportError

Outcome = tuple[str, bool, bool]
"""The error line, reply_lost, and whether call_retrying would send again."""


def read_command(conn: socket.socket) -> None:
    """Read one whole RESP command, so a close that follows is a clean end (FIN), not a
    reset for unread data."""
    data = b""

    def need(n: int) -> None:
        nonlocal data
        while len(data) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("the client went away")
            data += chunk

    def line(at: int) -> tuple[int, int]:
        while b"\r\n" not in data[at:]:
            need(len(data) + 1)
        end = data.index(b"\r\n", at)
        return int(data[at + 1:end]), end + 2

    count, at = line(0)
    for _ in range(count):
        size, at = line(at)
        at += size + 2
        need(at)


class Listener:
    """A TCP port that accepts and then either says nothing or hangs up after the first
    command it reads."""

    def __init__(self, hang_up: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._hang_up = hang_up
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._hang_up:
                try:
                    read_command(conn)
                except OSError:
                    pass
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        for conn in self._held:
            conn.close()


def outcome(transport: str, url: str, monkeypatch: pytest.MonkeyPatch,
            tls: TlsFiles | None = None) -> Outcome:
    """What an acquire over *transport* ends with."""
    monkeypatch.setenv("LOCKRUN_TRANSPORT", transport)
    client = LockClient(url, timeout=0.5, tls=tls)
    k = job_keys(f"same-{transport}", "f1")  # a failed script may leave writes behind
    try:
        client.call(ACQUIRE.source, *ACQUIRE.bind(
            {"fire_key": k["fire"], "guard_key": k["running"], "fence_key": k["fence"],
             "hist_key": k["hist"], "pause_key": k["pause"], "fleet_pause_key": k["pause"],
             "try_key": k["try"], "job_key": k["job"]},
            owner="owner", ttl_ms=1000, guard="0", fire="f1", host="host", pid=1, maxlen=10,
            local_ms=0, retention_ms=60_000, fleet_read="0", fleet_by="", fleet_reason="",
            tracked="0", attempts=1, delay_ms=0, elsewhere="1"))
    except RedisUnavailable as exc:
        cause = exc.__cause__
        return str(exc), exc.reply_lost, isinstance(cause, TransportError) and cause.dropped
    finally:
        client.close()
    return "no error", False, False


def assert_same(url: str, monkeypatch: pytest.MonkeyPatch, expected: str, reply_lost: bool,
                dropped: bool, tls: TlsFiles | None = None) -> None:
    stdlib, redis_py = (outcome(t, url, monkeypatch, tls) for t in TRANSPORTS)
    assert stdlib == redis_py
    assert expected in stdlib[0] and stdlib[1:] == (reply_lost, dropped), stdlib


@pytest.fixture
def guarded(own_redis: RedisServer) -> RedisServer:
    """A password for the default user, and ACL users that may do too little."""
    c = own_redis.client()
    c.execute_command("ACL", "SETUSER", "scriptless", "on", ">pw", "~*",  # type: ignore[no-untyped-call]
                      "+ping")
    c.execute_command("ACL", "SETUSER", "noxadd", "on", ">pw", "~*",  # type: ignore[no-untyped-call]
                      "+evalsha", "+eval", "+time", "+info", "+hmget", "+get", "+set", "+hset",
                      "+pexpire")
    c.config_set("requirepass", "right")
    return own_redis


@pytest.fixture
def listener() -> Iterator[Callable[[bool], Listener]]:
    made: list[Listener] = []

    def make(hang_up: bool) -> Listener:
        made.append(Listener(hang_up))
        return made[-1]

    yield make
    for item in made:
        item.close()


def test_a_refused_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening
    try:
        port = refused.getsockname()[1]
        assert_same(f"redis://127.0.0.1:{port}/0", monkeypatch,
                    f"Error 111 connecting to 127.0.0.1:{port}. Connection refused", False, True)
    finally:
        refused.close()


def test_a_missing_socket_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "none.sock"
    assert_same(f"unix://{path}", monkeypatch,
                f"Error 2 connecting to {path}. No such file or directory", False, True)


@pytest.mark.parametrize("userinfo", ["", ":pw@"], ids=["no-auth", "auth"])
def test_a_server_that_never_answers_may_have_run_the_script(
        monkeypatch: pytest.MonkeyPatch, listener: Callable[[bool], Listener],
        userinfo: str) -> None:
    """With a password the AUTH is what times out: redis-py calls that a lost reply too."""
    hole = listener(False)
    assert_same(f"redis://{userinfo}127.0.0.1:{hole.port}/0", monkeypatch,
                ": Timeout reading from socket", True, False)


def test_a_server_that_hangs_up(monkeypatch: pytest.MonkeyPatch,
                                listener: Callable[[bool], Listener]) -> None:
    """Dropped, so call_retrying sends again (our scripts recognise their own effect)."""
    closer = listener(True)
    assert_same(f"redis://127.0.0.1:{closer.port}/0", monkeypatch,
                ": Connection closed by server", False, True)


@pytest.mark.parametrize(("userinfo", "expected", "dropped"), [
    (":wrong@", "invalid username-password pair or user is disabled", True),
    ("someone:wrong@", "invalid username-password pair or user is disabled", True),
    ("scriptless:pw@", "this user has no permissions to run the 'evalsha' command", False),
    ("noxadd:pw@", "refused lockrun's script: the user may not run XADD", False),
    (":right@", "no error", False),
])
def test_refusals_of_the_password_and_the_acl(guarded: RedisServer,
                                              monkeypatch: pytest.MonkeyPatch, userinfo: str,
                                              expected: str, dropped: bool) -> None:
    assert_same(f"redis://{userinfo}127.0.0.1:{guarded.port}/0", monkeypatch, expected, False,
                dropped)


def test_a_database_the_server_does_not_have(redis_server: RedisServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same(f"redis://127.0.0.1:{redis_server.port}/99", monkeypatch,
                "DB index is out of range", False, False)


def test_a_server_certificate_from_another_ca(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    make_certs(tmp_path)
    port = free_port()
    server = RedisServer(tmp_path / "redis", [
        "--tls-port", str(port), "--tls-cert-file", str(tmp_path / "server.crt"),
        "--tls-key-file", str(tmp_path / "server.key"), "--tls-ca-cert-file",
        str(tmp_path / "ca.crt"), "--tls-auth-clients", "yes"])
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        client = (str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
        assert_same(url, monkeypatch, "certificate verify failed", False, True,
                    TlsFiles(str(tmp_path / "other.crt"), *client))
        assert_same(url, monkeypatch, "no error", False, False,
                    TlsFiles(str(tmp_path / "ca.crt"), *client))
    finally:
        server.stop()


def test_plain_commands_come_back_in_the_same_shapes(redis_server: RedisServer, key: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What the admin verbs and doctor read: hashes, streams, SCAN, TIME, INFO."""
    admin = redis_server.client()
    admin.hset(f"{key}:h", mapping={"a": "1", "b": ""})
    admin.xadd(f"{key}:s", {"event": "start", "fire": "f1"}, id="1-1")
    answers = []
    for transport in TRANSPORTS:
        monkeypatch.setenv("LOCKRUN_TRANSPORT", transport)
        c = LockClient(redis_server.url, timeout=2)
        try:
            answers.append((c.hgetall(f"{key}:h"), c.hgetall(f"{key}:none"),
                            c.command("XRANGE", f"{key}:s", "-", "+", "COUNT", 10),
                            c.xrevrange(f"{key}:s", 5), sorted(c.scan(f"{key}:*")),
                            c.command("EXISTS", f"{key}:h"), len(c.strings("TIME"))))
        finally:
            c.close()
    assert answers[0] == answers[1]
    assert answers[0][0] == {"a": "1", "b": ""} and answers[0][3] == [
        ("1-1", {"event": "start", "fire": "f1"})]
