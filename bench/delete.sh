#!/usr/bin/env bash
# Deleting a big object: what the other clients wait meanwhile.
#
# Fills a dict (`agora bench -t set`, 50 clients, `-P 16`, KEYS × 3 sets on KEYS random
# keys: about 95 % of them end up distinct) with values of SIZE bytes on a fresh server,
# then starts four clients pinging it (`agora bench -t ping -c 4`) and, 1.5 s in,
# deletes the dict (`agora del`). Reports how long `agora del` took (starting the
# process and connecting included) and the pings' p99 and slowest: a server that frees
# the dict on the thread serving the delete holds every ping behind it up meanwhile.
#
#   bench/delete.sh                                   # the release build, 3 rounds
#   AGORA_BIN=new BASE_BIN=old ROUNDS=3 bench/delete.sh   # two builds, alternated
#   KEYS=4000000 SIZES="3 100" bench/delete.sh        # the defaults
#
# bench/changes.md, round 49, has its results.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
agora_bin
bench_scratch agora-delete
KEYS=${KEYS:-4000000}
SIZES=${SIZES:-3 100}
ROUNDS=${ROUNDS:-3}

delete() {
    local label=$1 bin=$2 size
    for size in $SIZES; do
        serve_alone "$bin"
        local address="127.0.0.1:$PORT"
        "$BIN" bench --address "$address" -c 50 -P 16 -n $((KEYS * 3)) -r "$KEYS" -d "$size" -t set -q > /dev/null
        local keys
        keys=$("$BIN" ls --address "$address" | awk '$1 == "bench:dict" {print $5}')
        "$BIN" bench --address "$address" -c 4 -n 500000 -t ping --json > "$DIR/ping.json" &
        local pings=$!
        PIDS+=("$pings")
        sleep 1.5
        local start end
        start=$(date +%s%N)
        "$BIN" del --address "$address" bench:dict > /dev/null
        end=$(date +%s%N)
        wait "$pings"
        stop_alone
        python3 - "$label" "$size" "$keys" $(((end - start) / 1000000)) "$DIR/ping.json" <<'EOF'
import json, sys
label, size, keys, ms, path = sys.argv[1:]
result = json.load(open(path))["results"][0]
latency = result["latency_us"]
print(f"{label} | {size}-byte values | {int(keys):,} keys | del {ms} ms | pings p99 "
      f"{latency['p99']:.0f} us, slowest {latency['max'] / 1000:.1f} ms")
EOF
    done
}

echo "== a dict of ~$KEYS keys deleted, $ROUNDS rounds; $("$BIN" --version)"
each_round delete
