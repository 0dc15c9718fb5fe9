"""The fast parser (lockrun.argv) and click read every crontab line alike, or the fast one
steps aside: it may decline a line, never read it differently.

Both parsers run in-process on the same words, the same LOCKRUN_* variables (the
real process environment) and the same configuration file; their Invocations
(Config and reporting) must be equal. Lines click refuses must make the fast
parser return None, and the installed lockrun must then print click's message.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest
from conftest import LOCKRUN, lockrun_env

from lockrun import argv, wrapper_cli
from lockrun.cli import _with_click
from lockrun.config import Config
from lockrun.errors import LockrunError, UsageError
from lockrun.optiontable import BY_NAME, CONFIG_FIELDS, KIND_TYPES, WRAPPER, Option

if TYPE_CHECKING:
    from lockrun.optiontable import Value
from lockrun.output import Reporter

NOW = 1_795_000_000.0
"""A fixed clock for both parsers, so the fire id of a line without --fire agrees."""
FORBIDDEN_IN_FILE = {"key", "fire"}
DEAD_REDIS = "redis://127.0.0.1:1/0"
"""Where a line the fast parser wrongly accepted would connect: refused at once."""


@dataclass
class Line:
    """One crontab line: words, variables and a configuration file."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    file: dict[str, Value] = field(default_factory=dict)

    def describe(self) -> str:
        return f"args={self.args!r} env={self.env!r} file={self.file!r}"


@pytest.fixture
def setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setter]:
    yield Setter(tmp_path, monkeypatch)


class Setter:
    """Puts a Line's variables in the process environment and its file on disk."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp_path
        self.mp = monkeypatch
        self.count = 0

    def apply(self, line: Line) -> None:
        for name in [n for n in os.environ if n.startswith("LOCKRUN_")]:
            self.mp.delenv(name)
        for name, value in line.env.items():
            self.mp.setenv(name, value)
        if line.file:
            self.count += 1
            path = self.tmp / f"lockrun-{self.count}.toml"
            path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in line.file.items()))
            self.mp.setenv("LOCKRUN_CONFIG", str(path))
        elif "LOCKRUN_CONFIG" not in line.env:
            self.mp.setenv("LOCKRUN_CONFIG", "")


def _toml(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def assert_agree(setter: Setter, line: Line) -> None:
    setter.apply(line)
    reference = wrapper_cli.parse(line.args, NOW)
    fast = argv.parse(line.args, NOW)
    assert fast is not None, f"the fast parser declined a valid line: {line.describe()}"
    assert fast == reference, line.describe()


# Valid values for every option.

class Values:
    """Random valid values of each option, in the spellings a user may choose."""

    def __init__(self, rng: random.Random, tmp: Path) -> None:
        self.rng = rng
        self.tmp = tmp
        self.files: list[str] = []
        for name in ("ca.pem", "cert.pem", "key.pem"):
            (tmp / name).write_text("not parsed before a connection\n")
            self.files.append(str(tmp / name))

    def name(self) -> str:
        alphabet = "abcXYZ019._-:"
        # not '-' first: '-k --' is a key to click, and the fast parser rightly leaves
        # such a line to click (its own tests cover that)
        return self.rng.choice(alphabet[:-2]) + "".join(
            self.rng.choice(alphabet) for _ in range(self.rng.randint(0, 11)))

    def duration(self, option: Option) -> str:
        low = max(option.minimum, 0.001 if option.positive else 0.0)
        high = {"ttl": 86400.0, "redis_timeout": 5.0, "wait_timeout": 5.0}.get(
            option.name, option.maximum or 86400.0)
        seconds = self.rng.uniform(low, high)
        units = [u for u in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("", 1.0)] if u[1] <= high]
        unit, size = self.rng.choice(units)
        count = max(int(seconds / size), 1)
        while count * size < low:
            count += 1
        if count * size > high:  # rounding up past the range: milliseconds always fit
            unit, count = "ms", max(int(seconds * 1000), 1)
        return f"{count}{unit}"

    def value(self, option: Option) -> str:
        """A valid value as written on a command line or in a variable."""
        if option.kind == "duration":
            return self.duration(option)
        if option.kind == "whole":
            return str(self.rng.randint(option.low, option.high))
        if option.kind == "size":
            return self.rng.choice(["off", str(self.rng.randint(option.low, option.high)),
                                    f"{self.rng.randint(1, option.high // 1024)}k", "1m",
                                    f"{self.rng.randint(1, option.high // 1024)}K"])
        if option.kind == "choice":
            return self.rng.choice(option.choices)
        if option.kind == "flag":
            return ""  # given by its presence
        other: dict[str, Callable[[], str]] = {
            "key": self.name, "fire": self.name, "key_prefix": self.name,
            "redis_url": lambda: self.rng.choice(
                ["redis://localhost:6379/0", "redis://127.0.0.1:6390/3", "unix:///tmp/r.sock",
                 "redis://app:pw@cache.example:6379/1", "rediss://cache.example:6380/0"]),
            "redis_ca": lambda: self.files[0], "redis_cert": lambda: self.files[1],
            "redis_key": lambda: self.files[2],
            "schedule": lambda: self.rng.choice(["* * * * *", "0 * * * *", "30 2 * * *"]),
            # half-hour offsets: an hourly schedule's slot shows which zone was used
            "tz": lambda: self.rng.choice(["UTC", "Asia/Kolkata", "America/St_Johns"]),
            "ping_url": lambda: self.rng.choice(["https://hc.example/ping/abc",
                                                 "http://10.0.0.1:8000/p"]),
            "notify_url": lambda: self.rng.choice(["https://hooks.example/services/T0/B0/x",
                                                   "http://10.0.0.1:8000/alert"]),
            "notify_cmd": lambda: self.rng.choice(["mail -s \"$LOCKRUN_SUMMARY\" ops",
                                                   "/usr/local/bin/page-oncall"]),
            "notify_on": lambda: self.rng.choice(["failure", "retries-exhausted,recovery",
                                                  "failure, ran-nowhere,success"]),
            "metrics_dir": lambda: str(self.tmp),
            "state_dir": lambda: self.rng.choice(["", "/tmp/lockrun-test-never-created"]),
            "retry_on": lambda: self.rng.choice(["1", "75-78", "1,2,124", "3-3,255"]),
        }
        return other[option.name]()

    def in_file(self, option: Option) -> Value:
        """A valid value as TOML gives it: a duration or a number may be an integer."""
        if option.kind == "flag":
            return True
        text = self.value(option)
        if option.kind == "whole" or (option.kind in ("duration", "size") and text.isdigit()
                                      and self.rng.random() < 0.5):
            return int(text)
        return text

    def in_env(self, option: Option) -> str:
        if option.kind == "flag":
            return self.rng.choice(["1", "true", "Yes", " on ", "t", "Y", "0", "false", "off"])
        return self.value(option)


def _spellings(option: Option, value: str) -> list[list[str]]:
    """Every way to give *option* on a command line."""
    longs = [f for f in option.flags if f.startswith("--")]
    shorts = [f for f in option.flags if len(f) == 2]
    if option.kind == "flag":
        return [[f] for f in option.flags]
    forms = [[f, value] for f in option.flags] + [[f"{f}={value}"] for f in longs]
    if value:
        forms += [[f"{f}{value}"] for f in shorts]
    return forms


def _base(option: Option, values: Values) -> tuple[list[str], dict[str, str]]:
    """The line around *option*: a key, and what the option needs to be valid."""
    args = [] if option.name == "key" else ["-k", "job"]
    env: dict[str, str] = {}
    if option.name in ("redis_ca", "redis_cert", "redis_key"):
        env["LOCKRUN_REDIS_URL"] = "rediss://cache.example:6380/0"
        if option.name != "redis_ca":
            other = "redis_key" if option.name == "redis_cert" else "redis_cert"
            args += [f"--{other.replace('_', '-')}", values.value(BY_NAME[other])]
    if option.name == "tz":
        args += ["--schedule", "0 * * * *"]
    if option.name == "wait_timeout":
        env["LOCKRUN_WAIT_REPLICAS"] = "1"
    if option.name in RETRY_OPTIONS:  # a retry needs a fire that later ticks share
        args += ["--fire", "f1"] + ([] if option.name == "retries" else ["--retries", "1"])
    return args, env


RETRY_OPTIONS = {"retries", "retry_delay", "retry_backoff", "retry_on", "retry_anywhere",
                 "retry_local"}


@pytest.mark.parametrize("option", WRAPPER, ids=[o.name for o in WRAPPER])
def test_every_option_from_every_source(option: Option, setting: Setter, tmp_path: Path) -> None:
    """Each spelling, the variable and the file; each must change what the line becomes."""
    values = Values(random.Random(option.name), tmp_path)
    args, env = _base(option, values)
    setting.apply(Line([*args, "--", "true"], dict(env)))
    try:  # the line without the option (None: the option is what makes it valid)
        default = wrapper_cli.parse([*args, "--", "true"], NOW)
    except (click.ClickException, UsageError):
        default = None
    lines = []
    for _ in range(3):
        value = values.value(option)
        lines += [Line(args + words + ["--", "true"], dict(env))
                  for words in _spellings(option, value)]
    if option.env is not None:
        lines += [Line([*args, "--", "true"], {**env, option.env: values.in_env(option)})
                  for _ in range(3)]
        lines.append(Line([*args, "--", "true"], {**env, option.env: ""}))  # as if unset
        if option.kind == "flag":
            lines.append(Line([*args, "--", "true"], {**env, option.env: "1"}))
    if option.name not in FORBIDDEN_IN_FILE:
        lines += [Line([*args, "--", "true"], dict(env), {option.name: values.in_file(option)})
                  for _ in range(3)]
    changed = 0
    for line in lines:
        setting.apply(line)
        try:
            reference = wrapper_cli.parse(line.args, NOW)
        except (click.ClickException, UsageError):  # an empty --redis-cert alone
            assert line.env.get(option.env or "") == "", line.describe()
            assert argv.parse(line.args, NOW) is None, line.describe()
            continue
        assert_agree(setting, line)
        changed += reference != default
    assert changed, f"no value of {option.name} changed the Invocation: the test sees nothing"


# Random valid lines.

def _random_line(rng: random.Random, values: Values) -> Line:
    chosen = [o for o in WRAPPER if o.name != "key" and rng.random() < 0.3]
    names = {o.name for o in chosen}
    if "verbose" in names and "quiet" in names:
        chosen = [o for o in chosen if o.name != "quiet"]
    if "schedule" in names and "fire" in names:
        chosen = [o for o in chosen if o.name != "fire"]
    if "tz" in names and "schedule" not in names:
        chosen.append(BY_NAME["schedule"])
    if "retry_local" in names:  # the one combination of retry options that is refused
        chosen = [o for o in chosen if o.name != "retry_anywhere"]
    if {"redis_ca", "redis_cert", "redis_key"} & names:
        chosen = [o for o in chosen if o.name != "redis_url"]
        chosen += [BY_NAME[n] for n in ("redis_cert", "redis_key") if n not in names]
    line = Line([])
    if {"redis_ca", "redis_cert", "redis_key"} & names:
        line.env["LOCKRUN_REDIS_URL"] = "rediss://cache.example:6380/0"
    words: list[list[str]] = [rng.choice(_spellings(BY_NAME["key"], values.name()))]
    for option in chosen:
        sources = ["argv"]
        if option.env is not None:
            sources.append("env")
        if option.name not in FORBIDDEN_IN_FILE:
            sources.append("file")
        # one, two or all three sources at once: precedence decides
        for source in rng.sample(sources, rng.randint(1, len(sources))):
            if source == "argv":
                for _ in range(rng.choice([1, 1, 1, 2])):  # a repeated option: the last wins
                    words.append(rng.choice(_spellings(option, values.value(option))))
            elif source == "env":
                assert option.env is not None
                line.env[option.env] = values.in_env(option)
            else:
                line.file[option.name] = values.in_file(option)
    rng.shuffle(words)
    if names & RETRY_OPTIONS:  # last, so they win: what makes the retry options valid
        words.append(["--retries", str(rng.randint(1, 20))])
        if any(o.name == "schedule" for o in chosen):
            words += [["--grace", "1h"], ["--retry-delay", "1m"]]
        else:
            words.append(["--fire", "f1"])
    flags = [w for w in words if len(w) == 1 and len(w[0]) == 2 and BY_NAME_SHORT.get(w[0])]
    if len(flags) >= 2 and rng.random() < 0.5:  # -v -q ... as one cluster: -vq
        words = [w for w in words if w not in flags[:2]] + [[flags[0][0] + flags[1][0][1]]]
    line.args = [w for word in words for w in word] + ["--", *rng.choice(
        [["true"], ["sh", "-c", "exit 3", "--"], ["--weird", "-k", "x"]])]
    return line


BY_NAME_SHORT = {f: o for o in WRAPPER for f in o.flags if len(f) == 2 and o.kind == "flag"}
RANDOM_LINES = 300


def test_random_valid_lines_agree(setting: Setter, tmp_path: Path) -> None:
    rng = random.Random(20261127)
    values = Values(rng, tmp_path)
    agreed = 0
    for _ in range(RANDOM_LINES):
        line = _random_line(rng, values)
        setting.apply(line)
        try:
            wrapper_cli.parse(line.args, NOW)
        except (click.ClickException, UsageError):
            # a combination the generator cannot rule out (timing rules): click refuses,
            # and then so must the fast parser
            assert argv.parse(line.args, NOW) is None, line.describe()
            continue
        assert_agree(setting, line)
        agreed += 1
    assert agreed >= RANDOM_LINES * 0.9, f"only {agreed} valid lines: the generator drifted"


# Lines click refuses (or answers itself): the fast parser declines them.

MALFORMED = ["", "-1", "nan", "1e16", "\u0663", "\x01", "3\n", "soon", "99999999"]

CLICKS_TO_READ: list[Line] = [
    Line(["-k", "job", "true"]),  # no "--": valid, the job starts at the first word
    Line(["-k", "job", "stray", "--", "true"]),  # the job is "stray -- true"
    Line(["-k", "--", "true"]),  # the key is "--", the job "true"
]
"""Valid lines outside the form the fast parser reads."""

INVALID: list[Line] = [
    Line(["-k", "job", "--bogus", "--", "true"]),
    Line(["-k", "job", "-x", "--", "true"]),
    Line(["-k", "job", "--ttl", "--", "true"]),
    Line(["--ttl", "10m", "--", "true"]),  # no key
    Line(["-k", "job", "--verbose=1", "--", "true"]),
    Line(["-k", "job", "-v", "-q", "--", "true"]),
    Line(["-k", "job", "-vq", "--", "true"]),
    Line(["-k", "job", "--fire", "f", "--schedule", "* * * * *", "--", "true"]),
    Line(["-k", "job", "--ttl", "3s", "--", "true"]),  # ttl < 3 x redis-timeout
    Line(["-k", "job", "--wait-replicas", "1", "--wait-timeout", "30s", "--", "true"]),
    Line(["-k", "job", "--redis-ca", __file__, "--", "true"]),  # TLS without rediss
    Line(["-k", "job", "--"]),  # no command
    Line(["-k", "job", "--help", "--", "true"]),
    Line(["-h"]),
    Line(["-V"]),
    Line(["-k", "job", "--version", "--", "true"]),
    Line(["status", "-k", "job", "--", "true"]),  # a verb: never the fast parser's
    Line(["-k", "job", "--", "true"], {"LOCKRUN_TTL": "soon"}),
    Line(["-k", "job", "--", "true"], {"LOCKRUN_VERBOSE": "maybe"}),
    Line(["-k", "job", "--", "true"], {"LOCKRUN_QUIET": "1", "LOCKRUN_VERBOSE": "1"}),
    Line(["-k", "job", "--", "true"], {"LOCKRUN_SKIP_EXIT_CODE": "256"}),
    Line(["-k", "job", "--", "true"], {"LOCKRUN_OVERLAP": "never"}),
    Line(["-k", "job", "--", "true"], file={"ttl": "soon"}),
    Line(["-k", "job", "--", "true"], file={"key": "job"}),
    Line(["-k", "job", "--", "true"], file={"bogus": 1}),
    Line(["-k", "job", "--", "true"], file={"verbose": "yes"}),
    Line(["-k", "job", "--", "true"], file={"wait_replicas": 65}),
    Line(["-k", "job", "--", "true"], {"LOCKRUN_CONFIG": "/nonexistent/lockrun.toml"}),
]


def _out_of_range(option: Option) -> list[str]:
    """Well-formed values just outside the option's own range."""
    if option.kind == "whole":
        return [str(option.high + 1), "999999"]
    if option.kind == "size":
        return ["0", str(option.low - 1), str(option.high + 1), "2g", "1M1", "0x400"]
    if option.kind != "duration":
        return []
    values = ["367d"]
    if option.maximum is not None:
        values.append(f"{int(option.maximum * 1000) + 1}ms")
    if option.positive:
        values.append("0")
    if option.minimum:
        values.append(f"{int(option.minimum * 1000) - 1}ms")
    return values


def _malformed() -> list[Line]:
    lines = []
    for option in WRAPPER:
        if option.kind == "flag":
            continue
        for value in MALFORMED + _out_of_range(option):
            line = Line(["-k", "job", f"{max(option.flags, key=len)}={value}", "--", "true"])
            if option.name == "key":
                line = Line([f"--key={value}", "--", "true"])
            if option.env is not None:
                lines.append(Line(["-k", "job", "--", "true"], {option.env: value}))
            lines.append(line)
    return lines


def test_every_line_outside_the_common_form_is_declined(setting: Setter) -> None:
    """Some of these click accepts (no "--", help, version): they are click's to answer."""
    for line in INVALID + CLICKS_TO_READ:
        setting.apply(line)
        assert argv.parse(line.args, NOW) is None, line.describe()


def test_every_malformed_value_is_declined(setting: Setter) -> None:
    declined = 0
    for line in _malformed():
        setting.apply(line)
        try:
            wrapper_cli.parse(line.args, NOW)
        except (click.ClickException, UsageError):
            assert argv.parse(line.args, NOW) is None, line.describe()
            declined += 1
        else:  # a legitimate value after all ("" for --state-dir, "-1" for a key...)
            assert_agree(setting, line)
    assert declined > len(_malformed()) // 2


@pytest.mark.parametrize("line", INVALID, ids=[" ".join(li.args)[:40] for li in INVALID])
def test_a_declined_line_gets_clicks_own_answer(line: Line, setting: Setter,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The installed lockrun says exactly what the click path says, byte for byte."""
    setting.apply(line)
    # a line wrongly run in-process must neither reach a Redis nor write host state
    os.environ.setdefault("LOCKRUN_STATE_DIR", str(setting.tmp / "state"))
    os.environ.setdefault("LOCKRUN_REDIS_URL", DEAD_REDIS)
    out = Reporter()
    try:
        status = _with_click(list(line.args), out)
    except LockrunError as exc:  # as lockrun.cli.main says it
        out.error(str(exc))
        status = exc.exit_code
    expected = capsys.readouterr()
    env = {**lockrun_env(DEAD_REDIS), **{k: v for k, v in os.environ.items()
                                         if k.startswith("LOCKRUN_")}}
    r = subprocess.run([str(LOCKRUN), *line.args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (status, expected.out, expected.err)
    assert r.returncode in (0, 64)  # an answer or a usage error, never a job run


# The table itself.

def test_the_help_lists_every_option_and_variable() -> None:
    text = subprocess.run([str(LOCKRUN), "--help"], capture_output=True, text=True,
                          timeout=60, env=lockrun_env(DEAD_REDIS)).stdout
    for option in WRAPPER:
        for flag in option.flags:
            assert f"{flag}," in text or f"{flag} " in text, flag
        if option.env is not None:
            assert option.env in " ".join(text.split()).replace("LOCKRUN_ ", "LOCKRUN_"), \
                option.env


def test_click_has_exactly_the_tables_options() -> None:
    params = {p.name: p for p in wrapper_cli.wrapper.params
              if isinstance(p, click.Option) and not p.is_eager}
    assert list(params) == [o.name for o in WRAPPER]
    for option in WRAPPER:
        param = params[option.name]
        assert tuple(param.opts + param.secondary_opts) == option.flags
        assert param.envvar == option.env


def test_defaults_are_configs() -> None:
    """The table's defaults are Config's, and click's spelling of each converts back to it."""
    config_defaults = Config.defaults()
    assert config_defaults["ttl"] == 60.0 and "key" not in config_defaults
    for option in WRAPPER:
        if option.name in config_defaults:
            assert option.value_default == config_defaults[option.name], option.name
        assert option.convert(option.click_default) == option.value_default, option.name


def test_the_defaults_help_shows_are_the_real_ones() -> None:
    """--help's "[default: X]" is written by hand in the table: it must convert to the
    default the parsers use, and every option with a default must show one."""
    for option in WRAPPER:
        match = re.search(r"\[default: ([^\]]*)\]", option.help)
        if option.kind == "flag" or option.value_default is None:
            continue
        assert match is not None, f"--help shows no default for {option.name}"
        shown = match.group(1)
        if shown.startswith(("the ", "/")):  # described in words: there is no one value
            continue
        assert option.convert(shown) == option.value_default, option.name


def test_each_kind_converts_to_its_config_fields_type() -> None:
    """Config takes the values by name; its annotations must be what each kind returns."""
    annotations = dict(Config.__init__.__annotations__)
    assert annotations["timeout"] == "float | None"
    source = (Path(__file__).resolve().parent.parent / "lockrun" / "config.py").read_text()
    literals = dict(re.findall(r"^    (\w+): TypeAlias = Literal\[(.*)\]$", source, re.M))
    assert set(literals) == {"Overlap", "OnRedisError", "OnLost", "NotifyFormat"}
    for name in CONFIG_FIELDS:
        option = BY_NAME[name]
        if option.kind == "choice":  # a Literal of exactly the table's words
            words = literals[annotations[name]]
            assert tuple(w.strip().strip('"') for w in words.split(",")) == option.choices, name
            continue
        kind_type = KIND_TYPES[option.kind].__name__
        assert annotations[name] in (kind_type, f"{kind_type} | None"), name


@pytest.mark.parametrize("named", ["", "/nonexistent/lockrun.toml", __file__])
def test_the_fast_parser_knows_when_a_file_is_read(named: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """(Without LOCKRUN_CONFIG both would look at this host's /etc/lockrun.toml: not here.)"""
    from lockrun.configfile import config_path

    monkeypatch.setenv("LOCKRUN_CONFIG", named)
    assert argv.file_named(os.environ) == (config_path() is not None)
