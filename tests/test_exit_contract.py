"""Every verb keeps the exit contract when Redis cannot be used, on every topology.

One table: the wrapper and each admin verb, against ``redis://``, ``unix://``,
``redis+sentinel://`` and ``redis+cluster://``, with Redis refusing connections,
never answering (blackholed), or refusing the password. Each cell must give the
documented status (75, or ``--error-exit-code``, for the wrapper, ``status``,
``history`` and ``unlock``; 1 with the failing check named for ``doctor``), one
line, no traceback, no password, and end within a few ``--redis-timeout``s: an
environment problem is never exit 70, never a retry loop and never a hang.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LOCKRUN, RedisServer, free_port, lockrun_env, wait_for

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py

TIMEOUT_S = 0.5
"""--redis-timeout of every cell: small, so a blackholed cell is quick and a hang obvious."""
STARTUP_S = 3.0
"""What starting lockrun may cost on a loaded 2-core machine, on top of its timeouts."""
DEADLINE_S = 4 * TIMEOUT_S + STARTUP_S
WRONG = "Wr0ng-s3cret-pw"
"""The password every URL carries; it must never appear in any output."""
RIGHT = "the-r1ght-pw"
SERVICE = "exit-contract"
TOPOLOGIES = ("redis", "unix", "sentinel", "cluster")


@dataclass(frozen=True)
class Verb:
    """One command line and what it owes the operator when Redis cannot be used."""

    name: str
    args: tuple[str, ...]
    status: int
    connections: int
    """How many connections it may open to a server that never answers: one per call it
    cannot do without. More means a retry loop."""

    @property
    def is_doctor(self) -> bool:
        return self.args[0] == "doctor"


VERBS = (
    # the wrapper may need more than one call: the claim, then giving back a claim whose
    # reply was lost (on a fresh connection); three connections at most, each bounded
    Verb("wrapper", ("-k", "K", "--", "sh", "-c", "echo job-ran"), 75, 3),
    Verb("wrapper -E9", ("-k", "K", "--error-exit-code", "9", "--", "sh", "-c", "echo job-ran"),
         9, 3),
    Verb("status", ("status",), 75, 1),
    Verb("status KEY", ("status", "K"), 75, 1),
    Verb("history KEY", ("history", "K"), 75, 1),
    Verb("unlock KEY --yes", ("unlock", "K", "--yes"), 75, 1),
    Verb("pause KEY", ("pause", "K", "--reason", "maintenance"), 75, 1),
    Verb("resume --all", ("resume", "--all"), 75, 1),
    Verb("cancel KEY --fire", ("cancel", "K", "--fire", "f1"), 75, 1),
    Verb("doctor", ("doctor",), 1, 1),
)


class Blackhole:
    """A listener that accepts connections and never answers: a Redis behind a dead route,
    or a stopped process. Counts the connections, so a retry loop shows."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        if path is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
        self.sock.listen(16)
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, topology: str) -> str:
        if self.path is not None:
            return url_for(topology, path=self.path)
        return url_for(topology, port=int(self.sock.getsockname()[1]))

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self._held.append(conn)

    def connections(self) -> int:
        """Connections accepted so far, counting those still in the backlog: a probe of
        ours, queued behind them, is accepted only after every earlier one."""
        family = socket.AF_INET if self.path is None else socket.AF_UNIX
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            if self.path is not None:  # a name, so the accepted end can be told apart
                probe.bind(f"\0exit-contract-probe-{os.getpid()}-{id(probe)}")
            probe.connect(self.sock.getsockname())
            me = probe.getsockname()
            wait_for(lambda: any(c.getpeername() == me for c in list(self._held)), 10,
                     "the probe to be accepted")
        return self.accepted - 1

    def close(self) -> None:
        # shutdown wakes the accept() of the thread; close alone may not
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        for conn in self._held:
            conn.close()


def refusing_port() -> socket.socket:
    """A port that refuses connections: bound (so nobody else takes it) but not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_for(topology: str, port: int = 0, path: str = "") -> str:
    """The URL a user of *topology* writes, with a (wrong) password in it."""
    return {
        "redis": f"redis://:{WRONG}@127.0.0.1:{port}/0",
        "unix": f"unix://:{WRONG}@{path}",
        "sentinel": f"redis+sentinel://:{WRONG}@127.0.0.1:{port}/{SERVICE}",
        "cluster": f"redis+cluster://:{WRONG}@127.0.0.1:{port}",
    }[topology]


@dataclass
class Cell:
    verb: Verb
    topology: str
    url: str
    blackhole: Blackhole | None = None
    password_refused: bool = False

    def __str__(self) -> str:
        return f"{self.verb.name} on {self.topology}"


def run(cell: Cell) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the cell's command as cron would (no terminal); a hang ends as exit -9."""
    env = lockrun_env(cell.url, LOCKRUN_CONFIG="", LOCKRUN_REDIS_TIMEOUT=f"{TIMEOUT_S:g}")
    start = time.monotonic()
    try:
        result = subprocess.run([str(LOCKRUN), *cell.verb.args], env=env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=3 * DEADLINE_S)
    except subprocess.TimeoutExpired as exc:  # killed by subprocess.run
        result = subprocess.CompletedProcess(exc.cmd, -9, _text(exc.stdout), _text(exc.stderr))
    return result, time.monotonic() - start


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def problems_of(cell: Cell) -> list[str]:
    """What this cell's run breaks of the contract; empty when it keeps it."""
    r, elapsed = run(cell)
    output = r.stdout + r.stderr
    found: list[str] = []
    if r.returncode != cell.verb.status:
        found.append(f"exit {r.returncode}, expected {cell.verb.status}")
    if "Traceback" in output:
        found.append("a traceback")
    if WRONG in output:
        found.append("the password in the output")
    if elapsed > DEADLINE_S:
        found.append(f"took {elapsed:.1f}s, more than {DEADLINE_S:g}s")
    opened = cell.blackhole.connections() if cell.blackhole is not None else 0
    if opened > cell.verb.connections:
        found.append(f"{opened} connections to a silent server, at most "
                     f"{cell.verb.connections} expected (a retry loop?)")
    if "job-ran" in r.stdout:
        found.append("the job ran without a lock")
    if cell.verb.is_doctor:
        # doctor's own output: the one failing check, on stdout; nothing on stderr
        lines = r.stdout.splitlines()
        check = "auth" if cell.password_refused else "connection"
        if len(lines) != 1 or not lines[0].startswith(f"fail  {check}: cannot use Redis at "):
            found.append(f"doctor printed {r.stdout!r}, expected one 'fail  {check}:' line")
        if r.stderr:
            found.append(f"doctor wrote to stderr: {r.stderr!r}")
    else:
        lines = r.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("lockrun: cannot use Redis at "):
            found.append(f"stderr {r.stderr!r}, expected one 'lockrun: cannot use Redis' line")
        elif cell.password_refused and "password" not in lines[0]:
            found.append(f"the line does not say the password was refused: {lines[0]!r}")
        if r.stdout:
            found.append(f"stdout {r.stdout!r}")
    return [f"{cell}: {p}" for p in found]


def assert_contract_kept(cells: list[Cell]) -> None:
    assert len(cells) == len(VERBS) * len(TOPOLOGIES)
    with ThreadPoolExecutor(4) as pool:
        problems = [p for found in pool.map(problems_of, cells) for p in found]
    assert problems == [], "\n".join(problems)


def every_cell(url: Callable[[str], str], password_refused: bool = False) -> list[Cell]:
    """One cell per verb and topology; *url* gives a topology's URL."""
    return [Cell(verb, topology, url(topology), password_refused=password_refused)
            for verb in VERBS for topology in TOPOLOGIES]


def test_every_verb_exits_with_its_status_when_redis_refuses_connections(
        tmp_path: Path) -> None:
    closed = refusing_port()
    try:
        port = closed.getsockname()[1]
        assert_contract_kept(every_cell(
            lambda topology: url_for(topology, port, str(tmp_path / "no-redis.sock"))))
    finally:
        closed.close()


def test_every_verb_gives_up_after_its_timeouts_when_redis_never_answers(
        tmp_path: Path) -> None:
    cells: list[Cell] = []
    try:
        for verb in VERBS:
            for topology in TOPOLOGIES:
                path = str(tmp_path / f"silent{len(cells)}.sock")
                hole = Blackhole(path if topology == "unix" else None)
                cells.append(Cell(verb, topology, hole.url(topology), blackhole=hole))
        assert_contract_kept(cells)
        # each cell really met the silent server (not a refusal, not a usage error)
        assert all(c.blackhole is not None and c.blackhole.accepted >= 2 for c in cells)
    finally:
        for cell in cells:
            if cell.blackhole is not None:
                cell.blackhole.close()


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int]]:
    """A real redis-server that requires a password, and a real sentinel that names it.

    The sentinel knows the password (auth-pass), as in production: only the
    client's password is wrong, so the refusal comes from the primary at the
    first call, which is what a user with a wrong password sees.
    """
    workdir = tmp_path_factory.mktemp("guarded")
    server = RedisServer(workdir / "redis")
    server.client().config_set("requirepass", RIGHT)
    port = free_port()
    conf = workdir / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"logfile {workdir / 'sentinel.log'}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {server.port} 1\n"
                    f"sentinel auth-pass {SERVICE} {RIGHT}\n")
    sentinel = subprocess.Popen([server.binary, str(conf), "--sentinel"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        def names_the_primary() -> bool:
            import redis

            try:
                return redis.Redis(port=port, socket_timeout=1).execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE) is not None
            except redis.exceptions.RedisError:
                return False

        wait_for(names_the_primary, 30, "the sentinel to name the primary")
        yield server, port
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        server.stop()


def test_every_verb_says_redis_refused_the_password_without_showing_it(
        guarded_redis: tuple[RedisServer, int]) -> None:
    server, sentinel_port = guarded_redis
    ports = {"redis": server.port, "sentinel": sentinel_port, "cluster": server.port}
    assert_contract_kept(every_cell(
        lambda topology: url_for(topology, ports.get(topology, 0), server.socket),
        password_refused=True))


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_unlock_without_yes_and_without_a_terminal_is_a_usage_error_before_redis_is_contacted(
        tmp_path: Path, topology: str) -> None:
    path = str(tmp_path / "silent.sock")
    hole = Blackhole(path if topology == "unix" else None)
    try:
        cell = Cell(Verb("unlock KEY", ("unlock", "K"), 64, 0), topology, hole.url(topology))
        r, _ = run(cell)
        assert r.returncode == 64
        assert r.stderr.startswith("lockrun: ") and "--yes" in r.stderr
        assert len(r.stderr.splitlines()) == 1 and r.stdout == ""
        assert "Traceback" not in r.stderr and WRONG not in r.stderr
        assert hole.connections() == 0
    finally:
        hole.close()


def test_the_blackhole_of_these_tests_is_silent_but_accepts() -> None:
    """The table's blackholed cells prove something only if the listener really accepts."""
    hole = Blackhole()
    try:
        with socket.create_connection(hole.sock.getsockname(), timeout=5) as conn:
            conn.settimeout(0.2)
            conn.sendall(b"PING\r\n")
            with pytest.raises(TimeoutError):
                conn.recv(1)
        assert hole.connections() == 1
    finally:
        hole.close()


def test_the_refusing_port_of_these_tests_refuses() -> None:
    closed = refusing_port()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", closed.getsockname()[1]), timeout=5)
    finally:
        closed.close()
