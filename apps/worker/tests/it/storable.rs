//! The rule behind every 202: whatever the gateway's validation accepts, the worker's persist path
//! stores in the real Postgres. Arbitrary events — unicode, control characters, extreme numbers
//! and dates, deep nesting, odd keys — go through the gateway's parsing and validation; each one
//! accepted is stamped into an envelope, sent through its JSON form as over the topic, re-checked as
//! the worker does, and persisted.

use chrono::{DateTime, Utc};
use gamify_common::{
    Envelope, KeyType,
    envelope::{Received, Source},
    ingest::{BatchDefaults, parse_identify, parse_track},
};
use gamify_worker::persist::{Item, Status, persist_project};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::harness::{Tenant, connect, database_url};

fn text() -> impl Strategy<Value = String> {
    let odd = prop_oneof![
        Just('\0'),
        Just('\n'),
        Just('\u{7f}'),
        Just('\u{85}'),
        Just('\u{200b}'),
        Just('\u{feff}'),
        Just('\u{10ffff}'),
        Just('"'),
        Just('\\'),
        Just('.'),
        Just('$'),
        any::<char>(),
    ];
    prop_oneof![
        12 => "[a-z_]{1,10}",
        4 => "\\PC{1,20}",
        2 => proptest::collection::vec(odd, 0..8).prop_map(|chars| chars.into_iter().collect()),
        1 => Just(String::new()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(-0.0)
        ]
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
        time().prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 64, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// RFC 3339 strings across and beyond what Postgres and chrono hold, and some that are not dates.
fn time() -> impl Strategy<Value = String> {
    prop_oneof![
        (-80_000_000_000i64..300_000_000_000i64).prop_map(|seconds| {
            DateTime::<Utc>::from_timestamp(seconds, 0)
                .map_or_else(|| "not a time".to_owned(), |t| t.to_rfc3339())
        }),
        Just("0000-01-01T00:00:00Z".to_owned()),
        Just("0001-01-01T00:00:00+14:00".to_owned()),
        Just("9999-12-31T23:59:59.999999999-12:00".to_owned()),
        Just("-0001-01-01T00:00:00Z".to_owned()),
        Just("2026-02-30T00:00:00Z".to_owned()),
        text(),
    ]
}

/// Mostly times the gateway accepts, sometimes not: a rejected time hides the rest of the event.
fn maybe_time() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        4 => (0i64..4_000_000_000i64).prop_map(|seconds| {
            DateTime::<Utc>::from_timestamp(seconds, 0).map(|t| t.to_rfc3339())
        }),
        2 => time().prop_map(Some),
    ]
}

fn object(max: usize) -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(text(), json_value(), 0..max)
        .prop_map(|map| map.into_iter().collect())
}

/// A chain of `depth` nested arrays around a string: deeper than serde_json's parser allows at
/// the top of the range.
fn deep(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!([inner]))
}

fn track_body() -> impl Strategy<Value = Value> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        object(5),
        object(4),
        maybe_time(),
        maybe_time(),
        prop_oneof![4 => Just(None), 1 => (1usize..200).prop_map(Some)],
    )
        .prop_map(
            |(
                event,
                user,
                anonymous,
                message,
                mut properties,
                context,
                timestamp,
                sent_at,
                depth,
            )| {
                if let Some(depth) = depth {
                    properties.insert("deep".to_owned(), deep(depth));
                }
                json!({
                    "event": event, "userId": user, "anonymousId": anonymous, "messageId": message,
                    "properties": properties, "context": context,
                    "timestamp": timestamp, "sentAt": sent_at,
                })
            },
        )
}

fn identify_body() -> impl Strategy<Value = Value> {
    (text(), proptest::option::of(text()), object(5), maybe_time()).prop_map(
        |(user, message, traits, timestamp)| {
            json!({ "userId": user, "messageId": message, "traits": traits, "timestamp": timestamp })
        },
    )
}

#[test]
fn every_event_the_gateway_accepts_the_worker_stores() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(connect(&database_url()));
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = prop_oneof![
        3 => track_body().prop_map(|body| (true, body)),
        1 => identify_body().prop_map(|body| (false, body)),
    ];
    runner
        .run(&(strategy, any::<bool>()), |((is_track, body), secret)| {
            // The gateway parses the raw bytes, so serde_json's own limits (nesting) apply.
            let bytes = serde_json::to_vec(&body).unwrap();
            let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                return Ok(());
            };
            let received = Received {
                at: Utc::now(),
                ip: Some("203.0.113.9".to_owned()),
                user_agent: Some("proptest".to_owned()),
            };
            let parsed = if is_track {
                parse_track(value, &BatchDefaults::default(), received.at)
            } else {
                parse_identify(value, received.at)
            };
            let Ok(event) = parsed else {
                return Ok(());
            };
            accepted.set(accepted.get() + 1);
            // A project per case: messageIds repeat across cases and would be deduplicated.
            let tenant = runtime.block_on(Tenant::create(&db, &[]));
            let key_type = if secret {
                KeyType::Secret
            } else {
                KeyType::Publishable
            };
            let source = Source {
                project_id: tenant.project,
                key_id: tenant.key(key_type),
                key_type,
                trusted_events_version: 1,
            };
            let envelope = Envelope::new(event, source, &received);
            // Over the topic: the worker reads the envelope back from its JSON bytes.
            let wire = serde_json::to_vec(&envelope).unwrap();
            let envelope: Envelope = serde_json::from_slice(&wire).unwrap();
            prop_assert!(
                envelope.validate().is_empty(),
                "the worker's re-check refuses what the gateway accepted: {:?}",
                envelope.validate()
            );
            let item = Item {
                envelope: envelope.into(),
                status: Status::Processed,
                key_type,
            };
            let stored = runtime.block_on(persist_project(&db, tenant.project, &[&item]));
            prop_assert!(
                stored.is_ok(),
                "not stored: {:?}\n{}",
                stored,
                String::from_utf8_lossy(&bytes)
            );
            prop_assert_eq!(stored.unwrap().processed, 1);
            Ok(())
        })
        .unwrap();
    // The generators must reach the persist path often enough to mean something.
    let accepted = accepted.get();
    assert!(
        accepted >= 100,
        "only {accepted} of 400 generated events were accepted"
    );
}
