"""``lockrun doctor`` on the host side: every user whose crontab calls lockrun gets what the
configuration file names, or doctor says who does not, once.

A setting that cannot work for one user fails every one of that user's lines
(exit 64) or mails every Redis failure; cron mails all of it. These tests give
doctor crontabs of their own in a private mount namespace (the host's are never
read or changed), and where an interpreter nobody may run exists, check doctor's
verdict against what the real wrapper does as nobody.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from conftest import LOCKRUN, RedisServer, lockrun_env

NAMESPACE = r"""
set -e
spool=$1 crond=$2 crontab=$3
shift 3
# Only inside this namespace: the host's /var/spool is never written.
[ -d /var/spool/cron ] || { mount -t tmpfs lockrun-test /var/spool; mkdir /var/spool/cron; }
mount --bind "$spool" /var/spool/cron
# Absent on the host means doctor sees none there, which is private already.
[ ! -d /etc/cron.d ] || mount --bind "$crond" /etc/cron.d
[ ! -f /etc/crontab ] || mount --bind "$crontab" /etc/crontab
exec "$@"
"""

LINE = "*/5 * * * * /usr/local/bin/lockrun -k report -- /usr/local/bin/report\n"


@dataclass
class Host:
    """Crontabs and files for doctor to look at, in a directory every user may enter."""

    root: Path
    server: RedisServer

    @property
    def spool(self) -> Path:
        return self.root / "spool-cron"

    @property
    def cron_d(self) -> Path:
        return self.root / "cron.d"

    @property
    def crontab(self) -> Path:
        return self.root / "crontab"

    @property
    def config(self) -> Path:
        return self.root / "lockrun.toml"

    def user_crontab(self, user: str, text: str = LINE) -> None:
        """Debian's layout: /var/spool/cron/crontabs/USER."""
        (self.spool / "crontabs" / user).write_text(text)

    def configure(self, text: str, mode: int = 0o644, group: str = "root") -> None:
        self.config.write_text(text)
        os.chown(self.config, 0, grp.getgrnam(group).gr_gid)
        self.config.chmod(mode)

    def doctor(self, *, no_dac_override: bool = False, url_from_file: bool = False,
               **extra: str) -> tuple[int, dict[str, tuple[str, str]]]:
        """Run the real ``lockrun doctor --json`` on this host's crontabs: (exit, checks).

        *no_dac_override*: as root, but without the capabilities that let root read
        what its mode bits refuse, as doctor run by an ordinary user would be.
        *url_from_file*: no LOCKRUN_REDIS_URL, so the file's redis_url is doctor's too.
        """
        drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
        env = lockrun_env(self.server.url, LOCKRUN_CONFIG=str(self.config), **extra)
        if url_from_file:
            del env["LOCKRUN_REDIS_URL"]
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            NAMESPACE, "sh", str(self.spool), str(self.cron_d),
                            str(self.crontab), *(drop if no_dac_override else []),
                            str(LOCKRUN), "doctor", "--json"],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.stderr == "", r.stderr
        checks = {c["name"]: (c["status"], c["detail"]) for c in json.loads(r.stdout)}
        return r.returncode, checks


@pytest.fixture
def host(redis_server: RedisServer) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("needs root: doctor's crontabs are bind-mounted in a mount namespace")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) (util-linux)")
    root = Path(tempfile.mkdtemp(prefix="lockrun-doctor-", dir="/tmp"))  # pytest's is root-only
    try:
        root.chmod(0o755)
        for d in ("spool-cron/crontabs", "cron.d"):
            (root / d).mkdir(parents=True)
        (root / "crontab").write_text("SHELL=/bin/sh\n")
        yield Host(root, redis_server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wrapper_as_root(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    """One crontab line of root's with this configuration file."""
    return subprocess.run([str(LOCKRUN), "-k", "doctor-host", "--fire", os.urandom(6).hex(),
                           *args, "--", "true"],
                          env=lockrun_env(host.server.url, LOCKRUN_CONFIG=str(host.config)),
                          capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------ situations

def unreadable_file(host: Host) -> None:
    host.user_crontab("nobody")
    host.configure('ttl = "5m"\n', mode=0o600)


def file_of_nobodys_group(host: Host) -> None:
    host.user_crontab("nobody")
    host.configure('ttl = "5m"\n', mode=0o640, group="nogroup")


def file_behind_a_private_directory(host: Host) -> None:
    """A readable file that nobody cannot reach: a symlink into a directory they cannot enter."""
    private = host.root / "private"
    private.mkdir(mode=0o700)
    host.user_crontab("nobody")
    host.configure('ttl = "5m"\n', mode=0o644)
    host.config.rename(private / "lockrun.toml")
    host.config.symlink_to(private / "lockrun.toml")


def file_nobody_owns_without_owner_read(host: Host) -> None:
    """Only the owner's bits count for the owner, though others' would let them read."""
    host.user_crontab("nobody")
    host.configure('ttl = "5m"\n', mode=0o044)
    os.chown(host.config, pwd.getpwnam("nobody").pw_uid, -1)


def tls_key_of_root(host: Host) -> None:
    """A client key only root may read, for a rediss:// URL (no server needed: the
    wrapper checks its files before it connects)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "client.key", "-out", "client.crt", "-days", "1", "-subj", "/CN=lockrun"],
                   cwd=host.root, check=True, capture_output=True, timeout=120)
    (host.root / "client.key").chmod(0o600)
    (host.root / "client.crt").chmod(0o644)
    host.user_crontab("nobody")
    host.configure(f'redis_url = "rediss://127.0.0.1:1/0"\n'
                   f'redis_ca = "{host.root / "client.crt"}"\n'
                   f'redis_cert = "{host.root / "client.crt"}"\n'
                   f'redis_key = "{host.root / "client.key"}"\n')


def metrics_dir_of_root(host: Host) -> None:
    metrics = host.root / "metrics"
    metrics.mkdir(mode=0o755)
    host.user_crontab("nobody")
    host.configure(f'metrics_dir = "{metrics}"\n')


def metrics_dir_of_nobody(host: Host) -> None:
    metrics_dir_of_root(host)
    os.chown(host.root / "metrics", pwd.getpwnam("nobody").pw_uid, -1)


def socket_in_a_private_directory(host: Host) -> None:
    """The test Redis's unix socket lives in pytest's root-only directory."""
    host.user_crontab("nobody")
    host.configure(f'redis_url = "{host.server.url}"\n')


# ------------------------------------------------------------------ the file itself

def test_a_file_nobody_cannot_read_fails_naming_nobody(host: Host) -> None:
    unreadable_file(host)
    code, checks = host.doctor()
    status, detail = checks["config file"]
    assert status == "fail", detail
    assert "not readable by nobody (their crontabs run lockrun: every such line exits 64)" \
        in detail
    assert "-rw------- root:root): chown root:nogroup and chmod 640" in detail
    assert checks["config crontabs"] == ("ok", "the crontabs of nobody run lockrun")
    assert code == 1


def test_a_file_of_nobodys_group_is_ok(host: Host) -> None:
    file_of_nobodys_group(host)
    code, checks = host.doctor()
    assert checks["config file"] == (
        "ok", f"{host.config} is readable by every user whose crontab runs lockrun: nobody")
    assert code == 0, checks


def test_a_password_every_local_user_can_read_warns(host: Host) -> None:
    host.user_crontab("nobody")
    host.configure('redis_password = "s3cret"\n', mode=0o644)
    _, checks = host.doctor()
    status, detail = checks["config file"]
    assert status == "warn" and "holds redis_password and is readable by every local user: " \
                                "chown root:nogroup and chmod 640" in detail, detail
    assert "s3cret" not in json.dumps(checks)
    host.configure('redis_password = "s3cret"\n', mode=0o640, group="nogroup")
    _, checks = host.doctor()
    assert checks["config file"][0] == "ok", checks


def test_a_directory_nobody_cannot_enter_fails_though_the_file_is_readable(
        host: Host) -> None:
    file_behind_a_private_directory(host)
    code, checks = host.doctor()
    status, detail = checks["config file"]
    assert status == "fail", detail
    assert f"nobody cannot enter {host.root / 'private'} (drwx------ root:root)" in detail
    assert code == 1


# ------------------------------------------------------------------ which crontabs count

def test_only_lines_that_call_lockrun_count_with_the_user_cron_runs_them_as(
        host: Host) -> None:
    if not (os.path.isfile("/etc/crontab") and os.path.isdir("/etc/cron.d")):
        pytest.skip("no /etc/crontab or /etc/cron.d on this host to bind over")
    for user in ("daemon", "bin", "sys", "www-data", "games"):
        pwd.getpwnam(user)  # Debian's base users; a KeyError here says the test needs others
    host.crontab.write_text("SHELL=/bin/sh\n"
                            "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n"
                            "0 4 * * * daemon /usr/bin/lockrun -k d -- true\n")
    (host.cron_d / "jobs").write_text("LOCKRUN_REDIS_URL=redis://redis.internal:6379/0\n"
                                      "# 0 3 * * * www-data lockrun -k old -- true\n"
                                      "   # * * * * * games lockrun -k old -- true\n"
                                      "@daily bin lockrun -k b -- true\n"
                                      "30 2 * * * www-data /usr/bin/backup\n")
    # Debian's cron reads only run-parts names in /etc/cron.d: this one is switched off
    (host.cron_d / "jobs.disabled").write_text("* * * * * sys lockrun -k s -- true\n")
    host.user_crontab("games", "MAILTO=lockrun@example.com\n# */5 * * * * lockrun\n")
    host.user_crontab("lockrun-test-deleted-user")  # its user is gone: cron skips it
    host.configure('ttl = "5m"\n', mode=0o600)
    code, checks = host.doctor()
    assert checks["config crontabs"] == (
        "ok", "the crontabs of daemon, bin run lockrun; not counted: the crontabs of "
              "lockrun-test-deleted-user, who have no passwd entry (cron does not run them)")
    status, detail = checks["config file"]
    assert status == "fail" and "not readable by daemon, bin (" in detail, detail
    assert code == 1


def test_crontabs_doctor_cannot_read_are_a_warning_not_a_crash(host: Host) -> None:
    """Doctor run by a user who may not list the spool (Debian makes it 1730 root:crontab)."""
    host.user_crontab("nobody")
    os.chown(host.spool / "crontabs", pwd.getpwnam("daemon").pw_uid, -1)
    (host.spool / "crontabs").chmod(0o700)
    host.configure('ttl = "5m"\n', mode=0o644)
    code, checks = host.doctor(no_dac_override=True)
    status, detail = checks["config crontabs"]
    assert status == "warn", detail
    assert detail.startswith("could not read /var/spool/cron/crontabs (Permission denied)")
    assert "run doctor as root" in detail
    assert checks["config file"] == ("ok", f"{host.config} is readable by every user")
    assert code == 0, checks


# ------------------------------------------------------------------ what the file names

def test_a_metrics_dir_nobody_cannot_write_fails_naming_nobody(host: Host) -> None:
    metrics_dir_of_root(host)
    code, checks = host.doctor()
    status, detail = checks["config metrics_dir"]
    assert status == "fail" and "is not writable by nobody: every lockrun line they run " \
                                "exits 64" in detail, detail
    assert code == 1
    os.chown(host.root / "metrics", pwd.getpwnam("nobody").pw_uid, -1)
    code, checks = host.doctor()
    assert checks["config metrics_dir"] == (
        "ok", f"{host.root / 'metrics'} is writable by nobody, root")
    assert code == 0, checks


@pytest.mark.parametrize("url", ["ftp://example.com/ping", "https:///no-host",
                                 "https://hc-ping.com/a b"])
def test_a_ping_url_the_wrapper_refuses_fails(host: Host, url: str) -> None:
    host.configure(f'ping_url = "{url}"\n')
    code, checks = host.doctor()
    status, detail = checks["config ping_url"]
    assert status == "fail" and "line 1" in detail and "exits 64" in detail, detail
    assert code == 1
    assert wrapper_as_root(host).returncode == 64  # what doctor says: every line
    host.configure('ping_url = "https://hc-ping.com/0b1f2c"\n')  # never contacted
    code, checks = host.doctor()
    assert checks["config ping_url"][0] == "ok" and code == 0, checks


def test_a_time_zone_this_host_does_not_know_fails(host: Host) -> None:
    host.configure('tz = "Mars/Olympus_Mons"\n')
    code, checks = host.doctor()
    status, detail = checks["config tz"]
    assert status == "fail" and "with --schedule exits 64" in detail, detail
    assert code == 1
    assert wrapper_as_root(host, "--schedule", "* * * * *").returncode == 64
    host.configure('tz = "Europe/Berlin"\n')
    _, checks = host.doctor()
    assert checks["config tz"] == ("ok", "Europe/Berlin resolves on this host")


def test_a_state_dir_shared_by_two_users_warns(host: Host) -> None:
    state = host.root / "state"
    host.user_crontab("nobody")
    host.user_crontab("www-data")
    host.configure(f'state_dir = "{state}"\n')
    code, checks = host.doctor()
    status, detail = checks["config state_dir"]
    assert status == "warn" and "is shared by nobody, www-data" in detail, detail
    assert code == 0
    # once it exists it is one user's: the other is named
    state.mkdir(mode=0o700)
    os.chown(state, pwd.getpwnam("nobody").pw_uid, -1)
    _, checks = host.doctor()
    status, detail = checks["config state_dir"]
    assert status == "warn" and "belongs to nobody" in detail, detail
    assert "crontabs of www-data run lockrun too" in detail
    # one user only: their own private directory is what lockrun wants
    (host.spool / "crontabs" / "www-data").unlink()
    _, checks = host.doctor()
    assert checks["config state_dir"] == (
        "ok", f"{state} is a private directory of nobody, the only user here who runs lockrun")


def test_a_tls_key_nobody_cannot_read_fails_naming_nobody(host: Host) -> None:
    tls_key_of_root(host)
    _, checks = host.doctor(url_from_file=True)
    status, detail = checks["config redis_key"]
    assert status == "fail" and "is not readable by nobody: every lockrun line they run " \
                                "exits 64" in detail, detail
    assert checks["config redis_cert"] == (
        "ok", f"{host.root / 'client.crt'} is readable by nobody, root")
    os.chown(host.root / "client.key", 0, grp.getgrnam("nogroup").gr_gid)
    (host.root / "client.key").chmod(0o640)
    _, checks = host.doctor(url_from_file=True)
    assert checks["config redis_key"][0] == "ok", checks
    (host.root / "client.key").chmod(0o644)  # readable, but by every local user
    _, checks = host.doctor(url_from_file=True)
    status, detail = checks["config redis_key"]
    assert status == "warn" and "readable by every local user" in detail, detail


def test_without_state_dir_doctor_looks_at_its_own_users_directory(host: Host) -> None:
    host.configure('ttl = "5m"\n')
    mine = host.root / "state-of-root"
    mine.mkdir(mode=0o700)
    code, checks = host.doctor(LOCKRUN_STATE_DIR=str(mine))
    status, detail = checks["config state_dir"]
    assert status == "ok" and detail.endswith(
        f"root's is {mine} (LOCKRUN_STATE_DIR), a private directory"), detail
    mine.chmod(0o770)  # lockrun refuses a directory others may write in
    _, checks = host.doctor(LOCKRUN_STATE_DIR=str(mine))
    status, detail = checks["config state_dir"]
    assert status == "warn" and "is not a private directory of root" in detail, detail
    _, checks = host.doctor(LOCKRUN_STATE_DIR=str(mine / "new"))
    assert checks["config state_dir"][1].endswith(
        "which does not exist yet; root can create it on first use"), checks
    assert code == 0, checks


def test_a_unix_socket_nobody_cannot_reach_fails_naming_nobody(host: Host) -> None:
    socket_in_a_private_directory(host)
    code, checks = host.doctor()
    status, detail = checks["config redis_url"]
    assert status == "fail" and "does not let nobody connect" in detail, detail
    assert code == 1


# ------------------------------------------------------------------ doctor against the kernel

# (situation, doctor's check, its verdict, nobody's crontab line's exit status)
AGREEMENT = [
    (unreadable_file, "config file", "fail", 64),
    (file_of_nobodys_group, "config file", "ok", 0),
    (file_behind_a_private_directory, "config file", "fail", 64),
    (file_nobody_owns_without_owner_read, "config file", "fail", 64),
    (metrics_dir_of_root, "config metrics_dir", "fail", 64),
    (tls_key_of_root, "config redis_key", "fail", 64),
    (metrics_dir_of_nobody, "config metrics_dir", "ok", 0),
    (socket_in_a_private_directory, "config redis_url", "fail", 75),
]


@pytest.mark.parametrize(("situation", "check", "verdict", "exit_code"), AGREEMENT,
                         ids=[s[0].__name__ for s in AGREEMENT])
def test_the_wrapper_run_as_nobody_does_what_doctor_said(
        host: Host, situation: Callable[[Host], None], check: str, verdict: str,
        exit_code: int) -> None:
    """Doctor computes access from mode bits; the kernel is the judge of that."""
    situation(host)
    # exit 64 comes before lockrun imports redis; a run needs all of lockrun
    python = nobody_python("lockrun.cli" if exit_code == 64 else "lockrun.runner")
    from_file = check in ("config redis_url", "config redis_key")
    assert host.doctor(url_from_file=from_file)[1][check][0] == verdict
    env = lockrun_env(host.server.tcp_url, LOCKRUN_CONFIG=str(host.config),
                      PYTHONPATH=LIBRARIES)
    if from_file:
        del env["LOCKRUN_REDIS_URL"]  # the file's URL, as nobody's line would use
    # --state-dir '': no state (an empty LOCKRUN_STATE_DIR is unset, and nobody's default
    # would be the host's /var/tmp/lockrun-65534)
    r = subprocess.run([*python, "-m", "lockrun", "-k", "doctor-host", "--fire",
                        os.urandom(6).hex(), "--state-dir", "", "--", "true"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == exit_code, r.stderr
    if exit_code == 64:  # for the reason doctor gave, not another one
        assert ("configuration file" if check == "config file"
                else check.removeprefix("config ")) in r.stderr, r.stderr


def _libraries() -> str:
    import lockrun

    return os.pathsep.join(sorted({str(Path(lockrun.__file__).parent.parent),
                                   str(Path(click.__file__).parent.parent)}))


LIBRARIES = _libraries()
"""lockrun and its dependencies, for an interpreter outside the venv."""


def nobody_python(module: str) -> list[str]:
    """setpriv as cron starts nobody's job (initgroups), with a Python that can import
    *module*; skip when this machine has none (a venv under /root, a different patch
    release whose dependencies the venv lacks)."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1) (util-linux)")
    for exe in dict.fromkeys([sys.executable, shutil.which("python3") or ""]):
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--init-groups", exe]
        if exe and subprocess.run([*command, "-c", f"import {module}"],
                                  env={"PATH": "/usr/bin:/bin", "PYTHONPATH": LIBRARIES},
                                  capture_output=True, timeout=30).returncode == 0:
            return command
    pytest.skip(f"no Python that nobody may run and that imports {module}")
