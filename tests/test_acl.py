"""README's Redis ACL user, taken from README.md itself, runs every feature lockrun has.

README says the list is complete and that each command in it is needed; both
claims are checked here against a real redis-server, feature by feature, so
the documentation cannot drift from the code.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    RedisServer,
    faketime_env,
    lockrun_env,
    run_lockrun,
    start_lockrun,
    wait_for,
)
from redis_topologies import wait_until

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py

DENIED = ("may not run", "NOPERM", "no permissions")


def documented_acl() -> list[str]:
    """The ACL rules exactly as README.md gives them to operators, password replaced."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("ACL SETUSER lockrun on "))
    rules = line.split()[3:]  # after "ACL SETUSER lockrun"
    return [">pw" if r.startswith(">") else r for r in rules]


def documented_commands() -> list[str]:
    return [r for r in documented_acl() if r.startswith("+")]


@dataclass
class Setup:
    server: RedisServer
    key: str
    tmp: Path

    @property
    def url(self) -> str:
        return f"unix://lockrun:pw@{self.server.socket}"

    def lockrun(self, *args: str, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
        return run_lockrun(*args, url=self.url, env=env)


def _problem(r: subprocess.CompletedProcess[str], code: int, stderr: str | None = "",
             ) -> str | None:
    """None when *r* is what the feature gives with enough permissions."""
    output = r.stdout + r.stderr
    if any(word in output for word in DENIED) or r.returncode != code or (
            stderr is not None and r.stderr != stderr):
        return f"exit {r.returncode}: {r.stderr.strip() or r.stdout.strip()[:300]}"
    return None


def run(s: Setup) -> str | None:
    return _problem(s.lockrun("-k", s.key, "--fire", "f1", "--", "sh", "-c", "exit 3"), 3)


def skip(s: Setup) -> str | None:
    return _problem(s.lockrun("-k", s.key, "--fire", "f1", "-E", "7", "--", "true"), 7)


def eval_fallback(s: Setup) -> str | None:
    s.server.client().script_flush()
    return _problem(s.lockrun("-k", s.key, "--fire", "e1", "--", "sh", "-c", "exit 4"), 4)


def wait_replicas(s: Setup) -> str | None:
    r = s.lockrun("-k", s.key, "--fire", "w1", "--wait-replicas", "1", "--wait-timeout", "0.5s",
                  "--", "sh", "-c", "exit 4")
    problem = _problem(r, 4, stderr=None)
    if problem is None and "0 of 1 replicas acknowledged" not in r.stderr:
        problem = f"no WAIT answer: {r.stderr.strip()}"
    return problem


def strict_replicas(s: Setup) -> str | None:
    marker = s.tmp / "strict-ran"
    r = s.lockrun("-k", s.key, "--fire", "s1", "--wait-replicas", "1", "--wait-timeout", "0.5s",
                  "--strict-replicas", "--", "touch", str(marker))
    problem = _problem(r, 75, stderr=None)
    if problem is None and (marker.exists() or "could not give back" in r.stderr):
        problem = f"the claim was not given back: {r.stderr.strip()}"
    # given back, not done: the next tick runs the fire
    return problem or _problem(s.lockrun("-k", s.key, "--fire", "s1", "--", "sh", "-c",
                                         "exit 5"), 5)


def too_late(s: Setup) -> str | None:
    env = faketime_env(s.url, "@2026-11-22 04:00:00")
    r = s.lockrun("-k", s.key, "--schedule", "0 3 * * *", "--tz", "UTC", "--max-skew", "0",
                  "-E", "5", "--", "true", env=env)
    return _problem(r, 5, None) or (None if "ran nowhere" in r.stderr else r.stderr)


def overlap_skip(s: Setup) -> str | None:
    started, release = s.tmp / "overlap-started", s.tmp / "overlap-release"
    first = start_lockrun("-k", s.key, "--fire", "o1", "--overlap", "skip", "--", "sh", "-c",
                          f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
                          url=s.url, env=lockrun_env(s.url))
    try:
        wait_for(lambda: started.exists() or first.poll() is not None, 30, "the first fire")
        second = _problem(s.lockrun("-k", s.key, "--fire", "o2", "--overlap", "skip", "-E",
                                    "3", "--", "true"), 3)
    finally:
        release.touch()
        stdout, stderr = first.communicate(timeout=60)
    return second or _problem(subprocess.CompletedProcess(first.args, first.returncode, stdout,
                                                          stderr), 0)


def renewal(s: Setup) -> str | None:
    """The job outlives ttl/3, so the lease is renewed once (a failure is a warning)."""
    return _problem(s.lockrun("-k", s.key, "--fire", "r1", "--ttl", "3s", "--redis-timeout",
                              "1s", "--", "sh", "-c", "sleep 1.6; exit 6"), 6)


def status(s: Setup) -> str | None:
    return _problem(s.lockrun("status"), 0, None) or _problem(s.lockrun("status", s.key), 0,
                                                              None)


def history(s: Setup) -> str | None:
    return _problem(s.lockrun("history", s.key), 0, None)


def unlock(s: Setup) -> str | None:
    return _problem(s.lockrun("unlock", s.key, "--fire", "f1", "--yes"), 0, None)


def doctor(s: Setup) -> str | None:
    r = s.lockrun("doctor")
    problem = _problem(r, 0, None)
    if problem is None and "scripts and permissions" not in r.stdout:
        problem = f"no permission check: {r.stdout}"
    return problem


def retries(s: Setup) -> str | None:
    """A failed attempt leaves a ticket; a later tick claims the retry (the try hash)."""
    args = ("-v", "-k", s.key, "--fire", "t1", "--retries", "1", "--retry-delay", "1s",
            "--retry-anywhere", "--", "sh", "-c")
    problem = _problem(s.lockrun(*args, "exit 3"), 3, None)
    if problem is not None:
        return problem
    tries: list[subprocess.CompletedProcess[str]] = []

    def claimed() -> bool:
        tries.append(s.lockrun(*args, "exit 0"))
        return "acquired" in tries[-1].stderr or tries[-1].returncode != 0

    if not wait_until(claimed, 20):
        return "the retry was never claimed"
    return _problem(tries[-1], 0, None)


def capture_logs(s: Setup) -> str | None:
    """--capture stores the tail beside the fire; logs reads it back."""
    problem = _problem(s.lockrun("-k", s.key, "--fire", "c1", "--capture", "4k", "--", "sh",
                                 "-c", "echo kept-output; exit 2"), 2, None)
    if problem is not None:
        return problem
    r = s.lockrun("logs", s.key, "--failed")
    return _problem(r, 0, None) or (None if "kept-output" in r.stdout else r.stdout)


FEATURES: list[Callable[[Setup], str | None]] = [
    run, skip, eval_fallback, wait_replicas, strict_replicas, too_late, overlap_skip, status,
    history, unlock, doctor, renewal, retries, capture_logs,
]
"""In an order where each feature's prerequisites come first (unlock needs f1 done)."""


@pytest.fixture
def setup(own_redis: RedisServer, key: str, tmp_path: Path) -> Iterator[Setup]:
    yield Setup(own_redis, key, tmp_path)


def _create_user(server: RedisServer, rules: list[str]) -> None:
    server.client().execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "lockrun", "reset", *rules)


def test_the_documented_acl_user_runs_every_feature(setup: Setup) -> None:
    _create_user(setup.server, documented_acl())
    failed = {f.__name__: p for f in FEATURES if (p := f(setup)) is not None}
    assert not failed, "\n".join(f"{name}: {problem}" for name, problem in failed.items())


def test_a_wrong_password_is_sent_once(setup: Setup) -> None:
    """A refused AUTH will be refused again: no retry, one line, exit 75."""
    _create_user(setup.server, documented_acl())
    client = setup.server.client()
    client.config_resetstat()
    r = run_lockrun("-k", setup.key, "--", "sh", "-c", "echo ran",
                    url=f"unix://lockrun:wrong@{setup.server.socket}")
    assert r.returncode == 75 and r.stdout == ""
    assert "invalid username-password pair" in r.stderr and len(r.stderr.splitlines()) == 1
    assert client.info("commandstats")["cmdstat_auth"]["calls"] == 1


def test_a_missing_permission_is_named_in_the_error_line(setup: Setup) -> None:
    _create_user(setup.server, [r for r in documented_acl() if r != "+xadd"])
    r = setup.lockrun("-k", setup.key, "--fire", "f2", "--", "true")
    assert r.returncode == 75 and "may not run XADD" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and ":pw@" not in r.stderr


@pytest.mark.parametrize("command", documented_commands())
def test_every_documented_command_is_needed_by_some_feature(setup: Setup, command: str) -> None:
    """README: removing any one command from the list breaks at least one feature."""
    _create_user(setup.server, [r for r in documented_acl() if r != command])
    broken = next((f.__name__ for f in FEATURES if f(setup) is not None), None)
    assert broken is not None, f"every feature works without {command}"
