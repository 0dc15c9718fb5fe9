"""/etc/lockrun.toml ($LOCKRUN_CONFIG): defaults below flags and variables, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RedisServer, lockrun_env, run_lockrun


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockrun.toml"
    path.write_text(text)
    return path


def test_the_file_supplies_defaults(redis_server: RedisServer, key: str, tmp_path: Path) -> None:
    config = write(tmp_path, f'redis_url = "{redis_server.url}"\nskip_exit_code = 7\n'
                             'retention = "5m"\n')
    env = lockrun_env("redis://127.0.0.1:1/0", LOCKRUN_CONFIG=str(config))
    del env["LOCKRUN_REDIS_URL"]
    first = run_lockrun("-k", key, "--fire", "f1", "--", "true", url="", env=env)
    assert first.returncode == 0, first.stderr
    second = run_lockrun("-k", key, "--fire", "f1", "--", "true", url="", env=env)
    assert second.returncode == 7
    ttl = redis_server.client().pttl(f"lockrun:{{{key}}}:fire:f1")
    assert 290_000 < ttl <= 300_000


def test_precedence_flag_then_environment_then_file(redis_server: RedisServer, key: str,
                                                    tmp_path: Path) -> None:
    config = write(tmp_path, "skip_exit_code = 7\n")
    run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url)
    env = lockrun_env(redis_server.url, LOCKRUN_CONFIG=str(config))
    assert run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url,
                       env=env).returncode == 7
    env["LOCKRUN_SKIP_EXIT_CODE"] = "8"
    assert run_lockrun("-k", key, "--fire", "f1", "--", "true", url=redis_server.url,
                       env=env).returncode == 8
    assert run_lockrun("-k", key, "--fire", "f1", "-E", "9", "--", "true", url=redis_server.url,
                       env=env).returncode == 9


def test_key_prefix_and_password_come_from_the_file(tmp_path: Path, key: str,
                                                    own_redis: RedisServer) -> None:
    own_redis.client().config_set("requirepass", "s3cret")
    config = write(tmp_path, 'key_prefix = "acme"\nredis_password = "s3cret"\n')
    env = lockrun_env(own_redis.url, LOCKRUN_CONFIG=str(config))
    r = run_lockrun("-k", key, "--fire", "f1", "--", "true", url=own_redis.url, env=env)
    assert r.returncode == 0, r.stderr
    authed = own_redis.client()
    authed.connection_pool.connection_kwargs["password"] = "s3cret"
    assert authed.exists(f"acme:{{{key}}}:fire:f1")
    no_password = run_lockrun("-k", key, "--fire", "f2", "--", "true", url=own_redis.url)
    assert no_password.returncode == 75
    assert "s3cret" not in no_password.stderr
    from_env = lockrun_env(own_redis.url, LOCKRUN_REDIS_PASSWORD="s3cret")
    assert run_lockrun("-k", key, "--fire", "f3", "--", "true", url=own_redis.url,
                       env=from_env).returncode == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [('ttl = "10m"\nretention = "1m"\n', "line 2"),
     ('ttl = "10m"\nkey = "job"\n', "cannot be set in the configuration file"),
     ('bogus = 1\n', "unknown setting 'bogus'"),
     ('version = true\n', "unknown setting 'version'"),
     ('help = true\n', "unknown setting 'help'"),
     ('ttl = "10m\n', "invalid TOML"),
     ('[section]\nttl = "1m"\n', "line 1: unknown setting 'section'"),
     ('ttl = ["1m"]\n', "line 1: 'ttl' must be a single value"),
     ('on_lost = "explode"\n', "on_lost"),
     ('ttl = "soon"\n', "line 1")],
)
def test_a_bad_file_is_a_usage_error_naming_file_and_line(redis_server: RedisServer,
                                                          tmp_path: Path, text: str,
                                                          expected: str) -> None:
    marker = tmp_path / "ran"
    config = write(tmp_path, text)
    env = lockrun_env(redis_server.url, LOCKRUN_CONFIG=str(config))
    r = run_lockrun("-k", "job", "--", "touch", str(marker), url=redis_server.url, env=env)
    assert r.returncode == 64
    assert str(config) in r.stderr and expected in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert not marker.exists()


def test_an_unreadable_file_is_a_usage_error(redis_server: RedisServer, tmp_path: Path) -> None:
    env = lockrun_env(redis_server.url, LOCKRUN_CONFIG=str(tmp_path / "missing.toml"))
    r = run_lockrun("-k", "job", "--", "true", url=redis_server.url, env=env)
    assert r.returncode == 64 and "missing.toml" in r.stderr
