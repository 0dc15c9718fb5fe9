"""Shell completion through click's protocol, and the man page a pip/pipx install carries.

Completion is asked of the installed ``lockrun`` exactly as the scripts click
generates ask it (``_LOCKRUN_COMPLETE=bash_complete`` with COMP_WORDS and
COMP_CWORD), once through real bash; the man page is checked in a wheel pip
builds and in a fresh venv that wheel is installed into.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import LOCKRUN, RedisServer, lockrun_env

ROOT = Path(__file__).resolve().parent.parent
VERBS = {"status", "history", "unlock", "doctor", "pause", "resume", "cancel", "explain",
         "check", "logs"}
UNUSED_URL = "redis://127.0.0.1:9/0"  # discard port: nothing here answers, nothing may try


def ask(*words: str, shell: str = "bash", env: dict[str, str] | None = None,
        url: str = UNUSED_URL) -> subprocess.CompletedProcess[str]:
    """lockrun's raw answer for the last of *words* (typed after ``lockrun``; '' = new word)."""
    line = ["lockrun", *words]
    if shell == "fish":  # fish sends the line up to the cursor and the word being typed
        comp = {"COMP_WORDS": " ".join(shlex.quote(w) for w in line if w),
                "COMP_CWORD": shlex.quote(words[-1]) if words and words[-1] else ""}
    else:
        comp = {"COMP_WORDS": " ".join(shlex.quote(w) for w in line),
                "COMP_CWORD": str(len(words))}
    r = subprocess.run([str(LOCKRUN)], capture_output=True, text=True, timeout=60,
                       env={**(env or lockrun_env(url)), **comp,
                            "_LOCKRUN_COMPLETE": f"{shell}_complete"})
    assert (r.returncode, r.stderr) == (0, ""), r
    return r


def offered(*words: str, env: dict[str, str] | None = None, url: str = UNUSED_URL) -> set[str]:
    """The candidates bash would show (click's bash format: one ``type,value`` a line)."""
    answer = ask(*words, env=env, url=url).stdout
    pairs = [line.split(",", 1) for line in answer.splitlines() if line]
    assert all(kind == "plain" for kind, _ in pairs), pairs
    return {value for _, value in pairs}


@pytest.mark.parametrize(("word", "expected"), [
    ("", VERBS), ("sta", {"status"}), ("h", {"history"}), ("u", {"unlock"}),
    ("d", {"doctor"}), ("p", {"pause"}), ("r", {"resume"}), ("ca", {"cancel"}), ("ch", {"check"}),
    ("x", set()),
])
def test_the_first_word_offers_the_verbs(word: str, expected: set[str]) -> None:
    assert offered(word) == expected


def test_the_first_word_offers_the_wrappers_options_once_it_starts_with_a_dash() -> None:
    dash = offered("-")
    assert {"-k", "--key", "--ttl", "--on-lost", "--schedule", "--redis-url", "-h"} <= dash
    assert not dash & VERBS
    assert offered("--on") == {"--on-redis-error", "--on-lost"}


@pytest.mark.parametrize(("verb", "has", "lacks"), [
    ("status", {"--json", "--redis-url", "--key-prefix"}, {"--limit", "--ttl", "--key"}),
    ("history", {"--limit", "--schedule", "--tz", "--grace", "--json"},
     {"--ttl", "--on-lost", "--max-skew"}),
    ("unlock", {"--fire", "-y", "--yes", "--json"}, {"--limit", "--overlap"}),
    ("doctor", {"--max-skew", "--json", "--redis-timeout"}, {"--limit", "--yes", "--ttl"}),
    ("explain", {"-k", "--schedule", "--on-lost", "--json"}, {"--limit", "--yes", "--all"}),
])
def test_after_a_verb_come_that_verbs_options(verb: str, has: set[str],
                                              lacks: set[str]) -> None:
    options = offered(verb, "-")
    assert has <= options and not options & lacks, options
    assert not offered(verb, "") & VERBS  # KEY: keys would need Redis, so none


@pytest.mark.parametrize(("words", "expected"), [
    (["-k", "job", ""], set()),  # not the verbs: after options the next word is the job
    (["-k", "job", "sta"], set()),
    (["-k", ""], set()),  # no keys: they would come from Redis
    (["-k", "job", "--on"], {"--on-redis-error", "--on-lost"}),
    (["-k", "job", "--on-lost", ""], {"warn", "kill"}),
    (["-k", "job", "--on-lost", "k"], {"kill"}),
    (["-k", "job", "--overlap", ""], {"skip", "allow", "replace"}),
    (["--on-redis-error", ""], {"fail", "skip", "run"}),
    (["-k", "job", "-v", "--log-format", ""], {"text", "json"}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_after_the_wrappers_options_its_options_and_their_choices(
        words: list[str], expected: set[str]) -> None:
    assert offered(*words) == expected


@pytest.mark.parametrize("words", [
    ["-k", "job", "--", ""],
    ["-k", "job", "--", "sta"],
    ["-k", "job", "--", "-"],
    ["-k", "job", "--", "cmd", "--on-lost", ""],
    ["-k", "job", "cmd", "--on-lost", ""],  # the job's first word starts the job, -- or not
    ["-k", "job", "cmd", "--o"],
], ids=" ".join)
def test_the_jobs_command_gets_nothing_from_lockrun(words: list[str]) -> None:
    assert offered(*words) == set()


def test_zsh_and_fish_get_the_same_grammar_with_help() -> None:
    zsh = ask("sta", shell="zsh").stdout.split("\n")  # type, value, help: a line each
    assert zsh[:2] == ["plain", "status"] and zsh[2].startswith("What runs now")
    fish = ask("-k", "job", "--on-lost", "", shell="fish").stdout.splitlines()
    assert {line.split("\t")[0] for line in fish} == {"plain,warn", "plain,kill"}
    fish_first = ask("", shell="fish").stdout.splitlines()
    assert {line.split("\t")[0].removeprefix("plain,") for line in fish_first} == VERBS


@pytest.mark.parametrize(("shell", "registers"), [
    ("bash", "complete -o nosort -F _lockrun_completion lockrun"),
    ("zsh", "compdef _lockrun_completion lockrun"),
    ("fish", "complete --no-files --command lockrun"),
])
def test_each_shell_gets_a_script_that_calls_back_with_lockruns_variable(
        shell: str, registers: str) -> None:
    r = subprocess.run([str(LOCKRUN)], env={**lockrun_env(UNUSED_URL),
                                            "_LOCKRUN_COMPLETE": f"{shell}_source"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert registers in r.stdout and f"_LOCKRUN_COMPLETE={shell}_complete" in r.stdout


def test_real_bash_completes_through_the_script_lockrun_prints() -> None:
    """As bash does on TAB: the function ``complete -p`` names, called with the command's name."""
    script = r"""
        eval "$(_LOCKRUN_COMPLETE=bash_source lockrun)"
        complete -p lockrun | grep -q -- '-F _lockrun_completion lockrun' || exit 3
        COMP_WORDS=(lockrun sta); COMP_CWORD=1
        _lockrun_completion lockrun sta lockrun
        printf '%s\n' "${COMPREPLY[@]}"
        echo ==
        COMPREPLY=(); COMP_WORDS=(lockrun -k job --on-lost ''); COMP_CWORD=4
        _lockrun_completion lockrun '' --on-lost
        printf '%s\n' "${COMPREPLY[@]}"
    """
    env = {**lockrun_env(UNUSED_URL), "PATH": f"{LOCKRUN.parent}:/usr/bin:/bin"}
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    first, after_on_lost = r.stdout.split("==\n")
    assert first.split() == ["status"]
    assert set(after_on_lost.split()) == {"warn", "kill"}


def test_completion_never_contacts_redis() -> None:
    """A listening socket as --redis-url: a completion that connected would be queued there."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        for words in (["status", ""], ["history", ""], ["unlock", ""], ["doctor", ""],
                      ["-k", ""], ["-k", "job", "--fire", ""], [""]):
            ask(*words, url=url)
            ask("--redis-url", url, *words, url=url)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_completion_reads_no_configuration_file(tmp_path: Path) -> None:
    """A broken /etc/lockrun.toml must not print an error on every TAB."""
    env = lockrun_env(UNUSED_URL, LOCKRUN_CONFIG=str(tmp_path / "missing.toml"))
    fire = subprocess.run([str(LOCKRUN), "-k", "job", "--", "true"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert fire.returncode == 64 and "missing.toml" in fire.stderr  # the file is read there
    assert offered("", env=env) == VERBS  # ask() also asserts an empty stderr


def test_a_fire_imports_no_completion_code(redis_server: RedisServer, key: str) -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "lockrun", "-k", key, "--",
                        "true"], env=lockrun_env(redis_server.url), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r
    modules = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert {"lockrun.cli", "lockrun.runner"} <= modules  # the measurement works
    assert not modules & {"lockrun.completion", "click.shell_completion", "lockrun.admin_cli"}


def test_the_wheel_carries_the_man_page_and_pip_installs_it(tmp_path: Path) -> None:
    """pip builds from a copy (a build writes build/ and *.egg-info into its source tree)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "lockrun", src / "lockrun",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "man", src / "man")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, timeout=170)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("lockrun-*.whl")
    man_page = (ROOT / "man" / "lockrun.1").read_bytes()
    with zipfile.ZipFile(wheel) as zf:
        carried = [n for n in zf.namelist() if n.endswith("/data/share/man/man1/lockrun.1")]
        assert carried == [f"lockrun-{wheel.name.split('-')[1]}.data/data/share/man/man1/"
                           "lockrun.1"], zf.namelist()
        assert zf.read(carried[0]) == man_page

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    installed = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install",
                                "--no-deps", "--no-index", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert (venv / "share" / "man" / "man1" / "lockrun.1").read_bytes() == man_page
