#!/usr/bin/env bash
# Fault suite (issue 12): "if we said 202, it is stored, once — and evaluated once". For each fault,
# an isolated stack of its own — a private Postgres cluster (initdb), a private Redis, a private
# gamify-dev-broker, two gamify-api, one or two gamify-worker and one gamify-engine on free ports,
# all under target/faults/ — takes a steady stream of uniquely identified events
# (scripts/faults/load.py) while the fault is injected; afterwards every 202-acknowledged messageId
# is looked up in Postgres, and, the project's rules paying one point per event, every stored event
# must have exactly one outcome and one ledger row. Prints the table and, for a full run, records it
# in docs/RELIABILITY.md. See docs/RELIABILITY.md.
#
#   ./scripts/faults.sh                        # every fault, full durations (~11 minutes)
#   FAULTS_QUICK=1 ./scripts/faults.sh         # shorter outages, fewer events (~6.5 minutes)
#   ./scripts/faults.sh worker-sigkill pg-lock # only these faults
#
# Quick mode (CI, .ci/run) runs every fault too, the three engine faults included (~30 s each).
#
# Knobs: FAULT_SECONDS (outage length: broker, Postgres, lock; 30, quick 8), REDIS_DOWN_SECONDS
# (10, quick 4), FAULTS_RATE (events/s offered, 300, quick 200), FAULTS_WARMUP (seconds of load
# before the fault, 5, quick 3), FAULTS_TAIL (seconds of load after it, 10, quick 4),
# FAULTS_PROFILE (debug — the build test.sh already makes — or release), FAULTS_WRITE_DOCS (1 for a
# full run), FAULTS_KEEP=1 keeps target/faults (logs of every stack; kept anyway when a fault fails).
#
# Never touches the machine's shared services: no Postgres on 5432, no Redis on 6379, no
# target/dev-broker. Needs the PostgreSQL 15 server binaries, redis-server and python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
export HOME PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

QUICK=${FAULTS_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  FAULT_SECONDS=${FAULT_SECONDS:-8} REDIS_DOWN_SECONDS=${REDIS_DOWN_SECONDS:-4}
  RATE=${FAULTS_RATE:-200} WARMUP=${FAULTS_WARMUP:-3} TAIL=${FAULTS_TAIL:-4}
  WRITE_DOCS=${FAULTS_WRITE_DOCS:-0}
else
  FAULT_SECONDS=${FAULT_SECONDS:-30} REDIS_DOWN_SECONDS=${REDIS_DOWN_SECONDS:-10}
  RATE=${FAULTS_RATE:-300} WARMUP=${FAULTS_WARMUP:-5} TAIL=${FAULTS_TAIL:-10}
  WRITE_DOCS=${FAULTS_WRITE_DOCS:-1}
fi
PROFILE=${FAULTS_PROFILE:-debug}
KEEP=${FAULTS_KEEP:-0}
SESSION_TIMEOUT_MS=${FAULTS_SESSION_TIMEOUT_MS:-6000}
SHUTDOWN_TIMEOUT_MS=${FAULTS_WORKER_SHUTDOWN_TIMEOUT_MS:-5000}
# How long the accounting waits for the workers to catch up after the load (a killed worker's
# partitions move after up to two session timeouts on the development broker).
CATCHUP_SECONDS=${FAULTS_CATCHUP_SECONDS:-180}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ALL_FAULTS="worker-sigkill worker-sigkill-rebalance worker-sigterm worker-sigterm-blocked broker-down
pg-restart pg-down pg-lock redis-restart gateway-sigterm gateway-sigterm-inflight engine-sigkill
engine-sigterm engine-sigterm-blocked"
ALL_FAULTS=$(echo $ALL_FAULTS)
FAULTS=$(echo "${@:-$ALL_FAULTS}")

OUT="$ROOT/target/faults"
BIN="$OUT/bin"
RESULTS="$OUT/results.jsonl"
LOAD="$ROOT/scripts/faults/load.py"
DOCS="$ROOT/docs/RELIABILITY.md"

[ -x "$PG_BIN/initdb" ] || die "no PostgreSQL server binaries in $PG_BIN (apt-get install postgresql-15, or set PG_BIN)"
command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
command -v python3 >/dev/null || die "python3 is missing"
command -v psql >/dev/null || die "psql is missing (apt-get install postgresql-client)"
# The HyperLogLog extension of the analytics rollups, for these server binaries' version.
PG_MAJOR=$("$PG_BIN/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
if [ ! -f "/usr/share/postgresql/$PG_MAJOR/extension/hll.control" ]; then
  echo "installing postgresql-$PG_MAJOR-hll from Debian's packages" >&2
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR-hll" >/dev/null
fi
for f in $FAULTS; do
  case " $ALL_FAULTS " in *" $f "*) ;; *) die "unknown fault $f (known: $ALL_FAULTS)" ;; esac
  [ "$(printf '%s\n' $FAULTS | grep -cx -- "$f")" = 1 ] || die "fault $f is named twice (one stack directory each)"
done

# One run at a time: the directory is the run's.
mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/faults.lock"
flock -n 9 || die "another scripts/faults.sh is running (target/faults.lock)"

started=$(date +%s)
case "$PROFILE" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) die "FAULTS_PROFILE is debug or release" ;;
esac
log "building $PROFILE binaries"
cargo build "${cargo_profile[@]}" --quiet -p gamify-api --bin gamify-api -p gamify-worker --bin gamify-worker \
  -p gamify-dev-broker --bin gamify-dev-broker -p gamify-engine --bin gamify-engine
rm -rf "$OUT"
mkdir -p "$BIN"
# Copies: another engineer's cargo build may replace target/$PROFILE/* while a fault restarts a process.
for b in gamify-api gamify-worker gamify-dev-broker gamify-engine; do cp "$ROOT/target/$PROFILE/$b" "$BIN/$b"; done
: >"$RESULTS"

# --- processes --------------------------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); else AS_PG=(); fi
PIDS=()          # every background process of the current stack
PG_DATA=""       # the current private cluster
LOAD_PID=""      # the load generator
failed_any=0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: polls every 0.2 s; status 99 gives up at once
  local seconds=$1 what=$2 rc; shift 2
  local end=$(($(date +%s) + seconds))
  while true; do
    rc=0; "$@" >/dev/null 2>&1 || rc=$?
    [ "$rc" != 0 ] || return 0
    [ "$rc" != 99 ] || { log "$what: the process exited"; return 1; }
    [ "$(date +%s)" -lt "$end" ] || { log "$what: not within ${seconds}s"; return 1; }
    sleep 0.2
  done
}

alive() { # a process that exists and is not a zombie
  local s
  s=$(awk '{sub(/^.*\) /, ""); print $1}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$s" ] && [ "$s" != Z ]
}

stop_pid() { # TERM, up to 10 s, then KILL; reaps it
  local pid=$1 i
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do alive "$pid" || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stack_down() {
  [ -z "$LOAD_PID" ] || { stop_pid "$LOAD_PID"; LOAD_PID=""; }
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done # workers first, broker last
  PIDS=()
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  PG_DATA=""
}

cleanup() {
  local rc=$?
  stack_down
  # kept for its logs when asked, when a fault failed or the suite broke; not when interrupted
  if [ "$KEEP" = 1 ] || { [ "$rc" != 130 ] && [ "$rc" != 143 ] && { [ "$failed_any" = 1 ] || [ "$rc" != 0 ]; }; }; then
    [ -d "$OUT" ] && log "kept $OUT (logs of every stack)"
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- one isolated stack -------------------------------------------------------------------------------
# stack_up FAULT WORKERS: private Postgres, Redis and broker, migrated; two gateways; WORKERS workers;
# one engine; an organization, a project with its rules and a secret key. Sets DIR PSQL API_URLS
# PROJECT KEY and the ports.
stack_up() {
  local fault=$1 workers=$2
  FAULT=$fault DIR="$OUT/$fault"
  mkdir -p "$DIR/logs" "$DIR/redis"

  # Postgres: a cluster of its own, trust authentication on 127.0.0.1 and its own socket directory.
  PG_DATA="$DIR/pg" PG_SOCK="$DIR/pgsock" PG_PORT=$(free_port)
  mkdir -p "$PG_DATA" "$PG_SOCK"
  [ ${#AS_PG[@]} -eq 0 ] || chown postgres "$PG_DATA" "$PG_SOCK" "$DIR/logs"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
    >"$DIR/logs/initdb.log" 2>&1 || { cat "$DIR/logs/initdb.log" >&2; die "initdb failed"; }
  pg_start
  PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres)
  "${PSQL[@]}" -d postgres -c "CREATE ROLE gamify_owner LOGIN CREATEROLE PASSWORD 'gamify_owner'" \
    -c "CREATE DATABASE gamify OWNER gamify_owner"
  # The analytics rollups' HyperLogLog type (not a trusted extension: the superuser creates it).
  "${PSQL[@]}" -d gamify -c "CREATE EXTENSION hll"
  export DATABASE_OWNER_URL="postgres://gamify_owner:gamify_owner@127.0.0.1:$PG_PORT/gamify"
  export DATABASE_URL="postgres://gamify_app:gamify_app@127.0.0.1:$PG_PORT/gamify"

  # Redis: nothing persisted.
  REDIS_PORT=$(free_port)
  redis_start
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

  # Broker: the development broker, in memory, its own directory.
  BROKER_DIR="$DIR/broker"
  "$BIN/gamify-dev-broker" serve --dir "$BROKER_DIR" >"$DIR/logs/broker.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_for 30 "gamify-dev-broker" test -s "$BROKER_DIR/bootstrap" || die "broker did not start"
  export KAFKA_TOPIC=gamify.faults.events KAFKA_DLQ_TOPIC=gamify.faults.events.dlq
  "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" create-topic "$KAFKA_TOPIC" 12 >/dev/null
  "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" create-topic "$KAFKA_DLQ_TOPIC" 3 >/dev/null
  KAFKA_BROKERS=$(cat "$BROKER_DIR/bootstrap")
  export KAFKA_BROKERS

  export ENVELOPE_SECRET="faults-envelope-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export ADMIN_TOKEN="adm_faults_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export GAMIFY_DEV_MODE=0 RUST_LOG=${FAULTS_RUST_LOG:-info}
  export CLIENT_RATE_LIMIT_PER_SECOND=1000000 CLIENT_RATE_LIMIT_BURST=1000000
  export SECRET_KEY_RATE_LIMIT_PER_SECOND=1000000 SECRET_KEY_RATE_LIMIT_BURST=1000000
  export PROJECT_RATE_LIMIT_PER_SECOND=1000000 PROJECT_RATE_LIMIT_BURST=1000000
  export KAFKA_GROUP_ID=gamify-faults KAFKA_SESSION_TIMEOUT_MS=$SESSION_TIMEOUT_MS
  export WORKER_SHUTDOWN_TIMEOUT_MS=$SHUTDOWN_TIMEOUT_MS WORKER_LAG_INTERVAL_MS=500
  # the engine: its group is KAFKA_GROUP_ID's (gamify-faults.engine), its port set per process
  unset KAFKA_PRODUCER_PROPERTIES KAFKA_CONSUMER_PROPERTIES PORT WORKER_PORT ENGINE_PORT ENGINE_GROUP_ID \
    WEBHOOKS_ALLOW_PRIVATE

  "$BIN/gamify-api" migrate >"$DIR/logs/migrate.log" 2>&1 || { cat "$DIR/logs/migrate.log" >&2; die "migrate failed"; }

  API_PIDS=() API_URLS=()
  local i
  for i in 1 2; do api_start "$i"; done
  WORKER_PIDS=() WORKER_PORTS=() WORKER_N=0
  for i in $(seq 1 "$workers"); do worker_start; done
  ENGINE_PIDS=() ENGINE_PORTS=() ENGINE_N=0
  engine_start

  # tenant, rules and key, through the first gateway
  local api=${API_URLS[0]} org
  org=$(admin_post "$api" /v1/organizations '{"name":"faults"}' | field id)
  PROJECT=$(admin_post "$api" /v1/projects "{\"organizationId\":\"$org\",\"name\":\"$fault\"}" | field id)
  [ -n "$PROJECT" ] || die "could not create a project"
  # One point per event: every stored `processed` load event (all have a userId; the key is a
  # secret one, the metric's default source) earns exactly one ledger row of amount 1.
  admin_put "$api" "/v1/projects/$PROJECT/rules" "{\"apply\":\"from_now\",\"rules\":$RULES}" >/dev/null \
    || die "could not publish the rules"
  KEY=$(admin_post "$api" "/v1/projects/$PROJECT/api-keys" '{"name":"faults","type":"secret"}' | field key)
  [ -n "$KEY" ] || die "could not create an API key"
  # every worker and the engine serve /healthz (their consumer loops run) before the load starts
  for i in "${!WORKER_PORTS[@]}"; do
    wait_for 60 "worker $((i + 1)) /healthz" ready "${WORKER_PIDS[$i]}" "http://127.0.0.1:${WORKER_PORTS[$i]}/healthz" \
      || die "worker did not start: $(tail -n 3 "$DIR/logs/worker-$((i + 1)).log")"
  done
  wait_for 60 "engine /healthz" ready "${ENGINE_PIDS[0]}" "http://127.0.0.1:${ENGINE_PORTS[0]}/healthz" \
    || die "engine did not start: $(tail -n 3 "$DIR/logs/engine-1.log")"
}

# The load's rules: one metric counting the load's events, one point each time it is fed.
RULES='{"timezone":"UTC","metrics":[{"key":"n","event":"fault_probe","aggregate":"count","source":"secret"}],
"points":[{"key":"xp","name":"XP","triggers":[{"metric":"n","points":1}]}]}'
RULES=$(echo $RULES)

pg_start() {
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$DIR/logs/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
}
pg_stop() { "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null; }

redis_start() {
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$DIR/redis" \
    --logfile "$DIR/logs/redis.log" --daemonize no &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_for 15 "redis" sh -c "redis-cli -p $REDIS_PORT ping | grep -q PONG" || die "redis did not start"
}

api_start() { # api_start N
  local port
  port=$(free_port)
  PORT=$port "$BIN/gamify-api" serve >>"$DIR/logs/api-$1.log" 2>&1 </dev/null &
  API_PIDS[$1 - 1]=$!
  PIDS+=($!)
  API_URLS[$1 - 1]="http://127.0.0.1:$port"
  wait_for 30 "gamify-api $1 /readyz" ready "${API_PIDS[$1 - 1]}" "http://127.0.0.1:$port/readyz" \
    || die "gamify-api did not start: $(tail -n 3 "$DIR/logs/api-$1.log")"
}

worker_start() { # a worker more; its index in WORKER_PIDS/WORKER_PORTS is WORKER_N - 1
  local port
  port=$(free_port)
  WORKER_N=$((WORKER_N + 1))
  WORKER_PORT=$port "$BIN/gamify-worker" >>"$DIR/logs/worker-$WORKER_N.log" 2>&1 </dev/null &
  WORKER_PIDS+=($!)
  WORKER_PORTS+=("$port")
  PIDS+=($!)
}

engine_start() { # an engine more (a restart); its index in ENGINE_PIDS/ENGINE_PORTS is ENGINE_N - 1
  local port
  port=$(free_port)
  ENGINE_N=$((ENGINE_N + 1))
  ENGINE_PORT=$port "$BIN/gamify-engine" >>"$DIR/logs/engine-$ENGINE_N.log" 2>&1 </dev/null &
  ENGINE_PIDS+=($!)
  ENGINE_PORTS+=("$port")
  PIDS+=($!)
}

ready() { # ready PID URL: URL answers 2xx; a dead PID ends the wait at once
  alive "$1" || return 99
  curl -fsS "$2"
}
admin_post() { curl -fsS -X POST "$1$2" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d "$3"; }
admin_put() { # admin_put URL PATH BODY: succeeds on 201 only; the answer is kept in logs/put.json
  local code
  code=$(curl -sS -o "$DIR/logs/put.json" -w '%{http_code}' -X PUT "$1$2" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d "$3") || return 1
  [ "$code" = 201 ] || { log "PUT $2 answered $code: $(cat "$DIR/logs/put.json")"; return 1; }
}
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

worker_metric() { # worker_metric PORT NAME
  curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v m="$2" '$1 == m {printf "%d", $2}'
}
metric_above() { # metric_above PORT NAME N: the worker's counter NAME exceeds N
  local v; v=$(worker_metric "$1" "$2"); [ "${v:-0}" -gt "$3" ]
}
in_flight() { # in_flight PORT: messages the worker consumed and has not finished with
  curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null | awk '
    $1 == "gamify_worker_messages_consumed_total" { c = $2 }
    $1 ~ /^gamify_worker_(events_persisted|events_failed|duplicates|messages_dead_lettered)_total$/ { d += $2 }
    END { printf "%d", c - d }'
}
# worker_busy PORT: waits until the worker has persisted events and holds a batch it is writing
# (gamify_worker_messages_consumed_total, counted when a batch's processing starts, exceeds persisted
# + failed + duplicates + dead-lettered): the fault then lands mid-batch, give or take the few
# milliseconds between the scrape and the signal. Sets IN_FLIGHT to that count. With MIN, waits for
# a batch of at least MIN messages. The engine runs the same consumer loop and reports the same
# series on its port (persisted = evaluated): it works for the engine too.
worker_busy() { # worker_busy PORT [MIN]
  local port=$1 min=${2:-1}
  IN_FLIGHT=0
  wait_for 60 "consumer on :$port persisting" metric_above "$port" gamify_worker_events_persisted_total 0 || return 1
  # the batch is counted as consumed when its writing starts, so the window is short: poll tightly
  local end=$(($(date +%s) + 30)) n
  while [ "$(date +%s)" -lt "$end" ]; do
    n=$(in_flight "$port")
    if [ "${n:-0}" -ge "$min" ]; then IN_FLIGHT=$n; return 0; fi
    sleep 0.02
  done
  log "consumer on :$port: not seen mid-batch (at least $min messages) within 30s"
  return 1
}

# both_busy: the worker and the engine are both mid-batch (polled tightly, for up to 15 s; each is
# busy a good part of the time under load). Sets IN_FLIGHT (the worker's) and ENGINE_IN_FLIGHT.
both_busy() {
  local w e end
  worker_busy "${WORKER_PORTS[0]}" || return 1
  worker_busy "${ENGINE_PORTS[0]}" || return 1
  end=$(($(date +%s) + 15))
  while [ "$(date +%s)" -lt "$end" ]; do
    w=$(in_flight "${WORKER_PORTS[0]}") e=$(in_flight "${ENGINE_PORTS[0]}")
    if [ "${w:-0}" -gt 0 ] && [ "${e:-0}" -gt 0 ]; then IN_FLIGHT=$w ENGINE_IN_FLIGHT=$e; return 0; fi
    sleep 0.01
  done
  IN_FLIGHT=${w:-0} ENGINE_IN_FLIGHT=${e:-0}
  return 1
}

# exit_within PID SECONDS [AT]: waits for PID (a child of this shell) to exit, at most SECONDS; sets
# EXIT_RC (its exit status, or "none" when it still ran) and EXIT_SECS. Not in a subshell: wait
# works only for this shell's children.
exit_within() { # exit_within PID SECONDS [SIGNALLED_AT]: counts from SIGNALLED_AT (epoch) if given
  local pid=$1 limit=$2 t0=${3:-$(date +%s.%N)}
  EXIT_RC=none
  while alive "$pid"; do
    if awk -v a="$t0" -v b="$(date +%s.%N)" -v l="$limit" 'BEGIN {exit !(b - a > l)}'; then break; fi
    sleep 0.1
  done
  if ! alive "$pid"; then EXIT_RC=0; wait "$pid" 2>/dev/null || EXIT_RC=$?; fi
  EXIT_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  [ "$EXIT_RC" != none ]
}

not_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 503 ]; }
connections() { ss -Htn state established "( sport = :$1 )" | wc -l; }
connections_above() { [ "$(connections "$1")" -gt "$2" ]; }
lock_waited() { # a session of the application role waits on a lock
  [ "$("${PSQL[@]}" -d gamify -tAc "SELECT count(*) FROM pg_stat_activity WHERE usename = 'gamify_app' AND wait_event_type = 'Lock'")" -gt 0 ]
}

# --- load and accounting ----------------------------------------------------------------------------------
load_start() { # load_start FAULT SECONDS [RATE]
  python3 "$LOAD" send --api "$(IFS=,; echo "${API_URLS[*]}")" --key "$KEY" --prefix "$1" \
    --rate "${3:-$RATE}" --seconds "$2" --out "$DIR/requests.jsonl" >"$DIR/load.json" 2>"$DIR/logs/load.err" &
  LOAD_PID=$!
  LOAD_T0=$(date +%s)
}
load_wait() {
  wait "$LOAD_PID" || die "load generator failed: $(cat "$DIR/logs/load.err")"
  LOAD_PID=""
}
# Sleeps until SECONDS after the load started (the load's timeline, not a synchronisation).
at_load_second() { local d=$(($1 - ($(date +%s) - LOAD_T0))); [ "$d" -le 0 ] || sleep "$d"; }

# spanning FILE EPOCH [API]: outcomes of the requests (to gateway API, an index, if given) that
# had started and not yet ended at EPOCH — the requests a fault at EPOCH caught in flight.
spanning() {
  python3 - "$@" <<'PY'
import json, sys, collections
path, at = sys.argv[1], float(sys.argv[2])
api = int(sys.argv[3]) if len(sys.argv) > 3 else None
c, slowest = collections.Counter(), 0
for line in open(path):
    r = json.loads(line)
    if r["t"] <= at < r["t"] + r["ms"] / 1000 and (api is None or r["api"] == api):
        c[str(r["status"])] += 1
        slowest = max(slowest, r["ms"])
print((", ".join(f"{k}×{v}" for k, v in sorted(c.items())) or "none") + (f" (slowest {slowest} ms)" if c else ""))
PY
}

NOTES=""
note() { NOTES="${NOTES:+$NOTES; }$*"; log "$*"; }

account() { # account FAULT
  local metrics="" engines="" p dups=0 edups=0 v
  for p in "${WORKER_PORTS[@]}"; do metrics="${metrics:+$metrics,}http://127.0.0.1:$p/metrics"; done
  for p in "${ENGINE_PORTS[@]}"; do engines="${engines:+$engines,}http://127.0.0.1:$p/metrics"; done
  python3 "$LOAD" check --requests "$DIR/requests.jsonl" --psql "${PSQL[*]} -d gamify" --prefix "$1" \
    --fault "$1" --metrics "$metrics" --wait "$CATCHUP_SECONDS" --project "$PROJECT" \
    --engine-metrics "$engines" >"$DIR/row.json" 2>>"$DIR/logs/load.err" \
    || die "accounting failed: $(cat "$DIR/logs/load.err")"
  for p in "${WORKER_PORTS[@]}"; do v=$(worker_metric "$p" gamify_worker_duplicates_total || true); dups=$((dups + ${v:-0})); done
  for p in "${ENGINE_PORTS[@]}"; do v=$(worker_metric "$p" gamify_worker_duplicates_total || true); edups=$((edups + ${v:-0})); done
  note "redelivered messages absorbed by the dedup (workers alive at the end): $dups, by the engine's (engine alive at the end): $edups"
  python3 - "$DIR/row.json" "$NOTES" >>"$RESULTS" <<'PY'
import json, sys
row = json.load(open(sys.argv[1])); row["notes"] = sys.argv[2]; print(json.dumps(row))
PY
  local verdict
  # storage: lost, duplicated; awards: missing, duplicated (every kind of extra row or evaluation);
  # outcomes: missing
  verdict=$(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
bad = {k: r.get(k, "absent") for k in ("lost", "duplicated", "awards_missing", "awards_duplicated", "outcomes_missing")}
print(", ".join(f"{k} {v}" for k, v in bad.items() if v != 0))' "$DIR/row.json")
  if [ -n "$verdict" ]; then failed_any=1; log "FAULT $1: $verdict (logs in ${DIR#"$ROOT"/})"; fi
  log "$1: $(cat "$DIR/row.json")"
}

# --- the faults ----------------------------------------------------------------------------------------
LOAD_LEN_SHORT=$((WARMUP + 8 + TAIL))            # faults that are an instant (a kill)
LOAD_LEN_OUTAGE=$((WARMUP + FAULT_SECONDS + TAIL)) # faults that last FAULT_SECONDS

fault_worker-sigkill() {
  stack_up worker-sigkill 1
  load_start worker-sigkill "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; worker_busy "${WORKER_PORTS[0]}" || note "worker was not seen busy"
  kill -9 "${WORKER_PIDS[0]}"; wait "${WORKER_PIDS[0]}" 2>/dev/null || true
  note "worker SIGKILLed with $IN_FLIGHT messages consumed and unfinished, restarted at once"
  worker_start
  load_wait
}

fault_worker-sigkill-rebalance() {
  stack_up worker-sigkill-rebalance 2
  load_start worker-sigkill-rebalance "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; worker_busy "${WORKER_PORTS[0]}" || note "worker 1 was not seen busy"
  kill -9 "${WORKER_PIDS[0]}"; wait "${WORKER_PIDS[0]}" 2>/dev/null || true
  note "worker 1 of 2 SIGKILLed with $IN_FLIGHT messages consumed and unfinished, not restarted"
  load_wait
}

fault_worker-sigterm() {
  stack_up worker-sigterm 1
  load_start worker-sigterm "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; worker_busy "${WORKER_PORTS[0]}" || note "worker was not seen busy"
  kill -TERM "${WORKER_PIDS[0]}"
  local limit=$((SHUTDOWN_TIMEOUT_MS / 1000 + 5))
  exit_within "${WORKER_PIDS[0]}" "$limit" || { failed_any=1; kill -9 "${WORKER_PIDS[0]}"; }
  note "SIGTERM with $IN_FLIGHT messages consumed and unfinished: exited with status $EXIT_RC after ${EXIT_SECS}s (limit ${limit}s = WORKER_SHUTDOWN_TIMEOUT_MS + 5 s)"
  [ "$EXIT_RC" = 0 ] || failed_any=1
  worker_start
  load_wait
}

fault_worker-sigterm-blocked() {
  # The batch in flight waits on a lock that is never released in time: the worker must still exit
  # within WORKER_SHUTDOWN_TIMEOUT_MS, abandoning the batch uncommitted (redelivered, deduplicated).
  stack_up worker-sigterm-blocked 1
  load_start worker-sigterm-blocked "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; worker_busy "${WORKER_PORTS[0]}" || note "worker was not seen busy"
  "${PSQL[@]}" -d gamify -c "BEGIN" -c "LOCK TABLE event_message_ids IN ACCESS EXCLUSIVE MODE" \
    -c "SELECT pg_sleep(600)" -c "COMMIT" >/dev/null 2>&1 &
  local locker=$! limit=$((SHUTDOWN_TIMEOUT_MS / 1000 + 5))
  PIDS+=("$locker")
  wait_for 30 "the worker blocked on the lock" lock_waited || note "worker not seen waiting on the lock"
  TERM_AT=$(date +%s.%N)
  kill -TERM "${WORKER_PIDS[0]}"
  local late=""
  if ! exit_within "${WORKER_PIDS[0]}" "$limit"; then
    # past its deadline: a defect; measure how late it is (up to 60 s), then kill it
    failed_any=1
    exit_within "${WORKER_PIDS[0]}" 60 "$TERM_AT" || kill -9 "${WORKER_PIDS[0]}"
    late=" — MISSED THE DEADLINE (see logs/worker-1.log)"
  fi
  note "SIGTERM while its batch waits on a lock: exited with status $EXIT_RC after ${EXIT_SECS}s (limit ${limit}s)$late"
  [ "$EXIT_RC" = 0 ] || failed_any=1
  "${PSQL[@]}" -d postgres -tAc "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'" >/dev/null
  wait "$locker" 2>/dev/null || true
  worker_start
  load_wait
}

fault_broker-down() {
  stack_up broker-down 1
  load_start broker-down "$LOAD_LEN_OUTAGE"
  at_load_second "$WARMUP"
  local down_at up_at
  "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" broker-down 1 >/dev/null
  down_at=$(date +%s.%N)
  if wait_for "$FAULT_SECONDS" "gateway 1 /readyz failing" not_ready "${API_URLS[0]}/readyz"; then
    note "gateway 1 /readyz answered 503 $(awk -v a="$down_at" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s into the outage"
  else
    note "gateway 1 /readyz did not fail during the outage"
  fi
  local left
  left=$(awk -v a="$down_at" -v b="$(date +%s.%N)" -v f="$FAULT_SECONDS" 'BEGIN {printf "%.2f", f - (b - a)}')
  sleep "$left" # the rest of the outage
  "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" broker-up 1 >/dev/null
  up_at=$(date +%s.%N)
  note "broker down ${FAULT_SECONDS}s; $(python3 - "$DIR/requests.jsonl" "$down_at" "$up_at" <<'PY'
import json, sys, collections
down, up = float(sys.argv[2]), float(sys.argv[3])
c = collections.Counter()
for l in open(sys.argv[1]):
    r = json.loads(l)
    if down + 1 <= r["t"] and r["t"] + r["ms"] / 1000 <= up: c[str(r["status"])] += 1
print("requests started and answered within the outage: " + (", ".join(f"{k}×{v}" for k, v in sorted(c.items())) or "none"))
PY
)"
  load_wait
  local w e; w=$(grep -c 'ERROR\|error' "$DIR/logs/worker-1.log" || true)
  e=$(grep -c 'ERROR\|error' "$DIR/logs/engine-1.log" || true)
  note "worker and engine not restarted ($w and $e error lines in their logs)"
}

fault_pg-restart() {
  stack_up pg-restart 1
  load_start pg-restart "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; both_busy || note "worker and engine were not seen busy at once"
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 restart >/dev/null
  note "pg_ctl restart -m fast under load, $IN_FLIGHT messages in the worker's hands, $ENGINE_IN_FLIGHT in the engine's"
  load_wait
}

fault_pg-down() {
  stack_up pg-down 1
  load_start pg-down "$LOAD_LEN_OUTAGE"
  at_load_second "$WARMUP"; worker_busy "${WORKER_PORTS[0]}" || note "worker was not seen busy"
  pg_stop
  sleep "$FAULT_SECONDS"
  pg_start
  note "Postgres stopped (-m fast) for ${FAULT_SECONDS}s, then started"
  load_wait
}

fault_pg-lock() {
  stack_up pg-lock 1
  load_start pg-lock "$LOAD_LEN_OUTAGE"
  at_load_second "$WARMUP"; worker_busy "${WORKER_PORTS[0]}" || note "worker was not seen busy"
  "${PSQL[@]}" -d gamify -c "BEGIN" -c "LOCK TABLE event_message_ids IN ACCESS EXCLUSIVE MODE" \
    -c "SELECT pg_sleep($FAULT_SECONDS)" -c "COMMIT" >/dev/null
  note "ACCESS EXCLUSIVE lock on event_message_ids held ${FAULT_SECONDS}s by the superuser"
  load_wait
}

fault_redis-restart() {
  stack_up redis-restart 1
  load_start redis-restart "$((WARMUP + REDIS_DOWN_SECONDS + TAIL))"
  at_load_second "$WARMUP"
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  wait "$REDIS_PID" 2>/dev/null || true
  sleep "$REDIS_DOWN_SECONDS"
  redis_start
  note "Redis stopped (SHUTDOWN NOSAVE) for ${REDIS_DOWN_SECONDS}s, restarted empty"
  load_wait
}

fault_gateway-sigterm() {
  stack_up gateway-sigterm 1
  # three times the rate; signalled when it holds a connection (established connections, polled
  # every 10 ms). A request takes milliseconds, so it may be answered before the signal lands; the
  # notes say what was in flight (gateway-sigterm-inflight holds requests for certain).
  load_start gateway-sigterm "$LOAD_LEN_SHORT" $((RATE * 3))
  at_load_second "$WARMUP"
  local port=${API_URLS[0]##*:} end=$(($(date +%s) + 30))
  until connections_above "$port" 0; do
    [ "$(date +%s)" -lt "$end" ] || { note "gateway 1 not seen holding a request"; break; }
    sleep 0.01
  done
  SIGTERM_AT=$(date +%s.%N)
  kill -TERM "${API_PIDS[0]}"
  exit_within "${API_PIDS[0]}" 30 "$SIGTERM_AT" || { failed_any=1; kill -9 "${API_PIDS[0]}"; }
  note "gateway 1 of 2 SIGTERMed under load: exited with status $EXIT_RC after ${EXIT_SECS}s (limit 30 s); the client moves to gateway 2 on refused connections"
  [ "$EXIT_RC" = 0 ] || failed_any=1
  load_wait
  note "requests to gateway 1 in flight at its SIGTERM: $(spanning "$DIR/requests.jsonl" "$SIGTERM_AT" 0)"
}

fault_gateway-sigterm-inflight() {
  # SIGTERM while the gateway holds requests that wait for the broker's acknowledgement: each must
  # end in a 202 for events the broker has (then stored) or a 503, and the gateway must then exit.
  stack_up gateway-sigterm-inflight 1
  load_start gateway-sigterm-inflight "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"
  local port=${API_URLS[0]##*:} held
  "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" broker-down 1 >/dev/null
  wait_for 30 "requests held by gateway 1" connections_above "$port" 2 || note "gateway 1 not seen holding requests"
  held=$(connections "$port")
  SIGTERM_AT=$(date +%s.%N)
  kill -TERM "${API_PIDS[0]}"
  sleep 2 # the broker stays down 2 s into the gateway's shutdown
  "$BIN/gamify-dev-broker" ctl --dir "$BROKER_DIR" broker-up 1 >/dev/null
  exit_within "${API_PIDS[0]}" 30 "$SIGTERM_AT" || { failed_any=1; kill -9 "${API_PIDS[0]}"; }
  note "broker down, gateway 1 SIGTERMed holding $held connections, broker up 2 s later: gateway exited with status $EXIT_RC ${EXIT_SECS}s after SIGTERM (limit 30 s)"
  [ "$EXIT_RC" = 0 ] || failed_any=1
  load_wait
  note "requests to gateway 1 in flight at its SIGTERM: $(spanning "$DIR/requests.jsonl" "$SIGTERM_AT" 0)"
}

# --- the engine's faults -------------------------------------------------------------------------------
# A superuser session fed step by step through a FIFO (application_name faults-locker), to take and
# release locks while the load runs. Its steps are checked in pg_stat_activity / pg_locks.
locker_start() {
  rm -f "$DIR/locker.fifo"; mkfifo "$DIR/locker.fifo"
  PGAPPNAME=faults-locker psql -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d gamify \
    <"$DIR/locker.fifo" >>"$DIR/logs/locker.log" 2>&1 &
  LOCKER_PID=$!
  PIDS+=("$LOCKER_PID")
  exec 8>"$DIR/locker.fifo"
}
locker() { (trap '' PIPE; printf '%s\n' "$1" >&8) 2>/dev/null || log "the locker session is gone: $(tail -n 3 "$DIR/logs/locker.log")"; }
locker_stop() { # rolls back whatever it holds, and ends (leaves EXIT_RC and EXIT_SECS alone)
  local i
  locker "ROLLBACK;"; locker '\q'
  exec 8>&-
  for i in $(seq 1 50); do alive "$LOCKER_PID" || break; sleep 0.2; done
  kill -9 "$LOCKER_PID" 2>/dev/null || true
  wait "$LOCKER_PID" 2>/dev/null || true
}
locker_is() { # locker_is CONDITION: the locker's session (pg_stat_activity a) satisfies CONDITION
  [ "$("${PSQL[@]}" -d gamify -tAc "SELECT count(*) FROM pg_stat_activity a WHERE a.application_name = 'faults-locker' AND ($1)")" -gt 0 ]
}
HOLDS_ADVISORY="EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)"
locker_free() { ! locker_is "$HOLDS_ADVISORY"; }
engine_waits() { # engine_waits PATTERN: a session of the application role waits on a lock in a query matching PATTERN
  [ "$("${PSQL[@]}" -d gamify -tAc "SELECT count(*) FROM pg_stat_activity WHERE usename = 'gamify_app' AND wait_event_type = 'Lock' AND query LIKE '$1'")" -gt 0 ]
}
outcomes() { "${PSQL[@]}" -d gamify -tAc "SELECT count(*) FROM engine_outcomes"; }
outcomes_settled() { # the outcome count did not change over 0.5 s; sets OUTCOMES
  local a; a=$(outcomes); sleep 0.5; OUTCOMES=$(outcomes); [ "$a" = "$OUTCOMES" ]
}
next_message_seq() { # a messageId number above every one the load has allotted (16 requests of 20 in flight at most)
  python3 -c 'import json, sys
top = max((int(i.rsplit("-", 1)[1]) for l in open(sys.argv[1]) for i in json.loads(l)["ids"]), default=0)
print(top + 16 * 20 + 20)' "$DIR/requests.jsonl"
}

# engine_backlog [BLOCK]: once the engine evaluates, the locker takes the project's advisory lock
# exclusively (every evaluation takes it shared: docs/GAMIFICATION.md), so the engine's batch waits
# at its first statement while the storage worker goes on and a backlog builds up for
# ENGINE_PAUSE seconds; released, the next batch holds hundreds of messages, cut by user into
# several transactions. With BLOCK, before the release, the locker also inserts, uncommitted, the
# engine's dedup row (engine_message_ids) of a messageId the load sends a moment later: the share
# of the backlog's batch with that message waits on the row, the other shares commit. A signal
# then finds a batch part committed in Postgres, its offsets not committed: the new engine must
# skip what was committed (no second award) and evaluate the rest (none missing). The row is
# rolled back once the engine is gone (locker_stop). Sets HELD (the batch held by the advisory
# lock), IN_FLIGHT (the batch in hand at the signal) and HALF (outcomes of it committed before the
# signal).
ENGINE_PAUSE=3
engine_backlog() {
  local port=${ENGINE_PORTS[0]} key before
  key=$(python3 -c 'import sys, uuid
print(int.from_bytes(uuid.UUID(sys.argv[1]).bytes[:8], "big", signed=True) ^ 0x67616d696679)' "$PROJECT")
  worker_busy "$port" || note "engine was not seen busy"
  locker_start
  locker "SELECT pg_advisory_lock($key);"
  wait_for 30 "the locker's advisory lock" locker_is "$HOLDS_ADVISORY" || note "the advisory lock was not taken"
  wait_for 30 "the engine waiting on it" engine_waits '%pg_advisory_xact_lock_shared%' \
    || note "engine not seen waiting on the advisory lock"
  HELD=$(in_flight "$port")
  if [ "${1:-}" = block ]; then
    BLOCK_ID="$FAULT-$(next_message_seq)"
    locker "BEGIN; INSERT INTO engine_message_ids (project_id, key_type, message_id, event_id) VALUES ('$PROJECT', 'secret', '$BLOCK_ID', gen_random_uuid());"
    wait_for 30 "the locker's dedup row" locker_is "a.state = 'idle in transaction' AND a.query LIKE 'INSERT INTO engine_message_ids%'" \
      || note "the dedup row of $BLOCK_ID was not inserted"
  fi
  sleep "$ENGINE_PAUSE"
  before=$(outcomes)
  locker "SELECT pg_advisory_unlock($key);"
  if [ "${1:-}" = block ]; then
    wait_for 30 "the engine waiting on $BLOCK_ID's dedup row" engine_waits '%INSERT INTO engine_message_ids%' \
      || note "engine not seen waiting on the dedup row of $BLOCK_ID"
    wait_for 30 "the rest of the batch" outcomes_settled || true
    IN_FLIGHT=$(in_flight "$port")
  else
    wait_for 30 "the advisory lock released" locker_free || true
    worker_busy "$port" $((RATE * ENGINE_PAUSE / 4)) || note "engine was not seen busy with its backlog"
    OUTCOMES=$(outcomes)
  fi
  HALF=$((${OUTCOMES:-0} - before - ${HELD:-0}))
}

fault_engine-sigkill() {
  stack_up engine-sigkill 1
  load_start engine-sigkill "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; engine_backlog block
  kill -9 "${ENGINE_PIDS[0]}"; wait "${ENGINE_PIDS[0]}" 2>/dev/null || true
  locker_stop
  note "engine's batch of $HELD held ${ENGINE_PAUSE}s (advisory lock); in the next one, of $IN_FLIGHT messages, the share with $BLOCK_ID waited on its uncommitted dedup row while the rest committed ($HALF outcomes since the release, a small batch between included): SIGKILL; row rolled back, engine restarted"
  engine_start
  load_wait
}

fault_engine-sigterm() {
  stack_up engine-sigterm 1
  load_start engine-sigterm "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; engine_backlog
  kill -TERM "${ENGINE_PIDS[0]}"
  local limit=$((SHUTDOWN_TIMEOUT_MS / 1000 + 5))
  exit_within "${ENGINE_PIDS[0]}" "$limit" || { failed_any=1; kill -9 "${ENGINE_PIDS[0]}"; }
  locker_stop
  note "engine's batch of $HELD held ${ENGINE_PAUSE}s (advisory lock), SIGTERM in the next one with $IN_FLIGHT messages consumed and unfinished: exited with status $EXIT_RC after ${EXIT_SECS}s (limit ${limit}s = WORKER_SHUTDOWN_TIMEOUT_MS + 5 s); a new one started"
  [ "$EXIT_RC" = 0 ] || failed_any=1
  engine_start
  load_wait
}

fault_engine-sigterm-blocked() {
  # like engine-sigkill, with SIGTERM: the engine must exit within WORKER_SHUTDOWN_TIMEOUT_MS + 5 s
  # although a share of its batch cannot finish, abandoning it uncommitted
  stack_up engine-sigterm-blocked 1
  load_start engine-sigterm-blocked "$LOAD_LEN_SHORT"
  at_load_second "$WARMUP"; engine_backlog block
  TERM_AT=$(date +%s.%N)
  kill -TERM "${ENGINE_PIDS[0]}"
  local limit=$((SHUTDOWN_TIMEOUT_MS / 1000 + 5)) late=""
  if ! exit_within "${ENGINE_PIDS[0]}" "$limit"; then
    failed_any=1
    exit_within "${ENGINE_PIDS[0]}" 60 "$TERM_AT" || kill -9 "${ENGINE_PIDS[0]}"
    late=" — MISSED THE DEADLINE (see logs/engine-1.log)"
  fi
  locker_stop
  note "engine's batch of $HELD held ${ENGINE_PAUSE}s (advisory lock); in the next one, of $IN_FLIGHT messages, the share with $BLOCK_ID waited on its uncommitted dedup row while the rest committed ($HALF outcomes since the release, a small batch between included): SIGTERM, exited with status $EXIT_RC after ${EXIT_SECS}s (limit ${limit}s)$late; row rolled back, engine restarted"
  [ "$EXIT_RC" = 0 ] || failed_any=1
  engine_start
  load_wait
}

# --- run ---------------------------------------------------------------------------------------------
REV=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- apps libs migrations Cargo.toml Cargo.lock 2>/dev/null; then REV="$REV+uncommitted"; fi
for f in $FAULTS; do
  log "fault $f"
  t0=$(date +%s)
  NOTES=""
  "fault_$f"
  account "$f"
  stack_down
  log "$f took $(($(date +%s) - t0))s"
done
took=$(($(date +%s) - started))

# --- report --------------------------------------------------------------------------------------------
mode=full; [ "$QUICK" = 1 ] && mode=quick
cmd="./scripts/faults.sh"; [ "$QUICK" = 1 ] && cmd="FAULTS_QUICK=1 $cmd"
[ $# -eq 0 ] || cmd="$cmd $FAULTS"
python3 - "$RESULTS" "$OUT/results.md" "$mode" "$REV" "$cmd" "$took" "$PROFILE" "$FAULT_SECONDS" "$RATE" <<'PY'
import json, sys, datetime
results, out, mode, rev, cmd, took, profile, fault_s, rate = sys.argv[1:]
rows = [json.loads(l) for l in open(results) if l.strip()]
lines = [
    f"Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, revision `{rev}`, "
    f"`{cmd}` ({mode}: outages {fault_s} s, {rate} events/s offered, {profile} binaries), "
    f"{int(took) // 60} min {int(took) % 60} s in all.",
    "",
    "| fault | events sent | 202 | non-2xx | stored | lost | duplicated | cut off | stored without 202 "
    "| awards due | awarded | awards missing | awards duplicated | outcomes missing | requests |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    req = ", ".join(f"{k}×{v}" for k, v in r["requests"].items())
    g = lambda k: r.get(k, "?")
    lines.append(f"| {r['fault']} | {r['sent']} | {r['acked']} | {r['non2xx']} | {r['stored']} | "
                 f"**{r['lost']}** | **{r['duplicated']}** | {r['cutoff']} | {r['stored_without_202']} | "
                 f"{g('awards_expected')} | {g('awarded')} | **{g('awards_missing')}** | "
                 f"**{g('awards_duplicated')}** | **{g('outcomes_missing')}** | {req} |")
lines.append("")
for r in rows:
    extra = []
    if "evaluated" in r:
        extra.append(f"engine: {r['evaluated']} evaluated, {r['not_counted']} not counted, "
                     f"caught up {r['engine_wait_s']} s after the storage accounting")
    for k in ("awards_extra_rows", "awards_unexpected", "evaluated_not_owner", "owner_mismatch",
              "outcomes_unstored"):
        if r.get(k):
            extra.append(f"{k.replace('_', ' ')}: {r[k]}")
    if r.get("award_samples"):
        extra.append(f"samples: {json.dumps(r['award_samples'])}")
    notes = "; ".join(x for x in [r.get("notes", "")] + extra if x)
    if notes:
        lines.append(f"- {r['fault']}: {notes}")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

if [ "$WRITE_DOCS" = 1 ] && [ "$FAULTS" = "$ALL_FAULTS" ]; then
  python3 - "$DOCS" "$OUT/results.md" <<'PY'
import sys
docs, res = sys.argv[1:]
text, new = open(docs).read(), open(res).read()
begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
a, b = text.index(begin) + len(begin), text.index(end)
open(docs, "w").write(text[:a] + "\n" + new + text[b:])
PY
  log "recorded in docs/RELIABILITY.md"
fi
[ "$failed_any" = 0 ] || die "a fault lost or duplicated events or awards, or a process missed its deadline (see above)"
log "every fault: 0 lost, 0 duplicated; awards 0 missing, 0 duplicated ($((took / 60)) min $((took % 60)) s)"
