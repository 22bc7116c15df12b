//! The engine's stage of the consumer loop: each event the storage path stores is evaluated once
//! against the project's active rules, and its state changes, awards, ledger entries, leaderboard
//! scores, webhook deliveries, outcome and dedup record commit in one tenant transaction.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Instant,
};

use futures::future::BoxFuture;
use gamify_common::{KeyType, ingest::Kind};
use gamify_db::Db;
use gamify_rules::{Input, Source, UserState};
use gamify_worker::{
    persist::{Item, Outcome, Status},
    stage::Stage,
};
use sea_orm::{
    DbErr,
    sqlx::{self, types::Json},
};
use uuid::Uuid;

use gamify_db::gamification::{
    changes::{Changes, OutcomeRow},
    outbox::{Delivery, ENDPOINTS_JSON, Endpoint},
    project_lock,
    rule_sets::{Active, RuleSets},
};

use crate::{db_err, metrics as m};

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

pub struct Evaluate {
    pub rule_sets: RuleSets,
}

impl Stage for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }

    /// One user's events stay in one transaction, in order: their state has one writer.
    fn shard_key<'a>(&self, item: &'a Item) -> &'a str {
        item.envelope
            .user_id
            .as_deref()
            .unwrap_or(&item.envelope.message_id)
    }

    fn stores_events(&self) -> bool {
        false
    }

    fn apply<'a>(
        &'a self,
        db: &'a Db,
        project_id: Uuid,
        items: &'a [&'a Item],
    ) -> BoxFuture<'a, Result<Outcome, DbErr>> {
        Box::pin(self.evaluate(db, project_id, items))
    }
}

/// The reason recorded for a duplicate messageId, followed by the first copy's event id.
pub const DUPLICATE_OF: &str = "duplicate messageId of ";

/// What the engine decided about one item before evaluating.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Already evaluated by an earlier delivery of this very envelope: nothing to write.
    Redelivered,
    /// Its messageId is another event's. An earlier delivery of it may have recorded that already.
    Duplicate(Uuid),
    NotCounted(String),
    Evaluate,
}

/// How many times a share is evaluated afresh when a concurrent transaction took one of its
/// messageIds between the claim's look and its insert (see [`Evaluate::open`]), or inserted the
/// state of one of its new users first.
const CLAIM_ATTEMPTS: u32 = 3;

impl Evaluate {
    async fn evaluate(&self, db: &Db, project_id: Uuid, items: &[&Item]) -> Result<Outcome, DbErr> {
        let mut attempt = 1;
        loop {
            match self.attempt(db, project_id, items).await {
                Err(err) if attempt < CLAIM_ATTEMPTS && is_claim_race(&err) => {
                    tracing::debug!(%project_id, attempt, "a messageId was claimed concurrently; evaluating the share again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn attempt(&self, db: &Db, project_id: Uuid, items: &[&Item]) -> Result<Outcome, DbErr> {
        let started = Instant::now();
        let mut txn = db
            .tenant_bulk_sharing(project_id, project_lock(project_id))
            .await
            .map_err(db_err)?;

        let Opened {
            fates,
            active,
            seqs,
            endpoints,
            mut states,
        } = self.open(&mut txn, project_id, items).await?;

        let mut outcome = Outcome::default();
        let mut changes = Changes::new(
            active.as_ref().map_or(0, |a| a.version),
            active.as_ref().map_or(0, |a| a.generation),
        );
        let todo: Vec<(&Item, Fate)> = items
            .iter()
            .zip(fates)
            .filter_map(|(item, fate)| match fate {
                Fate::Redelivered => {
                    outcome.duplicates += 1;
                    None
                }
                fate => Some((*item, fate)),
            })
            .collect();
        // Users without a stored state start from an empty one, and their row is inserted with
        // the rest of the writes: no placeholder row to insert and lock first. Should a
        // concurrent transaction insert the same user's row first (two engines on one partition
        // during a rebalance), the insert fails with a unique violation and the share is
        // evaluated again, this time finding that row ([`CLAIM_ATTEMPTS`]).
        let new_users: HashSet<&str> = todo
            .iter()
            .filter(|(_, fate)| matches!(fate, Fate::Evaluate))
            .filter_map(|(item, _)| item.envelope.user_id.as_deref())
            .filter(|user| !states.contains_key(*user))
            .collect();

        let mut awards_made = 0u64;
        // Each user's state is written once, as it stands after their last event here.
        let mut last_seq: HashMap<&str, i64> = HashMap::new();
        for ((item, fate), seq) in todo.into_iter().zip(seqs) {
            let envelope = &item.envelope;
            let (counted, reason, awards) = match fate {
                Fate::Redelivered => continue,
                Fate::Duplicate(holder) => {
                    outcome.failed += 1;
                    changes.repeated_outcomes.push(OutcomeRow {
                        event_id: envelope.id,
                        seq,
                        user_id: envelope.user_id.clone(),
                        counted: false,
                        reason: Some(format!("{DUPLICATE_OF}{holder}")),
                        awards: "[]".to_owned(),
                    });
                    continue;
                }
                Fate::NotCounted(reason) => {
                    outcome.failed += 1;
                    (false, Some(reason), Vec::new())
                }
                Fate::Evaluate => {
                    outcome.processed += 1;
                    let (Some(active), Some(user_id)) = (&active, envelope.user_id.as_deref())
                    else {
                        changes.outcomes.push(OutcomeRow {
                            event_id: envelope.id,
                            seq,
                            user_id: envelope.user_id.clone(),
                            counted: true,
                            reason: None,
                            awards: "[]".to_owned(),
                        });
                        continue;
                    };
                    let state = states.entry(user_id.to_owned()).or_default();
                    let evaluation = gamify_rules::apply(&active.rules, state, &input(item));
                    changes.record(user_id, seq, Some(envelope.id), &evaluation);
                    last_seq.insert(user_id, seq);
                    if !endpoints.is_empty() {
                        changes
                            .deliveries
                            .extend(evaluation.awards.iter().map(|award| Delivery {
                                user_id: user_id.to_owned(),
                                event_id: Some(envelope.id),
                                award: award.clone(),
                                at: envelope.received_at,
                            }));
                    }
                    awards_made += evaluation.awards.len() as u64;
                    (true, None, evaluation.awards)
                }
            };
            changes.outcomes.push(OutcomeRow {
                event_id: envelope.id,
                seq,
                user_id: envelope.user_id.clone(),
                counted,
                reason,
                awards: serde_json::to_string(&awards)
                    .map_err(|err| DbErr::Custom(format!("cannot serialize awards: {err}")))?,
            });
        }
        for (user_id, seq) in last_seq {
            if let Some(state) = states.remove(user_id) {
                changes.states.insert(user_id.to_owned(), (state, seq));
                if new_users.contains(user_id) {
                    changes.new_users.insert(user_id.to_owned());
                }
            }
        }
        changes.write(&mut txn, project_id, &endpoints).await?;
        txn.commit().await.map_err(db_err)?;
        metrics::histogram!(m::EVALUATION_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::EVALUATED).increment(outcome.processed);
        metrics::counter!(m::NOT_COUNTED).increment(outcome.failed);
        metrics::counter!(m::AWARDS).increment(awards_made);
        Ok(outcome)
    }
}

/// What a transaction reads once it holds the project lock.
struct Opened {
    fates: Vec<Fate>,
    active: Option<Active>,
    /// Increasing; one per item (a redelivered item leaves its number unused).
    seqs: Vec<i64>,
    endpoints: Vec<Endpoint>,
    /// The states of the items' users that exist, locked.
    states: BTreeMap<String, UserState>,
}

impl Evaluate {
    /// One statement, after the project lock (a statement's snapshot is taken before it waits for
    /// a lock, so the active version must be read by a later one than the lock's):
    ///
    /// - the engine's dedup, in the storage path's scope (project, key class, messageId), for
    ///   every item, refused ones included: the storage worker stores those too (as failed), and a
    ///   messageId it has stored is taken for good, so a later event reusing it is a duplicate on
    ///   both paths. The keys already held are looked up and the others inserted with a plain
    ///   `INSERT`: `ON CONFLICT` would make every row a speculative insertion, which the drain
    ///   benchmark measured at about 1.7× a plain one (docs/BENCHMARKS.md). A key that a
    ///   concurrent transaction takes between the look and the insert makes the insert wait for
    ///   it and fail with a unique violation once it commits; the share is then evaluated again
    ///   ([`CLAIM_ATTEMPTS`]) and finds that holder. The dedup record and the outcome commit
    ///   together, so a key this very envelope already held means it was evaluated;
    /// - the active rule version, sequence numbers and the webhook endpoints;
    /// - the stored states of the items' users, locked in sorted order (`FOR UPDATE` waits for a
    ///   concurrent writer and returns the state it committed). Users without a row yet get one
    ///   with the writes ([`Changes::new_users`]).
    async fn open(
        &self,
        txn: &mut Txn,
        project_id: Uuid,
        items: &[&Item],
    ) -> Result<Opened, DbErr> {
        let Asked {
            key_types,
            message_ids,
            event_ids,
        } = asked(items);
        let mut users: Vec<&str> = items
            .iter()
            .filter(|item| matches!(item.status, Status::Processed))
            .filter_map(|item| item.envelope.user_id.as_deref())
            .collect();
        users.sort_unstable();
        users.dedup();
        type Row = (
            Json<Vec<(String, String, Uuid)>>,
            Option<i32>,
            Vec<i64>,
            Json<Vec<Endpoint>>,
            Json<Vec<(String, UserState)>>,
        );
        let (Json(held), version, seqs, Json(endpoints), Json(states)): Row =
            sqlx::query_as(&format!(
                "WITH asked AS (
                     SELECT * FROM UNNEST($2::text[], $3::text[], $4::uuid[]) AS r(key_type, message_id, event_id)
                 ), held AS (
                     SELECT m.key_type, m.message_id, m.event_id FROM asked a
                     JOIN engine_message_ids m
                       ON m.project_id = $1 AND m.key_type = a.key_type AND m.message_id = a.message_id
                 ), claim AS (
                     INSERT INTO engine_message_ids (project_id, key_type, message_id, event_id)
                     SELECT $1, a.key_type, a.message_id, a.event_id FROM asked a
                     WHERE NOT EXISTS (SELECT 1 FROM held h
                                       WHERE h.key_type = a.key_type AND h.message_id = a.message_id)
                     RETURNING 1
                 ), active AS (
                     SELECT version, generation FROM rule_versions WHERE project_id = $1 AND state = 'active'
                 ), states AS (
                     SELECT s.user_id, s.state FROM engine_user_states s
                     WHERE s.project_id = $1 AND s.generation = (SELECT generation FROM active)
                       AND s.user_id = ANY($5)
                     ORDER BY s.user_id FOR UPDATE
                 )
                 SELECT (SELECT coalesce(json_agg(json_build_array(key_type, message_id, event_id)), '[]')
                         FROM held),
                        (SELECT version FROM active),
                        ARRAY(SELECT nextval('engine_seq') FROM generate_series(1, $6) ORDER BY 1),
                        {ENDPOINTS_JSON},
                        (SELECT coalesce(json_agg(json_build_array(user_id, state)), '[]') FROM states)"
            ))
            .bind(project_id)
            .bind(&key_types)
            .bind(&message_ids)
            .bind(&event_ids)
            .bind(&users)
            .bind(items.len() as i64)
            .fetch_one(&mut **txn)
            .await
            .map_err(db_err)?;
        let held: HashMap<(&str, &str), Uuid> = held
            .iter()
            .map(|(key_type, message_id, holder)| {
                ((key_type.as_str(), message_id.as_str()), *holder)
            })
            .collect();
        let claims = claims(&key_types, &message_ids, &event_ids, &held);
        let active = match version {
            Some(version) => Some(self.rule_sets.version(txn, project_id, version).await?),
            None => None,
        };
        Ok(Opened {
            fates: decide(items, &claims),
            active,
            seqs,
            endpoints,
            states: states.into_iter().collect(),
        })
    }
}

/// Who holds a (key class, messageId) after the claim, and whether this claim took it.
#[derive(Debug, Clone, Copy)]
struct Claim {
    holder: Uuid,
    inserted: bool,
}

/// A (key class, messageId).
type Key<'a> = (&'a str, &'a str);

/// The keys a share claims, as columns: each key once, asked by its first item (a key twice in
/// one insert would violate its own uniqueness).
struct Asked<'a> {
    key_types: Vec<&'a str>,
    message_ids: Vec<&'a str>,
    event_ids: Vec<Uuid>,
}

fn asked<'a>(items: &[&'a Item]) -> Asked<'a> {
    let mut seen = HashSet::new();
    let mut asked = Asked {
        key_types: Vec::with_capacity(items.len()),
        message_ids: Vec::with_capacity(items.len()),
        event_ids: Vec::with_capacity(items.len()),
    };
    for item in items {
        if seen.insert((item.key_type, item.envelope.message_id.as_str())) {
            asked.key_types.push(item.key_type.as_str());
            asked.message_ids.push(item.envelope.message_id.as_str());
            asked.event_ids.push(item.envelope.id);
        }
    }
    asked
}

/// The claim of each asked key: its holder where one was found, else the item that asked for
/// it, which the claim's insert made its holder.
fn claims<'a>(
    key_types: &[&'a str],
    message_ids: &[&'a str],
    event_ids: &[Uuid],
    held: &HashMap<Key<'_>, Uuid>,
) -> HashMap<Key<'a>, Claim> {
    key_types
        .iter()
        .zip(message_ids)
        .zip(event_ids)
        .map(|((key_type, message_id), event_id)| {
            let claim = match held.get(&(*key_type, *message_id)) {
                Some(holder) => Claim {
                    holder: *holder,
                    inserted: false,
                },
                None => Claim {
                    holder: *event_id,
                    inserted: true,
                },
            };
            ((*key_type, *message_id), claim)
        })
        .collect()
}

/// Whether `err` is the claim's insert losing a race for a messageId (see [`Evaluate::open`]).
fn is_claim_race(err: &DbErr) -> bool {
    gamify_worker::persist::sqlstate(err).as_deref() == Some("23505")
}

/// What to do with each item, given the claims. Pure, so the dedup rules are tested without a
/// database: a second copy of one envelope in the batch, or an envelope whose key it held before
/// this claim, is a redelivery; a key held by another event makes a duplicate of it; then
/// refused, anonymous, or evaluated.
fn decide(items: &[&Item], claims: &HashMap<Key<'_>, Claim>) -> Vec<Fate> {
    let mut seen = HashSet::new();
    items
        .iter()
        .map(|item| {
            let envelope = &item.envelope;
            if !seen.insert(envelope.id) {
                return Fate::Redelivered;
            }
            let claim = claims.get(&(item.key_type.as_str(), envelope.message_id.as_str()));
            match claim {
                Some(claim) if claim.holder != envelope.id => return Fate::Duplicate(claim.holder),
                Some(claim) if !claim.inserted => return Fate::Redelivered,
                Some(_) => {}
                // Every asked key comes back; an item without one is never evaluated.
                None => return Fate::Redelivered,
            }
            match &item.status {
                Status::Failed(details) => Fate::NotCounted(details.clone()),
                Status::Processed if envelope.user_id.is_none() => {
                    Fate::NotCounted("no userId: only identified users earn".into())
                }
                Status::Processed => Fate::Evaluate,
            }
        })
        .collect()
}

/// The rule library's view of an envelope. The key class is the one Postgres knows for the key
/// (`Item::key_type`), never the one the envelope claims.
pub fn input(item: &Item) -> Input<'_> {
    let envelope = &item.envelope;
    Input {
        event_id: envelope.id,
        kind: match envelope.kind {
            Kind::Identify => gamify_rules::Kind::Identify,
            Kind::Track => gamify_rules::Kind::Track,
        },
        name: &envelope.event,
        source: match item.key_type {
            KeyType::Secret => Source::Secret,
            KeyType::Publishable => Source::Publishable,
        },
        user_id: envelope.user_id.as_deref().unwrap_or_default(),
        properties: envelope.properties.as_ref(),
        traits: envelope.traits.as_ref(),
        occurred_at: envelope.occurred_at,
        received_at: envelope.received_at,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use gamify_common::Envelope;
    use proptest::prelude::*;

    use super::*;

    fn item(
        id: u128,
        message_id: &str,
        key_type: KeyType,
        user: Option<&str>,
        status: Status,
    ) -> Item {
        let now = chrono::Utc::now();
        Item {
            envelope: Arc::new(Envelope {
                v: 1,
                id: Uuid::from_u128(id),
                message_id: message_id.to_owned(),
                project_id: Uuid::nil(),
                key_id: Uuid::nil(),
                key_type,
                trusted_events_version: Some(1),
                kind: Kind::Track,
                event: "purchase".into(),
                user_id: user.map(str::to_owned),
                anonymous_id: None,
                properties: None,
                traits: None,
                occurred_at: now,
                received_at: now,
                context: Default::default(),
            }),
            status,
            key_type,
        }
    }

    /// The claims of `items`, given the keys held before (key → holder), as `open` makes them.
    fn claims<'a>(
        items: &[&'a Item],
        held: &HashMap<(String, String), Uuid>,
    ) -> HashMap<Key<'a>, Claim> {
        let held: HashMap<Key<'_>, Uuid> = held
            .iter()
            .map(|((key_type, message_id), holder)| {
                ((key_type.as_str(), message_id.as_str()), *holder)
            })
            .collect();
        let asked = asked(items);
        super::claims(
            &asked.key_types,
            &asked.message_ids,
            &asked.event_ids,
            &held,
        )
    }

    #[test]
    fn each_kind_of_item_gets_its_fate() {
        let fresh = item(1, "m1", KeyType::Secret, Some("ada"), Status::Processed);
        let copy = item(2, "m1", KeyType::Secret, Some("ada"), Status::Processed);
        let other_class = item(
            3,
            "m1",
            KeyType::Publishable,
            Some("ada"),
            Status::Processed,
        );
        let refused = item(
            4,
            "m4",
            KeyType::Publishable,
            Some("ada"),
            Status::Failed("trusted event".into()),
        );
        let anonymous = item(5, "m5", KeyType::Secret, None, Status::Processed);
        let seen_before = item(6, "m6", KeyType::Secret, Some("ada"), Status::Processed);
        let taken_before = item(7, "m7", KeyType::Secret, Some("ada"), Status::Processed);
        let items = [
            &fresh,
            &copy,
            &other_class,
            &refused,
            &anonymous,
            &seen_before,
            &taken_before,
            &fresh,
        ];
        let held = HashMap::from([
            (("secret".to_owned(), "m6".to_owned()), Uuid::from_u128(6)),
            (("secret".to_owned(), "m7".to_owned()), Uuid::from_u128(99)),
        ]);
        let fates = decide(&items, &claims(&items, &held));
        assert_eq!(
            fates,
            vec![
                Fate::Evaluate,
                Fate::Duplicate(Uuid::from_u128(1)),
                Fate::Evaluate,
                Fate::NotCounted("trusted event".into()),
                Fate::NotCounted("no userId: only identified users earn".into()),
                Fate::Redelivered,
                Fate::Duplicate(Uuid::from_u128(99)),
                Fate::Redelivered,
            ]
        );
    }

    proptest! {
        /// However items repeat, collide on messageIds or were claimed before, at most one event
        /// per (key class, messageId) is evaluated, only one that took its key in this claim, and
        /// none twice.
        #[test]
        fn at_most_one_evaluation_per_message_id(
            ids in proptest::collection::vec(0u128..12, 0..40),
            before in proptest::collection::hash_map(0usize..8, 0u128..14, 0..4),
        ) {
            let built: Vec<Item> = ids
                .iter()
                .map(|id| {
                    // An envelope id always comes with the same messageId and class, and several
                    // ids share a messageId.
                    let message = (*id as usize) % 4;
                    let key_type = if id % 3 == 0 { KeyType::Publishable } else { KeyType::Secret };
                    item(*id, &format!("m{message}"), key_type, Some("u"), Status::Processed)
                })
                .collect();
            let items: Vec<&Item> = built.iter().collect();
            let held: HashMap<(String, String), Uuid> = before
                .iter()
                .map(|(key, holder)| {
                    let class = if key % 2 == 0 { "secret" } else { "publishable" };
                    ((class.to_owned(), format!("m{}", key % 4)), Uuid::from_u128(*holder))
                })
                .collect();
            let fates = decide(&items, &claims(&items, &held));
            let mut counted_ids = HashSet::new();
            let mut counted_keys = HashSet::new();
            for (item, fate) in items.iter().zip(&fates) {
                if *fate == Fate::Evaluate {
                    let key = (item.key_type.as_str().to_owned(), item.envelope.message_id.clone());
                    prop_assert!(!held.contains_key(&key), "a key held before is never evaluated again");
                    prop_assert!(counted_ids.insert(item.envelope.id));
                    prop_assert!(counted_keys.insert(key));
                }
            }
        }
    }
}
