"""``lockrun doctor``: is this Redis safe to hold a fleet's locks?

Each check names one way locks silently stop working (eviction, a replica,
missing permissions, a skewed clock, no persistence) and says what to change.
The permission check runs the real scripts on a scratch key, because only
the server knows what the configured user may do. What the configuration
file needs on this host is lockrun.hostcheck's job; both report in Checks.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from lockrun.client import LockClient
from lockrun.errors import RedisUnavailable
from lockrun.protocol import Lease, job_keys, new_owner

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_VERSION = (6, 2)
AUTH_REFUSALS = ("wrongpass", "noauth", "invalid username-password", "invalid password",
                 "authentication required", "auth <password> called without")
"""How redis-py and the server say "wrong or missing password" (lower case)."""


@dataclass(frozen=True)
class Check:
    """One line of doctor's report: the same shape for Redis and for the host, so --json
    and the exit status (1 on any FAIL) treat them alike."""

    name: str
    status: str
    detail: str


def _info(client: LockClient, section: str) -> dict[str, str]:
    return client.info(section)


def run_checks(client: LockClient, prefix: str, max_skew: float) -> list[Check]:
    checks: list[Check] = []
    failures: tuple[type[Exception], ...] = (*client.errors, RedisUnavailable)
    try:
        start = time.monotonic()
        client.command("PING")
        checks.append(Check("connection", OK, f"PING answered in "
                                              f"{(time.monotonic() - start) * 1000:.1f} ms"))
    except failures as exc:
        return [_unreachable(client, exc)]
    plain: list[tuple[str, Callable[[LockClient], Check]]] = [
        ("version", _version), ("role", _role), ("eviction", _eviction),
        ("persistence", _persistence)]
    for name, check in plain:
        checks.append(_guarded(name, check, client))
    checks.append(_guarded("clock", lambda c: _clock(c, max_skew), client))
    checks.append(_guarded("scripts and permissions", lambda c: _scripts(c, prefix), client))
    return checks


def _unreachable(client: LockClient, exc: Exception) -> Check:
    """The only check when the first PING fails: ``auth`` for a refused password, else
    ``connection``, because the two have different fixes.

    Doctor still exits 1 here, as for any failing check, on every topology: its
    output is the diagnosis, and "cannot reach Redis" is one. Only redis-py's
    own text is searched, never the URL, whose host or user may contain "auth".
    """
    failure = exc if isinstance(exc, RedisUnavailable) else client.unavailable(exc)
    cause = str(failure.__cause__ or exc).lower()
    name = "auth" if any(word in cause for word in AUTH_REFUSALS) else "connection"
    return Check(name, FAIL, str(failure))


def _guarded(name: str, check: Callable[[LockClient], Check], client: LockClient) -> Check:
    """One check's failure to use Redis is that check's failure, not doctor's crash."""
    try:
        return check(client)
    except RedisUnavailable as exc:
        return Check(name, FAIL, str(exc))
    except client.errors as exc:
        return Check(name, FAIL, str(client.unavailable(exc)))


def _version(client: LockClient) -> Check:
    version = _info(client, "server").get("redis_version", "?")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts >= MIN_VERSION:
        return Check("version", OK, f"Redis {version}")
    return Check("version", FAIL, f"Redis {version}: lockrun needs 6.2 or later")


def _role(client: LockClient) -> Check:
    role = _info(client, "replication").get("role", "?")
    if role == "master":
        return Check("role", OK, "primary")
    return Check("role", FAIL, f"{role}: point --redis-url at the primary; a replica refuses "
                               "the scripts' writes")


def _eviction(client: LockClient) -> Check:
    memory = _info(client, "memory")
    policy = memory.get("maxmemory_policy", "?")
    limit = int(memory.get("maxmemory", "0") or 0)
    if policy == "noeviction":
        return Check("eviction", OK, "maxmemory-policy noeviction")
    if limit == 0:
        return Check("eviction", WARN, f"maxmemory-policy {policy} evicts nothing while "
                                       "maxmemory is 0, but would evict lock keys once a limit "
                                       "is set: use noeviction")
    return Check("eviction", FAIL, f"maxmemory-policy {policy} with maxmemory {limit}: "
                                   "lock keys can be evicted and a fire run twice; use "
                                   "noeviction or a dedicated instance")


def _persistence(client: LockClient) -> Check:
    info = _info(client, "persistence")
    if info.get("aof_enabled") == "1":
        return Check("persistence", OK, "appendonly yes")
    rdb = info.get("rdb_last_bgsave_status", "?")
    return Check("persistence", WARN, "appendonly no: a restart loses running claims and done "
                                      f"records (last RDB save: {rdb}); consider appendonly yes")


def _clock(client: LockClient, max_skew: float) -> Check:
    before = time.time()
    server = client.server_time()
    local = (before + time.time()) / 2
    skew = local - server
    text = f"local clock {abs(skew):.3f}s {'ahead of' if skew > 0 else 'behind'} Redis"
    if max_skew > 0 and abs(skew) > max_skew:
        return Check("clock", FAIL, f"{text} (more than {max_skew:g}s): fix NTP on this server")
    return Check("clock", OK, text)


def _scripts(client: LockClient, prefix: str) -> Check:
    """Acquire, renew and release a scratch fire as lockrun does, then remove it."""
    import socket

    scratch, fire = f"lockrun-doctor-{secrets.token_hex(4)}", "doctor"
    lease = Lease(client, key=scratch, fire=fire, ttl_ms=10_000, guard=True, owner=new_owner(),
                  host=socket.gethostname(), prefix=prefix)
    try:
        if not lease.acquire().won:
            return Check("scripts and permissions", FAIL, "could not claim a scratch fire")
        if not lease.renew().ok or not lease.release(120_000, 0, "doctor").ok:
            return Check("scripts and permissions", FAIL, "the scratch claim was lost")
    finally:
        keys = job_keys(scratch, fire, prefix)
        try:
            client.command("DEL", keys["fire"], keys["hist"], keys["fence"], keys["running"],
                           keys["job"])
        except RedisUnavailable:
            pass  # a user without DEL outside scripts still passes; the keys expire or stay tiny
    return Check("scripts and permissions", OK, "acquire, renew and release ran (EVALSHA, "
                                                "TIME, HSET, PEXPIRE, XADD, DEL...)")

