"""One Redis connection for lockrun: bounded timeouts, no hidden retries, one error mapping.

Built from the checked --redis-url fields for a single server, a Sentinel
primary or a Cluster; every redis-py failure leaves here as one
RedisUnavailable line with the URL redacted. What is said over the
connection (the Lua scripts, the lease) lives in lockrun.protocol.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lockrun.errors import RedisUnavailable, UsageError
from lockrun.output import redact
from lockrun.redisurl import RedisURL
from lockrun.redisurl import parse as parse_redis_url

if TYPE_CHECKING:
    from lockrun.sentinel import PrimarySession


def _denied_command(script: str, error: str) -> str | None:
    """Name the command behind "can't run this command ... @user_script:N" (Redis 7 ACLs)."""
    match = re.search(r"@user_script:(\d+)", error)
    if not match or ("permission" not in error.lower() and "can't run" not in error):
        return None
    lines = script.splitlines()
    number = int(match.group(1))
    # the script text starts with a newline, which Redis counts as line 1
    line = lines[number - 1] if 0 < number <= len(lines) else ""
    called = re.search(r"redis\.call\('(\w+)'", line)
    return called.group(1).upper() if called else None


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


CLIENT_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


def _hosts(url: RedisURL) -> list[tuple[str, int]]:
    """The checked HOST:PORT list of a Sentinel or Cluster URL, as redis-py takes it."""
    return list(url.hosts)


def _auth(url: RedisURL, password: str | None) -> dict[str, Any]:
    """A password in the URL wins over LOCKRUN_REDIS_PASSWORD and the file, as documented."""
    auth: dict[str, Any] = {}
    if url.username:
        auth["username"] = url.username
    if url.password or password:
        auth["password"] = url.password or password
    return auth


def _cluster_nodes(url: RedisURL, password: str | None) -> tuple[list[tuple[str, int]],
                                                                 dict[str, Any]]:
    return _hosts(url), _auth(url, password)


def _direct_client(url: RedisURL, common: dict[str, Any], password: str | None,
                   tls: TlsFiles | None) -> redis.Redis:
    """redis://, rediss:// or unix:// from the checked fields, as Redis.from_url would build it.

    The same pool and connection classes as from_url, but no second URL
    parser: nothing the check refused can reach a socket.
    """
    kwargs: dict[str, Any] = {"db": url.db, "decode_responses": True, **common,
                              **_auth(url, password)}
    if url.path is not None:
        kwargs.update(connection_class=redis.UnixDomainSocketConnection, path=url.path)
    else:
        host, port = url.hosts[0]
        kwargs.update(host=host, port=port)
        if url.tls:
            kwargs.update(connection_class=redis.SSLConnection,
                          **(tls.redis_kwargs() if tls else {}))
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
                      password: str | None) -> redis.Redis:
    """A client whose every new connection goes to the primary the sentinels name now.

    The sentinels get the same bounded, retry-free settings as the primary, so
    a dead sentinel costs one timeout, not a retry loop. See lockrun.sentinel
    for why this is not redis-py's Sentinel.master_for.
    """
    from lockrun.sentinel import Sentinels, primary_client

    sentinels = Sentinels(_hosts(url), str(url.service), dict(common))
    return primary_client(sentinels, {"db": url.db, "decode_responses": True, **common,
                                      **_auth(url, password)})


@dataclass(frozen=True)
class TlsFiles:
    """rediss:// trust and client identity; certificate verification stays on."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def redis_kwargs(self) -> dict[str, str]:
        names = {"ca": "ssl_ca_certs", "cert": "ssl_certfile", "key": "ssl_keyfile"}
        return {names[k]: v for k, v in vars(self).items() if v}


class LockClient:
    """One Redis connection with bounded timeouts and no hidden retries.

    redis-py retries by default; a silent retry of a non-idempotent call or a
    retry loop that outlasts the lease are both worse than an explicit,
    bounded retry of our own idempotent scripts.
    """

    def __init__(self, url: str, timeout: float, error_exit_code: int,
                 password: str | None = None, tls: TlsFiles | None = None) -> None:
        try:
            parsed = parse_redis_url(url)
        except UsageError as exc:  # the CLI checked it already; this is for other callers
            raise UsageError(f"invalid --redis-url {exc}") from None
        self.url = parsed.shown  # for messages only: the password is ***
        self.timeout = timeout
        self.error_exit_code = error_exit_code
        self._shas: dict[str, str] = {}
        common: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,  # RESP3 would cost a HELLO round trip on every connection
            "driver_info": None,  # no CLIENT SETINFO round trips either
            "health_check_interval": 0,
        }
        self.follows_sentinel = parsed.scheme == "redis+sentinel"
        self.cluster = parsed.scheme == "redis+cluster"
        self._factory: Callable[[], Any] | None = None
        if self.cluster:
            nodes, auth = _cluster_nodes(parsed, password)
            # connecting fetches the slot map, so it waits for the first call,
            # where failures are mapped like any other
            self._factory = lambda: _cluster_client(nodes, auth, common)
            self._redis: Any = None
        elif self.follows_sentinel:
            self._redis = _sentinel_primary(parsed, common, password)
        else:
            self._redis = _direct_client(parsed, common, password, tls)

    def follow_primary(self) -> None:
        """With Sentinel, reconnect so the next call goes to the primary the sentinels name now.

        After a failover the old primary accepts writes until it is demoted; a
        live connection to it would renew a claim the new primary lets expire,
        and write a done record that the demotion then wipes. The new
        connection asks GET-MASTER-ADDR-BY-NAME and checks the server's role
        (lockrun.sentinel), each step within the Redis timeout.
        """
        if self.follows_sentinel:
            self._redis.connection_pool.disconnect()

    def primary_session(self, address: tuple[str, int] | None = None) -> PrimarySession:
        """Sentinel only: a new session on the current primary (or on *address*, if it says
        it is a primary), for a write and its WAIT."""
        from lockrun.sentinel import PrimarySession

        kwargs = dict(self._redis.connection_pool.connection_kwargs)
        sentinels = kwargs.pop("sentinels")
        try:
            return PrimarySession(sentinels, kwargs, address)
        except CLIENT_ERRORS as exc:
            raise self.unavailable(exc) from exc

    def close(self) -> None:
        if self._redis is None:
            return
        try:
            self._redis.close()
        except redis.exceptions.RedisError:
            pass  # closing a broken socket must not mask the job's result

    def unavailable(self, exc: BaseException) -> RedisUnavailable:
        """The one line for any redis-py failure: URL redacted, first line of the error only."""
        text = str(exc).strip()
        detail = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
        if self.follows_sentinel and text.startswith("No master found for"):
            # redis-py appends the repr of every sentinel client: a screenful, not a line
            service = text[len("No master found for "):].split(" : ", 1)[0]
            detail = (f"no sentinel answered with a primary for service {service}"
                      if " : " in text else f"the sentinels know no healthy primary for "
                      f"service {service}")
        return RedisUnavailable(
            f"cannot use Redis at {redact(self.url)}: {redact(detail)}",
            self.error_exit_code,
        )

    def _execute(self, *command: str | int) -> Any:
        if self._redis is None and self._factory is not None:
            self._redis = self._factory()
        return self._redis.execute_command(*command)

    def command(self, *args: str | int) -> Any:
        """One plain command (admin verbs and doctor), with the same error mapping."""
        try:
            return self._execute(*args)
        except CLIENT_ERRORS as exc:
            raise self.unavailable(exc) from exc

    def wait(self, key: str, replicas: int, timeout_ms: int) -> int:
        """Redis WAIT on the connection that last wrote *key*, read with a long enough timeout.

        WAIT only counts the writes of the connection it is sent on. The pools
        hand back the most recently used connection (LIFO), so taking one from
        the pool of the node that serves *key*'s slot reuses the acquire's
        connection. The server holds the reply for up to *timeout_ms*, so the
        read waits that long plus the usual Redis timeout instead of failing
        with "Timeout reading from socket" when WAIT legitimately takes its time.
        """
        try:
            if self.cluster:
                pool = self._redis.get_node_from_key(key).redis_connection.connection_pool
            else:
                if self._redis is None and self._factory is not None:
                    self._redis = self._factory()
                pool = self._redis.connection_pool
            conn = pool.get_connection()
            try:
                conn.send_command("WAIT", replicas, timeout_ms)
                return int(conn.read_response(timeout=timeout_ms / 1000 + self.timeout))
            finally:
                pool.release(conn)
        except CLIENT_ERRORS as exc:
            raise self.unavailable(exc) from exc

    def scan(self, pattern: str) -> Iterator[str]:
        if self.cluster:  # every primary holds a share of the keys
            self.command("PING")  # builds the lazy cluster client inside the error mapping
            try:
                yield from self._redis.scan_iter(match=pattern, count=1000)
            except CLIENT_ERRORS as exc:
                raise self.unavailable(exc) from exc
            return
        cursor: int | str = 0
        for _ in range(1_000_000):  # bounded: a cursor that never returns to 0 is a bug
            cursor, names = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            yield from names
            if int(cursor) == 0:
                return

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.command("HGETALL", key) or {})

    def xrevrange(self, key: str, count: int) -> list[tuple[str, dict[str, str]]]:
        entries = self.command("XREVRANGE", key, "+", "-", "COUNT", count) or []
        return [(str(i), dict(f or {})) for i, f in entries]

    def call(self, script: str, keys: list[str], args: list[str | int]) -> list[Any]:
        """EVALSHA, falling back to EVAL when the server's script cache lacks it."""
        sha = self._shas.get(script) or self._shas.setdefault(script, _sha(script))
        try:
            try:
                reply = self._execute("EVALSHA", sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reply = self._execute("EVAL", script, len(keys), *keys, *args)
        except CLIENT_ERRORS as exc:
            denied = _denied_command(script, str(exc))
            if denied:
                raise RedisUnavailable(
                    f"Redis at {redact(self.url)} refused lockrun's script: the user may not "
                    f"run {denied} (grant +{denied.lower()} on keys matching the prefix)",
                    self.error_exit_code) from exc
            unavailable = self.unavailable(exc)
            # a timeout after the connection was made: the script may have run
            unavailable.reply_lost = (isinstance(exc, redis.exceptions.TimeoutError)
                                      and "connecting" not in str(exc))
            raise unavailable from exc
        if not isinstance(reply, list):
            raise self.unavailable(RuntimeError(f"unexpected script reply {reply!r}"))
        return reply

    def call_retrying(
        self, script: str, keys: list[str], args: list[str | int], attempts: int = 3
    ) -> list[Any]:
        """Retry only dropped connections, never timeouts.

        A dropped connection may have eaten the reply of a script that ran; our
        scripts recognise their own effect, so sending again is safe. A timeout
        means Redis is stuck or unreachable, and waiting again would only
        stretch the time to fail.
        """
        for attempt in range(attempts):
            try:
                return self.call(script, keys, args)
            except RedisUnavailable as exc:
                cause = exc.__cause__
                retriable = isinstance(cause, redis.exceptions.ConnectionError) and not isinstance(
                    cause, redis.exceptions.TimeoutError
                )
                if not retriable or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")
