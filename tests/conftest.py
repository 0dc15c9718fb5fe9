"""Fixtures: real redis-server processes and a way to run lockrun as users do."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

LOCKRUN = Path(sys.executable).parent / "lockrun"


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             what: str = "condition") -> None:
    """Poll with a deadline instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise AssertionError("no free port pair for a cluster node")


class RedisServer:
    """A private redis-server: its own port, unix socket and directory."""

    def __init__(self, workdir: Path, extra: list[str] | None = None,
                 port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run the README's test command")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.socket = str(self.dir / "redis.sock")
        self.binary = binary
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", str(self.dir), "--save", "", "--appendonly", "no",
             "--logfile", str(self.dir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._ping, 10, "redis-server to answer")

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=self.socket, socket_timeout=0.5).ping())
        except redis.exceptions.RedisError:
            return False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, decode_responses=True, socket_timeout=5)

    def pause(self) -> None:
        """Blackhole: the process keeps its sockets but stops answering."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test may stop, pause or restart."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def key() -> str:
    """A job key no other test uses, so tests can share one server."""
    return f"t-{uuid.uuid4().hex[:12]}"


def lockrun_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKRUN_")}
    env["LOCKRUN_REDIS_URL"] = url
    env.update(extra)
    return env


def run_lockrun(
    *args: str, url: str, timeout: float = 60, env: dict[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lockrun`` command the way a crontab line does."""
    return subprocess.run(
        [str(LOCKRUN), *args], env=env or lockrun_env(url), capture_output=True, text=True,
        timeout=timeout, input=input.decode() if input is not None else None,
    )


def start_lockrun(*args: str, url: str, env: dict[str, str] | None = None,
                  **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [str(LOCKRUN), *args], env=env or lockrun_env(url), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )


def pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def history(server: RedisServer, key: str) -> list[dict[str, str]]:
    """The job's history stream, oldest first, as plain dicts."""
    raw = server.client().xrange(f"lockrun:{{{key}}}:hist") or []
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in raw]


def faketime_env(url: str, spec: str, **extra: str) -> dict[str, str]:
    """lockrun's environment with its wall clock faked by libfaketime (monotonic stays real).

    *spec* is libfaketime's: ``@2026-03-29 01:00:07`` starts the clock there,
    ``+10s`` shifts it.
    """
    import glob

    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libs:
        pytest.fail("libfaketime is not installed: run the README's test command")
    return lockrun_env(url, LD_PRELOAD=libs[0], FAKETIME=spec, FAKETIME_DONT_FAKE_MONOTONIC="1",
                       FAKETIME_NO_CACHE="1", **extra)
