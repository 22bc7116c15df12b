//! The whole data path in one process: gamify-api on a free port, gamify-worker and gamify-engine
//! in their own consumer groups on a topic of the test's own.

use std::time::Duration;

use gamify_api::{
    AppState,
    config::{AdminToken, Limits, Quota, Settings},
};
use gamify_db::{Db, PoolOptions, sea_orm::sqlx};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through ./scripts/test.sh"))
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub async fn connect() -> Db {
    Db::connect(
        &var("DATABASE_URL"),
        PoolOptions {
            max_connections: 4,
            ..PoolOptions::default()
        },
    )
    .await
    .unwrap()
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The consumer settings of this test's worker; the engine's differ in group only.
fn consumer_config(topic: &str, group: &str) -> gamify_worker::Config {
    gamify_worker::Config {
        database_url: var("DATABASE_URL"),
        kafka_brokers: brokers(),
        topic: topic.to_owned(),
        dlq_topic: format!("{topic}.dlq"),
        group_id: group.to_owned(),
        envelope_secret: var("ENVELOPE_SECRET"),
        batch_size: 500,
        batch_max_wait: Duration::from_millis(20),
        db_concurrency: 4,
        port: 0,
        source_cache_ttl: Duration::from_secs(10),
        session_timeout: Duration::from_secs(6),
        lag_interval: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        kafka_consumer_properties: Vec::new(),
        kafka_producer_properties: Vec::new(),
        batch_timeout: Duration::from_secs(30),
        analytics_rollups: true,
        shutdown_timeout: Duration::from_secs(10),
        stall_timeout: Duration::from_secs(60),
        statement_timeout: Duration::from_secs(30),
        retention_months: None,
    }
}

pub struct Stack {
    pub base_url: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub db: Db,
    shutdown: CancellationToken,
    consumers: Vec<JoinHandle<()>>,
}

impl Stack {
    pub async fn start() -> Self {
        init_tracing();
        let id = Uuid::new_v4().simple().to_string();
        let topic = format!("engine-test.{id}");
        gamify_dev_broker::create_topics(&brokers(), &[(&topic, 3), (&format!("{topic}.dlq"), 1)])
            .await
            .unwrap();
        gamify_worker::metrics::install().unwrap();
        let settings = Settings {
            admin_token: AdminToken {
                value: format!("adm_engine_{}", Uuid::new_v4().simple()),
                generated: false,
            },
            redis_url: std::env::var("REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            kafka_brokers: brokers(),
            kafka_topic: topic.clone(),
            kafka_producer_properties: Vec::new(),
            envelope_secret: var("ENVELOPE_SECRET"),
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
            http: gamify_api::config::HttpLimits {
                invalid_keys: Quota {
                    per_second: 1_000_000,
                    burst: 1_000_000,
                },
                ..Default::default()
            },
        };
        let db = connect().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let state = AppState::new(db.clone(), &settings, &shutdown).unwrap();
        tokio::spawn(gamify_api::serve(listener, state, shutdown.clone()));

        let worker = gamify_worker::Worker::start(consumer_config(&topic, &format!("w-{id}")))
            .await
            .unwrap();
        let engine = gamify_engine::Engine::start(gamify_engine::Config {
            consumer: consumer_config(&topic, &format!("e-{id}")),
            webhooks_allow_private: true,
        })
        .await
        .unwrap();
        let stop = shutdown.clone();
        let worker = tokio::spawn(async move { worker.run(stop).await.unwrap() });
        let stop = shutdown.clone();
        let engine = tokio::spawn(async move { engine.run(stop).await.unwrap() });
        Self {
            base_url,
            admin_token: settings.admin_token.value,
            client: reqwest::Client::new(),
            db,
            shutdown,
            consumers: vec![worker, engine],
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

    pub async fn get(&self, path: &str, auth: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, body) = self.call(method, path, &self.admin_token, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A new project with a publishable and a secret key.
    pub async fn project(&self) -> Project {
        let org = self
            .admin(
                Method::POST,
                "/v1/organizations",
                json!({ "name": "engine" }),
            )
            .await;
        let project = self
            .admin(
                Method::POST,
                "/v1/projects",
                json!({ "organizationId": org["id"], "name": "shop" }),
            )
            .await;
        let id = Uuid::parse_str(project["id"].as_str().unwrap()).unwrap();
        let path = format!("/v1/projects/{id}/api-keys");
        let pk = self
            .admin(
                Method::POST,
                &path,
                json!({ "name": "web", "type": "publishable" }),
            )
            .await;
        let sk = self
            .admin(
                Method::POST,
                &path,
                json!({ "name": "server", "type": "secret" }),
            )
            .await;
        Project {
            id,
            pk: pk["key"].as_str().unwrap().to_owned(),
            sk: sk["key"].as_str().unwrap().to_owned(),
        }
    }

    /// Publishes `rules` and returns the version.
    pub async fn publish(&self, project: &Project, rules: Value, apply: &str) -> i64 {
        let published = self
            .admin(
                Method::PUT,
                &format!("/v1/projects/{}/rules", project.id),
                json!({ "rules": rules, "apply": apply }),
            )
            .await;
        published["version"].as_i64().unwrap()
    }

    /// Sends one event and returns the id the 202 gave it.
    pub async fn track(&self, key: &str, body: Value) -> String {
        let (status, answer) = self
            .call(Method::POST, "/v1/events/track", key, Some(body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    /// The event's outcome once evaluated (long-polled).
    pub async fn outcome(&self, key: &str, event_id: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..6 {
            let (status, outcome) = self
                .get(&format!("/v1/events/{event_id}/outcomes?wait=10"), key)
                .await;
            assert_eq!(status, StatusCode::OK, "{outcome}");
            if outcome["status"] != "pending" {
                return outcome;
            }
            last = outcome;
        }
        panic!("event {event_id} was not evaluated within a minute: {last}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for consumer in &self.consumers {
            consumer.abort();
        }
    }
}

pub struct Project {
    pub id: Uuid,
    pub pk: String,
    pub sk: String,
}

/// The example rules, in UTC, plus a secret-only metric on a browser event name.
pub fn shop_rules() -> Value {
    json!({
        "timezone": "UTC",
        "metrics": [
            {"key": "purchases", "event": "purchase", "aggregate": "count"},
            {"key": "revenue", "event": "purchase", "aggregate": "sum", "property": "amount"},
            {"key": "lessons", "event": "lesson_completed", "aggregate": "count", "source": "any",
             "where": "properties.score >= 50"},
            {"key": "verified_views", "event": "page_view", "aggregate": "count"}
        ],
        "streaks": [{"key": "daily_lessons", "metric": "lessons", "period": "day", "freezes": {"perMonth": 2}}],
        "achievements": [
            {"key": "first_purchase", "name": "First purchase", "metric": "purchases", "threshold": 1},
            {"key": "big_spender", "name": "Big spender", "metric": "revenue", "threshold": 100000},
            {"key": "on_fire", "name": "7-day streak", "streak": "daily_lessons", "threshold": 7},
            {"key": "verified_visitor", "name": "Verified visitor", "metric": "verified_views", "threshold": 1}
        ],
        "points": [{"key": "xp", "name": "XP",
            "triggers": [{"metric": "lessons", "points": 10},
                         {"metric": "revenue", "every": 100, "points": 1},
                         {"achievement": "first_purchase", "points": 100}],
            "levels": [{"key": "bronze", "at": 0}, {"key": "silver", "at": 500}, {"key": "gold", "at": 2000}]}],
        "leaderboards": [{"key": "weekly_xp", "points": "xp", "period": "week", "size": 100}]
    })
}

/// The backend of `txn`.
pub async fn backend(txn: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **txn)
        .await
        .unwrap()
}

/// Waits until another backend waits on a lock the backend `holder` holds.
pub async fn wait_until_blocked_by(stack: &Stack, holder: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_one(stack.db.shared().get_postgres_connection_pool())
        .await
        .unwrap();
        if blocked > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing ever waited on the transaction of backend {holder}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
