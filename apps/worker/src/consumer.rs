//! The consumer loop: collect a batch, re-check it, persist it per project, dead-letter what cannot
//! be stored, and only then commit the batch's offsets (at-least-once delivery; the messageId dedup
//! in Postgres turns it into exactly-once storage).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use gamify_common::ConfigError;
use gamify_db::Db;
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
    statistics::Statistics,
};
use tokio::sync::mpsc;
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
/// How long a stopping worker waits for its last offset commit.
const LAST_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The previous batch's offset commit, still on its way to the broker.
    pub pending_commit: Option<tokio::task::JoinHandle<()>>,
}

/// Why a round of persisting did not finish the batch: Postgres is unreachable or failing in a
/// way that passes, and nothing about the messages is wrong.
struct Retry(sea_orm::DbErr);

/// A batch as the collector hands it over: every record, the envelopes whose signature held (by
/// index into `records`), and the records set aside with the reason.
#[derive(Default)]
pub struct Batch {
    records: Vec<Record>,
    envelopes: Vec<(usize, Arc<gamify_common::Envelope>)>,
    dead: Vec<(Record, String)>,
}

/// Reads and decodes the next batch while the loop is still writing the previous one, so the
/// consumer's fetches and the signature checks overlap with Postgres instead of waiting for it.
///
/// A batch closes when it holds `batch_size` messages or `batch_max_wait` after its first one,
/// and is handed over as soon as the writer can take it. While the writer is still busy, a closed
/// batch keeps growing up to `batch_size`: under a backlog batches grow by themselves (fewer,
/// larger transactions per project), and when traffic is light they stay small and prompt. One
/// decoded batch at most waits in the channel, so memory stays bounded and a stop abandons little.
async fn collect_batches(
    consumer: Arc<KafkaConsumer>,
    config: Config,
    batches: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
) {
    let signer = gamify_common::envelope::Signer::new(config.envelope_secret.as_bytes());
    let mut batch = Batch::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut closed = false;
    loop {
        let full = batch.records.len() >= config.batch_size;
        let window = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            permit = batches.reserve(), if full || closed => {
                let Ok(permit) = permit else { return };
                permit.send(std::mem::take(&mut batch));
                deadline = None;
                closed = false;
            }
            () = window, if !closed && deadline.is_some() => closed = true,
            message = consumer.recv(), if !full => match message {
                Ok(message) => {
                    batch.push(record(&message), &signer);
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + config.batch_max_wait);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "consumer error");
                    tokio::time::sleep(MIN_BACKOFF).await;
                }
            },
        }
    }
}

impl Batch {
    /// Adds a message, checking its signature and decoding it on arrival.
    fn push(&mut self, record: Record, signer: &gamify_common::envelope::Signer) {
        match check::decode(signer, &record) {
            Ok(envelope) => self
                .envelopes
                .push((self.records.len(), Arc::new(envelope))),
            Err(reason) => {
                tracing::warn!(partition = record.partition, offset = record.offset, %reason, "dead-lettering a message");
                self.dead.push((record.clone(), reason));
            }
        }
        self.records.push(record);
    }
}

/// A share of one project's events, written in one transaction.
type Chunk = (Uuid, Vec<(usize, Item)>);

impl Loop {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let grace = self.config.shutdown_timeout;
        let liveness = Arc::clone(&self.liveness);
        let (sender, mut batches) = mpsc::channel(1);
        let collector = tokio::spawn(collect_batches(
            Arc::clone(&self.consumer),
            self.config.clone(),
            sender,
            shutdown.clone(),
        ));
        while !shutdown.is_cancelled() {
            liveness.beat();
            let waiting = Instant::now();
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = batches.recv() => match batch {
                    Some(batch) => batch,
                    None => break,
                },
            };
            metrics::histogram!(m::BATCH_WAIT_SECONDS).record(waiting.elapsed().as_secs_f64());
            liveness.set_busy(true);
            let span = tracing::info_span!("batch", size = batch.records.len());
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
        collector.abort();
        // The last batch's offsets reach the broker before the consumer leaves the group; a
        // broker that does not answer must not hold the exit (the batch is redelivered instead).
        if let Some(commit) = self.pending_commit.take() {
            if tokio::time::timeout(LAST_COMMIT_TIMEOUT, commit)
                .await
                .is_err()
            {
                tracing::warn!(
                    "the last offset commit did not finish in time; its batch will be redelivered and deduplicated"
                );
            }
        }
        Ok(())
    }

    async fn process(&mut self, batch: Batch, shutdown: &CancellationToken) {
        let started = Instant::now();
        let Batch {
            records: batch,
            envelopes,
            mut dead,
        } = batch;
        m::Stats::add(&self.stats.consumed, batch.len() as u64);
        metrics::counter!(m::CONSUMED).increment(batch.len() as u64);
        metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
        self.check_gaps(&batch).await;

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
    ///
    /// The batch is cut into chunks, one project each, a large project's events spread over
    /// several by messageId (so duplicates within the batch meet in one chunk), and up to
    /// `db_concurrency` chunks are written at once, each in its own tenant transaction: Postgres
    /// works on several cores and the commits' WAL flushes are shared instead of queued.
    async fn persist_round(
        &mut self,
        batch: &[Record],
        envelopes: &[(usize, Arc<gamify_common::Envelope>)],
        done: &mut HashSet<usize>,
        dead: &mut Vec<(Record, String)>,
    ) -> Result<(), Retry> {
        let pending: Vec<&(usize, Arc<gamify_common::Envelope>)> = envelopes
            .iter()
            .filter(|(index, _)| !done.contains(index))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        self.sources
            .load(&self.db, pending.iter().map(|(_, envelope)| &**envelope))
            .await
            .map_err(Retry)?;

        let mut groups: BTreeMap<Uuid, Vec<(usize, Item)>> = BTreeMap::new();
        let mut total = 0;
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
                    envelope: Arc::clone(envelope),
                    status,
                    key_type,
                },
            ));
            total += 1;
        }
        let chunks = chunks(groups, total, self.config.db_concurrency);

        let db = &self.db;
        let results: Vec<(Chunk, Result<Outcome, sea_orm::DbErr>)> = futures::stream::iter(chunks)
            .map(|chunk| async move {
                let refs: Vec<&Item> = chunk.1.iter().map(|(_, item)| item).collect();
                let result = persist::persist_project(db, chunk.0, &refs).await;
                (chunk, result)
            })
            .buffer_unordered(self.config.db_concurrency)
            .collect()
            .await;

        let mut retry = None;
        let mut rejected = Vec::new();
        for ((project_id, items), result) in results {
            match result {
                Ok(outcome) => {
                    self.record(project_id, outcome);
                    done.extend(items.iter().map(|(index, _)| *index));
                }
                Err(err) if persist::is_transient(&err) => retry = Some(err),
                Err(err) => {
                    tracing::warn!(project_id = %project_id, error = %err,
                        "Postgres rejected the project's batch; storing its events one at a time");
                    rejected.push((project_id, items));
                }
            }
        }
        if let Some(err) = retry {
            return Err(Retry(err));
        }
        for (project_id, items) in rejected {
            for (index, item) in &items {
                let record = &batch[*index];
                match persist::persist_project(&self.db, project_id, &[item]).await {
                    Ok(outcome) => {
                        self.record(project_id, outcome);
                        done.insert(*index);
                    }
                    Err(err) if persist::is_transient(&err) => return Err(Retry(err)),
                    Err(err) => {
                        // Deterministic: the same message fails the same way every time, so it
                        // is set aside at once and the partition moves on.
                        let sqlstate = persist::sqlstate(&err).unwrap_or_else(|| "none".to_owned());
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
    /// logged, not retried: the messages come again and dedup absorbs them. The commit runs while
    /// the next batch is written; the one before it is awaited first, so commits stay in order.
    async fn commit(&mut self, batch: &[Record]) {
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
        if let Some(previous) = self.pending_commit.take() {
            let _ = previous.await;
        }
        let consumer = Arc::clone(&self.consumer);
        // A synchronous commit blocks on the broker; keep it off the async threads.
        self.pending_commit = Some(tokio::task::spawn_blocking(move || {
            match consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => tracing::debug!(partitions = list.count(), "offsets committed"),
                Err(err) => log_commit_failure(&err),
            }
        }));
    }
}

fn log_commit_failure(err: &KafkaError) {
    tracing::warn!(error = %err,
        "cannot commit offsets (partitions may have moved to another worker); the batch will be redelivered and deduplicated");
}

/// Cuts a batch into chunks for concurrent writing: each project's events in one chunk, except
/// that a project holding more than its share of the batch (`total / concurrency`) is spread over
/// several by a hash of the messageId, so every copy of a messageId lands in the same chunk and is
/// deduplicated there.
fn chunks(
    groups: BTreeMap<Uuid, Vec<(usize, Item)>>,
    total: usize,
    concurrency: usize,
) -> Vec<Chunk> {
    let share = total.div_ceil(concurrency.max(1)).max(MIN_CHUNK);
    let mut chunks = Vec::new();
    for (project_id, items) in groups {
        let parts = items.len().div_ceil(share);
        if parts <= 1 {
            chunks.push((project_id, items));
            continue;
        }
        let mut split: Vec<Vec<(usize, Item)>> = (0..parts).map(|_| Vec::new()).collect();
        for (index, item) in items {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(item.envelope.message_id.as_str(), &mut hasher);
            let part = (std::hash::Hasher::finish(&hasher) % parts as u64) as usize;
            split[part].push((index, item));
        }
        chunks.extend(
            split
                .into_iter()
                .filter(|part| !part.is_empty())
                .map(|part| (project_id, part)),
        );
    }
    chunks
}

/// Below this many events a transaction's fixed cost (begin, tenant, commit) outweighs what
/// splitting gains.
const MIN_CHUNK: usize = 250;

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
            shutdown_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(120),
            statement_timeout: Duration::from_secs(30),
            retention_months: None,
        }
    }

    fn liveness() -> Arc<Liveness> {
        Arc::new(Liveness::new(Duration::from_secs(120)))
    }

    fn item(project_id: Uuid, message_id: &str) -> Item {
        let now = chrono::Utc::now();
        Item {
            envelope: Arc::new(gamify_common::Envelope {
                v: 1,
                id: Uuid::now_v7(),
                message_id: message_id.to_owned(),
                project_id,
                key_id: Uuid::nil(),
                key_type: gamify_common::KeyType::Publishable,
                trusted_events_version: Some(1),
                kind: gamify_common::ingest::Kind::Track,
                event: "page_view".into(),
                user_id: None,
                anonymous_id: Some("a".into()),
                properties: None,
                traits: None,
                occurred_at: now,
                received_at: now,
                context: Default::default(),
            }),
            status: Status::Processed,
            key_type: gamify_common::KeyType::Publishable,
        }
    }

    #[test]
    fn small_projects_stay_whole_and_a_large_one_is_spread_by_message_id() {
        let large = Uuid::now_v7();
        let small = Uuid::now_v7();
        let mut groups: BTreeMap<Uuid, Vec<(usize, Item)>> = BTreeMap::new();
        let mut index = 0;
        for n in 0..4000 {
            // Every messageId twice: both copies must meet in one chunk.
            for _ in 0..2 {
                groups
                    .entry(large)
                    .or_default()
                    .push((index, item(large, &format!("m{n}"))));
                index += 1;
            }
        }
        for n in 0..100 {
            groups
                .entry(small)
                .or_default()
                .push((index, item(small, &format!("s{n}"))));
            index += 1;
        }
        let chunks = chunks(groups, index, 4);

        let of = |project: Uuid| chunks.iter().filter(move |(p, _)| *p == project);
        assert_eq!(of(small).count(), 1);
        assert_eq!(of(small).map(|(_, items)| items.len()).sum::<usize>(), 100);
        let large_chunks: Vec<_> = of(large).collect();
        assert!(large_chunks.len() >= 3, "{}", large_chunks.len());
        assert_eq!(
            large_chunks
                .iter()
                .map(|(_, items)| items.len())
                .sum::<usize>(),
            8000
        );
        let mut home: HashMap<&str, usize> = HashMap::new();
        for (chunk, (_, items)) in large_chunks.iter().enumerate() {
            for (_, item) in items {
                let first = *home
                    .entry(item.envelope.message_id.as_str())
                    .or_insert(chunk);
                assert_eq!(first, chunk, "{} split", item.envelope.message_id);
            }
        }
        let mut indexes: Vec<usize> = chunks
            .iter()
            .flat_map(|(_, items)| items.iter().map(|(index, _)| *index))
            .collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..index).collect::<Vec<_>>());
    }

    #[test]
    fn one_transaction_per_project_when_concurrency_is_one() {
        let project = Uuid::now_v7();
        let items: Vec<(usize, Item)> = (0..3000)
            .map(|n| (n, item(project, &format!("m{n}"))))
            .collect();
        let mut groups = BTreeMap::new();
        groups.insert(project, items);
        assert_eq!(chunks(groups, 3000, 1).len(), 1);
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
