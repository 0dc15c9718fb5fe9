"""Which server is the Sentinel primary now, and whether a write there will stay.

Why not redis-py's ``Sentinel.master_for``: it asks ``SENTINEL MASTERS``,
which keeps naming the old primary until the failover is complete (every
replica reconfigured), while ``GET-MASTER-ADDR-BY-NAME`` names the promoted
replica as soon as the sentinels have seen the promotion. The old primary stays
writable in between, and whatever lockrun writes there (a renewal, the done
record) is wiped when it is demoted. So every new connection asks the current
answer, and the server must confirm it is a primary before lockrun writes.

A write that reached the named primary can still be lost when that primary is
itself being replaced: the promotion happens before any sentinel names the new
server. ``PrimarySession.replicas_acknowledged`` catches that case: the
promoted replica no longer acknowledges the old primary's writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

REPLICA_SILENT_MS = 2000
"""A replica the sentinel has not heard from for this long is not expected to acknowledge
(the sentinels ping every second; the down-after period flags it much later)."""


class NoPrimary(redis.exceptions.ConnectionError):
    """No sentinel named a primary. The text matches redis-py's MasterNotFoundError, so
    LockClient's one-line mapping of "No master found for ..." applies unchanged."""


class NotPrimary(redis.exceptions.ConnectionError):
    """The server the sentinels name does not say it is a primary (a failover under way)."""


Address = tuple[str, int]


@dataclass(frozen=True)
class Acknowledged:
    """What a WAIT proved: *replicas* of the *expected* acknowledged the write. *silent*
    are expected replicas that were not even connected to the server written to."""

    replicas: int
    expected: int
    silent: tuple[Address, ...] = ()


def _fields(entry: Any) -> dict[str, str]:
    """A sentinel reply entry as a dict, whether redis-py parsed it or not."""
    if isinstance(entry, dict):
        return {str(k): str(v) for k, v in entry.items()}
    flat = [str(x) for x in entry]
    return dict(zip(flat[::2], flat[1::2], strict=False))


class Sentinels:
    """The sentinels of one service, asked in order; the one that answered is asked first next.

    Each sentinel costs at most one connect and one read timeout: there is no
    retry loop, so a dead sentinel delays a resolution by one timeout at most,
    and only until a live one has moved to the front.
    """

    def __init__(self, hosts: list[Address], service: str, kwargs: dict[str, Any]) -> None:
        self.service = service
        self._clients = [redis.Redis(host=h, port=p, decode_responses=True, **kwargs)
                         for h, p in hosts]

    def _ask(self, *command: str) -> tuple[Any, list[str]]:
        errors: list[str] = []
        for i, client in enumerate(self._clients):
            try:
                reply = client.execute_command(*command)  # type: ignore[no-untyped-call]
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                errors.append(f"{client.connection_pool.connection_kwargs.get('host')}:"
                              f"{client.connection_pool.connection_kwargs.get('port')} - "
                              f"{exc!r}")
                continue
            if i:
                self._clients.insert(0, self._clients.pop(i))
            return reply, errors
        return None, errors

    def primary(self) -> Address:
        """The primary the first answering sentinel names now (GET-MASTER-ADDR-BY-NAME)."""
        reply, errors = self._ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if reply:
            host, port = reply[0], reply[1]
            return str(host), int(port)
        detail = f" : {', '.join(errors)}" if errors and len(errors) == len(self._clients) \
            else ""
        raise NoPrimary(f"No master found for {self.service!r}{detail}")

    def replicas_expected(self, primary: Address) -> list[Address]:
        """The replicas of *primary* that should acknowledge a write, by the sentinels' list.

        Every replica the sentinel knows and heard from recently (a ping
        reply) that is not flagged down, whatever role it reported last: a
        replica being promoted no longer acknowledges the old primary, which
        is how a write to a primary that is being replaced is caught before
        any sentinel names the new one (the caller writes to such a replica
        too). During a failover the list may still be the old primary's; the
        server being written to is then left out.
        """
        reply, _ = self._ask("SENTINEL", "REPLICAS", self.service)
        expected: list[Address] = []
        for entry in reply or []:
            f = _fields(entry)
            flags = set(f.get("flags", "").split(","))
            address = (str(f.get("ip")), int(f.get("port", "0")))
            # not "disconnected": a promoted replica kills every client link (the
            # sentinels' too), so right then it looks disconnected to all of them
            if address == primary or {"s_down", "o_down"} & flags:
                continue
            if int(f.get("last-ok-ping-reply", "0")) > REPLICA_SILENT_MS:
                continue
            expected.append(address)
        return expected

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _role(info: Any) -> str:
    if isinstance(info, dict):
        return str(info.get("role", ""))
    for line in str(info).splitlines():
        if line.startswith("role:"):
            return line[5:].strip()
    return ""


def _connected_replicas(info: str) -> set[Address]:
    """The replicas a primary's INFO replication lists (``slaveN:ip=...,port=...``)."""
    found: set[Address] = set()
    for line in info.splitlines():
        if line.startswith("slave") and ":ip=" in line:
            fields = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].split(",")
                          if "=" in kv)
            found.add((fields.get("ip", ""), int(fields.get("port", "0"))))
    return found


class PrimaryConnection(redis.Connection):
    """A connection to whichever server the sentinels name when it connects, if it is a primary.

    Every new connection resolves again, so dropping the pool's connections
    (LockClient.follow_primary) makes the next command follow a failover.
    ``session`` counts the connects, so a caller can tell that two commands
    ran in the same server session (WAIT only counts that session's writes).
    """

    def __init__(self, *, sentinels: Sentinels, address: Address | None = None,
                 **kwargs: Any) -> None:
        self.sentinels = sentinels
        self.address = address
        self.session = 0
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self.host, self.port = self.address or self.sentinels.primary()
        super().connect_check_health(check_health=check_health,
                                     retry_socket_connect=retry_socket_connect)

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        self.send_command("INFO", "replication")  # type: ignore[no-untyped-call]
        role = _role(self.read_response())
        if role != "master":
            raise NotPrimary(
                f"{self.host}:{self.port}, which the sentinels name as the primary of "
                f"{self.sentinels.service}, reports role {role or 'unknown'}: a failover is "
                "under way")
        self.session += 1


def primary_client(sentinels: Sentinels, kwargs: dict[str, Any]) -> redis.Redis:
    """A client of the current primary; its pool resolves on every new connection."""
    pool = redis.ConnectionPool(connection_class=PrimaryConnection, sentinels=sentinels,
                                **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


class PrimarySession:
    """One server session on the current primary: a write and its WAIT go through it.

    WAIT counts only the writes of the session it is sent in, so the done
    record and its WAIT must share this session; a session that reconnected
    in between would "acknowledge" nothing and prove nothing, and is refused.
    """

    def __init__(self, sentinels: Sentinels, kwargs: dict[str, Any],
                 address: Address | None = None) -> None:
        """On the primary the sentinels name now, or on *address* (a replica being promoted),
        which must say it is a primary all the same."""
        self.sentinels = sentinels
        self._conn = PrimaryConnection(sentinels=sentinels, address=address, **kwargs)
        self._conn.connect()  # type: ignore[no-untyped-call]
        self.address: Address = (str(self._conn.host), int(self._conn.port))
        self._session = self._conn.session

    def execute(self, *command: str | int) -> Any:
        if self._conn.session != self._session or not self._conn._sock:
            raise redis.exceptions.ConnectionError(
                f"the connection to {self.address[0]}:{self.address[1]} was lost")
        self._conn.send_command(*command)
        return self._conn.read_response()

    def replicas_acknowledged(self, timeout_ms: int) -> Acknowledged:
        """WAIT for the replicas the sentinels expect; their count, and how many answered."""
        expected = self.sentinels.replicas_expected(self.address)
        if not expected:
            return Acknowledged(0, 0)
        acked = int(self.execute("WAIT", len(expected), timeout_ms))
        if acked >= len(expected):
            return Acknowledged(acked, len(expected))
        connected = _connected_replicas(str(self.execute("INFO", "replication")))
        silent = tuple(a for a in expected if a not in connected)
        return Acknowledged(acked, len(expected), silent)

    def still_primary(self) -> bool:
        """Whether the sentinels still name this session's server, asked anew."""
        return self.sentinels.primary() == self.address

    def close(self) -> None:
        self._conn.disconnect()  # type: ignore[no-untyped-call]

    def __enter__(self) -> PrimarySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
