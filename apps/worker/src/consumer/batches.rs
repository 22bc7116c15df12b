//! Batch collection: the next batch is read and its signatures checked while the loop still writes
//! the previous one.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    check::{self, Record},
    config::Config,
};

use super::{KafkaConsumer, MIN_BACKOFF, kafka::record};

/// A batch as the collector hands it over: every record, the envelopes whose signature held (by
/// index into `records`), and the records set aside with the reason.
#[derive(Default)]
pub struct Batch {
    pub(super) records: Vec<Record>,
    pub(super) envelopes: Vec<(usize, Arc<gamify_common::Envelope>)>,
    pub(super) dead: Vec<(Record, String)>,
}

/// Reads and decodes the next batch while the loop is still writing the previous one, so the
/// consumer's fetches and the signature checks overlap with Postgres instead of waiting for it.
///
/// A batch closes when it holds `batch_size` messages or `batch_max_wait` after its first one,
/// and is handed over as soon as the writer can take it. While the writer is still busy, a closed
/// batch keeps growing up to `batch_size`: under a backlog batches grow by themselves (fewer,
/// larger transactions per project), and when traffic is light they stay small and prompt. One
/// decoded batch at most waits in the channel, so memory stays bounded and a stop abandons little.
pub(super) async fn collect_batches(
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
    pub(super) fn push(&mut self, record: Record, signer: &gamify_common::envelope::Signer) {
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
