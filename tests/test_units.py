"""Pure functions: durations, names, fire ids, redaction, status mapping."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lockrun.durations import format_duration, parse_duration
from lockrun.errors import UsageError
from lockrun.exitcodes import ExitCode, from_wait_status
from lockrun.fire import minute_fire, validate_name
from lockrun.output import redact
from lockrun.protocol import job_keys, new_owner


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1.5s", 1.5),
     ("500ms", 0.5), ("0", 0), (" 5m ", 300)],
)
def test_durations_accept_the_documented_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-5", "5x", "1h30m", "5 m", "1e3", "ten", "5M"])
def test_durations_reject_everything_else(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(600, "10m"), (86400, "1d"), (1.5, "1500ms"),
                                               (90, "90s")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("name", ["a", "nightly-backup", "db.vacuum_1:eu", "x" * 200,
                                  "2026-11-22T03:00:00Z"])
def test_valid_names(name: str) -> None:
    assert validate_name(name, "key") == name


@pytest.mark.parametrize("name", ["", "x" * 201, "a b", "a{b}", "a}", "tab\there", "new\nline",
                                  "ümlaut", "a/b", "a*"])
def test_invalid_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError) as err:
        validate_name(name, "key")
    assert "\n" not in str(err.value)
    assert err.value.exit_code == ExitCode.USAGE


def test_minute_fire_is_the_utc_minute_floor() -> None:
    # 2026-11-22T03:00:59Z and 03:00:00Z are the same fire; 03:01:00 is the next one.
    base = 1795316400  # 2026-11-22T03:00:00Z
    assert minute_fire(base) == "2026-11-22T03:00:00Z"
    assert minute_fire(base + 59.99) == "2026-11-22T03:00:00Z"
    assert minute_fire(base + 60) == "2026-11-22T03:01:00Z"


def test_minute_fire_ignores_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert minute_fire(1795316400) == "2026-11-22T03:00:00Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_all_keys_of_a_job_share_one_hash_tag() -> None:
    keys = job_keys("backup", "2026-11-22T03:00:00Z")
    assert keys == {
        "fire": "lockrun:{backup}:fire:2026-11-22T03:00:00Z",
        "running": "lockrun:{backup}:running",
        "fence": "lockrun:{backup}:fence",
        "hist": "lockrun:{backup}:hist",
        "pause": "lockrun:{backup}:pause",
        "job": "lockrun:{backup}:job",
        "try": "lockrun:{backup}:try:2026-11-22T03:00:00Z",
        "out": "lockrun:{backup}:out:2026-11-22T03:00:00Z",
    }
    # the fleet's pause flag and its audit share a slot of their own, which no job's
    # name can take ('=' is not a key character)
    from lockrun.fire import NAME_CHARS
    from lockrun.protocol import FLEET_TAG, fleet_keys

    assert fleet_keys() == {"pause": "lockrun:{=fleet}:pause", "hist": "lockrun:{=fleet}:hist"}
    assert not NAME_CHARS.issuperset(FLEET_TAG)


def test_owner_tokens_are_unique_and_name_the_process() -> None:
    owners = {new_owner() for _ in range(1000)}
    assert len(owners) == 1000
    token, _, where = next(iter(owners)).partition("@")
    assert len(token) == 32
    assert where.endswith(f":{os.getpid()}")


@pytest.mark.parametrize(
    ("text", "shown"),
    [("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
     ("rediss://user:pa55@h/1 failed", "rediss://user:***@h/1 failed"),
     ("redis://host:6379/0", "redis://host:6379/0")],
)
def test_redact_hides_url_passwords(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_wait_status_follows_the_shell_convention() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(42)
    assert from_wait_status(os.waitpid(pid, 0)[1]) == 42
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    assert from_wait_status(os.waitpid(pid, 0)[1]) == 128 + signal.SIGKILL


def _scripts() -> dict[str, object]:
    import lockrun.admin
    import lockrun.protocol
    from lockrun.lua import Script

    return {f"{module.__name__}.{name}": value
            for module in (lockrun.protocol, lockrun.admin)
            for name, value in vars(module).items() if isinstance(value, Script)}


def test_every_lua_script_names_its_keys_and_arguments_and_uses_them() -> None:
    """Positional slots drift (ARGV[2] was a ttl, a retention or 0): each script uses the
    names it declares, every one of them, and no slot by number."""
    import re

    from lockrun.lua import Script

    scripts = _scripts()
    assert len(scripts) >= 8, sorted(scripts)
    for where, script in scripts.items():
        assert isinstance(script, Script)
        assert not re.search(r"\b(KEYS|ARGV)\[", script.body), where
        for name in (*script.keys, *script.args):
            assert re.search(rf"\b{name}\b", script.body), f"{where} never uses {name}"
        assert script.source.startswith("\n")  # Redis's line numbers in ACL errors


def test_a_script_call_must_give_exactly_its_names() -> None:
    import pytest

    from lockrun.lua import Script

    script = Script(("k",), ("a", "b"), "\nreturn {k, a, b}\n")
    assert script.bind({"k": "key"}, b=2, a="x") == (["key"], ["x", 2])
    with pytest.raises(TypeError):
        script.bind({"k": "key"}, a="x")
    with pytest.raises(TypeError):
        script.bind({"k": "key"}, a="x", b=1, c=3)


def test_the_command_search_finds_what_shutil_which_finds(tmp_path: Path) -> None:
    """resolve_command searches PATH itself (no shutil import on every fire); it must
    agree with shutil.which on what the job's PATH finds."""
    import os
    import shutil

    from lockrun.command import _which

    exe, plain, sub = tmp_path / "bin" / "tool", tmp_path / "other" / "tool", tmp_path / "dir"
    for f in (exe, plain):
        f.parent.mkdir(exist_ok=True)
        f.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (sub / "tool").mkdir(parents=True)  # a directory named like the command is skipped
    for path in (f"{sub}:{plain.parent}:{exe.parent}", f"{exe.parent}:{plain.parent}", "",
                 f"{plain.parent}", "/nonexistent"):
        for mode in (os.X_OK, os.F_OK):
            assert _which("tool", path, mode) == shutil.which("tool", mode=mode, path=path), \
                (path, mode)


def test_signal_names_are_signal_modules_without_importing_it() -> None:
    """lockrun.signals reads names off _signal (signal.py builds enums at import)."""
    import signal

    from lockrun.signals import signal_name

    for sig in signal.Signals:
        assert signal_name(sig.value) == sig.name
    assert signal_name(0) == "signal 0"
