#!/usr/bin/env bash
# Provisions Postgres, Redis, the broker and a fresh test database, then runs every test of the
# workspace, then the SDKs' tests (scripts/sdk-test.sh). Arguments go to `cargo test` instead, and
# the SDK tests are skipped (e.g. `-p gamify-api`).
# TEST_DATABASE names the database (default gamify_test), so two runs can proceed side by side.
source "$(dirname "$0")/lib.sh"

# Tests get topics of their own, so a local dev worker never sees their events (and vice versa).
export KAFKA_TOPIC=${KAFKA_TOPIC:-gamify.test.events} KAFKA_DLQ_TOPIC=${KAFKA_DLQ_TOPIC:-gamify.test.events.dlq}
# Every run gets a development broker of its own, stopped when the run ends, so the topics and
# consumer groups the tests create never accumulate (the broker keeps everything in memory).
export DEV_BROKER_DIR=$ROOT/target/test-broker/${TEST_DATABASE:-gamify_test}
trap stop_dev_broker EXIT
provision "${TEST_DATABASE:-gamify_test}" fresh
log "building gamify-api"
cargo build -p gamify-api --bin gamify-api --quiet
migrate
"$ROOT/scripts/validate-deploy.sh"
log "running tests"
if [ $# -eq 0 ]; then
  cargo test --workspace
  # schemathesis against a live gateway: no 5xx, every response as docs/openapi.json says.
  "$ROOT/scripts/api-fuzz.sh"
  # The SDKs against a platform of their own (database, topics, api and worker), on this run's
  # broker; the Rust tests' connection settings are not theirs.
  env -u KAFKA_BROKERS -u KAFKA_TOPIC -u KAFKA_DLQ_TOPIC -u DATABASE_URL -u DATABASE_OWNER_URL \
    "$ROOT/scripts/sdk-test.sh"
  # No API key and no unredacted password in any log the platform's processes wrote in this run.
  if grep -rElI --include='*.log' '(pk|sk)_live_[0-9a-f]{64}|(gmt|ginv)_[0-9a-f]{48}|gamify_session=[^;[:space:]]|://[^:/@[:space:]]+:[^*@/[:space:]][^@/[:space:]]*@' \
    "$ROOT/target/sdk-test" "$ROOT/target/api-fuzz" "$DEV_BROKER_DIR"; then
    die "an API key, management token, invitation, session id or password appears in the logs listed above"
  fi
  log "no API key, management token, invitation, session id or password in the logs of this run"
else
  cargo test "$@"
fi
