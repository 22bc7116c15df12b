//! Configuration, read once from the environment at start. Every error names its variable.

use std::time::Duration;

use gamify_common::config::{self, ConfigError};

/// Shorter secrets would make forging a signed envelope a matter of guessing.

#[derive(Clone)]
pub struct Config {
    /// Application role: row-level security applies to every tenant query.
    pub database_url: String,
    pub kafka_brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub envelope_secret: String,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    /// Transactions one batch is written with at once (its projects, and shares of a large
    /// project's events, in parallel).
    pub db_concurrency: usize,
    /// Port of `/metrics` and `/healthz`; 0 picks a free one.
    pub port: u16,
    /// How long a looked-up API key or project is trusted before it is read again.
    pub source_cache_ttl: Duration,
    pub session_timeout: Duration,
    /// How often the consumer-lag gauges are refreshed (librdkafka statistics).
    pub lag_interval: Duration,
    /// Longest pause between two attempts at persisting a batch while Postgres fails.
    pub max_backoff: Duration,
    /// librdkafka properties over the consumer's defaults (`KAFKA_CONSUMER_PROPERTIES`).
    pub kafka_consumer_properties: Vec<(String, String)>,
    /// librdkafka properties over the dead-letter producer's defaults (`KAFKA_PRODUCER_PROPERTIES`,
    /// the variable gamify-api's producer reads too).
    pub kafka_producer_properties: Vec<(String, String)>,
    /// Longest one attempt at persisting a batch may take before it is abandoned and retried.
    pub batch_timeout: Duration,
    /// Keep the analytics rollups (hourly counts and distinct-user sketches) in the transaction
    /// that stores the events; off (`WORKER_SKIP_ROLLUPS=1`) where analytics are served from
    /// elsewhere, and for the benchmark's baseline.
    pub analytics_rollups: bool,
    /// After a stop is asked for, how long the batch in flight may take before it is abandoned
    /// uncommitted (it is redelivered): shorter than the orchestrator's grace period.
    pub shutdown_timeout: Duration,
    /// `/healthz` fails when the consumer loop has not advanced for this long while work waits.
    pub stall_timeout: Duration,
    /// Postgres cancels any of the worker's statements that runs longer.
    pub statement_timeout: Duration,
    /// Months of events kept (`EVENT_RETENTION_MONTHS`); older months and their dedup keys are
    /// dropped daily. `None` keeps everything.
    pub retention_months: Option<u32>,
}

impl std::fmt::Debug for Config {
    // The database URL's password is redacted and the envelope secret, which signs messages, left
    // out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &config::redact_url(&self.database_url))
            .field("kafka_brokers", &self.kafka_brokers)
            .field("topic", &self.topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("group_id", &self.group_id)
            .field("batch_size", &self.batch_size)
            .field("batch_max_wait", &self.batch_max_wait)
            .field("db_concurrency", &self.db_concurrency)
            .field("port", &self.port)
            .field("source_cache_ttl", &self.source_cache_ttl)
            .field("session_timeout", &self.session_timeout)
            .field("lag_interval", &self.lag_interval)
            .field("batch_timeout", &self.batch_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("retention_months", &self.retention_months)
            .field(
                "kafka_consumer_properties",
                &config::redact_properties(&self.kafka_consumer_properties),
            )
            .field(
                "kafka_producer_properties",
                &config::redact_properties(&self.kafka_producer_properties),
            )
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = config::postgres_url("DATABASE_URL")?;
        let envelope_secret = config::envelope_secret()?;
        let batch_size: usize = config::parsed_in("WORKER_BATCH_SIZE", 5_000, 1..=100_000)?;
        let batch_ms: u64 = config::parsed_in("WORKER_BATCH_MS", 50, 1..=60_000)?;
        let db_concurrency: usize = config::parsed_in("WORKER_DB_CONCURRENCY", 4, 1..=64)?;
        let cache_ms: u64 = config::parsed_or("WORKER_SOURCE_CACHE_MS", 10_000)?;
        let session_ms: u64 =
            config::parsed_in("KAFKA_SESSION_TIMEOUT_MS", 10_000, 1_000..=300_000)?;
        let lag_ms: u64 = config::parsed_in("WORKER_LAG_INTERVAL_MS", 5_000, 100..=600_000)?;
        let batch_timeout_ms: u64 =
            config::parsed_in("WORKER_BATCH_TIMEOUT_MS", 60_000, 100..=3_600_000)?;
        let shutdown_ms: u64 =
            config::parsed_in("WORKER_SHUTDOWN_TIMEOUT_MS", 20_000, 100..=3_600_000)?;
        let stall_ms: u64 = config::parsed_in("WORKER_STALL_TIMEOUT_MS", 120_000, 100..=3_600_000)?;
        let statement_ms: u64 =
            config::parsed_in("WORKER_STATEMENT_TIMEOUT_MS", 30_000, 100..=3_600_000)?;
        let topic = config::kafka_topic()?;
        let dlq_topic =
            config::optional("KAFKA_DLQ_TOPIC")?.unwrap_or_else(|| "gamify.events.dlq".into());
        if topic == dlq_topic {
            return Err(ConfigError::invalid(
                "KAFKA_DLQ_TOPIC",
                "must differ from KAFKA_TOPIC",
            ));
        }
        Ok(Self {
            database_url,
            kafka_brokers: config::kafka_brokers()?,
            topic,
            dlq_topic,
            group_id: config::optional("KAFKA_GROUP_ID")?.unwrap_or_else(|| "gamify-worker".into()),
            envelope_secret,
            batch_size,
            batch_max_wait: Duration::from_millis(batch_ms),
            db_concurrency,
            port: config::parsed_or("WORKER_PORT", 3001)?,
            source_cache_ttl: Duration::from_millis(cache_ms),
            session_timeout: Duration::from_millis(session_ms),
            lag_interval: Duration::from_millis(lag_ms),
            max_backoff: Duration::from_secs(5),
            kafka_consumer_properties: config::kafka_properties("KAFKA_CONSUMER_PROPERTIES")?,
            kafka_producer_properties: config::kafka_properties("KAFKA_PRODUCER_PROPERTIES")?,
            batch_timeout: Duration::from_millis(batch_timeout_ms),
            analytics_rollups: !config::flag("WORKER_SKIP_ROLLUPS")?,
            shutdown_timeout: Duration::from_millis(shutdown_ms),
            stall_timeout: Duration::from_millis(stall_ms),
            statement_timeout: Duration::from_millis(statement_ms),
            retention_months: match config::optional("EVENT_RETENTION_MONTHS")? {
                None => None,
                Some(_) => Some(config::parsed_in("EVENT_RETENTION_MONTHS", 12, 1..=1200)?),
            },
        })
    }
}
