//! Integration tests of gamify-api against the real Postgres (run through ./scripts/test.sh, which
//! provisions a fresh database and exports DATABASE_URL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod api_keys;
mod config;
mod console;
mod fuzz_regressions;
mod harness;
mod health;
mod hostile;
mod ingest;
mod key_checks;
mod openapi;
mod organizations;
mod projects;
mod reads;
mod redis_outage;
mod secrets_in_logs;
mod trust_boundary;
mod webhooks;
