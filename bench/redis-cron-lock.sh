#!/bin/bash
# A Redis cron-lock shell wrapper, the kind operators write instead of installing
# lockrun: lockrun's benchmark measures it as a peer (bench/bench.py), so it is
# written the lean way such a wrapper would be, not crippled to make lockrun look good.
#
#   REDIS_CLI_OPTS="-s /run/redis.sock" redis-cron-lock.sh KEY TTL_MS COMMAND [ARG]...
#
# SET KEY TOKEN NX PX TTL_MS: when another server holds KEY, exit 0 without running
# (the skip). Otherwise run COMMAND, then delete KEY only if it still holds our
# token (compare-and-delete in one EVAL, so a lock that expired and was taken by
# another server is not released), and exit with COMMAND's status. Exit 75 when
# Redis cannot be used. REDIS_CLI_OPTS is word-split into redis-cli's connection
# options; a password goes in REDISCLI_AUTH, where redis-cli reads it.
#
# What it does not do, and lockrun does: renew the lock while COMMAND runs, record
# the fire as done (a late server would run it again after TTL_MS), forward signals.

set -u

if [ $# -lt 3 ]; then
    echo "usage: redis-cron-lock.sh KEY TTL_MS COMMAND [ARG]..." >&2
    exit 2
fi
key=$1
ttl_ms=$2
shift 2

# $HOSTNAME, $$ and $EPOCHREALTIME are bash's own: no fork to build the token.
token="$HOSTNAME:$$:$EPOCHREALTIME:$RANDOM"

# shellcheck disable=SC2086  # REDIS_CLI_OPTS is split into options on purpose
if ! reply=$(redis-cli ${REDIS_CLI_OPTS:-} SET "$key" "$token" NX PX "$ttl_ms" 2>&1); then
    echo "redis-cron-lock: $key: Redis unavailable: $reply" >&2
    exit 75
fi
case $reply in
    OK) ;;
    "") exit 0 ;;  # held by another server: skip (redis-cli prints nil as an empty line)
    *)
        echo "redis-cron-lock: $key: $reply" >&2
        exit 75
        ;;
esac

"$@"
status=$?

release="if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"
# shellcheck disable=SC2086
if ! reply=$(redis-cli ${REDIS_CLI_OPTS:-} EVAL "$release" 1 "$key" "$token" 2>&1) \
        || [ "$reply" != 1 ]; then
    echo "redis-cron-lock: $key: lock not released (expired or taken): $reply" >&2
fi
exit "$status"
