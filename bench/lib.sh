# Set-up shared by the bench scripts that start their own servers (cluster.sh,
# cluster_snapshots.sh, etcd.sh, fragmented.sh, growth.sh). Source it, call `agora_bin`
# and `bench_scratch NAME`, and add the pid of every process started to PIDS: on exit
# they are stopped and the scratch directory ($DIR) removed. `start_agora` starts a
# 3-node cluster of the agora binary in $BIN, `serve_alone` a single server, and
# `each_round` alternates $BIN with $BASE_BIN.

# agora_bin: $BIN is $AGORA_BIN, or the release binary, built now.
agora_bin() {
    BIN=${AGORA_BIN:-}
    if [ -z "$BIN" ]; then
        cargo build --release --quiet -p agora
        BIN=${CARGO_TARGET_DIR:-target}/release/agora
    fi
}

# bench_scratch NAME: a scratch directory $DIR, cleaned up on exit, holding a fresh
# authkey that AGORA_AUTHKEY_FILE names.
bench_scratch() {
    DIR=$(mktemp -d "/tmp/$1-XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT INT TERM
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/key"
    chmod 600 "$DIR/key"
    export AGORA_AUTHKEY_FILE="$DIR/key"
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}

# A TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve_alone BINARY: a fresh single server of BINARY on a free loopback port, answering
# when this returns: $PORT, and $SERVER its pid (in PIDS too). `stop_alone` stops it.
serve_alone() {
    PORT=$(free_port)
    "$1" serve --listen "127.0.0.1:$PORT" --log-level warn &
    SERVER=$!
    PIDS+=("$SERVER")
    until "$1" ping --address "127.0.0.1:$PORT" > /dev/null 2>&1; do sleep 0.05; done
}
stop_alone() {
    kill "$SERVER"
    wait "$SERVER" 2>/dev/null || true
}

# each_round FUNCTION: $ROUNDS rounds of `FUNCTION LABEL BINARY` with $BIN, each after
# one with $BASE_BIN if it is set (two builds alternated).
each_round() {
    local round
    for round in $(seq "$ROUNDS"); do
        if [ -n "${BASE_BIN:-}" ]; then "$1" "round $round base" "$BASE_BIN"; fi
        "$1" "round $round" "$BIN"
    done
}

# peer_tls_files: a CA and a certificate for 127.0.0.1 signed by it, in $DIR (openssl);
# sets PEER_TLS_FLAGS (what `agora serve` needs for TLS on the peer link) and exports
# AGORA_PEER_TLS_CA for `agora cluster`.
peer_tls_files() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
        -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$DIR/node.key" -out "$DIR/node.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' > "$DIR/san.ext"
    openssl x509 -req -in "$DIR/node.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial -days 2 \
        -extfile "$DIR/san.ext" -out "$DIR/node.pem" 2>/dev/null
    PEER_TLS_FLAGS=(--tls-cert "$DIR/node.pem" --tls-key "$DIR/node.key" --peer-tls-ca "$DIR/ca.pem")
}

# start_agora NAME [FLAGS…]: a fresh 3-node agora cluster of "$BIN" in $DIR/NAME, default
# settings plus FLAGS; sets A_CLIENT, A_PEER, A_PID (indexed by node id) and A_LEADER.
start_agora() {
    local members="" i status
    for i in 1 2 3; do
        A_PEER[$i]=127.0.0.1:$(free_port)
        A_CLIENT[$i]=127.0.0.1:$(free_port)
        members="${members:+$members,}$i=${A_PEER[$i]}"
    done
    for i in 1 2 3; do
        "$BIN" serve --node-id "$i" --listen "${A_CLIENT[$i]}" --peer-listen "${A_PEER[$i]}" --cluster "$members" \
            --data-dir "$DIR/$1/node$i" --log-level warn "${@:2}" 2>>"$DIR/agora.log" &
        A_PID[$i]=$!
        PIDS+=($!)
    done
    find_leader || { echo "agora: no leader" >&2; exit 1; }
}

# find_leader: sets A_LEADER to the node the cluster started by start_agora names its
# leader, waiting up to 10 s for one; fails if none.
find_leader() {
    local status
    A_LEADER=""
    for _ in $(seq 1 100); do
        status=$("$BIN" cluster status --peer "${A_PEER[1]}" ${AGORA_PEER_TLS_CA:+--peer-tls-ca "$AGORA_PEER_TLS_CA"} 2>/dev/null || true)
        A_LEADER=$(echo "$status" | sed -n 's/^leader: node \([0-9]\).*/\1/p')
        [ -n "$A_LEADER" ] && return 0
        sleep 0.1
    done
    return 1
}
