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


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "lockrun", *args], env=env,
                       capture_output=True, text=True, timeout=60)
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_help_imports_neither_redis_nor_the_core(redis_server: RedisServer) -> None:
    modules = imported(["--help"], lockrun_env(redis_server.url))
    assert "click" in modules  # the measurement works
    core = {"redis", "lockrun.client", "lockrun.protocol", "lockrun.runner", "asyncio"}
    assert not modules & (core | NEVER_ON_SKIP)


def test_the_skip_path_imports_nothing_it_does_not_use(redis_server: RedisServer,
                                                       key: str) -> None:
    env = lockrun_env(redis_server.url)
    args = ["-k", key, "--fire", "f1", "--", "true"]
    subprocess.run([sys.executable, "-m", "lockrun", *args], env=env, check=True, timeout=60)
    modules = imported(args, env)  # the fire is done now: this run skips
    assert {"redis", "lockrun.client", "lockrun.protocol"} <= modules
    assert not modules & NEVER_ON_SKIP


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
