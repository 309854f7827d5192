#!/usr/bin/env bash
# A 3-node agora cluster against a 3-node etcd cluster: the same operations from the same
# Rust client program (bench/etcd, agora-etcd-bench), interleaved rounds, then the
# failover time of each. Loopback only; every process it starts is stopped when it ends.
# Not part of CI.
#
#   bench/etcd.sh                     # 3 rounds, 3 failover rounds per system
#   ROUNDS=5 FAILOVER_ROUNDS=5 bench/etcd.sh
#   AGORA_BIN=/path/to/agora BENCH_BIN=/path/to/agora-etcd-bench bench/etcd.sh
#
# Both systems run with their defaults: both fsync their log before acknowledging a write
# (etcd fsyncs its WAL on every commit unless --unsafe-no-fsync), both answer reads
# linearizably (etcd: ReadIndex; agora: through the log), etcd with heartbeat 100 ms and
# election timeout 1000 ms. Every row talks to the leader only: a follower of either
# system forwards what it cannot answer itself to the leader, which adds a hop.
#
# Prints one line per (round, target, shape, test) -
#   ROW target clients×in-flight test req/s p50_us p99_us ok/total errors fencing-violations
# - then the medians, then each failover round and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-3}

if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q etcd-server etcd-client protobuf-compiler >/dev/null
    else
        echo "needs etcd, etcdctl and protoc: apt-get install etcd-server etcd-client protobuf-compiler (as root)" >&2
        exit 1
    fi
fi

. bench/lib.sh
agora_bin
BENCH=${BENCH_BIN:-}
if [ -z "$BENCH" ]; then
    cargo build --release --quiet --manifest-path bench/etcd/Cargo.toml
    BENCH=${CARGO_TARGET_DIR:-bench/etcd/target}/release/agora-etcd-bench
fi

bench_scratch agora-etcd-bench

# start_etcd NAME: a fresh 3-node etcd cluster in $DIR/NAME, etcd's default timeouts;
# sets E_CLIENT, E_PID (indexed 1-3) and E_LEADER.
start_etcd() {
    local initial="" i endpoints
    for i in 1 2 3; do
        E_PEER[$i]=127.0.0.1:$(free_port)
        E_CLIENT[$i]=127.0.0.1:$(free_port)
        initial="${initial:+$initial,}e$i=http://${E_PEER[$i]}"
    done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$DIR/$1/e$i" \
            --listen-client-urls "http://${E_CLIENT[$i]}" --advertise-client-urls "http://${E_CLIENT[$i]}" \
            --listen-peer-urls "http://${E_PEER[$i]}" --initial-advertise-peer-urls "http://${E_PEER[$i]}" \
            --initial-cluster "$initial" --initial-cluster-token "$1" --initial-cluster-state new \
            --logger zap --log-level warn >>"$DIR/etcd.log" 2>&1 &
        E_PID[$i]=$!
        PIDS+=($!)
    done
    endpoints="${E_CLIENT[1]},${E_CLIENT[2]},${E_CLIENT[3]}"
    E_LEADER=""
    for _ in $(seq 1 100); do
        E_LEADER=$(ETCDCTL_API=3 etcdctl --endpoints="$endpoints" endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
members = json.load(sys.stdin)
for n, m in enumerate(members, 1):
    if m["Status"]["leader"] and m["Status"]["leader"] == m["Status"]["header"]["member_id"]:
        print(n)
' 2>/dev/null || true)
        [ -n "$E_LEADER" ] && break
        sleep 0.1
    done
    [ -n "$E_LEADER" ] || { echo "etcd: no leader" >&2; exit 1; }
}

# stop_cluster PID...: SIGKILL and reap (the failover rounds throw clusters away).
stop_cluster() {
    local pid
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "$@"; do { wait "$pid"; } 2>/dev/null || true; done
}

declare -a A_PEER A_CLIENT A_PID E_PEER E_CLIENT E_PID
start_agora agora
start_etcd etcd
AGORA=${A_CLIENT[$A_LEADER]}
ETCD=${E_CLIENT[$E_LEADER]}
echo "== $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $("$BIN" --version); $(etcd --version | head -1)"
echo "== agora leader: node $A_LEADER ($AGORA); etcd leader: member $E_LEADER ($ETCD)"

run() { # target address clients in-flight requests test
    "$BENCH" run --target "$1" --address "$2" -c "$3" -P "$4" -n "$5" -t "$6" || echo "FAILED $*" >&2
}

# Every key `get` reads exists on both.
run agora "$AGORA" 50 16 0 fill >/dev/null
run etcd "$ETCD" 50 16 0 fill >/dev/null

for round in $(seq 1 "$ROUNDS"); do
    for row in "1 1 2000 put" "1 1 2000 get" "1 1 2000 cas" "1 1 1000 lock" \
        "50 1 20000 put" "50 1 20000 get" "50 1 20000 cas" "50 1 10000 lock" "50 1 2000 lock-contended" \
        "50 16 100000 put" "50 16 100000 get"; do
        set -- $row
        run agora "$AGORA" "$@"
        run etcd "$ETCD" "$@"
    done
done | tee "$DIR/rows"

stop_cluster "${A_PID[@]}" "${E_PID[@]}"

echo
echo "medians over $ROUNDS rounds (req/s, p50 µs, p99 µs); ok/total, errors and fencing violations summed"
python3 - "$DIR/rows" <<'EOF'
import statistics, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    if not line.startswith("ROW "):
        continue
    _, target, shape, test, rps, p50, p99, ok, errors, violations = line.split()
    key = (shape, test)
    if key not in order:
        order.append(key)
    rows.setdefault(key, {}).setdefault(target, []).append((float(rps), float(p50), float(p99), ok, int(errors), int(violations)))
print(f"{'shape':>6} {'test':<14} {'agora req/s':>11} {'p50':>6} {'p99':>6}  {'etcd req/s':>10} {'p50':>6} {'p99':>6}  {'agora/etcd':>10}  notes")
for key in order:
    med, notes = {}, []
    if len(rows[key]) < 2:
        continue
    for target in ("Agora", "Etcd"):
        values = rows[key][target]
        med[target] = [statistics.median(v[i] for v in values) for i in range(3)]
        ok = [sum(int(v[3].split("/")[i]) for v in values) for i in (0, 1)]
        errors, violations = sum(v[4] for v in values), sum(v[5] for v in values)
        if key[1] == "cas":
            notes.append(f"{target.lower()} succeeded {ok[0]}/{ok[1]}")
        if errors or violations:
            notes.append(f"{target.lower()}: {errors} errors, {violations} fencing violations")
        if key[1].startswith("lock") and not (errors or violations):
            notes.append(f"{target.lower()}: 0 violations")
    a, e = med["Agora"], med["Etcd"]
    print(f"{key[0]:>6} {key[1]:<14} {a[0]:>11,.0f} {a[1]:>6,.0f} {a[2]:>6,.0f}  {e[0]:>10,.0f} {e[1]:>6,.0f} {e[2]:>6,.0f}  "
          f"{a[0] / e[0]:>10.2f}  {'; '.join(notes)}")
EOF

echo
: > "$DIR/failover"
echo "failover: last acknowledged write before SIGKILL of the leader -> first after ($FAILOVER_ROUNDS fresh clusters each)"
for round in $(seq 1 "$FAILOVER_ROUNDS"); do
    start_agora "agora-failover-$round"
    f=$(( A_LEADER % 3 + 1 )); g=$(( f % 3 + 1 ))
    { "$BENCH" failover --target agora --addresses "${A_CLIENT[$f]},${A_CLIENT[$g]},${A_CLIENT[$A_LEADER]}" \
        --kill-pid "${A_PID[$A_LEADER]}" || echo "FAILED agora failover"; } | tee -a "$DIR/failover"
    stop_cluster "${A_PID[@]}"
    start_etcd "etcd-failover-$round"
    f=$(( E_LEADER % 3 + 1 )); g=$(( f % 3 + 1 ))
    { "$BENCH" failover --target etcd --addresses "${E_CLIENT[$f]},${E_CLIENT[$g]},${E_CLIENT[$E_LEADER]}" \
        --kill-pid "${E_PID[$E_LEADER]}" || echo "FAILED etcd failover"; } | tee -a "$DIR/failover"
    stop_cluster "${E_PID[@]}"
done 2>>"$DIR/failover.err" # (bash's "Killed" notices of the leaders the bench killed)
python3 - "$DIR/failover" <<'EOF'
import statistics, sys
gaps = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if line.startswith("FAILOVER "):
        gaps.setdefault(parts[1], []).append(float(parts[2]))
for target, values in sorted(gaps.items()):
    print(f"failover {target}: median {statistics.median(values):.0f} ms, min {min(values):.0f}, max {max(values):.0f} "
          f"over {len(values)} rounds")
EOF
