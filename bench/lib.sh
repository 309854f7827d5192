# Set-up shared by the bench scripts that start their own servers (cluster.sh,
# etcd.sh). Source it, call `bench_scratch NAME`, and add the pid of every process
# started to PIDS: on exit they are stopped and the scratch directory ($DIR) removed.

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
