"""The cron hot path imports only what it uses (issue: every fire costs N-1 skips)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RedisServer, lockrun_env

NEVER_ON_SKIP = {"psutil", "ctypes", "cronsim", "zoneinfo", "tomllib", "tomli", "urllib.request",
                 "lockrun.admin", "lockrun.admin_cli", "lockrun.doctor", "lockrun.schedule",
                 "lockrun.monitor", "lockrun.ping", "lockrun.textfile", "lockrun.sentinel",
                 "difflib", "lockrun.hostcheck", "lockrun.access", "lockrun.crontabs",
                 "lockrun.completion"}
NOT_BEFORE_THE_JOB = {"shutil", "subprocess", "secrets", "hashlib", "_hashlib"}
"""The command is searched on PATH by hand and the owner token read from os.urandom: a
skip needs neither shutil, subprocess nor secrets (click's --help does), and the
scripts' SHA1 comes from CPython's _sha1, not from OpenSSL through hashlib."""
REDIS_PY = {"redis", "asyncio", "importlib.metadata", "lockrun.redispy"}
"""What redis-py costs (its __init__ imports redis.asyncio, hence asyncio, and
importlib.metadata): none of it on a single-server URL's hot path."""
NEVER_ON_PLAIN = REDIS_PY | {"ssl"}
"""redis:// and unix:// need no TLS either."""


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "lockrun", *args], env=env,
                       capture_output=True, text=True, timeout=60)
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def skip_and_run(env: dict[str, str], key: str, *extra: str) -> tuple[set[str], set[str]]:
    """The modules of a run (a fresh fire), then of a skip (the same fire, now done)."""
    args = ["-k", key, "--fire", "f1", *extra, "--", "true"]
    ran = imported(args, env)
    skipped = imported(args, env)
    return ran, skipped


def test_help_imports_neither_redis_nor_the_core(redis_server: RedisServer) -> None:
    modules = imported(["--help"], lockrun_env(redis_server.url))
    assert "click" in modules  # the measurement works
    core = {"redis", "lockrun.client", "lockrun.protocol", "lockrun.runner", "asyncio",
            "lockrun.resp", "lockrun.redispy", "ssl"}
    assert not modules & (core | NEVER_ON_SKIP)


@pytest.mark.parametrize("scheme", ["unix", "redis"])
def test_the_skip_and_run_paths_import_nothing_they_do_not_use(redis_server: RedisServer,
                                                               key: str, scheme: str) -> None:
    url = redis_server.url if scheme == "unix" else redis_server.tcp_url
    assert url.startswith(f"{scheme}://")
    env = lockrun_env(url)
    ran, skipped = skip_and_run(env, key)
    fire = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert fire.get("state") == "done" and fire.get("exit") == "0"  # it did run, then skip
    for modules in (ran, skipped):
        assert {"lockrun.client", "lockrun.protocol", "lockrun.resp"} <= modules
        assert not modules & NEVER_ON_PLAIN, modules & NEVER_ON_PLAIN
    # what the run path needs for the job (ctypes, psutil) is another slice's business
    assert not skipped & NEVER_ON_SKIP, skipped & NEVER_ON_SKIP
    assert not skipped & NOT_BEFORE_THE_JOB, skipped & NOT_BEFORE_THE_JOB


def test_the_redis_py_switch_is_what_imports_redis(redis_server: RedisServer, key: str) -> None:
    """The guard above can fail: the same skip over redis-py imports all of it."""
    env = lockrun_env(redis_server.url, LOCKRUN_TRANSPORT="redis-py")
    ran, skipped = skip_and_run(env, key)
    assert redis_server.client().hget(f"lockrun:{{{key}}}:fire:f1", "state") == "done"
    assert REDIS_PY <= skipped and REDIS_PY <= ran
    assert "lockrun.resp" in skipped  # its error classes are the common ones


def test_rediss_adds_only_ssl(tls_redis: tuple[RedisServer, Path, str], key: str) -> None:
    server, d, url = tls_redis
    tls = ("--redis-ca", str(d / "ca.crt"), "--redis-cert", str(d / "client.crt"),
           "--redis-key", str(d / "client.key"))
    ran, skipped = skip_and_run(lockrun_env(url), key, *tls)
    assert server.client().hget(f"lockrun:{{{key}}}:fire:f1", "state") == "done"
    for modules in (ran, skipped):
        assert {"ssl", "lockrun.resp"} <= modules
        assert not modules & REDIS_PY, modules & REDIS_PY
    assert not skipped & NEVER_ON_SKIP, skipped & NEVER_ON_SKIP


SETTINGS = {"LOCKRUN_TTL": "10m", "LOCKRUN_VERBOSE": "1", "LOCKRUN_SKIP_EXIT_CODE": "0",
            "LOCKRUN_KEY_PREFIX": "lockrun", "LOCKRUN_MAX_SKEW": "5s"}


@pytest.mark.parametrize("variables", [False, True], ids=["plain", "variables"])
@pytest.mark.parametrize("path", ["run", "skip"])
def test_a_fire_imports_no_click(redis_server: RedisServer, key: str, path: str,
                                 variables: bool) -> None:
    """click is for --help, errors and the verbs: a fire's line is read by lockrun.argv."""
    env = lockrun_env(redis_server.url, **(SETTINGS if variables else {}))
    args = ["-k", key, "--fire", "f1", "--", "true"]
    if path == "skip":
        subprocess.run([sys.executable, "-m", "lockrun", *args], env=env, check=True, timeout=60)
    modules = imported(args, env)
    assert {"lockrun.runner", "lockrun.argv"} <= modules  # the measurement works
    assert "click" not in modules
    assert "lockrun.wrapper_cli" not in modules


@pytest.mark.parametrize("path", ["run", "skip"])
def test_a_fire_with_a_configuration_file_imports_no_click(redis_server: RedisServer, key: str,
                                                           path: str, tmp_path: Path) -> None:
    config = tmp_path / "lockrun.toml"
    config.write_text(f'redis_url = "{redis_server.url}"\nttl = "10m"\n')
    env = lockrun_env(redis_server.url, LOCKRUN_CONFIG=str(config), **SETTINGS)
    args = ["-k", key, "--fire", "f1", "--", "true"]
    if path == "skip":
        subprocess.run([sys.executable, "-m", "lockrun", *args], env=env, check=True, timeout=60)
    modules = imported(args, env)
    assert {"lockrun.runner", "tomllib"} <= modules  # the measurement works: the file was read
    assert "click" not in modules


# What lockrun itself imports, with no site and no PYTHON* variables, as install.sh's
# launcher runs it (python -IS): the measurement above runs under site, which imports
# much of this list for itself and would hide it.
HEAVY_STDLIB = {"typing", "dataclasses", "inspect", "enum", "re", "socket", "signal",
                "subprocess", "threading", "selectors", "collections", "functools", "json",
                "urllib.parse", "pathlib", "hashlib", "random", "datetime", "contextlib"}
"""Each costs from 1 to 25 ms of CPU at import: together several times what a skip may
cost (issue 12: 2x the interpreter's start). The core uses the C modules below socket
and signal, annotations only under TYPE_CHECKING, and hand-written checks for regexes."""
RUN_ONLY = {"lockrun.supervisor", "lockrun.process", "ctypes"}
"""What only the server that runs the job needs (prctl through ctypes, the wait loop)."""


def lean_imports(args: list[str], env: dict[str, str]) -> set[str]:
    """The modules a fire imports under ``python -I -S``, lockrun found on sys.path."""
    root = str(Path(__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {root!r}); sys.argv = ['lockrun', *{args!r}]; "
            "from lockrun.entry import main; main()")
    r = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c", code], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("acl", [False, True], ids=["no-password", "acl-user"])
@pytest.mark.parametrize("scheme", ["unix", "redis"])
def test_a_fire_imports_no_heavy_stdlib_module(own_redis: RedisServer, key: str, scheme: str,
                                               acl: bool) -> None:
    url = own_redis.url if scheme == "unix" else own_redis.tcp_url
    if acl:
        own_redis.client().execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "bench", "on", ">s3cr%t", "~lockrun:*", "+@all")
        url = url.replace("://", "://bench:s3cr%25t@", 1)
    args = ["-k", key, "--fire", "f1", "--", "true"]
    ran = lean_imports(args, lockrun_env(url))
    skipped = lean_imports(args, lockrun_env(url))
    fire = own_redis.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert fire.get("state") == "done" and fire.get("exit") == "0"  # it ran, then skipped
    assert {"lockrun.runner", "lockrun.resp", "_socket"} <= skipped  # the measurement works
    assert RUN_ONLY <= ran
    assert not skipped & (HEAVY_STDLIB | RUN_ONLY), skipped & (HEAVY_STDLIB | RUN_ONLY)
    assert not ran & HEAVY_STDLIB, ran & HEAVY_STDLIB
