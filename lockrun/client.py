"""One Redis client for lockrun: bounded timeouts, no hidden retries, one error mapping.

Built from the checked --redis-url fields. Two transports carry the bytes
(see Transport): lockrun.resp, a small stdlib client, for a single server
(``redis://``, ``rediss://``, ``unix://``), which is what keeps a skip from
importing redis-py; and lockrun.redispy for Sentinel and Cluster. Everything
lockrun decides about a failure (the one RedisUnavailable line with the URL
redacted, EVAL after NOSCRIPT, which failures are retried, whether a reply
was lost) is decided here, once, for both. What is said over the connection
(the Lua scripts, the lease) lives in lockrun.protocol.
"""

from __future__ import annotations

import os
import time

from lockrun.errors import RedisUnavailable, UsageError
from lockrun.output import redact
from lockrun.redisurl import parse as parse_redis_url
from lockrun.resp import NoScript, ServerError, Timeout, TransportError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs its import on every fire: annotations only
    from collections.abc import Iterator
    from typing import Protocol

    from lockrun.redispy import RedisPyTransport
    from lockrun.redisurl import RedisURL, TlsFiles
    from lockrun.resp import Arg
    from lockrun.sentinel import PrimarySession

    class Transport(Protocol):
        """What LockClient needs from a connection to Redis, whichever library carries it.

        ``execute`` sends one command and returns its decoded reply; failures are
        raised as lockrun.resp's TransportError classes (a redis-py transport
        translates its own), so LockClient maps and retries both alike. ``errors``
        are the exceptions a caller that reaches below LockClient (the Sentinel
        release session) may meet.
        """

        errors: tuple[type[Exception], ...]

        def execute(self, *args: Arg) -> object: ...

        def wait(self, key: str, replicas: int, timeout_ms: int) -> int: ...

        def follow_primary(self) -> None: ...

        def close(self) -> None: ...

TRANSPORT_ENV = "LOCKRUN_TRANSPORT"
"""A debugging switch, read only when set: ``redis-py`` carries a single-server URL over
redis-py instead of lockrun.resp (the test suite runs the protocol tests over both)."""


def _denied_command(script: str, error: str) -> str | None:
    """Name the command behind "can't run this command ... @user_script:N" (Redis 7 ACLs)."""
    import re  # an error path: not on every fire

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
    """The script's SHA1, as EVALSHA wants it.

    CPython's own SHA1 module costs about 1 ms to import; hashlib loads OpenSSL
    (about 5 ms) on every fire. Not security: Redis names scripts by SHA1.
    """
    data = script.encode()
    try:
        import _sha1  # type: ignore[import-not-found]  # CPython's, untyped

        digest: str = _sha1.sha1(data).hexdigest()
    except ImportError:  # an interpreter built without it
        import hashlib

        digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    return digest


def _auth(url: RedisURL, password: str | None) -> dict[str, str]:
    """A password in the URL wins over LOCKRUN_REDIS_PASSWORD and the file, as documented."""
    auth: dict[str, str] = {}
    if url.username:
        auth["username"] = url.username
    if url.password or password:
        auth["password"] = url.password or password or ""
    return auth


def _transport(parsed: RedisURL, timeout: float, password: str | None,
               tls: TlsFiles | None) -> Transport:
    """lockrun.resp for one server, redis-py for Sentinel and Cluster (or when asked)."""
    choice = os.environ.get(TRANSPORT_ENV, "")
    if choice not in ("", "stdlib", "redis-py"):
        raise UsageError(f"{TRANSPORT_ENV} must be stdlib or redis-py, not {choice[:40]!r}")
    auth = _auth(parsed, password)
    if parsed.scheme in ("redis+sentinel", "redis+cluster") or choice == "redis-py":
        from lockrun.redispy import RedisPyTransport

        return RedisPyTransport(parsed, timeout, auth, tls)
    from lockrun.resp import Connection, Endpoint

    host, port = parsed.hosts[0] if parsed.hosts else ("", 6379)
    files = (tls.ca, tls.cert, tls.key) if tls else (None, None, None)
    endpoint = Endpoint(host=host, port=port, path=parsed.path,
                        tls=files if parsed.tls else None, username=auth.get("username"),
                        password=auth.get("password"), db=parsed.db)
    return Connection(endpoint, timeout)


def _pairs(flat: object) -> dict[str, str]:
    """A flat [field, value, ...] reply (or redis-py's dict of it) as a dict."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    items = [str(x) for x in flat] if isinstance(flat, list | tuple) else []
    return dict(zip(items[::2], items[1::2], strict=False))


def _entries(reply: object) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as redis-py shapes them: (id, {field: value})."""
    rows = reply if isinstance(reply, list | tuple) else []
    return [(str(entry[0]), _pairs(entry[1] or {})) for entry in rows]


# Plain-command replies in the shapes redis-py's callbacks give, whichever transport
# answered, so the admin verbs and doctor read one shape.
_SHAPES = {"HGETALL": _pairs, "XRANGE": _entries, "XREVRANGE": _entries}


class LockClient:
    """One Redis client with bounded timeouts and no hidden retries, over either transport.

    The only retry is call_retrying's, of our own idempotent scripts after a
    dropped connection: a silent retry of a non-idempotent call, or a retry
    loop that outlasts the lease, would both be worse.
    """

    def __init__(self, url: str, timeout: float, password: str | None = None,
                 tls: TlsFiles | None = None) -> None:
        try:
            parsed = parse_redis_url(url)
        except UsageError as exc:  # the CLI checked it already; this is for other callers
            raise UsageError(f"invalid --redis-url {exc}") from None
        self.url = parsed.shown  # for messages only: the password is ***
        self.timeout = timeout
        self._shas: dict[str, str] = {}
        self.follows_sentinel = parsed.scheme == "redis+sentinel"
        self.cluster = parsed.scheme == "redis+cluster"
        self._transport = _transport(parsed, timeout, password, tls)

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """The exceptions of a call made below this client (the Sentinel release session)."""
        return self._transport.errors

    def _redispy(self) -> RedisPyTransport:
        from lockrun.redispy import RedisPyTransport

        assert isinstance(self._transport, RedisPyTransport), "Sentinel and Cluster only"
        return self._transport

    def follow_primary(self) -> None:
        """With Sentinel, reconnect so the next call goes to the primary the sentinels name now.

        After a failover the old primary accepts writes until it is demoted; a
        live connection to it would renew a claim the new primary lets expire,
        and write a done record that the demotion then wipes. The new
        connection asks GET-MASTER-ADDR-BY-NAME and checks the server's role
        (lockrun.sentinel), each step within the Redis timeout.
        """
        self._transport.follow_primary()

    def primary_session(self, address: tuple[str, int] | None = None) -> PrimarySession:
        """Sentinel only: a new session on the current primary (or on *address*, if it says
        it is a primary), for a write and its WAIT."""
        try:
            return self._redispy().primary_session(address)
        except TransportError as exc:
            raise self.unavailable(exc) from exc

    def close(self) -> None:
        try:
            self._transport.close()
        except (TransportError, OSError):
            pass  # closing a broken socket must not mask the job's result

    def unavailable(self, exc: BaseException) -> RedisUnavailable:
        """The one line for any transport failure: URL redacted, first line of the error only."""
        text = str(exc).strip()
        detail = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
        if self.follows_sentinel and text.startswith("No master found for"):
            # redis-py appends the repr of every sentinel client: a screenful, not a line
            service = text[len("No master found for "):].split(" : ", 1)[0]
            detail = (f"no sentinel answered with a primary for service {service}"
                      if " : " in text else f"the sentinels know no healthy primary for "
                      f"service {service}")
        return RedisUnavailable(
            f"cannot use Redis at {redact(self.url)}: {redact(detail)}")

    def command(self, *args: str | int) -> object:
        """One plain command (admin verbs and doctor), with the same error mapping; the
        typed readers below say what shape they expect, so no caller handles Any."""
        try:
            reply = self._transport.execute(*args)
        except TransportError as exc:
            raise self.unavailable(exc) from exc
        shape = _SHAPES.get(str(args[0]).upper())
        return shape(reply) if shape and reply is not None else reply

    def text(self, *args: str | int) -> str | None:
        """A command whose reply is a string (GET, INFO) or nil."""
        reply = self.command(*args)
        return None if reply is None else str(reply)

    def integer(self, *args: str | int) -> int:
        """A command whose reply is an integer (EXISTS, PTTL, DEL)."""
        reply = self.command(*args)
        if isinstance(reply, int):
            return reply
        try:
            return int(str(reply))
        except ValueError:
            raise self.unavailable(RuntimeError(f"unexpected reply {reply!r}")) from None

    def info(self, section: str) -> dict[str, str]:
        """INFO *section* as fields (redis-py parses it itself; lockrun.resp gives text)."""
        reply = self.command("INFO", section)
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        return dict(line.strip().split(":", 1) for line in str(reply or "").splitlines()
                    if ":" in line and not line.startswith("#"))

    def server_time(self) -> float:
        """The Redis server's clock (TIME), in seconds."""
        seconds, micros = [*self.strings("TIME"), None, None][:2]
        try:
            return int(seconds or "") + int(micros or "") / 1e6
        except ValueError:
            raise self.unavailable(RuntimeError("unexpected TIME reply")) from None

    def strings(self, *args: str | int) -> list[str | None]:
        """A command whose reply is an array of strings (HMGET, TIME)."""
        reply = self.command(*args)
        if not isinstance(reply, list | tuple):
            raise self.unavailable(RuntimeError(f"unexpected reply {reply!r}"))
        return [None if item is None else str(item) for item in reply]

    def wait(self, key: str, replicas: int, timeout_ms: int) -> int:
        """Redis WAIT on the connection that last wrote *key*, read with a long enough timeout.

        WAIT only counts the writes of the connection it is sent on, so both
        transports send it on the acquire's connection. The server holds the
        reply for up to *timeout_ms*, so the read waits that long plus the
        usual Redis timeout instead of failing with "Timeout reading from
        socket" when WAIT legitimately takes its time.
        """
        try:
            return self._transport.wait(key, replicas, timeout_ms)
        except TransportError as exc:
            raise self.unavailable(exc) from exc

    def scan(self, pattern: str) -> Iterator[str]:
        if self.cluster:  # every primary holds a share of the keys
            try:
                yield from self._redispy().scan_cluster(pattern)
            except TransportError as exc:
                raise self.unavailable(exc) from exc
            return
        cursor: int | str = 0
        for _ in range(1_000_000):  # bounded: a cursor that never returns to 0 is a bug
            reply = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if not (isinstance(reply, list | tuple) and len(reply) == 2
                    and isinstance(reply[1], list | tuple)):
                raise self.unavailable(RuntimeError(f"unexpected SCAN reply {reply!r}"))
            cursor = str(reply[0])
            yield from (str(name) for name in reply[1])
            if int(cursor) == 0:
                return

    def hgetall(self, key: str) -> dict[str, str]:
        reply = self.command("HGETALL", key)
        return _pairs(reply) if reply is not None else {}

    def xrevrange(self, key: str, count: int) -> list[tuple[str, dict[str, str]]]:
        return _entries(self.command("XREVRANGE", key, "+", "-", "COUNT", count))

    def xrange(self, key: str, count: int) -> list[tuple[str, dict[str, str]]]:
        return _entries(self.command("XRANGE", key, "-", "+", "COUNT", count))

    def call(self, script: str, keys: list[str], args: list[str | int]) -> list[object]:
        """EVALSHA, falling back to EVAL when the server's script cache lacks it."""
        sha = self._shas.get(script) or self._shas.setdefault(script, _sha(script))
        try:
            try:
                reply = self._transport.execute("EVALSHA", sha, len(keys), *keys, *args)
            except NoScript:
                reply = self._transport.execute("EVAL", script, len(keys), *keys, *args)
        except TransportError as exc:
            denied = _denied_command(script, str(exc))
            if denied:
                raise RedisUnavailable(
                    f"Redis at {redact(self.url)} refused lockrun's script: the user may not "
                    f"run {denied} (grant +{denied.lower()} on keys matching the prefix)") from exc
            unavailable = self.unavailable(exc)
            # a timeout after the connection was made: the script may have run
            unavailable.reply_lost = isinstance(exc, Timeout) and not exc.connecting
            raise unavailable from exc
        if not isinstance(reply, list):
            raise self.unavailable(RuntimeError(f"unexpected script reply {reply!r}"))
        return reply

    def call_retrying(
        self, script: str, keys: list[str], args: list[str | int], attempts: int = 3
    ) -> list[object]:
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
                # A reply that closes the connection (a wrong password, too many clients)
                # came from a server that said no: asking again only repeats the refusal.
                retriable = isinstance(cause, TransportError) and cause.dropped \
                    and not isinstance(cause, ServerError)
                if not retriable or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")
