//! End to end: HTTP into gamify-api, through the broker, into Postgres by gamify-worker, and back
//! out through the tenant read API.

use std::{collections::HashMap, time::Duration};

use gamify_api::{
    AppState,
    config::{AdminToken, Limits, Quota, Settings},
};
use gamify_db::sea_orm::{ConnectionTrait, Statement};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{
    Running, Topics, brokers, config, connect, database_url, secret, spawn_binary, wait_until,
};

/// gamify-api serving in this process, producing to the test's topic.
pub struct Gateway {
    pub base_url: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Gateway {
    pub async fn start(topic: &str) -> Self {
        Self::start_with(topic, |_| {}).await
    }

    /// A gateway whose settings `adjust` changes first (a shorter analytics timeout, say).
    pub async fn start_with(topic: &str, adjust: impl FnOnce(&mut Settings)) -> Self {
        // One metrics recorder per process: the worker's, so that the tests reading a worker's
        // /metrics find its gauges whichever test starts first (the gateway's metrics go there too).
        gamify_worker::metrics::install().unwrap();
        let mut settings = Settings {
            admin_token: AdminToken {
                value: format!("adm_e2e_{}", Uuid::new_v4().simple()),
                generated: false,
            },
            redis_url: std::env::var("REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            kafka_brokers: brokers(),
            kafka_topic: topic.to_owned(),
            kafka_producer_properties: gamify_common::config::kafka_properties(
                "KAFKA_PRODUCER_PROPERTIES",
            )
            .unwrap(),
            envelope_secret: secret(),
            produce_timeout: Duration::from_secs(10),
            rate_limit: Limits {
                client: Quota {
                    per_second: 100_000,
                    burst: 100_000,
                },
                secret_key: Quota {
                    per_second: 100_000,
                    burst: 100_000,
                },
                project: Quota {
                    per_second: 100_000,
                    burst: 100_000,
                },
                sync_interval: Duration::from_millis(50),
            },
            key_cache_ttl: Duration::from_secs(10),
            negative_cache_ttl: Duration::from_secs(5),
            trusted_proxy_hops: 0,
            accounts: gamify_api::config::AccountSettings {
                password_hash: gamify_api::accounts::HashCost {
                    memory_kib: 1024,
                    iterations: 1,
                    concurrency: 4,
                },
                ..Default::default()
            },
            // Tests share 127.0.0.1 and present invalid keys on purpose.
            http: gamify_api::config::HttpLimits {
                invalid_keys: Quota {
                    per_second: 1_000_000,
                    burst: 1_000_000,
                },
                ..Default::default()
            },
        };
        adjust(&mut settings);
        let db = connect(&database_url()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let state = AppState::new(db, &settings, &shutdown).unwrap();
        tokio::spawn(gamify_api::serve(listener, state, shutdown.clone()));
        Self {
            base_url,
            admin_token: settings.admin_token.value,
            client: reqwest::Client::new(),
            shutdown,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let (status, body) = self
            .call(Method::POST, path, &self.admin_token, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A new project with a publishable and a secret key: (project id, pk, sk).
    pub async fn project(&self) -> (Uuid, String, String) {
        let org = self
            .admin("/v1/organizations", json!({ "name": "e2e" }))
            .await;
        let project = self
            .admin(
                "/v1/projects",
                json!({ "organizationId": org["id"], "name": "shop" }),
            )
            .await;
        let id = project["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/projects/{id}/api-keys");
        let pk = self
            .admin(&path, json!({ "name": "web", "type": "publishable" }))
            .await;
        let sk = self
            .admin(&path, json!({ "name": "server", "type": "secret" }))
            .await;
        (
            Uuid::parse_str(&id).unwrap(),
            pk["key"].as_str().unwrap().to_owned(),
            sk["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn send(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, key, Some(body)).await
    }

    pub async fn events(&self, sk: &str) -> Vec<Value> {
        let (status, page) = self
            .call(Method::GET, "/v1/events?limit=1000", sk, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["data"].as_array().unwrap().clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn acknowledged_events_become_rows_a_tenant_can_read() {
    let topics = Topics::create(3).await;
    let gateway = Gateway::start(&topics.topic).await;
    let worker = Running::start(config(&topics)).await;
    let (_, pk, sk) = gateway.project().await;
    let (_, other_pk, other_sk) = gateway.project().await;

    let timestamp = "2026-11-20T10:00:00Z";
    let sends = [
        (
            &pk,
            "/v1/events/track",
            json!({ "event": "page_view", "userId": "user_123", "timestamp": timestamp, "properties": { "page": "/products" } }),
        ),
        (
            &sk,
            "/v1/events/track",
            json!({ "event": "purchase", "userId": "user_123", "messageId": "order-1", "properties": { "amount": 4200, "currency": "EUR" } }),
        ),
        // A client retry of the same message.
        (
            &sk,
            "/v1/events/track",
            json!({ "event": "purchase", "userId": "user_123", "messageId": "order-1", "properties": { "amount": 4200, "currency": "EUR" } }),
        ),
        (
            &pk,
            "/v1/identify",
            json!({ "userId": "user_123", "traits": { "plan": "free", "seats": 5 } }),
        ),
        (
            &pk,
            "/v1/identify",
            json!({ "userId": "user_123", "traits": { "plan": "pro" } }),
        ),
        (
            &pk,
            "/v1/events/batch",
            json!({ "batch": [
            { "event": "cart_add", "userId": "user_123" },
            { "event": "click", "anonymousId": "anon-9" }
        ] }),
        ),
        (
            &other_pk,
            "/v1/events/track",
            json!({ "event": "page_view", "userId": "user_123" }),
        ),
    ];
    for (key, path, body) in sends {
        let (status, response) = gateway.send(key, path, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {response}");
    }
    let (status, _) = gateway
        .send(
            &pk,
            "/v1/events/track",
            json!({ "event": "purchase", "userId": "user_123" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    wait_until(Duration::from_secs(20), "7 stored events", || async {
        gateway.events(&sk).await.len() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = gateway.events(&sk).await;
    let by_event: HashMap<&str, Vec<&Value>> = events.iter().fold(HashMap::new(), |mut map, e| {
        map.entry(e["event"].as_str().unwrap()).or_default().push(e);
        map
    });
    assert_eq!(events.len(), 6, "{events:#?}");
    assert_eq!(
        by_event["purchase"].len(),
        1,
        "the retried purchase is stored once"
    );
    assert_eq!(by_event["$identify"].len(), 2);
    assert!(
        events.iter().all(|e| e["status"] == "processed"),
        "{events:#?}"
    );

    let page_view = by_event["page_view"][0];
    assert_eq!(page_view["userId"], "user_123");
    assert_eq!(page_view["occurredAt"], "2026-11-20T10:00:00Z");
    assert_eq!(page_view["source"]["keyType"], "publishable");
    assert_eq!(page_view["properties"]["page"], "/products");
    let purchase = by_event["purchase"][0];
    assert_eq!(purchase["messageId"], "order-1");
    assert_eq!(purchase["source"]["keyType"], "secret");
    assert!(purchase["processedAt"].is_string());
    assert_eq!(by_event["click"][0]["anonymousId"], "anon-9");
    assert_eq!(by_event["click"][0]["userId"], Value::Null);

    let (status, user) = gateway
        .call(Method::GET, "/v1/users/user_123", &sk, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["metadata"], json!({ "plan": "pro", "seats": 5 }));
    assert_eq!(user["eventCount"], 5);

    // The other project sees only its own event.
    let theirs = gateway.events(&other_sk).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["event"], "page_view");
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_and_duplicates_no_acknowledged_event() {
    let topics = Topics::create(4).await;
    let gateway = Gateway::start(&topics.topic).await;
    let (project, pk, _) = gateway.project().await;
    let db = connect(&database_url()).await;
    let stored = |db: gamify_db::Db| async move {
        let txn = db.tenant(project).await.unwrap();
        let row = txn
            .query_one(Statement::from_string(
                txn.get_database_backend(),
                "SELECT count(*) AS rows, count(DISTINCT message_id) AS distinct_ids FROM events",
            ))
            .await
            .unwrap()
            .unwrap();
        let rows: i64 = row.try_get("", "rows").unwrap();
        let distinct: i64 = row.try_get("", "distinct_ids").unwrap();
        (rows, distinct)
    };

    let mut worker = spawn_binary(&topics, &[("WORKER_BATCH_SIZE", "50")]).await;
    let mut acknowledged = Vec::new();
    for batch in 0..40 {
        let items: Vec<Value> = (0..50)
            .map(|i| json!({ "event": "click", "userId": format!("u{}", i % 9), "messageId": format!("m-{batch}-{i}") }))
            .collect();
        let (status, body) = gateway
            .send(&pk, "/v1/events/batch", json!({ "batch": items }))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        acknowledged.extend((0..50).map(|i| format!("m-{batch}-{i}")));
        if batch == 15 {
            wait_until(
                Duration::from_secs(20),
                "the worker to store some events",
                || {
                    let db = db.clone();
                    async move { stored(db).await.0 > 0 }
                },
            )
            .await;
            worker.start_kill().unwrap();
            worker.wait().await.unwrap();
            let (at_kill, _) = stored(db.clone()).await;
            assert!(at_kill < 2000);
            worker = spawn_binary(&topics, &[("WORKER_BATCH_SIZE", "50")]).await;
        }
    }

    wait_until(
        Duration::from_secs(60),
        "all 2,000 acknowledged events stored",
        || {
            let db = db.clone();
            async move { stored(db).await.0 >= 2000 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored(db.clone()).await, (2000, 2000));
    let txn = db.tenant(project).await.unwrap();
    let rows = txn
        .query_all(Statement::from_string(
            txn.get_database_backend(),
            "SELECT message_id FROM events",
        ))
        .await
        .unwrap();
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("", "message_id").unwrap())
        .collect();
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);
    worker.start_kill().unwrap();
}

/// A browser (publishable key) that guesses a trusted event's messageId must not suppress, replace
/// or alter it, whichever arrives first; retries within one key class stay exactly-once.
#[tokio::test]
async fn a_publishable_key_cannot_claim_the_message_id_of_a_trusted_event() {
    let topics = Topics::create(3).await;
    let gateway = Gateway::start(&topics.topic).await;
    let worker = Running::start(config(&topics)).await;
    let (_, pk, sk) = gateway.project().await;

    let page_view = |message_id: &str| {
        json!({ "event": "page_view", "userId": "u1", "messageId": message_id,
                "properties": { "page": "/forged" } })
    };
    let purchase = |message_id: &str| {
        json!({ "event": "purchase", "userId": "u1", "messageId": message_id,
                "properties": { "orderId": message_id, "amount": 4200 } })
    };
    // Browser first, then server; server first, then browser; each sent twice (client retries).
    // One user, so one partition: the sentinel is stored after everything sent before it.
    let sends = [
        (&pk, page_view("order-o-1")),
        (&sk, purchase("order-o-1")),
        (&sk, purchase("order-o-2")),
        (&pk, page_view("order-o-2")),
        (&pk, page_view("order-o-1")),
        (&sk, purchase("order-o-1")),
        (&sk, purchase("order-o-2")),
        (&pk, page_view("order-o-2")),
        (
            &pk,
            json!({ "event": "page_view", "userId": "u1", "messageId": "sentinel" }),
        ),
    ];
    for (key, body) in sends {
        let (status, response) = gateway.send(key, "/v1/events/track", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{response}");
    }
    wait_until(Duration::from_secs(20), "the sentinel event", || async {
        gateway
            .events(&sk)
            .await
            .iter()
            .any(|e| e["messageId"] == "sentinel")
    })
    .await;

    let events = gateway.events(&sk).await;
    assert_eq!(events.len(), 5, "{events:#?}");
    for order in ["order-o-1", "order-o-2"] {
        let mut stored: Vec<(&str, &str, &Value)> = events
            .iter()
            .filter(|e| e["messageId"] == order)
            .map(|e| {
                (
                    e["event"].as_str().unwrap(),
                    e["source"]["keyType"].as_str().unwrap(),
                    &e["properties"],
                )
            })
            .collect();
        stored.sort_by_key(|(event, _, _)| *event);
        assert_eq!(
            stored,
            [
                ("page_view", "publishable", &json!({ "page": "/forged" })),
                (
                    "purchase",
                    "secret",
                    &json!({ "orderId": order, "amount": 4200 })
                ),
            ],
            "{order}"
        );
        assert!(
            events
                .iter()
                .filter(|e| e["messageId"] == order)
                .all(|e| e["status"] == "processed")
        );
    }
    worker.stop().await;
}
