"""The cron hot path imports only what it uses (issue: every fire costs N-1 skips)."""

from __future__ import annotations

import subprocess
import sys

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
