#!/usr/bin/env bash
# Sign-in under load (issue 21), release build of gamify-api with the production Argon2id cost:
#   1. the cost of one password hash: sign-ins one at a time (p50 ≈ one verification);
#   2. sign-in latency when SIGN_IN_BENCH_CONCURRENCY clients sign in as fast as they can;
#   3. whether that load starves ingestion: track p99 at SIGN_IN_BENCH_TRACK_RATE requests/s alone
#      (the baseline) and during the sign-in load (hashing runs on the blocking pool, behind a
#      semaphore, off the async workers).
# Writes target/bench-sign-in/results.md; see docs/BENCHMARKS.md ("Sign-in").
#
#   scripts/bench/sign-in.sh        # ~2 minutes after the build
{
source "$(dirname "$0")/../lib.sh"

SECONDS_EACH=${SIGN_IN_BENCH_SECONDS:-15}
CONCURRENCY=${SIGN_IN_BENCH_CONCURRENCY:-32}
TRACK_RATE=${SIGN_IN_BENCH_TRACK_RATE:-1000}
OUT="$ROOT/target/bench-sign-in"
export DEV_BROKER_DIR="$OUT/broker"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/results.md

command -v jq >/dev/null 2>&1 || apt_install jq
if ! command -v oha >/dev/null 2>&1; then
  log "installing oha (constant-rate HTTP load) from crates.io"
  cargo install oha --locked --quiet
fi

log "building release binaries"
cargo build --release --quiet -p gamify-api --bin gamify-api -p gamify-dev-broker --bin gamify-dev-broker
BIN="$ROOT/target/release"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ -f "$DEV_BROKER_DIR/broker.pid" ]; then kill "$(cat "$DEV_BROKER_DIR/broker.pid")" 2>/dev/null || true; fi
rm -rf "$DEV_BROKER_DIR" && mkdir -p "$DEV_BROKER_DIR"
"$BIN/gamify-dev-broker" serve --dir "$DEV_BROKER_DIR" >"$DEV_BROKER_DIR/broker.log" 2>&1 </dev/null &
echo $! >"$DEV_BROKER_DIR/broker.pid"
pids+=($!)
export KAFKA_TOPIC=gamify.bench.sign_in KAFKA_DLQ_TOPIC=gamify.bench.sign_in.dlq
provision gamify_bench_sign_in fresh
dev_broker ctl --dir "$DEV_BROKER_DIR" create-topic "$KAFKA_TOPIC" 12 >/dev/null
"$BIN/gamify-api" migrate >/dev/null

export PORT=3920 RUST_LOG=warn
export ADMIN_TOKEN="adm_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PUBLIC_URL="http://127.0.0.1:$PORT"
# Every client here is 127.0.0.1, which other runs (the fuzzer's failed sign-ins) may have counted
# against in Redis; the load is successful sign-ins, which the limits do not count.
export SIGN_IN_FAILURES_PER_ADDRESS=100000
export CLIENT_RATE_LIMIT_PER_SECOND=10000000 CLIENT_RATE_LIMIT_BURST=100000000
export SECRET_KEY_RATE_LIMIT_PER_SECOND=10000000 SECRET_KEY_RATE_LIMIT_BURST=100000000
export PROJECT_RATE_LIMIT_PER_SECOND=10000000 PROJECT_RATE_LIMIT_BURST=100000000
API="http://127.0.0.1:$PORT"
"$BIN/gamify-api" serve >>"$OUT/api.log" 2>&1 &
pids+=($!)
wait_for 30 gamify-api curl -fsS "$API/readyz"
admin() { curl -fsS -X "$1" "$API$2" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d "$3"; }

org=$(admin POST /v1/organizations '{"name":"bench"}' | jq -r .id)
project=$(admin POST /v1/projects "{\"organizationId\":\"$org\",\"name\":\"bench\"}" | jq -r .id)
key=$(admin POST "/v1/projects/$project/api-keys" '{"name":"server","type":"secret"}' | jq -r .key)
password="bench passphrase $(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
invite=$(admin POST "/v1/organizations/$org/invitations" '{"email":"bench@example.com","role":"owner"}' | jq -r .url)
curl -fsS -X POST "$API/v1/invitations/accept" -H 'Content-Type: application/json' \
  -d "{\"token\":\"${invite#*token=}\",\"password\":\"$password\"}" >/dev/null
sign_in_body="{\"email\":\"bench@example.com\",\"password\":\"$password\"}"

summary() { # FILE → "RPS P50 P99 NOT_OK"
  jq -r '[(.summary.requestsPerSec * 10 | floor / 10), (.latencyPercentiles.p50 * 1000 * 100 | round / 100),
          (.latencyPercentiles.p99 * 1000 * 100 | round / 100),
          ([.statusCodeDistribution | to_entries[] | select(.key != "201" and .key != "202") | .value] | add // 0)] | @tsv' "$1"
}
sign_in_load() { # CONCURRENCY NAME
  oha --no-tui --output-format json -z "${SECONDS_EACH}s" -c "$1" -m POST -H 'Content-Type: application/json' \
    -d "$sign_in_body" "$API/v1/sessions" >"$OUT/$2.json"
}
track_load() { # NAME
  oha --no-tui --output-format json -z "${SECONDS_EACH}s" -q "$TRACK_RATE" -c 16 -m POST \
    -H "x-api-key: $key" -H 'Content-Type: application/json' \
    -d '{"event":"page_view","userId":"u1"}' "$API/v1/events/track" >"$OUT/$1.json"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
api_pid=$(pgrep -f "$BIN/gamify-api serve" | head -n 1)

log "1/3 one sign-in at a time (${SECONDS_EACH} s)"
sign_in_load 1 sign_in_serial
log "2/3 track alone at $TRACK_RATE/s (${SECONDS_EACH} s): the baseline"
track_load track_alone
log "3/3 track at $TRACK_RATE/s while $CONCURRENCY clients sign in (${SECONDS_EACH} s)"
before=$(cpu_ticks "$api_pid")
sign_in_load "$CONCURRENCY" sign_in_loaded &
loader=$!
track_load track_loaded
wait "$loader"
after=$(cpu_ticks "$api_pid")

read -r s_rps s_p50 s_p99 s_bad <<<"$(summary "$OUT/sign_in_serial.json")"
read -r l_rps l_p50 l_p99 l_bad <<<"$(summary "$OUT/sign_in_loaded.json")"
read -r ta_rps ta_p50 ta_p99 ta_bad <<<"$(summary "$OUT/track_alone.json")"
read -r tl_rps tl_p50 tl_p99 tl_bad <<<"$(summary "$OUT/track_loaded.json")"
{
  echo "- **When**: $(date -u +%Y-%m-%dT%H:%MZ), commit \`$(git -C "$ROOT" rev-parse --short HEAD)\`, $(nproc) cores"
  echo "- **Command**: \`scripts/bench/sign-in.sh\` (SIGN_IN_BENCH_SECONDS=$SECONDS_EACH, SIGN_IN_BENCH_CONCURRENCY=$CONCURRENCY, SIGN_IN_BENCH_TRACK_RATE=$TRACK_RATE); Argon2id 19 MiB, 2 passes, hashing concurrency = cores"
  echo
  echo "| run | requests/s | p50 ms | p99 ms | not 201/202 |"
  echo "|---|---|---|---|---|"
  echo "| sign-in, 1 client (≈ one hash) | $s_rps | $s_p50 | $s_p99 | $s_bad |"
  echo "| sign-in, $CONCURRENCY clients | $l_rps | $l_p50 | $l_p99 | $l_bad |"
  echo "| track at $TRACK_RATE/s alone (baseline) | $ta_rps | $ta_p50 | $ta_p99 | $ta_bad |"
  echo "| track at $TRACK_RATE/s during the sign-in load | $tl_rps | $tl_p50 | $tl_p99 | $tl_bad |"
  echo
  echo "gamify-api CPU during part 3: $(( (after - before) / $(getconf CLK_TCK) )) s over ${SECONDS_EACH} s."
} >"$OUT/results.md"
cat "$OUT/results.md"
exit 0
}
