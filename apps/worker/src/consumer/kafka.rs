//! The Kafka side of the loop: the consumer and its configuration, its context (statistics into
//! metrics, rebalances into the liveness check), and a message turned into an owned record.

use std::sync::{Arc, atomic::Ordering};

use gamify_common::ConfigError;
use rdkafka::{
    ClientConfig, ClientContext, Message,
    consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer},
    message::{BorrowedMessage, Headers},
    statistics::Statistics,
};

use crate::{
    check::Record,
    config::Config,
    error::{Result, client_config_error},
    liveness::Liveness,
    metrics::{self as m, Stats},
};

pub struct Context {
    stats: Arc<Stats>,
    liveness: Arc<Liveness>,
    topic: String,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        // librdkafka computes the lag from the broker's high watermark and our committed offset.
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut total = 0;
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                total += stats.consumer_lag;
                metrics::gauge!(m::LAG, "topic" => self.topic.clone(), "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
        self.liveness.set_lag(total);
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.stats
                    .assigned
                    .store(partitions.len() as u64, Ordering::Relaxed);
                tracing::info!(?partitions, "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.stats.assigned.store(0, Ordering::Relaxed);
                for partition in &partitions {
                    // A revoked partition's lag is another worker's to report now.
                    metrics::gauge!(m::LAG, "topic" => self.topic.clone(), "partition" => partition.to_string())
                        .set(0.0);
                }
                tracing::info!(?partitions, "partitions revoked");
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "rebalance failed"),
        }
    }
}

pub type KafkaConsumer = StreamConsumer<Context>;

/// Consumer properties `KAFKA_CONSUMER_PROPERTIES` may not set: their own variables set them, or
/// at-least-once delivery depends on them.
const FIXED_CONSUMER_PROPERTIES: [(&str, &str); 4] = [
    ("bootstrap.servers", "set by KAFKA_BROKERS"),
    ("group.id", "set by KAFKA_GROUP_ID"),
    (
        "enable.auto.commit",
        "offsets are committed after Postgres commits",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed after Postgres commits",
    ),
];

/// The consumer's librdkafka configuration: the defaults below, then `KAFKA_CONSUMER_PROPERTIES`
/// (e.g. SASL/TLS for a managed Kafka, `broker.address.family=v4`).
pub fn consumer_config(config: &Config) -> Result<ClientConfig> {
    const VARIABLE: &str = "KAFKA_CONSUMER_PROPERTIES";
    let session_ms = config.session_timeout.as_millis();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("group.id", &config.group_id)
        .set("client.id", "gamify-worker")
        // Offsets are committed by hand, after Postgres has committed the events they cover.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the oldest retained message: the dedup table makes re-reading
        // harmless, skipping would lose events.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // librdkafka prefetches up to 64 MB per partition by default: hundreds of MB with a
        // backlog. 4 MB per partition still holds many batches of WORKER_BATCH_SIZE.
        .set("queued.max.messages.kbytes", "4096")
        // librdkafka waits up to 500 ms for a fetch to fill by default: most of the accepted →
        // stored latency when traffic is light (docs/BENCHMARKS.md).
        .set("fetch.wait.max.ms", "50")
        // With the prefetch queue bounded as above, librdkafka pauses a partition's fetching for
        // this long whenever the queue is full: 1 s by default, which held a backlog's drain to
        // ~15k events/s while the writer sat idle 80 % of the time (docs/BENCHMARKS.md).
        .set("fetch.queue.backoff.ms", "10")
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 3).max(100).to_string(),
        )
        .set(
            "statistics.interval.ms",
            config.lag_interval.as_millis().to_string(),
        );
    for (key, value) in &config.kafka_consumer_properties {
        if let Some((_, why)) = FIXED_CONSUMER_PROPERTIES
            .iter()
            .find(|(name, _)| name == key)
        {
            return Err(
                ConfigError::invalid(VARIABLE, format!("{key} cannot be set here: {why}")).into(),
            );
        }
        client.set(key, value);
    }
    Ok(client)
}

pub fn consumer(
    config: &Config,
    stats: Arc<Stats>,
    liveness: Arc<Liveness>,
) -> Result<KafkaConsumer> {
    let consumer: KafkaConsumer = consumer_config(config)?
        .create_with_context(Context {
            stats,
            liveness,
            topic: config.topic.clone(),
        })
        .map_err(|err| {
            client_config_error(
                "KAFKA_CONSUMER_PROPERTIES",
                &config.kafka_consumer_properties,
                err,
            )
        })?;
    consumer.subscribe(&[&config.topic])?;
    Ok(consumer)
}

pub(super) fn record(message: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn config(consumer: &[(&str, &str)], producer: &[(&str, &str)]) -> Config {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Config {
            database_url: "postgres://gamify_app@127.0.0.1/gamify".into(),
            kafka_brokers: "127.0.0.1:9".into(),
            topic: "t".into(),
            dlq_topic: "t.dlq".into(),
            group_id: "g".into(),
            envelope_secret: "x".repeat(32),
            batch_size: 500,
            batch_max_wait: Duration::from_millis(200),
            db_concurrency: 4,
            port: 0,
            source_cache_ttl: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            lag_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            kafka_consumer_properties: owned(consumer),
            kafka_producer_properties: owned(producer),
            batch_timeout: Duration::from_secs(60),
            analytics_rollups: true,
            shutdown_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(120),
            statement_timeout: Duration::from_secs(30),
            retention_months: None,
        }
    }

    fn liveness() -> Arc<Liveness> {
        Arc::new(Liveness::new(Duration::from_secs(120)))
    }

    #[tokio::test]
    async fn consumer_properties_reach_the_client_over_the_defaults() {
        let config = config(
            &[
                ("fetch.min.bytes", "4321"),
                ("client.id", "custom"),
                ("broker.address.family", "v6"),
            ],
            &[],
        );
        let client = consumer_config(&config).unwrap();
        let native = client.create_native_config().unwrap();
        assert_eq!(native.get("fetch.min.bytes").unwrap(), "4321");
        assert_eq!(native.get("client.id").unwrap(), "custom");
        assert_eq!(native.get("broker.address.family").unwrap(), "v6");
        // Offsets stay manual.
        assert_eq!(native.get("enable.auto.commit").unwrap(), "false");
        let _consumer = consumer(&config, Arc::default(), liveness()).unwrap();
    }

    #[test]
    fn ipv4_is_not_forced() {
        let client = consumer_config(&config(&[], &[])).unwrap();
        assert_eq!(client.get("broker.address.family"), None);
        let native = client.create_native_config().unwrap();
        assert_eq!(native.get("broker.address.family").unwrap(), "any");
        assert_eq!(native.get("fetch.queue.backoff.ms").unwrap(), "10");
    }

    #[tokio::test]
    async fn a_refused_property_names_the_variable() {
        let err = consumer(
            &config(&[("no.such.property", "1")], &[]),
            Arc::default(),
            liveness(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("KAFKA_CONSUMER_PROPERTIES") && err.contains("no.such.property"),
            "{err}"
        );

        let err = consumer(
            &config(&[("security.protocol", "bogus")], &[]),
            Arc::default(),
            liveness(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("KAFKA_CONSUMER_PROPERTIES") && err.contains("security.protocol"),
            "{err}"
        );

        for fixed in ["enable.auto.commit", "group.id"] {
            let err = consumer_config(&config(&[(fixed, "true")], &[]))
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("KAFKA_CONSUMER_PROPERTIES") && err.contains(fixed),
                "{err}"
            );
        }
    }
}
