#!/usr/bin/env bash
# A fragmented heap: what the server pays for memory its dict freed in small pieces.
#
# Fills a dict with ENTRIES keys of 64-byte values (`-P 16`), measures 50 clients'
# gets, replaces every value by a 200-byte one (each replaced value leaves a small free
# chunk behind: millions of them), and measures the gets again; meanwhile it counts the
# CPU of the server's memory thread (`agora-memory`, which walks the allocator's free
# lists to sample memory in use and to give memory back). One line per stage.
#
#   bench/fragmented.sh                              # the release build, 2 rounds
#   AGORA_BIN=/path/to/agora bench/fragmented.sh     # this binary, build nothing
#   BASE_BIN=/path/to/old ROUNDS=3 bench/fragmented.sh   # alternate two builds
#   ENTRIES=1000000 bench/fragmented.sh              # fewer entries (default 4,000,000)
#
# About 30 s per binary per round with the defaults; the server holds about 1 GiB.
# Loopback TCP only; every process it starts is stopped when it ends. Not part of CI.
# bench/changes.md round 44 has what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
agora_bin
bench_scratch agora-fragmented
ENTRIES=${ENTRIES:-4000000}
ROUNDS=${ROUNDS:-2}

# measure LABEL BINARY: one round on a fresh server.
measure() {
    local label=$1 bin=$2
    serve_alone "$bin"
    memory_cpu() {
        local task
        for task in /proc/"$SERVER"/task/*; do
            if grep -qx agora-memory "$task/comm"; then awk '{print ($14 + $15) * 10}' "$task/stat"; fi
        done
    }
    bench() { "$bin" bench --address "127.0.0.1:$PORT" --threads 1 -r "$ENTRIES" "$@" 2>&1; }
    rate() { awk '/throughput/ {printf "%.0f", $2}'; }
    gets() { bench -t get -c 50 -n 1000000 | awk '/throughput/ {r=$2} /latency/ {p99=$6; max=$10} END {printf "gets %.0f/s p99 %s us max %s us", r, p99, max}'; }
    local fill replace before after c0 c1 c2 c3
    fill=$(bench -t set -P 16 -n $((ENTRIES * 2)) -d 64 | rate)
    c0=$(memory_cpu); sleep 5; c1=$(memory_cpu)
    before=$(gets)
    replace=$(bench -t set -P 16 -n $((ENTRIES * 2)) -d 200 | rate)
    c2=$(memory_cpu); sleep 5; c3=$(memory_cpu)
    after=$(gets)
    echo "$label | fill $fill sets/s | packed: memory thread $((c1 - c0)) ms per 5 s, $before" \
        "| replace $replace sets/s | fragmented: memory thread $((c3 - c2)) ms per 5 s, $after"
    stop_alone
}

echo "== $ENTRIES entries, $ROUNDS rounds; $("$BIN" --version)"
each_round measure
