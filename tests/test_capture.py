"""--capture and `lockrun logs`: the job's output still reaches lockrun's stdout and stderr
byte for byte, while its tail is kept with the fire, read back from any server and sent
as the final ping's body. Real lockrun processes against a real Redis."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LOCKRUN, RedisServer, history, lockrun_env, wait_for

from lockrun.supervisor import FINISH_WAIT_MAX

BINARY = bytes(range(256)) * 8 + b"\xff\xfe not utf-8 \xc3\x28\n"


def lockrun(*args: str, url: str, timeout: float = 60, host: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """lockrun as cron runs it, bytes in and out; *host*: as another server (its own
    UTS namespace and hostname), so the host recorded with the fire differs."""
    argv = [str(LOCKRUN), *args]
    if host is not None:
        argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]
    return subprocess.run(argv, env=env or lockrun_env(url), capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def logs(*args: str, url: str) -> subprocess.CompletedProcess[bytes]:
    return lockrun("logs", *args, url=url)


def logs_json(*args: str, url: str) -> list[dict[str, object]]:
    r = logs(*args, "--json", url=url)
    assert (r.returncode, r.stderr) == (0, b""), r
    result: list[dict[str, object]] = json.loads(r.stdout)
    return result


def _uts_ok() -> bool:
    try:
        r = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec hostname',
                            "probe-uts"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.stdout.strip() == "probe-uts"


UTS = _uts_ok()


def test_output_reaches_lockruns_stdout_and_stderr_byte_for_byte_while_its_tail_is_kept(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    (tmp_path / "out.bin").write_bytes(BINARY)
    (tmp_path / "err.bin").write_bytes(b"to stderr \x00\x01\n" * 3)
    job = f"cat {tmp_path}/out.bin; cat {tmp_path}/err.bin >&2"
    r = lockrun("-k", key, "--fire", "f1", "--capture", "64k", "--", "sh", "-c", job,
                url=redis_server.url)
    assert (r.returncode, r.stdout, r.stderr) == (0, BINARY, b"to stderr \x00\x01\n" * 3)
    [kept] = logs_json(key, "--fire", "f1", url=redis_server.url)
    assert kept["encoding"] == "base64" and kept["dropped"] == 0
    assert kept["exit"] == 0 and kept["outcome"] == "exited" and kept["attempt"] == 1
    raw = logs(key, "--fire", "f1", url=redis_server.url)
    assert raw.returncode == 0 and raw.stderr == b""
    header, _, body = raw.stdout.partition(b"\n")
    assert re.fullmatch(rf"== {key} fire f1 attempt 1 on \S+: exit 0 \(exited\), ended "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", header.decode()), header
    # two pipes, two readers: the streams are interleaved in the order they arrived
    assert body in (BINARY + r.stderr, r.stderr + BINARY)


def test_a_job_printing_far_more_than_size_keeps_exactly_the_last_size_bytes(
        redis_server: RedisServer, key: str) -> None:
    script = "import sys\nfor i in range(60000): sys.stdout.write(f'line {i:08d}\\n')"
    expected = "".join(f"line {i:08d}\n" for i in range(60000)).encode()  # 900 000 bytes
    r = lockrun("-k", key, "--fire", "f1", "--capture", "4k", "--", sys.executable, "-c",
                script, url=redis_server.url)
    assert (r.returncode, r.stderr) == (0, b"") and r.stdout == expected
    [kept] = logs_json(key, url=redis_server.url)  # --last, the default
    assert kept["fire"] == "f1" and kept["encoding"] == "utf-8"
    assert kept["output"] == expected[-4096:].decode()
    assert kept["dropped"] == len(expected) - 4096
    raw = logs(key, url=redis_server.url).stdout
    assert raw.split(b"\n", 1)[0].endswith(f"; {len(expected) - 4096} earlier bytes not "
                                           "kept".encode())
    assert raw.split(b"\n", 1)[1] == expected[-4096:]


@pytest.mark.skipif(not UTS, reason="unshare --uts is not available here")
def test_a_failed_attempts_output_is_readable_from_another_server(
        redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    failed = lockrun("-k", key, "--fire", "f1", "--capture", "1k", "--", "sh", "-c",
                     "echo disk full on /srv >&2; exit 2", url=url, host="srv-a")
    assert (failed.returncode, failed.stderr) == (2, b"disk full on /srv\n")
    ok = lockrun("-k", key, "--fire", "f2", "--capture", "1k", "--", "echo", "all good",
                 url=url, host="srv-b")
    assert (ok.returncode, ok.stdout) == (0, b"all good\n")
    # read by a third process, on a third "server"
    by_failed = lockrun("logs", key, "--failed", url=url, host="srv-c")
    assert by_failed.returncode == 0, by_failed
    assert by_failed.stdout.split(b"\n", 1)[1] == b"disk full on /srv\n"
    assert by_failed.stdout.startswith(f"== {key} fire f1 attempt 1 on srv-a: exit 2 "
                                       "(exited), ended ".encode())
    assert logs(key, "--fire", "f1", url=url).stdout == by_failed.stdout
    last = logs(key, "--last", url=url)
    assert last.stdout.startswith(f"== {key} fire f2 attempt 1 on srv-b: exit 0 (exited)"
                                  .encode()) and last.stdout.endswith(b"\nall good\n")
    assert logs(key, url=url).stdout == last.stdout


class PostServer:
    """A real HTTP server that records each ping's path and body."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                outer.pings.append((self.command, self.path.split("?")[0], body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _record

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ping/abc"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ping_server() -> Iterator[PostServer]:
    server = PostServer()
    yield server
    server.close()


def test_the_final_ping_carries_the_tail_as_its_body(redis_server: RedisServer, key: str,
                                                     ping_server: PostServer) -> None:
    r = lockrun("-k", key, "--fire", "f1", "--capture", "1k", "--ping-url", ping_server.url,
                "--", "sh", "-c", "seq 1 1000; echo failing >&2; exit 4", url=redis_server.url)
    assert r.returncode == 4 and r.stderr == b"failing\n"
    start, final = ping_server.pings
    assert start[:2] == ("GET", "/ping/abc/start")
    assert final[:2] == ("POST", "/ping/abc/4")
    [kept] = logs_json(key, url=redis_server.url)
    assert final[2] == str(kept["output"]).encode() and len(final[2]) == 1024
    assert final[2].endswith(b"failing\n") or final[2].endswith(b"1000\n")


def test_capture_with_quiet_unless_failed(redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    job = "echo out-$0; echo err-$0 >&2; [ $0 = ok ]"
    ok = lockrun("-k", key, "--fire", "f1", "--capture", "1k", "--quiet-unless-failed",
                 "--", "sh", "-c", job, "ok", url=url)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, b"", b"")
    [kept] = logs_json(key, "--fire", "f1", url=url)
    assert sorted(str(kept["output"]).splitlines()) == ["err-ok", "out-ok"]
    bad = lockrun("-k", key, "--fire", "f2", "--capture", "1k", "--quiet-unless-failed",
                  "--", "sh", "-c", job, "bad", url=url)
    assert (bad.returncode, bad.stdout, bad.stderr) == (1, b"out-bad\n", b"err-bad\n")
    [kept] = logs_json(key, "--failed", url=url)
    assert kept["fire"] == "f2"
    assert sorted(str(kept["output"]).splitlines()) == ["err-bad", "out-bad"]


def test_a_chatty_job_read_slowly_never_costs_the_lease(redis_server: RedisServer,
                                                        key: str, tmp_path: Path) -> None:
    """Nobody reads lockrun's stdout for three ttls: the job blocks on its writes, as it
    would without lockrun, but the lease is renewed all along; then all 50 MB arrive."""
    ttl = 1.5
    size = 50 * 1024 * 1024
    script = ("import sys\nblock = b'x' * 1023 + b'\\n'\n"
              f"for _ in range({size // 1024}): sys.stdout.buffer.write(block)")
    args = ["-k", key, "--fire", "f1", "--ttl", f"{ttl}s", "--redis-timeout", "500ms",
            "--capture", "64k", "--"]
    proc = subprocess.Popen([str(LOCKRUN), *args, sys.executable, "-c", script],
                            env=lockrun_env(redis_server.url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    fire_key = f"lockrun:{{{key}}}:fire:f1"
    client = redis_server.client()
    try:
        wait_for(lambda: client.hget(fire_key, "state") == "running", 30, "the claim")
        claimed = time.monotonic()
        # the job is stuck on a full pipe meanwhile: its claim must stay alive
        wait_for(lambda: time.monotonic() - claimed > 3 * ttl
                 or client.hget(fire_key, "state") != "running", 30, "three ttls")
        assert client.hget(fire_key, "state") == "running", "the claim expired"
        marker = tmp_path / "ran"
        other = lockrun(*args, "touch", str(marker), url=redis_server.url)
        assert (other.returncode, other.stderr) == (0, b"") and not marker.exists()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, err) == (0, b"") and len(out) == size
    events = [e["event"] for e in history(redis_server, key)]
    assert events == ["start", "end"], events
    [kept] = logs_json(key, url=redis_server.url)
    assert kept["dropped"] == size - 65536


HOLDER = """
import socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(1)
print("listening", flush=True)
conn, _ = server.accept()
_, fds, _, _ = socket.recv_fds(conn, 16, 4)
conn.sendall(b"k")
print("holding", len(fds), flush=True)
sys.stdin.read()
"""

PASS_FD = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
socket.send_fds(s, [b"x"], [1])
s.recv(1)
print("tail of a job whose stdout outlives it")
"""


def test_a_pipe_held_open_outside_the_jobs_tree_does_not_hold_lockrun(
        redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    """The job hands its stdout to a process lockrun did not start (SCM_RIGHTS): lockrun
    cannot stop it, and must not wait for it beyond its bound."""
    path = str(tmp_path / "holder.sock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "listening\n"
        started = time.monotonic()
        r = lockrun("-k", key, "--fire", "f1", "--capture", "1k", "--", sys.executable, "-c",
                    PASS_FD, path, url=redis_server.url, timeout=60)
        took = time.monotonic() - started
        assert holder.stdout.readline() == "holding 1\n"
        assert holder.poll() is None, "the holder must still hold the pipe"
    finally:
        holder.kill()
        holder.wait()
    assert (r.returncode, r.stdout, r.stderr) == (
        0, b"tail of a job whose stdout outlives it\n", b"")
    assert took < FINISH_WAIT_MAX + 8, took  # the bound, plus a loaded machine's starts
    [kept] = logs_json(key, url=redis_server.url)
    assert kept["output"] == "tail of a job whose stdout outlives it\n"


@pytest.mark.parametrize("capture", [False, True])
def test_the_jobs_stdout_is_a_terminal_only_without_capture(redis_server: RedisServer,
                                                            key: str, capture: bool) -> None:
    master, slave = os.openpty()
    try:
        args = ["--capture", "1k"] if capture else []
        proc = subprocess.Popen(
            [str(LOCKRUN), "-k", key, "--fire", "f1", *args, "--", "sh", "-c",
             "if [ -t 1 ]; then echo stdout-is-a-tty; else echo stdout-is-no-tty; fi"],
            env=lockrun_env(redis_server.url), stdin=subprocess.DEVNULL, stdout=slave,
            stderr=subprocess.PIPE)
        os.close(slave)
        slave = -1
        _, err = proc.communicate(timeout=60)
        seen = b""
        while b"\n" not in seen:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert (proc.returncode, err) == (0, b"")
    assert seen.strip() == (b"stdout-is-no-tty" if capture else b"stdout-is-a-tty")


@pytest.mark.parametrize("value", ["0", "2g", "abc", "2m", "1023", "64k\n", "-1"])
def test_bad_capture_sizes_are_refused_before_redis(value: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = lockrun("-k", "j", "--capture", value, "--", "touch", str(marker),
                url="redis://127.0.0.1:1/0")  # refused at once if it were ever tried
    assert r.returncode == 64 and not marker.exists()
    assert r.stderr.decode().startswith("lockrun: invalid value for --capture: ")
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["64k", "1m", "65536", "off"])
def test_good_capture_sizes_are_taken_from_the_line_and_the_environment(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lockrun.argv import parse

    expected = {"64k": 65536, "1m": 1048576, "65536": 65536, "off": 0}[value]
    inv = parse(["-k", "j", "--capture", value, "--", "true"])
    assert inv is not None and inv.config.capture == expected
    monkeypatch.setenv("LOCKRUN_CAPTURE", value)
    inv = parse(["-k", "j", "--", "true"])
    assert inv is not None and inv.config.capture == expected


@pytest.mark.parametrize("args", [["logs", "bad key"], ["logs", "j", "--fire", "a b"],
                                  ["logs", "j", "--fire", "f1", "--last"],
                                  ["logs", "j", "--last", "--failed"]])
def test_logs_refuses_bad_input_before_redis(args: list[str]) -> None:
    r = lockrun(*args, url="redis://127.0.0.1:1/0")
    assert r.returncode == 64 and r.stdout == b"", r
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(b"lockrun: ")


def test_logs_says_why_when_nothing_is_kept(redis_server: RedisServer, key: str) -> None:
    url = redis_server.url
    unknown = logs(key, url=url)
    assert unknown.returncode == 1 and unknown.stdout == b""
    assert len(unknown.stderr.splitlines()) == 1 and b"--capture" in unknown.stderr
    plain = lockrun("-k", key, "--fire", "f1", "--", "sh", "-c", "echo x; exit 3", url=url)
    assert plain.returncode == 3
    for selector in (["--failed"], ["--fire", "f1"], []):
        r = logs(key, *selector, url=url)
        assert (r.returncode, r.stdout) == (1, b""), selector
        assert len(r.stderr.splitlines()) == 1 and b"--capture" in r.stderr
    no_redis = logs(key, url="redis://127.0.0.1:1/0")
    assert no_redis.returncode == 75


def test_the_tail_expires_with_the_done_record(redis_server: RedisServer, key: str) -> None:
    r = lockrun("-k", key, "--fire", "f1", "--retention", "2m", "--capture", "1k", "--",
                "echo", "hi", url=redis_server.url)
    assert r.returncode == 0
    client = redis_server.client()
    out_ttl = client.pttl(f"lockrun:{{{key}}}:out:f1")
    fire_ttl = client.pttl(f"lockrun:{{{key}}}:fire:f1")
    assert 0 < out_ttl <= 120_000 and abs(out_ttl - fire_ttl) < 10_000, (out_ttl, fire_ttl)


def test_a_server_whose_claim_is_gone_keeps_no_output(redis_server: RedisServer, key: str,
                                                     tmp_path: Path) -> None:
    """The claim is removed while the job runs (an operator's unlock): its output must not
    be written as the fire's, which another server may be running by now."""
    go = tmp_path / "go"
    proc = subprocess.Popen(
        [str(LOCKRUN), "-k", key, "--fire", "f1", "--capture", "1k", "--", "sh", "-c",
         f"echo stale; while [ ! -e {go} ]; do sleep 0.05; done"],
        env=lockrun_env(redis_server.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client = redis_server.client()
    try:
        wait_for(lambda: client.hget(f"lockrun:{{{key}}}:fire:f1", "state") == "running", 30,
                 "the claim")
        unlock = lockrun("unlock", key, "--fire", "f1", "--yes", url=redis_server.url)
        assert unlock.returncode == 0, unlock
        go.touch()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    r = logs(key, "--fire", "f1", url=redis_server.url)
    assert r.returncode == 1, r
