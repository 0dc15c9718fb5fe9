"""Real Redis topologies: one server, a Sentinel set, a Cluster.

Why one module: the pytest fixtures and the standalone fleet simulation
(``tests/fleet/sim.py``) must start the same servers the same way, so that what
the simulation proves about a topology is what the tests exercise. Nothing here
depends on pytest.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

PreExec = Callable[[], None] | None
START_DEADLINE_S = 30.0
TOPOLOGY_DEADLINE_S = 60.0
SENTINEL_SERVICE = "lockrun-test"


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll with a deadline; never a fixed sleep as synchronisation."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run the README's test command")
    return binary


class RedisServer:
    """A private redis-server: its own port, unix socket and directory."""

    def __init__(self, workdir: Path, extra: list[str] | None = None,
                 port: int | None = None, *, persistent: bool = False,
                 preexec_fn: PreExec = None) -> None:
        self.binary = _binary()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.socket = str(self.dir / "redis.sock")
        self.extra = extra or []
        self.persistent = persistent
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def persistence(self) -> str:
        return ("--appendonly yes --appendfsync always" if self.persistent
                else "--save '' --appendonly no")

    def start(self) -> None:
        keep = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent \
            else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", str(self.dir), "--save", "", *keep,
             "--logfile", str(self.dir / "redis.log"), *self.extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=self.preexec_fn,
        )
        if not wait_until(self._ping, START_DEADLINE_S):
            self.stop()
            raise RuntimeError(f"redis-server in {self.dir} did not answer within "
                               f"{START_DEADLINE_S:g}s")

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

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, decode_responses=True,
                           socket_timeout=timeout, socket_connect_timeout=timeout)

    def pause(self) -> None:
        """Blackhole: the process keeps its sockets but stops answering."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def crash_restart(self) -> None:
        """SIGKILL and start again: what survives is what the persistence config kept."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class SentinelSet:
    """A primary, *replicas* replicas and three sentinels (quorum 2), all on 127.0.0.1.

    Two replicas by default: with one, a failover has no other replica to
    reconfigure, and the sentinels switch in about a second; with two, the
    window in which they already name the new primary but still list the old
    one (and the old one still accepts writes) lasts several seconds, which is
    where a client that follows the wrong answer loses its writes.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False, down_after_ms: int = 2000,
                 replicas: int = 2, preexec_fn: PreExec = None) -> None:
        self.service = SENTINEL_SERVICE
        self.replica_count = replicas
        # a full sync starts at once instead of after 5 s: many failovers fit in one test
        fast = ["--repl-diskless-sync-delay", "0"]
        primary = RedisServer(workdir / "primary", fast, persistent=persistent,
                              preexec_fn=preexec_fn)
        self.servers = [primary]
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []
        try:
            for i in range(replicas):
                self.servers.append(RedisServer(
                    workdir / f"replica{i}",
                    [*fast, "--replicaof", "127.0.0.1", str(primary.port)],
                    persistent=persistent, preexec_fn=preexec_fn))
            for i in range(3):
                port = free_port()
                d = workdir / f"sentinel{i}"
                d.mkdir(parents=True)
                conf = d / "sentinel.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d / 'sentinel.log'}\n"
                    f"sentinel monitor {self.service} 127.0.0.1 {primary.port} 2\n"
                    f"sentinel down-after-milliseconds {self.service} {down_after_ms}\n"
                    f"sentinel failover-timeout {self.service} 10000\n")
                proc = subprocess.Popen([_binary(), str(conf), "--sentinel"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=preexec_fn)
                self.sentinels.append((port, proc))
            if not wait_until(self.settled, TOPOLOGY_DEADLINE_S, 0.1):
                raise RuntimeError("the sentinels did not see the replicas and each other")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def ask(self, *command: str | int, sentinel: int = 0) -> Any:
        client = redis.Redis(port=self.sentinels[sentinel][0], decode_responses=True,
                             socket_timeout=5)
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def _master_fields(self, sentinel: int) -> dict[str, str]:
        info = self.ask("SENTINEL", "MASTER", self.service, sentinel=sentinel)
        return info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))

    def settled(self) -> bool:
        """No failover under way: every sentinel lists the same primary, which really is one,
        with every replica online and in sync (so the next SENTINEL FAILOVER has a candidate),
        and the former primary already demoted."""
        try:
            port = self.primary_port()
            for i in range(len(self.sentinels)):
                fields = self._master_fields(i)
                if int(fields["port"]) != port or "failover" in fields["flags"] \
                        or int(fields["num-slaves"]) < self.replica_count \
                        or int(fields["num-other-sentinels"]) < 2:
                    return False
            primary = self.primary().client(1).info("replication")
            online = [v for k, v in primary.items() if k.startswith("slave")
                      and isinstance(v, dict) and v.get("state") == "online"]
            return primary["role"] == "master" and len(online) == self.replica_count
        except (redis.exceptions.RedisError, KeyError, ValueError, StopIteration):
            return False

    def primary_port(self, sentinel: int = 0) -> int:
        """The port the sentinel names now (GET-MASTER-ADDR-BY-NAME: it changes first)."""
        address = self.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service,
                           sentinel=sentinel)
        return int(address[1])

    def primary(self) -> RedisServer:
        port = self.primary_port()
        return next(s for s in self.servers if s.port == port)

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A client of whichever server the sentinels name as primary now."""
        return self.primary().client(timeout)

    def holder(self, key: str) -> RedisServer:
        """The server that holds *key*: the primary, as for every key."""
        return self.primary()

    def start_failover(self, sentinel: int = 0) -> int:
        """Have *sentinel* lead a failover (SENTINEL FAILOVER) and return at once with the
        old primary's port. Only the leader knows at first; the others learn the new
        primary from its hello messages."""
        old = self.primary_port()

        def asked() -> bool:
            try:
                self.ask("SENTINEL", "FAILOVER", self.service, sentinel=sentinel)
            except redis.exceptions.ResponseError as exc:
                if "NOGOODSLAVE" in str(exc):  # its view of the replicas is not fresh yet
                    return False
                raise
            return True

        if not wait_until(asked, TOPOLOGY_DEADLINE_S, 0.1):
            raise RuntimeError("no sentinel found a replica to promote")
        return old

    def named_by_all(self, port: int) -> bool:
        """Every sentinel answers GET-MASTER-ADDR-BY-NAME with *port*."""
        try:
            return all(self.primary_port(i) == port for i in range(len(self.sentinels)))
        except (redis.exceptions.RedisError, TypeError):
            return False

    def failover(self) -> int:
        """Promote a replica; returns the new primary's port once the sentinels agree."""
        old = self.start_failover()
        if not wait_until(lambda: self.primary_port() != old, TOPOLOGY_DEADLINE_S, 0.05):
            raise RuntimeError("SENTINEL FAILOVER did not complete")
        return self.primary_port()

    def finish_failover(self, old: int) -> None:
        """Wait until the failover away from *old* is over, old primary demoted included.

        Sentinel demotes the old primary only after it has reported itself a
        primary for 8 s (4 hello periods) past the switch; REPLICAOF here does
        exactly what that +convert-to-slave would do, sooner, so a test can run
        many failovers in a row. What lockrun wrote to the old primary is lost
        either way: the demotion replaces its data with the new primary's.
        """
        if not wait_until(lambda: self.primary_port() != old
                          and all(int(self._master_fields(i)["port"]) != old
                                  for i in range(len(self.sentinels))),
                          TOPOLOGY_DEADLINE_S, 0.05):
            raise RuntimeError("the sentinels did not switch to the new primary")
        new = self.primary_port()
        former = next(s for s in self.servers if s.port == old)
        if former.client(1).info("replication")["role"] == "master":
            former.client(1).execute_command(  # type: ignore[no-untyped-call]
                "REPLICAOF", "127.0.0.1", str(new))
        if not wait_until(self.settled, TOPOLOGY_DEADLINE_S, 0.1):
            raise RuntimeError("the topology did not settle after the failover")

    def stop(self) -> None:
        for _, proc in self.sentinels:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.sentinels.clear()
        for s in self.servers:
            s.stop()


class Cluster:
    """A Redis Cluster on 127.0.0.1: *primaries* primaries with *replicas* replicas each."""

    def __init__(self, workdir: Path, primaries: int = 3, replicas: int = 0, *,
                 persistent: bool = False, preexec_fn: PreExec = None) -> None:
        self.nodes: list[RedisServer] = []
        self.replicas = replicas
        try:
            for i in range(primaries * (1 + replicas)):
                self.nodes.append(RedisServer(
                    workdir / f"n{i}", ["--cluster-enabled", "yes", "--cluster-config-file",
                                        "nodes.conf", "--cluster-node-timeout", "5000"],
                    port=free_cluster_port(), persistent=persistent, preexec_fn=preexec_fn))
            subprocess.run(["redis-cli", "--cluster", "create",
                            *(f"127.0.0.1:{n.port}" for n in self.nodes),
                            "--cluster-replicas", str(replicas), "--cluster-yes"],
                           check=True, capture_output=True, timeout=TOPOLOGY_DEADLINE_S)
            if not wait_until(self._ready, TOPOLOGY_DEADLINE_S, 0.1):
                raise RuntimeError("the cluster did not reach state ok")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            expected = len(self.nodes)
            for n in self.nodes:
                c = n.client(1)
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
                if len(str(c.execute_command("CLUSTER", "NODES")).splitlines()) != expected:  # type: ignore[no-untyped-call]
                    return False
                info = c.info("replication")
                if info["role"] == "master" and sum(  # replicas in sync: WAIT and FAILOVER work
                        1 for k, v in info.items() if k.startswith("slave")
                        and isinstance(v, dict) and v.get("state") == "online") < self.replicas:
                    return False
            return True
        except (redis.exceptions.RedisError, KeyError):
            return False

    @property
    def url(self) -> str:
        """Two seed nodes, as a user would give them: the client discovers the rest."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def client(self, timeout: float = 5.0) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True,
                            socket_timeout=timeout, socket_connect_timeout=timeout)

    def holder(self, key: str) -> RedisServer:
        """The primary that serves *key*'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for n in self.nodes:
            try:
                for start, end, *owners in n.client(1).execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        port = int(owners[0][1])
                        return next(m for m in self.nodes if m.port == port)
            except redis.exceptions.RedisError:
                continue
        raise RuntimeError(f"no node serves the slot of {key}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        node_id = str(primary.client().execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER", "MYID"))
        for line in str(primary.client().execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3] == node_id and "slave" in fields[2]:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"the node on port {primary.port} has no replica")

    def failover(self, key: str) -> RedisServer:
        """CLUSTER FAILOVER on the replica of *key*'s primary: a coordinated hand-over."""
        old = self.holder(key)
        new = self.replica_of(old)
        new.client().execute_command("CLUSTER", "FAILOVER")  # type: ignore[no-untyped-call]
        if not wait_until(lambda: self.holder(key).port == new.port, TOPOLOGY_DEADLINE_S, 0.05):
            raise RuntimeError("CLUSTER FAILOVER did not complete")
        return new

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


# ------------------------------------------------------------------ TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A test CA, a server certificate for 127.0.0.1, and a client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=lockrun-test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext",
                 cwd=d)
    # a second, unrelated CA: trusting it must not be enough
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
             "other.crt", "-days", "2", "-subj", "/CN=other-ca", cwd=d)
