#!/usr/bin/env bash
# A dict that grows: what the requests pay while a dict's index doubles; and a dict that
# churns: what they pay when the holes deleted keys leave are cleared away, and when its
# entry ring, its oldest entries dropped, grows.
#
# Fills an empty dict with ENTRIES distinct keys (`agora bench -t fill`, 50 clients,
# `-P 16`, 3-byte values) on a fresh server and reports the rate, the p99 and the
# slowest request: every doubling of the dict's index happens during the fill, and a
# doubling done in one go holds up every request waiting on the dict for as long as it
# takes. Then the same for Redis (`redis-benchmark` `HSET` of as many random fields into
# an empty hash, whose table grows incrementally), if `redis-server` is installed.
#
# Churn (`agora bench -t churn`, `-t churn-random` and `-t churn-grow`, 50 clients,
# `-P 16`): a dict of CHURN_ENTRIES keys, made afresh and not timed, then CHURN_SAMPLES
# times a key deleted and a new one inserted (a sample is both): the oldest key (first
# in, first out, as a results dict or a cache of the latest is churned), or one at
# random; or the oldest deleted and two new keys inserted (a backlog that builds up:
# the ring, its front dropped, grows past its room). The rate, p99 and slowest sample:
# a dict that compacts its entries, or moves them as its ring grows, in one go holds
# every request up while it does. The load generator is always $BIN's (the churns are
# new in rounds 46 and 48); the server alternates with BASE_BIN's. Redis has no ordered
# dict to compare.
# One line per run.
#
#   bench/growth.sh                                  # the release build, 2 rounds
#   AGORA_BIN=/path/to/agora bench/growth.sh         # this binary, build nothing
#   BASE_BIN=/path/to/old ROUNDS=3 bench/growth.sh   # alternate two builds
#   ENTRIES=1000000 bench/growth.sh                  # fewer entries (default 10,000,000)
#   CHURN_ENTRIES=0 bench/growth.sh                  # no churn (default 6,000,000 keys,
#                                                    # CHURN_SAMPLES 3,000,000 samples)
#   ENTRIES=0 bench/growth.sh                        # no fill (nor Redis's), churn only
#
# About 20 s (fill) and 130 s (the three churns) per binary and 30 s for Redis per round
# with the defaults; the server holds about 1.5 GiB.
# Loopback TCP only; every process it starts is stopped when it ends. Not part of CI.
# bench/changes.md rounds 45 (the fill), 46–48 (the churns) have what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
agora_bin
bench_scratch agora-growth
ENTRIES=${ENTRIES:-10000000}
ROUNDS=${ROUNDS:-2}
# 6 M keys fill 6 M of a ring (before round 46, a vector) of 8 M entries: within 3 M
# samples it is full of the newest keys and the holes the deleted ones left, and
# compacts once (since round 46, not when those holes are all at the front: `churn`;
# since round 47, step by step). `churn-grow` takes the ring past its 8 M positions
# after 2 M samples, its front 2 M positions on (before round 48, 2 M entries moved).
CHURN_ENTRIES=${CHURN_ENTRIES:-6000000}
CHURN_SAMPLES=${CHURN_SAMPLES:-3000000}

# measure LABEL BINARY: one fill of an empty dict on a fresh server.
measure() {
    local label=$1 bin=$2
    serve_alone "$bin"
    "$bin" bench --address "127.0.0.1:$PORT" --threads 1 -t fill -r "$ENTRIES" -c 50 -P 16 2>&1 |
        awk -v label="$label" '/throughput/ {r=$2} /latency/ {p99=$6; max=$10}
            END {printf "%s | fill %.0f sets/s | p99 %s us | max %s us\n", label, r, p99, max}'
    stop_alone
}

# churn LABEL BINARY TEST: churn (-t TEST) of a big dict on a fresh server of BINARY.
churn() {
    local label=$1 bin=$2 test=$3
    serve_alone "$bin"
    "$BIN" bench --address "127.0.0.1:$PORT" --threads 1 -t "$test" -r "$CHURN_ENTRIES" -n "$CHURN_SAMPLES" \
        -c 50 -P 16 2>&1 |
        awk -v label="$label" -v test="$test" '/throughput/ {r=$2} /latency/ {p99=$6; max=$10}
            END {printf "%s | %s %.0f samples/s | p99 %s us | max %s us\n", label, test, r, p99, max}'
    stop_alone
}

# redis LABEL: the same number of HSETs of random fields into an empty hash.
redis() {
    local port
    port=$(free_port)
    redis-server --port "$port" --save '' --appendonly no --logfile "$DIR/redis.log" &
    local server=$!
    PIDS+=("$server")
    until redis-cli -p "$port" ping > /dev/null 2>&1; do sleep 0.05; done
    # Fields from a keyspace 100× the entries: nearly all distinct (redis-benchmark
    # reads -r as an int).
    local keyspace=$((ENTRIES * 100 < 2000000000 ? ENTRIES * 100 : 2000000000))
    redis-benchmark -p "$port" -c 50 -P 16 -n "$ENTRIES" -r "$keyspace" HSET h __rand_int__ xxx 2>/dev/null |
        tr '\r' '\n' | awk -v label="$1" '
            /throughput summary/ {r=$3}
            /avg +min +p50/ {getline; p99=$5 * 1000; max=$6 * 1000}
            END {printf "%s | HSET %.0f/s | p99 %.0f us | max %.0f us", label, r, p99, max}'
    echo " | fields $(redis-cli -p "$port" hlen h)"
    kill "$server"
    wait "$server" 2>/dev/null || true
}

# measure_both LABEL BINARY: agora's fill, then Redis's after the build measured
# last in the round; then the churns.
measure_both() {
    if [ "$ENTRIES" -gt 0 ]; then
        measure "$1" "$2"
        if [ "$2" = "$BIN" ] && command -v redis-server > /dev/null; then redis "${1} redis"; fi
    fi
    if [ "$CHURN_ENTRIES" -gt 0 ]; then
        churn "$1" "$2" churn
        churn "$1" "$2" churn-random
        churn "$1" "$2" churn-grow
    fi
}

echo "== $ENTRIES entries, $ROUNDS rounds; $("$BIN" --version)"
each_round measure_both
