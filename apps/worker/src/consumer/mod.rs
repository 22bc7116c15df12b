//! The consumer loop: collect a batch, re-check it, persist it per project, dead-letter what cannot
//! be stored, and only then commit the batch's offsets (at-least-once delivery; the messageId dedup
//! in Postgres turns it into exactly-once storage).

mod batches;
mod chunks;
mod commit;
mod gaps;
pub(crate) mod kafka;

use batches::{Batch, collect_batches};
use chunks::{Chunk, chunks};
pub use kafka::{Context, KafkaConsumer, consumer, consumer_config};

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use gamify_db::Db;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    check::{self, Record, Sources, Verdict},
    config::Config,
    dlq::DeadLetters,
    error::Result,
    liveness::Liveness,
    metrics::{self as m, Stats},
    persist::{self, Item, Outcome, Status},
    stage::Stage,
};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long a stopping worker waits for its last offset commit.
const LAST_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Loop {
    pub config: Config,
    pub db: Db,
    pub consumer: Arc<KafkaConsumer>,
    /// None when the stage leaves dead letters to another consumer group.
    pub dead_letters: Option<DeadLetters>,
    pub stage: Arc<dyn Stage>,
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
            let Some(dead_letters) = &self.dead_letters else {
                break;
            };
            match dead_letters.send(&dead).await {
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
        let facts = self
            .sources
            .load(&self.db, pending.iter().map(|(_, envelope)| &**envelope))
            .await
            .map_err(Retry)?;

        let mut groups: BTreeMap<Uuid, Vec<(usize, Item)>> = BTreeMap::new();
        let mut total = 0;
        for (index, envelope) in pending {
            let record = &batch[*index];
            let status = match check::judge(envelope, &facts) {
                Verdict::Processed => Status::Processed,
                Verdict::Failed(details) => {
                    tracing::warn!(project_id = %envelope.project_id, partition = record.partition,
                        offset = record.offset, message_id = %envelope.message_id, %details,
                        "storing event as failed");
                    Status::Failed(details)
                }
                Verdict::DeadLetter(reason) if !self.stage.stores_events() => {
                    Status::Failed(reason)
                }
                Verdict::DeadLetter(reason) => {
                    tracing::warn!(project_id = %envelope.project_id, partition = record.partition,
                        offset = record.offset, %reason, "dead-lettering a message");
                    dead.push((record.clone(), reason));
                    done.insert(*index);
                    continue;
                }
            };
            let key_type = check::stored_key_type(envelope, &facts);
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
        let stage = Arc::clone(&self.stage);
        let chunks = chunks(groups, total, self.config.db_concurrency, |item| {
            stage.shard_key(item)
        });

        // Each share on a task of its own: the stage's CPU work (the engine's rule evaluation)
        // runs on every core while other shares wait for Postgres, not in turn on this task.
        // The tasks are aborted with this future: a batch given up at a stop is rolled back, not
        // left to commit on its own after the loop has gone.
        let results: Vec<(Chunk, Result<Outcome, sea_orm::DbErr>)> = futures::stream::iter(chunks)
            .map(|chunk| {
                let db = self.db.clone();
                let stage = Arc::clone(&self.stage);
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let refs: Vec<&Item> = chunk.1.iter().map(|(_, item)| item).collect();
                    let result = stage.apply(&db, chunk.0, &refs).await;
                    (chunk, result)
                }))
            })
            .buffer_unordered(self.config.db_concurrency)
            .map(|joined| match joined {
                Ok(done) => done,
                // A share's panic is this loop's, as it was before shares had tasks of their own.
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            })
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
                match self.stage.apply(&self.db, project_id, &[item]).await {
                    Ok(outcome) => {
                        self.record(project_id, outcome);
                        done.insert(*index);
                    }
                    Err(err) if persist::is_transient(&err) => return Err(Retry(err)),
                    Err(err) => {
                        // Deterministic: the same message fails the same way every time, so it
                        // is set aside at once and the partition moves on.
                        let sqlstate = persist::sqlstate(&err).unwrap_or_else(|| "none".to_owned());
                        if !self.stage.stores_events() {
                            tracing::error!(project_id = %project_id, partition = record.partition,
                                offset = record.offset, %sqlstate, error = %err, stage = self.stage.name(),
                                "Postgres rejected an event; skipping it (the storage worker dead-letters what it cannot store)");
                            done.insert(*index);
                            continue;
                        }
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
}
