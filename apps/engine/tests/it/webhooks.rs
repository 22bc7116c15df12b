//! The webhook dispatcher against the real Postgres and a real HTTP receiver on a free port.
//! Deliveries are written by the engine's outbox code, as an award would write them. Each test
//! runs dispatchers of its own, limited to its own project; the full engines other tests start
//! deliver every project's webhooks, so each assertion here holds whichever dispatcher makes an
//! attempt (they all send to the same receiver, and the waits allow for the standard 5 s backoff).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use gamify_db::{
    Db, PoolOptions,
    gamification::outbox::{self, Delivery},
    sea_orm::sqlx,
};
use gamify_engine::webhooks::{
    Schedule, Settings,
    dispatch::{Sender, run_with},
};
use gamify_rules::Award;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn connect() -> Db {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through ./scripts/test.sh");
    Db::connect(
        &url,
        PoolOptions {
            max_connections: 4,
            ..PoolOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A new organization and project, as the management API would make them.
async fn project(db: &Db) -> Uuid {
    let pool = db.shared().get_postgres_connection_pool();
    let org = Uuid::new_v4();
    let project = Uuid::new_v4();
    sqlx::query("INSERT INTO organizations (id, name) VALUES ($1, $2)")
        .bind(org)
        .bind(format!("webhooks {org}"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, 'webhooks')")
        .bind(project)
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    project
}

fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// An endpoint subscribed to `points.changed`: (id, secret).
async fn endpoint(db: &Db, project: Uuid, url: &str) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let secret = new_secret();
    let mut txn = db.tenant_bulk(project).await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_endpoints (project_id, id, url, events, secret)
         VALUES ($1, $2, $3, ARRAY['points.changed'], $4)",
    )
    .bind(project)
    .bind(id)
    .bind(url)
    .bind(&secret)
    .execute(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
    (id, secret)
}

/// An award of 10 XP to `user`, to announce.
fn delivery(user: &str) -> Delivery {
    Delivery {
        user_id: user.to_owned(),
        event_id: Some(Uuid::new_v4()),
        award: Award::Points {
            key: "xp".into(),
            amount: 10,
            balance: 10,
            reason: "lessons".into(),
        },
        at: Utc::now(),
    }
}

/// Writes deliveries through the outbox, as the award transaction does; returns their ids.
async fn award(db: &Db, project: Uuid, deliveries: Vec<Delivery>) -> Vec<String> {
    let mut txn = db.tenant_bulk(project).await.unwrap();
    let before: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM webhook_deliveries WHERE project_id = $1")
            .bind(project)
            .fetch_all(&mut *txn)
            .await
            .unwrap();
    let endpoints = outbox::endpoints(&mut txn, project).await.unwrap();
    outbox::write(&mut txn, project, &endpoints, &deliveries)
        .await
        .unwrap();
    let after: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM webhook_deliveries WHERE project_id = $1 ORDER BY id")
            .bind(project)
            .fetch_all(&mut *txn)
            .await
            .unwrap();
    txn.commit().await.unwrap();
    after
        .into_iter()
        .map(|(id,)| id)
        .filter(|id| !before.iter().any(|(old,)| old == id))
        .collect()
}

/// (attempt, status, body, error) of one recorded attempt.
type Try = (i32, Option<i32>, Option<String>, Option<String>);

#[derive(Debug, Clone, PartialEq)]
struct Row {
    state: String,
    attempts: i32,
    queued: bool,
    /// In order.
    tries: Vec<Try>,
}

async fn row(db: &Db, project: Uuid, delivery: &str) -> Row {
    let mut txn = db.tenant_bulk(project).await.unwrap();
    let (state, attempts): (String, i32) = sqlx::query_as(
        "SELECT state, attempts FROM webhook_deliveries WHERE project_id = $1 AND id = $2",
    )
    .bind(project)
    .bind(delivery)
    .fetch_one(&mut *txn)
    .await
    .unwrap();
    let tries = sqlx::query_as(
        "SELECT attempt, response_status, response_body, error FROM webhook_attempts
         WHERE project_id = $1 AND delivery_id = $2 ORDER BY attempt",
    )
    .bind(project)
    .bind(delivery)
    .fetch_all(&mut *txn)
    .await
    .unwrap();
    let (queued,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM webhook_queue WHERE project_id = $1 AND delivery_id = $2)",
    )
    .bind(project)
    .bind(delivery)
    .fetch_one(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
    Row {
        state,
        attempts,
        queued,
        tries,
    }
}

async fn wait_for_row(
    db: &Db,
    project: Uuid,
    delivery: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Row) -> bool,
) -> Row {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = row(db, project, delivery).await;
        if done(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    received: Mutex<Vec<Received>>,
    /// The statuses to answer, in order; the last one repeats.
    answers: Mutex<VecDeque<u16>>,
}

/// An HTTP server on a free port of 127.0.0.1 that records every request.
struct Receiver {
    addr: SocketAddr,
    script: Arc<Script>,
    shutdown: CancellationToken,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Self {
        let script = Arc::new(Script {
            received: Mutex::default(),
            answers: Mutex::new(answers.iter().copied().collect()),
        });
        let app = axum::Router::new()
            .fallback(
                |State(script): State<Arc<Script>>, headers: HeaderMap, body: Bytes| async move {
                    script
                        .received
                        .lock()
                        .unwrap()
                        .push(Received { headers, body });
                    let mut answers = script.answers.lock().unwrap();
                    let status = if answers.len() > 1 {
                        answers.pop_front().unwrap()
                    } else {
                        answers.front().copied().unwrap_or(200)
                    };
                    (
                        StatusCode::from_u16(status).unwrap(),
                        format!("answered {status}"),
                    )
                },
            )
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            addr,
            script,
            shutdown,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/gamify", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.script.received.lock().unwrap().clone()
    }

    fn received_for(&self, id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.header("webhook-id") == id)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The receiver's side of Standard Webhooks, written from the specification and independent of the
/// engine's signing code: `v1,` + base64(HMAC-SHA256(base64-decoded secret, "id.timestamp.body")),
/// with the timestamp within five minutes of now.
fn verify(secret: &str, received: &Received) -> Result<Value, String> {
    let id = received.header("webhook-id");
    let timestamp = received.header("webhook-timestamp");
    let seconds: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    if (Utc::now().timestamp() - seconds).abs() > 300 {
        return Err(format!("timestamp {seconds} is not recent"));
    }
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|_| "bad secret")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "bad key")?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let matched = received
        .header("webhook-signature")
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|signature| signature == expected);
    if !matched {
        return Err(format!(
            "no signature matches: {}",
            received.header("webhook-signature")
        ));
    }
    serde_json::from_slice(&received.body).map_err(|err| err.to_string())
}

/// Dispatchers for `project` only, fast: 20 ms polls and the given retry delays, no jitter.
fn settings(project: Uuid, allow_private: bool, delays: &[u64]) -> Settings {
    Settings {
        schedule: Schedule::new(
            delays.iter().copied().map(Duration::from_millis).collect(),
            0.0,
        ),
        poll: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        lease: Duration::from_secs(10),
        concurrency: 4,
        projects: Some(vec![project]),
        ..Settings::new(allow_private)
    }
}

struct Dispatchers(CancellationToken);

impl Dispatchers {
    fn start(db: &Db, settings: Settings, count: usize) -> Self {
        let shutdown = CancellationToken::new();
        for _ in 0..count {
            tokio::spawn(run_with(db.clone(), settings.clone(), shutdown.clone()));
        }
        Self(shutdown)
    }
}

impl Drop for Dispatchers {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_delivery_arrives_signed_the_standard_webhooks_way() {
    let db = connect().await;
    let project = project(&db).await;
    let receiver = Receiver::start(&[200]).await;
    let (_, secret) = endpoint(&db, project, &receiver.url()).await;
    let announced = delivery("user_1");
    let sent = outbox::payload(project, &announced);
    let ids = award(&db, project, vec![announced]).await;
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
    let _dispatchers = Dispatchers::start(&db, settings(project, true, &[100]), 1);

    let row = wait_for_row(&db, project, id, WAIT, "delivery", |r| {
        r.state == "delivered"
    })
    .await;
    assert_eq!(row.attempts, 1);
    assert!(!row.queued);
    assert_eq!(
        row.tries,
        vec![(1, Some(200), Some("answered 200".to_owned()), None)]
    );

    let received = receiver.received_for(id);
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request.header("user-agent").starts_with("Gamify-Webhooks/"));
    assert!(request.header("webhook-signature").starts_with("v1,"));
    let body = verify(&secret, request).unwrap();
    assert_eq!(body, sent);
    // Another secret does not verify it.
    assert!(verify(&new_secret(), request).is_err());
}

#[tokio::test]
async fn a_failed_attempt_is_retried_under_the_same_webhook_id() {
    let db = connect().await;
    let project = project(&db).await;
    let receiver = Receiver::start(&[500, 500, 200]).await;
    let (_, secret) = endpoint(&db, project, &receiver.url()).await;
    let ids = award(&db, project, vec![delivery("user_2")]).await;
    let id = &ids[0];
    let _dispatchers = Dispatchers::start(&db, settings(project, true, &[50, 50, 50]), 1);

    let row = wait_for_row(&db, project, id, WAIT, "delivery", |r| {
        r.state == "delivered"
    })
    .await;
    assert_eq!(row.attempts, 3);
    assert!(!row.queued);
    let statuses: Vec<(i32, Option<i32>)> = row.tries.iter().map(|t| (t.0, t.1)).collect();
    assert_eq!(
        statuses,
        vec![(1, Some(500)), (2, Some(500)), (3, Some(200))]
    );
    assert_eq!(row.tries[0].2.as_deref(), Some("answered 500"));

    let received = receiver.received_for(id);
    assert_eq!(received.len(), 3, "{received:?}");
    let bodies: Vec<Value> = received
        .iter()
        .map(|request| verify(&secret, request).unwrap())
        .collect();
    assert!(bodies.iter().all(|body| body == &bodies[0]));
}

#[tokio::test]
async fn after_the_last_attempt_the_delivery_fails() {
    let db = connect().await;
    let project = project(&db).await;
    let receiver = Receiver::start(&[503]).await;
    endpoint(&db, project, &receiver.url()).await;
    let ids = award(&db, project, vec![delivery("user_3")]).await;
    let id = &ids[0];
    // As if ten attempts had failed already: the eleventh is the last, in this test's schedule as
    // in the standard one.
    let mut txn = db.tenant_bulk(project).await.unwrap();
    sqlx::query("UPDATE webhook_deliveries SET attempts = 10 WHERE project_id = $1 AND id = $2")
        .bind(project)
        .bind(id)
        .execute(&mut *txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let _dispatchers = Dispatchers::start(&db, settings(project, true, &[20; 10]), 1);

    let row = wait_for_row(&db, project, id, WAIT, "failure", |r| r.state == "failed").await;
    assert_eq!(row.attempts, 11);
    assert!(!row.queued);
    assert_eq!(
        row.tries,
        vec![(11, Some(503), Some("answered 503".to_owned()), None)]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received_for(id).len(), 1);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let receiver = Receiver::start(&[200]).await;
    let secret = new_secret();
    let body = json!({"type": "points.changed", "timestamp": Utc::now(), "data": {}});
    let strict = Sender::new(false, Duration::from_secs(5)).unwrap();
    let port = receiver.addr.port();
    for (url, class) in [
        (receiver.url(), "loopback"),
        (format!("http://localhost:{port}/hooks"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "loopback"),
        (format!("http://0.0.0.0:{port}/"), "unspecified"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local",
        ),
        ("http://10.0.0.1/".to_owned(), "private"),
    ] {
        let attempt = strict.send("msg_refused", &url, &secret, &body).await;
        assert_eq!(attempt.status, None, "{url}");
        let error = attempt.error.clone().unwrap();
        assert!(
            error.contains(&format!("a {class} address")),
            "{url}: {error}"
        );
        assert!(!attempt.delivered());
    }
    assert!(receiver.received().is_empty());

    let lenient = Sender::new(true, Duration::from_secs(5)).unwrap();
    for url in [receiver.url(), format!("http://localhost:{port}/hooks")] {
        let attempt = lenient.send("msg_allowed", &url, &secret, &body).await;
        assert_eq!(attempt.status, Some(200), "{url}: {attempt:?}");
        assert!(attempt.delivered());
    }
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn the_dispatcher_records_a_refused_address_as_a_failed_attempt() {
    let db = connect().await;
    let project = project(&db).await;
    // No receiver anywhere: whichever dispatcher tries, nothing is delivered. This test's refuses
    // the link-local address without connecting.
    endpoint(&db, project, "http://169.254.0.1:9/hook").await;
    let ids = award(&db, project, vec![delivery("user_4")]).await;
    let id = &ids[0];
    let _dispatchers = Dispatchers::start(&db, settings(project, false, &[60_000]), 1);
    let row = wait_for_row(&db, project, id, WAIT, "an attempt", |r| r.attempts >= 1).await;
    assert_eq!(row.state, "pending");
    assert!(row.queued);
    let (attempt, status, body, error) = &row.tries[0];
    assert_eq!((*attempt, *status, body), (1, None, &None));
    let error = error.as_deref().unwrap_or_default();
    assert!(
        error.contains("link-local") || error.contains("connect") || error.contains("no answer"),
        "{error}"
    );
}

#[tokio::test]
async fn deleting_the_endpoint_stops_deliveries() {
    let db = connect().await;
    let project = project(&db).await;
    let receiver = Receiver::start(&[500]).await;
    let (endpoint_id, _) = endpoint(&db, project, &receiver.url()).await;
    let ids = award(&db, project, vec![delivery("user_5")]).await;
    let id = &ids[0];
    let _dispatchers = Dispatchers::start(&db, settings(project, true, &[100; 20]), 1);
    wait_for_row(&db, project, id, WAIT, "a first attempt", |r| {
        r.attempts >= 1
    })
    .await;

    // Deleted behind the dispatcher's back: the endpoint only, its queue row left in place.
    let mut txn = db.tenant_bulk(project).await.unwrap();
    sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now() WHERE project_id = $1 AND id = $2",
    )
    .bind(project)
    .bind(endpoint_id)
    .execute(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();

    let failed = wait_for_row(&db, project, id, WAIT, "failure", |r| r.state == "failed").await;
    assert!(!failed.queued);
    let count = receiver.received_for(id).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received_for(id).len(), count);
    assert_eq!(row(&db, project, id).await, failed);

    // Later awards make no delivery for it.
    assert!(
        award(&db, project, vec![delivery("user_5")])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_delivery_whose_attempt_was_cut_short_is_attempted_when_its_lease_ends() {
    let db = connect().await;
    let project = project(&db).await;
    let receiver = Receiver::start(&[200]).await;
    endpoint(&db, project, &receiver.url()).await;
    let ids = award(&db, project, vec![delivery("user_6")]).await;
    let id = &ids[0];
    // As an engine that claimed it and stopped would leave it: leased for another second.
    let pool = db.shared().get_postgres_connection_pool();
    let (leased_until,): (DateTime<Utc>,) = sqlx::query_as(
        "UPDATE webhook_queue SET due_at = now() + interval '1 second'
         WHERE project_id = $1 AND delivery_id = $2 RETURNING due_at",
    )
    .bind(project)
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    let _dispatchers = Dispatchers::start(&db, settings(project, true, &[100]), 2);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.received_for(id).is_empty());
    let row = wait_for_row(&db, project, id, WAIT, "delivery", |r| {
        r.state == "delivered"
    })
    .await;
    assert_eq!(row.attempts, 1);
    let received = receiver.received_for(id);
    assert_eq!(received.len(), 1);
    let at: i64 = received[0].header("webhook-timestamp").parse().unwrap();
    assert!(at >= leased_until.timestamp() - 1, "{at} {leased_until}");
}

#[tokio::test]
async fn several_dispatchers_deliver_each_webhook_once() {
    let db = connect().await;
    let project = project(&db).await;
    let receiver = Receiver::start(&[200]).await;
    let (_, secret) = endpoint(&db, project, &receiver.url()).await;
    let payloads = (0..40).map(|n| delivery(&format!("user_{n}"))).collect();
    let ids = award(&db, project, payloads).await;
    assert_eq!(ids.len(), 40);
    let _dispatchers = Dispatchers::start(&db, settings(project, true, &[100]), 3);

    for id in &ids {
        wait_for_row(&db, project, id, WAIT, "delivery", |r| {
            r.state == "delivered"
        })
        .await;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        verify(&secret, &request).unwrap();
        *counts
            .entry(request.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 40);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let pool = db.shared().get_postgres_connection_pool();
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_queue WHERE project_id = $1")
            .bind(project)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}
