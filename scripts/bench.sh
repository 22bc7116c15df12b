#!/usr/bin/env bash
# Ingestion benchmark: a release gamify-api against the local Postgres, Redis and broker, loaded by
# wrk from this machine (loopback only). Prints one markdown row per scenario for docs/BENCHMARKS.md.
# BENCH_SECONDS (default 15) and BENCH_CONNECTIONS (default 32) tune the load.
source "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-15}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
PORT=${BENCH_PORT:-3900}
command -v wrk >/dev/null 2>&1 || apt_install wrk

export KAFKA_TOPIC=gamify.bench.events KAFKA_DLQ_TOPIC=gamify.bench.events.dlq
provision gamify_bench fresh
log "building release binaries"
cargo build --release -p gamify-api --bin gamify-api -p gamify-worker --bin gamify-worker --quiet
"$ROOT/target/release/gamify-api" migrate

export PORT ADMIN_TOKEN="adm_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CLIENT_RATE_LIMIT_PER_SECOND=10000000 CLIENT_RATE_LIMIT_BURST=100000000 RUST_LOG=warn
export PROJECT_RATE_LIMIT_PER_SECOND=10000000 PROJECT_RATE_LIMIT_BURST=100000000
mkdir -p "$ROOT/target/bench"
"$ROOT/target/release/gamify-api" serve >"$ROOT/target/bench/api.log" 2>&1 &
api_pid=$!
trap 'kill $api_pid 2>/dev/null || true' EXIT
wait_for 30 "gamify-api" curl -fsS "http://127.0.0.1:$PORT/readyz"

API="http://127.0.0.1:$PORT"
AUTH="Authorization: Bearer $ADMIN_TOKEN"
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }
org=$(curl -fsS -X POST "$API/v1/organizations" -H "$AUTH" -H 'Content-Type: application/json' -d '{"name":"bench"}' | field id)
project=$(curl -fsS -X POST "$API/v1/projects" -H "$AUTH" -H 'Content-Type: application/json' \
  -d "{\"organizationId\":\"$org\",\"name\":\"bench\"}" | field id)
export GAMIFY_KEY=$(curl -fsS -X POST "$API/v1/projects/$project/api-keys" -H "$AUTH" \
  -H 'Content-Type: application/json' -d '{"name":"bench","type":"publishable"}' | field key)

run() { # run NAME SCRIPT EVENTS_PER_REQUEST
  local out rps p50 p99 errors rss
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s "$ROOT/scripts/bench/$2" "$API" 2>&1)
  echo "$out" >"$ROOT/target/bench/$1.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  rss=$(ps -o rss= -p "$api_pid" | tr -d ' ')
  printf '| %s | %s | %.0f | %.0f | %s | %s | %s | %s MiB |\n' "$1" "$CONNECTIONS" "$rps" \
    "$(awk -v r="$rps" -v n="$3" 'BEGIN {print r * n}')" "$p50" "$p99" "${errors:-0}" "$((rss / 1024))"
}

echo
echo "| scenario | connections | requests/s | events/s | p50 | p99 | non-2xx | gamify-api RSS after |"
echo "|---|---|---|---|---|---|---|---|"
run track track.lua 1
run batch-100 batch.lua 100

# Worker: drain what the gateway just produced, from the beginning, with a fresh consumer group.
WORKER_SECONDS=${BENCH_WORKER_SECONDS:-20}
before=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d gamify_bench -tAc "SELECT count(*) FROM events")
KAFKA_GROUP_ID="bench-$(date +%s)" WORKER_PORT=0 "$ROOT/target/release/gamify-worker" >"$ROOT/target/bench/worker.log" 2>&1 &
worker_pid=$!
trap 'kill $api_pid $worker_pid 2>/dev/null || true' EXIT
sleep "$WORKER_SECONDS"
after=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d gamify_bench -tAc "SELECT count(*) FROM events")
worker_rss=$(ps -o rss= -p "$worker_pid" | tr -d ' ')
echo
echo "| worker | seconds | events stored | events/s (incl. start-up) | gamify-worker RSS |"
echo "|---|---|---|---|---|"
printf '| drain backlog | %s | %s | %.0f | %s MiB |\n' "$WORKER_SECONDS" "$((after - before))" \
  "$(awk -v n="$((after - before))" -v s="$WORKER_SECONDS" 'BEGIN {print n / s}')" "$((worker_rss / 1024))"
