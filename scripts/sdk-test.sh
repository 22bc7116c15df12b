#!/usr/bin/env bash
# The SDKs' tests (sdks/): provisions the real platform the way scripts/test.sh does (its own
# database, topics and consumer groups, so it runs beside other test runs and dev.sh), starts
# gamify-api, gamify-worker and gamify-engine on free ports, creates an organization, projects and
# keys through the management API and publishes the example shop's rules
# (examples/browser/rules.json) for the first project, then runs in sdks/: npm ci, typecheck, lint,
# unit tests (React 19 and 18),
# build, the bundle-size check, the Node SDK end-to-end tests, the browser end-to-end tests in
# Debian's headless Chromium (installed when absent) against the example shop (examples/browser),
# and the console's end-to-end tests (sdks/e2e/console.e2e.mjs: its own organizations through
# ADMIN_TOKEN, the console at PUBLIC_URL, axe-core on every screen).
# SDK_TEST_DATABASE names the database (default gamify_sdk_test). With arguments, runs them in sdks/
# instead of those steps, the platform up and GAMIFY_*, ADMIN_TOKEN and PUBLIC_URL exported (e.g.
# `scripts/sdk-test.sh npm run e2e:browser` after a first full run, or `scripts/sdk-test.sh npm run
# console:screenshots` to write docs/console/*.png).
source "$(dirname "$0")/lib.sh"

export KAFKA_TOPIC=${SDK_KAFKA_TOPIC:-gamify.sdktest.events}
export KAFKA_DLQ_TOPIC=${SDK_KAFKA_DLQ_TOPIC:-gamify.sdktest.events.dlq}
export KAFKA_GROUP_ID=${SDK_KAFKA_GROUP_ID:-gamify-sdk-test}
provision "${SDK_TEST_DATABASE:-gamify_sdk_test}" fresh

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || apt_install chromium
export CHROMIUM

log "building gamify-api, gamify-worker and gamify-engine"
cargo build -p gamify-api --bin gamify-api -p gamify-worker --bin gamify-worker \
  -p gamify-engine --bin gamify-engine --quiet
migrate

free_port() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT=$(free_port)
WORKER_PORT=$(free_port)
while [ "$WORKER_PORT" = "$PORT" ]; do WORKER_PORT=$(free_port); done
ENGINE_PORT=$(free_port)
while [ "$ENGINE_PORT" = "$PORT" ] || [ "$ENGINE_PORT" = "$WORKER_PORT" ]; do ENGINE_PORT=$(free_port); done
# The engine's consumer group is derived from KAFKA_GROUP_ID (<group>.engine); its webhooks may go
# to the loopback servers the tests start.
# The console checks a sign-in's Origin against PUBLIC_URL, and invitation links point there.
export PORT WORKER_PORT ENGINE_PORT WEBHOOKS_ALLOW_PRIVATE=1 PUBLIC_URL=http://127.0.0.1:$PORT
export ADMIN_TOKEN="adm_sdk_test_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export RUST_LOG=${RUST_LOG:-warn}
LOGS=$ROOT/target/sdk-test
mkdir -p "$LOGS"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log "starting gamify-api on :$PORT, gamify-worker on :$WORKER_PORT and gamify-engine on :$ENGINE_PORT (logs: target/sdk-test/)"
"$ROOT/target/debug/gamify-worker" >"$LOGS/worker.log" 2>&1 &
pids+=($!)
"$ROOT/target/debug/gamify-engine" >"$LOGS/engine.log" 2>&1 &
pids+=($!)
"$ROOT/target/debug/gamify-api" serve >"$LOGS/api.log" 2>&1 &
pids+=($!)
wait_for 60 "gamify-api on port $PORT" curl -fsS "http://127.0.0.1:$PORT/readyz"
wait_for 60 "gamify-worker on port $WORKER_PORT" curl -fsS "http://127.0.0.1:$WORKER_PORT/healthz"
wait_for 60 "gamify-engine on port $ENGINE_PORT" curl -fsS "http://127.0.0.1:$ENGINE_PORT/healthz"

API=http://127.0.0.1:$PORT
admin() { # admin [METHOD] PATH JSON → response body (POST by default); fails on a non-2xx answer
  local method=POST
  if [ $# -gt 2 ]; then method=$1; shift; fi
  curl -fsS -X "$method" "$API$1" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d "$2"
}
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"; }

log "creating an organization, two projects and their keys"
ORG=$(admin /v1/organizations '{"name":"SDK tests"}' | field id)
PROJECT=$(admin /v1/projects "{\"organizationId\":\"$ORG\",\"name\":\"Shop\"}" | field id)
OTHER=$(admin /v1/projects "{\"organizationId\":\"$ORG\",\"name\":\"Other shop\"}" | field id)
GAMIFY_PK=$(admin "/v1/projects/$PROJECT/api-keys" '{"name":"Website","type":"publishable"}' | field key)
GAMIFY_SK=$(admin "/v1/projects/$PROJECT/api-keys" '{"name":"Backend","type":"secret"}' | field key)
GAMIFY_OTHER_SK=$(admin "/v1/projects/$OTHER/api-keys" '{"name":"Backend","type":"secret"}' | field key)
export GAMIFY_HOST=$API GAMIFY_ORG=$ORG GAMIFY_PROJECT=$PROJECT GAMIFY_PK GAMIFY_SK GAMIFY_OTHER_SK

log "publishing the example shop's rules (examples/browser/rules.json) for the first project"
admin PUT "/v1/projects/$PROJECT/rules" "{\"rules\":$(cat "$ROOT/examples/browser/rules.json"),\"apply\":\"from_now\"}" >/dev/null

cd "$ROOT/sdks"
if [ $# -gt 0 ]; then
  log "running: $*"
  "$@"
  exit
fi
step() { # step NAME COMMAND...: runs it, timed
  local started=$SECONDS
  log "$1"
  shift
  "$@"
  log "… $((SECONDS - started))s"
}
step "npm ci" npm ci --no-audit --no-fund
step "typecheck" npm run typecheck
step "lint" npm run lint
step "unit tests (React 19, then React 18)" npm test
step "build" npm run build
step "size check" npm run size
step "Node SDK end to end" npm run e2e:node
step "browser end to end (Chromium)" npm run e2e:browser
step "console end to end (Chromium, axe-core)" npm run e2e:console
log "SDK tests passed in ${SECONDS}s"
