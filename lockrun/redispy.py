"""The redis-py transport: Sentinel, Cluster, and direct URLs when asked for (a debugging switch).

Why keep redis-py at all: Sentinel (lockrun.sentinel follows a failover
connection by connection) and Cluster (slot routing, MOVED) are topology
logic that redis-py does well and that costs its import, ~100 ms, only on
the fleets that chose those topologies. For ``redis://``, ``rediss://`` and
``unix://`` lockrun.resp is the default; ``LOCKRUN_TRANSPORT=redis-py`` puts
this module under the same URL, so the test suite can run every protocol
test over both and an operator can rule lockrun.resp out when in doubt.

Every redis-py failure leaves here as one of lockrun.resp's classes with the
same text, so lockrun.client maps both transports' failures with one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lockrun.redisurl import RedisURL
from lockrun.resp import ConnectionLost, NoScript, ServerError, Timeout, TransportError

if TYPE_CHECKING:
    from lockrun.redisurl import TlsFiles
    from lockrun.resp import Arg
    from lockrun.sentinel import PrimarySession

CLIENT_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


def translate(exc: Exception) -> TransportError:
    """redis-py's exception as lockrun.resp's class, with its text unchanged."""
    text = str(exc)
    if isinstance(exc, redis.exceptions.NoScriptError):
        return NoScript(text, "NOSCRIPT")
    if isinstance(exc, redis.exceptions.TimeoutError):
        return Timeout(text, connecting="connecting" in text)
    if isinstance(exc, redis.exceptions.AuthenticationError):  # a refusal, as lockrun.resp's
        return ServerError(text, "WRONGPASS", dropped=True)
    if isinstance(exc, redis.exceptions.ConnectionError):
        return ConnectionLost(text)
    if isinstance(exc, redis.exceptions.ResponseError):
        return ServerError(text, str(getattr(exc, "status_code", "") or ""))
    return TransportError(text)


def _hosts(url: RedisURL) -> list[tuple[str, int]]:
    """The checked HOST:PORT list of a Sentinel or Cluster URL, as redis-py takes it."""
    return list(url.hosts)


def _direct_client(url: RedisURL, common: dict[str, Any], auth: dict[str, Any],
                   tls: TlsFiles | None) -> redis.Redis:
    """redis://, rediss:// or unix:// from the checked fields, as Redis.from_url would build it.

    The same pool and connection classes as from_url, but no second URL
    parser: nothing the check refused can reach a socket.
    """
    kwargs: dict[str, Any] = {"db": url.db, "decode_responses": True, **common, **auth}
    if url.path is not None:
        kwargs.update(connection_class=redis.UnixDomainSocketConnection, path=url.path)
    else:
        host, port = url.hosts[0]
        kwargs.update(host=host, port=port)
        if url.tls:
            names = {"ca": "ssl_ca_certs", "cert": "ssl_certfile", "key": "ssl_keyfile"}
            given = {"ca": tls.ca, "cert": tls.cert, "key": tls.key} if tls else {}
            files = {names[k]: v for k, v in given.items() if v}
            kwargs.update(connection_class=redis.SSLConnection, **files)
    client = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
    client.auto_close_connection_pool = True
    return client


def _cluster_client(nodes: list[tuple[str, int]], auth: dict[str, Any],
                    common: dict[str, Any]) -> Any:
    """A cluster client that routes each script by its keys (one slot per job)."""
    from redis.cluster import ClusterNode, RedisCluster

    startup = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=startup,
                        decode_responses=True, cluster_error_retry_attempts=0, **auth,
                        **common)


def _sentinel_primary(url: RedisURL, common: dict[str, Any],
                      auth: dict[str, Any]) -> redis.Redis:
    """A client whose every new connection goes to the primary the sentinels name now.

    The sentinels get the same bounded, retry-free settings as the primary, so
    a dead sentinel costs one timeout, not a retry loop. See lockrun.sentinel
    for why this is not redis-py's Sentinel.master_for.
    """
    from lockrun.sentinel import Sentinels, primary_client

    sentinels = Sentinels(_hosts(url), str(url.service), dict(common))
    return primary_client(sentinels, {"db": url.db, "decode_responses": True, **common,
                                      **auth})


class RedisPyTransport:
    """redis-py with bounded timeouts and no hidden retries (lockrun.client.Transport).

    redis-py retries by default; a silent retry of a non-idempotent call or a
    retry loop that outlasts the lease are both worse than lockrun.client's
    explicit, bounded retry of our own idempotent scripts.
    """

    errors: tuple[type[Exception], ...] = (*CLIENT_ERRORS, TransportError)
    """The Sentinel session (lockrun.sentinel) raises redis-py's own."""

    def __init__(self, url: RedisURL, timeout: float, auth: dict[str, Any],
                 tls: TlsFiles | None) -> None:
        self.timeout = timeout
        common: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,  # RESP3 would cost a HELLO round trip on every connection
            "driver_info": None,  # no CLIENT SETINFO round trips either
            "health_check_interval": 0,
        }
        self.follows_sentinel = url.scheme == "redis+sentinel"
        self.cluster = url.scheme == "redis+cluster"
        self._redis: Any = None
        if self.cluster:
            nodes = _hosts(url)
            # connecting fetches the slot map, so it waits for the first call,
            # where failures are mapped like any other
            self._factory: Callable[[], Any] = lambda: _cluster_client(nodes, auth, common)
        elif self.follows_sentinel:
            self._redis = _sentinel_primary(url, common, auth)
        else:
            self._redis = _direct_client(url, common, auth, tls)

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = self._factory()
        return self._redis

    def execute(self, *args: Arg) -> object:
        try:
            return self._client().execute_command(*args)
        except CLIENT_ERRORS as exc:
            raise translate(exc) from exc

    def wait(self, key: str, replicas: int, timeout_ms: int) -> int:
        """WAIT on the connection that last wrote *key*, read with a long enough timeout.

        WAIT only counts the writes of the connection it is sent on. The pools
        hand back the most recently used connection (LIFO), so taking one from
        the pool of the node that serves *key*'s slot reuses the acquire's
        connection.
        """
        try:
            if self.cluster:
                pool = self._client().get_node_from_key(key).redis_connection.connection_pool
            else:
                pool = self._client().connection_pool
            conn = pool.get_connection()
            try:
                conn.send_command("WAIT", replicas, timeout_ms)
                return int(conn.read_response(timeout=timeout_ms / 1000 + self.timeout))
            finally:
                pool.release(conn)
        except CLIENT_ERRORS as exc:
            raise translate(exc) from exc

    def follow_primary(self) -> None:
        """With Sentinel, drop the connections: the next one asks the sentinels anew."""
        if self.follows_sentinel:
            self._redis.connection_pool.disconnect()

    def primary_session(self, address: tuple[str, int] | None = None) -> PrimarySession:
        from lockrun.sentinel import PrimarySession

        kwargs = dict(self._redis.connection_pool.connection_kwargs)
        sentinels = kwargs.pop("sentinels")
        try:
            return PrimarySession(sentinels, kwargs, address)
        except CLIENT_ERRORS as exc:
            raise translate(exc) from exc

    def scan_cluster(self, pattern: str) -> Iterator[str]:
        """Every primary holds a share of the keys: redis-py asks each."""
        try:
            yield from self._client().scan_iter(match=pattern, count=1000)
        except CLIENT_ERRORS as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        if self._redis is None:
            return
        try:
            self._redis.close()
        except redis.exceptions.RedisError:
            pass  # closing a broken socket must not mask the job's result
