"""``install.sh --with-redis`` leaves a Redis that ``lockrun doctor`` passes and that keeps
README's ACL user over a restart.

What goes wrong in the field is the interplay of redis.conf, the running server and the
next restart: an ``aclfile`` Redis refuses to start without, an ``appendonly yes`` that
makes a restart drop ``dump.rdb``, a user that lived only in memory. So each test runs
install.sh's Redis step (``--redis-only``, no virtualenv) against a redis.conf in a
temporary directory shaped like Debian's, and a real redis-server on a free port started
from that file, the way Debian's init script or install.sh itself starts it (daemonized).
Nothing here reads or writes /etc/redis or talks to a Redis on 6379.

The second half installs lockrun itself into a temporary prefix, as README says
(install.sh, which needs the package index pip is configured with), and checks the
launcher install.sh puts in place of pip's console script: a real fire through it, the
``python3 -IS`` it runs on (no ``site``, no PYTHON* variable of a cron environment
reaching lockrun), no byte-compiling on a fire, an upgrade that writes it again, and an
uninstall that leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import LOCKRUN, RedisServer, free_port, lockrun_env, pid_alive, wait_for
from test_acl import documented_acl

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "install.sh"
DEADLINE_S = 30.0


def _gone(pid: int) -> Callable[[], bool]:
    return lambda: not pid_alive(pid)


class ConfRedis:
    """A redis.conf of our own, and the redis-server processes started from it."""

    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        assert self.port != 6379
        self.conf = self.dir / "redis.conf"
        self.pidfile = self.dir / "redis.pid"
        self.aclfile = self.dir / "users.acl"
        self.password: str | None = None
        self.pids: set[int] = set()
        # Debian's redis.conf where it matters here: daemonized with a pid file, RDB
        # snapshots at the default points (no "save" line), appendonly no, and
        # maxmemory-policy and aclfile commented out.
        self.conf.write_text(
            f"bind 127.0.0.1\nprotected-mode yes\nport {self.port}\n"
            f"daemonize yes\npidfile {self.pidfile}\nlogfile {self.dir / 'redis.log'}\n"
            f"dir {self.dir}\n"
            "# aclfile /etc/redis/users.acl\n"
            "# maxmemory-policy noeviction\n"
            "appendonly no\n"
            'appendfilename "appendonly.aof"\n' + extra)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, username: str | None = None, password: str | None = None,
               ) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, username=username,
                           password=password if username else self.password,
                           decode_responses=True, socket_timeout=10, socket_connect_timeout=10)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.exceptions.RedisError:
            return False

    def pid(self) -> int:
        """The running server's pid, remembered so that teardown can end it."""
        pid = int(self.client().info("server")["process_id"])
        self.pids.add(pid)
        return pid

    def start(self) -> None:
        """As an init script does: redis-server with the file, which daemonizes."""
        subprocess.run(["redis-server", str(self.conf)], cwd="/", check=True,
                       capture_output=True, timeout=DEADLINE_S)
        wait_for(self.answers, DEADLINE_S, f"redis-server {self.conf}")
        self.pid()

    def stop(self) -> None:
        """As an init script does: SIGTERM, then wait until the process is gone."""
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        wait_for(_gone(pid), DEADLINE_S, f"redis-server {pid} to exit")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill_all(self) -> None:
        if self.pidfile.exists():
            self.pids.add(int(self.pidfile.read_text().strip() or 0))
        for pid in self.pids:
            if pid <= 0 or not pid_alive(pid):
                continue
            try:  # a redis-server whose "dir" is ours: never another test's server
                ours = (b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
                        and Path(f"/proc/{pid}/cwd").resolve() == self.dir.resolve())
            except OSError:
                continue
            if not ours:
                continue
            os.kill(pid, signal.SIGTERM)
            try:
                wait_for(_gone(pid), DEADLINE_S, f"redis-server {pid}")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)

    def effective(self, name: str) -> str | None:
        """The value redis-server takes from the file: its last active line for *name*."""
        value = None
        for line in self.conf.read_text().splitlines():
            words = line.split(maxsplit=1)
            if len(words) == 2 and not words[0].startswith("#") and words[0].lower() == name:
                value = words[1].strip("\"'")
        return value


@pytest.fixture
def conf_redis(tmp_path: Path) -> Iterator[ConfRedis]:
    server = ConfRedis(tmp_path / "etc-redis")
    yield server
    server.kill_all()


def acl(client: redis.Redis, *args: str) -> object:
    return client.execute_command("ACL", *args)  # type: ignore[no-untyped-call]


def install(server: ConfRedis, *, auth: str | None = None) -> subprocess.CompletedProcess[str]:
    """install.sh's Redis step for *server*'s file, as root would run it."""
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if auth is not None:
        env["REDISCLI_AUTH"] = auth
    r = subprocess.run(["bash", str(INSTALL), "--redis-only", "--redis-conf", str(server.conf)],
                       env=env, capture_output=True, text=True, timeout=300)
    if server.pidfile.exists():  # the server it started or restarted, for teardown
        server.pids.add(int(server.pidfile.read_text().strip() or 0))
    return r


def doctor(server: ConfRedis) -> dict[str, str]:
    r = subprocess.run([str(LOCKRUN), "doctor", "--json", "--redis-url", server.url],
                       env=lockrun_env(server.url), capture_output=True, text=True, timeout=60)
    checks = {c["name"]: f'{c["status"]}: {c["detail"]}' for c in json.loads(r.stdout)}
    assert r.returncode == (1 if any(v.startswith("fail") for v in checks.values()) else 0)
    return checks


def not_ok(checks: dict[str, str]) -> dict[str, str]:
    return {name: result for name, result in checks.items() if not result.startswith("ok:")}


@pytest.mark.parametrize("started_by", ["init script", "install.sh"])
def test_doctor_is_all_ok_after_install_and_after_a_restart(conf_redis: ConfRedis,
                                                            started_by: str) -> None:
    """Right after install.sh, and again once Redis has restarted from the file alone
    (so a setting made only with CONFIG SET would show)."""
    if started_by == "init script":
        conf_redis.start()
        assert "persistence" in not_ok(doctor(conf_redis))  # what README's set-up gave
    r = install(conf_redis)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert not_ok(checks := doctor(conf_redis)) == {}, checks
    assert {"connection", "eviction", "persistence", "scripts and permissions"} <= set(checks)
    conf_redis.restart()
    assert not_ok(checks := doctor(conf_redis)) == {}, checks
    assert (conf_redis.effective("appendonly"), conf_redis.effective("maxmemory-policy"),
            conf_redis.effective("aclfile")) == ("yes", "noeviction", str(conf_redis.aclfile))


def test_the_aclfile_is_private_to_the_user_redis_runs_as(conf_redis: ConfRedis) -> None:
    conf_redis.start()
    assert install(conf_redis).returncode == 0
    st = conf_redis.aclfile.stat()
    redis_uid = Path(f"/proc/{conf_redis.pid()}").stat().st_uid
    assert (oct(st.st_mode & 0o777), st.st_uid) == (oct(0o640), redis_uid)


def test_install_prints_readmes_acl_user_and_the_save_step(conf_redis: ConfRedis) -> None:
    r = install(conf_redis)
    assert r.returncode == 0, r.stderr
    printed = next(line.split() for line in r.stdout.splitlines()
                   if line.strip().startswith("ACL SETUSER lockrun "))
    assert printed[:4] == ["ACL", "SETUSER", "lockrun", "on"]
    readme = documented_acl()
    assert [">pw" if w == ">PASSWORD" else w for w in printed[3:]] == readme
    assert [line.strip() for line in r.stdout.splitlines()].count("ACL SAVE") == 1


@pytest.mark.parametrize("installed", [True, False], ids=["with install.sh", "old set-up"])
def test_readmes_acl_user_survives_a_redis_restart(conf_redis: ConfRedis, key: str,
                                                   tmp_path: Path, installed: bool) -> None:
    """README's recipe: ACL SETUSER exactly as README gives it, then ACL SAVE. With
    install.sh's aclfile the user is there after a restart; without it (the set-up before
    install.sh configured Redis) the user is gone and every lockrun line exits 75."""
    conf_redis.start()
    if installed:
        assert install(conf_redis).returncode == 0
    admin = conf_redis.client()
    acl(admin, "SETUSER", "lockrun", *documented_acl())
    if installed:
        assert acl(admin, "SAVE") in ("OK", b"OK", True)
        # ACL SAVE writes a new file with Redis's umask: install.sh started Redis with 007
        assert conf_redis.aclfile.stat().st_mode & 0o777 == 0o640
    else:
        with pytest.raises(redis.exceptions.ResponseError, match="not configured to use an ACL"):
            acl(admin, "SAVE")
    admin.close()
    conf_redis.restart()

    url = f"redis://lockrun:pw@127.0.0.1:{conf_redis.port}/0"
    marker = tmp_path / "job-ran"
    r = subprocess.run([str(LOCKRUN), "-k", key, "--", "sh", "-c", f"touch {marker}; exit 3"],
                       env=lockrun_env(url), capture_output=True, text=True, timeout=60)
    if installed:
        assert (r.returncode, marker.exists()) == (3, True), r.stderr
    else:
        assert (r.returncode, marker.exists()) == (75, False), r.stderr


def test_a_second_run_changes_nothing(conf_redis: ConfRedis) -> None:
    conf_redis.start()
    first = install(conf_redis)
    assert first.returncode == 0, first.stderr
    files = {p.name: p.read_bytes() for p in conf_redis.dir.iterdir()
             if p.suffix in (".conf", ".acl") or ".before-lockrun" in p.name}
    assert {"redis.conf", "users.acl", "redis.conf.before-lockrun"} <= set(files)
    pid = conf_redis.pid()

    second = install(conf_redis)
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout and second.stderr == ""
    again = {p.name: p.read_bytes() for p in conf_redis.dir.iterdir()
             if p.suffix in (".conf", ".acl") or ".before-lockrun" in p.name}
    assert again == files
    assert conf_redis.pid() == pid, "the second run restarted Redis"


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_data_written_before_install_is_still_there(conf_redis: ConfRedis,
                                                    running: bool) -> None:
    """Switching a file to appendonly yes and restarting would start from an empty
    append-only file and ignore dump.rdb: the data (running claims, done records) gone."""
    conf_redis.start()
    conf_redis.client().set("lockrun:{before}:fire:x", "claimed")
    if not running:
        conf_redis.stop()  # SIGTERM saves dump.rdb, as for any Debian Redis
        assert (conf_redis.dir / "dump.rdb").exists()
    r = install(conf_redis)
    assert r.returncode == 0, r.stderr
    assert conf_redis.client().get("lockrun:{before}:fire:x") == "claimed"
    conf_redis.restart()
    assert conf_redis.client().get("lockrun:{before}:fire:x") == "claimed"


def test_users_and_the_password_survive_installs_own_restart(tmp_path: Path) -> None:
    """install.sh restarts Redis to load the new aclfile; the users the server had, and
    the default user's password (requirepass), must come back with it."""
    server = ConfRedis(tmp_path / "etc-redis", extra="requirepass s3cret\n")
    server.password = "s3cret"
    try:
        server.start()
        acl(server.client(), "SETUSER", "alice", "on", ">alicepw", "~*", "+@all")
        before = server.conf.read_bytes()
        refused = install(server)
        assert refused.returncode == 1 and "REDISCLI_AUTH" in refused.stderr
        assert server.conf.read_bytes() == before and not server.aclfile.exists()

        r = install(server, auth="s3cret")
        assert r.returncode == 0, r.stderr
        assert "restarted Redis" in r.stdout
        assert server.client("alice", "alicepw").ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10).ping()
    finally:
        server.kill_all()


def test_an_aclfile_named_but_missing_is_created_so_redis_can_start(tmp_path: Path) -> None:
    """Redis refuses to start when its aclfile does not exist (an operator uncommented
    Debian's "aclfile /etc/redis/users.acl", say)."""
    server = ConfRedis(tmp_path / "etc-redis")
    server.conf.write_text(server.conf.read_text() + f"aclfile {server.aclfile}\n")
    try:
        r = install(server)
        assert r.returncode == 0, r.stderr
        assert server.aclfile.exists() and server.aclfile.stat().st_mode & 0o777 == 0o640
        assert server.effective("aclfile") == str(server.aclfile)
        assert [line for line in server.conf.read_text().splitlines()
                if line.startswith("aclfile")] == [f"aclfile {server.aclfile}"]
        assert not_ok(doctor(server)) == {}
    finally:
        server.kill_all()


def test_an_aclfile_lacking_the_servers_users_is_not_loaded(conf_redis: ConfRedis) -> None:
    """A users.acl already beside redis.conf (left from an earlier attempt, say) would
    replace the server's users at install.sh's restart: it stops before changing anything."""
    conf_redis.start()
    acl(conf_redis.client(), "SETUSER", "alice", "on", ">alicepw", "~*", "+@all")
    conf_redis.aclfile.write_text("user bob on >bobpw ~* +@all\n")
    before, pid = conf_redis.conf.read_bytes(), conf_redis.pid()
    r = install(conf_redis)
    assert r.returncode == 1 and "alice" in r.stderr and "nothing was changed" in r.stderr
    assert conf_redis.conf.read_bytes() == before and conf_redis.pid() == pid
    assert conf_redis.client("alice", "alicepw").ping()


def test_an_operators_eviction_policy_is_left_with_a_warning(tmp_path: Path) -> None:
    """Another application of this Redis may rely on its policy (a cache): install.sh
    says so and leaves it; lockrun doctor then keeps saying it too."""
    server = ConfRedis(tmp_path / "etc-redis", extra="maxmemory-policy allkeys-lru\n")
    try:
        server.start()
        r = install(server)
        assert r.returncode == 0, r.stderr
        assert "maxmemory-policy allkeys-lru" in r.stderr and "left" in r.stderr
        assert [line for line in server.conf.read_text().splitlines()
                if "maxmemory-policy" in line] == ["# maxmemory-policy noeviction",
                                                   "maxmemory-policy allkeys-lru"]
        assert server.effective("maxmemory-policy") == "allkeys-lru"
        assert server.client().config_get("maxmemory-policy") == {
            "maxmemory-policy": "allkeys-lru"}
        assert set(not_ok(doctor(server))) == {"eviction"}
    finally:
        server.kill_all()


def test_user_lines_in_the_file_get_no_aclfile(tmp_path: Path) -> None:
    """Redis refuses to start with both "user" lines and an aclfile: adding one would
    leave a Redis that does not come back after its next restart."""
    server = ConfRedis(tmp_path / "etc-redis", extra="user admin on >adminpw ~* +@all\n")
    try:
        server.start()
        r = install(server)
        assert r.returncode == 0, r.stderr
        assert "'user' lines" in r.stderr and "CONFIG REWRITE" in r.stderr
        assert server.effective("aclfile") is None and not server.aclfile.exists()
        server.restart()
        assert not_ok(doctor(server)) == {}
    finally:
        server.kill_all()


def test_a_redis_started_from_another_file_is_left_alone(tmp_path: Path) -> None:
    """Like the Redis the old install.sh started (no file at all): changing a file it
    never reads would not last, and restarting it from that file is not install.sh's
    call to make."""
    old = RedisServer(tmp_path / "old")
    server = ConfRedis(tmp_path / "etc-redis")
    try:
        text = server.conf.read_text().replace(f"port {server.port}\n", f"port {old.port}\n")
        server.conf.write_text(text)
        r = install(server)
        assert r.returncode == 1
        assert "started from no configuration file" in r.stderr
        assert server.conf.read_text() == text and not server.aclfile.exists()
        assert old.client().config_get("appendonly") == {"appendonly": "no"}
    finally:
        old.stop()
        server.kill_all()  # what a broken install.sh may have started from the file


def test_help_names_every_option() -> None:
    r = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0
    options = set(re.findall(r"^\s+(--[a-z-]+)\)", INSTALL.read_text(), re.M))
    assert {"--with-redis", "--redis-only", "--redis-conf"} <= options
    assert [o for o in sorted(options) if not re.search(rf"^\s+{o}\b", r.stdout, re.M)] == []


# ------------------------------------------------------------ lockrun's launcher

INSTALL_TIMEOUT_S = 600
"""install.sh creates a virtualenv and pip-installs into it: tens of seconds, more on a
loaded machine; the tests that install get this instead of the suite's 180 s."""
SITE_PROBE_ENV = "LOCKRUN_TEST_SITE_MARKER"


def install_sh(*args: str) -> subprocess.CompletedProcess[str]:
    """install.sh as root runs it, from a copy of the checkout, with its mandb kept off the
    host's man index.

    The copy because bash reads a script as it runs it: an edit of the working tree
    during the install would otherwise run half of each version. As root, mandb
    rewrites /var/cache/man: install.sh then runs in a private mount namespace with a
    tmpfs there. tests/cronlab.py does both for the real-cron test.
    """
    source = Path(tempfile.mkdtemp(prefix="lockrun-install-source-"))
    try:
        shutil.copytree(ROOT, source, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(
                            ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                            "__pycache__", "build", "dist", "*.egg-info"))
        return _run_install_sh(source / INSTALL.name, args)
    finally:
        shutil.rmtree(source, ignore_errors=True)


def _run_install_sh(script: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    argv = ["bash", str(script), *args]
    if os.geteuid() == 0 and shutil.which("unshare") and subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode == 0:
        prepare = ("[ ! -d /var/cache/man ] || mount -t tmpfs lockrun-test-man /var/cache/man; "
                   'exec "$0" "$@"')
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", prepare, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


@dataclass
class Installed:
    """lockrun installed by install.sh into a directory of ours: prefix, bin and man."""

    root: Path
    runs: list[subprocess.CompletedProcess[str]]
    """install.sh's runs, in order: a first install, then the same again (an upgrade)."""
    pycs: dict[Path, int] | None = None
    """Every .pyc of the virtualenv and its mtime, right after the last install."""

    @property
    def args(self) -> list[str]:
        return ["--prefix", str(self.prefix), "--bin-dir", str(self.root / "bin"),
                "--man-dir", str(self.root / "man")]

    @property
    def prefix(self) -> Path:
        return self.root / "opt"

    @property
    def venv(self) -> Path:
        return self.prefix / "venv"

    @property
    def link(self) -> Path:
        """The command on PATH that a crontab line names."""
        return self.root / "bin" / "lockrun"

    @property
    def launcher(self) -> Path:
        return self.venv / "bin" / "lockrun"

    @property
    def python3(self) -> Path:
        return self.venv / "bin" / "python3"

    def site_packages(self) -> list[Path]:
        """What site adds to the venv python's sys.path: what the launcher must add itself."""
        def path(*flags: str) -> list[str]:
            out = subprocess.run(
                [str(self.venv / "bin" / "python"), *flags, "-I", "-B", "-c",
                 "import sys; print(*sys.path, sep='\\n')"],
                capture_output=True, text=True, check=True, timeout=60).stdout
            return out.splitlines()

        without_site = path("-S")
        return [Path(p) for p in path() if p not in without_site]

    def install(self) -> subprocess.CompletedProcess[str]:
        r = install_sh(*self.args)
        self.runs.append(r)
        return r

    def pyc_files(self) -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in self.venv.rglob("*.pyc")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Installed twice: the second run is an upgrade, after which pip has written its
    console script over the launcher again; every test sees what the upgrade left."""
    inst = Installed(tmp_path_factory.mktemp("installed"), [])
    for _ in range(2):
        r = inst.install()
        assert r.returncode == 0, f"install.sh failed:\n{r.stdout}{r.stderr}"
    inst.pycs = inst.pyc_files()
    return inst


def fire(inst: Installed, url: str, key: str, fire_id: str, *job: str,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One crontab line's fire through the installed command (the link on PATH)."""
    return subprocess.run(
        [str(inst.link), "-k", key, "--fire", fire_id, "--", *(job or ("true",))],
        env=env or lockrun_env(url), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_the_installed_command_is_the_launcher_and_passes_a_fires_status(
        installed: Installed, redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    """Through the link a crontab names: the job runs once per fire, its exit status comes
    back, and the fire's record in Redis says so; the next server's start skips it."""
    assert installed.link.is_symlink() and installed.link.resolve() == installed.launcher
    ran = tmp_path / "ran"
    job = ("sh", "-c", f'echo ran >> "{ran}"; exit 3')
    first = fire(installed, redis_server.url, key, "f1", *job)
    assert (first.returncode, first.stdout, first.stderr) == (3, "", "")
    record = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert (record.get("state"), record.get("exit")) == ("done", "3"), record
    second = fire(installed, redis_server.url, key, "f1", *job)
    assert (second.returncode, ran.read_text()) == (0, "ran\n"), second.stderr


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_the_launcher_runs_python_with_one_IS_argument(installed: Installed) -> None:
    """Linux hands everything after the interpreter on a #! line to it as one argument:
    "-I -S" would reach python as one word and fail; "-IS" is both flags."""
    lines = installed.launcher.read_text().splitlines()
    assert lines[0] == f"#!{installed.python3} -IS"
    assert installed.launcher.stat().st_mode & 0o777 == 0o755
    assert installed.python3.exists()
    # the site-packages directories, computed at install time, and nothing else added
    added = [line for line in lines if line.startswith("sys.path")]
    assert len(added) == 1
    listed = [Path(p) for p in re.findall(r"'([^']+)'", added[0])]
    assert listed and {p.resolve() for p in listed} == {
        p.resolve() for p in installed.site_packages()}
    assert lines[-3:] == ["from lockrun.entry import main", "", "main()"]


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_an_upgrade_writes_the_launcher_again(installed: Installed) -> None:
    """pip writes its console script on every install; install.sh must write the
    launcher after each, not only when it creates the virtualenv."""
    first, upgrade = installed.runs
    assert "Creating virtualenv" in first.stdout and "Reusing virtualenv" in upgrade.stdout
    for r in (first, upgrade):
        assert f"Wrote lockrun's launcher {installed.launcher} (#!{installed.python3} -IS)" \
            in r.stdout, r.stdout
    text = installed.launcher.read_text()
    assert text.startswith(f"#!{installed.python3} -IS\n") and "import re" not in text


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_no_site_on_a_fire(installed: Installed, redis_server: RedisServer, key: str,
                           tmp_path: Path) -> None:
    """site is most of a skip's start-up cost. A .pth file in site-packages runs code
    whenever site starts (the control proves it here); through the launcher it must not.
    And run the way the #! line says, with -X importtime, no module named site loads."""
    probe = installed.site_packages()[0] / "zz-lockrun-test-site-probe.pth"
    probe.write_text(f"import os; m = os.environ.get('{SITE_PROBE_ENV}'); "
                     "m and open(m, 'a').write('site ran\\n')\n")
    try:
        control, marker = tmp_path / "control", tmp_path / "marker"
        # -B: the control compiles nothing (test_a_fire_compiles_nothing watches that)
        subprocess.run([str(installed.venv / "bin" / "python"), "-B", "-c", "pass"],
                       env={**os.environ, SITE_PROBE_ENV: str(control)}, check=True,
                       timeout=60)
        assert control.read_text().startswith("site ran")
        r = fire(installed, redis_server.url, key, "f1",
                 env=lockrun_env(redis_server.url, **{SITE_PROBE_ENV: str(marker)}))
        assert r.returncode == 0, r.stderr
        assert not marker.exists(), "site ran under the launcher"
    finally:
        probe.unlink()

    r = subprocess.run([str(installed.python3), "-IS", "-X", "importtime",
                        str(installed.launcher), "-k", key, "--fire", "f2", "--", "true"],
                       env=lockrun_env(redis_server.url), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "lockrun.entry" in imported and "lockrun" in imported
    assert not {"site", "sitecustomize", "usercustomize"} & imported


def fake_lockrun(where: Path, marker: Path) -> Path:
    """A lockrun package that exits 42 and leaves a file when imported."""
    pkg = where / "lockrun"
    pkg.mkdir(parents=True)
    code = f"open({str(marker)!r}, 'w').write('imported')\nprint('FAKE')\nraise SystemExit(42)\n"
    (pkg / "__init__.py").write_text(code)
    (pkg / "entry.py").write_text(code)
    return where


# Each of these, reaching lockrun's python, changes a fire: the fake package is imported
# (exit 42), python cannot start (PYTHONHOME), a line on stderr that cron mails
# (PYTHONWARNINGS), the exit status lost to an interactive prompt (PYTHONINSPECT: 1), a
# pyc written under PYTHONPYCACHEPREFIX on every fire. PYTHONSTARTUP only joins "all":
# python reads it for interactive sessions only, so alone it changes nothing to break.
PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONWARNINGS", "PYTHONINSPECT",
                    "PYTHONPYCACHEPREFIX")


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
@pytest.mark.parametrize("variables", [*PYTHON_VARIABLES, "all"])
def test_python_variables_of_a_cron_environment_do_not_reach_lockrun(
        installed: Installed, redis_server: RedisServer, key: str, tmp_path: Path,
        variables: str) -> None:
    fake = tmp_path / "fake-imported"
    startup = tmp_path / "startup.py"
    startup.write_text(f"open({str(tmp_path / 'startup-ran')!r}, 'w')\n")
    values = {"PYTHONPATH": str(fake_lockrun(tmp_path / "pythonpath", fake)),
              "PYTHONHOME": str(tmp_path / "no-such-home"),
              "PYTHONWARNINGS": "error,error::NoSuchWarningCategory",
              "PYTHONINSPECT": "1",
              "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache"),
              "PYTHONSTARTUP": str(startup)}
    chosen = values if variables == "all" else {variables: values[variables]}
    env = lockrun_env(redis_server.url, **chosen)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else no pyc is written even where it would be
    r = fire(installed, redis_server.url, key, "f1", "sh", "-c", "exit 3", env=env)
    assert (r.returncode, r.stdout, r.stderr) == (3, "", "")
    assert not fake.exists() and not (tmp_path / "startup-ran").exists()
    assert not (tmp_path / "pycache").exists()


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_a_fire_compiles_nothing(installed: Installed, redis_server: RedisServer,
                                 key: str) -> None:
    """pip byte-compiled every module at install time, before install.sh wrote the
    launcher: no .pyc is newer than the launcher (install.sh's own --version run, and the
    tests before this one, would have written the ones a fire lacked: under -I,
    PYTHONDONTWRITEBYTECODE does not apply). A run and a skip then change none."""
    written = installed.launcher.stat().st_mtime_ns
    assert installed.pycs, "no .pyc in the virtualenv at all"
    assert [p for p, mtime in installed.pyc_files().items() if mtime > written] == []
    package = next(d / "lockrun" for d in installed.site_packages() if (d / "lockrun").is_dir())
    compiled = {p.name.split(".")[0] for p in (package / "__pycache__").glob("*.pyc")}
    assert {p.stem for p in package.glob("*.py")} - compiled == set()
    for fire_id in ("f1", "f1"):  # a run, then a skip of the same fire
        r = fire(installed, redis_server.url, key, fire_id)
        assert r.returncode == 0, r.stderr
    assert installed.pyc_files() == installed.pycs


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_a_long_prefix_with_a_blank_then_uninstall(tmp_path: Path, redis_server: RedisServer,
                                                   key: str) -> None:
    """A #! line holds no blank and old kernels read only 127 bytes of it: such a prefix
    gets a /bin/sh line that runs the same python -IS. Then --uninstall removes all that
    install.sh made but the bin and man directories it created (the link and the page in
    them go)."""
    inst = Installed(tmp_path / ("a directory with blanks " + "x" * 100), [])
    r = inst.install()
    assert r.returncode == 0, f"install.sh failed:\n{r.stdout}{r.stderr}"
    lines = inst.launcher.read_text().splitlines()
    assert lines[:3] == ["#!/bin/sh", f"'''exec' \"{inst.python3}\" -IS \"$0\" \"$@\"",
                         "' '''"]
    fake = tmp_path / "fake-imported"
    env = lockrun_env(redis_server.url, PYTHONPATH=str(fake_lockrun(tmp_path / "pp", fake)),
                      PYTHONINSPECT="1")
    r = fire(inst, redis_server.url, key, "f1", "sh", "-c", "exit 3", env=env)
    assert (r.returncode, r.stdout, r.stderr, fake.exists()) == (3, "", "", False)
    assert (inst.root / "man" / "lockrun.1").is_file()

    u = install_sh("--uninstall", *inst.args)
    assert u.returncode == 0, u.stderr
    left = sorted(str(p.relative_to(inst.root)) for p in inst.root.rglob("*"))
    assert left == ["bin", "man"]
    assert not any(p.is_symlink() for p in (inst.root / "bin").iterdir())
