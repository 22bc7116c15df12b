#!/usr/bin/env bash
# Runs Gamify locally: provisions Postgres, Redis and the broker, migrates, and starts gamify-api on
# PORT (default 3000), gamify-worker (metrics on WORKER_PORT, default 3001) and gamify-engine
# (metrics on ENGINE_PORT, default 3002; its webhooks may go to this machine). Then, through the
# management API, a demo organization, project and keys with the example shop's rules
# (examples/browser/rules.json), kept in target/dev/demo.env and reused by the next run, and the
# example shop on EXAMPLE_PORT (default 8080), whose server holds the demo project's secret key.
# Honours ADMIN_TOKEN and PORT from the environment. Ctrl-C stops gamify-api, gamify-worker,
# gamify-engine and the shop; the development broker keeps running (see the message it prints).
source "$(dirname "$0")/lib.sh"

provision gamify
export PORT=${PORT:-3000}
export RUST_LOG=${RUST_LOG:-info}
if [ -z "${ADMIN_TOKEN:-}" ]; then
  ADMIN_TOKEN="adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
export ADMIN_TOKEN

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm

log "building"
cargo build --workspace --bins --quiet
migrate

pids=()
# Stops what this script started: SIGTERM (each finishes in-flight work: requests, the current batch),
# SIGKILL after 15 s. Waits on those pids only; the development broker is not a child to wait for.
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] || return 0
  log "stopping gamify-api, gamify-worker, gamify-engine and the example shop"
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
export ENGINE_PORT=${ENGINE_PORT:-3002}
export EXAMPLE_PORT=${EXAMPLE_PORT:-8080}
log "building the SDKs for the example shop"
(cd "$ROOT/sdks" && npm ci --no-audit --no-fund --silent && npm run build --silent) >/dev/null

"$ROOT/target/debug/gamify-worker" &
pids+=($!)
# Its own consumer group (ENGINE_GROUP_ID, default gamify-engine) on the same topic.
WEBHOOKS_ALLOW_PRIVATE=1 "$ROOT/target/debug/gamify-engine" &
pids+=($!)
"$ROOT/target/debug/gamify-api" serve &
pids+=($!)
wait_for 30 "gamify-api on port $PORT" curl -fsS "http://127.0.0.1:$PORT/healthz"
wait_for 30 "gamify-worker on port $WORKER_PORT" curl -fsS "http://127.0.0.1:$WORKER_PORT/healthz"
wait_for 30 "gamify-engine on port $ENGINE_PORT" curl -fsS "http://127.0.0.1:$ENGINE_PORT/healthz"

# --- The example shop's project: an organization, a project, a publishable and a secret key, and
# the rules of examples/browser/rules.json. Kept in target/dev/demo.env (ORG, PROJECT, PK, SK, the
# names "Your first event" in README.md uses: `. target/dev/demo.env` in a shell sets them) and
# reused while that project and its secret key still answer; the rules are published again when
# the file changed.
API=http://127.0.0.1:$PORT
DEMO=$ROOT/target/dev/demo.env
RULES=$ROOT/examples/browser/rules.json
DATABASE=${DATABASE_URL##*/}
admin() { # admin METHOD PATH [JSON] → response body; fails on a non-2xx answer
  curl -fsS -X "$1" "$API$2" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' ${3:+-d "$3"}
}
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"; }
ORG='' PROJECT='' PK='' SK='' RULES_SHA256='' DEMO_DATABASE=''
if [ -f "$DEMO" ]; then
  # shellcheck disable=SC1090
  . "$DEMO"
  if [ "$DEMO_DATABASE" != "$DATABASE" ] || [ -z "$PROJECT" ] ||
    ! admin GET "/v1/projects/$PROJECT" >/dev/null 2>&1 ||
    ! curl -fsS "$API/v1/events?limit=1" -H "Authorization: Bearer $SK" >/dev/null 2>&1; then
    PROJECT=''
  fi
fi
if [ -z "$PROJECT" ]; then
  log "creating the example shop's organization, project and keys"
  ORG=$(admin POST /v1/organizations '{"name":"Example shop"}' | field id)
  PROJECT=$(admin POST /v1/projects "{\"organizationId\":\"$ORG\",\"name\":\"Example shop\"}" | field id)
  PK=$(admin POST "/v1/projects/$PROJECT/api-keys" '{"name":"Example shop (browser)","type":"publishable"}' | field key)
  SK=$(admin POST "/v1/projects/$PROJECT/api-keys" '{"name":"Example shop (server)","type":"secret"}' | field key)
  RULES_SHA256=''
fi
rules_sha256=$(sha256sum "$RULES" | cut -d ' ' -f 1)
if [ "$RULES_SHA256" != "$rules_sha256" ]; then
  log "publishing the example shop's rules (examples/browser/rules.json)"
  admin PUT "/v1/projects/$PROJECT/rules" "{\"rules\":$(cat "$RULES"),\"apply\":\"from_now\"}" >/dev/null
  RULES_SHA256=$rules_sha256
fi
mkdir -p "$(dirname "$DEMO")"
(umask 077 && printf 'ORG=%s\nPROJECT=%s\nPK=%s\nSK=%s\nRULES_SHA256=%s\nDEMO_DATABASE=%s\n' \
  "$ORG" "$PROJECT" "$PK" "$SK" "$RULES_SHA256" "$DATABASE" >"$DEMO")

# The console's first person: the demo organization's owner, CONSOLE_EMAIL (default
# dev@example.com). Until they exist, each run makes a fresh single-use invitation link for them.
CONSOLE_EMAIL=${CONSOLE_EMAIL:-dev@example.com}
CONSOLE_URL=$(node -e 'console.log(new URL("/console", process.argv[1]).href)' "${PUBLIC_URL:-http://localhost:$PORT}")
if admin GET "/v1/organizations/$ORG/members" | grep -q "\"email\":\"$CONSOLE_EMAIL\""; then
  CONSOLE_SIGN_IN="Sign in as $CONSOLE_EMAIL with the password you chose."
else
  invitation=$(admin POST "/v1/organizations/$ORG/invitations" "{\"email\":\"$CONSOLE_EMAIL\",\"role\":\"owner\"}" | field url)
  CONSOLE_SIGN_IN="First, open this single-use link to become the demo organization's owner
  ($CONSOLE_EMAIL) and choose a password; then sign in there:

  $invitation"
fi

# The secret key goes to the shop's server in its environment (not on its command line).
GAMIFY_HOST=$API GAMIFY_PK=$PK GAMIFY_SK=$SK node "$ROOT/examples/browser/serve.mjs" "$EXAMPLE_PORT" >/dev/null &
pids+=($!)
wait_for 30 "the example shop on port $EXAMPLE_PORT" curl -fsS "http://127.0.0.1:$EXAMPLE_PORT/api/config"

cat <<TXT

Gamify is running: API $API, worker metrics http://127.0.0.1:$WORKER_PORT/metrics,
engine metrics http://127.0.0.1:$ENGINE_PORT/metrics

  ADMIN_TOKEN=$ADMIN_TOKEN

The console (keys, live events, analytics, rules, users, webhooks): $CONSOLE_URL
$CONSOLE_SIGN_IN

The example shop, with XP, badges, a streak and a weekly leaderboard (sign in with any user id):

  http://127.0.0.1:$EXAMPLE_PORT/

Its project has the rules of examples/browser/rules.json; \`. ${DEMO#"$ROOT"/}\` sets its
PROJECT, PK and SK in your shell (for "Your first event" in README.md). Or create your own
organization:

  curl -s -X POST $API/v1/organizations \\
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \\
    -d '{"name":"Acme"}'

Then follow "Your first event" in README.md. Ctrl-C stops it.
TXT

# Returns when any of them exits (or on Ctrl-C, through the trap); the EXIT trap stops the others.
status=0
wait -n "${pids[@]}" || status=$?
log "gamify-api, gamify-worker, gamify-engine or the example shop stopped (status $status)"
exit "$status"
