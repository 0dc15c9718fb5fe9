"""A small stdlib Redis client for one server: the transport of every skip and every run.

Why not redis-py here: lockrun starts on every server at every fire and all but
one of them only skip, which is one EVALSHA on one connection. Importing
redis-py costs about 100 ms of CPU and 20 MiB of memory (its ``__init__``
pulls in asyncio, importlib.metadata and ssl), ten times what the skip itself
costs. This module speaks just the RESP2 that lockrun needs (AUTH, SELECT,
EVALSHA/EVAL, WAIT and a few plain commands) over TCP, a unix socket or TLS,
and imports ``ssl`` only for ``rediss://``. Sentinel and Cluster stay with
redis-py (lockrun.redispy), where the topology logic is worth its cost.

Its failures carry redis-py's exact wording ("Error 111 connecting to
127.0.0.1:6379. Connection refused.", "Timeout reading from socket",
"Connection closed by server.", server error replies with redis-py's prefix
rules), because operators and tests read them in lockrun's one error line,
and its classes say what lockrun.client's retry rule needs to know: whether
the connection dropped (safe to send again) or timed out (never retried), and
whether a timeout came after the command may have reached the server.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Sequence
    from typing import Final, TypeAlias

    _AddrInfo: TypeAlias = tuple[socket.AddressFamily, socket.SocketKind, int, str,
                                 tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]]
    """One row of getaddrinfo, as typeshed gives it (at run time _socket's are ints)."""

    Arg: TypeAlias = "str | int | float | bytes"
    Reply: TypeAlias = "str | int | list[Reply] | ServerError | None"
    """A decoded RESP2 reply; a nested error reply (inside an array) stays an object, as in
    redis-py, so the rest of the array is still read and the connection stays in step."""
else:
    # The C module under socket.py: the same calls, without the enum conversions that
    # make ``import socket`` cost about 3 ms of CPU on every fire. rediss:// imports
    # the real one with ssl (_open).
    import _socket as socket

READ_SIZE = 65536


class TransportError(Exception):
    """Any failure to use Redis. ``dropped`` is redis-py's ConnectionError: the connection
    is gone (or never came), so a command whose effect is recognisable may be sent again."""

    dropped = False


class ConnectFailed(TransportError):
    """The socket could not be opened (refused, no such socket file, TLS refused...)."""

    dropped = True


class ConnectionLost(TransportError):
    """The connection broke while in use: closed by the server, reset, a write failed."""

    dropped = True


class Timeout(TransportError):
    """No answer in time. ``connecting``: the connect itself timed out, so no command was
    sent; otherwise a command may have reached the server and run (its reply is lost)."""

    def __init__(self, message: str, connecting: bool = False) -> None:
        super().__init__(message)
        self.connecting = connecting


class ServerError(TransportError):
    """An error reply. Its text is redis-py's: a known code (ERR, NOPERM, WRONGPASS...) is
    cut off the front, an unknown one kept. ``dropped`` is set for the replies redis-py
    raises as connection errors (wrong password, loading, too many clients)."""

    def __init__(self, message: str, code: str = "", dropped: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.dropped = dropped


class NoScript(ServerError):
    """EVALSHA of a script the server's cache lacks: send it again with EVAL."""


# The error codes redis-py's parser knows: the code is cut off the message it shows.
_KNOWN_CODES = frozenset({
    "ERR", "OOM", "WRONGPASS", "EXECABORT", "LOADING", "NOSCRIPT", "READONLY", "NOAUTH",
    "NOPERM", "ASK", "TRYAGAIN", "MOVED", "CLUSTERDOWN", "CROSSSLOT", "MASTERDOWN"})
# Replies redis-py raises as ConnectionError (AuthenticationError, BusyLoadingError...).
_DROPPING_CODES = frozenset({"WRONGPASS", "NOAUTH", "LOADING"})
_DROPPING_ERR = frozenset({
    "max number of clients reached",
    "invalid password",
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?",
    "Client sent AUTH, but no password is set",
    "problem with LDAP service",
})
_AUTH_ARITY = ("wrong number of arguments for 'auth' command",
               "wrong number of arguments for 'AUTH' command")


def server_error(text: str) -> ServerError:
    """An error reply as redis-py's parser words and classifies it."""
    code = text.split(" ")[0]
    if code not in _KNOWN_CODES:
        return ServerError(text)
    rest = text[len(code) + 1:]
    if code == "NOSCRIPT":
        return NoScript(rest, code)
    dropped = code in _DROPPING_CODES or (code == "ERR" and rest in _DROPPING_ERR)
    return ServerError(rest, code, dropped)


def _connect_message(where: str, exc: OSError) -> str:
    """redis-py's format_error_message: "Error 111 connecting to HOST:PORT. Connection refused."
    """
    if not exc.args:
        return f"Error connecting to {where}."
    if len(exc.args) == 1:
        return f"Error {exc.args[0]} connecting to {where}."
    return f"Error {exc.args[0]} connecting to {where}. {exc.args[1]}."


def encode(args: tuple[Arg, ...]) -> bytes:
    """One command as a RESP2 array of bulk strings (ints as their decimal text)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % int(arg)  # int(): an IntEnum is its value, not its repr
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Endpoint:
    """Where one Redis server listens and how to log in to it: the checked URL's fields.

    ``tls`` is (ca, cert, key) for rediss:// (each may be None), None otherwise.
    """

    __slots__ = ("db", "host", "password", "path", "port", "tls", "username")

    def __init__(self, host: str = "", port: int = 6379, path: str | None = None,
                 tls: tuple[str | None, str | None, str | None] | None = None,
                 username: str | None = None, password: str | None = None,
                 db: int = 0) -> None:
        self.host: Final = host
        self.port: Final = port
        self.path: Final = path
        self.tls: Final = tls
        self.username: Final = username
        self.password: Final = password
        self.db: Final = db

    def __repr__(self) -> str:  # no password
        return f"Endpoint({self.where!r}, db={self.db})"

    @property
    def where(self) -> str:
        """How redis-py names the server in "Error N connecting to WHERE"."""
        return self.path if self.path is not None else f"{self.host}:{self.port}"


class Connection:
    """One connection to one server, opened on first use and again after it broke.

    Like redis-py with lockrun's settings: RESP2, no HELLO, no CLIENT SETINFO,
    no health-check PING, no retry of its own. The connect timeout and the
    reply timeout are both *timeout*; a connection that timed out or broke is
    closed, so the next command starts a fresh one (and a server that is
    merely slow cannot answer an old command on a new request).
    """

    errors: tuple[type[Exception], ...] = (TransportError,)
    """What it raises (lockrun.client.Transport)."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        """Bytes received from the server; those before ``_pos`` are parsed already. An
        offset rather than slicing off each line: a history reply has thousands."""
        self._pos = 0

    # -- connecting --------------------------------------------------------

    def _open(self) -> socket.socket:
        e = self.endpoint
        if e.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(e.path)
            except OSError:
                sock.close()
                raise
            return sock
        err: OSError | None = None
        module = socket
        if e.tls is not None:
            import socket as module  # what ssl wraps (it imports it anyway)
        # The whole connect, name lookup included, fits in one timeout: a renewal that
        # reconnects must come back in time to renew again, or to notice the loss.
        deadline = time.monotonic() + self.timeout
        for family, kind, proto, _, address in _lookup(e.host, e.port, self.timeout):
            sock = module.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("connect")
                sock.settimeout(left)
                sock.connect(address)
                if e.tls is not None:
                    sock = _tls_context(e.tls).wrap_socket(sock, server_hostname=e.host)
                return sock
            except OSError as exc:
                err = exc
                sock.close()
        raise err or OSError("socket.getaddrinfo returned an empty list")

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = self._open()
        except TimeoutError:  # socket.timeout, also during the TLS handshake
            raise Timeout("Timeout connecting to server", connecting=True) from None
        except OSError as exc:
            raise ConnectFailed(_connect_message(self.endpoint.where, exc)) from None
        sock.settimeout(self.timeout)
        self._sock = sock
        self._buffer, self._pos = b"", 0
        try:
            self._login()
        except BaseException:
            self.close()
            raise

    def _login(self) -> None:
        """AUTH and SELECT as redis-py does them, with its messages when they fail: an error
        reply is raised as it came, any other answer than OK is redis-py's own complaint."""
        e = self.endpoint
        if e.username or e.password:
            credentials = (e.username, e.password or "") if e.username else (e.password or "",)
            try:
                reply = self._roundtrip(("AUTH", *credentials))
            except ServerError as exc:
                if str(exc) not in _AUTH_ARITY:
                    raise
                # a server before 6.0 knows no users: the password alone
                reply = self._roundtrip(("AUTH", credentials[-1]))
            if reply != "OK":
                raise ServerError("Invalid Username or Password", dropped=True)
        if e.db and self._roundtrip(("SELECT", e.db)) != "OK":  # an error reply is raised
            raise ConnectionLost("Invalid Database")

    # -- commands ----------------------------------------------------------

    def execute(self, *args: Arg) -> Reply:
        """Send one command and read its reply; an error reply is raised as ServerError."""
        self.connect()
        return self._roundtrip(args)

    def execute_with_timeout(self, timeout: float, *args: Arg) -> Reply:
        """The same, with this one reply allowed *timeout* seconds (WAIT holds its reply)."""
        self.connect()
        assert self._sock is not None
        self._send(encode(args))
        self._sock.settimeout(timeout)
        try:
            return self._reply()
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.timeout)

    def wait(self, key: str, replicas: int, timeout_ms: int) -> int:
        """WAIT on this one connection, the one that wrote *key*; the server holds the reply
        up to *timeout_ms*, so the read gets that long plus the usual timeout."""
        del key  # one server, one connection: it is the writer's
        return int(str(self.execute_with_timeout(timeout_ms / 1000 + self.timeout, "WAIT",
                                                 replicas, timeout_ms)))

    def follow_primary(self) -> None:
        """One server: there is no other primary to follow."""

    def _roundtrip(self, args: tuple[Arg, ...]) -> Reply:
        self._send(encode(args))
        return self._reply()

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except TimeoutError:
            self.close()
            raise Timeout("Timeout writing to socket") from None
        except OSError as exc:
            self.close()
            errno, text = (exc.args if len(exc.args) > 1 else ("UNKNOWN", exc.args[0]))[:2]
            raise ConnectionLost(f"Error {errno} while writing to socket. {text}.") from None

    def _reply(self) -> Reply:
        try:
            reply = self._read()
        except TimeoutError:
            self.close()
            raise Timeout("Timeout reading from socket") from None
        except ConnectionLost:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"Error while reading from {self.endpoint.where} : "
                                 f"{exc.args}") from None
        if isinstance(reply, ServerError):
            if reply.dropped:
                self.close()
            raise reply
        return reply

    def _more(self) -> None:
        """Receive what the server has sent so far (at least one byte) into the buffer."""
        assert self._sock is not None
        data = self._sock.recv(READ_SIZE)
        if not data:
            raise ConnectionLost("Connection closed by server.")
        self._buffer, self._pos = self._buffer[self._pos:] + data, 0

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n", self._pos)
        while end < 0:
            self._more()
            end = self._buffer.find(b"\r\n", self._pos)
        line, self._pos = self._buffer[self._pos:end], end + 2
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) - self._pos < size:
            self._more()
        data, self._pos = self._buffer[self._pos:self._pos + size], self._pos + size
        return data

    def _read(self) -> Reply:
        """One RESP2 reply: simple string, error, integer, bulk (nil), array (nil, nested)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"-":
            return server_error(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._exactly(size + 2)
            # redis-py decodes strictly; lockrun's own values are UTF-8, and a foreign
            # value read by an admin verb is shown rather than crash it
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._read() for _ in range(count)]
        raise ConnectionLost(f"Protocol Error: {line[:40]!r}")

    def close(self) -> None:
        sock, self._sock, self._buffer, self._pos = self._sock, None, b"", 0
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _lookup(host: str, port: int, timeout: float) -> Sequence[_AddrInfo]:
    """getaddrinfo, given at most *timeout* seconds.

    The C library's lookup ignores socket timeouts: with a DNS server that does
    not answer it blocks for resolv.conf's timeout times its attempts, and
    inside the supervision loop that is a loop that can neither renew, nor see
    the lease expire, nor stop the job. A name is looked up on a thread of its
    own (``_thread``: built in, no import), left behind if it does not finish
    in time; an address needs no lookup. The host is passed as bytes: a str
    goes through the "idna" codec, whose import (re, stringprep, unicodedata)
    costs more than the connection, and the checked host is ASCII anyway.
    """
    name = host.encode("ascii")
    if _is_address(host):
        return socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM)
    import _thread

    done = _thread.allocate_lock()
    done.acquire()
    box: list[object] = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(lookup, ())
    if not done.acquire(timeout=max(timeout, 0.001)):
        raise TimeoutError(f"looking up {host}")
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    addresses: Sequence[_AddrInfo] = result  # type: ignore[assignment]  # getaddrinfo's
    return addresses


def _is_address(host: str) -> bool:
    """An IPv4 or IPv6 address: getaddrinfo answers it without asking anyone."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def _tls_context(files: tuple[str | None, str | None, str | None]) -> ssl.SSLContext:
    """Verification on, host name checked, as redis-py's defaults; ssl is imported only here,
    so redis:// and unix:// never pay for it."""
    import ssl

    ca, cert, key = files
    context = ssl.create_default_context()
    if cert or key:
        context.load_cert_chain(certfile=cert or "", keyfile=key)
    if ca:
        context.load_verify_locations(cafile=ca)
    return context
