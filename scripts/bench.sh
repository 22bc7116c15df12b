#!/usr/bin/env bash
# Benchmark suite (issue 11): the real stack with release builds on this machine, loaded by wrk and
# oha, every figure next to a baseline measured in the same run. Writes target/bench/results.md and,
# for a full run, replaces the generated section of docs/BENCHMARKS.md. See docs/BENCHMARKS.md.
#
#   ./scripts/bench.sh                   # full run, ~10 minutes
#   BENCH_QUICK=1 ./scripts/bench.sh     # smoke run, ~2 minutes, writes target/bench/ only
#   BENCH_PROFILE=1 ./scripts/bench.sh   # also perf profiles of gamify-api and gamify-worker
#
# Scale: BENCH_SECONDS (per wrk/oha scenario, 15; quick 5), BENCH_CONNECTIONS ("32 256"),
# BENCH_WORKER_EVENTS (backlog per worker scenario, 500000; quick 50000), BENCH_WORKER_PROJECTS
# (100), BENCH_E2E_RATE (events/s offered, 10000), BENCH_E2E_SECONDS (30; quick 10),
# BENCH_WRITE_DOCS (1 for a full run: splice the results into docs/BENCHMARKS.md).

# The bench runs its own development broker (started fresh, stopped at exit), so its memory and CPU
# are the bench's alone; Postgres and Redis are the machine's (lib.sh).
# The whole script is one compound command, read before any of it runs, so editing this file
# while a run is under way cannot change that run.
{
export DEV_BROKER_DIR=${DEV_BROKER_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/bench/broker}
source "$(dirname "$0")/lib.sh"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  SECS=${BENCH_SECONDS:-5} WORKER_EVENTS=${BENCH_WORKER_EVENTS:-50000} E2E_SECONDS=${BENCH_E2E_SECONDS:-10}
  WRITE_DOCS=${BENCH_WRITE_DOCS:-0}
else
  SECS=${BENCH_SECONDS:-15} WORKER_EVENTS=${BENCH_WORKER_EVENTS:-500000} E2E_SECONDS=${BENCH_E2E_SECONDS:-30}
  WRITE_DOCS=${BENCH_WRITE_DOCS:-1}
fi
CONNECTIONS=${BENCH_CONNECTIONS:-32 256}
WORKER_PROJECTS=${BENCH_WORKER_PROJECTS:-100}
E2E_RATE=${BENCH_E2E_RATE:-10000}
# The development broker (librdkafka's mock cluster) keeps only about 5 MB per partition and drops
# the oldest messages beyond that, silently: ~36,000 envelopes per partition. A backlog's keys
# (project:userId) are 100 users per project, unevenly hashed, so a 500,000-envelope backlog of one
# project needs far more than the usual 12 partitions (24 still lost 1.2%). The load topic keeps 12.
PARTITIONS=${BENCH_PARTITIONS:-48}
PROFILE=${BENCH_PROFILE:-0}
HALF_RUNS=${BENCH_HALF_RUNS:-$([ "$QUICK" = 1 ] && echo 1 || echo 3)}
# BENCH_ONLY=worker or =gateway: only the worker scenarios (section 4) or the gateway's (1–3),
# printed, nothing written to the docs (for what-if runs of one setting).
ONLY=${BENCH_ONLY:-all}
PORT=${BENCH_PORT:-3900}
WORKER_PORT=${BENCH_WORKER_PORT:-3901}
OUT="$ROOT/target/bench"
BENCH_DIR="$ROOT/scripts/bench"
DOCS="$ROOT/docs/BENCHMARKS.md"
mkdir -p "$OUT"
rm -f "$OUT"/*.txt "$OUT"/*.json "$OUT"/cpu.* "$OUT"/results.md

# --- tools ----------------------------------------------------------------------------------------
command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v jq >/dev/null 2>&1 || apt_install jq
if ! command -v oha >/dev/null 2>&1; then
  log "installing oha (constant-rate HTTP load) from crates.io"
  cargo install oha --locked --quiet
fi
if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null 2>&1 || apt_install linux-perf
  if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    log "installing inferno (flamegraphs) from crates.io"
    cargo install inferno --locked --quiet
  fi
fi

log "building release binaries"
cargo build --release --quiet -p gamify-api --bin gamify-api -p gamify-worker --bin gamify-worker \
  -p gamify-dev-broker --bin gamify-dev-broker
API_BIN=${BENCH_API_BIN:-$ROOT/target/release/gamify-api}
WORKER_BIN="$ROOT/target/release/gamify-worker"

# --- the stack --------------------------------------------------------------------------------------
broker_pid=""
api_pid=""
worker_pid=""
cleanup() {
  for pid in $worker_pid $api_pid $broker_pid; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ -z "${KAFKA_BROKERS:-}" ]; then
  # A fresh in-memory broker of release build for this run (lib.sh's ensure_broker then finds it).
  if [ -f "$DEV_BROKER_DIR/broker.pid" ]; then kill "$(cat "$DEV_BROKER_DIR/broker.pid")" 2>/dev/null || true; fi
  rm -rf "$DEV_BROKER_DIR"
  mkdir -p "$DEV_BROKER_DIR"
  "$ROOT/target/release/gamify-dev-broker" serve --dir "$DEV_BROKER_DIR" >"$DEV_BROKER_DIR/broker.log" 2>&1 </dev/null &
  broker_pid=$!
  echo "$broker_pid" >"$DEV_BROKER_DIR/broker.pid"
fi

TOPIC_LOAD=gamify.bench.load TOPIC_W1=gamify.bench.w1 TOPIC_W100=gamify.bench.w100 TOPIC_E2E=gamify.bench.e2e
TOPIC_PROFILE=gamify.bench.profile
export KAFKA_TOPIC=$TOPIC_LOAD KAFKA_DLQ_TOPIC=gamify.bench.dlq
provision gamify_bench fresh
# Postgres is on loopback here: TLS would only add encryption on both sides of every row (Debian's
# Postgres offers it, and sqlx's default sslmode=prefer takes it). See OPERATIONS.md.
export DATABASE_URL="$DATABASE_URL?sslmode=disable" DATABASE_OWNER_URL="$DATABASE_OWNER_URL?sslmode=disable"
[ -n "$broker_pid" ] || broker_pid=$(pgrep -f 'gamify-dev-broker serve' | head -n 1 || true)
if [ -n "${DEV_BROKER_DIR:-}" ]; then
  for topic in $TOPIC_W1 $TOPIC_W100 $TOPIC_E2E $TOPIC_PROFILE; do
    dev_broker ctl --dir "$DEV_BROKER_DIR" create-topic "$topic" "$PARTITIONS" >/dev/null
  done
fi
"$API_BIN" migrate >/dev/null

export PORT WORKER_PORT RUST_LOG=warn
export ADMIN_TOKEN="adm_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CLIENT_RATE_LIMIT_PER_SECOND=10000000 CLIENT_RATE_LIMIT_BURST=100000000
export SECRET_KEY_RATE_LIMIT_PER_SECOND=10000000 SECRET_KEY_RATE_LIMIT_BURST=100000000
export PROJECT_RATE_LIMIT_PER_SECOND=10000000 PROJECT_RATE_LIMIT_BURST=100000000
API="http://127.0.0.1:$PORT"
api_hwm_kb=0

vm_hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_api() { # start_api TOPIC: a gamify-api producing to TOPIC
  KAFKA_TOPIC=$1 "$API_BIN" serve >>"$OUT/api.log" 2>&1 &
  api_pid=$!
  wait_for 30 "gamify-api" curl -fsS "$API/readyz"
}
stop_api() {
  local hwm
  hwm=$(vm_hwm "$api_pid")
  [ "$hwm" -gt "$api_hwm_kb" ] && api_hwm_kb=$hwm
  kill "$api_pid" 2>/dev/null || true
  wait "$api_pid" 2>/dev/null || true
  api_pid=""
}

AUTH="Authorization: Bearer $ADMIN_TOKEN"
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }
post() { curl -fsS -X POST "$API$1" -H "$AUTH" -H 'Content-Type: application/json' -d "$2"; }
new_project() { # new_project NAME → "PROJECT_ID PUBLISHABLE_KEY"
  local project key
  project=$(post /v1/projects "{\"organizationId\":\"$org\",\"name\":\"$1\"}" | field id)
  key=$(post "/v1/projects/$project/api-keys" '{"name":"bench","type":"publishable"}' | field key)
  echo "$project $key"
}

start_api "$TOPIC_LOAD"
org=$(post /v1/organizations '{"name":"bench"}' | field id)
read -r load_project GAMIFY_KEY <<<"$(new_project load)"
read -r w1_project w1_key <<<"$(new_project worker-1)"
read -r e2e_project e2e_key <<<"$(new_project e2e)"
read -r _ prof_key <<<"$(new_project profile)"
w100_projects=() w100_keys=()
for i in $(seq 1 "$WORKER_PROJECTS"); do
  read -r p k <<<"$(new_project "worker-100-$i")"
  w100_projects+=("$p") w100_keys+=("$k")
done
export GAMIFY_KEY

# The body of every batch request outside wrk: 100 events, no messageId (the gateway assigns one, so
# every event is distinct).
batch_body="$OUT/batch-100.json"
{
  printf '{"batch":['
  for i in $(seq 1 100); do
    [ "$i" -gt 1 ] && printf ','
    printf '{"event":"click","userId":"u%d","properties":{"i":%d,"page":"/products/%d"}}' "$i" "$i" $((i % 50))
  done
  printf ']}'
} >"$batch_body"
track_body='{"event":"page_view","userId":"u42","properties":{"page":"/products/42"}}'

# --- measuring ---------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# cpu_mark FILE: "group pid ticks" for the processes of each group, and the machine's busy ticks.
cpu_mark() {
  local pid cmd
  {
    [ -n "$api_pid" ] && echo "api $api_pid $(ticks "$api_pid")"
    [ -n "$worker_pid" ] && echo "worker $worker_pid $(ticks "$worker_pid")"
    [ -n "$broker_pid" ] && echo "broker $broker_pid $(ticks "$broker_pid")"
    for pid in $(pgrep -x postgres); do
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
      # this database's backends and the cluster's shared processes, not other databases' backends
      case "$cmd" in
        *gamify_bench*) ;;
        *"("*|*"[local]"*|*"autovacuum worker"*) continue ;;
      esac
      echo "postgres $pid $(ticks "$pid")"
    done
    for pid in $(pgrep -x redis-server); do echo "redis $pid $(ticks "$pid")"; done
    for pid in $(pgrep -x wrk; pgrep -x oha); do echo "loadgen $pid $(ticks "$pid")"; done
    awk '/^cpu / {print "machine 0", $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
    echo "clock 0 $(date +%s%N)"
  } >"$1"
}
# cpu_row NAME BEFORE AFTER: one table row, % of one core per group over the interval.
cpu_row() {
  awk -v name="$1" -v hz="$CLK_TCK" '
    FNR == NR { before[$1 " " $2] = $3; next }
    { delta[$1] += $3 - (($1 " " $2) in before ? before[$1 " " $2] : 0) }
    END {
      secs = delta["clock"] / 1e9
      split("api worker broker postgres redis loadgen", g, " ")
      row = "| " name
      for (i = 1; i <= 6; i++) { pct[i] = delta[g[i]] / hz / secs * 100; sum += pct[i]; row = row sprintf(" | %.0f%%", pct[i]) }
      total = delta["machine"] / hz / secs * 100
      printf "%s | %.0f%% | %.0f%% |\n", row, total - sum, total
    }' "$2" "$3" >>"$OUT/cpu.rows"
}

# cpu_per_request NAME GROUP RATE: microseconds of CPU that GROUP (api, loadgen, machine…) spent per
# request (or event) at RATE per second, over the marks of scenario NAME.
cpu_per_request() {
  awk -v g="$2" -v rate="$3" -v hz="$CLK_TCK" '
    FNR == NR { before[$1 " " $2] = $3; next }
    { delta[$1] += $3 - (($1 " " $2) in before ? before[$1 " " $2] : 0) }
    END { secs = delta["clock"] / 1e9; if (rate > 0 && secs > 0) printf "%.1f", delta[g] / hz / secs / rate * 1e6; else print "–" }
  ' "$OUT/cpu.$1.a" "$OUT/cpu.$1.b"
}

to_ms() { # wrk durations (123.45us, 1.23ms, 1.02s) → milliseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.2f", v * 60000 }
    else { sub(/s$/, "", v); printf "%.2f", v * 1000 } }'
}

# wrk_run NAME CONNECTIONS [wrk args...]: runs wrk for SECS with 2 threads; sets RPS P50 P99 NON2XX
# and records the CPU split over the middle of the run; the raw output is kept in target/bench.
wrk_run() {
  local name=$1 conns=$2; shift 2
  local cmd=(wrk -t2 -c"$conns" -d"${SECS}s" --latency "$@")
  echo "${cmd[*]}" | sed "s#$ROOT/##g" >"$OUT/$name.cmd"
  "${cmd[@]}" >"$OUT/$name.txt" 2>&1 &
  local pid=$!
  sleep 1; cpu_mark "$OUT/cpu.$name.a"; sleep $((SECS - 2)); cpu_mark "$OUT/cpu.$name.b"
  wait "$pid"
  cpu_row "$name" "$OUT/cpu.$name.a" "$OUT/cpu.$name.b"
  RPS=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$OUT/$name.txt")
  P50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$OUT/$name.txt")")
  P99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$OUT/$name.txt")")
  NON2XX=$(awk '/Non-2xx/ {print $5}' "$OUT/$name.txt"); NON2XX=${NON2XX:-0}
  ERRS=$(awk '/Socket errors/ {print $0}' "$OUT/$name.txt")
}

# oha_run NAME [oha args...]: JSON output in target/bench/NAME.json; sets RPS P50 P99 OK NOTOK.
oha_run() {
  local name=$1; shift
  local cmd=(oha --no-tui --output-format json "$@")
  echo "${cmd[*]}" | sed "s#$ROOT/##g" >"$OUT/$name.cmd"
  "${cmd[@]}" >"$OUT/$name.json" 2>"$OUT/$name.err"
  RPS=$(jq '.summary.requestsPerSec | floor' "$OUT/$name.json")
  P50=$(jq '.latencyPercentiles.p50 * 1000 * 100 | round / 100' "$OUT/$name.json")
  P99=$(jq '.latencyPercentiles.p99 * 1000 * 100 | round / 100' "$OUT/$name.json")
  OK=$(jq '[.statusCodeDistribution | to_entries[] | select(.key | startswith("2")) | .value] | add // 0' "$OUT/$name.json")
  NOTOK=$(jq '([.statusCodeDistribution | to_entries[] | select(.key | startswith("2") | not) | .value] | add // 0)
    + ([.errorDistribution // {} | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)' "$OUT/$name.json")
}

metric() { curl -fsS "http://127.0.0.1:$WORKER_PORT/metrics" 2>/dev/null | awk -v m="$1" '$1 == m {print $2}'; }
worker_done() { # messages the worker finished with: stored, failed, duplicates, dead-lettered
  local sum=0 v
  for m in gamify_worker_events_persisted_total gamify_worker_events_failed_total \
    gamify_worker_duplicates_total gamify_worker_messages_dead_lettered_total; do
    v=$(metric "$m"); v=${v%.*}; sum=$((sum + ${v:-0}))
  done 2>/dev/null
  echo "$sum"
}
worker_hwm_kb=0
start_worker() { # start_worker TOPIC: a gamify-worker with a fresh consumer group on TOPIC
  KAFKA_TOPIC=$1 KAFKA_GROUP_ID="bench-$1-$(date +%s%N)" "$WORKER_BIN" >>"$OUT/worker.log" 2>&1 &
  worker_pid=$!
}
stop_worker() {
  local hwm
  hwm=$(vm_hwm "$worker_pid")
  [ "$hwm" -gt "$worker_hwm_kb" ] && worker_hwm_kb=$hwm
  kill "$worker_pid" 2>/dev/null || true
  wait "$worker_pid" 2>/dev/null || true
  worker_pid=""
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
psql_bench() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d gamify_bench "$@"; }

# drain NAME TOPIC EXPECTED PROJECT_IDS...: a worker drains TOPIC's backlog; then the same rows are
# COPYed into an unconstrained table. Appends a row to the worker table.
drain() {
  local name=$1 topic=$2 expected=$3; shift 3
  local ids t0 t_first="" t_end="" done_n=0 deadline ws copy_s schema_s stored failed last_n="" last_change=0 last_t=""
  ids="{$(IFS=,; echo "$*")}"
  t0=$(now)
  deadline=$(($(date +%s) + 120 + expected / 500))
  start_worker "$topic"
  cpu_marked=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    done_n=$(worker_done)
    if [ -z "$t_first" ] && [ "${done_n:-0}" -gt 0 ]; then
      t_first=$(now); cpu_mark "$OUT/cpu.$name.a"
    fi
    if [ "${done_n:-0}" -ge "$expected" ]; then t_end=$(now); break; fi
    if [ "${done_n:-0}" != "${last_n:-}" ]; then last_n=$done_n last_change=$(date +%s)
    elif [ -n "$t_first" ] && [ $(($(date +%s) - last_change)) -ge 20 ]; then
      log "the worker stalled at $done_n of $expected for 20 s: the broker no longer holds the rest"
      t_end=$last_t; break
    fi
    last_t=$(now)
    sleep 0.2
  done
  if [ -n "$t_end" ]; then cpu_mark "$OUT/cpu.$name.b"; cpu_row "$name" "$OUT/cpu.$name.a" "$OUT/cpu.$name.b"; fi
  # Where the worker's loop spent the drain: writing batches, or waiting for the next one.
  awk -v n="$name" -v c="$(metric gamify_worker_batch_duration_seconds_count)" \
    -v size="$(metric gamify_worker_batch_size_sum)" -v busy="$(metric gamify_worker_batch_duration_seconds_sum)" \
    -v idle="$(metric gamify_worker_batch_wait_seconds_sum)" 'BEGIN {
      if (c == 0) c = 1
      printf "| %s | %d | %.0f | %.1f ms | %.1f s | %.1f s |\n", n, c, size / c, busy / c * 1000, busy, idle
    }' >>"$OUT/worker.loop"
  stop_worker
  [ -n "$t_first" ] || t_first=$t0
  [ -n "$t_end" ] || t_end=$(now)
  stored=$(psql_bench -tAc "SELECT count(*) FROM events WHERE project_id = ANY('$ids'::uuid[]) AND status = 'processed'")
  failed=$(psql_bench -tAc "SELECT count(*) FROM events WHERE project_id = ANY('$ids'::uuid[]) AND status <> 'processed'")

  # The same rows, COPYed into a copy of events without indexes, keys, checks, partitions or RLS.
  psql_bench -c "DROP TABLE IF EXISTS bench_events_raw" -c "CREATE TABLE bench_events_raw (LIKE events)" \
    -c "\\copy (SELECT * FROM events WHERE project_id = ANY('$ids'::uuid[])) TO '$OUT/$name.rows'"
  local c0 c1 s0 s1 scratch cols="id, project_id, message_id, event_type, user_id, anonymous_id, payload, context, key_id, key_type, status, error_details, occurred_at, received_at, created_at, processed_at"
  c0=$(now)
  psql_bench -c "\\copy bench_events_raw FROM '$OUT/$name.rows'"
  c1=$(now)
  psql_bench -c "DROP TABLE bench_events_raw"
  # The same rows COPYed into the real tables (partitions, indexes, checks; as superuser, so
  # without row-level security) with their dedup keys, under a scratch project: what the schema
  # itself costs per row, with no worker, no round trips and no deduplication logic.
  scratch=$(psql_bench -tAc "INSERT INTO projects (id, organization_id, name)
    SELECT gen_random_uuid(), organization_id, 'bench-copy-' || gen_random_uuid() FROM projects LIMIT 1 RETURNING id")
  psql_bench -c "\\copy (SELECT id, '$scratch'::uuid, ${cols#id, project_id, } FROM events WHERE project_id = ANY('$ids'::uuid[])) TO '$OUT/$name.rows'" \
    -c "\\copy (SELECT '$scratch'::uuid, key_type, message_id, event_id, occurred_at, created_at FROM event_message_ids WHERE project_id = ANY('$ids'::uuid[])) TO '$OUT/$name.keys'"
  s0=$(now)
  psql_bench -c "\\copy event_message_ids (project_id, key_type, message_id, event_id, occurred_at, created_at) FROM '$OUT/$name.keys'" \
    -c "\\copy events ($cols) FROM '$OUT/$name.rows'"
  s1=$(now)
  psql_bench -c "DELETE FROM projects WHERE id = '$scratch'"
  rm -f "$OUT/$name.rows" "$OUT/$name.keys"
  copy_s=$(elapsed "$c0" "$c1")
  schema_s=$(elapsed "$s0" "$s1")
  ws=$(elapsed "$t_first" "$t_end")
  awk -v n="$name" -v p="$#" -v e="$expected" -v s="$stored" -v f="$failed" -v wall="$(elapsed "$t0" "$t_end")" \
    -v ws="$ws" -v cs="$copy_s" -v ss="$schema_s" -v done_n="$done_n" 'BEGIN {
      wr = s / ws; cr = s / cs; sr = s / ss
      printf "| %s | %d | %d | %d | %d | %.1f s | %.1f s | **%.0f** | %.2f s | %.0f | **%.2f×** | %.2f s | %.0f | %.2f× |\n",
        n, p, e, s, f, wall, ws, wr, cs, cr, wr / cr, ss, sr, wr / sr
      printf "%.0f %.0f %.2f %.0f %.2f\n", wr, cr, wr / cr, sr, wr / sr > "/dev/stderr"
    }' >>"$OUT/worker.rows" 2>>"$OUT/worker.figures"
}

if [ "$ONLY" != worker ]; then
# --- 1–3: gateway ---------------------------------------------------------------------------------
log "warming the key cache"
curl -fsS -o /dev/null -X POST "$API/v1/events/track" -H "x-api-key: $GAMIFY_KEY" \
  -H 'Content-Type: application/json' -d "$track_body"

: >"$OUT/gateway.rows"
: >"$OUT/half.rows"
best_track=0 best_track_base=0 best_conns=0
for c in $CONNECTIONS; do
  log "baseline /healthz and track, $c connections, ${SECS}s each"
  wrk_run "healthz-c$c" "$c" "$API/healthz"
  base=$RPS
  [ "$base" -gt "${best_base_any:-0}" ] && best_base_any=$base
  echo "| no-op \`GET /healthz\` (baseline) | $c | $base | – | $P50 | $P99 | $NON2XX | 1.00× | $(cpu_per_request "healthz-c$c" api "$RPS") | $(cpu_per_request "healthz-c$c" loadgen "$RPS") | $(cpu_per_request "healthz-c$c" machine "$RPS") | \`$(cat "$OUT/healthz-c$c.cmd")\` |" >>"$OUT/gateway.rows"
  wrk_run "track-c$c" "$c" -s "$BENCH_DIR/track.lua" "$API"
  ratio=$(awk -v a="$RPS" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
  echo "| track, 1 event/request | $c | $RPS | $RPS | $P50 | $P99 | $NON2XX | **${ratio}×** | $(cpu_per_request "track-c$c" api "$RPS") | $(cpu_per_request "track-c$c" loadgen "$RPS") | $(cpu_per_request "track-c$c" machine "$RPS") | \`GAMIFY_KEY=pk_… $(cat "$OUT/track-c$c.cmd")\` |" >>"$OUT/gateway.rows"
  if [ "$RPS" -gt "$best_track" ]; then best_track=$RPS best_track_base=$base best_conns=$c; fi
done

half=$((best_track / 2))
# A p99 is decided by 1 % of the requests: one stall of the shared machine (or of the development
# broker's single thread) of ~100 ms in a 15 s run is enough to move it tenfold. The scenario runs
# BENCH_HALF_RUNS times; the target is judged on the median, every run is shown. *Inside gamify-api
# > 10 ms* is the share of requests that took longer than 10 ms by the gateway's own histogram
# (which includes waiting for the broker's acknowledgement), beside oha's percentiles from outside.
track_slow() { # requests of /v1/events/track so far: "TOTAL WITHIN_10_MS"
  curl -fsS "$API/metrics" | awk '
    /^gamify_http_request_duration_seconds_count\{route="\/v1\/events\/track"\}/ {n = $2}
    /^gamify_http_request_duration_seconds_bucket\{route="\/v1\/events\/track",le="0.01"\}/ {f = $2}
    END {print n + 0, f + 0}'
}
half_p99s=()
for run in $(seq 1 "$HALF_RUNS"); do
  log "track at a constant $half requests/s (half the best), ${SECS}s, run $run of $HALF_RUNS"
  read -r n0 f0 <<<"$(track_slow)"
  oha_run "track-half-$run" -z "${SECS}s" -c "$best_conns" -q "$half" --latency-correction -m POST -H "x-api-key: $GAMIFY_KEY" \
    -H 'Content-Type: application/json' -d "$track_body" "$API/v1/events/track"
  read -r n1 f1 <<<"$(track_slow)"
  half_p99s+=("$P99")
  inside=$(awk -v n=$((n1 - n0)) -v f=$((f1 - f0)) 'BEGIN {printf "%.2f", n ? 100 * (n - f) / n : 0}')
  echo "| track at a constant $half requests/s (half the best), run $run of $HALF_RUNS | $best_conns | $RPS | $RPS | $P50 | $P99 | $NOTOK | – | – | – | – | \`$(sed "s/$GAMIFY_KEY/pk_…/" "$OUT/track-half-$run.cmd")\` |" >>"$OUT/gateway.rows"
  echo "| $run | $P50 | $(jq '.latencyPercentiles.p95 * 1000 * 100 | round / 100' "$OUT/track-half-$run.json") | $P99 | $(jq '.latencyPercentiles["p99.9"] * 1000 * 100 | round / 100' "$OUT/track-half-$run.json") | $(jq '.summary.slowest * 1000 * 100 | round / 100' "$OUT/track-half-$run.json") | ${inside} % |" >>"$OUT/half.rows"
done
half_p99=$(printf '%s\n' "${half_p99s[@]}" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
half_all=$(printf '%s / ' "${half_p99s[@]}"); half_all=${half_all% / }

log "batch of 100, 32 connections, ${SECS}s"
wrk_run batch-c32 32 -s "$BENCH_DIR/batch.lua" "$API"
batch_eps=$((RPS * 100))
echo "| batch, 100 events/request (CPU per event) | 32 | $RPS | **$batch_eps** | $P50 | $P99 | $NON2XX | $(awk -v a="$batch_eps" -v b="$best_base_any" 'BEGIN {printf "%.2f", a / b}')× (events) | $(cpu_per_request batch-c32 api "$batch_eps") | $(cpu_per_request batch-c32 loadgen "$batch_eps") | $(cpu_per_request batch-c32 machine "$batch_eps") | \`GAMIFY_KEY=pk_… $(cat "$OUT/batch-c32.cmd")\` |" >>"$OUT/gateway.rows"

if [ "$PROFILE" = 1 ]; then
  log "profiling gamify-api under track load ($best_conns connections)"
  wrk -t2 -c"$best_conns" -d25s -s "$BENCH_DIR/track.lua" "$API" >"$OUT/profile-track.txt" 2>&1 &
  prof_wrk=$!
  sleep 3
  perf record -e cpu-clock -F 299 --call-graph dwarf,8192 -p "$api_pid" -o "$OUT/api.perf.data" -- sleep 15 2>"$OUT/perf-api.err" >/dev/null
  wait "$prof_wrk"
fi
fi
stop_api
if [ "$ONLY" = gateway ]; then
  cat "$OUT/cpu.rows" "$OUT/gateway.rows" "$OUT/half.rows"
  exit 0
fi

# --- 4: worker draining a pre-produced backlog ----------------------------------------------------------
per_request=100
requests=$((WORKER_EVENTS / per_request))
w1_expected=$((requests * per_request))
log "producing $w1_expected envelopes for 1 project through the batch endpoint"
start_api "$TOPIC_W1"
oha_run produce-w1 -n "$requests" -c 32 -m POST -H "x-api-key: $w1_key" -H 'Content-Type: application/json' \
  -D "$batch_body" "$API/v1/events/batch"
[ "$NOTOK" = 0 ] || die "producing the 1-project backlog: $NOTOK requests failed (see $OUT/produce-w1.json)"
produce_w1_eps=$((RPS * per_request))
stop_api

per_project=$((requests / WORKER_PROJECTS))
[ "$per_project" -gt 0 ] || per_project=1
w100_expected=$((per_project * WORKER_PROJECTS * per_request))
log "producing $w100_expected envelopes for $WORKER_PROJECTS projects"
start_api "$TOPIC_W100"
for k in "${w100_keys[@]}"; do
  oha_run produce-w100 -n "$per_project" -c 16 -m POST -H "x-api-key: $k" -H 'Content-Type: application/json' \
    -D "$batch_body" "$API/v1/events/batch"
  [ "$NOTOK" = 0 ] || die "producing the $WORKER_PROJECTS-project backlog: $NOTOK requests failed"
done
stop_api

: >"$OUT/worker.rows"
: >"$OUT/worker.figures"
: >"$OUT/worker.loop"
log "worker draining $w1_expected envelopes of 1 project"
drain "drain, 1 project" "$TOPIC_W1" "$w1_expected" "$w1_project"
log "worker draining $w100_expected envelopes of $WORKER_PROJECTS projects"
drain "drain, $WORKER_PROJECTS projects" "$TOPIC_W100" "$w100_expected" "${w100_projects[@]}"

if [ "$ONLY" = worker ]; then
  cat "$OUT/cpu.rows" 2>/dev/null || true
  cat "$OUT/worker.rows" "$OUT/worker.loop"
  exit 0
fi

# --- 5: end to end at a constant offered rate ---------------------------------------------------------------
log "end to end: $E2E_RATE events/s for ${E2E_SECONDS}s, worker running"
start_api "$TOPIC_E2E"
start_worker "$TOPIC_E2E"
sleep 5 # the worker joins its group and the api warms its key cache
curl -fsS -o /dev/null -X POST "$API/v1/events/track" -H "x-api-key: $e2e_key" -H 'Content-Type: application/json' -d "$track_body"
oha -z "${E2E_SECONDS}s" -c 256 -q "$E2E_RATE" --latency-correction --no-tui --output-format json -m POST \
  -H "x-api-key: $e2e_key" -H 'Content-Type: application/json' -d "$track_body" "$API/v1/events/track" \
  >"$OUT/e2e.json" 2>"$OUT/e2e.err" &
e2e_pid=$!
echo "oha -z ${E2E_SECONDS}s -c 256 -q $E2E_RATE --latency-correction --no-tui --output-format json -m POST -H 'x-api-key: pk_…' -H 'Content-Type: application/json' -d '$track_body' $API/v1/events/track" >"$OUT/e2e.cmd"
sleep 2; cpu_mark "$OUT/cpu.e2e.a"; sleep $((E2E_SECONDS - 4)); cpu_mark "$OUT/cpu.e2e.b"
wait "$e2e_pid"
cpu_row "end to end at $E2E_RATE/s" "$OUT/cpu.e2e.a" "$OUT/cpu.e2e.b"
e2e_rps=$(jq '.summary.requestsPerSec | floor' "$OUT/e2e.json")
e2e_req_p50=$(jq '.latencyPercentiles.p50 * 1000 * 100 | round / 100' "$OUT/e2e.json")
e2e_req_p99=$(jq '.latencyPercentiles.p99 * 1000 * 100 | round / 100' "$OUT/e2e.json")
e2e_accepted=$(jq '[.statusCodeDistribution | to_entries[] | select(.key | startswith("2")) | .value] | add // 0' "$OUT/e2e.json")
e2e_rejected=$(jq '([.statusCodeDistribution | to_entries[] | select(.key | startswith("2") | not) | .value] | add // 0)
  + ([.errorDistribution // {} | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)' "$OUT/e2e.json")
# +1: the warm-up event
deadline=$(($(date +%s) + 60))
while [ "$(worker_done)" -lt $((e2e_accepted + 1)) ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
stop_worker
api_rss_end=$(vm_hwm "$api_pid")
stop_api
read -r e2e_rows e2e_p50 e2e_p99 e2e_max <<<"$(psql_bench -tA -F ' ' -c "
  SELECT count(*),
         round((percentile_cont(0.5) WITHIN GROUP (ORDER BY lat))::numeric, 1),
         round((percentile_cont(0.99) WITHIN GROUP (ORDER BY lat))::numeric, 1),
         round(max(lat)::numeric, 1)
  FROM (SELECT extract(epoch FROM created_at - received_at) * 1000 AS lat
        FROM events WHERE project_id = '$e2e_project') l")"

# --- profile of the worker ---------------------------------------------------------------------------
if [ "$PROFILE" = 1 ]; then
  log "profiling gamify-worker draining a fresh backlog of 1 project"
  start_api "$TOPIC_PROFILE"
  oha -n "$requests" -c 32 --no-tui -m POST -H "x-api-key: $prof_key" -H 'Content-Type: application/json' \
    -D "$batch_body" "$API/v1/events/batch" >/dev/null
  stop_api
  start_worker "$TOPIC_PROFILE"
  # The drain takes seconds now: record from its first stored event, for less than it lasts.
  deadline=$(($(date +%s) + 60))
  while [ "$(worker_done)" -lt 1000 ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  perf record -e cpu-clock -F 299 --call-graph dwarf,8192 -p "$worker_pid" -o "$OUT/worker.perf.data" -- sleep 6 2>"$OUT/perf-worker.err" >/dev/null &
  perf_pid=$!
  perf record -e cpu-clock -F 199 -a -g -o "$OUT/system.perf.data" -- sleep 6 2>"$OUT/perf-system.err" >/dev/null
  wait "$perf_pid"
  stop_worker
fi

# --- report ---------------------------------------------------------------------------------------------
api_hwm_kb=$(( api_rss_end > api_hwm_kb ? api_rss_end : api_hwm_kb ))
rev=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no -- apps libs migrations Cargo.toml Cargo.lock | wc -l)
[ "$dirty" -gt 0 ] && rev="$rev (+ uncommitted changes to $dirty Rust files)"
read -r w1_eps w1_copy w1_ratio w1_schema w1_schema_ratio <<<"$(sed -n 1p "$OUT/worker.figures")"
read -r w100_eps w100_copy w100_ratio w100_schema w100_schema_ratio <<<"$(sed -n 2p "$OUT/worker.figures")"
best_ratio=$(awk -v a="$best_track" -v b="$best_track_base" 'BEGIN {printf "%.2f", a / b}')
status() { if awk "BEGIN {exit !($1)}"; then echo "**met**"; else echo "**missed**"; fi; }

{
  echo "<!-- bench:begin — generated by scripts/bench.sh; edit the script, not this section -->"
  echo "## Results"
  echo
  echo "- **Date**: $(date -u '+%Y-%m-%d %H:%M UTC'); **revision**: \`$rev\`"
  echo "- **Machine**: $(nproc) × $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "- **Load average** at start: ${BENCH_LOAD_AT_START:-$(cut -d ' ' -f 1-3 /proc/loadavg)}; at end: $(cut -d ' ' -f 1-3 /proc/loadavg) (the machine is shared: see \"other\" in the CPU table)"
  echo "- **Command**: \`$( [ "$QUICK" = 1 ] && printf 'BENCH_QUICK=1 ')./scripts/bench.sh\` — ${SECS}s per gateway scenario, $WORKER_EVENTS-envelope backlogs, ${E2E_SECONDS}s end to end; $(wrk --version 2>&1 | head -n 1 | cut -d ' ' -f 1-2), $(oha --version); raw outputs in \`target/bench/\`"
  echo "- Everything on this one machine: gamify-api and gamify-worker (release), gamify-dev-broker (release, in memory, fresh), Postgres $(psql_bench -tAc 'SHOW server_version' | cut -d ' ' -f 1) (shared_buffers $(psql_bench -tAc 'SHOW shared_buffers'), synchronous_commit $(psql_bench -tAc 'SHOW synchronous_commit')), Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d = -f 2), and the load generator."
  echo
  echo "### Targets"
  echo
  echo "| target | measured (same run) | status |"
  echo "|---|---|---|"
  echo "| single-event track ≥ 0.5× the no-op route at the same concurrency | ${best_track}/s vs ${best_track_base}/s at $best_conns connections = ${best_ratio}× | $(status "$best_ratio >= 0.5") |"
  echo "| track p99 ≤ 10 ms at half that load | p99 ${half_p99} ms, the median of $HALF_RUNS runs (${half_all} ms) at a constant ${half}/s | $(status "$half_p99 <= 10") |"
  echo "| batch track ≥ 300,000 events/s | $batch_eps events/s | $(status "$batch_eps >= 300000") |"
  echo "| worker ≥ 50,000 events/s, 1 project | $w1_eps events/s | $(status "$w1_eps >= 50000") |"
  echo "| worker ≥ 0.5× raw COPY, 1 project | ${w1_ratio}× ($w1_copy rows/s by COPY; COPY into the real tables: $w1_schema rows/s, the worker ${w1_schema_ratio}× that) | $(status "$w1_ratio >= 0.5") |"
  echo "| worker ≥ 50,000 events/s, $WORKER_PROJECTS projects | $w100_eps events/s | $(status "$w100_eps >= 50000") |"
  echo "| worker ≥ 0.5× raw COPY, $WORKER_PROJECTS projects | ${w100_ratio}× ($w100_copy rows/s by COPY; COPY into the real tables: $w100_schema rows/s, the worker ${w100_schema_ratio}× that) | $(status "$w100_ratio >= 0.5") |"
  echo "| end to end p99 ≤ 500 ms at $E2E_RATE events/s | p99 ${e2e_p99} ms, ${e2e_rps}/s achieved | $(status "$e2e_p99 <= 500 && $e2e_rps >= $E2E_RATE * 0.95") |"
  echo "| gamify-api peak RSS ≤ 100 MB | $((api_hwm_kb / 1024)) MiB | $(status "$api_hwm_kb <= 97656") |"
  echo "| gamify-worker peak RSS ≤ 150 MB | $((worker_hwm_kb / 1024)) MiB | $(status "$worker_hwm_kb <= 146484") |"
  echo
  echo "### 1–3. Gateway"
  echo
  echo "Publishable key (key cache warm), rate limits raised out of the way, every accepted request"
  echo "acknowledged by the broker (acks=all, idempotent producer). The no-op route is the same server's"
  echo "\`/healthz\`, measured just before, at the same concurrency. Latencies are wrk's (or oha's,"
  echo "corrected for coordinated omission)."
  echo
  echo "*CPU µs/request* is CPU time per request (per event for batch) over the middle of the scenario:"
  echo "of gamify-api, of the load generator, and of the whole machine (both cores, everything on them)."
  echo "They tell where a request's cost lies whatever the machine's speed that day. Batch has no no-op"
  echo "counterpart; its ÷ column is events/s over the best \`/healthz\` requests/s of the run."
  echo
  echo "| scenario | connections | requests/s | events/s | p50 ms | p99 ms | non-2xx | ÷ no-op | api CPU µs/request | load generator µs | machine µs | command |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  cat "$OUT/gateway.rows"
  echo
  echo "Track at half the best rate, each run (oha, latency-corrected, ms; the target takes the median"
  echo "p99). *Inside gamify-api > 10 ms* is the share of these requests that took over 10 ms by the"
  echo "gateway's own \`gamify_http_request_duration_seconds\` (which includes waiting for the broker's"
  echo "acknowledgement); oha's p99 above 10 ms with this share under 1 % puts the tail outside the"
  echo "gateway's handling (the kernel, the scheduler, the load generator)."
  echo
  echo "| run | p50 | p95 | p99 | p99.9 | slowest | inside gamify-api > 10 ms |"
  echo "|---|---|---|---|---|---|---|"
  cat "$OUT/half.rows"
  echo
  echo "### 4. Worker"
  echo
  echo "Backlogs produced through \`POST /v1/events/batch\` (100 per request; 1 project: $produce_w1_eps"
  echo "events/s produced) before a release gamify-worker starts with a fresh consumer group"
  echo "(default settings: see docs/WORKER.md) on a topic of $PARTITIONS partitions. *Drain* is from the first to the last stored event"
  echo "(the worker's counters, polled every 0.2 s); *wall* also counts start-up and joining the group."
  echo "*COPY* is \`\\copy bench_events_raw FROM …\` of the very rows stored, into"
  echo "\`CREATE TABLE bench_events_raw (LIKE events)\` (no indexes, keys, checks, partitions, RLS), right after."
  echo "*COPY into the real tables* is the same rows and their dedup keys \`\\copy\`ed into \`events\` and"
  echo "\`event_message_ids\` themselves (partitions, primary keys, indexes, checks; as superuser, so without"
  echo "row-level security) under a scratch project: what the schema costs per row with no worker at all."
  echo
  echo "| scenario | projects | envelopes | stored processed | stored failed | wall | drain | events/s | COPY | COPY rows/s | ÷ COPY | COPY into the real tables | rows/s | ÷ that |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  cat "$OUT/worker.rows"
  echo
  echo "Where the worker's loop spent each drain (\`gamify_worker_batch_duration_seconds\`,"
  echo "\`gamify_worker_batch_wait_seconds\`, \`gamify_worker_batch_size\`): writing batches, or waiting"
  echo "for the next one to be read from the broker."
  echo
  echo "| scenario | batches | mean batch | mean write | writing | waiting |"
  echo "|---|---|---|---|---|---|"
  cat "$OUT/worker.loop"
  echo
  echo "### 5. End to end"
  echo
  echo "\`$(cat "$OUT/e2e.cmd" | sed "s#$API#\$API#")\` with a worker running; accepted → stored is each row's"
  echo "\`created_at − received_at\` (the worker's transaction start minus the gateway's receipt; the row is"
  echo "visible at commit, a few ms later)."
  echo
  echo "| offered | achieved | accepted | rejected/errors | request p50 / p99 | rows | accepted → stored p50 | p99 | max |"
  echo "|---|---|---|---|---|---|---|---|---|"
  echo "| $E2E_RATE/s | $e2e_rps/s | $e2e_accepted | $e2e_rejected | $e2e_req_p50 / $e2e_req_p99 ms | $e2e_rows | $e2e_p50 ms | **$e2e_p99 ms** | $e2e_max ms |"
  echo
  echo "### 6. Memory and CPU"
  echo
  echo "Peak RSS (\`VmHWM\`): gamify-api **$((api_hwm_kb / 1024)) MiB** (highest of the gateway instances), gamify-worker"
  echo "**$((worker_hwm_kb / 1024)) MiB** (highest of the worker instances)."
  echo
  echo "CPU in % of one core (200% = both cores), from \`/proc/<pid>/stat\` over the middle of each"
  echo "scenario. *postgres*: this database's backends and the cluster's shared processes; *redis* is"
  echo "shared with the machine; *other* is everything else on the machine (other users' builds and"
  echo "tests, the kernel's softirq work for loopback included)."
  echo
  echo "| scenario | api | worker | broker | postgres | redis | load generator | other | machine |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$OUT/cpu.rows"
  echo "<!-- bench:end -->"
} >"$OUT/results.md"

if [ "$PROFILE" = 1 ]; then
  log "rendering profiles into docs/bench/"
  set +o pipefail # head closes the pipes early
  mkdir -p "$ROOT/docs/bench"
  for p in api worker; do
    perf report -i "$OUT/$p.perf.data" --stdio --no-children --no-inline --percent-limit 1.5 -g none \
      --sort symbol 2>/dev/null | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | head -n 60 >"$ROOT/docs/bench/$p-self.txt"
    perf report -i "$OUT/$p.perf.data" --stdio --children --no-inline --percent-limit 4 -g none \
      --sort symbol 2>/dev/null | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | head -n 80 >"$ROOT/docs/bench/$p-children.txt"
    perf script -i "$OUT/$p.perf.data" --no-inline 2>/dev/null | inferno-collapse-perf 2>/dev/null \
      | inferno-flamegraph --title "gamify-$p" >"$ROOT/docs/bench/$p-flamegraph.svg" 2>/dev/null || true
  done
  perf report -i "$OUT/system.perf.data" --stdio --no-children --sort comm -g none 2>/dev/null \
    | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | head -n 30 >"$ROOT/docs/bench/system-by-process.txt"
  perf report -i "$OUT/system.perf.data" --stdio --no-children --comm postgres --sort dso,symbol -g none \
    --percent-limit 1 2>/dev/null | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | head -n 50 >"$ROOT/docs/bench/postgres-self.txt"
fi

cat "$OUT/results.md"
if [ "$WRITE_DOCS" = 1 ]; then
  awk -v results="$OUT/results.md" '
    /<!-- bench:begin/ { while ((getline line < results) > 0) print line; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0; next }
    !skip' "$DOCS" >"$DOCS.tmp" && mv "$DOCS.tmp" "$DOCS"
  log "results written to docs/BENCHMARKS.md"
fi
exit
}
