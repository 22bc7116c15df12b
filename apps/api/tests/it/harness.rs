use std::{sync::Arc, time::Duration};

use gamify_api::{
    AppState,
    clock::WallClock,
    config::{AdminToken, Limits, Quota, Settings},
};
use gamify_db::{Db, PoolOptions};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn brokers() -> String {
    env_or("KAFKA_BROKERS", "127.0.0.1:9092")
}

pub fn envelope_secret() -> String {
    std::env::var("ENVELOPE_SECRET")
        .expect("ENVELOPE_SECRET is not set: run the tests through ./scripts/test.sh")
}

/// Settings for a test server: the real Redis and broker from the environment, generous limits.
pub fn settings() -> Settings {
    Settings {
        admin_token: AdminToken {
            value: format!("adm_test_{}", uuid::Uuid::new_v4().simple()),
            generated: false,
        },
        redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
        kafka_brokers: brokers(),
        kafka_topic: env_or("KAFKA_TOPIC", "gamify.events"),
        kafka_producer_properties: gamify_common::config::kafka_properties(
            "KAFKA_PRODUCER_PROPERTIES",
        )
        .unwrap(),
        envelope_secret: envelope_secret(),
        produce_timeout: Duration::from_secs(5),
        rate_limit: Limits {
            client: Quota {
                per_second: 1000,
                burst: 1000,
            },
            secret_key: Quota {
                per_second: 1000,
                burst: 1000,
            },
            project: Quota {
                per_second: 1000,
                burst: 1000,
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
            // Every test signs in from 127.0.0.1: one test's failures must not refuse another's.
            sign_in_failures_per_address: 1_000_000,
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
    }
}

/// A topic of this test's own, so what it finds there is only its own.
pub async fn create_topic(partitions: i32) -> String {
    let name = format!("test.{}", uuid::Uuid::new_v4().simple());
    gamify_dev_broker::create_topics(&brokers(), &[(&name, partitions)])
        .await
        .unwrap();
    name
}

/// One message read back from a topic.
#[derive(Debug)]
pub struct Consumed {
    pub key: String,
    pub payload: Vec<u8>,
    pub signature: Option<String>,
}

impl Consumed {
    pub fn envelope(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Reads the topic from the beginning until `expected` messages arrived or `timeout` passed.
pub async fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<Consumed> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            // Do not idle between fetches: a test waits for the last message, not for a full fetch.
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(&topic, partition.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let deadline = std::time::Instant::now() + timeout;
        let mut messages = Vec::new();
        while messages.len() < expected && std::time::Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                let signature = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == gamify_common::envelope::SIGNATURE_HEADER)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                messages.push(Consumed {
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    signature,
                });
            }
        }
        messages
    })
    .await
    .unwrap()
}

/// Every message on the topic, counted by reading it (so a count never rests on a broker's
/// watermarks; Tansu's, the earlier development broker's, were not exact).
pub async fn topic_message_count(topic: &str) -> usize {
    read_topic(topic, usize::MAX, Duration::from_secs(2))
        .await
        .len()
}

/// A redis-server of the test's own, on a free port, killed when dropped: for outage tests that
/// must not disturb the shared Redis.
pub struct PrivateRedis {
    pub url: String,
    child: tokio::process::Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: run the tests through ./scripts/test.sh");
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self { url, child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start");
    }

    pub async fn stop(&mut self) {
        self.child.kill().await.unwrap();
    }
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through ./scripts/test.sh")
}

pub async fn connect() -> Db {
    let options = PoolOptions {
        max_connections: 4,
        ..PoolOptions::default()
    };
    Db::connect(&database_url(), options)
        .await
        .expect("cannot connect to DATABASE_URL")
}

/// A gamify-api served on an ephemeral port for the duration of one test.
pub struct TestServer {
    pub base_url: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub db: Db,
    shutdown: CancellationToken,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(connect().await, settings()).await
    }

    pub async fn with_settings(settings: Settings) -> Self {
        Self::start_with(connect().await, settings).await
    }

    pub async fn start_with(db: Db, settings: Settings) -> Self {
        Self::start_on(db, settings, Arc::new(gamify_api::clock::SystemClock)).await
    }

    /// A server whose wall clock is `clock` (the real broker, Redis and Postgres otherwise).
    pub async fn with_clock(settings: Settings, clock: Arc<dyn WallClock>) -> Self {
        Self::start_on(connect().await, settings, clock).await
    }

    async fn start_on(db: Db, mut settings: Settings, clock: Arc<dyn WallClock>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        // The deployment's own origin is this server's, unless the test chose another.
        if settings.accounts.public_url == gamify_api::config::AccountSettings::default().public_url
        {
            settings.accounts.public_url = base_url.parse().unwrap();
        }
        let admin_token = settings.admin_token.value.clone();
        let shutdown = CancellationToken::new();
        let producer = gamify_api::ingest::producer::EventProducer::new(
            &settings.kafka_brokers,
            &settings.kafka_topic,
            &settings.kafka_producer_properties,
            &settings.envelope_secret,
            settings.produce_timeout,
        )
        .unwrap();
        let state = AppState::with_parts(
            db.clone(),
            &settings,
            &shutdown,
            Arc::new(producer),
            Arc::new(db.clone()),
            clock,
        )
        .unwrap();
        tokio::spawn(gamify_api::serve(listener, state, shutdown.clone()));
        Self {
            base_url,
            admin_token,
            client: reqwest::Client::new(),
            db,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.admin_token)
    }

    pub async fn create_organization(&self) -> Value {
        let response = self
            .admin(Method::POST, "/v1/organizations")
            .json(&json!({ "name": format!("org {}", uuid::Uuid::new_v4()) }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await
    }

    /// A new project in a new organization.
    pub async fn create_project(&self) -> Value {
        let organization = self.create_organization().await;
        self.create_project_in(organization["id"].as_str().unwrap(), "Web shop")
            .await
    }

    /// A project named `name` in an existing organization (with the admin token).
    pub async fn create_project_in(&self, organization_id: &str, name: &str) -> Value {
        let response = self
            .admin(Method::POST, "/v1/projects")
            .json(&json!({ "organizationId": organization_id, "name": name }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await
    }

    /// Sends a track call with `key`.
    pub async fn track(&self, key: &str, body: Value) -> Response {
        self.request(Method::POST, "/v1/events/track")
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A project with one publishable and one secret key: (project id, pk, sk).
    pub async fn project_with_keys(&self) -> (String, String, String) {
        let project = self.create_project().await;
        let id = project["id"].as_str().unwrap().to_owned();
        let pk = self.create_key(&id, "publishable").await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let sk = self.create_key(&id, "secret").await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        (id, pk, sk)
    }

    /// `DELETE /v1/projects/{project}/api-keys/{key["id"]}`.
    pub async fn revoke_key(&self, project_id: &str, key: &Value) -> Response {
        let path = format!(
            "/v1/projects/{project_id}/api-keys/{}",
            key["id"].as_str().unwrap()
        );
        self.admin(Method::DELETE, &path).send().await.unwrap()
    }

    /// `POST /v1/projects/{project}/api-keys/{key["id"]}/roll` with `body`, or with no body.
    pub async fn roll_key(&self, project_id: &str, key: &Value, body: Option<Value>) -> Response {
        let path = format!(
            "/v1/projects/{project_id}/api-keys/{}/roll",
            key["id"].as_str().unwrap()
        );
        let request = self.admin(Method::POST, &path);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    pub async fn create_key(&self, project_id: &str, key_type: &str) -> Value {
        let response = self
            .admin(Method::POST, &format!("/v1/projects/{project_id}/api-keys"))
            .json(&json!({ "name": "Website", "type": key_type }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The JSON body, after checking the status (and showing the body when it is not the expected one).
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Checks an error response: status, JSON shape and code.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_json(response, status).await;
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    body
}

/// A wall clock that moves only when told, for what depends on the time of day.
pub struct ManualClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl ManualClock {
    /// Starting at the real time, so what the database stamps stays comparable.
    pub fn now_real() -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(chrono::Utc::now())))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::from_std(by).unwrap();
    }
}

impl WallClock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}
