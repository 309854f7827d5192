#!/usr/bin/env bash
# TLS priced: agora over TLS against agora in the clear and against Redis with and
# without TLS (BENCHMARKS.md section 9). About 5 minutes with the defaults.
#
#   bench/tls.sh                         # 3 interleaved rounds, 200,000 requests per test
#   bench/tls.sh --rounds 1 --requests 20000   # a quick check of the script
#   AGORA_BIN=target/pgo/release/agora bench/tls.sh   # measure this binary, build nothing
#
# Loopback only; certificates are made with openssl for the run, in a temporary
# directory deleted at the end; every process it starts is stopped. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/prepare.sh

exec python3 bench/tls.py "$@"
