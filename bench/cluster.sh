#!/usr/bin/env bash
# A 3-node agora cluster against one durable agora node (--fsync always), same client,
# same operations, interleaved rounds. Loopback only; every process it starts is
# stopped when it ends. Not part of CI.
#
#   bench/cluster.sh                  # 3 rounds
#   ROUNDS=5 bench/cluster.sh
#   AGORA_BIN=/path/to/agora bench/cluster.sh
#   PEER_TLS=1 bench/cluster.sh       # also a cluster whose peer link is TLS (needs openssl)
#
# Prints one line per (round, target, test) with requests/s and p50/p99 (µs), then the
# medians. What a cluster write costs over a single durable node: one replication round
# trip and a follower's fsync, on top of the leader's own fsync.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
. bench/lib.sh
agora_bin
bench_scratch agora-cluster-bench

# The single durable node.
SINGLE=127.0.0.1:$(free_port)
"$BIN" serve --listen "$SINGLE" --data-dir "$DIR/single" --fsync always --log-level warn &
PIDS+=($!)

# The cluster.
declare -a A_PEER A_CLIENT A_PID
start_agora cluster
leader=$A_LEADER
follower=$(( leader % 3 + 1 ))
LEADER=${A_CLIENT[$leader]}
VIA_FOLLOWER=${A_CLIENT[$follower]}
echo "== leader: node $leader; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $("$BIN" --version)"

# The same cluster with TLS on its peer link.
if [ "${PEER_TLS:-0}" = 1 ]; then
    peer_tls_files
    export AGORA_PEER_TLS_CA="$DIR/ca.pem"
    start_agora cluster-tls "${PEER_TLS_FLAGS[@]}"
    TLS_LEADER=${A_CLIENT[$A_LEADER]}
    TLS_VIA_FOLLOWER=${A_CLIENT[$(( A_LEADER % 3 + 1 ))]}
    echo "== peer-TLS cluster: leader node $A_LEADER"
fi

run() { # target address clients pipeline test
    local out
    out=$("$BIN" bench --address "$2" -c "$3" -P "$4" -n "$5" -t "$6" -r 10000 --threads 1 --json 2>/dev/null)
    python3 - "$1" "$3" "$4" "$6" "$out" <<'EOF'
import json, sys
target, clients, pipeline, test, out = sys.argv[1:]
row = json.loads(out)["results"][0]
lat = row["latency_us"]
print(f"ROW {target} {clients}x{pipeline} {test} {row['requests_per_sec']:.0f} {lat['p50']:.0f} {lat['p99']:.0f}", flush=True)
EOF
}

for round in $(seq 1 "$ROUNDS"); do
    for shape in "1 1 2000" "50 1 20000" "50 16 100000"; do
        set -- $shape
        for test in set get; do
            run single "$SINGLE" "$1" "$2" "$3" "$test"
            run leader "$LEADER" "$1" "$2" "$3" "$test"
            run via-follower "$VIA_FOLLOWER" "$1" "$2" "$3" "$test"
            if [ -n "${TLS_LEADER:-}" ]; then
                run tls-leader "$TLS_LEADER" "$1" "$2" "$3" "$test"
                run tls-via-follower "$TLS_VIA_FOLLOWER" "$1" "$2" "$3" "$test"
            fi
        done
    done
done | tee "$DIR/rows"

echo
echo "medians over $ROUNDS rounds: target shape test req/s p50_us p99_us"
python3 - "$DIR/rows" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("ROW "):
        continue
    _, target, shape, test, rps, p50, p99 = line.split()
    rows.setdefault((shape, test, target), []).append((float(rps), float(p50), float(p99)))
for (shape, test, target), values in sorted(rows.items()):
    med = [statistics.median(v[i] for v in values) for i in range(3)]
    print(f"{shape:>6} {test:<4} {target:<17} {med[0]:>10,.0f} {med[1]:>9,.0f} {med[2]:>9,.0f}")
EOF
