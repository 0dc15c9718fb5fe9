"""What one user may do with one path, answered from mode bits as the kernel would.

Doctor cannot become each crontab user to try (it may not even be root), yet a
file the wrapper cannot read or a directory it cannot write fails every line
that user's cron starts. So the answer is computed: the class of bits that
applies (owner, else group, else other), every directory on the way, and for
the user running doctor also the kernel's own word (ACLs, read-only mounts).
A refusal names the path that says no and shows its mode, so the fix can be
read off the line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class User:
    """What the kernel looks at: the uid and every group cron gives the job (initgroups)."""

    name: str
    uid: int
    gids: frozenset[int]


@dataclass(frozen=True)
class Access:
    """One user's answer for one path; *blocker* is the path that says no."""

    ok: bool
    blocker: str = ""
    known: bool = True


def running_user() -> User:
    """The user whose access the kernel can be asked about directly: doctor's own."""
    import os
    import pwd

    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    return User(name, uid, frozenset({os.getegid(), *os.getgroups()}))


def names(users: list[User]) -> str:
    return ", ".join(u.name for u in users)


def access(user: User, path: str, want: int) -> Access:
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


def _bits_allow(user: User, path: str, want: int) -> Access:
    import os

    try:
        st = os.stat(path)
    except OSError as exc:
        return Access(False, f"{path} ({exc.strerror})", known=False)
    if user.uid == 0:
        return Access(True)
    if user.uid == st.st_uid:
        bits = st.st_mode >> 6
    elif st.st_gid in user.gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return Access(True) if bits & want == want else Access(False, path)


def kernel_access(user: User, me: User, path: str, want: int) -> Access:
    """access(), and for the user running doctor also the kernel's own answer (ACLs, a
    read-only mount)."""
    import os

    verdict = access(user, path, want)
    if user.uid == me.uid and verdict.ok and not os.access(path, want):
        return Access(False, path)
    return verdict


def described(path: str) -> str:
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
    """An ACL can grant what the mode bits refuse: a verdict from the bits then says so."""
    import os

    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except (OSError, AttributeError):
        return False


def shared_group(users: list[User], path: str) -> str:
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


def refusals(users: list[User], me: User, path: str,
             want: int) -> tuple[list[User], dict[str, list[User]], list[str]]:
    """Who may, who may not (by the path that stops them), and who could not be checked."""
    able: list[User] = []
    blocked: dict[str, list[User]] = {}
    unknown: list[str] = []
    for user in users:
        verdict = kernel_access(user, me, path, want)
        if verdict.ok:
            able.append(user)
        elif verdict.known:
            blocked.setdefault(verdict.blocker, []).append(user)
        else:
            unknown.append(f"{user.name}: cannot look at {verdict.blocker}")
    return able, blocked, unknown


def blocked_text(blocked: dict[str, list[User]], path: str, verb: str, fix: str) -> str:
    """'nobody cannot enter /x (drwx------ root:root); ...' with the fix for the target."""
    parts = []
    for blocker, users in blocked.items():
        if blocker == path:
            parts.append(f"{names(users)} cannot {verb} {described(path)}: {fix}")
        else:
            parts.append(f"{names(users)} cannot enter {described(blocker)}: give them "
                         "search (x) permission on it")
    return "; ".join(parts)
