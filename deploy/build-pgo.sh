#!/usr/bin/env bash
# Builds a profile-guided (PGO) agora: target/pgo/release/agora.
#
#   deploy/build-pgo.sh               # about 12 minutes on 2 cores
#   LLVM_PROFDATA=/path/to/llvm-profdata deploy/build-pgo.sh
#
# Three steps: a release build instrumented to count what runs (target/pgo-generate),
# a training run of that binary through the work a server does — the native client's
# calls on every object kind, pipelined and not, over TCP and a Unix socket; stock
# CPython manager clients; a durable server (`--data-dir`, every fsync setting) and its
# restart; TLS (if openssl is here); a 3-node cluster — and a release build that uses
# the merged counts (target/pgo; the two builds take about 1.5 GB under target/). The
# counts place hot code together and steer inlining; paths no training run takes are
# laid out as cold, which is why the training covers the server's every mode, not only
# the fast path.
# bench/changes.md (round 35) has what it gained. `agora --version` of the result says
# "profile-guided build".
#
# Needs python3 (the CPython clients, and bench/lib.sh's helpers) and llvm-profdata from
# the LLVM that rustc uses (`rustc -vV` names its version):
# `rustup component add llvm-tools`, or the distribution's llvm-N package (Debian and
# Ubuntu: `apt install llvm-N`), or LLVM_PROFDATA naming one. RUSTFLAGS, if set, are
# kept. Loopback ports and a scratch directory only; every process it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

command -v python3 >/dev/null || { echo "deploy/build-pgo.sh: python3 is needed" >&2; exit 1; }
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')

# The llvm-profdata that reads what this rustc's instrumentation writes: the one
# LLVM_PROFDATA names (taken as it is, and an error if it is not there), else the first
# of LLVM's version found.
find_profdata() {
    local candidate version
    if [ -n "${LLVM_PROFDATA:-}" ]; then
        command -v "$LLVM_PROFDATA" >/dev/null 2>&1 && { echo "$LLVM_PROFDATA"; return; }
        echo "deploy/build-pgo.sh: LLVM_PROFDATA=$LLVM_PROFDATA is not a program here" >&2
        exit 1
    fi
    for candidate in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
        "llvm-profdata-$llvm_major" llvm-profdata; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        version=$("$candidate" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1)
        if [ "$version" = "$llvm_major" ]; then
            echo "$candidate"
            return
        fi
    done
    echo "deploy/build-pgo.sh: no llvm-profdata for LLVM $llvm_major (rustc's): run" \
        "'rustup component add llvm-tools', install llvm-$llvm_major (Debian, Ubuntu:" \
        "'apt install llvm-$llvm_major'), or set LLVM_PROFDATA" >&2
    exit 1
}
PROFDATA=$(find_profdata)
PROFILES=$ROOT/target/pgo-profiles
rm -rf "$PROFILES"
mkdir -p "$PROFILES/raw"

echo "== 1/3: instrumented build (target/pgo-generate)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES/raw" CARGO_TARGET_DIR=$ROOT/target/pgo-generate \
    cargo build --release --locked --quiet -p agora --bin agora
BIN=$ROOT/target/pgo-generate/release/agora

echo "== 2/3: training run"
. bench/lib.sh
bench_scratch agora-pgo

# serve NAME ADDRESS FLAGS…: a server of $BIN listening on ADDRESS (and what FLAGS add),
# ready when this returns; its pid in $SERVER.
serve() {
    "$BIN" serve --log-level warn --listen "$2" "${@:3}" 2>>"$DIR/agora.log" &
    SERVER=$!
    PIDS+=("$SERVER")
    for _ in $(seq 1 100); do
        "$BIN" bench --address "$2" -t ping -c 1 -n 1 ${TLS_CA:+--tls-ca "$TLS_CA"} >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "deploy/build-pgo.sh: the $1 server did not come up (see $DIR/agora.log)" >&2
    exit 1
}

# stop PID: SIGTERM, and wait for it to exit (its counts are written on the way out).
stop() { kill "$1"; wait "$1" || true; }

# load ADDRESS: the native client's calls, typed and raw, pipelined and not.
load() {
    local client pipeline clients=("" --raw)
    [ -z "${TLS_CA:-}" ] || clients=("")  # the raw client speaks plain TCP and Unix sockets only
    for client in "${clients[@]}"; do
        for pipeline in 1 16; do
            "$BIN" bench --address "$1" $client -c 50 -P $pipeline -n 100000 -t set,get,qput,qget,add \
                ${TLS_CA:+--tls-ca "$TLS_CA"} >/dev/null
        done
    done
    "$BIN" bench --address "$1" -c 1 -n 10000 -t ping,set,get,add ${TLS_CA:+--tls-ca "$TLS_CA"} >/dev/null
}

plain_tcp=127.0.0.1:$(free_port)
serve plain "$plain_tcp" --listen "unix:$DIR/agora.sock"
for address in "$plain_tcp" "unix:$DIR/agora.sock"; do
    echo "   plain server, $address"
    load "$address"
    "$BIN" bench --address "$address" -c 8 -n 20000 -t ping,append,queue,lock,lock-contended,event >/dev/null
    "$BIN" bench --address "$address" -c 50 -n 2000 -d 65536 -r 100 -t set,get >/dev/null
    echo "   stock CPython manager clients, $address"
    AGORA_AUTHKEY=$(cat "$AGORA_AUTHKEY_FILE") python3 bench/py_manager_bench.py --agora "$address" \
        --targets agora --clients 1,4 --duration 0.5 --warmup 0.1 >/dev/null
done
stop "$SERVER"

for fsync in no everysec always; do
    echo "   durable server, --fsync $fsync, and its restart"
    durable=127.0.0.1:$(free_port)
    serve durable "$durable" --data-dir "$DIR/data-$fsync" --fsync "$fsync"
    "$BIN" bench --address "$durable" -c 50 -n 20000 -t set,qput,qget,add >/dev/null
    "$BIN" bench --address "$durable" -c 50 -P 16 -n 100000 -t set,get,qput,qget,add >/dev/null
    stop "$SERVER"
    serve restarted "$durable" --data-dir "$DIR/data-$fsync" --fsync "$fsync"
    stop "$SERVER"
done

if command -v openssl >/dev/null; then
    echo "   TLS"
    peer_tls_files
    tls=tls://127.0.0.1:$(free_port)
    TLS_CA=$DIR/ca.pem serve tls "$tls" --tls-cert "$DIR/node.pem" --tls-key "$DIR/node.key"
    TLS_CA=$DIR/ca.pem load "$tls"
    stop "$SERVER"
else
    echo "   no openssl: TLS is not trained"
fi

echo "   3-node cluster"
declare -a A_PEER A_CLIENT A_PID
start_agora cluster
# The instrumented build runs several times slower; under this load a node can miss
# its leader's heartbeats and start an election, and a client that meets one is told
# so. Such a run is made again once the cluster names a leader (twice at most); the
# profile keeps whatever ran.
for pipeline in 1 16; do
    for attempt in 1 2 3; do
        leader=${A_CLIENT[$A_LEADER]}
        follower=${A_CLIENT[$(( A_LEADER % 3 + 1 ))]}
        if "$BIN" bench --address "$leader" -c 50 -P $pipeline -n 50000 -t set,get,qput,qget,add >/dev/null &&
            "$BIN" bench --address "$follower" -c 50 -P $pipeline -n 20000 -t set,get >/dev/null; then
            break
        fi
        if [ "$attempt" = 3 ]; then
            echo "   (-P $pipeline met an election three times: the profile keeps what ran)"
            break
        fi
        echo "   (-P $pipeline, attempt $attempt met an election: again once there is a leader)"
        find_leader || break
    done
done
for i in 1 2 3; do stop "${A_PID[$i]}"; done

"$PROFDATA" merge -o "$PROFILES/merged.profdata" "$PROFILES/raw"
# Named by its content: cargo rebuilds when its flags change, not when a file they name
# does, so a new profile must be a new path.
profile=$PROFILES/agora-$(sha256sum "$PROFILES/merged.profdata" | cut -c1-16).profdata
mv "$PROFILES/merged.profdata" "$profile"

echo "== 3/3: optimised build (target/pgo)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" CARGO_TARGET_DIR=$ROOT/target/pgo \
    cargo build --release --locked --quiet -p agora --bin agora
echo "built target/pgo/release/agora: $("$ROOT/target/pgo/release/agora" --version)"
