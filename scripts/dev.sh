#!/usr/bin/env bash
# Runs Gamify locally: provisions Postgres, Redis and the broker, migrates, and starts gamify-api on
# PORT (default 3000) and gamify-worker (metrics on WORKER_PORT, default 3001). Honours ADMIN_TOKEN
# and PORT from the environment. Ctrl-C stops gamify-api and gamify-worker; the development broker
# keeps running (see the message it prints).
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
# Stops what this script started: SIGTERM (both finish in-flight work: requests, the current batch),
# SIGKILL after 15 s. Waits on those pids only; the development broker is not a child to wait for.
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] || return 0
  log "stopping gamify-api, gamify-worker and the example shop"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 75); do
    alive=0
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    [ "$alive" = 1 ] || break
    sleep 0.2
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  broker_note
}
broker_note() {
  if [ -z "${DEV_BROKER_DIR:-}" ]; then
    log "the broker at $KAFKA_BROKERS is not managed by this script"
  elif [ -s "$DEV_BROKER_DIR/broker.pid" ] && kill -0 "$(cat "$DEV_BROKER_DIR/broker.pid")" 2>/dev/null; then
    log "gamify-dev-broker keeps running (pid $(cat "$DEV_BROKER_DIR/broker.pid"), $KAFKA_BROKERS) so the next run reuses it; stop it with: kill \$(cat ${DEV_BROKER_DIR#"$ROOT"/}/broker.pid)"
  else
    log "gamify-dev-broker keeps running ($KAFKA_BROKERS) so the next run reuses it; stop it with: pkill -f 'gamify-dev-broker serve'"
  fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

export WORKER_PORT=${WORKER_PORT:-3001}
log "building the SDKs for the example shop"
(cd "$ROOT/sdks" && npm ci --no-audit --no-fund --silent && npm run build --silent) >/dev/null
export EXAMPLE_PORT=${EXAMPLE_PORT:-8080}

"$ROOT/target/debug/gamify-worker" &
pids+=($!)
"$ROOT/target/debug/gamify-api" serve &
pids+=($!)
node "$ROOT/examples/browser/serve.mjs" "$EXAMPLE_PORT" &
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

Then follow "Your first event" in README.md. With a publishable key, the example shop sends
browser events through @gamify/core:

  http://127.0.0.1:$EXAMPLE_PORT/?host=http://127.0.0.1:$PORT&key=<publishable key>

Ctrl-C stops it.
TXT

# Returns when either process exits (or on Ctrl-C, through the trap); the EXIT trap stops the other.
status=0
wait -n "${pids[@]}" || status=$?
log "gamify-api, gamify-worker or the example server stopped (status $status)"
exit "$status"
