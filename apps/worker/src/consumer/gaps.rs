//! Noticing a broker that skips messages: each partition's offsets must follow on.

use std::{collections::HashSet, sync::Arc, time::Duration};

use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};

use crate::{
    check::Record,
    metrics::{self as m, Stats},
};

use super::Loop;

impl Loop {
    /// Warns when a partition's messages do not start at the committed offset or skip offsets.
    /// Kafka leaves gaps only on compacted or transactional topics, which the events topic is not;
    /// a gap here means the broker skipped messages (see the broker note in docs/WORKER.md) and they will
    /// not be stored unless re-produced.
    pub(super) async fn check_gaps(&mut self, batch: &[Record]) {
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
}
