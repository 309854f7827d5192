# Sourced by the bench/ scripts: builds the release binary (unless AGORA_BIN names the
# binary to measure) and installs Redis (the other side of every comparison) from
# Debian's packages if it is missing. The Debian package starts a system redis on 6379;
# the scripts run their own on other ports.

if [ -n "${AGORA_BIN:-}" ]; then
    echo "== agora: $AGORA_BIN ($("$AGORA_BIN" --version))"
else
    echo "== building agora (release)"
    cargo build --release --quiet -p agora --bin agora
fi

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "== installing redis-server and redis-tools (Debian)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi
