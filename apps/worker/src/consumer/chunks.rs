//! Cutting a batch into per-project chunks that are written concurrently.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::persist::Item;

/// A share of one project's events, written in one transaction.
pub(super) type Chunk = (Uuid, Vec<(usize, Item)>);

/// Cuts a batch into chunks for concurrent writing: each project's events in one chunk, except
/// that a project holding more than its share of the batch (`total / concurrency`) is spread over
/// several by a hash of the stage's shard key (the storage worker's messageId, so every copy of a
/// messageId lands in the same chunk and is deduplicated there), keeping batch order within each.
pub(super) fn chunks(
    groups: BTreeMap<Uuid, Vec<(usize, Item)>>,
    total: usize,
    concurrency: usize,
    shard_key: impl Fn(&Item) -> &str,
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
            std::hash::Hash::hash(shard_key(&item), &mut hasher);
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
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use super::*;
    use crate::persist::Status;

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
        let chunks = chunks(groups, index, 4, |item| &item.envelope.message_id);

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
        assert_eq!(
            chunks(groups, 3000, 1, |item| &item.envelope.message_id).len(),
            1
        );
    }
}
