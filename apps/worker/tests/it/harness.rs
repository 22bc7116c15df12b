//! Shared set-up: tenant rows, private topics, signed envelopes, workers in-process or as processes.

use std::{future::Future, process::Stdio, sync::Arc, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use gamify_common::{
    Envelope, KeyType,
    envelope::{EnvelopeContext, SIGNATURE_HEADER, sign},
    ingest::Kind,
};
use gamify_db::{
    Db, PoolOptions,
    sea_orm::{ConnectionTrait, DbBackend, Statement},
};
use gamify_worker::{Config, Stats, Worker};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through ./scripts/test.sh"))
}

pub fn database_url() -> String {
    var("DATABASE_URL")
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn secret() -> String {
    var("ENVELOPE_SECRET")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub async fn connect(url: &str) -> Db {
    Db::connect(
        url,
        PoolOptions {
            max_connections: 4,
            ..PoolOptions::default()
        },
    )
    .await
    .unwrap()
}

/// One organization with one project and one key of each type.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    pub project: Uuid,
    pub publishable: Uuid,
    pub secret: Uuid,
}

impl Tenant {
    pub async fn create(db: &Db, trusted_events: &[&str]) -> Self {
        let org = Uuid::new_v4();
        let project = Uuid::new_v4();
        let publishable = Uuid::new_v4();
        let secret = Uuid::new_v4();
        let conn = db.shared();
        let sql = |sql: &str, values: Vec<gamify_db::sea_orm::Value>| {
            Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
        };
        conn.execute(sql(
            "INSERT INTO organizations (id, name) VALUES ($1, $2)",
            vec![org.into(), format!("org {org}").into()],
        ))
        .await
        .unwrap();
        conn.execute(sql(
            "INSERT INTO projects (id, organization_id, name, trusted_events) VALUES ($1, $2, $3, $4)",
            vec![
                project.into(),
                org.into(),
                "worker test".into(),
                json!(trusted_events).into(),
            ],
        ))
        .await
        .unwrap();
        for (id, key_type) in [(publishable, "publishable"), (secret, "secret")] {
            conn.execute(sql(
                "INSERT INTO api_keys (id, project_id, name, key_hash, prefix, type)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    id.into(),
                    project.into(),
                    key_type.into(),
                    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()).into(),
                    "pk_live_0000".into(),
                    key_type.into(),
                ],
            ))
            .await
            .unwrap();
        }
        Self {
            project,
            publishable,
            secret,
        }
    }

    pub fn key(&self, key_type: KeyType) -> Uuid {
        match key_type {
            KeyType::Publishable => self.publishable,
            KeyType::Secret => self.secret,
        }
    }

    pub fn track(&self, key_type: KeyType, event: &str, user: &str, properties: Value) -> Envelope {
        let now = Utc::now().trunc_subsecs(6);
        Envelope {
            v: 1,
            id: Uuid::now_v7(),
            message_id: Uuid::now_v7().to_string(),
            project_id: self.project,
            key_id: self.key(key_type),
            key_type,
            trusted_events_version: Some(1),
            kind: Kind::Track,
            event: event.to_owned(),
            user_id: Some(user.to_owned()),
            anonymous_id: None,
            properties: Some(object(properties)),
            traits: None,
            occurred_at: now - chrono::Duration::seconds(30),
            received_at: now,
            context: EnvelopeContext::default(),
        }
    }

    pub fn identify(&self, user: &str, traits: Value) -> Envelope {
        let mut envelope = self.track(KeyType::Secret, "$identify", user, json!({}));
        envelope.kind = Kind::Identify;
        envelope.properties = None;
        envelope.traits = Some(object(traits));
        envelope
    }

    /// Rows of `sql` (a count) as this tenant sees them through row-level security.
    pub async fn count(&self, db: &Db, sql: &str) -> i64 {
        let txn = db.tenant(self.project).await.unwrap();
        let row = txn
            .query_one(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get_by_index(0).unwrap();
        txn.commit().await.unwrap();
        n
    }

    pub async fn events(&self, db: &Db) -> i64 {
        self.count(db, "SELECT count(*) FROM events").await
    }

    pub async fn rows(&self, db: &Db) -> Vec<EventRow> {
        let txn = db.tenant(self.project).await.unwrap();
        let rows = txn
            .query_all(Statement::from_string(
                DbBackend::Postgres,
                "SELECT e.id, e.project_id, e.message_id, e.event_type, e.status, e.error_details,
                        e.occurred_at, e.processed_at, e.key_type, e.payload, u.external_id
                 FROM events e LEFT JOIN end_users u ON u.id = e.user_id
                 ORDER BY e.occurred_at, e.message_id",
            ))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        rows.into_iter()
            .map(|row| EventRow {
                id: row.try_get("", "id").unwrap(),
                project_id: row.try_get("", "project_id").unwrap(),
                message_id: row.try_get("", "message_id").unwrap(),
                event_type: row.try_get("", "event_type").unwrap(),
                status: row.try_get("", "status").unwrap(),
                error_details: row.try_get("", "error_details").unwrap(),
                occurred_at: row.try_get("", "occurred_at").unwrap(),
                processed_at: row.try_get("", "processed_at").unwrap(),
                key_type: row.try_get("", "key_type").unwrap(),
                payload: row.try_get("", "payload").unwrap(),
                user: row.try_get("", "external_id").unwrap(),
            })
            .collect()
    }

    pub async fn user_metadata(&self, db: &Db, external_id: &str) -> Option<Value> {
        let txn = db.tenant(self.project).await.unwrap();
        let row = txn
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT metadata FROM end_users WHERE external_id = $1",
                [external_id.into()],
            ))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        row.map(|row| row.try_get("", "metadata").unwrap())
    }
}

#[derive(Debug)]
pub struct EventRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub message_id: String,
    pub event_type: String,
    pub status: String,
    pub error_details: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub key_type: String,
    pub payload: Value,
    pub user: Option<String>,
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// This test's own topic, dead-letter topic and consumer group.
#[derive(Debug, Clone)]
pub struct Topics {
    pub topic: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    pub async fn create(partitions: i32) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let topics = Self {
            topic: format!("worker-test.{id}"),
            dlq: format!("worker-test.{id}.dlq"),
            group: format!("worker-test-{id}"),
        };
        gamify_dev_broker::create_topics(
            &brokers(),
            &[(&topics.topic, partitions), (&topics.dlq, 1)],
        )
        .await
        .unwrap();
        topics
    }

    /// Committed offsets of the group, summed over the topic's partitions (unset counts as 0).
    pub async fn committed(&self) -> i64 {
        let topics = self.clone();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&topics.group);
            let mut list = TopicPartitionList::new();
            for partition in partitions(&consumer, &topics.topic) {
                list.add_partition(&topics.topic, partition);
            }
            let committed = consumer
                .committed_offsets(list, Duration::from_secs(10))
                .unwrap();
            committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(n) => n,
                    _ => 0,
                })
                .sum()
        })
        .await
        .unwrap()
    }

    /// Commits `offset` for partition 0 on behalf of the group, as a worker would have.
    pub async fn commit(&self, offset: i64) {
        let topics = self.clone();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&topics.group);
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&topics.topic, 0, Offset::Offset(offset))
                .unwrap();
            consumer
                .commit(&list, rdkafka::consumer::CommitMode::Sync)
                .unwrap();
        })
        .await
        .unwrap();
    }

    /// Reads the dead-letter topic until `expected` messages arrived or `timeout` passed.
    pub async fn dead_letters(&self, expected: usize, timeout: Duration) -> Vec<DeadLetter> {
        let topic = self.dlq.clone();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&format!("reader-{}", Uuid::new_v4()));
            let mut list = TopicPartitionList::new();
            for partition in partitions(&consumer, &topic) {
                list.add_partition_offset(&topic, partition, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&list).unwrap();
            let deadline = std::time::Instant::now() + timeout;
            let mut letters = Vec::new();
            while letters.len() < expected && std::time::Instant::now() < deadline {
                if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                    let message = message.unwrap();
                    let headers = message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    letters.push(DeadLetter {
                        payload: message.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                }
            }
            letters
        })
        .await
        .unwrap()
    }
}

#[derive(Debug)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn reader(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect()
}

/// A raw message for the topic: the value and an optional signature header.
pub struct Raw {
    pub key: String,
    pub payload: Vec<u8>,
    pub signature: Option<String>,
}

impl Raw {
    pub fn signed(envelope: &Envelope) -> Self {
        let payload = serde_json::to_vec(envelope).unwrap();
        Self {
            key: envelope.partition_key(),
            signature: Some(sign(secret().as_bytes(), &payload)),
            payload,
        }
    }
}

pub async fn produce(topic: &str, messages: Vec<Raw>) {
    produce_with(topic, messages, "1").await;
}

/// `batch_messages` is librdkafka's `batch.num.messages`.
pub async fn produce_with(topic: &str, messages: Vec<Raw>, batch_messages: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("broker.address.family", "v4")
        .set("linger.ms", "20")
        // One record per batch (what `produce` asks for) makes every offset a batch start; it was
        // needed on Tansu 0.6, which skipped the rest of a batch when a fetch started inside one.
        // Neither Apache Kafka nor gamify-dev-broker needs it (the broker contract suite checks
        // resuming inside a batch); `produce_with` lets a test batch normally.
        .set("batch.num.messages", batch_messages)
        .create()
        .unwrap();
    for chunk in messages.chunks(500) {
        let sends = chunk.iter().map(|message| {
            let mut record = FutureRecord::to(topic)
                .key(message.key.as_bytes())
                .payload(message.payload.as_slice());
            if let Some(signature) = &message.signature {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: SIGNATURE_HEADER,
                    value: Some(signature.as_bytes()),
                }));
            }
            producer.send(record, Duration::from_secs(10))
        });
        for result in futures::future::join_all(sends).await {
            result.unwrap();
        }
    }
}

pub async fn produce_envelopes(topic: &str, envelopes: &[Envelope]) {
    produce(topic, envelopes.iter().map(Raw::signed).collect()).await;
}

pub fn config(topics: &Topics) -> Config {
    Config {
        database_url: database_url(),
        kafka_brokers: brokers(),
        topic: topics.topic.clone(),
        dlq_topic: topics.dlq.clone(),
        group_id: topics.group.clone(),
        envelope_secret: secret(),
        batch_size: 500,
        batch_max_wait: Duration::from_millis(50),
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

/// A worker running in this process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<gamify_worker::Result<()>>,
    pub stats: Arc<Stats>,
    pub addr: std::net::SocketAddr,
}

impl Running {
    pub async fn start(config: Config) -> Self {
        init_tracing();
        let worker = Worker::start(config).await.unwrap();
        let stats = worker.stats();
        let addr = worker.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        Self {
            shutdown,
            handle,
            stats,
            addr,
        }
    }

    pub async fn stop(self) -> Arc<Stats> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker did not stop within 30 s")
            .unwrap()
            .unwrap();
        self.stats
    }
}

pub fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    Stats::get(counter)
}

/// Polls `condition` every 100 ms until it holds, panicking with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker binary with this test's topics, reporting ready before it is returned.
pub async fn spawn_binary(topics: &Topics, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gamify-worker"));
    command
        .env_clear()
        .env("DATABASE_URL", database_url())
        .env("KAFKA_BROKERS", brokers())
        .env("KAFKA_TOPIC", &topics.topic)
        .env("KAFKA_DLQ_TOPIC", &topics.dlq)
        .env("KAFKA_GROUP_ID", &topics.group)
        .env("ENVELOPE_SECRET", secret())
        .env("WORKER_PORT", "0")
        .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("worker: {line}");
            if line.contains("consumer ready") {
                return;
            }
        }
        panic!("worker exited before reporting ready");
    })
    .await
    .expect("worker did not report ready");
    // Keep draining stdout so the worker never blocks on a full pipe; the test shows it on failure.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("worker: {line}");
        }
    });
    child
}

pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}
