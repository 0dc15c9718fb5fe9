"""Documentation is part of the feature: the man page and README follow the parser."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

from conftest import LOCKRUN, RedisServer, faketime_env, lockrun_env
from cronlab import as_cron_runs_it, readme_crontab_block

from lockrun.cli import ADMIN_VERBS
from lockrun.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
MAN = (ROOT / "man" / "lockrun.1").read_text()
README = (ROOT / "README.md").read_text()


VERBS = ADMIN_VERBS


def _help(*verb: str) -> str:
    return subprocess.run([str(LOCKRUN), *verb, "--help"], capture_output=True, text=True,
                          check=True).stdout


def _all_help() -> str:
    return "\n".join([_help(), *(_help(v) for v in VERBS)])


def test_every_verb_is_in_the_man_page() -> None:
    for verb in VERBS:
        assert re.search(rf"^\.B(R)? lockrun {verb}\b|^\.SS .*{verb}", MAN, re.M), verb


def test_every_option_in_help_is_in_the_man_page() -> None:
    options = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", _all_help()))
    assert {"--key", "--ttl", "-E", "--on-lost", "--help", "--limit", "--yes"} <= options
    roff = MAN.replace("\\-", "-")
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])",
                                                         roff))
    assert missing == []


def test_every_environment_variable_in_help_is_in_the_man_page() -> None:
    variables = set(re.findall(r"LOCKRUN_[A-Z_]+", _all_help()))
    assert "LOCKRUN_TTL" in variables
    documented = set(re.findall(r"LOCKRUN_[A-Z_]+", MAN.replace("\\", "")))
    assert variables - documented == set()
    assert "LOCKRUN_<NAME>" in README


def test_every_exit_code_is_in_both_tables() -> None:
    codes = ExitCode.members()
    assert len(codes) == 10 and codes["USAGE"] == 64 and codes["CANCELLED"] == 143
    for name, code in codes.items():
        if code in (ExitCode.OK, ExitCode.SIGNAL_BASE):
            continue
        assert re.search(rf"^\| {code}\b", README, re.M), f"{name} missing from README"
        assert re.search(rf"^\.B[RI]? {code}\b", MAN, re.M), f"{name} missing from man page"


def test_ci_runs_the_readme_test_command_exactly() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.split("## Set up", 1)[1].split("\n## ")[0],
                        re.S)
    assert len(blocks) == 2, "the README's set-up section has exactly two commands"
    test_command = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def _crontab_block() -> str:
    """README's first crontab block: the lines a newcomer copies."""
    return readme_crontab_block(README)


def test_the_readme_crontab_block_puts_lockrun_on_crons_path() -> None:
    install_dir = re.search(r"^BIN_DIR=(\S+)", (ROOT / "install.sh").read_text(), re.M)
    assert install_dir
    paths = re.findall(r"^PATH=(\S+)$", _crontab_block(), re.M)
    assert paths and install_dir.group(1) in paths[0].split(":"), paths


def test_every_readme_crontab_line_parses_and_stays_silent(redis_server: RedisServer,
                                                          tmp_path: Path) -> None:
    """Each job line, as cron would run it, with the job swapped for a probe that records
    the arguments it was given: exit 0, no output (so no cron mail), % handled as cron does."""
    import shlex

    jobs = [line for line in _crontab_block().splitlines()
            if line.strip() and not line.startswith("#") and not re.match(r"^\w+=", line)]
    assert len(jobs) >= 5
    for n, line in enumerate(jobs):
        fields = line.split(None, 5)
        command = as_cron_runs_it(fields[5])
        argv = shlex.split(command)
        assert argv[0] == "lockrun" and "--" in argv, line
        cut = argv.index("--")
        record = tmp_path / f"args{n}"
        probe = ["sh", "-c", f'printf "%s\\n" "$@" > {record}', "probe", *argv[cut + 1:]]
        args = [str(LOCKRUN), *argv[1:cut], "--fire", f"readme-{n}", "--", *probe]
        if "--schedule" in args:
            args.remove("--fire")
            args.remove(f"readme-{n}")
        env = lockrun_env(redis_server.url, LOCKRUN_KEY_PREFIX=f"readme{uuid.uuid4().hex[:8]}")
        if "--schedule" in args:  # cron starts it at its time, not whenever the suite runs
            env = _at_the_latest_slot(args, env)
            args[1:1] = ["--max-skew", "0"]  # the faked clock is the test's, not a skew
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), line
        if "%" in fields[5] and record.exists():
            assert "\\%" not in record.read_text() and "%F" in record.read_text(), line


def test_help_names_the_configuration_file_and_the_verbs() -> None:
    text = " ".join(_help().split())
    assert "/etc/lockrun.toml" in text and "LOCKRUN_CONFIG" in text
    assert all(f"lockrun {verb}" in text for verb in VERBS)


def _at_the_latest_slot(args: list[str], env: dict[str, str]) -> dict[str, str]:
    """*env* with the clock faked to 5 seconds after the line's latest scheduled fire."""
    import time
    from datetime import datetime, timezone

    from lockrun.schedule import current_slot, normalise, zone_from

    expr = args[args.index("--schedule") + 1]
    zone = zone_from(args[args.index("--tz") + 1] if "--tz" in args else "UTC")
    slot = current_slot(normalise(expr), zone, time.time())
    at = datetime.fromtimestamp(slot.fire + 5, timezone.utc).strftime("@%Y-%m-%d %H:%M:%S")
    return faketime_env(env["LOCKRUN_REDIS_URL"], at, TZ="UTC",
                        LOCKRUN_KEY_PREFIX=env["LOCKRUN_KEY_PREFIX"])


def test_the_version_is_written_once_and_the_man_page_follows_it() -> None:
    """pyproject reads lockrun.__version__; the man page's header must name the same."""
    from lockrun import __version__

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.M)  # no second literal
    assert re.search(rf'^\.TH LOCKRUN 1 "[^"]*" "lockrun {re.escape(__version__)}"', MAN, re.M)
    version = subprocess.run([str(LOCKRUN), "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert __version__ in version
