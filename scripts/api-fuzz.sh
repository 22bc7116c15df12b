#!/usr/bin/env bash
# Fuzzes the live gateway against its own OpenAPI document with schemathesis: no 5xx, and every
# response (status, content type, headers, body) conforms to the document.
#
# Provisions like scripts/test.sh (its own database gamify_schemathesis, topic and development
# broker, stopped at exit), starts
# target/debug/gamify-api on a free port, creates an organization, a project and a secret key
# through the API, then runs schemathesis (pinned, in target/schemathesis-venv) over every
# operation with the admin token for management and the secret key for ingestion and reads.
# Bounded: SCHEMATHESIS_MAX_EXAMPLES per operation (default 25) and a hard timeout
# (SCHEMATHESIS_TIMEOUT seconds, default 300). Reports: target/api-fuzz/.
source "$(dirname "$0")/lib.sh"

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-25}
FUZZ_TIMEOUT=${SCHEMATHESIS_TIMEOUT:-300}
OUT=$ROOT/target/api-fuzz
VENV=$ROOT/target/schemathesis-venv

FUZZ_DATABASE=${FUZZ_DATABASE:-gamify_schemathesis}
export KAFKA_TOPIC=gamify.schemathesis.events KAFKA_DLQ_TOPIC=gamify.schemathesis.events.dlq
# A development broker of its own, stopped at exit, as scripts/test.sh does; when run from
# scripts/test.sh, KAFKA_BROKERS names that run's development broker, which is not ours to use.
if [ -n "${KAFKA_BROKERS:-}" ] && [ -n "${DEV_BROKER_DIR:-}" ] \
  && [ "$KAFKA_BROKERS" = "$(cat "$DEV_BROKER_DIR/bootstrap" 2>/dev/null)" ]; then
  unset KAFKA_BROKERS
fi
export DEV_BROKER_DIR=$ROOT/target/test-broker/$FUZZ_DATABASE
api_pid=
cleanup() {
  if [ -n "$api_pid" ]; then
    kill -TERM "$api_pid" 2>/dev/null || true
    wait "$api_pid" 2>/dev/null || true
  fi
  # The fuzzer's failed sign-ins from 127.0.0.1 would otherwise refuse every sign-in from this
  # machine (a dev server's, a benchmark's) for the next 15 minutes.
  redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern 'gamify:sign_in:*' 2>/dev/null \
    | xargs -r redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" DEL >/dev/null 2>&1 || true
  stop_dev_broker
}
trap cleanup EXIT
provision "$FUZZ_DATABASE" fresh
log "building gamify-api"
cargo build -p gamify-api --bin gamify-api --quiet
migrate

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into ${VENV#"$ROOT"/}"
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORT
ADMIN_TOKEN="adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ADMIN_TOKEN
API=http://127.0.0.1:$PORT

log "starting gamify-api on port $PORT (log: ${OUT#"$ROOT"/}/gateway.log)"
RUST_LOG=${RUST_LOG:-warn} "$ROOT/target/debug/gamify-api" serve >"$OUT/gateway.log" 2>&1 &
api_pid=$!
wait_for 30 "gamify-api on port $PORT" curl -fsS "$API/healthz"

# An organization, a project and a secret key, through the API.
admin_post() { # admin_post PATH BODY → response body; fails unless 201
  curl -fsS -X POST "$API$1" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d "$2"
}
json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
ORG=$(admin_post /v1/organizations '{"name":"Fuzzing"}' | json_field id)
PROJECT_ID=$(admin_post /v1/projects "{\"organizationId\":\"$ORG\",\"name\":\"Fuzzed\"}" | json_field id)
SECRET_KEY=$(admin_post "/v1/projects/$PROJECT_ID/api-keys" '{"name":"Fuzzer","type":"secret"}' | json_field key)
# A person (owner of that organization, signed in) and an organization token with every scope.
INVITE_URL=$(admin_post "/v1/organizations/$ORG/invitations" '{"email":"fuzz@example.com","role":"owner"}' | json_field url)
CSRF=$(curl -fsS -D "$OUT/accept.headers" -X POST "$API/v1/invitations/accept" -H 'Content-Type: application/json' \
  -d "{\"token\":\"${INVITE_URL#*token=}\",\"password\":\"fuzzing passphrase $RANDOM$RANDOM\"}" | json_field csrfToken)
SESSION_COOKIE=$(grep -i '^set-cookie: gamify_session=' "$OUT/accept.headers" | sed -E 's/^[^=]*=([^;]*).*/\1/' | tr -d '\r')
rm -f "$OUT/accept.headers"
ORG_TOKEN=$(curl -fsS -X POST "$API/v1/organizations/$ORG/tokens" -H "Cookie: gamify_session=$SESSION_COOKIE" \
  -H "X-CSRF-Token: $CSRF" -H 'Content-Type: application/json' \
  -d '{"name":"fuzzer","scopes":["read","projects:write","keys:write","rules:write","webhooks:write","members:write","audit:read"]}' \
  | json_field token)
export PROJECT_ID SECRET_KEY ORG SESSION_COOKIE ORG_TOKEN

# Authentication per security scheme of the document; the project's real id for project_id.
cat >"$OUT/schemathesis.toml" <<'TOML'
[auth.openapi.adminToken]
bearer = "${ADMIN_TOKEN}"

[auth.openapi.apiKey]
api_key = "${SECRET_KEY}"

[auth.openapi.apiKeyBearer]
bearer = "${SECRET_KEY}"

[auth.openapi.session]
api_key = "${SESSION_COOKIE}"

[auth.openapi.orgToken]
bearer = "${ORG_TOKEN}"

[parameters]
"path.project_id" = "${PROJECT_ID}"
"path.organization_id" = "${ORG}"
# The session cookie is a credential, not a value to fuzz: a control character in it (the
# dictionary below holds some) is malformed HTTP, refused by the server loop before any route.
"cookie.gamify_session" = "${SESSION_COOKIE}"
# Outcomes long-poll up to `wait` seconds for an event that never comes: the fuzzer asks not to.
"query.wait" = 0

# Strings that are valid JSON yet hard to store or route: NUL (Postgres text cannot hold it),
# other control characters, non-ASCII, path and percent characters; one string in ten.
[dictionaries.awkward-strings]
values = ["a\u0000b", "\u0000", "\u0007", "\u001f", " ", "\u00e9\u00e8", "\U0001F600", "a/b", "%00", "..", "\u2028", "\ufeff"]

# Seeded and stateless: no example database (.schemathesis/) carried between runs.
[generation]
database = "none"

[generation.dictionaries.string]
dictionary = "awkward-strings"
probability = 0.1

# A body over a documented limit (e.g. a batch of more than 500 events) is refused with 413.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
TOML

# Every check that judges the gateway against the document. Not run: positive_data_acceptance
# (a body the schema admits may still be refused: "userId or anonymousId", a name taken, an
# unknown organizationId), object_level_authorization (needs a second tenant's credentials) and
# use_after_free: DELETE on a key revokes it, and a revoked key stays listed and addressable by
# design (docs/API.md), which that check reads as "deleted resource still available".
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,ensure_resource_availability,ignored_auth

log "schemathesis $SCHEMATHESIS_VERSION: at most $MAX_EXAMPLES examples per operation, ${FUZZ_TIMEOUT}s at most"
status=0
# Run from $OUT: schemathesis keeps a cache (.schemathesis/) in its working directory.
(cd "$OUT" && timeout --kill-after=10 "$FUZZ_TIMEOUT" "$VENV/bin/schemathesis" --config-file "$OUT/schemathesis.toml" \
  run "$API/openapi.json" \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  --phases examples,coverage,fuzzing,stateful \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --request-timeout 10 \
  --suppress-health-check all \
  --report junit,har --report-dir "$OUT") \
  || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  die "schemathesis did not finish within ${FUZZ_TIMEOUT}s"
fi
if grep -q 'request failed\|panicked' "$OUT/gateway.log"; then
  log "the gateway logged faults (${OUT#"$ROOT"/}/gateway.log):"
  grep 'internal_error\|panicked\|request failed' "$OUT/gateway.log" | head -n 20 >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  die "schemathesis found failures (status $status); reports in ${OUT#"$ROOT"/}"
fi
log "schemathesis: no failures"
