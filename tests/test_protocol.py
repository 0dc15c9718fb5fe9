"""The Lua protocol against a real redis-server: idempotency, fencing, done records."""

from __future__ import annotations

import time

import pytest
from conftest import RedisServer, history

from lockrun.client import LockClient
from lockrun.errors import RedisUnavailable
from lockrun.protocol import ACQUIRE, Lease, job_keys, new_owner

pytestmark = pytest.mark.usefixtures("transport")  # each test over lockrun.resp and redis-py


def lease(server: RedisServer, key: str, fire: str = "f1", ttl_ms: int = 10_000,
          guard: bool = True, owner: str | None = None) -> Lease:
    client = LockClient(server.url, timeout=2)
    return Lease(client, key=key, fire=fire, ttl_ms=ttl_ms, guard=guard, owner=owner or new_owner(),
                 host="testhost")


def test_only_one_of_many_contenders_wins_a_fire(redis_server: RedisServer, key: str) -> None:
    results = [lease(redis_server, key).acquire() for _ in range(20)]
    assert [r.status for r in results].count("ok") == 1
    assert {r.status for r in results if not r.won} == {"held"}
    assert all(r.holder_host == "testhost" for r in results if not r.won)


def test_acquire_is_idempotent_for_its_own_owner(redis_server: RedisServer, key: str) -> None:
    """A retry after a lost reply must find its own claim, not skip a fire it won."""
    first = lease(redis_server, key)
    keys = job_keys(key, "f1")
    # The script ran on the server but its reply never reached us:
    script_keys, args = first._bind(ACQUIRE, ttl_ms=10_000, local_ms=round(time.time() * 1000),
                                    retention_ms=60_000, fleet_read="1", fleet_by="",
                                    fleet_reason="", tracked="0", attempts=1, delay_ms=0,
                                    elsewhere="1")
    redis_server.client().eval(ACQUIRE.source, len(script_keys), *script_keys, *args)
    retried = first.acquire()
    assert retried.won
    stored = redis_server.client().hget(keys["fire"], "fence")
    assert stored is not None and retried.fence == int(stored)
    assert not lease(redis_server, key).acquire().won


def test_fences_strictly_increase_even_if_the_counter_is_lost(
        redis_server: RedisServer, key: str) -> None:
    fences = []
    for i in range(5):
        held = lease(redis_server, key, fire=f"f{i}")
        fences.append(held.acquire().fence)
        held.release(120_000, 0, "exited")
        if i == 2:
            redis_server.client().delete(job_keys(key, "x")["fence"])
    assert fences == sorted(fences)
    assert len(set(fences)) == 5


def test_release_keeps_a_done_record_for_the_retention(redis_server: RedisServer, key: str) -> None:
    winner = lease(redis_server, key, ttl_ms=5_000)
    assert winner.acquire().won
    assert winner.release(retention_ms=300_000, exit_code=3, outcome="exited").ok
    r = redis_server.client()
    record = r.hgetall(job_keys(key, "f1")["fire"])
    assert record["state"] == "done"
    assert record["exit"] == "3"
    assert int(record["end"]) >= int(record["start"])
    assert 290_000 < r.pttl(job_keys(key, "f1")["fire"]) <= 300_000
    assert not r.exists(job_keys(key, "f1")["running"])
    late = lease(redis_server, key).acquire()
    assert late.status == "done"


def test_release_is_idempotent(redis_server: RedisServer, key: str) -> None:
    winner = lease(redis_server, key)
    winner.acquire()
    assert winner.release(300_000, 0, "exited").ok
    assert winner.release(300_000, 0, "exited").ok
    assert [e["event"] for e in history(redis_server, key)] == ["start", "end"]


def test_renew_sets_the_full_ttl_instead_of_adding(redis_server: RedisServer, key: str) -> None:
    held = lease(redis_server, key, ttl_ms=10_000)
    held.acquire()
    for _ in range(5):
        assert held.renew().ok
    r = redis_server.client()
    assert 9_000 < r.pttl(job_keys(key, "f1")["fire"]) <= 10_000
    assert 9_000 < r.pttl(job_keys(key, "f1")["running"]) <= 10_000


def test_renew_detects_a_claim_taken_by_someone_else(redis_server: RedisServer, key: str) -> None:
    held = lease(redis_server, key)
    held.acquire()
    redis_server.client().hset(job_keys(key, "f1")["fire"], "owner", "intruder")
    renewed = held.renew()
    assert not renewed.ok
    assert "intruder" in renewed.reason
    assert not held.release(300_000, 0, "exited").ok
    events = history(redis_server, key)
    assert [e["event"] for e in events] == ["start", "lost", "end"]
    assert events[-1]["outcome"] == "lost"


def test_renew_detects_an_expired_claim(redis_server: RedisServer, key: str) -> None:
    held = lease(redis_server, key)
    held.acquire()
    redis_server.client().delete(job_keys(key, "f1")["fire"])
    renewed = held.renew()
    assert not renewed.ok and "expired" in renewed.reason


def test_overlap_guard_blocks_the_next_fire_until_release(
        redis_server: RedisServer, key: str) -> None:
    first = lease(redis_server, key, fire="f1")
    assert first.acquire().won
    second = lease(redis_server, key, fire="f2").acquire()
    assert second.status == "overlap"
    assert second.holder_detail == "f1"
    assert lease(redis_server, key, fire="f3", guard=False).acquire().won  # --overlap allow
    first.release(300_000, 0, "exited")
    assert lease(redis_server, key, fire="f2").acquire().won


def test_scripts_survive_a_flushed_script_cache(redis_server: RedisServer, key: str) -> None:
    held = lease(redis_server, key)
    assert held.acquire().won
    redis_server.client().script_flush()
    assert held.renew().ok
    redis_server.client().script_flush()
    assert held.release(300_000, 0, "exited").ok


def test_acquire_retries_a_connection_dropped_mid_call(
        redis_server: RedisServer, key: str) -> None:
    """The connection dies while our script waits (CLIENT PAUSE): we retry, and win."""
    import threading

    held = lease(redis_server, key)
    admin = redis_server.client()
    admin.client_pause(1500, all=False)  # WRITE pause: our script queues, unexecuted
    killed: list[int] = []

    def kill_when_blocked() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not killed:
            for c in admin.client_list():
                if c["cmd"] in ("evalsha", "eval") and c["id"] != str(admin.client_id()):
                    admin.client_kill_filter(_id=c["id"])
                    killed.append(int(c["id"]))
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_when_blocked)
    killer.start()
    try:
        result = held.acquire()
    finally:
        killer.join()
        admin.client_unpause()
    assert killed, "the acquire never blocked, so nothing was tested"
    assert result.won


def test_unreachable_redis_raises_redis_unavailable(tmp_path: object) -> None:
    """The client knows no exit codes: a fire's --error-exit-code is the runner's
    (tests/test_exit_codes.py and test_exit_contract.py check it end to end)."""
    client = LockClient("redis://127.0.0.1:1/0", timeout=1)
    with pytest.raises(RedisUnavailable) as err:
        Lease(client, key="k", fire="f", ttl_ms=1000, guard=True, owner=new_owner(),
              host="h").acquire()
    assert err.value.exit_code == 75 and not err.value.reply_lost
    assert "127.0.0.1:1" in str(err.value)


def test_keys_of_one_job_hash_to_one_cluster_slot() -> None:
    from redis.crc import key_slot

    slots = {key_slot(k.encode()) for k in job_keys("nightly-backup", "2026-01-01T00:00:00Z")
             .values()}
    assert len(slots) == 1


def test_a_skip_costs_one_command_on_the_wire(redis_server: RedisServer, key: str) -> None:
    """No handshake commands: the skip path is a single EVALSHA on a warm script cache."""
    lease(redis_server, key).acquire()  # claims f1 and loads the script
    admin = redis_server.client()
    admin.config_resetstat()
    assert lease(redis_server, key).acquire().status == "held"
    stats = admin.info("commandstats")
    client_calls = {k: v["calls"] for k, v in stats.items()
                    if k.removeprefix("cmdstat_") in ("evalsha", "eval", "hello", "client",
                                                      "select", "ping")}
    assert client_calls == {"cmdstat_evalsha": 1}
