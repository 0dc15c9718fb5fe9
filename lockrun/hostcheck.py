"""The host side of the configuration file: what every crontab line on this server needs.

The wrapper checks what the file names on each run, as the user cron runs it
as; a problem then fails every line of every crontab (exit 64) or mails every
Redis failure. Doctor says so once, up front: for each user whose crontab
calls lockrun (lockrun.crontabs), with access computed from mode bits
(lockrun.access), and for the user running doctor. First of all, whether the
wrapper accepts the file's values at all (values()): the file's loader only
knows names and types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from lockrun.access import (
    User,
    blocked_text,
    described,
    kernel_access,
    names,
    refusals,
    running_user,
    shared_group,
)
from lockrun.configfile import FileSettings
from lockrun.crontabs import Crontabs, crontab_users
from lockrun.doctor import FAIL, OK, WARN, Check


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
    tabs = crontab_users()
    me = running_user()
    everyone = [*tabs.users, *([] if any(u.uid == me.uid for u in tabs.users) else [me])]
    checks = [_crontabs_check(tabs), _config_file(settings, tabs.users, me), values(settings)]
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


OWN_LINES = ("metrics_dir", "state_dir", "ping_url", "redis_ca", "redis_cert", "redis_key")
"""Settings with a check line of their own, which names each crontab user a value fails
for. values() does not run their option callbacks again: metrics_dir's and the TLS files'
would judge the file by doctor's user alone, and every problem would be said twice."""
PROBE = ("-k", "doctor", "--fire", "doctor", "--", "true")
"""A crontab line with nothing on it but what the file cannot hold (key, fire, command)."""


def values(settings: FileSettings) -> Check:
    """Every value of the file as the wrapper parses and checks it, with its own sentences.

    The file's loader checks names and TOML types only; a duration that does not
    parse, or a ttl too short for the Redis timeout, is refused by the wrapper
    on every line (exit 64) while doctor's own options may never read it. So
    the wrapper's click command parses the file's values as main() hands them
    to a real line, its option callbacks and types run, and then the checks of
    its body that hold for any line: --verbose with --quiet, the TLS files
    against the URL, and lockrun.config's timing rules.
    """
    from lockrun.configfile import EXTRA_SETTINGS
    from lockrun.errors import UsageError
    from lockrun.options import bad_parameter
    from lockrun.wrapper_cli import wrapper

    defaults = {k: v for k, v in settings.values.items() if k not in EXTRA_SETTINGS}
    try:
        ctx = _from_the_file_only(wrapper).make_context(
            "lockrun", list(PROBE), default_map=defaults, obj=settings, auto_envvar_prefix=None)
    except click.BadParameter as exc:
        return _values_fail(bad_parameter(exc))
    except click.ClickException as exc:
        return _values_fail(exc.format_message())
    for names_used, rule in _BODY_RULES:
        try:
            rule(ctx.params)
        except UsageError as exc:
            return _values_fail(str(exc) + _set_at(settings, names_used))
    own = [name for name in OWN_LINES if name in settings.values]
    return Check("config values", OK, f"the wrapper accepts every value of {settings.path}"
                 + (f" (checked on lines of their own: {', '.join(own)})" if own else ""))


def _values_fail(sentence: str) -> Check:
    return Check("config values", FAIL, f"{sentence}: every lockrun line exits 64")


def _from_the_file_only(command: click.Command) -> click.Command:
    """*command* with no option read from the environment and OWN_LINES left unchecked.

    The question is whether the file works, and a crontab line does not run in
    doctor's environment: a LOCKRUN_TTL there must neither hide the file's bad
    ttl nor fail a good one. Copies, so the real wrapper keeps its variables.
    """
    import copy

    params = []
    for param in command.params:
        clone = copy.copy(param)
        clone.envvar = None
        if clone.name in OWN_LINES:
            clone.callback = None
        params.append(clone)
    shadow = copy.copy(command)
    shadow.params = params
    return shadow


def _verbosity(options: dict[str, Any]) -> None:
    """The wrapper's own rule (lockrun.cli.wrapper), for a file that sets both."""
    from lockrun.errors import UsageError

    if options["verbose"] and options["quiet"]:
        raise UsageError("--verbose and --quiet cannot be used together")


def _schedule(options: dict[str, Any]) -> None:
    """A schedule in the file is every line's; its syntax does not depend on the zone,
    which has a line of its own (config tz)."""
    import time
    from datetime import timezone

    from lockrun.schedule import validate

    if options["schedule"] is not None:
        validate(options["schedule"], timezone.utc, time.time())


def _tls(options: dict[str, Any]) -> None:
    from lockrun.options import tls_files

    tls_files(options)


def _timing(options: dict[str, Any]) -> None:
    """lockrun.config.Config refuses a lease that a slow Redis reply could outlive."""
    from lockrun.config import Config
    from lockrun.options import tls_files

    given = {name: options[name] for name in Config.field_names() if name in options}
    Config(**{**given, "key": "doctor", "fire": "doctor", "command": ("true",),
              "tls": tls_files(options)})


_BODY_RULES: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any]], None]], ...] = (
    (("verbose", "quiet"), _verbosity),
    (("schedule",), _schedule),
    (("redis_url", "redis_ca", "redis_cert", "redis_key"), _tls),
    (("ttl", "redis_timeout", "wait_replicas", "wait_timeout"), _timing),
)
"""The wrapper's checks after parsing that any line meets, in the wrapper's order, so the
first sentence doctor shows is the one every line prints; and the settings each reads."""


def _set_at(settings: FileSettings, used: tuple[str, ...]) -> str:
    """' (in FILE: ttl on line 1, ...)': the wrapper's sentence names flags, not lines."""
    prefix = f"{settings.path}, "
    found = [f"{name} on {settings.where(name).removeprefix(prefix)}" for name in used
             if name in settings.values]
    return f" (in {settings.path}: {', '.join(found)})" if found else ""


def _crontabs_check(tabs: Crontabs) -> Check:
    text = (f"the crontabs of {names(tabs.users)} run lockrun" if tabs.users
            else "no crontab on this host runs lockrun")
    if tabs.orphans:
        text += (f"; not counted: the crontabs of {', '.join(tabs.orphans)}, who have no passwd "
                 "entry (cron does not run them)")
    if tabs.unreadable:
        return Check("config crontabs", WARN, f"could not read {'; '.join(tabs.unreadable)}, "
                     "so users of those crontabs were not checked (run doctor as root); "
                     + text)
    return Check("config crontabs", OK, text)


def _config_file(settings: FileSettings, users: list[User], me: User) -> Check:
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
    able, blocked, unknown = refusals(users, me, path, os.R_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        group = shared_group(failing, path)
        fix = (f"chown root:{group} and chmod 640 with a group of theirs" if group != "GROUP"
               else "chown root:GROUP and chmod 640 with a group all of them are in")
        return Check("config file", FAIL, f"{path} is not readable by {names(failing)} (their "
                     "crontabs run lockrun: every such line exits 64); "
                     + blocked_text(blocked, path, "read", fix)
                     + (f"; not checked: {'; '.join(unknown)}" if unknown else ""))
    if unknown:
        return Check("config file", WARN, f"could not check {path} for "
                     f"{'; '.join(unknown)}; readable by {names(able)}")
    if secret:
        return _password_readable(path, users)
    return Check("config file", OK, f"{path} is readable by every user whose crontab runs "
                                    f"lockrun: {names(able)}")


def _password_readable(path: str, users: list[User]) -> Check:
    return Check("config file", WARN, f"{path} holds redis_password and is readable by every "
                 f"local user: chown root:{shared_group(users, path)} and chmod 640 with a "
                 "group of the users whose crontabs run lockrun")


def _metrics_dir(metrics: str, where: str, users: list[User], me: User) -> Check:
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
    able, blocked, unknown = refusals(users, me, metrics, os.W_OK | os.X_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        return Check("config metrics_dir", FAIL, f"{metrics} ({where}) is not writable by "
                     f"{names(failing)}: every lockrun line they run exits 64; "
                     + blocked_text(blocked, os.path.abspath(metrics), "write in",
                                     f"chgrp {shared_group(failing, metrics)} and chmod 2775 "
                                     "with a group of theirs")
                     + (f"; not checked: {'; '.join(unknown)}" if unknown else ""))
    if unknown:
        return Check("config metrics_dir", WARN, f"could not check {metrics} for "
                     f"{'; '.join(unknown)}; writable by {names(able)}")
    return Check("config metrics_dir", OK, f"{metrics} is writable by {names(able)}")


def _state_dir(settings: FileSettings, users: list[User], me: User) -> Check:
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
                         f"{names(sharing)}, whose crontabs run lockrun, but lockrun uses a "
                         "state directory only for the user who owns it (the first of them "
                         f"to create it): the others cannot, {more}")
        ok, text = _creatable(path, sharing[0], me)
        return Check("config state_dir", OK if ok else WARN, f"{path} ({where}) {text}")
    if not stat.S_ISDIR(st.st_mode):
        return Check("config state_dir", WARN, f"{path} ({where}) is not a directory: lockrun "
                     "keeps no state and reports every Redis failure")
    if st.st_mode & 0o022:
        return Check("config state_dir", WARN, f"{described(path)} ({where}) is writable by "
                     "group or others: lockrun refuses it for every user and reports every "
                     "Redis failure; chmod 700")
    owner = _owner_name(st.st_uid)
    others = [u for u in sharing if u.uid != st.st_uid]
    if others:
        return Check("config state_dir", WARN, f"{path} ({where}) belongs to {owner}, but the "
                     f"crontabs of {names(others)} run lockrun too: lockrun refuses a state "
                     f"directory that is not the running user's own, {more}")
    return Check("config state_dir", OK, f"{path} is a private directory of {owner}, the only "
                 "user here who runs lockrun")


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _own_state_dir(config: str, me: User) -> Check:
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
        return Check("config state_dir", WARN, f"{head}: {described(path)} is not a private "
                     f"directory of {me.name}, so lockrun keeps no state and reports every "
                     "Redis failure")
    return Check("config state_dir", OK, f"{head}, a private directory")


def _creatable(path: str, user: User, me: User) -> tuple[bool, str]:
    """A missing state directory is made on first use: its nearest existing parent must
    let *user* write. (Whether it can be, and the sentence that says so.)"""
    import os

    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    verdict = kernel_access(user, me, parent, os.W_OK | os.X_OK)
    if verdict.ok:
        return True, f"does not exist yet; {user.name} can create it on first use"
    return False, (f"does not exist and {user.name} cannot create it ("
                   f"{described(verdict.blocker) if verdict.known else verdict.blocker}): "
                   "lockrun keeps no state and reports every Redis failure")


def _option_problem(callback: Callable[[click.Context, click.Parameter, str | None],
                                       str | None], flag: str, value: str) -> str | None:
    """The wrapper's own check of *value* (its option callback), as a sentence or None."""
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


def _tls_file(name: str, path: str, where: str, users: list[User], me: User) -> Check:
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
    able, blocked, unknown = refusals(users, me, path, os.R_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        return Check(f"config {name}", FAIL, f"{path} ({where}) is not readable by "
                     f"{names(failing)}: every lockrun line they run exits 64; "
                     + blocked_text(blocked, path, "read", f"chown root:"
                                     f"{shared_group(failing, path)} and chmod 640 with a "
                                     "group of theirs"))
    if unknown:
        return Check(f"config {name}", WARN, f"could not check {path} for {'; '.join(unknown)}")
    if name == "redis_key" and st.st_mode & stat.S_IROTH:
        return Check(f"config {name}", WARN, f"{path} is readable by every local user: "
                     f"chmod 640 with a group of {names(users)}")
    return Check(f"config {name}", OK, f"{path} is readable by {names(able)}")


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


def _redis_socket(url: str, where: str, users: list[User], me: User) -> Check | None:
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
    able, blocked, unknown = refusals(users, me, path, os.W_OK)
    if blocked:
        failing = [u for group in blocked.values() for u in group]
        return Check("config redis_url", FAIL, f"{path} ({where}) does not let "
                     f"{names(failing)} connect: every lockrun line they run fails as Redis "
                     "unreachable (on_redis_error; exit 75 by default); "
                     + blocked_text(blocked, path, "write to", "set unixsocketperm and a "
                                     f"group of theirs ({shared_group(failing, path)})"))
    if unknown:
        return Check("config redis_url", WARN, f"could not check {path} for "
                                               f"{'; '.join(unknown)}")
    return Check("config redis_url", OK, f"{path} lets {names(able)} connect")


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
