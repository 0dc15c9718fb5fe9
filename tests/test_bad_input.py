"""Bad input never slips through: exit 64, one ``lockrun:`` line, nothing run, Redis untouched.

Redis is stood in for by a TCP listener each case owns: lockrun's URL points
at it, and any connection lockrun makes is waiting in its backlog afterwards.
A listener that never answers also means a case that wrongly connects fails
on its exit status, not by hanging: lockrun gives up after --redis-timeout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest
from conftest import LOCKRUN, RedisServer, faketime_env, lockrun_env

from lockrun.admin_cli import admin
from lockrun.wrapper_cli import wrapper

PARALLEL = 4
"""Subprocesses at a time: each start costs ~0.15 s of CPU on a 2-core machine."""
CASE_TIMEOUT = 30
"""Far above a refusal's ~0.2 s; a FIFO that blocks lockrun ends here and fails the case."""
PASSWORD = "S3cr3t/p@ss"
ENCODED_PASSWORD = "S3cr3t%2Fp%40ss"
SECRET_AFTER_AT = "p@S3cr3t:x"
"""Its secret part follows an '@': redaction that stops at the first '@' shows it."""


@contextmanager
def listener() -> Iterator[tuple[str, Callable[[], int]]]:
    """A TCP port standing in for Redis; the callable counts the connections it received."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []

    def connections() -> int:
        sock.setblocking(False)
        while True:  # the kernel completed every handshake; accept() just collects them
            try:
                accepted.append(sock.accept()[0])
            except BlockingIOError:
                return len(accepted)

    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}", connections
    finally:
        for conn in accepted:
            conn.close()
        sock.close()


@dataclass
class Case:
    """One invocation that must be refused; ``{addr}`` in args, env or file is the listener."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None
    """TOML text for LOCKRUN_CONFIG, or a path (starting with /) to use as it."""
    label: str = ""


@dataclass
class Outcome:
    case: Case
    returncode: int | None
    stdout: str
    stderr: str
    connections: int
    ran: bool

    def problems(self) -> list[str]:
        """Every way this outcome breaks the bad-input contract (empty: it holds)."""
        found = []
        if self.returncode is None:
            found.append(f"hung for {CASE_TIMEOUT}s")
        elif self.returncode != 64:
            found.append(f"exit {self.returncode}, not 64")
        lines = self.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("lockrun: "):
            found.append(f"stderr is not one 'lockrun: ' line: {self.stderr!r}")
        elif lines[0].rstrip().endswith(":"):
            found.append("the reason is missing")
        if "Traceback" in self.stderr:
            found.append("traceback")
        if self.stdout:
            found.append(f"stdout: {self.stdout!r}")
        if self.ran:
            found.append("the command ran")
        if self.connections:
            found.append(f"{self.connections} connection(s) reached the Redis address")
        return found


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run one case in its own directory, with its own listener and marker file."""
    work = Path(os.path.realpath(tmp))
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "ran"
    with listener() as (addr, connections):
        def fill(text: str) -> str:
            return text.replace("{addr}", addr).replace("{marker}", str(marker))

        env = lockrun_env(f"redis://{addr}/0", LOCKRUN_CONFIG="", TZ="UTC")
        env.pop("CRON_TZ", None)
        env.update({k: fill(v) for k, v in case.env.items()})
        if case.config is not None:
            if case.config.startswith("/"):
                env["LOCKRUN_CONFIG"] = case.config
            else:
                path = work / "lockrun.toml"
                path.write_text(fill(case.config))
                env["LOCKRUN_CONFIG"] = str(path)
                if "redis_url" in case.config:  # the variable would win over the file
                    del env["LOCKRUN_REDIS_URL"]
        try:
            r = subprocess.run([str(LOCKRUN), *(fill(a) for a in case.args)], env=env, cwd=work,
                               capture_output=True, timeout=CASE_TIMEOUT, stdin=subprocess.DEVNULL)
            code: int | None = r.returncode
            out = r.stdout.decode(errors="replace")
            err = r.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            code, out = None, (exc.stdout or b"").decode(errors="replace")
            err = (exc.stderr or b"").decode(errors="replace")
        return Outcome(case, code, out, err, connections(), marker.exists())


def run_all(cases: list[Case], tmp_path: Path) -> list[Outcome]:
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda i: run_case(cases[i], tmp_path / f"case{i}"),
                             range(len(cases))))


def assert_all_refused(outcomes: list[Outcome]) -> None:
    failures = [f"{o.case.label or o.case.args}: {'; '.join(o.problems())}"
                for o in outcomes if o.problems()]
    assert failures == [], "\n".join(failures)


JOB = ["--", "touch", "{marker}"]


# (a) Every shape listed in issue 10, point 6.

NINES = "9" * 400
ISSUE_SHAPES = [
    pytest.param(Case(["-k", "j", "--ttl", NINES, *JOB]), id="ttl-400-nines"),
    pytest.param(Case(["-k", "j", "--ttl", "1e16", *JOB]), id="ttl-exponent"),
    pytest.param(Case(["-k", "j", "--ttl", "\u0663\u0660s", *JOB]), id="ttl-arabic-indic-digits"),
    pytest.param(Case(["-k", "j", "--timeout", NINES, *JOB]), id="timeout-400-nines"),
    pytest.param(Case(["-k", "j", "--kill-after", NINES, *JOB]), id="kill-after-400-nines"),
    pytest.param(Case(["-k", "j", "--retention", NINES, *JOB]), id="retention-400-nines"),
    pytest.param(Case(["-k", "j", "--wait-timeout", NINES, *JOB]), id="wait-timeout-400-nines"),
    pytest.param(Case(["-k", "j", "--jitter", "1e12s", *JOB]), id="jitter-1e12s"),
    pytest.param(Case(["-k", "j", "--jitter", "2h", *JOB]), id="jitter-beyond-its-cap"),
    pytest.param(Case(["-k", "j", "--ttl", "367d", *JOB]), id="ttl-beyond-the-global-cap"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://", *JOB]), id="url-no-host"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis:///0", *JOB]), id="url-no-host-db"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://:6379", *JOB]), id="url-port-no-host"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://127.0.0.1:0/0", *JOB]), id="url-port-0"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://127.0.0.1:65536/0", *JOB]),
                 id="url-port-65536"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://127.0.0.1:\u0663/0", *JOB]),
                 id="url-port-arabic-indic"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://{addr}/abc", *JOB]), id="url-db-abc"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://{addr}/-1", *JOB]), id="url-db-negative"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://{addr}/99999", *JOB]),
                 id="url-db-too-large"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://{addr}/0?socket_timeout=-1", *JOB]),
                 id="url-socket-timeout-negative"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://{addr}/0?socket_timeout=nan", *JOB]),
                 id="url-socket-timeout-nan"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis://{addr}/0?bogus=1", *JOB]),
                 id="url-unknown-parameter"),
    pytest.param(Case(["-k", "j", "--redis-url", "unix:///tmp/x.sock?socket_timeout=1", *JOB]),
                 id="unix-url-unknown-parameter"),
    pytest.param(Case(["-k", "j", "--redis-url", "rediss://", *JOB]), id="rediss-no-host"),
    pytest.param(Case(["-k", "j", "--redis-url", "unix://", *JOB]), id="unix-no-path"),
    pytest.param(Case(["-k", "j", "--redis-url", "unix://relative.sock", *JOB]),
                 id="unix-relative-path"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis+sentinel://{addr}", *JOB]),
                 id="sentinel-no-service"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis+cluster://{addr}/1", *JOB]),
                 id="cluster-db-not-0"),
    pytest.param(Case(["-k", "j", "--redis-url", "redis+cluster://{addr},", *JOB]),
                 id="cluster-empty-address"),
    pytest.param(Case(["-k", "j", "--ping-url", "http://", *JOB]), id="ping-url-no-host"),
    pytest.param(Case(["-k", "j", "--ping-url", "ftp://example.com/x", *JOB]),
                 id="ping-url-not-http"),
    pytest.param(Case(["-k", "j", *JOB], config="/dev/zero"), id="config-dev-zero"),
    pytest.param(Case(["-k", "j", *JOB], config="/dev/urandom"), id="config-dev-urandom"),
    pytest.param(Case(["-k", "j", *JOB], config="/"), id="config-a-directory"),
    pytest.param(Case(["-k", "j", *JOB], config="skip_exit_code = 3.7\n"), id="config-int-float"),
    pytest.param(Case(["-k", "j", *JOB], config="skip_exit_code = true\n"),
                 id="config-int-boolean"),
    pytest.param(Case(["-k", "j", *JOB], config="wait_replicas = \"1\"\n"),
                 id="config-int-string"),
    pytest.param(Case(["-k", "j", *JOB], config="ttl = 1e16\n"), id="config-duration-float"),
    pytest.param(Case(["-k", "j", *JOB], config=f"ttl = {'9' * 18}\n"),
                 id="config-duration-huge-integer"),
    pytest.param(Case(["-k", "j", *JOB], config="verbose = \"yes\"\n"), id="config-flag-string"),
    pytest.param(Case(["-k", "j", *JOB], config="redis_password = 5\n"),
                 id="config-password-integer"),
    pytest.param(Case(["-k", "j", *JOB], config="# big\n" + "#" * 70_000 + "\n"),
                 id="config-larger-than-64k"),
    pytest.param(Case(["-k", "j", "--schedule", "* * * * *", *JOB], env={"TZ": "Nowhere/Zone"}),
                 id="tz-unknown-from-TZ"),
    pytest.param(Case(["-k", "j", "--schedule", "* * * * *", "--tz", ":/dev/zero", *JOB]),
                 id="tz-file-not-regular"),
    pytest.param(Case(["history", "j", "--schedule", "* * * * *", "--tz", "Nowhere/Zone"]),
                 id="history-tz-before-redis"),
    pytest.param(Case(["history", "j", "--schedule", "61 * * * *"]),
                 id="history-schedule-before-redis"),
]


@pytest.mark.parametrize("case", ISSUE_SHAPES)
def test_every_bad_input_shape_from_the_issue_is_refused_before_redis(case: Case,
                                                                      tmp_path: Path) -> None:
    assert_all_refused([run_case(case, tmp_path)])


def test_a_fifo_as_configuration_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "lockrun.toml"
    os.mkfifo(fifo)
    outcome = run_case(Case(["-k", "j", *JOB], config=str(fifo)), tmp_path / "run")
    assert outcome.problems() == []
    assert "not a regular file" in outcome.stderr


def test_the_listener_sees_a_lockrun_that_does_connect(tmp_path: Path) -> None:
    """The control for every 'Redis not contacted' assertion: valid input does reach it."""
    outcome = run_case(Case(["-k", "j", "--redis-timeout", "200ms", "--ttl", "1s", *JOB]),
                       tmp_path)
    assert outcome.connections >= 1
    assert outcome.returncode == 75 and not outcome.ran


# (b) Every option that takes a value, times malformed values.

MALFORMED = {
    "empty": "",
    "negative": "-1",
    "nan": "nan",
    "inf": "inf",
    "-inf": "-inf",
    "400-digits": NINES,
    "exponent": "1e16",
    "arabic-indic-digit": "\u0663",
    "control-char": "\x01",
    "trailing-newline": "3\n",
}

NAME_LIKE = {"-1", "nan", "inf", "-inf", "1e16"}
"""Legitimate values of a NAME (key, fire id, prefix): A-Z a-z 0-9 . _ - : only."""
LEGITIMATE: dict[str, set[str]] = {
    "key": NAME_LIKE,
    "fire": NAME_LIKE,
    "key_prefix": NAME_LIKE,
    "state_dir": {""},  # no state kept: a legitimate choice, not a typo
    # pause --reason is free text on one line: only control characters are refused
    "reason": {"", "-1", "nan", "inf", "-inf", NINES, "1e16", "\u0663"},
    # --notify-cmd is a /bin/sh -c line: empty and control characters are refused
    "notify_cmd": {"-1", "nan", "inf", "-inf", NINES, "1e16", "\u0663"},
}


def _value_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            and not p.is_eager]


def _long(option: click.Option) -> str:
    return max(option.opts, key=len)


def _wrapper_case(option: click.Option, value: str) -> Case:
    args = ["-k", "job", "--fire", "f1", f"{_long(option)}={value}", *JOB]
    if option.name == "key":
        args = [f"--key={value}", "--fire", "f1", *JOB]
    elif option.name in ("schedule", "tz"):
        # --tz is read with --schedule only; --fire and --schedule exclude each other
        args = ["-k", "job", *([] if option.name == "schedule" else ["--schedule", "* * * * *"]),
                f"{_long(option)}={value}", *JOB]
    return Case(args, label=f"{_long(option)}={value!r}")


ADMIN_BASE = {"status": ["status"], "history": ["history", "job"],
              "unlock": ["unlock", "job", "--yes"], "doctor": ["doctor"],
              "pause": ["pause", "job"], "resume": ["resume", "job"],
              "cancel": ["cancel", "job"], "check": ["check", "job"], "logs": ["logs", "job"]}


def _admin_cases() -> list[tuple[str, click.Option]]:
    """Each verb's own options; the shared connection options once, on status.

    The connection options are built by one function for every verb (and for
    the wrapper, which the wrapper cases cover too): testing them on each
    verb would only multiply the runtime.
    """
    shared = {p.name for p in _value_options(admin.commands["status"])}
    cases = []
    for verb, command in admin.commands.items():
        for option in _value_options(command):
            if verb == "status" or option.name not in shared:
                cases.append((verb, option))
    return cases


def _admin_case(verb: str, option: click.Option, value: str) -> Case:
    if verb == "explain":  # the wrapper's options, refused exactly as a fire refuses them
        case = _wrapper_case(option, value)
        return Case(["explain", *case.args], label=f"explain {case.label}")
    args = [*ADMIN_BASE[verb], f"{_long(option)}={value}"]
    if verb in ("history", "check") and option.name == "tz":
        args += ["--schedule", "* * * * *"]
    return Case(args, label=f"{verb} {_long(option)}={value!r}")


def _values(name: str | None) -> list[str]:
    return [v for v in MALFORMED.values() if v not in LEGITIMATE.get(name or "", set())]


@pytest.mark.parametrize("option", _value_options(wrapper), ids=_long)
def test_every_wrapper_option_refuses_malformed_values(option: click.Option,
                                                       tmp_path: Path) -> None:
    assert_all_refused(run_all([_wrapper_case(option, v) for v in _values(option.name)],
                               tmp_path))


@pytest.mark.parametrize(("verb", "option"), _admin_cases(),
                         ids=[f"{v}-{_long(o)}" for v, o in _admin_cases()])
def test_every_admin_option_refuses_malformed_values(verb: str, option: click.Option,
                                                     tmp_path: Path) -> None:
    assert_all_refused(run_all([_admin_case(verb, option, v) for v in _values(option.name)],
                               tmp_path))


def test_the_option_table_covers_every_value_option() -> None:
    """A new option is fuzzed without anyone adding it here; a legitimate value needs a reason."""
    names = {o.name for o in _value_options(wrapper)}
    assert {"ttl", "redis_url", "ping_url", "tz", "wait_replicas", "skip_exit_code"} <= names
    names |= {o.name for c in admin.commands.values() for o in _value_options(c)}
    assert set(LEGITIMATE) <= names


# Secrets: a malformed URL never shows its password, whatever its shape.

URL_SHAPES = [
    "REDIS://:{pw}@{addr}/0?x=1",
    "redis://:{pw}@{addr}/abc",
    "redis://:{pw}@127.0.0.1:0/0",
    "redis://:{pw}@",
    "redis://{pw}@",
    "redis://{pw}@:6379",
    "redis://user:{pw}@{addr}/99999",
    "redis://user:{pw}:more@{addr}/x",
    "redis://:{pw}@{addr}/0#frag",
    "redis://:{pw} @{addr}/0",
    "redis://:{pw}\n@{addr}/0",
    "redis://:{pw}%zz@{addr}/0",
    "redis://:{pw}@[::1/0",
    "rediss://:{pw}@",
    "Rediss://u:{pw}@{addr}/0?ssl_cert_reqs=none",
    "unix://:{pw}@relative.sock",
    "unix://:{pw}@/tmp/x.sock?password=x",
    "redis+sentinel://:{pw}@{addr}",
    "REDIS+SENTINEL://:{pw}@{addr}/svc/abc",
    "redis+cluster://:{pw}@{addr}/5",
    "redis+cluster://:{pw}@{addr},",
    "http://:{pw}@{addr}/0",
    ":{pw}@{addr}/0",
    "{pw}",
]


def _secret_cases() -> list[Case]:
    cases = []
    for shape in URL_SHAPES:
        for pw in (PASSWORD, ENCODED_PASSWORD, SECRET_AFTER_AT):
            url = shape.replace("{pw}", pw)
            cases.append(Case(["-k", "j", "--redis-url", url, *JOB], label=f"flag {url!r}"))
            cases.append(Case(["status"], env={"LOCKRUN_REDIS_URL": url},
                              label=f"variable {url!r}"))
            if "\n" not in url:  # TOML basic strings hold no raw newline
                cases.append(Case(["-k", "j", *JOB], config=f"redis_url = {_toml(url)}\n",
                                  label=f"file {url!r}"))
    for pw in (PASSWORD, ENCODED_PASSWORD, SECRET_AFTER_AT):
        cases.append(Case(["-k", "j", "--ping-url", f"https://:{pw}@/ping", *JOB],
                          label=f"ping-url with {pw!r}"))
    return cases


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_a_malformed_url_never_shows_its_password(tmp_path: Path) -> None:
    outcomes = run_all(_secret_cases(), tmp_path)
    assert_all_refused(outcomes)
    leaks = [f"{o.case.label}: {o.stderr!r}" for o in outcomes
             if "S3cr3t" in o.stdout + o.stderr]
    assert leaks == [], "\n".join(leaks)


@pytest.mark.parametrize("text", [
    "cannot use Redis at REDIS://:{pw}@h:6379/0: refused",
    "'redis://user:{pw}@h:6379/0': bad",
    "redis://{pw}@h",
    "x rediss://u:{pw}@h:1/0 y unix://:{pw}@/run/redis.sock z",
    "redis+sentinel://:{pw}@a:26379,b:26379/svc",
    "REDIS+CLUSTER://u:{pw}@a:1,b:2",
    "https://:{pw}@hc-ping.example/x",
])
@pytest.mark.parametrize("pw", [PASSWORD, ENCODED_PASSWORD, SECRET_AFTER_AT, "a:b%c", "S3cr3t%"])
def test_redaction_hides_the_password_of_any_url_shape_in_any_message(text: str,
                                                                       pw: str) -> None:
    """The last line of defence: every message lockrun prints goes through redact()."""
    from lockrun.output import redact

    shown = redact(text.replace("{pw}", pw))
    assert "S3cr3t" not in shown and pw not in shown, shown
    assert "***@" in shown


def test_a_url_user_name_alone_is_hidden_as_a_possible_password(tmp_path: Path) -> None:
    outcome = run_case(Case(["-k", "j", "--redis-url", "redis://hunter2@{addr}/x", *JOB]),
                       tmp_path)
    assert outcome.problems() == []
    assert "hunter2" not in outcome.stderr and "***@" in outcome.stderr


# What is valid must still work: the same parser decides what connects.

@pytest.mark.parametrize("url", [
    pytest.param("REDIS://{host}:{port}/0", id="upper-case-scheme"),
    pytest.param("redis://{host}:{port}", id="no-db"),
    pytest.param("redis://{host}:{port}/", id="trailing-slash"),
    pytest.param("redis://user:p%40ss@{host}:{port}/0", id="percent-encoded-user-password"),
])
@pytest.mark.usefixtures("transport")
def test_valid_url_forms_still_connect(redis_server: RedisServer, key: str, url: str) -> None:
    target = url.format(host="127.0.0.1", port=redis_server.port)
    env = lockrun_env(target, LOCKRUN_CONFIG="")
    r = subprocess.run([str(LOCKRUN), "-k", key, "--fire", "f1", "--", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    if "user:" in url:  # redis-server has no such user: Redis says so, not the URL check
        assert r.returncode == 75, r.stderr
        assert "p%40ss" not in r.stderr and "p@ss" not in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert redis_server.client().exists(f"lockrun:{{{key}}}:fire:f1")


@pytest.mark.parametrize("form", ["unix", "tcp"])
@pytest.mark.usefixtures("transport")
def test_a_database_number_in_the_url_is_the_database_used(own_redis: RedisServer, key: str,
                                                           form: str) -> None:
    url = (own_redis.url + "?db=5" if form == "unix"
           else f"redis://127.0.0.1:{own_redis.port}/5")
    env = lockrun_env(url, LOCKRUN_CONFIG="")
    r = subprocess.run([str(LOCKRUN), "-k", key, "--fire", "f1", "--", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    db5 = own_redis.client()
    db5.connection_pool.connection_kwargs["db"] = 5
    assert db5.exists(f"lockrun:{{{key}}}:fire:f1")
    assert not own_redis.client().exists(f"lockrun:{{{key}}}:fire:f1")


# TZ: what glibc accepts.

def _tick_at_three(zone_name: str) -> tuple[str, str]:
    """A cron tick 20 s after 03:00 in *zone_name* (a tzdata zone with the same rules):
    the faked clock for it, and the fire id that tick must get."""
    import time
    from zoneinfo import ZoneInfo

    fire = datetime(2026, 11, 22, 3, 0, tzinfo=ZoneInfo(zone_name)).astimezone(timezone.utc)
    # an offset, not "@date": libfaketime reads a date in the zone under test
    offset = round(fire.timestamp() + 20 - time.time())
    return f"{offset:+d}", fire.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("tz", "same_as"), [
    ("UTC0", "UTC"),
    ("JST-9", "Asia/Tokyo"),
    ("<+0330>-3:30", "Asia/Tehran"),
    ("EST5EDT,M3.2.0,M11.1.0", "America/New_York"),
    (":Asia/Tokyo", "Asia/Tokyo"),
    (":/usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"),
])
def test_glibc_tz_forms_give_the_fire_of_the_matching_zone(redis_server: RedisServer, key: str,
                                                           tz: str, same_as: str) -> None:
    if tz.startswith(":/") and not os.path.isfile(tz[1:]):
        pytest.skip("no tzdata files on this machine")
    if same_as == "Asia/Tehran" and datetime.now(timezone.utc).year != 2026:
        pytest.skip("Iran's rules may change again")  # +03:30 all year since 2023
    # cron ticked at 03:00:20 in that zone: only a TZ read as glibc reads it explains the tick
    # (a misread one falls back to UTC or the system zone: a fire ran nowhere)
    clock, fire = _tick_at_three(same_as)
    env = faketime_env(redis_server.url, clock, LOCKRUN_CONFIG="", TZ=tz)
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = "0"  # shifted, still ticking: time.sleep() works
    env.pop("CRON_TZ", None)
    r = subprocess.run([str(LOCKRUN), "-k", key, "--schedule", "0 3 * * *", "--max-skew", "0",
                        "--", "sh", "-c", "echo $LOCKRUN_FIRE"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, fire, "")


def test_a_posix_tz_rule_switches_to_and_from_dst_at_the_rule_instants() -> None:
    from zoneinfo import ZoneInfo

    from lockrun.schedule import posix_zone

    rule = posix_zone("EST5EDT,M3.2.0,M11.1.0")
    reference = ZoneInfo("America/New_York")
    assert rule is not None
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for hour in range(0, 366 * 24):
        moment = start + timedelta(hours=hour)
        assert moment.astimezone(rule).utcoffset() == moment.astimezone(reference).utcoffset(), \
            moment
    spring = datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc)
    assert (spring - timedelta(seconds=1)).astimezone(rule).utcoffset() == timedelta(hours=-5)
    assert spring.astimezone(rule).utcoffset() == timedelta(hours=-4)
    assert posix_zone("garbage") is None and posix_zone("9JST") is None


# Configuration files a non-root user cannot read.

def _python_for(uid: int) -> list[str] | None:
    """An interpreter that user may execute with lockrun and its libraries on the path."""
    candidates = [sys.executable, shutil.which("python3") or ""]
    for exe in candidates:
        if not exe:
            continue
        ok = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                             exe, "-c", "import sys; print(sys.version_info[:2])"],
                            capture_output=True, text=True, timeout=30)
        if ok.returncode == 0 and ok.stdout.strip() == str(tuple(sys.version_info[:2])):
            return [exe]
    return None


def test_an_unreadable_configuration_file_is_an_error_for_a_non_root_user() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run lockrun as nobody")
    nobody = 65534
    python = _python_for(nobody)
    if python is None:
        pytest.skip("no interpreter of this Python version that nobody may run")
    import lockrun

    paths = {str(Path(lockrun.__file__).parent.parent), str(Path(click.__file__).parent.parent)}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # pytest's own tree is root-only
        os.chmod(tmp, 0o755)
        config = Path(tmp) / "lockrun.toml"
        config.write_text('ttl = "5m"\n')
        config.chmod(0o600)
        marker = Path(tmp) / "ran"
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sorted(paths)),
               "LOCKRUN_CONFIG": str(config), "LOCKRUN_REDIS_URL": "redis://127.0.0.1:1/0"}
        r = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}",
                            "--clear-groups", *python, "-m", "lockrun", "-k", "j", "--", "touch",
                            str(marker)], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 64, r.stderr
        assert r.stderr.startswith("lockrun: ") and "Permission denied" in r.stderr
        assert len(r.stderr.splitlines()) == 1
        assert not marker.exists()
