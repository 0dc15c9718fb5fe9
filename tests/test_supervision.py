"""The child as users see it: signals, process trees, streams, environment, terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from conftest import (
    LOCKRUN,
    RedisServer,
    history,
    lockrun_env,
    pid_alive,
    run_lockrun,
    start_lockrun,
    wait_for,
)

FORWARDED = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2]


@pytest.mark.parametrize("sig", FORWARDED, ids=lambda s: signal.Signals(s).name)
def test_signals_are_forwarded_and_the_fire_is_released(redis_server: RedisServer, key: str,
                                                        tmp_path: Path, sig: int) -> None:
    started, got = tmp_path / "started", tmp_path / "got"
    name = signal.Signals(sig).name.removeprefix("SIG")
    proc = start_lockrun(
        "-k", key, "--fire", "f1", "--", "sh", "-c",
        f"trap 'echo {name} > {got}; exit 7' {name}; touch {started}; "
        "while :; do sleep 0.05; done", url=redis_server.url)
    wait_for(started.exists, 30, "the job to start")
    proc.send_signal(sig)
    assert proc.wait(30) == 7
    assert got.read_text().strip() == name
    record = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert record["state"] == "done" and record["exit"] == "7"
    assert not redis_server.client().exists(f"lockrun:{{{key}}}:running")


def _start_job_with_pid(redis_server: RedisServer, key: str,
                        tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """Start a job whose main process is ``sleep`` (exec'd) and return its pid."""
    pidfile = tmp_path / "pid"
    proc = start_lockrun("-k", key, "--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 300",
                         url=redis_server.url)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the job's pid")
    return proc, int(pidfile.read_text())


def test_sigterm_to_a_job_that_dies_of_it_gives_143(redis_server: RedisServer, key: str,
                                                     tmp_path: Path) -> None:
    proc, _ = _start_job_with_pid(redis_server, key, tmp_path)
    proc.terminate()
    assert proc.wait(30) == 128 + signal.SIGTERM


def test_kill_9_of_lockrun_kills_the_job(redis_server: RedisServer, key: str,
                                         tmp_path: Path) -> None:
    proc, child = _start_job_with_pid(redis_server, key, tmp_path)
    assert pid_alive(child)
    proc.kill()
    proc.wait(30)
    wait_for(lambda: not pid_alive(child), 10, "the orphaned job to die")


def _tree_script(tmp_path: Path, then: str) -> str:
    """A job with a grandchild in its group, one in its own session, one daemonised."""
    return (f"sleep 300 & echo $! > {tmp_path}/in-group; "
            f"setsid sleep 300 & echo $! > {tmp_path}/own-session; "
            f"(sleep 300 & echo $! > {tmp_path}/daemon) ; "
            f"touch {tmp_path}/started; {then}")


def _pids(tmp_path: Path) -> list[int]:
    return [int((tmp_path / n).read_text()) for n in ("in-group", "own-session", "daemon")]


def test_timeout_kills_every_grandchild(redis_server: RedisServer, key: str,
                                        tmp_path: Path) -> None:
    r = run_lockrun("-k", key, "--timeout", "2s", "--kill-after", "2s", "--", "sh", "-c",
                    _tree_script(tmp_path, "wait"), url=redis_server.url)
    assert r.returncode == 124
    pids = _pids(tmp_path)
    assert not [p for p in pids if pid_alive(p)]


def test_processes_left_behind_by_the_job_are_stopped(redis_server: RedisServer, key: str,
                                                      tmp_path: Path) -> None:
    r = run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", _tree_script(tmp_path, "exit 0"),
                    url=redis_server.url)
    assert r.returncode == 0
    assert "left processes running" in r.stderr
    assert not [p for p in _pids(tmp_path) if pid_alive(p)]
    record = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert record["state"] == "done"


def test_on_lost_kill_stops_the_whole_tree(redis_server: RedisServer, key: str,
                                           tmp_path: Path) -> None:
    proc = start_lockrun("-k", key, "--fire", "f1", "--ttl", "1s", "--redis-timeout", "300ms",
                         "--on-lost", "kill",
                         "--kill-after", "1s", "--", "sh", "-c", _tree_script(tmp_path, "wait"),
                         url=redis_server.url)
    wait_for((tmp_path / "started").exists, 30, "the job to start")
    redis_server.client().delete(f"lockrun:{{{key}}}:fire:f1")
    proc.wait(30)
    assert not [p for p in _pids(tmp_path) if pid_alive(p)]


def test_child_streams_are_inherited_not_buffered(redis_server: RedisServer, key: str,
                                                  tmp_path: Path) -> None:
    go = tmp_path / "go"
    proc = start_lockrun("-k", key, "--", "sh", "-c",
                         f"echo first; echo oops >&2; while [ ! -e {go} ]; do sleep 0.05; done; "
                         "cat", url=redis_server.url, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    assert proc.stdout.readline() == "first\n"  # arrives while the job is still running
    assert proc.stderr.readline() == "oops\n"
    go.touch()
    proc.stdin.write("from stdin\n")
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert proc.stdout.read() == "from stdin\n"


def test_the_job_starts_with_default_signals_and_only_its_standard_streams(
        redis_server: RedisServer, key: str) -> None:
    """What Popen(restore_signals=True, close_fds=True) gave the job, lockrun's own spawn
    gives too: Python ignores SIGPIPE and SIGXFSZ, and a job that inherited that would
    see EPIPE instead of dying quietly at the end of a pipe (``yes | head``); lockrun's
    Redis socket and signal pipe must not leak into the job either, nor a descriptor
    lockrun itself inherited (cron's, or a careless parent's)."""
    read_end, write_end = os.pipe()
    try:
        r = subprocess.run(
            [str(LOCKRUN), "-k", key, "--", "sh", "-c",
             "grep '^SigIgn' /proc/$$/status; ls /proc/$$/fd; yes | head -n 1"],
            env=lockrun_env(redis_server.url), capture_output=True, text=True, timeout=60,
            # one below whatever lockrun opens (3) and one above it (40)
            close_fds=False, preexec_fn=lambda: (os.dup2(read_end, 3), os.dup2(write_end, 40)))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    ignored = int(lines[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), "the job inherited SIGPIPE ignored"
    assert not ignored & (1 << (signal.SIGXFSZ - 1)), "the job inherited SIGXFSZ ignored"
    assert lines[2:-1] == ["0", "1", "2"], f"descriptors leaked into the job: {lines[2:-1]}"
    assert lines[-1] == "y" and r.stderr == ""  # yes died of SIGPIPE, without a word


def test_child_environment(redis_server: RedisServer, key: str) -> None:
    env = lockrun_env(redis_server.url, LOCKRUN_FENCE="stale", LOCKRUN_OWNER="stale",
                      MY_VAR="kept")
    r = run_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c",
                    'echo "$LOCKRUN_KEY|$LOCKRUN_FIRE|$LOCKRUN_FENCE|$LOCKRUN_OWNER|$MY_VAR"',
                    url=redis_server.url, env=env)
    got_key, fire, fence, owner, mine = r.stdout.strip().split("|")
    assert (got_key, fire, mine) == (key, "f1", "kept")
    stored = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert fence == stored["fence"] and owner == stored["owner"]


def test_nested_lockrun_uses_its_own_key(redis_server: RedisServer, key: str) -> None:
    r = run_lockrun("-k", f"{key}-outer", "--", str(LOCKRUN), "-k", f"{key}-inner", "--",
                    "sh", "-c", 'echo "$LOCKRUN_KEY $LOCKRUN_FENCE"; exit 4',
                    url=redis_server.url)
    assert r.returncode == 4
    inner_key, inner_fence = r.stdout.split()
    assert inner_key == f"{key}-inner"
    c = redis_server.client()
    outer = c.keys(f"lockrun:{{{key}-outer}}:fire:*")
    inner = c.keys(f"lockrun:{{{key}-inner}}:fire:*")
    assert len(outer) == 1 and len(inner) == 1
    assert c.hget(inner[0], "fence") == inner_fence
    assert c.hget(outer[0], "exit") == "4"


def test_a_manual_run_can_read_the_terminal(redis_server: RedisServer, key: str) -> None:
    """The job becomes the terminal's foreground group; a background group would stop on read."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        os.environ.clear()
        os.environ.update(lockrun_env(redis_server.url))
        os.execv(str(LOCKRUN), [str(LOCKRUN), "-k", key, "--", "sh", "-c",
                                "read line; echo got:$line"])
    output = b""
    os.write(fd, b"hello\n")
    deadline = time.monotonic() + 30
    while b"got:hello" not in output and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                output += os.read(fd, 1024)
            except OSError:
                break
    status = None
    deadline = time.monotonic() + 10
    while status is None and time.monotonic() < deadline:
        done, raw = os.waitpid(pid, os.WNOHANG)
        status = raw if done else None
        time.sleep(0.02)
    if status is None:  # a job stopped by SIGTTIN never ends: clean up, then fail
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(fd)
    assert b"got:hello" in output
    assert status is not None and os.waitstatus_to_exitcode(status) == 0


def test_cron_like_environment_without_a_terminal(redis_server: RedisServer, key: str) -> None:
    """Cron gives no terminal and a minimal PATH; stdin may be /dev/null."""
    env = {"PATH": "/usr/bin:/bin", "LOCKRUN_REDIS_URL": redis_server.url, "HOME": "/",
           "LOCKRUN_CONFIG": ""}
    r = subprocess.run([str(LOCKRUN), "-k", key, "--", "sh", "-c", "cat; exit 2"], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                       start_new_session=True)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def test_sigterm_reaches_the_jobs_whole_group_so_a_trap_runs_at_once(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    """A shell runs its trap only once its foreground command ends: that command must get it too."""
    started = tmp_path / "started"
    proc = start_lockrun("-k", key, "--fire", "f1", "--", "sh", "-c",
                         f'trap "exit 7" TERM; touch {started}; sleep 120; exit 0',
                         url=redis_server.url)
    job = 0
    try:
        wait_for(started.exists, 30, "the job to start")
        wait_for(lambda: _children(proc.pid), 10, "the job's process")
        job = _children(proc.pid)[0]
        wait_for(lambda: any(_comm(p) == "sleep" for p in _children(job)), 10,
                 "the job's sleep to run")
        sent = time.monotonic()
        proc.terminate()
        assert proc.wait(20) == 7
        assert time.monotonic() - sent < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if job:
            try:
                os.killpg(job, signal.SIGKILL)
            except ProcessLookupError:
                pass
    record = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert record["state"] == "done" and record["exit"] == "7"


EMBEDDED = """
import signal, sys
from lockrun.cli import main

def mine(signum, frame):
    pass

for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD):
    signal.signal(sig, mine)
sys.argv = ["lockrun", "-k", sys.argv[1], "--", "true"]
try:
    main()
except SystemExit as exc:
    print("exit", exc.code)
kept = [signal.getsignal(s) is mine for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD)]
print("kept" if all(kept) else f"replaced {kept}")
"""


def test_a_python_program_running_lockrun_keeps_its_own_signal_handlers(
        redis_server: RedisServer, key: str) -> None:
    r = subprocess.run([sys.executable, "-c", EMBEDDED, key],
                       env=lockrun_env(redis_server.url, LOCKRUN_CONFIG=""),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split("\n")[:2] == ["exit 0", "kept"], r.stderr


STORM = """
import os, signal
from lockrun.signals import MAX_PENDING, SignalInbox

inbox = SignalInbox()
os.kill(os.getpid(), signal.SIGTERM)
for _ in range(5000):
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGHUP)
pending = list(inbox.pending)
inbox.close()
print(len(pending) <= MAX_PENDING, [signal.Signals(s).name for s in pending])
"""


def test_a_signal_storm_leaves_one_entry_per_signal_with_the_first_stop_signal_first() -> None:
    r = subprocess.run([sys.executable, "-c", STORM], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip() == "True ['SIGTERM', 'SIGUSR1', 'SIGUSR2', 'SIGHUP']", r.stderr


def test_a_prctl_the_kernel_refuses_is_reported_not_ignored() -> None:
    """lockrun warns when the subreaper or parent-death signal is not set: it must see the error."""
    import errno

    from lockrun.process import _libc_prctl

    pr_set_pdeathsig, pr_get_dumpable = 1, 3
    assert _libc_prctl(pr_set_pdeathsig, 100000) == errno.EINVAL  # no such signal
    assert _libc_prctl(pr_get_dumpable, 0) == 0  # a call that works (and changes nothing)


def test_a_stop_signal_reaches_a_stopped_job_without_a_terminal(redis_server: RedisServer,
                                                                key: str,
                                                                tmp_path: Path) -> None:
    started = tmp_path / "started"
    proc = start_lockrun("-k", key, "--", "sh", "-c", f"touch {started}; sleep 120",
                         url=redis_server.url)
    wait_for(started.exists, 30, "the job to start")
    wait_for(lambda: _children(proc.pid), 10, "the job's process")
    pgid = os.getpgid(_children(proc.pid)[0])
    os.killpg(pgid, signal.SIGSTOP)  # an operator paused it, as with kill -STOP
    wait_for(lambda: _state(_children(proc.pid)[0]) == "T", 10, "the job to stop")
    proc.send_signal(signal.SIGTERM)
    # A stopped process only sees SIGTERM once continued; lockrun continues it.
    assert proc.wait(30) == 128 + signal.SIGTERM


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_the_jobs_environment_is_lockruns_plus_the_fire_variables(redis_server: RedisServer,
                                                                  key: str,
                                                                  tmp_path: Path) -> None:
    """Under cron's bare C locale too: Python's locale coercion must not reach the job."""
    dump = tmp_path / "env"
    given = {"PATH": "/usr/bin:/bin", "LANG": "C", "LOCKRUN_CONFIG": "",
             "LOCKRUN_STATE_DIR": str(tmp_path / "state"), "LOCKRUN_REDIS_URL": redis_server.url}
    r = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in given.items()), str(LOCKRUN),
                        "-k", key, "--", "sh", "-c", f"env -0 > {dump}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    seen = dict(item.split("=", 1) for item in dump.read_text().split("\0") if item)
    seen.pop("PWD", None)  # sh sets it
    fire = {k: seen.pop(k) for k in ("LOCKRUN_KEY", "LOCKRUN_FIRE", "LOCKRUN_FENCE",
                                     "LOCKRUN_OWNER")}
    assert fire["LOCKRUN_KEY"] == key
    assert seen == given


def test_quiet_unless_failed_prints_the_jobs_output_only_when_it_fails(
        redis_server: RedisServer, key: str) -> None:
    """chronic's behaviour: cron mails failures only, with everything the job printed."""
    job = ("echo out1; echo err1 >&2; head -c 1048576 /dev/zero | tr '\\0' x; echo; "
           "echo out2; exit \"$1\"")
    ok = run_lockrun("-k", key, "--fire", "f1", "--quiet-unless-failed", "--", "sh", "-c", job,
                     "sh", "0", url=redis_server.url)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    failed = run_lockrun("-k", key, "--fire", "f2", "--quiet-unless-failed", "--", "sh", "-c",
                         job, "sh", "3", url=redis_server.url)
    assert failed.returncode == 3
    assert failed.stdout == "out1\n" + "x" * 1048576 + "\nout2\n"  # more than a pipe holds
    assert failed.stderr == "err1\n"
    plain = run_lockrun("-k", key, "--fire", "f3", "--", "sh", "-c", job, "sh", "0",
                        url=redis_server.url)
    assert plain.stdout.startswith("out1\n") and plain.stderr == "err1\n"  # off by default


SIGNAL_COUNTING_JOB = """
import os, signal, sys, time
got, release = sys.argv[1:3]
signal.signal(signal.SIGUSR1, lambda *_: open(got, "a").write("u\\n"))
while not os.path.exists(release):
    time.sleep(0.05)
sys.exit(5)
"""
"""A job with no child of its own: each SIGUSR1 lockrun forwards is one line in *got*."""


def _received(got: Path, count: int) -> bool:
    return got.exists() and len(got.read_text().split()) >= count


def test_warn_after_says_once_that_the_job_runs_long_and_lets_it_run(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    release, err, got = tmp_path / "release", tmp_path / "stderr", tmp_path / "got"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [str(LOCKRUN), "-k", key, "--fire", "f1", "--warn-after", "1s", "--",
             sys.executable, "-c", SIGNAL_COUNTING_JOB, str(got), str(release)],
            env=lockrun_env(redis_server.url), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for(lambda: "has been running" in err.read_text(), 30, "the warning")
            assert proc.poll() is None, "the job must keep running after the warning"
            for n in (1, 2, 3):  # each forwarded signal wakes lockrun's loop once more
                proc.send_signal(signal.SIGUSR1)
                wait_for(partial(_received, got, n), 30, "the job to get the signal")
        finally:
            release.touch()
            proc.wait(60)
    assert proc.returncode == 5  # the job's own status, untouched
    lines = err.read_text().splitlines()
    assert len(lines) == 1 and "--warn-after 1s" in lines[0] and "keeps running" in lines[0]
    assert [e["event"] for e in history(redis_server, key)] == ["start", "slow", "end"]
    shown = run_lockrun("history", key, url=redis_server.url).stdout
    assert "ran past --warn-after" in shown
