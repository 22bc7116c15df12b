#!/usr/bin/env bash
# Scale-out run (issue 10): two gateways and two workers in one consumer group against the local
# stack (release builds, a development broker of its own, the machine's Postgres and Redis), load
# sent through both gateways by the fault suite's accounting client (scripts/faults/load.py), then:
# both workers were assigned partitions and stored events, every acknowledged event is stored
# exactly once, and the figures are printed as a markdown table for docs/BENCHMARKS.md.
#
#   ./scripts/scale.sh                       # 30 s at 20,000 events/s offered
#   SCALE_RATE=5000 SCALE_SECONDS=10 ./scripts/scale.sh
source "$(dirname "$0")/lib.sh"

RATE=${SCALE_RATE:-20000}
SECS=${SCALE_SECONDS:-30}
OUT=$ROOT/target/scale
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/requests.jsonl

export KAFKA_TOPIC=gamify.scale.events KAFKA_DLQ_TOPIC=gamify.scale.events.dlq
export KAFKA_GROUP_ID="gamify-scale-$(date +%s)"
# A broker of its own, stopped at exit, so nothing else shares its partitions or memory.
export DEV_BROKER_DIR=$ROOT/target/scale-broker
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_dev_broker
}
trap cleanup EXIT
provision gamify_scale fresh

log "building release binaries"
cargo build --release -p gamify-api --bin gamify-api -p gamify-worker --bin gamify-worker --quiet
"$ROOT/target/release/gamify-api" migrate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export ADMIN_TOKEN="adm_scale_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export RUST_LOG=${RUST_LOG:-info}
for limit in CLIENT SECRET_KEY PROJECT; do
  export "${limit}_RATE_LIMIT_PER_SECOND=10000000" "${limit}_RATE_LIMIT_BURST=100000000"
done

API_PORTS=() WORKER_PORTS=()
for n in 1 2; do
  port=$(free_port)
  PORT=$port "$ROOT/target/release/gamify-api" serve >"$OUT/api$n.log" 2>&1 &
  pids+=($!)
  API_PORTS+=("$port")
  wport=$(free_port)
  WORKER_PORT=$wport KAFKA_SESSION_TIMEOUT_MS=6000 "$ROOT/target/release/gamify-worker" >"$OUT/worker$n.log" 2>&1 &
  pids+=($!)
  WORKER_PORTS+=("$wport")
done
for port in "${API_PORTS[@]}"; do wait_for 30 "gamify-api on $port" curl -fsS "http://127.0.0.1:$port/readyz"; done
for port in "${WORKER_PORTS[@]}"; do wait_for 30 "gamify-worker on $port" curl -fsS "http://127.0.0.1:$port/healthz"; done
# The last assignment of worker N holds partitions (log lines without colour codes).
holds_partitions() {
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/worker$1.log" | grep 'partitions assigned' | tail -n 1 |
    grep -q 'partitions=\[[0-9]'
}
both_hold_partitions() { holds_partitions 1 && holds_partitions 2; }
wait_for 60 "both workers assigned partitions" both_hold_partitions

API="http://127.0.0.1:${API_PORTS[0]}"
AUTH="Authorization: Bearer $ADMIN_TOKEN"
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }
org=$(curl -fsS -X POST "$API/v1/organizations" -H "$AUTH" -H 'Content-Type: application/json' -d '{"name":"scale"}' | field id)
project=$(curl -fsS -X POST "$API/v1/projects" -H "$AUTH" -H 'Content-Type: application/json' \
  -d "{\"organizationId\":\"$org\",\"name\":\"scale\"}" | field id)
pk=$(curl -fsS -X POST "$API/v1/projects/$project/api-keys" -H "$AUTH" -H 'Content-Type: application/json' \
  -d '{"name":"scale","type":"publishable"}' | field key)

log "offering $RATE events/s for ${SECS}s through both gateways"
apis="http://127.0.0.1:${API_PORTS[0]},http://127.0.0.1:${API_PORTS[1]}"
started=$(date +%s.%N)
python3 "$ROOT/scripts/faults/load.py" send --api "$apis" --key "$pk" --prefix scale \
  --rate "$RATE" --seconds "$SECS" --batch 100 --track-every 0 --threads 32 --out "$OUT/requests.jsonl"
sent_done=$(date +%s.%N)
metrics="http://127.0.0.1:${WORKER_PORTS[0]}/metrics,http://127.0.0.1:${WORKER_PORTS[1]}/metrics"
row=$(python3 "$ROOT/scripts/faults/load.py" check --requests "$OUT/requests.jsonl" \
  --psql "psql -h $PG_HOST -p $PG_PORT -U postgres -d gamify_scale" --prefix scale --fault scale-out \
  --metrics "$metrics" --wait 300)
stored_done=$(date +%s.%N)
echo "$row" >"$OUT/result.json"

persisted() { curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^gamify_worker_events_persisted_total/ {s += $2} END {print s + 0}'; }
w1=$(persisted "${WORKER_PORTS[0]}")
w2=$(persisted "${WORKER_PORTS[1]}")
read -r acked lost duplicated < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["acked"], r["lost"], r["duplicated"])' "$row")
accept_rate=$(awk -v n="$acked" -v a="$started" -v b="$sent_done" 'BEGIN {printf "%.0f", n / (b - a)}')
store_rate=$(awk -v n="$acked" -v a="$started" -v b="$stored_done" 'BEGIN {printf "%.0f", n / (b - a)}')

cat <<TXT

Scale-out run: $(date -u +%FT%TZ), $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg) at the end
Command: SCALE_RATE=$RATE SCALE_SECONDS=$SECS ./scripts/scale.sh

| gateways | workers | offered events/s | acknowledged | acknowledged/s | stored/s (until the last is stored) | worker 1 stored | worker 2 stored | lost | duplicated |
|---|---|---|---|---|---|---|---|---|---|
| 2 | 2 | $RATE | $acked | $accept_rate | $store_rate | $w1 | $w2 | $lost | $duplicated |
TXT
[ "$lost" = 0 ] && [ "$duplicated" = 0 ] || die "lost $lost, duplicated $duplicated"
[ "$w1" -gt 0 ] && [ "$w2" -gt 0 ] || die "a worker stored nothing (worker 1: $w1, worker 2: $w2)"
log "both workers stored events; every acknowledged event is stored exactly once"
