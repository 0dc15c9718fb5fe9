"""Fixtures: real redis-server processes and a way to run lockrun as users do."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_topologies import RedisServer, free_cluster_port, free_port, make_certs, wait_until

__all__ = ["LOCKRUN", "RedisServer", "free_cluster_port", "free_port", "wait_for"]

LOCKRUN = Path(sys.executable).parent / "lockrun"

# Hermetic: no lockrun started by the suite reads the host's /etc/lockrun.toml. An
# empty LOCKRUN_CONFIG means "no file"; every environment below derives from this one,
# and tests that want a file name it explicitly.
os.environ["LOCKRUN_CONFIG"] = ""
# Nor its state (/var/lib/lockrun, ~/.local/state/lockrun): each environment built
# below gets a state directory of its own, so an outage one test provokes is not
# "recovered" in another test's stderr.
_STATE_ROOT = Path(tempfile.mkdtemp(prefix="lockrun-test-state-"))
atexit.register(shutil.rmtree, _STATE_ROOT, ignore_errors=True)
os.environ["LOCKRUN_STATE_DIR"] = str(_STATE_ROOT / "session")
# Which library carries a single-server URL is the ``transport`` fixture's to say, not
# the shell's that started the suite.
os.environ.pop("LOCKRUN_TRANSPORT", None)

TRANSPORTS = ("stdlib", "redis-py")
"""lockrun's two Redis transports: lockrun.resp (the default for redis://, rediss:// and
unix://) and redis-py (Sentinel and Cluster, or LOCKRUN_TRANSPORT=redis-py)."""


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             what: str = "condition") -> None:
    """Poll with a deadline instead of sleeping a fixed time."""
    if not wait_until(predicate, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _host_state() -> set[str]:
    """This host's own lockrun state directories (root's, ours, any user's in /var/tmp)."""
    import glob

    paths = {"/var/lib/lockrun", os.path.expanduser("~/.local/state/lockrun")}
    return {p for p in paths if os.path.lexists(p)} | set(glob.glob("/var/tmp/lockrun-*"))


@pytest.fixture(scope="session", autouse=True)
def _host_state_untouched() -> Iterator[None]:
    """The suite must neither read nor write this host's own lockrun state."""
    before = _host_state()
    yield
    created = sorted(_host_state() - before)
    assert created == [], f"the test suite created host state: {created}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test may stop, pause or restart."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per transport: the protocol must hold over both for the same URL.

    Set in this process's environment, so a LockClient built by the test and
    every lockrun the test starts (lockrun_env passes it on) use the same one;
    the stdlib case leaves the variable unset, as users run lockrun.
    """
    if request.param == "redis-py":
        monkeypatch.setenv("LOCKRUN_TRANSPORT", "redis-py")
    else:
        monkeypatch.delenv("LOCKRUN_TRANSPORT", raising=False)
    return str(request.param)


@pytest.fixture
def key() -> str:
    """A job key no other test uses, so tests can share one server."""
    return f"t-{uuid.uuid4().hex[:12]}"


def lockrun_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LOCKRUN_") or k == "LOCKRUN_TRANSPORT"}  # see transport()
    env["LOCKRUN_CONFIG"] = ""  # see above: never the host's /etc/lockrun.toml
    env["LOCKRUN_STATE_DIR"] = tempfile.mkdtemp(dir=_STATE_ROOT)  # nor its state
    env["LOCKRUN_REDIS_URL"] = url
    env.update(extra)
    return env


def run_lockrun(
    *args: str, url: str, timeout: float = 60, env: dict[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lockrun`` command the way a crontab line does."""
    return subprocess.run(
        [str(LOCKRUN), *args], env=env or lockrun_env(url), capture_output=True, text=True,
        timeout=timeout, input=input.decode() if input is not None else None,
    )


def start_lockrun(*args: str, url: str, env: dict[str, str] | None = None,
                  **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [str(LOCKRUN), *args], env=env or lockrun_env(url), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )


def pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def history(server: RedisServer, key: str) -> list[dict[str, str]]:
    """The job's history stream, oldest first, as plain dicts."""
    raw = server.client().xrange(f"lockrun:{{{key}}}:hist") or []
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in raw]


def faketime_env(url: str, spec: str, **extra: str) -> dict[str, str]:
    """lockrun's environment with its wall clock faked by libfaketime (monotonic stays real).

    *spec* is libfaketime's: ``@2026-03-29 01:00:07`` starts the clock there,
    ``+10s`` shifts it.
    """
    import glob

    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libs:
        pytest.fail("libfaketime is not installed: run the README's test command")
    return lockrun_env(url, LD_PRELOAD=libs[0], FAKETIME=spec, FAKETIME_DONT_FAKE_MONOTONIC="1",
                       FAKETIME_NO_CACHE="1", **extra)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path,
                                                                          str]]:
    """A redis-server that speaks only TLS and wants a client certificate: its CA, server
    and client certificates (and an unrelated CA) are in the returned directory."""
    d = tmp_path_factory.mktemp("tls")
    make_certs(d)
    port = free_port()
    server = RedisServer(d / "redis", ["--tls-port", str(port), "--tls-cert-file",
                                       str(d / "server.crt"), "--tls-key-file",
                                       str(d / "server.key"), "--tls-ca-cert-file",
                                       str(d / "ca.crt"), "--tls-auth-clients", "yes"])
    yield server, d, f"rediss://127.0.0.1:{port}/0"
    server.stop()


# A fleet on one machine: each lockrun process is a server with a hostname of its own (a
# UTS namespace, as tests/fleet/sim.py does), because lockrun tells servers apart by name.

def on(host: str, url: str, *args: str, env: dict[str, str] | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One tick of a crontab line on the server called *host*."""
    return subprocess.run(
        ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, str(LOCKRUN),
         *args], env=env or lockrun_env(url), capture_output=True, text=True, timeout=timeout)


def start_on(host: str, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, str(LOCKRUN),
         *args], env=lockrun_env(url), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


def tick_until_claimed(host: str, url: str, args: tuple[str, ...],
                       timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Tick as cron would, until this server runs the fire (polling, not sleeping); *args*
    must include -v, whose "acquired" line tells a run from a skip."""
    result: list[subprocess.CompletedProcess[str]] = []

    def claimed() -> bool:
        r = on(host, url, *args)
        result.append(r)
        return "acquired" in r.stderr

    wait_for(claimed, timeout, f"{host} to claim the fire")
    return result[-1]
