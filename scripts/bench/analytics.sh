#!/usr/bin/env bash
# Analytics queries (issue 22) on a generated project, release build of gamify-api:
#   - a data set of ANALYTICS_BENCH_EVENTS events (default 20 M) of ANALYTICS_BENCH_USERS users
#     (default 1 M) over the ANALYTICS_BENCH_DAYS days (default 90) ending at the hour of
#     generation, generated straight into Postgres by SQL (scripts/bench/analytics-data.sql: a
#     diurnal and weekly shape, skewed user activity and event names, signup → lesson_started →
#     lesson_completed → purchase journeys), with the hourly rollups and first-seen rows the worker
#     would have kept. Generated once into database ANALYTICS_BENCH_DB and reused while its sizes
#     match (an interrupted generation resumes; ANALYTICS_BENCH_FRESH=1 starts over);
#   - each API query one request at a time with oha (p50, p99; targets: 90-day daily trend
#     ≤ 100 ms, distinct users over 30 days ≤ 200 ms, 4-step funnel over 7 days with a 7-day
#     window ≤ 3 s, retention reported), beside a raw-scan baseline: the same question in plain
#     SQL over the events table (no rollups), timed with psql as the superuser;
#   - the plans: those of the queries the API runs (auto_explain, read from the Postgres server
#     log: without ANALYZE for every statement slower than ANALYTICS_BENCH_SLOW_PLAN_MS during the
#     measured requests, then with ANALYZE for one request each) and EXPLAIN (ANALYZE, BUFFERS) of
#     the baselines. auto_explain is set on the benchmark database only, and reset afterwards.
# A query the API refuses as too expensive (422 after its 10 s limit) is measured again with the
# limit at ANALYTICS_BENCH_RAISED_LIMIT_MS (default 120000). Writes target/bench-analytics/results.md
# and plans.md.
#
#   scripts/bench/analytics.sh      # 2 cores: ~8 minutes of generation (first run), ~8 of measuring
#   ANALYTICS_BENCH_DB=gamify_bench_analytics_small ANALYTICS_BENCH_EVENTS=200000 \
#     ANALYTICS_BENCH_USERS=20000 scripts/bench/analytics.sh    # a small data set, to try it out
#   ANALYTICS_BENCH_GENERATE_ONLY=1 scripts/bench/analytics.sh  # the data set only, no measuring
#     (scripts/bench/console.sh generates it so; target/bench-analytics/ results are left alone)
{
source "$(dirname "$0")/../lib.sh"

EVENTS=${ANALYTICS_BENCH_EVENTS:-20000000}
USERS=${ANALYTICS_BENCH_USERS:-1000000}
DAYS=${ANALYTICS_BENCH_DAYS:-90}
DB=${ANALYTICS_BENCH_DB:-gamify_bench_analytics}
FRESH=${ANALYTICS_BENCH_FRESH:-}
JOBS=${ANALYTICS_BENCH_JOBS:-$(nproc)}                   # generation: days filled at once
REQUESTS=${ANALYTICS_BENCH_REQUESTS:-200}                # trends and distinct users, each
SLOW_REQUESTS=${ANALYTICS_BENCH_SLOW_REQUESTS:-20}       # funnel and retention, each
RUNS=${ANALYTICS_BENCH_BASELINE_RUNS:-5}                 # each raw-scan baseline
# A query the API refuses under its limit (422 query_too_expensive, ANALYTICS_QUERY_TIMEOUT_MS,
# 10 s by default) is measured again, with RAISED_REQUESTS requests, under this limit; so is the
# plans pass (a cancelled statement logs no plan).
RAISED_LIMIT_MS=${ANALYTICS_BENCH_RAISED_LIMIT_MS:-120000}
RAISED_REQUESTS=${ANALYTICS_BENCH_RAISED_REQUESTS:-3}
OUT="$ROOT/target/bench-analytics"
[ "$DAYS" -ge 14 ] || die "ANALYTICS_BENCH_DAYS must be at least 14 (the funnel reads two weeks)"
mkdir -p "$OUT"
GENERATE_ONLY=${ANALYTICS_BENCH_GENERATE_ONLY:-}
[ -n "$GENERATE_ONLY" ] || rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.out "$OUT"/*.times "$OUT"/*.txt "$OUT"/results.md "$OUT"/plans.md

command -v jq >/dev/null 2>&1 || apt_install jq
if ! command -v oha >/dev/null 2>&1; then
  log "installing oha (HTTP load) from crates.io"
  cargo install oha --locked --quiet
fi

log "building release binaries"
cargo build --release --quiet -p gamify-api --bin gamify-api -p gamify-dev-broker --bin gamify-dev-broker
BIN="$ROOT/target/release"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${explaining:-}" ]; then auto_explain off || true; fi
}
trap cleanup EXIT

# The broker gamify-api produces to (nothing consumes here: no event goes through the gateway).
# KAFKA_BROKERS set before provision keeps lib.sh from building and starting its debug broker.
BROKER_DIR="$OUT/broker"
if [ -f "$BROKER_DIR/broker.pid" ]; then kill "$(cat "$BROKER_DIR/broker.pid")" 2>/dev/null || true; fi
rm -rf "$BROKER_DIR" && mkdir -p "$BROKER_DIR"
"$BIN/gamify-dev-broker" serve --dir "$BROKER_DIR" >"$BROKER_DIR/broker.log" 2>&1 </dev/null &
echo $! >"$BROKER_DIR/broker.pid"
pids+=($!)
wait_for 30 gamify-dev-broker "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" bootstrap
export KAFKA_TOPIC=gamify.bench.analytics KAFKA_DLQ_TOPIC=gamify.bench.analytics.dlq
"$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" create-topic "$KAFKA_TOPIC" 3 >/dev/null
"$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" create-topic "$KAFKA_DLQ_TOPIC" 1 >/dev/null
KAFKA_BROKERS=$("$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" bootstrap)
export KAFKA_BROKERS

# psql as the superuser on the benchmark database (row-level security does not apply to it).
ensure_clients
ensure_postgres
if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
  PSQL=(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres)
else
  PSQL=("${SUDO[@]}" runuser -u postgres -- psql -p "$PG_PORT")
fi
PSQL+=(-X -q -v ON_ERROR_STOP=1 -d "$DB")
sql() { "${PSQL[@]}" -tA "$@"; }

# The data set already there, if any: "EVENTS USERS DAYS FINISHED".
have=""
if [ -n "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
  have=$(sql -c "SELECT events || ' ' || users || ' ' || days || ' ' || (finished_at IS NOT NULL) FROM bench.params" 2>/dev/null || true)
fi
fresh=""
if [ -n "$FRESH" ]; then
  fresh=fresh
elif [ -n "$have" ] && [ "${have% *}" != "$EVENTS $USERS $DAYS" ]; then
  log "$DB holds another data set (events, users, days: ${have% *}): generating it anew"
  fresh=fresh
fi
[ -z "$fresh" ] || have=""
provision "$DB" $fresh
"$BIN/gamify-api" migrate >/dev/null
PGOPTIONS="-c client_min_messages=warning" sql <"$ROOT/scripts/bench/analytics-data.sql"

export PORT=3930 RUST_LOG=warn
export ADMIN_TOKEN="adm_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PUBLIC_URL="http://127.0.0.1:$PORT"
export CLIENT_RATE_LIMIT_PER_SECOND=10000000 CLIENT_RATE_LIMIT_BURST=100000000
export SECRET_KEY_RATE_LIMIT_PER_SECOND=10000000 SECRET_KEY_RATE_LIMIT_BURST=100000000
export PROJECT_RATE_LIMIT_PER_SECOND=10000000 PROJECT_RATE_LIMIT_BURST=100000000
API="http://127.0.0.1:$PORT"
api_pid=""
start_api() { # [raised]: with the analytics query limit at RAISED_LIMIT_MS
  if [ "${1:-}" = raised ]; then
    ANALYTICS_QUERY_TIMEOUT_MS=$RAISED_LIMIT_MS HTTP_REQUEST_TIMEOUT_MS=$((RAISED_LIMIT_MS + 30000)) \
      "$BIN/gamify-api" serve >>"$OUT/api.log" 2>&1 &
  else
    "$BIN/gamify-api" serve >>"$OUT/api.log" 2>&1 &
  fi
  api_pid=$!
  pids+=("$api_pid")
  wait_for 30 gamify-api curl -fsS "$API/readyz"
}
stop_api() { kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; }
start_api
admin() { curl -fsS -X "$1" "$API$2" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d "$3"; }

# --- Generation -------------------------------------------------------------------------------
generated_now=""
if [ "${have##* }" != true ]; then
  began=$SECONDS
  if [ -z "$have" ]; then
    org=$(admin POST /v1/organizations '{"name":"analytics bench"}' | jq -r .id)
    project=$(admin POST /v1/projects "{\"organizationId\":\"$org\",\"name\":\"analytics bench\"}" | jq -r .id)
    secret_id=$(admin POST "/v1/projects/$project/api-keys" '{"name":"server","type":"secret"}' | jq -r .id)
    public_id=$(admin POST "/v1/projects/$project/api-keys" '{"name":"browser","type":"publishable"}' | jq -r .id)
    log "generating $USERS users and their funnel journeys, partitions and hour weights"
    sequences=$(sql -c "SELECT bench.setup('$project', '$secret_id', '$public_id', $EVENTS, $USERS, $DAYS, date_trunc('hour', now()))")
    log "  $sequences journey events in $((SECONDS - began)) s"
  else
    log "resuming the generation in $DB"
  fi
  todo=$(sql -c "SELECT d FROM generate_series(0, $DAYS - 1) AS d WHERE d NOT IN (SELECT day FROM bench.days_done) ORDER BY d")
  log "generating the other events, day by day ($JOBS at a time)"
  printf '%s\n' $todo | xargs -r -P "$JOBS" -I{} "${PSQL[@]}" -tA -c "SET work_mem = '256MB'" \
    -c "SELECT {}, bench.fill_day({}), round(extract(epoch FROM clock_timestamp() - now())::numeric, 1)" |
    while IFS='|' read -r day rows took; do
      log "  day $((day + 1))/$DAYS: $rows events in $took s ($((SECONDS - began)) s so far)"
    done
  log "filling event_rollups and user_first_seen from the events"
  step=$SECONDS
  { echo first_seen; seq 0 $((DAYS - 1)); } | xargs -P "$JOBS" -I{} "${PSQL[@]}" -tA \
    -c "SET work_mem = '256MB'" -c "SELECT bench.finish_part('{}')" >/dev/null
  log "  $((SECONDS - step)) s; VACUUM ANALYZE"
  step=$SECONDS
  sql -c "VACUUM (ANALYZE) events" -c "VACUUM (ANALYZE) end_users, event_rollups, user_first_seen"
  log "  $((SECONDS - step)) s"
  resumed=$([ -z "$have" ] && echo false || echo true)
  sql -c "UPDATE bench.params SET finished_at = clock_timestamp(),
          generation_seconds = CASE WHEN $resumed THEN NULL ELSE $((SECONDS - began)) END" >/dev/null
  generated_now=1
  log "generated in $((SECONDS - began)) s"
else
  log "$DB already holds the data set ($EVENTS events, $USERS users, $DAYS days): not generating it"
fi
[ -z "$GENERATE_ONLY" ] || exit 0

IFS='|' read -r project data_end t_from u_from r_from f_from f_to gen_seconds <<<"$(sql -c "
  SELECT project_id, bench.rfc3339(data_end), bench.rfc3339(data_end - make_interval(days => days)),
         bench.rfc3339(data_end - interval '30 days'),
         bench.rfc3339(date_trunc('day', data_end - interval '30 days', 'UTC')),
         bench.rfc3339(data_end - interval '14 days'), bench.rfc3339(data_end - interval '7 days'),
         coalesce(generation_seconds::text, '')
  FROM bench.params" 2>/dev/null || true)"
[ -n "$project" ] || die "no data set in $DB"
key=$(admin POST "/v1/projects/$project/api-keys" "{\"name\":\"bench $(date -u +%FT%TZ)\",\"type\":\"secret\"}" | jq -r .key)
stray=$(sql -c "SELECT count(*) FROM events_default")
[ "$stray" = 0 ] || log "warning: $stray events landed in events_default"

# --- auto_explain ------------------------------------------------------------------------------
# Loaded into the API's new connections by the database's settings, it writes plans to the server
# log (stderr of the Debian cluster): during the measured requests, the plan (without ANALYZE, so
# at no measurable cost) of every statement slower than SLOW_PLAN_MS, which shows plans that change
# between requests (a prepared statement's generic plan after its fifth execution); afterwards, in
# a pass of one request each, every plan with ANALYZE and BUFFERS.
SLOW_PLAN_MS=${ANALYTICS_BENCH_SLOW_PLAN_MS:-1000}
PG_MAJOR=$(sql -c "SHOW server_version_num" | cut -c1-2)
PG_LOG=${ANALYTICS_BENCH_PG_LOG:-$(sql -c "SELECT pg_current_logfile()" 2>/dev/null || true)}
case $PG_LOG in /*) ;; "") PG_LOG=/var/log/postgresql/postgresql-$PG_MAJOR-main.log ;;
  *) PG_LOG="$(sql -c "SHOW data_directory")/$PG_LOG" ;; esac
auto_explain() { # analyze | load | off
  local settings=(session_preload_libraries auto_explain.log_min_duration auto_explain.log_analyze
                  auto_explain.log_buffers auto_explain.log_nested_statements)
  local s
  for s in "${settings[@]}"; do psql_admin -c "ALTER DATABASE $DB RESET $s"; done
  case $1 in
    analyze)
      sql -c "ALTER DATABASE $DB SET session_preload_libraries = 'auto_explain'" \
          -c "ALTER DATABASE $DB SET auto_explain.log_min_duration = 0" \
          -c "ALTER DATABASE $DB SET auto_explain.log_analyze = on" \
          -c "ALTER DATABASE $DB SET auto_explain.log_buffers = on" \
          -c "ALTER DATABASE $DB SET auto_explain.log_nested_statements = on" ;;
    load)
      sql -c "ALTER DATABASE $DB SET session_preload_libraries = 'auto_explain'" \
          -c "ALTER DATABASE $DB SET auto_explain.log_min_duration = $SLOW_PLAN_MS" \
          -c "ALTER DATABASE $DB SET auto_explain.log_nested_statements = on" ;;
  esac
}
explain_ok=""
plans_note=""
if [ ! -f "/usr/lib/postgresql/$PG_MAJOR/lib/auto_explain.so" ]; then
  plans_note="auto_explain is not installed (/usr/lib/postgresql/$PG_MAJOR/lib/auto_explain.so): no plans of the API's queries"
elif ! "${SUDO[@]}" test -r "$PG_LOG"; then
  plans_note="the server log $PG_LOG is not readable: no plans of the API's queries"
else
  explain_ok=1
fi
log_offset() { "${SUDO[@]}" stat -c %s "$PG_LOG"; }
# The plans auto_explain logged since OFFSET for the API's connections to this database that read
# the analytics tables or events: a "duration: … plan:" line and its tab-indented continuation.
logged_plans() { # OFFSET
  "${SUDO[@]}" tail -c "+$(($1 + 1))" "$PG_LOG" | awk -v db="@$DB " '
    /^[0-9]{4}-[0-9]{2}-[0-9]{2} / { flush(); keep = index($0, db) && index($0, "plan:"); if (keep) block = $0 "\n"; next }
    keep && /^\t/ { block = block $0 "\n" }
    function flush() { if (keep && block ~ /(event_rollups|user_first_seen|events)/ && block !~ /api_keys/) print block; block = ""; keep = 0 }
    END { flush() }'
}
if [ -n "$explain_ok" ]; then
  explaining=1
  auto_explain load
  stop_api
  start_api
  load_offset=$(log_offset)
fi

# --- The API queries --------------------------------------------------------------------------
steps='["signup","lesson_started","lesson_completed","purchase"]'
funnel_body="{\"steps\":$steps,\"window\":\"P7D\",\"from\":\"$f_from\",\"to\":\"$f_to\"}"
declare -A URL=(
  [trend]="$API/v1/analytics/trends?interval=day&measure=count&from=$t_from&to=$data_end"
  [trend_page_view]="$API/v1/analytics/trends?event=page_view&interval=day&measure=count&from=$t_from&to=$data_end"
  [users]="$API/v1/analytics/trends?interval=day&measure=users&from=$u_from&to=$data_end"
  [funnel]="$API/v1/analytics/funnels"
  [retention]="$API/v1/analytics/retention?start_event=signup&return_event=page_view&interval=day&from=$r_from&to=$data_end"
)
QUERIES=(trend trend_page_view users funnel retention)
request() { # NAME → the response body in $OUT/api-NAME.json; prints the status
  if [ "$1" = funnel ]; then
    curl -sS -o "$OUT/api-$1.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $key" \
      -H 'Content-Type: application/json' -d "$funnel_body" "${URL[$1]}"
  else
    curl -sS -o "$OUT/api-$1.json" -w '%{http_code}' -H "Authorization: Bearer $key" "${URL[$1]}"
  fi
}
load() { # NAME REQUESTS
  local args=(--no-tui --output-format json -n "$2" -c 1 -H "Authorization: Bearer $key")
  if [ "$1" = funnel ]; then
    args+=(-m POST -H 'Content-Type: application/json' -d "$funnel_body")
  fi
  oha "${args[@]}" "${URL[$1]}" >"$OUT/oha-$1.json"
}
summary() { # FILE → "P50 P99 NOT_OK"
  jq -r '[(.latencyPercentiles.p50 * 1000 * 10 | round / 10), (.latencyPercentiles.p99 * 1000 * 10 | round / 10),
          ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)] | @tsv' "$1"
}

declare -A STATUS P50 P99 BAD RAISED
measure() { # NAME REQUESTS
  log "API $1: $2 requests, one at a time"
  load "$1" "$2"
  read -r "P50[$1]" "P99[$1]" "BAD[$1]" <<<"$(summary "$OUT/oha-$1.json")"
  log "  p50 ${P50[$1]} ms, p99 ${P99[$1]} ms, ${BAD[$1]} not 200"
}
too_expensive=()
for q in "${QUERIES[@]}"; do
  STATUS[$q]=$(request "$q")
  if [ "${STATUS[$q]}" = 422 ] && [ "$(jq -r .error.code "$OUT/api-$q.json" 2>/dev/null)" = query_too_expensive ]; then
    log "$q: 422 query_too_expensive under the API's limit: measured below with the limit raised"
    too_expensive+=("$q")
    continue
  elif [ "${STATUS[$q]}" != 200 ]; then
    log "$q: HTTP ${STATUS[$q]} ($(head -c 200 "$OUT/api-$q.json")): not measured"
    continue
  fi
  n=$REQUESTS
  case $q in funnel | retention) n=$SLOW_REQUESTS ;; esac
  measure "$q" "$n"
done
if [ ${#too_expensive[@]} -gt 0 ]; then
  stop_api
  start_api raised
  for q in "${too_expensive[@]}"; do
    STATUS[$q]=$(request "$q")
    RAISED[$q]=1
    if [ "${STATUS[$q]}" = 200 ]; then
      measure "$q" "$RAISED_REQUESTS"
    else
      log "$q: HTTP ${STATUS[$q]} even with the limit at $RAISED_LIMIT_MS ms"
    fi
  done
  stop_api
  start_api
fi

if [ -n "$explain_ok" ]; then
  auto_explain off
  explaining=""
  # Grouped by plan (costs left out): how many statements each, and their durations.
  logged_plans "$load_offset" | awk '
    /^[0-9]{4}-/ { if (body != "") add(); match($0, /duration: [0-9.]+ ms/); d = substr($0, RSTART + 10, RLENGTH - 13) + 0; body = ""; next }
    /^$/ { next }
    { body = body $0 "\n" }
    function add() { key = body; gsub(/\(cost=[^)]*\)/, "", key); n[key]++; if (!(key in lo) || d < lo[key]) lo[key] = d; if (d > hi[key]) hi[key] = d; if (!(key in order)) { order[key] = ++k; text[k] = key } }
    END { if (body != "") add(); for (i = 1; i <= k; i++) { key = text[i]; printf "%d statement(s), %.0f–%.0f ms:\n%s\n", n[key], lo[key], hi[key], key } }
  ' >"$OUT/api-slow-plans.txt"
fi

# --- The raw-scan baselines -------------------------------------------------------------------
# The same questions in plain SQL over events, as they would be answered without the rollups:
# counted are processed events that are not $identify, as in the rollups.
PSQL_VARS=(-v "project=$project" -v "t_from=$t_from" -v "u_from=$u_from" -v "r_from=$r_from" -v "f_from=$f_from"
           -v "f_to=$f_to" -v "data_end=$data_end")
declare -A BASE
BASE[trend]=$(cat <<'SQL'
SELECT date_trunc('day', occurred_at AT TIME ZONE 'UTC') AS day, count(*) AS events
FROM events
WHERE project_id = :'project' AND occurred_at >= :'t_from' AND occurred_at < :'data_end'
  AND status = 'processed' AND event_type <> '$identify'
GROUP BY 1 ORDER BY 1
SQL
)
BASE[trend_page_view]=$(cat <<'SQL'
SELECT date_trunc('day', occurred_at AT TIME ZONE 'UTC') AS day, count(*) AS events
FROM events
WHERE project_id = :'project' AND occurred_at >= :'t_from' AND occurred_at < :'data_end'
  AND status = 'processed' AND event_type = 'page_view'
GROUP BY 1 ORDER BY 1
SQL
)
BASE[users]=$(cat <<'SQL'
SELECT count(DISTINCT coalesce('u:' || user_id::text, 'a:' || anonymous_id)) AS users
FROM events
WHERE project_id = :'project' AND occurred_at >= :'u_from' AND occurred_at < :'data_end'
  AND status = 'processed' AND event_type <> '$identify'
SQL
)
# Umami's way: one level per step, each joined to the events of the next step that follow it,
# the whole journey within the window of its first step.
BASE[funnel]=$(cat <<'SQL'
WITH e AS (
    SELECT coalesce('u:' || user_id::text, 'a:' || anonymous_id) AS who, event_type, occurred_at
    FROM events
    WHERE project_id = :'project' AND status = 'processed'
      AND event_type IN ('signup', 'lesson_started', 'lesson_completed', 'purchase')
      AND occurred_at >= :'f_from' AND occurred_at < timestamptz :'f_to' + interval '7 days'
), l1 AS (
    SELECT who, min(occurred_at) AS t0 FROM e
    WHERE event_type = 'signup' AND occurred_at < :'f_to' GROUP BY who
), l2 AS (
    SELECT l.who, l.t0, l.t0 AS prev, min(e.occurred_at) AS t FROM l1 AS l
    JOIN e ON e.who = l.who AND e.event_type = 'lesson_started'
          AND e.occurred_at > l.t0 AND e.occurred_at <= l.t0 + interval '7 days'
    GROUP BY 1, 2, 3
), l3 AS (
    SELECT l.who, l.t0, l.t AS prev, min(e.occurred_at) AS t FROM l2 AS l
    JOIN e ON e.who = l.who AND e.event_type = 'lesson_completed'
          AND e.occurred_at > l.t AND e.occurred_at <= l.t0 + interval '7 days'
    GROUP BY 1, 2, 3
), l4 AS (
    SELECT l.who, l.t0, l.t AS prev, min(e.occurred_at) AS t FROM l3 AS l
    JOIN e ON e.who = l.who AND e.event_type = 'purchase'
          AND e.occurred_at > l.t AND e.occurred_at <= l.t0 + interval '7 days'
    GROUP BY 1, 2, 3
)
SELECT 1 AS step, count(*) AS users, NULL::float8 AS median_seconds FROM l1
UNION ALL SELECT 2, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t - prev)) FROM l2
UNION ALL SELECT 3, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t - prev)) FROM l3
UNION ALL SELECT 4, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t - prev)) FROM l4
ORDER BY step
SQL
)
# Daily cohorts of the users who signed up in the 30 days (from the start of the first day), and on
# which day after it each came back with a page view.
BASE[retention]=$(cat <<'SQL'
WITH c AS (
    SELECT user_id, date_trunc('day', min(occurred_at) AT TIME ZONE 'UTC') AS cohort
    FROM events
    WHERE project_id = :'project' AND status = 'processed' AND event_type = 'signup'
      AND occurred_at >= :'r_from' AND occurred_at < :'data_end' AND user_id IS NOT NULL
    GROUP BY user_id
)
SELECT c.cohort, date_trunc('day', e.occurred_at AT TIME ZONE 'UTC') - c.cohort AS age,
       count(DISTINCT c.user_id) AS users
FROM c JOIN events AS e
  ON e.project_id = :'project' AND e.user_id = c.user_id AND e.status = 'processed'
 AND e.event_type = 'page_view' AND e.occurred_at >= c.cohort AT TIME ZONE 'UTC'
 AND e.occurred_at < :'data_end'
GROUP BY 1, 2 ORDER BY 1, 2
SQL
)
declare -A MED MAX
for q in "${QUERIES[@]}"; do
  log "raw-scan baseline $q: $RUNS runs"
  {
    echo "SET TimeZone = 'UTC';"
    echo '\timing on'
    echo "\\o $OUT/baseline-$q.out"
    echo "${BASE[$q]};"
    echo '\o /dev/null'
    for _ in $(seq 2 "$RUNS"); do echo "${BASE[$q]};"; done
  } | "${PSQL[@]}" -tA "${PSQL_VARS[@]}" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' >"$OUT/baseline-$q.times"
  read -r "MED[$q]" "MAX[$q]" <<<"$(sort -n "$OUT/baseline-$q.times" |
    awk '{ t[NR] = $1 } END { m = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2; printf "%.1f %.1f\n", m, t[NR] }')"
  log "  median ${MED[$q]} ms, max ${MAX[$q]} ms"
done

# --- Plans ------------------------------------------------------------------------------------
if [ -n "$explain_ok" ]; then
  log "plans: one request of each with auto_explain (log: $PG_LOG)"
  stop_api
  explaining=1
  auto_explain analyze
  offset=$(log_offset)
  start_api raised
  for q in "${QUERIES[@]}"; do
    if [ "${STATUS[$q]}" = 200 ]; then request "$q" >/dev/null; fi
  done
  stop_api
  auto_explain off
  explaining=""
  sleep 1
  logged_plans "$offset" >"$OUT/api-plans.txt"
  [ -s "$OUT/api-plans.txt" ] || plans_note="auto_explain logged no plan of the analytics queries to $PG_LOG"
fi
{
  echo "# Analytics benchmark: query plans"
  echo
  echo "Data set: $EVENTS events, $USERS users, $DAYS days ending $data_end; see results.md."
  echo
  echo "## The API's queries (auto_explain, one request each, the query limit at $RAISED_LIMIT_MS ms)"
  echo
  if [ -n "$plans_note" ]; then echo "$plans_note."; else
    echo '```'; sed 's/\t/    /g' "$OUT/api-plans.txt"; echo '```'; fi
  echo
  echo "## The API's statements slower than $SLOW_PLAN_MS ms during the measured requests"
  echo
  echo "auto_explain without ANALYZE (costs left out), grouped by plan; a plan here that is not above is one the"
  echo "statement changed to between requests (a prepared statement's generic plan, from its sixth execution on"
  echo "a connection)."
  echo
  if [ -n "$plans_note" ]; then echo "$plans_note."
  elif [ -s "$OUT/api-slow-plans.txt" ]; then echo '```'; sed 's/\t/    /g' "$OUT/api-slow-plans.txt"; echo '```'
  else echo "None."; fi
  echo
  echo "## The raw-scan baselines (EXPLAIN (ANALYZE, BUFFERS))"
  for q in "${QUERIES[@]}"; do
    echo
    echo "### $q"
    echo
    echo '```sql'; echo "${BASE[$q]}"; echo '```'
    echo
    echo '```'
    { echo "SET TimeZone = 'UTC';"; echo "EXPLAIN (ANALYZE, BUFFERS) ${BASE[$q]};"; } |
      "${PSQL[@]}" -tA "${PSQL_VARS[@]}"
    echo '```'
  done
} >"$OUT/plans.md"

# --- Results ----------------------------------------------------------------------------------
IFS='|' read -r events_size rollups_size first_seen_size rollup_rows first_seen_rows event_rows <<<"$(sql -c "
  SELECT (SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('events')),
         pg_size_pretty(pg_total_relation_size('event_rollups')),
         pg_size_pretty(pg_total_relation_size('user_first_seen')),
         (SELECT count(*) FROM event_rollups), (SELECT count(*) FROM user_first_seen),
         (SELECT sum(rows) FROM bench.days_done) + (SELECT sequence_events FROM bench.params)")"
if [ -n "$gen_seconds" ]; then gen_text="${gen_seconds} s"; else gen_text="resumed across runs"; fi
[ -n "$generated_now" ] || gen_text="$gen_text (an earlier run; reused)"
row() { # NAME LABEL TARGET
  local mark=${RAISED[$1]:+ †}
  local bad=""
  if [ "${BAD[$1]:-0}" != 0 ]; then bad=" (${BAD[$1]} of the requests not 200)"; fi
  local api="| $2 | ${P50[$1]:-–}$mark | ${P99[$1]:-–}$mark$bad |"
  [ "${STATUS[$1]}" = 200 ] || api="| $2 | HTTP ${STATUS[$1]}$mark | – |"
  echo "$api $3 | ${MED[$1]} | ${MAX[$1]} |"
}
answer() { jq -c "$1" "$OUT/api-$2.json" 2>/dev/null || echo "–"; }
{
  echo "# Analytics benchmark"
  echo
  echo "- **When**: $(date -u +%Y-%m-%dT%H:%MZ), commit \`$(git -C "$ROOT" rev-parse --short HEAD)\`$(git -C "$ROOT" diff --quiet HEAD -- apps libs migrations || echo ' (with uncommitted changes)'), $(nproc) cores, PostgreSQL $(sql -c 'SHOW server_version' | cut -d' ' -f1)"
  echo "- **Command**: \`scripts/bench/analytics.sh\` (ANALYTICS_BENCH_EVENTS=$EVENTS, ANALYTICS_BENCH_USERS=$USERS, ANALYTICS_BENCH_DAYS=$DAYS, ANALYTICS_BENCH_DB=$DB, ANALYTICS_BENCH_REQUESTS=$REQUESTS, ANALYTICS_BENCH_SLOW_REQUESTS=$SLOW_REQUESTS, ANALYTICS_BENCH_BASELINE_RUNS=$RUNS)"
  echo "- **Data set**: $event_rows events of $USERS users over $DAYS days ending $data_end, generated by SQL in $gen_text; events $events_size (all partitions, with indexes), event_rollups $rollups_size ($rollup_rows rows), user_first_seen $first_seen_size ($first_seen_rows rows)"
  echo "- **API**: release gamify-api, one request at a time (oha -c 1), $REQUESTS requests each ($SLOW_REQUESTS for funnel and retention); p50 and p99 in ms. **Baseline**: the same question in plain SQL over events, psql as superuser, $RUNS runs (median and max in ms)."
  echo
  echo "| query | API p50 ms | API p99 ms | target | raw-scan baseline median ms | max ms |"
  echo "|---|---|---|---|---|---|"
  row trend "daily trend, $DAYS days, all events (count)" "p99 ≤ 100 ms"
  row trend_page_view "daily trend, $DAYS days, page_view (count)" "p99 ≤ 100 ms"
  row users "distinct users, last 30 days (measure=users, total)" "p99 ≤ 200 ms"
  row funnel "4-step funnel, 7-day range ($f_from – $f_to), 7-day window" "≤ 3 s"
  row retention "retention signup → page_view, daily, 30 days" "–"
  if [ ${#too_expensive[@]} -gt 0 ]; then
    echo
    echo "† Refused under the API's default limit (422 query_too_expensive after ANALYTICS_QUERY_TIMEOUT_MS, 10 s): measured with ANALYTICS_QUERY_TIMEOUT_MS=$RAISED_LIMIT_MS, $RAISED_REQUESTS requests."
  fi
  echo
  echo "Not-200 responses under load: $(for q in "${QUERIES[@]}"; do printf '%s %s; ' "$q" "${BAD[$q]:-–}"; done)"
  echo
  echo "Answers, API beside raw scan:"
  echo
  echo "- events in $DAYS days: API $(answer '[.data[].value] | add' trend), raw $(awk -F'|' '{ s += $2 } END { print s }' "$OUT/baseline-trend.out" 2>/dev/null)"
  echo "- distinct users in 30 days: API $(answer '.total' users) (estimate), raw $(tr -d ' ' <"$OUT/baseline-users.out" 2>/dev/null | head -n 1)"
  echo "- funnel users per step: API $(answer '[.steps[]? | .users]' funnel), raw [$(awk -F'|' '{ printf "%s%s", (NR > 1 ? "," : ""), $2 }' "$OUT/baseline-funnel.out" 2>/dev/null)]"
  echo "- retention, users who came back the day after their cohort's day, all cohorts: API $(answer '[.cohorts[]? | .values[1] // 0] | add' retention), raw $(awk -F'|' '$2 == "1 day" { s += $3 } END { print s + 0 }' "$OUT/baseline-retention.out" 2>/dev/null)"
  echo "- funnel median seconds from the previous step: API $(answer '[.steps[]? | .medianSecondsFromPrevious]' funnel), raw [$(awk -F'|' '{ printf "%s%s", (NR > 1 ? "," : ""), ($3 == "" ? "null" : int($3)) }' "$OUT/baseline-funnel.out" 2>/dev/null)]"
  echo
  echo "Plans: [plans.md](plans.md) (target/bench-analytics/plans.md)."
} >"$OUT/results.md"
cat "$OUT/results.md"
exit 0
}
