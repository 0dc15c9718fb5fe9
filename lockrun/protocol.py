"""The Redis side of a lease: key names, and the Lua scripts that claim, renew and end it.

Every write is a Lua script that compares the caller's owner token, so a
process can never extend or finish a claim that is no longer its own, and a
retried call after a lost reply recognises its own earlier effect. All keys of
one job share the ``{KEY}`` hash tag, so every script touches a single slot.
"""

from __future__ import annotations

import os
import time

from lockrun.errors import PossibleDuplicate, RedisUnavailable
from lockrun.lua import Script
from lockrun.output import redact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from lockrun.client import LockClient
    from lockrun.state import KeptEnd

HISTORY_MAXLEN = 1000
"""Approximate cap of the per-job history stream (``XADD MAXLEN ~``)."""

# The job's state across the fleet, kept beside its history by every script that
# records an end: the last end, how many ended in failure in a row, and the last
# success, so "third failure in a row" and "recovered" are facts even when each
# run was on another server. An end older than the last one recorded (a kept
# end, recorded after Redis came back) changes nothing.
JOB_STATE = """
local function job_state(job_key, fire, host, exit, outcome, end_ms)
  local last = tonumber(redis.call('HGET', job_key, 'last_end_ms') or '0') or 0
  if tonumber(end_ms) < last then
    return
  end
  local failed = outcome ~= 'exited' or exit ~= '0'
  local streak = 0
  if failed then
    streak = (tonumber(redis.call('HGET', job_key, 'failures') or '0') or 0) + 1
  end
  redis.call('HSET', job_key, 'last_fire', fire, 'last_host', host, 'last_exit', exit,
    'last_outcome', outcome, 'last_end_ms', end_ms, 'failures', streak)
  if not failed then
    redis.call('HSET', job_key, 'last_success_ms', end_ms, 'last_success_fire', fire)
  end
end
"""


# A claim of one fire. The fire hash is created with SET-NX-PX semantics (only
# if absent, with a TTL) and later turns into the done record in place. The
# fence is max(previous + 1, server time in microseconds): strictly increasing,
# and still increasing if the counter key is ever lost.
#
# A paused job (its own pause hash, or the fleet's) is not claimed: the fire is
# recorded 'paused' for the retention, once, so every other server skips it
# without writing again and the history says why it did not run. The fleet's
# flag lives outside the job's slot; on Cluster the client reads it first and
# passes what it found (fleet_read 0), elsewhere the script reads it itself.
#
# With --retries (tracked 1) the try hash counts the fire's attempts that ended
# and the hosts that failed them, and names the attempt now running ('' when
# none: HSET, not HDEL, so README's ACL user needs no new command). A fire
# whose attempt failed is a retry ticket (state 'retry'): claimable by any
# server once due, by a server that failed it only after one more delay
# (unless elsewhere is 0). An attempt that started and left neither an end nor
# a give-back crashed (its lease expired with it): the first claim to find it
# counts it as a failed attempt, then treats the fire as a ticket due now.
ACQUIRE = Script(("fire_key", "guard_key", "fence_key", "hist_key", "pause_key",
                  "fleet_pause_key", "try_key", "job_key"),
                 ("owner", "ttl_ms", "guard", "fire", "host", "pid", "maxlen", "local_ms",
                  "retention_ms", "fleet_read", "fleet_by", "fleet_reason", "tracked",
                  "attempts", "delay_ms", "elsewhere"), JOB_STATE + """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if string.find(redis.call('INFO', 'replication'), 'role:slave', 1, true) then
  return {'replica', 0, now_ms, '', '', 0}
end
local function failed_by(list, name)
  return string.find(',' .. list .. ',', ',' .. name .. ',', 1, true) ~= nil
end
local h = redis.call('HMGET', fire_key, 'owner', 'state', 'fence', 'host', 'start', 'by',
  'reason', 'due_ms', 'prefer_ms')
local tr = {false, false, false, false}
if tracked == '1' then
  tr = redis.call('HMGET', try_key, 'done', 'failed', 'running', 'host')
end
local done = tonumber(tr[1]) or 0
local failed = tr[2] or ''
local ticket = h[2] == 'retry'
if not h[1] and not h[2] and tr[3] and tr[3] ~= '' then
  -- the attempt named in the try hash crashed: count it, then it is a ticket due now
  done = done + 1
  if failed == '' then failed = tr[4] else failed = failed .. ',' .. tr[4] end
  redis.call('HSET', try_key, 'done', done, 'failed', failed)
  redis.call('HSET', try_key, 'running', '')
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'end', 'fire', fire,
    'owner', tr[3], 'host', tr[4], 'outcome', 'crashed', 'attempt', done,
    'found_by', host)
  local stamp = string.format('%.0f', now_ms)
  if done >= tonumber(attempts) then
    redis.call('HSET', fire_key, 'owner', tr[3], 'state', 'done', 'host', tr[4],
      'outcome', 'crashed', 'exit', '', 'end', stamp, 'attempt', done)
    redis.call('PEXPIRE', fire_key, retention_ms)
    job_state(job_key, fire, tr[4], '', 'crashed', stamp)
    return {'exhausted', 0, now_ms, tr[4], 'crashed', done}
  end
  local prefer = now_ms
  if elsewhere == '1' then prefer = now_ms + tonumber(delay_ms) end
  redis.call('HSET', fire_key, 'owner', tr[3], 'state', 'retry', 'host', tr[4],
    'outcome', 'crashed', 'exit', '', 'end', stamp, 'attempt', done,
    'due_ms', stamp, 'prefer_ms', string.format('%.0f', prefer))
  redis.call('PEXPIRE', fire_key, retention_ms)
  h = {tr[3], 'retry', false, tr[4], false, false, false, stamp,
       string.format('%.0f', prefer)}
  ticket = true
end
if ticket then
  if now_ms < (tonumber(h[8]) or 0) then
    return {'retry-wait', 0, now_ms, h[4] or '', h[8], done}
  end
  if elsewhere == '1' and now_ms < (tonumber(h[9]) or 0) and failed_by(failed, host) then
    return {'retry-elsewhere', 0, now_ms, failed, h[9], done}
  end
elseif h[1] then
  if h[1] == owner and h[2] == 'running' then
    return {'ok', tonumber(h[3]), now_ms, '', '', done}
  end
  local why = 'held'
  if h[2] == 'done' then why = 'done' end
  return {why, tonumber(h[3]) or 0, now_ms, h[4] or '', h[5] or '', done}
elseif h[2] == 'paused' then
  return {'paused', 0, now_ms, h[6] or '', h[7] or '', 0}
end
local p = redis.call('HMGET', pause_key, 'by', 'reason')
local scope = 'job'
if not p[1] then
  scope = 'all'
  if fleet_read == '1' then
    p = redis.call('HMGET', fleet_pause_key, 'by', 'reason')
  elseif fleet_by ~= '' then
    p = {fleet_by, fleet_reason}
  end
end
if p[1] and ticket then  -- the retry waits for the resume (within the grace)
  return {'paused', 0, now_ms, p[1], p[2] or '', done}
end
if p[1] then
  redis.call('HSET', fire_key, 'state', 'paused', 'outcome', 'paused', 'by', p[1],
    'reason', p[2] or '', 'scope', scope, 'host', host, 'pid', pid)
  redis.call('PEXPIRE', fire_key, retention_ms)
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'skip', 'fire', fire,
    'owner', owner, 'host', host, 'pid', pid, 'reason', 'paused', 'by', p[1],
    'why', p[2] or '', 'scope', scope)
  return {'paused', 0, now_ms, p[1], p[2] or '', 0}
end
if guard == '1' then
  local g = redis.call('HMGET', guard_key, 'owner', 'fence', 'host', 'fire')
  if g[1] and g[1] ~= owner then
    return {'overlap', tonumber(g[2]) or 0, now_ms, g[3] or '', g[4] or '', done}
  end
end
local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', fence_key) or '0') or 0
if fence <= last then fence = last + 1 end
local f = string.format('%.0f', fence)
local start = string.format('%.0f', now_ms)
local attempt = done + 1
redis.call('SET', fence_key, f)
if ticket then redis.call('DEL', fire_key) end
redis.call('HSET', fire_key, 'owner', owner, 'state', 'running', 'fence', f,
  'host', host, 'pid', pid, 'start', start, 'attempt', attempt)
redis.call('PEXPIRE', fire_key, ttl_ms)
if tracked == '1' then
  redis.call('HSET', try_key, 'done', done, 'failed', failed, 'running', owner, 'host', host)
  redis.call('PEXPIRE', try_key, retention_ms)
end
if guard == '1' then
  redis.call('HSET', guard_key, 'owner', owner, 'fence', f, 'host', host,
    'pid', pid, 'fire', fire, 'start', start)
  redis.call('PEXPIRE', guard_key, ttl_ms)
end
local skew = string.format('%.0f', tonumber(local_ms) - now_ms)
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'start',
  'fire', fire, 'owner', owner, 'host', host, 'pid', pid, 'fence', f,
  'skew_ms', skew, 'attempt', attempt)
return {'ok', fence, now_ms, '', '', attempt}
""")

# A scheduled fire that this server reached after its grace. Recorded once, so
# "which fires ran nowhere" can be answered from the history; a server still
# within the grace (its clock behind ours) may claim over this record. A retry
# ticket still waiting at that point ends the fire with its last attempt's
# failure (reply 2), once: the job's state and the fleet's notification need
# that end.
MISS = Script(("fire_key", "hist_key", "job_key"),
              ("owner", "retention_ms", "fire", "host", "pid", "maxlen", "late_ms"),
              JOB_STATE + """
local h = redis.call('HMGET', fire_key, 'state', 'host', 'exit', 'outcome', 'attempt')
if h[1] == 'retry' then
  local t = redis.call('TIME')
  local stamp = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', fire_key, 'state', 'done', 'reason', 'retry-too-late')
  redis.call('PEXPIRE', fire_key, retention_ms)
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'skip', 'fire', fire,
    'owner', owner, 'host', host, 'pid', pid, 'reason', 'retry-too-late', 'late_ms', late_ms)
  job_state(job_key, fire, h[2] or '', h[3] or '', h[4] or 'exited', stamp)
  return {2, h[2] or '', h[3] or '', h[4] or '', tonumber(h[5]) or 1}
end
if h[1] then
  return {0, '', '', '', 0}
end
redis.call('HSET', fire_key, 'state', 'missed', 'outcome', 'too-late', 'host', host, 'pid', pid)
redis.call('PEXPIRE', fire_key, retention_ms)
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'skip', 'fire', fire,
  'owner', owner, 'host', host, 'pid', pid, 'reason', 'too-late', 'late_ms', late_ms)
return {1, '', '', '', 0}
""")

# Sets (never adds) the full TTL on both keys, only while they are still ours.
# The first renewal that finds the claim gone records a 'lost' event.
RENEW = Script(("fire_key", "guard_key", "hist_key"),
               ("owner", "ttl_ms", "guard", "fire", "host", "pid", "maxlen"), """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if string.find(redis.call('INFO', 'replication'), 'role:slave', 1, true) then
  return {'replica', now_ms, ''}
end
local h = redis.call('HMGET', fire_key, 'owner', 'state', 'cancel_by')
local reason = ''
if h[1] == owner and h[2] == 'running' then
  redis.call('PEXPIRE', fire_key, ttl_ms)
  if guard == '1' then
    if redis.call('HGET', guard_key, 'owner') == owner then
      redis.call('PEXPIRE', guard_key, ttl_ms)
    else
      reason = 'the overlap guard was taken or deleted'
    end
  end
elseif h[1] then
  reason = 'the fire was claimed by ' .. h[1]
else
  reason = 'the claim expired in Redis'
end
if reason ~= '' then
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'lost',
    'fire', fire, 'owner', owner, 'host', host, 'pid', pid, 'reason', reason)
  return {'lost', now_ms, reason}
end
if h[3] then
  return {'cancel', now_ms, h[3]}
end
return {'ok', now_ms, ''}
""")



# Turns our claim into the done record kept for the retention period: a late
# server that arrives after we finished must find it and skip. The overlap
# guard is compare-and-deleted. A second call (retry after a lost reply) finds
# the record already done and changes nothing. Like the acquire and the renewal,
# it refuses a replica: a demoted primary (or one with replica-read-only no)
# would accept the record and lose it.
#
# A failed attempt with retries left (retry_ms > 0) becomes a retry ticket
# instead: due retry_ms after now, preferring other servers for prefer_ms more,
# unless it would be due after left_ms from now (what is left of the grace, by
# the local clock that fixed the fire; -1: no bound), when it is the end.
# The job's state changes only at the fire's real end; the reply carries the
# failures in a row before this end, so "recovered" is decided here, once.
RELEASE = Script(("fire_key", "guard_key", "hist_key", "job_key", "try_key"),
                 ("owner", "retention_ms", "guard", "fire", "host", "pid", "maxlen", "exit",
                  "outcome", "retry_ms", "prefer_ms", "left_ms"), JOB_STATE + """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if string.find(redis.call('INFO', 'replication'), 'role:slave', 1, true) then
  return {'replica', now_ms, 0, 0}
end
local finish = string.format('%.0f', now_ms)
if guard == '1' and redis.call('HGET', guard_key, 'owner') == owner then
  redis.call('DEL', guard_key)
end
local before = tonumber(redis.call('HGET', job_key, 'failures') or '0') or 0
local h = redis.call('HMGET', fire_key, 'owner', 'state', 'fence', 'cancel_by', 'attempt',
  'due_ms')
if h[1] == owner then
  if h[2] == 'done' then
    return {'ok', now_ms, before, 0}
  end
  if h[2] == 'retry' then
    return {'retry', now_ms, before, tonumber(h[6]) or 0}
  end
  local due = 0
  if tonumber(retry_ms) > 0 then
    due = now_ms + tonumber(retry_ms)
    if tonumber(left_ms) >= 0 and due > now_ms + tonumber(left_ms) then due = 0 end
  end
  local failed_host = outcome ~= 'exited' or exit ~= '0'
  local tr = redis.call('HMGET', try_key, 'running', 'failed')
  if tr[1] == owner then
    local failed = tr[2] or ''
    if failed_host then
      if failed == '' then failed = host else failed = failed .. ',' .. host end
    end
    redis.call('HSET', try_key, 'done', tonumber(h[5]) or 1, 'failed', failed)
    redis.call('HSET', try_key, 'running', '')
    redis.call('PEXPIRE', try_key, retention_ms)
  end
  local state = 'done'
  local extra = {}
  if due > 0 then
    state = 'retry'
    local d = string.format('%.0f', due)
    local p = string.format('%.0f', due + tonumber(prefer_ms))
    redis.call('HSET', fire_key, 'due_ms', d, 'prefer_ms', p)
    extra = {'retry_due_ms', d}
  end
  redis.call('HSET', fire_key, 'state', state, 'end', finish, 'exit', exit,
    'outcome', outcome)
  redis.call('PEXPIRE', fire_key, retention_ms)
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'end',
    'fire', fire, 'owner', owner, 'host', host, 'pid', pid,
    'fence', h[3], 'exit', exit, 'outcome', outcome, 'by', h[4] or '',
    'attempt', h[5] or '1', unpack(extra))
  if due > 0 then
    return {'retry', now_ms, before, due}
  end
  job_state(job_key, fire, host, exit, outcome, finish)
  return {'ok', now_ms, before, 0}
end
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'end',
  'fire', fire, 'owner', owner, 'host', host, 'pid', pid,
  'exit', exit, 'outcome', 'lost')
job_state(job_key, fire, host, exit, 'lost', finish)
return {'lost', now_ms, before, 0}
""")


# Gives back a claim this server must not act on (a stop signal before the job
# started, too few replicas, an acquire whose reply was lost, a command that
# could not be executed): the fire is left unclaimed, not done, so another
# server or a later tick may still run it. Only a running claim that is still
# ours is removed, and only then is the give-back written to the history, so
# a give-back after a lost reply that never claimed leaves no trace.
ABANDON = Script(("fire_key", "guard_key", "hist_key", "try_key"),
                 ("owner", "guard", "fire", "host", "pid", "maxlen", "reason"), """
local h = redis.call('HMGET', fire_key, 'owner', 'state')
if h[1] ~= owner or h[2] ~= 'running' then
  return {0}
end
redis.call('DEL', fire_key)
if redis.call('HGET', try_key, 'running') == owner then
  -- not an attempt that crashed: none started. A claimed retry given back is claimed
  -- again by the next tick (the try hash still counts the attempts before it).
  redis.call('HSET', try_key, 'running', '')
end
if guard == '1' and redis.call('HGET', guard_key, 'owner') == owner then
  redis.call('DEL', guard_key)
end
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'abandon',
  'fire', fire, 'owner', owner, 'host', host, 'pid', pid, 'reason', reason)
return {1}
""")


# Asks the server that runs a fire to stop it: its next renewal (within ttl/3)
# finds the request, stops the job's tree as --on-lost kill does and records the
# end as 'cancelled'. Only a running claim can be cancelled; the request and who
# made it are in the history at once.
CANCEL = Script(("fire_key", "hist_key"), ("fire", "by", "maxlen"), """
local h = redis.call('HMGET', fire_key, 'owner', 'state', 'host', 'cancel_by')
if h[2] ~= 'running' then
  return {'none', '', ''}
end
if not h[4] then
  redis.call('HSET', fire_key, 'cancel_by', by)
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'cancel', 'fire', fire,
    'owner', h[1], 'host', h[3] or '', 'by', by)
end
return {'ok', h[3] or '', h[4] or by}
""")


def request_cancel(client: LockClient, key: str, fire: str, by: str,
                   prefix: str = "lockrun") -> tuple[bool, str]:
    """Ask the holder of *fire* to stop it: (whether it is running, on which host)."""
    k = job_keys(key, fire, prefix)
    r = client.call(CANCEL.source, *CANCEL.bind(  # one attempt: an operator asks again
        {"fire_key": k["fire"], "hist_key": k["hist"]}, fire=fire, by=by,
        maxlen=HISTORY_MAXLEN))
    return r[0] == "ok", str(r[1])


# --retry-local: an attempt of a fire this server still holds ended in failure
# (phase 'end': counted, and in the history with when the next one is due), or
# the next attempt starts (phase 'start': a start event, so the history shows
# each attempt). Only while the claim is ours; one attempt, as a renewal.
ATTEMPT = Script(("fire_key", "hist_key", "try_key"),
                 ("owner", "fire", "host", "pid", "maxlen", "phase", "attempt", "exit",
                  "outcome", "retry_ms"), """
local h = redis.call('HMGET', fire_key, 'owner', 'state', 'fence')
if h[1] ~= owner or h[2] ~= 'running' then
  return {0}
end
if phase == 'end' then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local failed = redis.call('HGET', try_key, 'failed') or ''
  if failed == '' then failed = host else failed = failed .. ',' .. host end
  redis.call('HSET', try_key, 'done', attempt, 'failed', failed)
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'end', 'fire', fire,
    'owner', owner, 'host', host, 'pid', pid, 'fence', h[3], 'exit', exit,
    'outcome', outcome, 'attempt', attempt,
    'retry_due_ms', string.format('%.0f', now_ms + tonumber(retry_ms)))
else
  redis.call('HSET', fire_key, 'attempt', attempt)
  redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'start', 'fire', fire,
    'owner', owner, 'host', host, 'pid', pid, 'fence', h[3], 'attempt', attempt)
end
return {1}
""")


# A run that passed --warn-after: a note beside its start, for history and check.
SLOW = Script(("hist_key",), ("owner", "fire", "host", "pid", "maxlen", "elapsed_ms"), """
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'slow', 'fire', fire,
  'owner', owner, 'host', host, 'pid', pid, 'elapsed_ms', elapsed_ms)
return {1}
""")


# The end was written, but lockrun cannot be sure it stays where the next server
# looks (a failover under way): said in the history, next to the 'end' event.
DOUBT = Script(("hist_key",), ("owner", "fire", "host", "pid", "maxlen", "reason"), """
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'possible-duplicate',
  'fire', fire, 'owner', owner, 'host', host, 'pid', pid, 'reason', reason)
return {1}
""")


FLEET_TAG = "=fleet"
"""The hash tag of the fleet-wide keys: '=' is no job key's character, so no job's keys
can share their names."""


def job_keys(key: str, fire: str, prefix: str = "lockrun") -> dict[str, str]:
    """Names of every Redis key of one fire; ``{key}`` is the Cluster hash tag."""
    base = f"{prefix}:{{{key}}}"
    return {
        "fire": f"{base}:fire:{fire}",
        "running": f"{base}:running",
        "fence": f"{base}:fence",
        "hist": f"{base}:hist",
        "pause": f"{base}:pause",
        "job": f"{base}:job",
        "try": f"{base}:try:{fire}",
        "out": f"{base}:out:{fire}",
    }


def fleet_keys(prefix: str = "lockrun") -> dict[str, str]:
    """The fleet-wide pause flag and its audit trail: the only keys outside a job's slot."""
    base = f"{prefix}:{{{FLEET_TAG}}}"
    return {"pause": f"{base}:pause", "hist": f"{base}:hist"}


def whole(reply: object) -> int:
    """A script's integer, as either transport returns it (Lua numbers arrive as RESP
    integers; a string of digits is taken too)."""
    if isinstance(reply, int):
        return reply
    return int(str(reply))


def host_name() -> str:
    """This server's name as gethostname(2) gives it, without importing socket (os.uname's
    nodename is the same string)."""
    return os.uname().nodename


def new_owner() -> str:
    """128 random bits, plus host and pid so a human can tell who holds a lock."""
    # os.urandom is what secrets.token_hex reads, without secrets' imports (base64, hmac,
    # random) on every fire
    return f"{os.urandom(16).hex()}@{host_name()}:{os.getpid()}"


class Acquired:
    """Outcome of an acquire: ``won`` or the reason this server skips."""

    __slots__ = ("attempt", "fence", "holder_detail", "holder_host", "server_ms", "status")

    def __init__(self, status: str, fence: int, server_ms: int, holder_host: str = "",
                 holder_detail: str = "", attempt: int = 1) -> None:
        self.status: Final = status
        """ok | held | done | overlap | paused | replica | retry-wait | retry-elsewhere |
        exhausted (an attempt crashed, and it was the last allowed)"""
        self.fence: Final = fence
        self.server_ms: Final = server_ms
        self.holder_host: Final = holder_host
        self.holder_detail: Final = holder_detail
        self.attempt: Final = attempt
        """Won: which attempt of the fire this is (1 unless retried). Otherwise the
        attempts that have ended."""

    @property
    def won(self) -> bool:
        return self.status == "ok"


class Released:
    """What the release recorded: the end, a retry ticket, or nothing (the claim was lost)."""

    __slots__ = ("failures_before", "ok", "retry_due_ms")

    def __init__(self, ok: bool, failures_before: int = 0, retry_due_ms: int = 0) -> None:
        self.ok: Final = ok
        self.failures_before: Final = failures_before
        """Fires of the job that failed in a row before this end, whichever servers ran
        them: a success after some is a recovery."""
        self.retry_due_ms: Final = retry_due_ms
        """Not 0: the fire is a retry ticket, due at this Redis time; not the end."""

    def __bool__(self) -> bool:
        """release() returned a bool before retries; an `if lease.release(...)` left over
        would now always be true, so it fails loudly instead."""
        raise TypeError("a Released is not a truth value: use .ok")


class Renewed:
    __slots__ = ("cancel_by", "ok", "reason", "server_ms")

    def __init__(self, ok: bool, server_ms: int, reason: str = "", cancel_by: str = "") -> None:
        self.ok: Final = ok
        self.server_ms: Final = server_ms
        self.reason: Final = reason
        self.cancel_by: Final = cancel_by
        """Renewed, and someone (user@host, or the fire that replaces this one) asked that
        the job be stopped."""


class Lease:
    """One server's claim on one fire, from acquire to release."""

    __slots__ = ("attempt", "attempts", "client", "elsewhere", "fence", "fire", "guard", "host",
                 "key", "owner", "prefix", "retry_delay_ms", "ttl_ms")

    def __init__(self, client: LockClient, *, key: str, fire: str, ttl_ms: int, guard: bool,
                 owner: str, host: str, prefix: str = "lockrun", attempts: int = 1,
                 retry_delay_ms: int = 0, elsewhere: bool = True) -> None:
        self.client: Final = client
        self.key: Final = key
        self.fire: Final = fire
        self.ttl_ms: Final = ttl_ms
        self.guard: Final = guard
        self.owner: Final = owner
        self.host: Final = host
        self.prefix: Final = prefix
        self.attempts: Final = attempts
        """How many attempts a fire may have (--retries + 1); above 1 the try hash counts
        them."""
        self.retry_delay_ms: Final = retry_delay_ms
        self.elsewhere: Final = elsewhere
        self.fence = 0
        """Set by a won acquire: what the job gets as LOCKRUN_FENCE."""
        self.attempt = 1
        """Set by a won acquire, raised by --retry-local: which attempt of the fire runs."""

    @property
    def keys(self) -> dict[str, str]:
        return job_keys(self.key, self.fire, self.prefix)

    def _bind(self, script: Script, **args: str | int) -> tuple[list[str], list[str | int]]:
        """*script*'s KEYS and ARGV: this fire's keys and identity, plus *args* by name."""
        k = self.keys
        names = {"fire_key": k["fire"], "guard_key": k["running"], "fence_key": k["fence"],
                 "hist_key": k["hist"], "pause_key": k["pause"], "job_key": k["job"],
                 "try_key": k["try"],
                 "fleet_pause_key": fleet_keys(self.prefix)["pause"]}
        identity: dict[str, str | int] = {
            "owner": self.owner, "guard": "1" if self.guard else "0", "fire": self.fire,
            "host": self.host, "pid": os.getpid(), "maxlen": HISTORY_MAXLEN}
        return script.bind({n: names[n] for n in script.keys},
                           **{n: identity[n] for n in script.args if n in identity}, **args)

    def acquire(self, retention_ms: int = 86_400_000) -> Acquired:
        """Claim the fire, or say why not; *retention_ms* is how long a 'paused' record of
        the fire is kept (the done record's retention)."""
        local_ms = round(time.time() * 1000)
        fleet = {"fleet_read": "1", "fleet_by": "", "fleet_reason": ""}
        if self.client.cluster:  # the fleet's flag is in another slot: read it first
            by, reason = self.client.strings("HMGET", fleet_keys(self.prefix)["pause"], "by",
                                             "reason")
            fleet = {"fleet_read": "0", "fleet_by": str(by or ""),
                     "fleet_reason": str(reason or "")}
        keys, args = self._bind(ACQUIRE, ttl_ms=self.ttl_ms, local_ms=local_ms,
                                retention_ms=retention_ms, tracked=int(self.attempts > 1),
                                attempts=self.attempts, delay_ms=self.retry_delay_ms,
                                elsewhere=int(self.elsewhere), **fleet)
        if self.client.cluster:  # a key of the job's slot in its place (read as unpaused)
            keys[ACQUIRE.keys.index("fleet_pause_key")] = self.keys["pause"]
        r = self.client.call_retrying(ACQUIRE.source, keys, args)
        result = Acquired(str(r[0]), whole(r[1]), whole(r[2]), str(r[3]), str(r[4]),
                          whole(r[5]))
        if result.status == "replica":
            # a replica with replica-read-only no would take the claim, and the
            # primary would never see it: two servers could both win the fire
            raise RedisUnavailable(
                f"Redis at {redact(self.client.url)} is a replica, not a primary: lockrun "
                "claims fires only on a primary (point --redis-url at the primary, or use "
                "redis+sentinel://)")
        if result.won:
            self.fence = result.fence
            self.attempt = result.attempt
        return result

    def renew(self) -> Renewed:
        """One bounded attempt on the primary of the moment; the caller retries until the
        lease's deadline. A replica's answer is an error, not a loss: the claim may
        well be alive on the primary the sentinels are about to name."""
        self.client.follow_primary()
        r = self.client.call(RENEW.source, *self._bind(RENEW, ttl_ms=self.ttl_ms))
        if r[0] == "replica":
            raise RedisUnavailable(
                f"Redis at {redact(self.client.url)} answered as a replica: cannot renew the "
                "lease there")
        if r[0] == "cancel":
            return Renewed(True, whole(r[1]), cancel_by=str(r[2]))
        return Renewed(r[0] == "ok", whole(r[1]), str(r[2]))

    def record_miss(self, retention_ms: int, late_ms: int) -> Missed:
        """Note a scheduled fire skipped as too late, or end a retry that came too late."""
        r = self.client.call_retrying(
            MISS.source, *self._bind(MISS, retention_ms=retention_ms, late_ms=late_ms))
        code = whole(r[0])
        exit_text = str(r[2])
        return Missed(recorded=code == 1, retry_ended=code == 2, host=str(r[1]),
                      exit_code=int(exit_text) if exit_text.lstrip("-").isdigit() else None,
                      outcome=str(r[3]), attempts=whole(r[4]))

    def attempt_ended(self, exit_code: int, outcome: str, retry_ms: int) -> None:
        """--retry-local: this attempt failed and the next is due in *retry_ms* (one try)."""
        self.client.call(ATTEMPT.source, *self._bind(
            ATTEMPT, phase="end", attempt=self.attempt, exit=int(exit_code), outcome=outcome,
            retry_ms=retry_ms))

    def attempt_started(self) -> None:
        """--retry-local: the next attempt starts under the same claim (one try)."""
        self.attempt += 1
        self.client.call(ATTEMPT.source, *self._bind(
            ATTEMPT, phase="start", attempt=self.attempt, exit=0, outcome="", retry_ms=0))

    def record_slow(self, elapsed_ms: int) -> None:
        """Note in the history that the run passed --warn-after (one attempt)."""
        self.client.call(SLOW.source, *self._bind(SLOW, elapsed_ms=elapsed_ms))

    def wait_replicas(self, replicas: int, timeout_ms: int) -> int:
        """How many replicas acknowledged our claim (WAIT counts this connection's writes)."""
        return self.client.wait(self.keys["fire"], replicas, timeout_ms)

    def abandon(self, reason: str) -> bool:
        """Give the claim back unstarted; True if a claim of ours was removed."""
        r = self.client.call_retrying(ABANDON.source, *self._bind(ABANDON, reason=reason))
        return bool(r[0] == 1)

    def release(self, retention_ms: int, exit_code: int, outcome: str, retry_ms: int = 0,
                prefer_ms: int = 0, left_ms: int = -1) -> Released:
        """Record the end of the fire, or a retry ticket when *retry_ms* is not 0; not ok
        when the claim was no longer ours.

        With Sentinel the record must also stay where the next server looks;
        when lockrun cannot be sure of that it raises PossibleDuplicate.
        """
        keys, args = self._bind(RELEASE, retention_ms=retention_ms, exit=int(exit_code),
                                outcome=outcome, retry_ms=retry_ms, prefer_ms=prefer_ms,
                                left_ms=left_ms)
        if self.client.follows_sentinel:
            return self._release_confirmed(keys, args)
        r = self.client.call_retrying(RELEASE.source, keys, args)
        if r[0] == "replica":
            raise RedisUnavailable(
                f"Redis at {redact(self.client.url)} answered as a replica: cannot record "
                "the end there")
        return _released(r)

    def _release_confirmed(self, keys: list[str], args: list[str | int]) -> Released:
        """Write the done record on the primary the sentinels name, then check that it stays.

        Confirmed means: the script found our claim on a server that says it
        is a primary, and the record is on every server that could be the
        primary next: each replica the sentinels expect acknowledged it (WAIT
        in the same session), or was not even connected and says it is a
        primary itself (a replica being promoted before any sentinel names
        it) and got the record too; and the sentinels still name the server
        afterwards. If they name another one, the failover happened meanwhile
        and the record is written there (the claim was replicated to it, or
        the script says it is gone). A bounded number of steps, each within
        the Redis timeout.
        """
        # most of the Redis timeout: the reply must still come within it, and the
        # sentinels get that long to notice a promotion the WAIT has revealed
        wait_ms = max(1, int(self.client.timeout * 800))
        written: list[str] = []
        first = Released(False)  # the first write's reply: what this end recorded
        doubt = ""  # why the record may not stay, other than replicas short
        short, short_text = 0, ""  # expected replicas without the record
        targets: list[tuple[str, int] | None] = [None]  # None: the one the sentinels name
        failures: tuple[type[Exception], ...] = (*self.client.errors, RedisUnavailable)
        for _ in range(RELEASE_STEPS):
            if not targets:
                break
            target = targets.pop(0)
            try:
                with self.client.primary_session(target) as session:
                    where = f"{session.address[0]}:{session.address[1]}"
                    r = session.execute("EVAL", RELEASE.source, len(keys), *keys, *args)
                    if r[0] == "replica" and target is None:  # demoted since the role check
                        doubt = f"{where} turned replica before the end was recorded there"
                        targets = [None]
                        continue
                    if r[0] not in ("ok", "retry"):
                        if not written:
                            return Released(False)
                        doubt = f"the claim was no longer on {where}"
                        break
                    if not written:
                        first = _released(r)
                    written.append(where)
                    if target is not None:  # a silent replica that is a primary: covered
                        short -= 1
                        continue
                    acked = session.replicas_acknowledged(wait_ms)
                    moved = not session.still_primary()
            except failures as exc:
                failure = exc if isinstance(exc, RedisUnavailable) \
                    else self.client.unavailable(exc)
                if not written:
                    raise failure from exc
                if target is not None:
                    continue  # a silent replica that is not a primary: still short
                doubt = f"it could not be confirmed ({failure})"
                break
            if moved:
                doubt = f"the sentinels stopped naming {where} as primary"
                targets = [None]
                continue
            doubt = ""
            short = acked.expected - acked.replicas
            short_text = (f"only {acked.replicas} of {acked.expected} replicas acknowledged "
                          f"it within {wait_ms} ms")
            targets = list(acked.silent)
        if not written:  # every primary we reached had turned replica: nothing recorded
            raise RedisUnavailable(f"cannot record the end: {doubt}")
        if targets and not doubt:
            doubt = "the primary kept changing"
        if short > 0 and not doubt:
            doubt = short_text
        if doubt:
            self._say_possible_duplicate(doubt, written)
        return first

    def _say_possible_duplicate(self, doubt: str, written: list[str]) -> None:
        """History first (best effort, on the primary of the moment), then the one stderr line."""
        reason = f"end recorded on {', '.join(written)}, but {doubt}"
        try:
            self.client.follow_primary()
            self.client.call(DOUBT.source, *self._bind(DOUBT, reason=reason))
        except RedisUnavailable:
            pass  # the line below is the report that matters
        raise PossibleDuplicate(
            f"possible duplicate run of {self.key} fire {self.fire}: its end was recorded on "
            f"{', '.join(written)}, but {doubt} (a failover under way?); a "
            "server that tries this fire after its claim expires may run it again")


def _released(reply: list[object]) -> Released:
    """RELEASE's reply: {'ok'|'retry'|'lost', now_ms, failures before, due_ms}."""
    status = str(reply[0])
    return Released(status in ("ok", "retry"), whole(reply[2]),
                    whole(reply[3]) if status == "retry" else 0)


class Missed:
    """What recording a fire as too late did."""

    __slots__ = ("attempts", "exit_code", "host", "outcome", "recorded", "retry_ended")

    def __init__(self, *, recorded: bool, retry_ended: bool, host: str, exit_code: int | None,
                 outcome: str, attempts: int) -> None:
        self.recorded: Final = recorded
        """This server wrote the fire's 'ran nowhere' record (the first to come too late)."""
        self.retry_ended: Final = retry_ended
        """The fire waited for a retry that no server started within the grace: this server
        ended it with its last attempt's failure (the rest of the fields)."""
        self.host: Final = host
        self.exit_code: Final = exit_code
        self.outcome: Final = outcome
        self.attempts: Final = attempts

    def __bool__(self) -> bool:
        """record_miss() returned a bool before retries: see Released.__bool__."""
        raise TypeError("a Missed is not a truth value: use .recorded or .retry_ended")


RELEASE_STEPS = 6
"""Servers the release writes to before it says it cannot be sure: the named primary, the
silent replicas that turned primary, the primary named after a failover, and again."""


# The end of a job that finished while Redis was unusable, recorded by the next
# lockrun on that server that reaches Redis. The claim may still be ours, may
# have expired (nothing there, or a too-late record), or may belong to a server
# that ran the fire again after it expired: only in the first two cases does
# the fire become done, so a late server still skips it; the history gets the
# real outcome and end time in every case, instead of a start without an end.
KEPT_END = Script(("fire_key", "guard_key", "hist_key", "job_key"),
                  ("owner", "retention_ms", "guard", "fire", "host", "pid", "maxlen", "exit",
                   "outcome", "end_ms", "fence"), JOB_STATE + """
if string.find(redis.call('INFO', 'replication'), 'role:slave', 1, true) then
  return {'replica'}
end
if guard == '1' and redis.call('HGET', guard_key, 'owner') == owner then
  redis.call('DEL', guard_key)
end
local h = redis.call('HMGET', fire_key, 'owner', 'state')
if h[1] == owner and h[2] == 'done' then
  return {'already'}
end
local result = 'history'
if (h[1] == owner and h[2] == 'running') or not h[1] then
  result = 'recorded'
  if tonumber(retention_ms) > 0 then
    redis.call('HSET', fire_key, 'owner', owner, 'state', 'done', 'fence', fence,
      'host', host, 'end', end_ms, 'exit', exit, 'outcome', outcome, 'late', '1')
    redis.call('PEXPIRE', fire_key, retention_ms)
  end
end
redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, '*', 'event', 'end',
  'fire', fire, 'owner', owner, 'host', host, 'pid', pid, 'fence', fence,
  'exit', exit, 'outcome', outcome, 'end_ms', end_ms, 'late', '1')
job_state(job_key, fire, host, exit, outcome, end_ms)
return {result}
""")


def record_kept_end(client: LockClient, end: KeptEnd) -> str:
    """Record an end kept on this server: 'recorded', 'history' (only) or 'already'."""
    k = job_keys(end.key, end.fire, end.prefix)
    left_ms = int((end.ended_at + end.retention_s - time.time()) * 1000)
    r = client.call_retrying(KEPT_END.source, *KEPT_END.bind(
        {"fire_key": k["fire"], "guard_key": k["running"], "hist_key": k["hist"],
         "job_key": k["job"]},
        owner=end.owner, retention_ms=max(0, left_ms), guard="1" if end.guard else "0",
        fire=end.fire, host=end.host, pid=os.getpid(), maxlen=HISTORY_MAXLEN,
        exit=int(end.exit_code), outcome=end.outcome, end_ms=round(end.ended_at * 1000),
        fence=end.fence))
    if r[0] == "replica":
        raise RedisUnavailable(
            f"Redis at {redact(client.url)} answered as a replica: cannot record a kept end "
            "there")
    return str(r[0])
