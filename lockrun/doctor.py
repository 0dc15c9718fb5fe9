"""``lockrun doctor``: is this Redis safe to hold a fleet's locks?

Each check names one way locks silently stop working (eviction, a replica,
missing permissions, a skewed clock, no persistence) and says what to change.
The permission check runs the real scripts on a scratch key, because only
the server knows what the configured user may do.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import click

from lockrun.client import CLIENT_ERRORS, LockClient
from lockrun.configfile import FileSettings
from lockrun.errors import RedisUnavailable
from lockrun.protocol import Lease, job_keys, new_owner

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_VERSION = (6, 2)
AUTH_REFUSALS = ("wrongpass", "noauth", "invalid username-password", "invalid password",
                 "authentication required", "auth <password> called without")
"""How redis-py and the server say "wrong or missing password" (lower case)."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def _info(client: LockClient, section: str) -> dict[str, str]:
    text = client.command("INFO", section)
    if isinstance(text, dict):  # redis-py may already have parsed it
        return {str(k): str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def run_checks(client: LockClient, prefix: str, max_skew: float) -> list[Check]:
    checks: list[Check] = []
    try:
        start = time.monotonic()
        client.command("PING")
        checks.append(Check("connection", OK, f"PING answered in "
                                              f"{(time.monotonic() - start) * 1000:.1f} ms"))
    except (*CLIENT_ERRORS, RedisUnavailable) as exc:
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
    except CLIENT_ERRORS as exc:
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
    seconds, micros = client.command("TIME")
    local = (before + time.time()) / 2
    skew = local - (int(seconds) + int(micros) / 1e6)
    text = f"local clock {abs(skew):.3f}s {'ahead of' if skew > 0 else 'behind'} Redis"
    if max_skew > 0 and abs(skew) > max_skew:
        return Check("clock", FAIL, f"{text} (more than {max_skew:g}s): fix NTP on this server")
    return Check("clock", OK, text)


def _scripts(client: LockClient, prefix: str) -> Check:
    """Acquire, renew and release a scratch fire as lockrun does, then remove it."""
    import socket

    scratch, fire = f"lockrun-doctor-{secrets.token_hex(4)}", "doctor"
    lease = Lease(client, scratch, fire, 10_000, True, new_owner(), socket.gethostname(), prefix)
    try:
        if not lease.acquire().won:
            return Check("scripts and permissions", FAIL, "could not claim a scratch fire")
        if not lease.renew().ok or not lease.release(120_000, 0, "doctor"):
            return Check("scripts and permissions", FAIL, "the scratch claim was lost")
    finally:
        keys = job_keys(scratch, fire, prefix)
        try:
            client.command("DEL", keys["fire"], keys["hist"], keys["fence"], keys["running"])
        except RedisUnavailable:
            pass  # a user without DEL outside scripts still passes; the keys expire or stay tiny
    return Check("scripts and permissions", OK, "acquire, renew and release ran (EVALSHA, "
                                                "TIME, HSET, PEXPIRE, XADD, DEL...)")


# ------------------------------------------------------------------ the host side of the file

CRONTAB_SPOOLS = ("/var/spool/cron/crontabs", "/var/spool/cron")
"""Per-user crontabs, each file named after its user: Debian's cron, then cronie's. The
second holds the first as a directory, which is not a crontab and is skipped."""
SYSTEM_CRONTABS = ("/etc/crontab",)
SYSTEM_CRONTAB_DIR = "/etc/cron.d"
"""Crontabs whose sixth field names the user the line runs as."""
CRONTAB_MAX = 1024 * 1024
"""A crontab is a few KiB; a bigger "crontab" is not one and is not read whole."""


@dataclass(frozen=True)
class _User:
    """What the kernel looks at: the uid and every group cron gives the job (initgroups)."""

    name: str
    uid: int
    gids: frozenset[int]


@dataclass
class _Crontabs:
    """Who runs lockrun from cron here, and what could not be looked at."""

    users: list[_User] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    """Crontabs of names without a passwd entry: cron does not run them."""


@dataclass(frozen=True)
class _Access:
    """One user's answer for one path; *blocker* is the path that says no."""

    ok: bool
    blocker: str = ""
    known: bool = True


def file_checks(settings: FileSettings) -> list[Check]:
    """The host side of the configuration file: what every job line on this server needs.

    The wrapper checks these on each run, and a problem then fails every line
    of every crontab (or warns on every skip); doctor says so once, up front,
    for the users whose crontabs call lockrun (their access is computed from
    mode bits, as the kernel would) and for the user running doctor.
    """
    import os

    if settings.path is None:
        return []
    tabs = _crontab_users()
    me = _running_user()
    everyone = [*tabs.users, *([] if any(u.uid == me.uid for u in tabs.users) else [me])]
    checks = [_crontabs_check(tabs), _config_file(settings, tabs.users, me)]
    metrics = settings.values.get("metrics_dir")
    if metrics is not None:
        checks.append(_metrics_dir(str(metrics), settings.where("metrics_dir"), everyone, me))
    checks.append(_state_dir(settings, tabs.users, me))
    if settings.values.get("syslog") is True:
        checks.append(_syslog_socket())
    ping = settings.values.get("ping_url")
    if ping is not None:
        checks.append(_ping_url(str(ping), settings.where("ping_url")))
    for name in ("redis_ca", "redis_cert", "redis_key"):
        value = settings.values.get(name)
        if value is not None:
            checks.append(_tls_file(name, os.path.abspath(str(value)), settings.where(name),
                                    everyone, me))
    tz = settings.values.get("tz")
    if tz is not None:
        checks.append(_time_zone(str(tz), settings.where("tz")))
    url = settings.values.get("redis_url")
    if url is not None:
        socket_check = _redis_socket(str(url), settings.where("redis_url"), everyone, me)
        if socket_check is not None:
            checks.append(socket_check)
    return checks


# ------------------------------------------------------------------ who runs lockrun here

def _crontab_users() -> _Crontabs:
    """Users whose crontab lines (not comments, not variables) mention lockrun.

    Only the local filesystem is read; a file or directory doctor may not read
    (doctor not run as root) is noted, never fatal.
    """
    import os

    tabs = _Crontabs()
    names: dict[str, None] = {}  # an ordered set: the order found is the order shown
    for spool in CRONTAB_SPOOLS:
        for path in _crontab_files(spool, tabs, cron_d=False):
            if _lockrun_lines(path, tabs, system=False):
                names.setdefault(os.path.basename(path))
    system = [*SYSTEM_CRONTABS, *_crontab_files(SYSTEM_CRONTAB_DIR, tabs, cron_d=True)]
    for path in system:
        for name in _lockrun_lines(path, tabs, system=True):
            names.setdefault(name)
    for name in names:
        user = _user(name)
        if user is None:
            tabs.orphans.append(name)
        else:
            tabs.users.append(user)
    return tabs


def _crontab_files(directory: str, tabs: _Crontabs, cron_d: bool) -> list[str]:
    """The regular files of *directory* that cron reads as crontabs."""
    import os
    import stat

    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        tabs.unreadable.append(f"{directory} ({exc.strerror})")
        return []
    debian = os.path.isdir(CRONTAB_SPOOLS[0])
    files = []
    for name in names:
        if name.startswith(".") or (cron_d and not _cron_d_name(name, debian)):
            continue
        path = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                files.append(path)
        except OSError as exc:
            tabs.unreadable.append(f"{path} ({exc.strerror})")
    return files


def _cron_d_name(name: str, debian: bool) -> bool:
    """Whether cron reads /etc/cron.d/NAME: Debian's cron only takes run-parts names (so
    'job.disabled' is off); cronie skips only backups."""
    import re

    if debian:
        return re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None
    return not name.endswith(("~", ".rpmsave", ".rpmorig", ".rpmnew", ".swp")) \
        and ".dpkg-" not in name


def _lockrun_lines(path: str, tabs: _Crontabs, system: bool) -> list[str]:
    """The users of *path*'s lines that call lockrun ('' for a per-user crontab)."""
    from lockrun.configfile import read_regular_file
    from lockrun.errors import UsageError

    try:
        data = read_regular_file(path, "crontab", CRONTAB_MAX)
    except UsageError as exc:
        tabs.unreadable.append(str(exc).removeprefix("cannot read crontab "))
        return []
    users = []
    for line in data.decode("utf-8", "replace").splitlines():
        entry = _entry(line, system)
        if entry is not None and "lockrun" in entry[1]:
            users.append(entry[0])
    return users


def _entry(line: str, system: bool) -> tuple[str, str] | None:
    """(user, command) of a crontab entry; None for a comment, a variable or a blank line.

    An entry starts with its minute field (a digit or '*') or an @keyword;
    anything else that is not a comment sets a variable. cronie allows a
    leading '-' (do not log the run).
    """
    text = line.strip().removeprefix("-")
    if not text or text[0] not in "0123456789*@":
        return None
    fields = (1 if text.startswith("@") else 5) + (1 if system else 0)
    parts = text.split(None, fields)
    if len(parts) <= fields:
        return None
    return (parts[fields - 1] if system else "", parts[fields])


def _user(name: str) -> _User | None:
    import os
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError):
        return None
    try:
        gids = os.getgrouplist(name, entry.pw_gid)
    except OSError:
        gids = [entry.pw_gid]
    return _User(name, entry.pw_uid, frozenset(gids))


def _running_user() -> _User:
    import os
    import pwd

    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    return _User(name, uid, frozenset({os.getegid(), *os.getgroups()}))


def _names(users: list[_User]) -> str:
    return ", ".join(u.name for u in users)


def _crontabs_check(tabs: _Crontabs) -> Check:
    text = (f"the crontabs of {_names(tabs.users)} run lockrun" if tabs.users
            else "no crontab on this host runs lockrun")
    if tabs.orphans:
        text += (f"; not counted: the crontabs of {', '.join(tabs.orphans)}, who have no passwd "
                 "entry (cron does not run them)")
    if tabs.unreadable:
        return Check("config crontabs", WARN, f"could not read {'; '.join(tabs.unreadable)}, "
                     "so users of those crontabs were not checked (run doctor as root); "
                     + text)
    return Check("config crontabs", OK, text)


# ------------------------------------------------------------------ mode bits

def _access(user: _User, path: str, want: int) -> _Access:
    """Whether *user* may do *want* (os.R_OK, W_OK, X_OK bits) to *path*, from mode bits.

    Every directory on the way, as written and as symlinks resolve it, must
    let the user search it. Only one class of bits applies (owner, else
    group, else other), as in the kernel; root may do anything.
    """
    import os

    path = os.path.abspath(path)
    for directory in dict.fromkeys([*_ancestors(path), *_ancestors(os.path.realpath(path))]):
        verdict = _bits_allow(user, directory, os.X_OK)
        if not verdict.ok:
            return verdict
    return _bits_allow(user, path, want)


def _ancestors(path: str) -> list[str]:
    import os

    found = []
    directory = os.path.dirname(path)
    while True:
        found.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            return found[::-1]
        directory = parent


def _bits_allow(user: _User, path: str, want: int) -> _Access:
    import os

    try:
        st = os.stat(path)
    except OSError as exc:
        return _Access(False, f"{path} ({exc.strerror})", known=False)
    if user.uid == 0:
        return _Access(True)
    if user.uid == st.st_uid:
        bits = st.st_mode >> 6
    elif st.st_gid in user.gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return _Access(True) if bits & want == want else _Access(False, path)


def _kernel_access(user: _User, me: _User, path: str, want: int) -> _Access:
    """_access, and for the user running doctor also the kernel's own answer (ACLs, a
    read-only mount)."""
    import os

    verdict = _access(user, path, want)
    if user.uid == me.uid and verdict.ok and not os.access(path, want):
        return _Access(False, path)
    return verdict


def _described(path: str) -> str:
    """PATH (drwx------ root:root), so the fix can be read off the line."""
    import grp
    import os
    import pwd
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return path
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    acl = ", with an ACL that this check does not read" if _has_acl(path) else ""
    return f"{path} ({stat.filemode(st.st_mode)} {owner}:{group}{acl})"


def _has_acl(path: str) -> bool:
    import os

    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except (OSError, AttributeError):
        return False


def _shared_group(users: list[_User], path: str) -> str:
    """A group every one of *users* is in (the file's own first), else 'GROUP'."""
    import grp
    import os

    if not users:
        return "GROUP"
    common = frozenset.intersection(*(u.gids for u in users))
    try:
        current = os.stat(path).st_gid
    except OSError:
        current = -1
    for gid in sorted(common, key=lambda g: (g != current, g == 0, g)):
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return "GROUP"


def _refusals(users: list[_User], me: _User, path: str,
              want: int) -> tuple[list[_User], dict[str, list[_User]], list[str]]:
    """Who may, who may not (by the path that stops them), and who could not be checked."""
    able: list[_User] = []
    blocked: dict[str, list[_User]] = {}
    unknown: list[str] = []
    for user in users:
        verdict = _kernel_access(user, me, path, want)
        if verdict.ok:
            able.append(user)
        elif verdict.known:
            blocked.setdefault(verdict.blocker, []).append(user)
        else:
            unknown.append(f"{user.name}: cannot look at {verdict.blocker}")
    return able, blocked, unknown


def _blocked_text(blocked: dict[str, list[_User]], path: str, verb: str, fix: str) -> str:
    """'nobody cannot enter /x (drwx------ root:root); ...' with the fix for the target."""
    parts = []
    for blocker, users in blocked.items():
        if blocker == path:
            parts.append(f"{_names(users)} cannot {verb} {_described(path)}: {fix}")
        else:
            parts.append(f"{_names(users)} cannot enter {_described(blocker)}: give them "
                         "search (x) permission on it")
    return "; ".join(parts)


# ------------------------------------------------------------------ the checks

def _config_file(settings: FileSettings, users: list[_User], me: _User) -> Check:
    """Readable by every crontab user: the wrapper reads the file before anything else,
    so a user who cannot has every line exit 64."""
    import os
    import stat

    assert settings.path is not None
    path = os.path.abspath(settings.path)
    try:
        st = os.stat(path)
    except OSError as exc:
        return Check("config file", FAIL, f"cannot stat {path}: {exc.strerror}")
    secret = "redis_password" in settings.values and bool(st.st_mode & stat.S_IROTH)
    if not users:
        if secret:
            return _password_readable(path, users)
        return _file_access(path)
    able, blocked, unknown = _refusals(users, me, path, os.R_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        group = _shared_group(failing, path)
        fix = (f"chown root:{group} and chmod 640 with a group of theirs" if group != "GROUP"
               else "chown root:GROUP and chmod 640 with a group all of them are in")
        return Check("config file", FAIL, f"{path} is not readable by {_names(failing)} (their "
                     "crontabs run lockrun: every such line exits 64); "
                     + _blocked_text(blocked, path, "read", fix)
                     + (f"; not checked: {'; '.join(unknown)}" if unknown else ""))
    if unknown:
        return Check("config file", WARN, f"could not check {path} for "
                     f"{'; '.join(unknown)}; readable by {_names(able)}")
    if secret:
        return _password_readable(path, users)
    return Check("config file", OK, f"{path} is readable by every user whose crontab runs "
                                    f"lockrun: {_names(able)}")


def _password_readable(path: str, users: list[_User]) -> Check:
    return Check("config file", WARN, f"{path} holds redis_password and is readable by every "
                 f"local user: chown root:{_shared_group(users, path)} and chmod 640 with a "
                 "group of the users whose crontabs run lockrun")


def _metrics_dir(metrics: str, where: str, users: list[_User], me: _User) -> Check:
    """The wrapper refuses a metrics_dir its user cannot write: exit 64 on every line."""
    import os

    if not os.path.isdir(metrics):
        return Check("config metrics_dir", FAIL, f"{metrics} ({where}) does not exist: "
                     "every lockrun line exits 64 until it does")
    try:
        read_only = bool(os.statvfs(metrics).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return Check("config metrics_dir", FAIL, f"{metrics} ({where}) is on a read-only file "
                     "system: every lockrun line exits 64")
    able, blocked, unknown = _refusals(users, me, metrics, os.W_OK | os.X_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        return Check("config metrics_dir", FAIL, f"{metrics} ({where}) is not writable by "
                     f"{_names(failing)}: every lockrun line they run exits 64; "
                     + _blocked_text(blocked, os.path.abspath(metrics), "write in",
                                     f"chgrp {_shared_group(failing, metrics)} and chmod 2775 "
                                     "with a group of theirs")
                     + (f"; not checked: {'; '.join(unknown)}" if unknown else ""))
    if unknown:
        return Check("config metrics_dir", WARN, f"could not check {metrics} for "
                     f"{'; '.join(unknown)}; writable by {_names(able)}")
    return Check("config metrics_dir", OK, f"{metrics} is writable by {_names(able)}")


def _state_dir(settings: FileSettings, users: list[_User], me: _User) -> Check:
    """lockrun keeps outage memory only in a directory of the running user's own, with no
    group or other write; a directory it refuses means every Redis failure is mailed."""
    import os
    import stat

    from lockrun.options import state_dir

    value = settings.values.get("state_dir")
    if value is None:
        return _own_state_dir(str(settings.path), me)
    where = settings.where("state_dir")
    path = str(value)
    problem = _option_problem(state_dir, "--state-dir", path)
    if problem is not None:
        return Check("config state_dir", FAIL, f"{where}: {problem}: every lockrun line "
                                               "exits 64")
    if path == "":
        return Check("config state_dir", OK, f"state_dir = '' ({where}): no state is kept, so "
                                             "every line reports every Redis failure")
    sharing = users or [me]
    more = ("so their lines keep no state and report every Redis failure (more mail); remove "
            "state_dir from the file (each user then has their own) or give each user theirs "
            "with LOCKRUN_STATE_DIR in their crontab")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return Check("config state_dir", WARN, f"cannot look at {path} ({where}): "
                                               f"{exc.strerror}")
    if st is None:
        if len({u.uid for u in sharing}) > 1:
            return Check("config state_dir", WARN, f"{path} ({where}) is shared by "
                         f"{_names(sharing)}, whose crontabs run lockrun, but lockrun uses a "
                         "state directory only for the user who owns it (the first of them "
                         f"to create it): the others cannot, {more}")
        ok, text = _creatable(path, sharing[0], me)
        return Check("config state_dir", OK if ok else WARN, f"{path} ({where}) {text}")
    if not stat.S_ISDIR(st.st_mode):
        return Check("config state_dir", WARN, f"{path} ({where}) is not a directory: lockrun "
                     "keeps no state and reports every Redis failure")
    if st.st_mode & 0o022:
        return Check("config state_dir", WARN, f"{_described(path)} ({where}) is writable by "
                     "group or others: lockrun refuses it for every user and reports every "
                     "Redis failure; chmod 700")
    owner = _owner_name(st.st_uid)
    others = [u for u in sharing if u.uid != st.st_uid]
    if others:
        return Check("config state_dir", WARN, f"{path} ({where}) belongs to {owner}, but the "
                     f"crontabs of {_names(others)} run lockrun too: lockrun refuses a state "
                     f"directory that is not the running user's own, {more}")
    return Check("config state_dir", OK, f"{path} is a private directory of {owner}, the only "
                 "user here who runs lockrun")


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _own_state_dir(config: str, me: _User) -> Check:
    """Not set in the file: each user has their own; say where this user's is."""
    import os
    import stat

    from lockrun.state import default_dir

    named = os.environ.get("LOCKRUN_STATE_DIR")  # what lockrun in this environment uses
    if named == "":
        return Check("config state_dir", OK, f"not set in {config}; LOCKRUN_STATE_DIR is "
                                             "empty here: no state kept")
    path, source = (named, "LOCKRUN_STATE_DIR") if named else (default_dir(), "the default")
    head = f"not set in {config}: each user keeps their own; {me.name}'s is {path} ({source})"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        ok, text = _creatable(path, me, me)
        return Check("config state_dir", OK if ok else WARN, f"{head}, which {text}")
    except OSError as exc:
        return Check("config state_dir", WARN, f"{head}, which cannot be looked at: "
                                               f"{exc.strerror}")
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != me.uid or st.st_mode & 0o022:
        return Check("config state_dir", WARN, f"{head}: {_described(path)} is not a private "
                     f"directory of {me.name}, so lockrun keeps no state and reports every "
                     "Redis failure")
    return Check("config state_dir", OK, f"{head}, a private directory")


def _creatable(path: str, user: _User, me: _User) -> tuple[bool, str]:
    """A missing state directory is made on first use: its nearest existing parent must
    let *user* write. (Whether it can be, and the sentence that says so.)"""
    import os

    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    verdict = _kernel_access(user, me, parent, os.W_OK | os.X_OK)
    if verdict.ok:
        return True, f"does not exist yet; {user.name} can create it on first use"
    return False, (f"does not exist and {user.name} cannot create it ("
                   f"{_described(verdict.blocker) if verdict.known else verdict.blocker}): "
                   "lockrun keeps no state and reports every Redis failure")


def _option_problem(callback: Callable[[click.Context, click.Parameter, str | None],
                                       str | None], flag: str, value: str) -> str | None:
    """The wrapper's own check of *value* (its option callback), as a sentence or None."""
    import click

    try:
        callback(click.Context(click.Command("lockrun")), click.Option([flag]), value)
    except click.BadParameter as exc:
        return exc.message
    return None


def _ping_url(url: str, where: str) -> Check:
    from lockrun.options import http_url

    problem = _option_problem(http_url, "--ping-url", url)
    if problem is not None:
        return Check("config ping_url", FAIL, f"{where}: {problem}: every lockrun line "
                                              "exits 64")
    return Check("config ping_url", OK, "a well-formed http(s) URL (not contacted)")


def _tls_file(name: str, path: str, where: str, users: list[_User], me: _User) -> Check:
    """The wrapper refuses a TLS file its user cannot read (exit 64); a key every local
    user can read is a leaked key."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        return Check(f"config {name}", FAIL, f"{path} ({where}): {exc.strerror}: every "
                                             "lockrun line exits 64")
    if not stat.S_ISREG(st.st_mode):
        return Check(f"config {name}", FAIL, f"{path} ({where}) is not a regular file: every "
                                             "lockrun line exits 64")
    able, blocked, unknown = _refusals(users, me, path, os.R_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        return Check(f"config {name}", FAIL, f"{path} ({where}) is not readable by "
                     f"{_names(failing)}: every lockrun line they run exits 64; "
                     + _blocked_text(blocked, path, "read", f"chown root:"
                                     f"{_shared_group(failing, path)} and chmod 640 with a "
                                     "group of theirs"))
    if unknown:
        return Check(f"config {name}", WARN, f"could not check {path} for {'; '.join(unknown)}")
    if name == "redis_key" and st.st_mode & stat.S_IROTH:
        return Check(f"config {name}", WARN, f"{path} is readable by every local user: "
                     f"chmod 640 with a group of {_names(users)}")
    return Check(f"config {name}", OK, f"{path} is readable by {_names(able)}")


def _time_zone(tz: str, where: str) -> Check:
    """A zone name this host's tzdata lacks fails every line that has --schedule."""
    from lockrun.errors import UsageError
    from lockrun.schedule import zone_from

    try:
        zone_from(tz)
    except UsageError as exc:
        return Check("config tz", FAIL, f"{where}: {exc}: every lockrun line with --schedule "
                                        "exits 64")
    return Check("config tz", OK, f"{tz} resolves on this host")


def _redis_socket(url: str, where: str, users: list[_User], me: _User) -> Check | None:
    """A unix:// Redis socket needs write permission for every user that connects."""
    import os
    import stat

    from lockrun.errors import UsageError
    from lockrun.redisurl import parse

    try:
        path = parse(url).path
    except UsageError:
        return None  # doctor's own --redis-url check has already said so
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        return Check("config redis_url", WARN, f"socket {path} ({where}): {exc.strerror} (is "
                                               "Redis running?)")
    if not stat.S_ISSOCK(st.st_mode):
        return Check("config redis_url", FAIL, f"{path} ({where}) is not a socket")
    able, blocked, unknown = _refusals(users, me, path, os.W_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        return Check("config redis_url", FAIL, f"{path} ({where}) does not let "
                     f"{_names(failing)} connect: every lockrun line they run fails as Redis "
                     "unreachable (on_redis_error; exit 75 by default); "
                     + _blocked_text(blocked, path, "write to", "set unixsocketperm and a "
                                     f"group of theirs ({_shared_group(failing, path)})"))
    if unknown:
        return Check("config redis_url", WARN, f"could not check {path} for "
                                               f"{'; '.join(unknown)}")
    return Check("config redis_url", OK, f"{path} lets {_names(able)} connect")


def _file_access(path: str) -> Check:
    import os
    import stat

    st = os.stat(path)
    if st.st_mode & stat.S_IROTH:
        return Check("config file", OK, f"{path} is readable by every user")
    return Check("config file", WARN, f"{path} is readable only by uid {st.st_uid}"
                 + (f" and gid {st.st_gid}" if st.st_mode & stat.S_IRGRP else "")
                 + ": lockrun lines in other users' crontabs exit 64")


def _syslog_socket() -> Check:
    import os
    import socket

    from lockrun.output import SYSLOG_SOCKET

    path = os.environ.get("LOCKRUN_SYSLOG_SOCKET", SYSLOG_SOCKET)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
    except OSError as exc:
        return Check("config syslog", FAIL, f"syslog = true, but {path} cannot be written "
                     f"({exc.strerror}): every lockrun prints a warning, skips included")
    return Check("config syslog", OK, f"{path} accepts messages")
