# Shared provisioning for scripts/dev.sh and scripts/test.sh. Source it; do not run it.
# Makes sure Postgres and Redis run (starting them, or installing them from Debian's packages when
# absent), creates the owner role and a database, and builds the binaries.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# cargo lives here even when the caller's PATH lacks it.
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
export HOME PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
OWNER_ROLE=${OWNER_ROLE:-gamify_owner}
OWNER_PASSWORD=${OWNER_PASSWORD:-gamify_owner}
APP_ROLE=${APP_ROLE:-gamify_app}
APP_PASSWORD=${APP_PASSWORD:-gamify_app}

apt_install() {
  log "installing $* from Debian's packages"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up within ${seconds}s"
}

# psql as the Postgres superuser: over TCP where trust auth allows it, else through the local socket
# as the postgres OS user (the default of a fresh Debian install).
psql_admin() {
  if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    psql -v ON_ERROR_STOP=1 -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
  else
    "${SUDO[@]}" runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -p "$PG_PORT" -d postgres "$@"
  fi
}

ensure_postgres() {
  if pg_isready -h "$PG_HOST" -p "$PG_PORT" -q 2>/dev/null; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then apt_install postgresql postgresql-client; fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 30 "PostgreSQL on $PG_HOST:$PG_PORT" pg_isready -h "$PG_HOST" -p "$PG_PORT" -q
}

# The HyperLogLog type the analytics rollups count distinct users with: Debian's postgresql-N-hll
# for the running server's major version. It is not a trusted extension, so the superuser creates
# it in each database (create_database); the migrations only check it is there.
ensure_hll() {
  local major
  major=$(psql_admin -tAc "SHOW server_version_num" | cut -c1-2)
  if [ ! -f "/usr/share/postgresql/$major/extension/hll.control" ]; then
    apt_install "postgresql-$major-hll"
  fi
}

ensure_redis() {
  local url=${REDIS_URL:-redis://127.0.0.1:6379}
  if redis-cli -u "$url" ping 2>/dev/null | grep -q PONG; then return; fi
  if ! command -v redis-server >/dev/null 2>&1; then apt_install redis-server redis-tools; fi
  log "starting Redis"
  "${SUDO[@]}" mkdir -p /var/lib/redis /var/log/redis
  "${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/gamify.log
  wait_for 15 "Redis" sh -c "redis-cli -u '$url' ping | grep -q PONG"
}

# create_database NAME [fresh]: the owner role (which may create the application role) and a
# database it owns. With "fresh" an existing database is dropped first.
create_database() {
  local name=$1 fresh=${2:-}
  psql_admin <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$OWNER_ROLE') THEN
    CREATE ROLE $OWNER_ROLE LOGIN CREATEROLE PASSWORD '$OWNER_PASSWORD';
  END IF;
END \$\$;
SQL
  if [ "$fresh" = fresh ]; then
    psql_admin -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"
  fi
  if [ -z "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    log "creating database $name"
    psql_admin -c "CREATE DATABASE $name OWNER $OWNER_ROLE"
  fi
  ensure_hll
  psql_admin -d "$name" -c "CREATE EXTENSION IF NOT EXISTS hll"
  export DATABASE_OWNER_URL="postgres://$OWNER_ROLE:$OWNER_PASSWORD@$PG_HOST:$PG_PORT/$name"
  export DATABASE_URL="postgres://$APP_ROLE:$APP_PASSWORD@$PG_HOST:$PG_PORT/$name"
}

# Postgres and Redis tools are needed on PATH before anything else.
ensure_clients() {
  local missing=()
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # librdkafka is built with TLS against the system's OpenSSL.
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

provision() { # provision DATABASE [fresh]
  ensure_clients
  ensure_postgres
  ensure_redis
  create_database "$@"
  export KAFKA_TOPIC=${KAFKA_TOPIC:-gamify.events}
  export KAFKA_DLQ_TOPIC=${KAFKA_DLQ_TOPIC:-gamify.events.dlq}
  ensure_broker
  export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
  export ENVELOPE_SECRET=${ENVELOPE_SECRET:-dev-envelope-secret-change-me-0123456789}
}

migrate() {
  log "migrating $(sed -E 's#.*/##' <<<"$DATABASE_OWNER_URL")"
  "$ROOT/target/debug/gamify-api" migrate
}

# --- Kafka-protocol broker for development and tests: gamify-dev-broker, librdkafka's mock cluster
# (apps/dev-broker). With KAFKA_BROKERS set in the environment, that broker (Apache Kafka) is used
# instead and the topics must exist there or be auto-created.
export DEV_BROKER_DIR=${DEV_BROKER_DIR:-$ROOT/target/dev-broker}

dev_broker() { "$ROOT/target/debug/gamify-dev-broker" "$@"; }

dev_broker_running() { dev_broker ctl --dir "$DEV_BROKER_DIR" bootstrap >/dev/null 2>&1; }

# Stops the development broker serving from DEV_BROKER_DIR: for scripts that start one of their own
# (tests, fuzzing), so what they create never accumulates in a broker that outlives them.
stop_dev_broker() {
  if [ -n "${DEV_BROKER_DIR:-}" ] && [ -f "$DEV_BROKER_DIR/broker.pid" ]; then
    kill "$(cat "$DEV_BROKER_DIR/broker.pid")" 2>/dev/null || true
    rm -f "$DEV_BROKER_DIR/broker.pid" "$DEV_BROKER_DIR/bootstrap"
  fi
}

# Starts the development broker unless one answers on its control socket, creates the events and
# dead-letter topics, and exports KAFKA_BROKERS.
ensure_broker() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    log "using the broker at KAFKA_BROKERS=$KAFKA_BROKERS"
    unset DEV_BROKER_DIR
    return
  fi
  cargo build -p gamify-dev-broker --bin gamify-dev-broker --quiet
  if ! dev_broker_running; then
    mkdir -p "$DEV_BROKER_DIR"
    rm -f "$DEV_BROKER_DIR/bootstrap"
    log "starting gamify-dev-broker (log: ${DEV_BROKER_DIR#"$ROOT"/}/broker.log)"
    setsid nohup "$ROOT/target/debug/gamify-dev-broker" serve --dir "$DEV_BROKER_DIR" \
      >"$DEV_BROKER_DIR/broker.log" 2>&1 </dev/null &
    # It outlives the script on purpose (topics and offsets survive between runs): recorded for
    # `kill "$(cat target/dev-broker/broker.pid)"`, and disowned so no `wait` waits for it.
    echo $! >"$DEV_BROKER_DIR/broker.pid"
    disown $!
    wait_for 30 "gamify-dev-broker" dev_broker_running
  fi
  dev_broker ctl --dir "$DEV_BROKER_DIR" create-topic "$KAFKA_TOPIC" 12 >/dev/null
  dev_broker ctl --dir "$DEV_BROKER_DIR" create-topic "$KAFKA_DLQ_TOPIC" 3 >/dev/null
  KAFKA_BROKERS=$(cat "$DEV_BROKER_DIR/bootstrap")
  export KAFKA_BROKERS
}
