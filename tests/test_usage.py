"""Bad input: one ``lockrun:`` line, exit 64, nothing run, Redis untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LOCKRUN, RedisServer, lockrun_env, run_lockrun

BAD_ARGS = [
    pytest.param([], id="nothing"),
    pytest.param(["--"], id="no-key-no-command"),
    pytest.param(["-k", "job"], id="no-command"),
    pytest.param(["--", "CMD"], id="no-key"),
    pytest.param(["-k", "", "--", "CMD"], id="empty-key"),
    pytest.param(["-k", "has space", "--", "CMD"], id="space-in-key"),
    pytest.param(["-k", "a{b}", "--", "CMD"], id="braces-in-key"),
    pytest.param(["-k", "ctl\x01x", "--", "CMD"], id="control-char-in-key"),
    pytest.param(["-k", "x" * 201, "--", "CMD"], id="key-too-long"),
    pytest.param(["-k", "job", "--fire", "a b", "--", "CMD"], id="bad-fire"),
    pytest.param(["-k", "job", "--ttl", "5x", "--", "CMD"], id="bad-duration"),
    pytest.param(["-k", "job", "--ttl", "0", "--", "CMD"], id="ttl-zero"),
    pytest.param(["-k", "job", "--retention", "1m", "--", "CMD"], id="retention-too-short"),
    pytest.param(["-k", "job", "--timeout", "0", "--", "CMD"], id="timeout-zero"),
    pytest.param(["-k", "job", "-E", "256", "--", "CMD"], id="skip-code-range"),
    pytest.param(["-k", "job", "-E", "x", "--", "CMD"], id="skip-code-not-int"),
    pytest.param(["-k", "job", "--overlap", "maybe", "--", "CMD"], id="bad-choice"),
    pytest.param(["-k", "job", "--bogus", "--", "CMD"], id="unknown-option"),
    pytest.param(["-k", "job", "-v", "-q", "--", "CMD"], id="verbose-and-quiet"),
    pytest.param(["-k", "job", "--redis-url", "http://x", "--", "CMD"], id="bad-url-scheme"),
    pytest.param(["-k", "job", "--redis-timeout", "0", "--", "CMD"], id="redis-timeout-zero"),
    pytest.param(["stauts"], id="mistyped-verb"),
    pytest.param(["--json", "status"], id="option-before-verb"),
]


@pytest.mark.parametrize(("args", "said"), [
    (["stauts"], "unknown command 'stauts': did you mean 'lockrun status'?"),
    (["histroy", "job"], "did you mean 'lockrun history'?"),
    (["frobnicate"], "the commands are status, history, unlock, doctor"),
    (["--redis-url", "redis://127.0.0.1:1/0", "status"], "'status' must come first"),
])
def test_a_mistyped_or_misplaced_verb_says_what_to_type(args: list[str], said: str) -> None:
    r = run_lockrun(*args, url="redis://127.0.0.1:1/0")
    assert r.returncode == 64 and len(r.stderr.splitlines()) == 1, r.stderr
    assert said in r.stderr, r.stderr


def test_a_key_named_like_a_verb_is_still_a_key(redis_server: RedisServer) -> None:
    r = run_lockrun("-k", "status", "--fire", "f-verb", "--", "sh", "-c", "exit 6",
                    url=redis_server.url)
    assert r.returncode == 6, r.stderr


@pytest.mark.parametrize("args", BAD_ARGS)
def test_bad_arguments_are_one_line_and_exit_64(redis_server: RedisServer, tmp_path: Path,
                                                args: list[str]) -> None:
    marker = tmp_path / "ran"
    args = [a if a != "CMD" else "sh" for a in args]
    if args and args[-1] == "sh":
        args += ["-c", f"touch {marker}"]
    admin = redis_server.client()  # one connection, reused: only lockrun's would be new

    def connections() -> int:
        return int(admin.info("stats")["total_connections_received"])

    before = connections()
    r = run_lockrun(*args, url=redis_server.url)
    assert r.returncode == 64, r.stderr
    assert r.stderr.startswith("lockrun: ")
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not r.stderr.rstrip().endswith(":"), "the reason is missing"
    assert not marker.exists()
    # not even a connection; counting keys instead was flaky, other tests' keys expire
    assert connections() == before


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LOCKRUN_TTL", "soon"), ("LOCKRUN_SKIP_EXIT_CODE", "-1"), ("LOCKRUN_ON_LOST", "panic"),
     ("LOCKRUN_RETENTION", "10s"), ("LOCKRUN_VERBOSE", "perhaps")],
)
def test_bad_environment_values_name_the_variable(redis_server: RedisServer, tmp_path: Path,
                                                  variable: str, value: str) -> None:
    marker = tmp_path / "ran"
    env = lockrun_env(redis_server.url, **{variable: value})
    r = run_lockrun("-k", "job", "--", "touch", str(marker), url=redis_server.url, env=env)
    assert r.returncode == 64
    assert len(r.stderr.splitlines()) == 1
    if variable != "LOCKRUN_RETENTION":  # a range check names the setting, not its source
        assert variable in r.stderr
    assert not marker.exists()


def test_key_and_fire_are_never_read_from_the_environment(redis_server: RedisServer) -> None:
    env = lockrun_env(redis_server.url, LOCKRUN_KEY="inherited", LOCKRUN_FIRE="f")
    r = run_lockrun("--", "true", url=redis_server.url, env=env)
    assert r.returncode == 64
    assert "--key" in r.stderr


def test_options_after_the_command_belong_to_the_command(redis_server: RedisServer,
                                                         key: str) -> None:
    r = run_lockrun("-k", key, "echo", "-v", "--ttl", "x", url=redis_server.url)
    assert (r.returncode, r.stdout, r.stderr) == (0, "-v --ttl x\n", "")
    r = run_lockrun("-k", key + "b", "--", "echo", "-k", "--", url=redis_server.url)
    assert (r.returncode, r.stdout) == (0, "-k --\n")


def test_help_and_version_exit_0(redis_server: RedisServer) -> None:
    r = run_lockrun("--help", url=redis_server.url)
    assert r.returncode == 0 and "--key" in r.stdout and r.stderr == ""
    r = run_lockrun("--version", url=redis_server.url)
    assert r.returncode == 0 and r.stdout.startswith("lockrun, version ")


def test_python_dash_m_works_too(redis_server: RedisServer, key: str) -> None:
    r = subprocess.run([sys.executable, "-m", "lockrun", "-k", key, "--", "sh", "-c", "exit 6"],
                       env=lockrun_env(redis_server.url), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 6
    assert LOCKRUN.exists()
