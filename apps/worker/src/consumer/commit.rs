//! Offset commits: after a batch is stored, in order, off the async threads.

use std::{collections::BTreeMap, sync::Arc};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    error::KafkaError,
};

use crate::check::Record;

use super::Loop;

impl Loop {
    /// Commits the offset after the last message of every partition in the batch. A failure is
    /// logged, not retried: the messages come again and dedup absorbs them. The commit runs while
    /// the next batch is written; the one before it is awaited first, so commits stay in order.
    pub(super) async fn commit(&mut self, batch: &[Record]) {
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

pub(super) fn log_commit_failure(err: &KafkaError) {
    tracing::warn!(error = %err,
        "cannot commit offsets (partitions may have moved to another worker); the batch will be redelivered and deduplicated");
}
