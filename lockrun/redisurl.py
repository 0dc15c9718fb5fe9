"""--redis-url, parsed and checked once, before anything connects.

redis-py's own URL parser accepts what cannot work (no host: it quietly uses
localhost; a db of "abc"; arbitrary query parameters that crash later) and
its errors quote the URL, password included. One strict parser here means
a bad URL is a usage error before the network is touched, and the clients
are built from the parsed fields, so what was checked is what connects.
"""

from __future__ import annotations

from lockrun.errors import UsageError
from lockrun.output import redact_url

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses cost more than a skipped fire may: neither is used
    from collections.abc import Callable
    from typing import Final

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
DB_MAX = 65535
"""Redis' own limit is its ``databases`` setting (16 by default); beyond this is a typo."""
DEFAULT_PORT = 6379
FORMS = ("redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB], unix:///PATH[?db=DB], "
         "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] or "
         "redis+cluster://HOST:PORT[,HOST:PORT...], with USER:PASSWORD@ before the host "
         "or path if needed")
# (no "USER:PASSWORD@" right after "://" above: redaction would hide the example itself)

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_HOST_FIRST = _ALNUM | {"_"}
_HOST_REST = _ALNUM | set("_.-")
_HEX = frozenset("0123456789ABCDEFabcdef")
_IPV6_CHARS = _HEX | {":", "."}
_SERVICE_CHARS = _ALNUM | set("._-")


def _is_hostname(text: str) -> bool:
    return 0 < len(text) <= 253 and text[0] in _HOST_FIRST and _HOST_REST.issuperset(text)


def _is_ipv6(text: str) -> bool:
    """[ADDRESS] with 2-45 hex digits, ':' and '.' inside the brackets."""
    return text[:1] == "[" and text[-1:] == "]" and 2 <= len(text) - 2 <= 45 \
        and _IPV6_CHARS.issuperset(text[1:-1])


def _is_digits(text: str, most: int = 10) -> bool:
    """ASCII digits only: str.isdigit() alone also takes '٣' and '²'."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _bad_escape(text: str) -> bool:
    """A '%' not followed by two hex digits."""
    at = text.find("%")
    while at >= 0:
        if len(text) < at + 3 or not _HEX.issuperset(text[at + 1:at + 3]):
            return True
        at = text.find("%", at + 1)
    return False


def _unquote(text: str) -> str:
    """Percent-decoding as urllib.parse.unquote(errors="strict") does it, once every '%' is
    known to start a %XX escape (urllib.parse costs its import on every ACL fire)."""
    if "%" not in text:
        return text
    data = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            data.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            data += text[i].encode()
            i += 1
    return data.decode("utf-8")


class RedisUrlError(UsageError):
    """A URL that cannot be used; the message never contains the password."""


if TYPE_CHECKING:
    _Fail = Callable[[str], RedisUrlError]


class RedisURL:
    """The fields of a checked --redis-url.

    The password is kept out of repr(), so a stray debug print or a traceback
    under LOCKRUN_DEBUG does not show it.
    """

    __slots__ = ("db", "hosts", "password", "path", "scheme", "service", "shown", "username")

    def __init__(self, scheme: str, hosts: tuple[tuple[str, int], ...] = (),
                 path: str | None = None, db: int = 0, username: str | None = None,
                 password: str | None = None, service: str | None = None,
                 shown: str = "") -> None:
        self.scheme: Final = scheme
        self.hosts: Final = hosts
        self.path: Final = path
        self.db: Final = db
        self.username: Final = username
        self.password: Final = password
        self.service: Final = service
        self.shown: Final = shown
        """The URL as it may be printed: password replaced by ***."""

    def __repr__(self) -> str:
        return f"RedisURL({self.shown!r})"

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"


def parse(text: str) -> RedisURL:
    """Check every part of *text*; raise RedisUrlError naming the first problem."""
    if "://" not in text:
        # not even URL-shaped: perhaps a password pasted into the wrong setting
        raise RedisUrlError(f"not a URL (the value is not shown); expected {FORMS}")
    shown = repr(redact_url(text))
    if len(shown) > 300:  # one readable line, even for a pasted screenful
        shown = shown[:200] + "..." + shown[-20:]

    def fail(problem: str) -> RedisUrlError:
        return RedisUrlError(f"{shown}: {problem}")

    if any(c <= " " or c == "\x7f" for c in text):
        raise fail("contains a space or a control character (percent-encode it, e.g. %20)")
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()  # RFC 3986: schemes are case-insensitive
    if scheme not in SCHEMES:
        raise fail("unsupported scheme; use redis://, rediss://, unix://, redis+sentinel:// "
                   "or redis+cluster://")
    if "#" in rest:
        raise fail("a fragment (#...) has no meaning here; percent-encode '#' as %23")
    userinfo, rest = _split_userinfo(scheme, rest)
    username, password = _credentials(userinfo, fail)
    rest, _, query = rest.partition("?")
    params = _query(query, scheme, fail)
    shown_url = redact_url(_normalised(text))

    def url(hosts: tuple[tuple[str, int], ...] = (), path: str | None = None, db: int = 0,
            service: str | None = None) -> RedisURL:
        return RedisURL(scheme, hosts, path, db, username, password, service, shown_url)

    if scheme == "unix":
        if not rest:
            raise fail("no socket path; expected unix:///PATH/TO/redis.sock")
        if not rest.startswith("/"):
            raise fail("the socket path must be absolute: unix:///PATH/TO/redis.sock "
                       "(three slashes)")
        db = _db(params.get("db", "0"), fail)
        return url(path=rest, db=db)
    authority, slash, path = rest.partition("/")
    if scheme in ("redis", "rediss"):
        (host,) = _hosts(authority, fail, single=True)
        db = _db(path.rstrip("/") or "0", fail) if slash else 0
        return url(hosts=(host,), db=db)
    hosts = _hosts(authority, fail, single=False)
    if scheme == "redis+cluster":
        if path.rstrip("/") not in ("", "0"):
            raise fail("Redis Cluster has only database 0; end the URL after the last "
                       "HOST:PORT")
        return url(hosts=hosts)
    service, _, db_text = path.partition("/")
    if not service:
        raise fail("no service name; expected redis+sentinel://HOST:PORT[,HOST:PORT...]"
                   "/SERVICE[/DB]")
    if not (len(service) <= 200 and _SERVICE_CHARS.issuperset(service)):
        raise fail("the service name may only hold letters, digits, '.', '_' and '-'")
    db = _db(db_text.rstrip("/") or "0", fail)
    return url(hosts=hosts, service=service, db=db)


def normalise(text: str) -> str:
    """The URL as given, checked, with its scheme in lower case (what the rest compares)."""
    parse(text)
    return _normalised(text)


def _normalised(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    return f"{scheme.lower()}{sep}{rest}"


def _split_userinfo(scheme: str, rest: str) -> tuple[str | None, str]:
    """USER:PASSWORD is whatever precedes the last '@' before the host (or the socket path).

    No host, port, path or db holds an '@', so the last one is the separator
    even when a raw '@' or '/' in the password makes the URL malformed; that
    is then reported without ever treating part of the password as a host.
    """
    if scheme == "unix":
        if rest.startswith("/"):
            return None, rest
        at = rest.rfind("@/")
        if at < 0:
            at = rest.rfind("@")
            if at < 0:
                return None, rest
        return rest[:at], rest[at + 1:]
    if "@" not in rest:
        return None, rest
    userinfo, _, host_part = rest.rpartition("@")
    return userinfo, host_part


def _credentials(userinfo: str | None, fail: _Fail) -> tuple[str | None, str | None]:
    if userinfo is None:
        return None, None
    if any(c in userinfo for c in "/?#@[]"):
        raise fail("the user name or password holds a raw '/', '?', '#', '@', '[' or ']'; "
                   "percent-encode it (%2F, %3F, %23, %40, %5B, %5D)")
    if _bad_escape(userinfo):
        raise fail("the user name or password holds a '%' that is not a %XX escape; "
                   "write a literal '%' as %25")
    user, colon, password = userinfo.partition(":")
    try:
        username = _unquote(user) or None
        secret = _unquote(password) if colon else None
    except UnicodeDecodeError:
        raise fail("the percent-decoded user name or password is not UTF-8") from None
    return username, secret or None


def _query(query: str, scheme: str, fail: _Fail) -> dict[str, str]:
    if not query:
        return {}
    if scheme != "unix":
        raise fail("query parameters are not accepted: the database goes in the path (/DB) "
                   "and timeouts come from --redis-timeout")
    params: dict[str, str] = {}
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if name != "db" or not eq:
            raise fail(f"unknown query parameter {name[:40]!r}: unix:// accepts only "
                       "?db=N; timeouts come from --redis-timeout")
        if name in params:
            raise fail("db is given twice")
        params[name] = value
    return params


def _db(text: str, fail: _Fail) -> int:
    if not _is_digits(text) or int(text) > DB_MAX:
        raise fail(f"the database must be a number from 0 to {DB_MAX}")
    return int(text)


def _hosts(text: str, fail: _Fail, single: bool) -> tuple[tuple[str, int], ...]:
    if not text:
        raise fail("no host; expected HOST[:PORT], for example redis://redis.internal:6379/0"
                   if single else "no HOST:PORT addresses")
    items = [text] if single else text.split(",")
    hosts = []
    for item in items:
        if item.startswith("["):
            end = item.find("]") + 1
            host, port_part = item[:end], item[end:]
            valid = end > 0 and _is_ipv6(host)
            host = host[1:-1]
        else:
            host, _, port = item.partition(":")
            port_part = item[len(host):]
            valid = _is_hostname(host)
        if not host:
            raise fail("no host before the port" if port_part else "an empty address in "
                       "the list")
        if not valid:
            raise fail(f"{item[:60]!r} is not a host name or IP address")
        if not port_part:
            if not single:
                raise fail(f"{item[:60]!r} has no port; write HOST:PORT")
            hosts.append((host, DEFAULT_PORT))
            continue
        port = port_part.removeprefix(":")
        if not port_part.startswith(":") or not _is_digits(port) \
                or not 1 <= int(port) <= 65535:
            raise fail("the port must be a number from 1 to 65535")
        hosts.append((host, int(port)))
    return tuple(hosts)


class TlsFiles:
    """rediss:// trust and client identity (--redis-ca, --redis-cert, --redis-key);
    certificate verification stays on whatever is given."""

    __slots__ = ("ca", "cert", "key")

    def __init__(self, ca: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        self.ca: Final = ca
        self.cert: Final = cert
        self.key: Final = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TlsFiles) and \
            (self.ca, self.cert, self.key) == (other.ca, other.cert, other.key)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TlsFiles({self.ca!r}, {self.cert!r}, {self.key!r})"
