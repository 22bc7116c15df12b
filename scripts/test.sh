#!/usr/bin/env bash
# Provisions Postgres, Redis and a fresh test database, then runs every test of the workspace.
# Extra arguments go to `cargo test`.
source "$(dirname "$0")/lib.sh"

provision gamify_test fresh
log "building"
cargo build --workspace --bins --quiet
migrate
log "running the workspace's tests"
cargo test --workspace "$@"
