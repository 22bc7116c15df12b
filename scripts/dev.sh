#!/usr/bin/env bash
# Runs Gamify locally: provisions Postgres and Redis, migrates, and starts gamify-api on PORT
# (default 3000). Honours ADMIN_TOKEN and PORT from the environment. Ctrl-C stops everything.
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

"$ROOT/target/debug/gamify-api" serve &
pids+=($!)
wait_for 30 "gamify-api on port $PORT" curl -fsS "http://127.0.0.1:$PORT/healthz"

cat <<TXT

Gamify is running: http://127.0.0.1:$PORT

  ADMIN_TOKEN=$ADMIN_TOKEN

Create an organization:

  curl -s -X POST http://127.0.0.1:$PORT/v1/organizations \\
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \\
    -d '{"name":"Acme"}'

Ctrl-C stops it.
TXT
wait
