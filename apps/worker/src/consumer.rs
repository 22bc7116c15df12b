//! The consumer loop: collect a batch, re-check it, persist it per project, dead-letter what cannot
//! be stored, and only then commit the batch's offsets (at-least-once delivery; the messageId dedup
//! in Postgres turns it into exactly-once storage).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use gamify_common::ConfigError;
use gamify_db::Db;
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
    statistics::Statistics,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    check::{self, Record, Sources, Verdict},
    config::Config,
    dlq::DeadLetters,
    error::{Result, client_config_error},
    liveness::Liveness,
    metrics::{self as m, Stats},
    persist::{self, Item, Outcome, Status},
};

const MIN_BACKOFF: Duration = Duration::from_millis(100);

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

fn record(message: &BorrowedMessage<'_>) -> Record {
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

pub struct Loop {
    pub config: Config,
    pub db: Db,
    pub consumer: Arc<KafkaConsumer>,
    pub dead_letters: DeadLetters,
    pub sources: Sources,
    pub stats: Arc<Stats>,
    /// Next offset expected per partition, to notice a broker that skips messages.
    pub expected: HashMap<(String, i32), i64>,
    /// `stats.rebalances` when `expected` was last valid: a rebalance moves positions.
    pub generation: u64,
    pub liveness: Arc<Liveness>,
}

/// Why a round of persisting did not finish the batch: Postgres is unreachable or failing in a
/// way that passes, and nothing about the messages is wrong.
struct Retry(sea_orm::DbErr);

impl Loop {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let grace = self.config.shutdown_timeout;
        let liveness = Arc::clone(&self.liveness);
        while !shutdown.is_cancelled() {
            liveness.beat();
            let batch = self.collect(&shutdown).await;
            if batch.is_empty() {
                continue;
            }
            liveness.set_busy(true);
            let span = tracing::info_span!("batch", size = batch.len());
            let processing = self.process(batch, &shutdown).instrument(span);
            // Once a stop is asked for, the batch in flight gets the grace period and no more,
            // whatever it is waiting on: abandoned uncommitted, it is redelivered and deduplicated.
            let deadline = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                () = processing => {}
                () = deadline => {
                    tracing::warn!(grace_ms = grace.as_millis() as u64,
                        "stopping with a batch still in flight after the grace period; its offsets stay uncommitted and it will be redelivered");
                    break;
                }
            }
            liveness.set_busy(false);
        }
        Ok(())
    }

    /// Up to `batch_size` messages, or what arrived within `batch_max_wait` of the first one.
    async fn collect(&self, shutdown: &CancellationToken) -> Vec<Record> {
        let mut batch = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        while batch.len() < self.config.batch_size {
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = timeout => break,
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        batch.push(record(&message));
                        if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + self.config.batch_max_wait);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "consumer error");
                        tokio::time::sleep(MIN_BACKOFF).await;
                    }
                },
            }
        }
        batch
    }

    async fn process(&mut self, batch: Vec<Record>, shutdown: &CancellationToken) {
        let started = Instant::now();
        m::Stats::add(&self.stats.consumed, batch.len() as u64);
        metrics::counter!(m::CONSUMED).increment(batch.len() as u64);
        metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
        self.check_gaps(&batch).await;

        let secret = self.config.envelope_secret.as_bytes();
        let mut dead: Vec<(Record, String)> = Vec::new();
        let mut envelopes = Vec::with_capacity(batch.len());
        for (index, record) in batch.iter().enumerate() {
            match check::decode(secret, record) {
                Ok(envelope) => envelopes.push((index, envelope)),
                Err(reason) => {
                    tracing::warn!(partition = record.partition, offset = record.offset, %reason, "dead-lettering a message");
                    dead.push((record.clone(), reason));
                }
            }
        }

        let mut done = HashSet::new();
        let mut backoff = MIN_BACKOFF;
        loop {
            self.liveness.beat();
            let round = tokio::time::timeout(
                self.config.batch_timeout,
                self.persist_round(&batch, &envelopes, &mut done, &mut dead),
            )
            .await;
            self.liveness.beat();
            let Retry(err) = match round {
                Ok(Ok(())) => break,
                Ok(Err(retry)) => retry,
                // Statement timeouts bound each query; this bounds the attempt as a whole.
                Err(_) => Retry(sea_orm::DbErr::Custom(format!(
                    "persisting the batch took longer than {} ms",
                    self.config.batch_timeout.as_millis()
                ))),
            };
            m::Stats::add(&self.stats.db_retries, 1);
            metrics::counter!(m::DB_RETRIES).increment(1);
            tracing::error!(error = %err, retry_in_ms = backoff.as_millis() as u64,
                "cannot persist the batch: Postgres is failing; keeping the batch and retrying, no offsets committed");
            if !self.pause(&mut backoff, shutdown).await {
                tracing::warn!(
                    "stopping with an unfinished batch: its offsets stay uncommitted and it will be redelivered"
                );
                return;
            }
        }

        let mut backoff = MIN_BACKOFF;
        while !dead.is_empty() {
            match self.dead_letters.send(&dead).await {
                Ok(()) => {
                    m::Stats::add(&self.stats.dead_lettered, dead.len() as u64);
                    metrics::counter!(m::DEAD_LETTERED).increment(dead.len() as u64);
                    break;
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot produce to the dead-letter topic; retrying, no offsets committed");
                    if !self.pause(&mut backoff, shutdown).await {
                        tracing::warn!(
                            "stopping with an unfinished batch: its offsets stay uncommitted and it will be redelivered"
                        );
                        return;
                    }
                }
            }
        }

        self.commit(&batch).await;
        m::Stats::add(&self.stats.batches, 1);
        metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
    }

    /// Warns when a partition's messages do not start at the committed offset or skip offsets.
    /// Kafka leaves gaps only on compacted or transactional topics, which the events topic is not;
    /// a gap here means the broker skipped messages (see the broker note in docs/WORKER.md) and they will
    /// not be stored unless re-produced.
    async fn check_gaps(&mut self, batch: &[Record]) {
        let generation = Stats::get(&self.stats.rebalances);
        if generation != self.generation {
            self.expected.clear();
            self.generation = generation;
        }
        let mut unknown = TopicPartitionList::new();
        let mut listed = HashSet::new();
        for record in batch {
            let key = (record.topic.clone(), record.partition);
            if !self.expected.contains_key(&key) && listed.insert(key) {
                unknown.add_partition(&record.topic, record.partition);
            }
        }
        if unknown.count() > 0 {
            let consumer = Arc::clone(&self.consumer);
            let committed = tokio::task::spawn_blocking(move || {
                consumer.committed_offsets(unknown, Duration::from_secs(5))
            })
            .await;
            match committed {
                Ok(Ok(list)) => {
                    for element in list.elements() {
                        if let Offset::Offset(offset) = element.offset() {
                            self.expected
                                .insert((element.topic().to_owned(), element.partition()), offset);
                        }
                    }
                }
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "cannot read committed offsets for the gap check");
                }
                Err(err) => tracing::debug!(error = %err, "committed offsets task failed"),
            }
        }
        for record in batch {
            let key = (record.topic.clone(), record.partition);
            if let Some(&expected) = self.expected.get(&key) {
                if record.offset > expected {
                    m::Stats::add(&self.stats.offset_gaps, 1);
                    metrics::counter!(m::OFFSET_GAPS).increment(1);
                    tracing::error!(
                        partition = record.partition,
                        expected,
                        offset = record.offset,
                        skipped = record.offset - expected,
                        "the broker skipped messages: offsets between the expected and the received one were never delivered"
                    );
                }
            }
            self.expected.insert(key, record.offset + 1);
        }
    }

    /// Sleeps for the current backoff, doubling it up to the cap. False when shutting down, because
    /// a batch that cannot be finished is better redelivered than waited for.
    async fn pause(&self, backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
        if shutdown.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(self.config.max_backoff);
        true
    }

    /// One attempt at storing everything in `envelopes` not yet `done`. Projects already committed
    /// in an earlier round are skipped; even if they were not, dedup would make that a no-op.
    async fn persist_round(
        &mut self,
        batch: &[Record],
        envelopes: &[(usize, gamify_common::Envelope)],
        done: &mut HashSet<usize>,
        dead: &mut Vec<(Record, String)>,
    ) -> Result<(), Retry> {
        let pending: Vec<&(usize, gamify_common::Envelope)> = envelopes
            .iter()
            .filter(|(index, _)| !done.contains(index))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        self.sources
            .load(&self.db, pending.iter().map(|(_, envelope)| envelope))
            .await
            .map_err(Retry)?;

        let mut groups: BTreeMap<Uuid, Vec<(usize, Item)>> = BTreeMap::new();
        for (index, envelope) in pending {
            let record = &batch[*index];
            let status = match check::judge(envelope, &self.sources) {
                Verdict::Processed => Status::Processed,
                Verdict::Failed(details) => {
                    tracing::warn!(project_id = %envelope.project_id, partition = record.partition,
                        offset = record.offset, message_id = %envelope.message_id, %details,
                        "storing event as failed");
                    Status::Failed(details)
                }
                Verdict::DeadLetter(reason) => {
                    tracing::warn!(project_id = %envelope.project_id, partition = record.partition,
                        offset = record.offset, %reason, "dead-lettering a message");
                    dead.push((record.clone(), reason));
                    done.insert(*index);
                    continue;
                }
            };
            let key_type = check::stored_key_type(envelope, &self.sources);
            groups.entry(envelope.project_id).or_default().push((
                *index,
                Item {
                    envelope: envelope.clone(),
                    status,
                    key_type,
                },
            ));
        }

        for (project_id, items) in groups {
            let refs: Vec<&Item> = items.iter().map(|(_, item)| item).collect();
            match persist::persist_project(&self.db, project_id, &refs).await {
                Ok(outcome) => {
                    self.record(project_id, outcome);
                    done.extend(items.iter().map(|(index, _)| *index));
                }
                Err(err) if persist::is_transient(&err) => return Err(Retry(err)),
                Err(err) => {
                    tracing::warn!(project_id = %project_id, error = %err,
                        "Postgres rejected the project's batch; storing its events one at a time");
                    for (index, item) in &items {
                        let record = &batch[*index];
                        match persist::persist_project(&self.db, project_id, &[item]).await {
                            Ok(outcome) => {
                                self.record(project_id, outcome);
                                done.insert(*index);
                            }
                            Err(err) if persist::is_transient(&err) => return Err(Retry(err)),
                            Err(err) => {
                                // Deterministic: the same message fails the same way every time,
                                // so it is set aside at once and the partition moves on.
                                let sqlstate =
                                    persist::sqlstate(&err).unwrap_or_else(|| "none".to_owned());
                                tracing::error!(project_id = %project_id, partition = record.partition,
                                    offset = record.offset, %sqlstate, error = %err,
                                    "Postgres rejected an event; dead-lettering it");
                                dead.push((
                                    record.clone(),
                                    format!("rejected by Postgres (SQLSTATE {sqlstate}): {err}"),
                                ));
                                done.insert(*index);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn record(&self, project_id: Uuid, outcome: Outcome) {
        m::Stats::add(&self.stats.persisted, outcome.processed);
        m::Stats::add(&self.stats.failed, outcome.failed);
        m::Stats::add(&self.stats.duplicates, outcome.duplicates);
        metrics::counter!(m::PERSISTED).increment(outcome.processed);
        metrics::counter!(m::FAILED).increment(outcome.failed);
        metrics::counter!(m::DUPLICATES).increment(outcome.duplicates);
        tracing::debug!(project_id = %project_id, processed = outcome.processed,
            failed = outcome.failed, duplicates = outcome.duplicates, "project batch committed");
    }

    /// Commits the offset after the last message of every partition in the batch. A failure is
    /// logged, not retried: the messages come again and dedup absorbs them.
    async fn commit(&self, batch: &[Record]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for record in batch {
            let offset = next
                .entry((record.topic.as_str(), record.partition))
                .or_insert(0);
            *offset = (*offset).max(record.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(err) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(error = %err, partition, offset, "cannot build offset commit");
            }
        }
        let consumer = Arc::clone(&self.consumer);
        // A synchronous commit blocks on the broker; keep it off the async threads.
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {
                tracing::debug!(offsets = ?next, "offsets committed");
            }
            Ok(Err(err)) => log_commit_failure(&err),
            Err(err) => tracing::warn!(error = %err, "offset commit task failed"),
        }
    }
}

fn log_commit_failure(err: &KafkaError) {
    tracing::warn!(error = %err,
        "cannot commit offsets (partitions may have moved to another worker); the batch will be redelivered and deduplicated");
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
            port: 0,
            source_cache_ttl: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            lag_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            kafka_consumer_properties: owned(consumer),
            kafka_producer_properties: owned(producer),
            batch_timeout: Duration::from_secs(60),
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
