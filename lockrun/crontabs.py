"""Which users' crontabs call lockrun on this host, and so whose access the file must suit.

A setting one user's jobs cannot use fails every lockrun line of that user's
crontab, and only the crontabs say who those users are: the per-user spools
(Debian's cron, then cronie's) and the system crontabs, whose sixth field
names the user. Lines are told apart as cron tells them apart (an entry, a
variable, a comment), so a commented-out job or a MAILTO does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lockrun.access import User

CRONTAB_SPOOLS = ("/var/spool/cron/crontabs", "/var/spool/cron")
"""Per-user crontabs, each file named after its user: Debian's cron, then cronie's. The
second holds the first as a directory, which is not a crontab and is skipped."""
SYSTEM_CRONTABS = ("/etc/crontab",)
SYSTEM_CRONTAB_DIR = "/etc/cron.d"
"""Crontabs whose sixth field names the user the line runs as."""
CRONTAB_MAX = 1024 * 1024
"""A crontab is a few KiB; a bigger "crontab" is not one and is not read whole."""


@dataclass
class Crontabs:
    """Who runs lockrun from cron here, and what could not be looked at."""

    users: list[User] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    """Crontabs of names without a passwd entry: cron does not run them."""


def crontab_users() -> Crontabs:
    """Users whose crontab lines (not comments, not variables) mention lockrun.

    Only the local filesystem is read; a file or directory doctor may not read
    (doctor not run as root) is noted, never fatal.
    """
    import os

    tabs = Crontabs()
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
        user = user_named(name)
        if user is None:
            tabs.orphans.append(name)
        else:
            tabs.users.append(user)
    return tabs


def _crontab_files(directory: str, tabs: Crontabs, cron_d: bool) -> list[str]:
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


def _lockrun_lines(path: str, tabs: Crontabs, system: bool) -> list[str]:
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


def user_named(name: str) -> User | None:
    """The user cron would run *name*'s lines as, with the groups initgroups gives them;
    None for a name without a passwd entry, whose crontab cron does not run."""
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
    return User(name, entry.pw_uid, frozenset(gids))
