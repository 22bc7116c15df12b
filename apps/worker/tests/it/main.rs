//! gamify-worker against the real Postgres and the real broker. Every test has its own topics,
//! consumer group and tenant rows, so the tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod consistency;
mod dead_letters;
mod e2e;
mod gaps;
mod group;
mod harness;
mod outage;
mod process;
mod rollups;
mod stalls;
mod storable;
mod store;
