//! gamify-engine against the real Postgres, Redis and broker, with gamify-api and gamify-worker
//! running in this process. Every test has its own topics, consumer groups and projects, so the
//! tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod awards;
mod claims;
mod harness;
mod replay;
mod webhooks;
