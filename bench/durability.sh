#!/usr/bin/env bash
# Durability benchmarks, agora's command log vs Redis's AOF: writes section 6 into
# bench/sections.md (which bench/run.sh includes as is) and into BENCHMARKS.md.
#
#   bench/durability.sh                      # the whole run, about 10-12 minutes, capped at 12
#   ROUNDS=5 BENCH_MAX_MINUTES=15 bench/durability.sh
#   bench/durability.sh --quick --output /tmp/check.md   # tiny counts: checks the script
#   AGORA_BIN=target/pgo/release/agora bench/durability.sh   # measure this binary, build nothing
#
# Loopback only; the data directories live in one temporary directory (the same
# filesystem for both servers), deleted at the end; every process it starts is stopped
# when it ends, also on Ctrl-C. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/prepare.sh

exec python3 bench/durability.py "$@"
