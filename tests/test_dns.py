"""A Redis named by a host name whose DNS server never answers.

The C library's lookup ignores socket timeouts: it waits resolv.conf's timeout
times its attempts, and a lookup inside the supervision loop (a renewal that
reconnects) would leave a loop that can neither renew, nor notice the lease
expire, nor stop the job. lockrun.resp gives the lookup the same timeout as
the connect. Each test runs lockrun in a mount namespace of its own whose
/etc/resolv.conf names a UDP socket of this test that reads queries and never
answers; nothing on the host is changed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LOCKRUN, RedisServer, lockrun_env, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare(1) for a private resolv.conf")

NAME = "lockrun-dns-test.example"
RESOLVER_WAIT_S = 30
"""What the C library would wait for an answer: long, so a lookup that is not bounded
shows as a hang and not as a slightly slow failure."""


@pytest.fixture
def silent_dns(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A DNS server that never answers, and a resolv.conf that sends every lookup to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for last in range(150, 200):  # a loopback address nothing else on the host listens on
        try:
            server.bind((f"127.0.0.{last}", 53))
            break
        except OSError:
            continue
    else:
        pytest.skip("no free loopback address for a DNS server")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {server.getsockname()[0]}\n"
                      f"options timeout:{RESOLVER_WAIT_S} attempts:1\n")
    try:
        yield server, resolv
    finally:
        server.close()


def in_private_resolver(resolv: Path, *args: str) -> list[str]:
    """lockrun *args* in a mount namespace where /etc/resolv.conf is *resolv*."""
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(resolv), str(LOCKRUN), *args]


def queries(server: socket.socket) -> int:
    server.setblocking(False)
    count = 0
    while True:
        try:
            server.recv(512)
        except BlockingIOError:
            return count
        count += 1


def test_a_lookup_that_never_answers_fails_within_the_redis_timeout(
        silent_dns: tuple[socket.socket, Path], key: str) -> None:
    server, resolv = silent_dns
    started = time.monotonic()
    r = subprocess.run(in_private_resolver(resolv, "-k", key, "--redis-timeout", "1s", "--",
                                           "sh", "-c", "echo ran"),
                       env=lockrun_env(f"redis://{NAME}:6379/0"), capture_output=True,
                       text=True, timeout=RESOLVER_WAIT_S * 3)
    took = time.monotonic() - started
    assert queries(server) > 0, "the lookup never reached the test's DNS server: nothing tested"
    assert r.returncode == 75 and r.stdout == "", r.stderr
    assert "Timeout connecting to server" in r.stderr and len(r.stderr.splitlines()) == 1
    assert took < RESOLVER_WAIT_S / 3, f"the lookup took {took:.1f}s: it was not bounded"


def test_a_running_job_whose_reconnect_cannot_resolve_is_stopped_when_the_lease_is_lost(
        silent_dns: tuple[socket.socket, Path], key: str, tmp_path: Path,
        redis_server: RedisServer) -> None:
    """The first lookup is answered from /etc/hosts... of the namespace: the name is added
    there for the claim, then removed, and the connection killed, so every renewal must
    reconnect and look the name up again, which the DNS server never answers. With
    --on-lost kill the job must be stopped about a ttl later, not after the lookup's
    own wait."""
    server, resolv = silent_dns
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 {NAME}\n")
    marker = tmp_path / "started"
    script = ('mount --bind "$0" /etc/resolv.conf && mount --bind "$1" /etc/hosts && '
              'shift && exec "$@"')
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(resolv), str(hosts), str(LOCKRUN), "-k", key, "--fire", "f1", "--ttl", "3s",
            "--redis-timeout", "1s", "--on-lost", "kill", "--kill-after", "1s", "--",
            "sh", "-c", f"touch {marker}; exec sleep 120"]
    port = redis_server.port
    proc = subprocess.Popen(argv, env=lockrun_env(f"redis://{NAME}:{port}/0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker.exists, 30, "the job to start")
        hosts.write_text("")  # the bind mount shows the new content: no answer but DNS's
        client = redis_server.client()
        client.client_kill_filter(_type="normal", skipme=True)
        lost_at = time.monotonic()
        _, err = proc.communicate(timeout=RESOLVER_WAIT_S * 3)
        took = time.monotonic() - lost_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert queries(server) > 0, "no renewal looked the name up: nothing tested"
    assert proc.returncode == 128 + 15 or proc.returncode == 128 + 9, (proc.returncode, err)
    assert "lost" in err, err
    assert took < RESOLVER_WAIT_S / 2, f"stopped {took:.1f}s after the connection broke"
