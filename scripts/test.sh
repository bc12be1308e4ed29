#!/usr/bin/env bash
# Runs the whole test suite against a real Apache Kafka broker.
#
#   scripts/test.sh [extra cargo test args...]
#
# Starts a throwaway single-node broker (scripts/kafka-local.sh) unless KAFKA_BOOTSTRAP_SERVERS
# is set, installs the independent CloudEvents reader (the official Python SDK) into a venv
# cached outside the work tree, runs `cargo test --workspace -- --include-ignored` (the ignored
# tests are the ones that need a broker), and stops what it started, on failure and Ctrl-C too.
#
# Environment: KAFKA_BOOTSTRAP_SERVERS (use this broker, start none), KAFKA_PORT (port of the
# throwaway broker, default 39092), CHOREOGRAPH_CACHE (default ~/.cache/choreograph).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CHOREOGRAPH_CACHE:-$HOME/.cache/choreograph}"
KAFKA_DIR=""

log() { printf 'test.sh: %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$KAFKA_DIR" ]]; then
    log "stopping the throwaway broker"
    "$ROOT/scripts/kafka-local.sh" stop "$KAFKA_DIR" --clean >&2 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The independent CloudEvents reader used by tests/tests/publish.rs.
VENV="$CACHE/venv-cloudevents"
if ! "$VENV/bin/python" -c 'import cloudevents.kafka' 2>/dev/null; then
  log "installing the CloudEvents Python SDK into $VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check cloudevents==1.12.0 >&2
fi
export CHOREOGRAPH_PYTHON="$VENV/bin/python"

# The real Mermaid parser (npm `mermaid` in jsdom) that tests/tests/trace.rs checks
# `choreograph trace --format mermaid` with: installed from tests/mermaid/'s lockfile into the
# cache, again whenever the lockfile or the script changes.
MERMAID_SRC="$ROOT/tests/mermaid"
MERMAID_KEY="$(cat "$MERMAID_SRC/package-lock.json" "$MERMAID_SRC/parse.mjs" | sha256sum | cut -c1-16)"
MERMAID_DIR="$CACHE/mermaid-$MERMAID_KEY"
if [[ ! -f "$MERMAID_DIR/.installed" ]]; then
  command -v npm >/dev/null || { log "npm (Node.js 18+) is needed for the Mermaid parser: apt-get install -y nodejs npm"; exit 1; }
  log "installing the Mermaid parser (npm mermaid + jsdom) into $MERMAID_DIR"
  mkdir -p "$MERMAID_DIR"
  cp "$MERMAID_SRC/package.json" "$MERMAID_SRC/package-lock.json" "$MERMAID_SRC/parse.mjs" "$MERMAID_DIR/"
  (cd "$MERMAID_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
  touch "$MERMAID_DIR/.installed"
fi
export CHOREOGRAPH_MERMAID_PARSER="$MERMAID_DIR/parse.mjs"

# Build first (the end-to-end tests run the service binaries from target/debug), so the
# broker does not sit idle through a cold compile.
(cd "$ROOT" && cargo build --workspace --quiet && cargo test --workspace --no-run --quiet) >&2

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  KAFKA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/choreograph-test-kafka.XXXXXX")"
  rmdir "$KAFKA_DIR" # kafka-local.sh creates it (and only deletes a DIR it created)
  log "starting a throwaway broker in $KAFKA_DIR"
  KAFKA_BOOTSTRAP_SERVERS="$(KAFKA_PORT="${KAFKA_PORT:-39092}" "$ROOT/scripts/kafka-local.sh" start "$KAFKA_DIR")"
  export KAFKA_BOOTSTRAP_SERVERS
fi
log "testing against $KAFKA_BOOTSTRAP_SERVERS"

cd "$ROOT"
cargo test --workspace "$@" -- --include-ignored
