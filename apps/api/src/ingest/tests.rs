//! The ingestion path end to end inside the gateway — key checks, the trusted-event guard, limits,
//! validation, the sink — with no service at all: the key store and the event sink are in memory,
//! Redis is an address that refuses connections (the gateway works without it by design), and
//! Postgres is never reached.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use chrono::Utc;
use futures::future::BoxFuture;
use gamify_common::{ApiKey, Envelope, KeyType, events::NameList};
use gamify_db::{Db, PoolOptions, sources::KeySource};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

use crate::{
    config::{AdminToken, HttpLimits, Limits, Quota, Settings},
    http::error::Error,
    ingest::{keys::KeyStore, sink::EventSink},
    state::AppState,
};

#[derive(Default)]
struct MemorySink {
    sent: Mutex<Vec<Envelope>>,
    failing: AtomicBool,
}

impl EventSink for MemorySink {
    fn send<'a>(&'a self, envelopes: &'a [Envelope]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::ProduceTimeout);
            }
            self.sent.lock().unwrap().extend_from_slice(envelopes);
            Ok(())
        })
    }

    fn check(&self, _: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&self, _: Duration) {}
}

#[derive(Default)]
struct MemoryStore(Mutex<HashMap<String, KeySource>>);

impl KeyStore for MemoryStore {
    fn key_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<KeySource>, Error>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().get(hash).cloned()) })
    }

    fn record_use<'a>(&'a self, _: &'a [Uuid]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

struct Gateway {
    state: AppState,
    sink: Arc<MemorySink>,
    store: Arc<MemoryStore>,
    project: Uuid,
    _shutdown: tokio_util::sync::DropGuard,
}

fn settings(project: Quota) -> Settings {
    let generous = Quota {
        per_second: 1_000,
        burst: 1_000,
    };
    Settings {
        admin_token: AdminToken {
            value: "adm_unit".into(),
            generated: false,
        },
        // Nothing listens there: every Redis call fails fast and the gateway does without.
        redis_url: "redis://127.0.0.1:1".into(),
        kafka_brokers: "127.0.0.1:9".into(),
        kafka_topic: "unused".into(),
        kafka_producer_properties: Vec::new(),
        envelope_secret: "an-envelope-secret-of-at-least-32-bytes".into(),
        produce_timeout: Duration::from_secs(1),
        rate_limit: Limits {
            client: generous,
            secret_key: generous,
            project,
            sync_interval: Duration::from_secs(60),
        },
        key_cache_ttl: Duration::from_secs(10),
        negative_cache_ttl: Duration::from_secs(5),
        trusted_proxy_hops: 0,
        accounts: crate::config::AccountSettings {
            password_hash: crate::accounts::HashCost {
                memory_kib: 1024,
                iterations: 1,
                concurrency: 4,
            },
            ..Default::default()
        },
        http: HttpLimits::default(),
    }
}

impl Gateway {
    async fn start(project_quota: Quota) -> Self {
        let shutdown = CancellationToken::new();
        let lazy = PoolOptions {
            lazy: true,
            ..PoolOptions::default()
        };
        let db = Db::connect("postgres://nobody@127.0.0.1:1/none", lazy)
            .await
            .unwrap();
        let sink = Arc::new(MemorySink::default());
        let store = Arc::new(MemoryStore::default());
        let state = AppState::with_parts(
            db,
            &settings(project_quota),
            &shutdown,
            sink.clone(),
            store.clone(),
            Arc::new(crate::clock::SystemClock),
        )
        .unwrap();
        Self {
            state,
            sink,
            store,
            project: Uuid::now_v7(),
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// A key of this project, known to the store; `edit` may revoke it, expire it or trust names.
    fn key(&self, key_type: KeyType, edit: impl FnOnce(&mut KeySource)) -> String {
        let key = ApiKey::generate(key_type);
        let mut source = KeySource {
            key_id: Uuid::now_v7(),
            project_id: self.project,
            key_type,
            revoked_at: None,
            expires_at: None,
            trusted_events: NameList::default(),
            trusted_events_version: 1,
            allowed_origins: NameList::default(),
            rate_limit: None,
        };
        edit(&mut source);
        self.store
            .0
            .lock()
            .unwrap()
            .insert(key.hash().as_str().to_owned(), source);
        key.expose().to_owned()
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header("x-api-key", key)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "unit/1.0")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = crate::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn sent(&self) -> Vec<Envelope> {
        self.sink.sent.lock().unwrap().clone()
    }
}

const QUOTA: Quota = Quota {
    per_second: 1_000,
    burst: 10_000,
};

fn page_view() -> Value {
    json!({ "event": "page_view", "userId": "u1" })
}

#[tokio::test]
async fn an_accepted_event_reaches_the_sink_stamped_with_what_the_gateway_applied() {
    let gateway = Gateway::start(QUOTA).await;
    let pk = gateway.key(KeyType::Publishable, |key| {
        key.trusted_events_version = 7;
    });
    let before = Utc::now();
    let (status, body) = gateway.post("/v1/events/track", &pk, page_view()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let sent = gateway.sent();
    assert_eq!(sent.len(), 1);
    let envelope = &sent[0];
    assert_eq!(body["id"], json!(envelope.id));
    assert_eq!(envelope.project_id, gateway.project);
    assert_eq!(envelope.key_type, KeyType::Publishable);
    assert_eq!(envelope.trusted_events_version, Some(7));
    assert_eq!(envelope.context.user_agent.as_deref(), Some("unit/1.0"));
    assert!(envelope.received_at >= before && envelope.received_at <= Utc::now());
}

#[tokio::test]
async fn trusted_events_from_a_publishable_key_are_refused_and_nothing_is_sent() {
    let gateway = Gateway::start(QUOTA).await;
    let pk = gateway.key(KeyType::Publishable, |key| {
        key.trusted_events = NameList::listed(&["vip.reward"]);
    });
    let sk = gateway.key(KeyType::Secret, |_| {});
    for event in ["purchase", "vip.reward"] {
        let (status, body) = gateway
            .post(
                "/v1/events/track",
                &pk,
                json!({ "event": event, "userId": "u1" }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "event_requires_secret_key");
    }
    let (status, body) = gateway
        .post(
            "/v1/events/batch",
            &pk,
            json!({ "batch": [{ "event": "click", "userId": "u" }, { "event": "purchase", "userId": "u" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["details"]["indexes"], json!([1]));
    assert!(gateway.sent().is_empty());
    let (status, _) = gateway
        .post(
            "/v1/events/track",
            &sk,
            json!({ "event": "purchase", "userId": "u1" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(gateway.sent().len(), 1);
}

#[tokio::test]
async fn unknown_revoked_expired_and_mistyped_keys_are_refused_alike() {
    let gateway = Gateway::start(QUOTA).await;
    let revoked = gateway.key(KeyType::Secret, |key| key.revoked_at = Some(Utc::now()));
    let expired = gateway.key(KeyType::Secret, |key| {
        key.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
    });
    // A key with the publishable prefix whose record says secret: not the key it claims to be.
    let mistyped = gateway.key(KeyType::Publishable, |key| key.key_type = KeyType::Secret);
    let unknown = ApiKey::generate(KeyType::Secret);
    for key in [
        revoked.as_str(),
        expired.as_str(),
        mistyped.as_str(),
        unknown.expose(),
        "sk_live_not-a-key",
    ] {
        let (status, body) = gateway.post("/v1/events/track", key, page_view()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}: {body}");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    assert!(gateway.sent().is_empty());
}

#[tokio::test]
async fn a_sink_that_does_not_acknowledge_gets_503() {
    let gateway = Gateway::start(QUOTA).await;
    let pk = gateway.key(KeyType::Publishable, |_| {});
    gateway.sink.failing.store(true, Ordering::SeqCst);
    let (status, body) = gateway.post("/v1/events/track", &pk, page_view()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
}

#[tokio::test]
async fn invalid_and_reserved_events_are_400_and_oversized_ones_413() {
    let gateway = Gateway::start(QUOTA).await;
    let pk = gateway.key(KeyType::Publishable, |_| {});
    for body in [
        json!({ "event": "$identify", "userId": "u1" }),
        json!({ "event": "click" }),
        json!({ "event": "", "userId": "u1" }),
    ] {
        let (status, answer) = gateway.post("/v1/events/track", &pk, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
    }
    let big = "x".repeat(40 * 1024);
    let (status, answer) = gateway
        .post(
            "/v1/events/track",
            &pk,
            json!({ "event": "click", "userId": "u1", "properties": { "p": big } }),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(gateway.sent().is_empty());
}

#[tokio::test]
async fn a_project_s_key_classes_spend_separate_budgets() {
    let gateway = Gateway::start(Quota {
        per_second: 1,
        burst: 500,
    })
    .await;
    let pk = gateway.key(KeyType::Publishable, |_| {});
    let sk = gateway.key(KeyType::Secret, |_| {});
    let batch: Vec<Value> = (0..499)
        .map(|i| json!({ "event": "click", "userId": format!("u{i}") }))
        .collect();
    let (status, _) = gateway
        .post("/v1/events/batch", &pk, json!({ "batch": batch }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let two = json!({ "batch": [{ "event": "click", "userId": "a" }, { "event": "click", "userId": "b" }] });
    let (status, body) = gateway.post("/v1/events/batch", &pk, two).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "project_rate_limited");
    let (status, _) = gateway
        .post(
            "/v1/events/track",
            &sk,
            json!({ "event": "purchase", "userId": "u1" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}
