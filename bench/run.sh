#!/usr/bin/env bash
# agora's side-by-side benchmark suite: writes BENCHMARKS.md at the repository root.
#
#   bench/run.sh                 # the whole suite, about 10-20 minutes, capped at 20
#   ROUNDS=3 bench/run.sh        # fewer rounds (at least 3 for medians worth quoting)
#   BENCH_MAX_MINUTES=10 bench/run.sh
#   AGORA_BIN=target/pgo/release/agora bench/run.sh   # measure this binary, build nothing
#
# Loopback only (127.0.0.1 and Unix sockets in a temporary directory); every
# process it starts is stopped when it ends, also on Ctrl-C. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/prepare.sh

# 10,000 idle connections need more than 10,000 descriptors in the client and the server.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
echo "== open files limit: $(ulimit -n)"

exec python3 bench/suite.py "$@"
