#!/usr/bin/env bash
# How cost grows: agora against Redis as connections (1 .. 10,000), entries (1 K .. 10 M)
# and value sizes (16 B .. 1 MiB) grow (BENCHMARKS.md section 10). Prints three Markdown
# tables and writes them, with the machine and every command, to bench/results/scaling.md.
# About 10 minutes with the defaults (8.8 on a 2-core VM); needs about 3 GiB of free
# memory (10 M entries; 1,000 values of 1 MiB in each server).
#
#   bench/scaling.sh                         # 3 interleaved rounds
#   ROUNDS=1 bench/scaling.sh --quick --output /tmp/scaling.md   # a quick check of the script
#   AGORA_BIN=/path/to/agora bench/scaling.sh   # use this binary, build nothing
#
# Loopback only (127.0.0.1 and Unix sockets in a temporary directory); every process it
# starts is stopped when it ends, also on Ctrl-C. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/prepare.sh

# 10,000 connections need more than 10,000 descriptors in the clients and the servers.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
echo "== open files limit: $(ulimit -n)"

exec python3 bench/scaling.py "$@"
