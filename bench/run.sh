#!/usr/bin/env bash
# agora's side-by-side benchmark suite: writes BENCHMARKS.md at the repository root.
#
#   bench/run.sh                 # the whole suite, about 10-20 minutes, capped at 20
#   ROUNDS=3 bench/run.sh        # fewer rounds (at least 3 for medians worth quoting)
#   BENCH_MAX_MINUTES=10 bench/run.sh
#
# Loopback only (127.0.0.1 and Unix sockets in a temporary directory); every
# process it starts is stopped when it ends, also on Ctrl-C. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building agora (release)"
cargo build --release --quiet -p agora --bin agora

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "== installing redis-server and redis-tools (Debian)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
    # The Debian package starts a system redis on 6379; the suite runs its own.
fi

# 10,000 idle connections need more than 10,000 descriptors in the client and the server.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
echo "== open files limit: $(ulimit -n)"

exec python3 bench/suite.py "$@"
