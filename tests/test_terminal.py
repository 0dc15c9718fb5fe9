"""Job control on a manual run: Ctrl-Z, ``fg`` and the lease, driven through a real shell.

An interactive bash runs on a pseudo-terminal it controls, exactly as in a
terminal emulator; the test types into it and reads what a user would see.
Every read has a deadline, so a hung terminal fails the test quickly instead
of hanging it.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shlex
import signal
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LOCKRUN, RedisServer, lockrun_env, wait_for

PROMPT = "lockrun-test$ "


def _state(pid: int) -> str:
    """The process's state letter from /proc (R, S, T, Z...), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the state: ppid, pgrp, session
            members.append(int(entry))
    return members


class Terminal:
    """An interactive bash on a pseudo-terminal: type lines, expect text with a deadline."""

    def __init__(self, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:  # in the child, after setsid(): the pty becomes its tty
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave, stderr=slave,
            env=env, start_new_session=True, preexec_fn=controlling_tty, close_fds=True)
        os.close(slave)
        self.seen = ""  # everything read so far
        self.consumed = 0  # expect() searches only after this point

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float, what: str) -> re.Match[str]:
        """Wait for *pattern* in unmatched output; fail showing the screen if it never comes."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.seen, self.consumed)
            if found:
                self.consumed = found.end()
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the shell has gone
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the terminal closed while waiting for {what}:\n"
                                         f"{self.seen}")
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def foreground_group(self) -> int:
        return os.tcgetpgrp(self.master)

    def close(self) -> None:
        """Kill everything in the shell's session, even a stopped job, then the pty."""
        for pid in _session_members(self.shell.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.shell.wait(30)
        os.close(self.master)


@pytest.fixture
def terminal(redis_server: RedisServer) -> Iterator[Terminal]:
    env = lockrun_env(redis_server.url, PS1=PROMPT, TERM="dumb", HISTFILE="/dev/null",
                      INPUTRC="/dev/null", LOCKRUN_CONFIG="",
                      PATH=f"{LOCKRUN.parent}:{os.environ.get('PATH', os.defpath)}")
    term = Terminal(env)
    try:
        term.expect(re.escape(PROMPT), 30, "the shell's first prompt")
        yield term
    finally:
        term.close()


def _job(tmp_path: Path) -> str:
    """A job that says it started, waits for a line from the terminal, and exits 5."""
    pidfile = tmp_path / "job.pid"
    return shlex.quote(f'echo $$ > {pidfile}; echo job-started; read line; '
                       f'echo "job-got:$line"; exit 5')


def _job_pid(tmp_path: Path) -> int:
    pidfile = tmp_path / "job.pid"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the job's pid")
    return int(pidfile.read_text())


def _suspend_and_resume(term: Terminal, job: int) -> None:
    """Ctrl-Z, then fg: the shell must get its prompt back, and the job the terminal after."""
    term.type("\x1a")
    term.expect(r"Stopped", 20, "the shell's job-control 'Stopped' line after Ctrl-Z")
    term.expect(re.escape(PROMPT), 20, "the shell's prompt after Ctrl-Z")
    assert _state(job) == "T"
    term.type("fg\n")
    # The typed line must reach the job, not the shell: wait until the job owns the
    # terminal again and runs before typing it.
    wait_for(lambda: term.foreground_group() == job and _state(job) in ("S", "R"), 20,
             "the resumed job to own the terminal")


def test_ctrl_z_gives_the_prompt_back_and_fg_resumes_the_job(
        terminal: Terminal, redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    terminal.type(f"lockrun -k {key} --fire f1 -- sh -c {_job(tmp_path)}\n")
    terminal.expect(r"job-started", 30, "the job to start")
    job = _job_pid(tmp_path)
    wait_for(lambda: terminal.foreground_group() == job, 20, "the job to own the terminal")
    _suspend_and_resume(terminal, job)
    terminal.type("go\n")
    terminal.expect(r"job-got:go", 20, "the job to read the line typed after fg")
    terminal.expect(re.escape(PROMPT), 30, "the prompt after the job ended")
    terminal.type('echo "rc=$?"\n')
    terminal.expect(r"rc=5\n", 20, "the job's exit status through lockrun")
    record = redis_server.client().hgetall(f"lockrun:{{{key}}}:fire:f1")
    assert record["state"] == "done" and record["exit"] == "5"
    assert "lost the lease" not in terminal.seen


def test_a_stop_longer_than_the_ttl_is_reported_as_a_lost_lease_on_fg(
        terminal: Terminal, redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    fire = f"lockrun:{{{key}}}:fire:f1"
    terminal.type(f"lockrun -k {key} --fire f1 --ttl 1s --redis-timeout 300ms -- "
                  f"sh -c {_job(tmp_path)}\n")
    terminal.expect(r"job-started", 30, "the job to start")
    job = _job_pid(tmp_path)
    wait_for(lambda: terminal.foreground_group() == job, 20, "the job to own the terminal")
    terminal.type("\x1a")
    terminal.expect(r"Stopped", 20, "the shell's job-control 'Stopped' line after Ctrl-Z")
    terminal.expect(re.escape(PROMPT), 20, "the shell's prompt after Ctrl-Z")
    # Stopped, lockrun cannot renew: the claim expires in Redis.
    wait_for(lambda: not redis_server.client().exists(fire), 20, "the claim to expire")
    terminal.type("fg\n")
    terminal.expect(r"lost the lease on \S+ fire f1", 20,
                    "lockrun to report the lease lost while it was stopped")
    wait_for(lambda: terminal.foreground_group() == job and _state(job) in ("S", "R"), 20,
             "the resumed job to own the terminal")
    terminal.type("go\n")
    terminal.expect(r"job-got:go", 20, "the job to go on after the loss (--on-lost warn)")
    terminal.expect(re.escape(PROMPT), 30, "the prompt after the job ended")
    terminal.type('echo "rc=$?"\n')
    terminal.expect(r"rc=5\n", 20, "the job's exit status through lockrun")


def test_without_a_terminal_a_stopped_job_is_left_stopped_and_the_lease_kept(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    """Under cron nobody can type fg: lockrun must neither stop itself nor stop renewing."""
    pidfile = tmp_path / "job.pid"
    fire = f"lockrun:{{{key}}}:fire:f1"
    env = lockrun_env(redis_server.url, LOCKRUN_CONFIG="")
    proc = subprocess.Popen(
        [str(LOCKRUN), "-k", key, "--fire", "f1", "--ttl", "1s", "--redis-timeout", "300ms",
         "--", "sh", "-c", f"echo $$ > {pidfile}; kill -STOP $$; exit 3"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the job's pid")
        job = int(pidfile.read_text())
        wait_for(lambda: _state(job) == "T", 20, "the job to stop itself")
        # Two renewals seen after the stop prove lockrun went on supervising (a
        # renewal sets the claim's ttl back to 1000 ms; between them it only falls).
        client = redis_server.client()
        renewals, last = 0, client.pttl(fire)

        def renewed() -> bool:
            nonlocal renewals, last
            now = client.pttl(fire)
            if now > last:
                renewals += 1
            last = now
            return renewals >= 2

        wait_for(renewed, 20, "two renewals while the job is stopped")
        assert _state(proc.pid) != "T" and _state(job) == "T"
        os.kill(job, signal.SIGCONT)
        assert proc.wait(30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert "lost the lease" not in (proc.stderr.read() if proc.stderr else "")
    assert client.hget(fire, "state") == "done"
