#!/usr/bin/env bash
# Runs Gamify locally: provisions Postgres, Redis and the broker, migrates, and starts gamify-api on
# PORT (default 3000) and gamify-worker (metrics on WORKER_PORT, default 3001). Honours ADMIN_TOKEN
# and PORT from the environment. Ctrl-C stops everything.
source "$(dirname "$0")/lib.sh"

provision gamify
export PORT=${PORT:-3000}
export RUST_LOG=${RUST_LOG:-info}
if [ -z "${ADMIN_TOKEN:-}" ]; then
  ADMIN_TOKEN="adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
export ADMIN_TOKEN

log "building"
cargo build --workspace --bins --quiet
migrate

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM

export WORKER_PORT=${WORKER_PORT:-3001}
"$ROOT/target/debug/gamify-worker" &
pids+=($!)
"$ROOT/target/debug/gamify-api" serve &
pids+=($!)
wait_for 30 "gamify-api on port $PORT" curl -fsS "http://127.0.0.1:$PORT/healthz"
wait_for 30 "gamify-worker on port $WORKER_PORT" curl -fsS "http://127.0.0.1:$WORKER_PORT/healthz"

cat <<TXT

Gamify is running: API http://127.0.0.1:$PORT, worker metrics http://127.0.0.1:$WORKER_PORT/metrics

  ADMIN_TOKEN=$ADMIN_TOKEN

Create an organization:

  curl -s -X POST http://127.0.0.1:$PORT/v1/organizations \\
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \\
    -d '{"name":"Acme"}'

Then follow "Your first event" in README.md. Ctrl-C stops it.
TXT
wait
