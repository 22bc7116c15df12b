//! The broker contract: what gamify-api and gamify-worker rely on the Kafka-protocol broker for,
//! checked against whatever `KAFKA_BROKERS` points to — the development broker that
//! `./scripts/test.sh` starts, or an Apache Kafka. Every test makes its own uniquely named topics
//! (through `gamify_dev_broker::create_topics`, as the scripts do) and consumer groups, so the tests
//! run in parallel and leave the broker's other topics alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod groups;
mod produce;
mod topics;
