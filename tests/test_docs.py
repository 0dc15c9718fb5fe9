"""Documentation is part of the feature: the man page and README follow the parser."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import LOCKRUN

from lockrun.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
MAN = (ROOT / "man" / "lockrun.1").read_text()
README = (ROOT / "README.md").read_text()


VERBS = ("status", "history", "unlock", "doctor")


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
    for code in ExitCode:
        if code in (ExitCode.OK, ExitCode.SIGNAL_BASE):
            continue
        assert re.search(rf"^\| {int(code)}\b", README, re.M), f"{code!r} missing from README"
        assert re.search(rf"^\.B[RI]? {int(code)}\b", MAN, re.M), f"{code!r} missing from man page"


def test_ci_runs_the_readme_test_command_exactly() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.split("## Set up", 1)[1].split("\n## ")[0],
                        re.S)
    assert len(blocks) == 2, "the README's set-up section has exactly two commands"
    test_command = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
