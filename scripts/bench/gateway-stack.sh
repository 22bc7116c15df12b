# Sourced by the scripts that compare gamify-api builds (ab-gateway.sh, callgrind-gateway.sh): the
# stack they share. `gateway_stack NAME FIRST_BINARY` starts a release development broker of its
# own under target/NAME/broker, provisions the database gamify_NAME with topics gamify.NAME.*,
# migrates it with FIRST_BINARY and exports the environment for `gamify-api serve` on $PORT (rate
# limits out of the way); `start_api BINARY` and `stop_api` run one gateway at a time (its pid in
# api_pid, for the exit trap; its log in target/NAME/api.log); `publishable_key BINARY` creates an
# organization, a project and a publishable key through that gateway, into GAMIFY_KEY. The caller
# sets BENCH_STACK (NAME) before sourcing this, then PORT and API.

export DEV_BROKER_DIR=${DEV_BROKER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/$BENCH_STACK/broker}
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

broker_pid="" api_pid=""
cleanup() { for pid in $api_pid $broker_pid; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

gateway_stack() { # gateway_stack NAME FIRST_BINARY
  command -v wrk >/dev/null 2>&1 || apt_install wrk
  cargo build --release --quiet -p gamify-dev-broker --bin gamify-dev-broker
  rm -rf "$DEV_BROKER_DIR" && mkdir -p "$DEV_BROKER_DIR"
  "$ROOT/target/release/gamify-dev-broker" serve --dir "$DEV_BROKER_DIR" >"$DEV_BROKER_DIR/broker.log" 2>&1 </dev/null &
  broker_pid=$!
  echo "$broker_pid" >"$DEV_BROKER_DIR/broker.pid"
  export KAFKA_TOPIC="gamify.$1.load" KAFKA_DLQ_TOPIC="gamify.$1.dlq"
  provision "gamify_$1" fresh
  export DATABASE_URL="$DATABASE_URL?sslmode=disable" DATABASE_OWNER_URL="$DATABASE_OWNER_URL?sslmode=disable"
  "$2" migrate >/dev/null
  export PORT RUST_LOG=warn
  ADMIN_TOKEN="adm_$1_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export ADMIN_TOKEN
  export CLIENT_RATE_LIMIT_PER_SECOND=10000000 CLIENT_RATE_LIMIT_BURST=100000000
  export SECRET_KEY_RATE_LIMIT_PER_SECOND=10000000 SECRET_KEY_RATE_LIMIT_BURST=100000000
  export PROJECT_RATE_LIMIT_PER_SECOND=10000000 PROJECT_RATE_LIMIT_BURST=100000000
}

start_api() { # start_api BINARY
  "$1" serve >>"$ROOT/target/$BENCH_STACK/api.log" 2>&1 &
  api_pid=$!
  wait_for 30 "gamify-api" curl -fsS "$API/readyz"
}
stop_api() { kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; api_pid=""; }

publishable_key() { # publishable_key BINARY
  local org project
  field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }
  post() { curl -fsS -X POST "$API$1" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d "$2"; }
  start_api "$1"
  org=$(post /v1/organizations '{"name":"bench"}' | field id)
  project=$(post /v1/projects "{\"organizationId\":\"$org\",\"name\":\"bench\"}" | field id)
  GAMIFY_KEY=$(post "/v1/projects/$project/api-keys" '{"name":"bench","type":"publishable"}' | field key)
  export GAMIFY_KEY
  stop_api
}
