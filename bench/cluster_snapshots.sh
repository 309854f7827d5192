#!/usr/bin/env bash
# What a cluster's Raft snapshots cost the clients of a big dict: a 3-node agora cluster
# on loopback, a dict of ENTRIES entries (filled with pipelined sets), then a 50 x 1 set
# load on random keys among them, in CHUNKS runs of N requests. Each chunk prints its
# requests/s, p99 and maximum latency (µs), and whether the leader wrote a snapshot
# during it (its raft.snapshot changed). Every process it starts is stopped when it
# ends. Not part of CI.
#
#   bench/cluster_snapshots.sh                                  # 1,000,000 entries, 8 chunks
#   ENTRIES=200000 SNAPSHOT_AFTER_ENTRIES=2000 bench/cluster_snapshots.sh
#   AGORA_BIN=/path/to/agora bench/cluster_snapshots.sh
#
# bench/sections.md (section 11, "Snapshots under load") has a run of it.
set -euo pipefail
cd "$(dirname "$0")/.."

ENTRIES=${ENTRIES:-1000000}
CHUNKS=${CHUNKS:-8}
N=${N:-60000}
. bench/lib.sh
agora_bin
bench_scratch agora-cluster-snapshots

declare -a A_PEER A_CLIENT A_PID
start_agora cluster ${SNAPSHOT_AFTER_ENTRIES:+--snapshot-after-entries "$SNAPSHOT_AFTER_ENTRIES"}
LEADER=${A_CLIENT[$A_LEADER]}
SNAPSHOT="$DIR/cluster/node$A_LEADER/raft.snapshot"
echo "== leader: node $A_LEADER; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $("$BIN" --version)"

"$BIN" bench --address "$LEADER" --raw -c 50 -P 16 -n $((ENTRIES * 3)) -t set -r "$ENTRIES" --json >/dev/null
echo "== filled: about $ENTRIES entries (${ENTRIES}x3 random sets among $ENTRIES keys)"

stamp() { stat -c %Y.%y "$SNAPSHOT" 2>/dev/null || echo none; }
echo "chunk req/s p99_us max_us snapshot"
for chunk in $(seq 1 "$CHUNKS"); do
    before=$(stamp)
    out=$("$BIN" bench --address "$LEADER" --raw -c 50 -P 1 -n "$N" -t set -r "$ENTRIES" --json)
    after=$(stamp)
    python3 - "$chunk" "$out" "$([ "$before" = "$after" ] && echo no || echo yes)" <<'EOF'
import json, sys
chunk, out, snapshot = sys.argv[1:]
row = json.loads(out)["results"][0]
lat = row["latency_us"]
print(f"{chunk:>5} {row['requests_per_sec']:>8,.0f} {lat['p99']:>7,.0f} {lat['max']:>8,.0f} {snapshot}", flush=True)
EOF
done
