//! Writes one project's share of a batch in one tenant transaction, exactly once per messageId and
//! key class.
//!
//! Columns travel as typed arrays in Postgres's binary format (`UNNEST($2::uuid[], …)`), one bind
//! parameter per column, so a batch of any size is a fixed number of statements: no 65,535-parameter
//! limit to chunk around, no per-row round trips, and no JSON text to build and parse but the
//! payloads themselves.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use gamify_common::{Envelope, KeyType, ingest::Kind};
use gamify_db::Db;
use sea_orm::{DbErr, RuntimeErr, sqlx};
use serde_json::{Map, Value};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Processed,
    Failed(String),
}

/// An envelope ready to be stored. The envelope is shared with the batch it came in, which keeps
/// it for retries: judging it must not copy its maps.
#[derive(Debug, Clone)]
pub struct Item {
    pub envelope: Arc<Envelope>,
    pub status: Status,
    pub key_type: KeyType,
}

impl Item {
    /// messageIds are unique per project and key class, so nothing sent with a publishable key
    /// can claim (and so suppress) the messageId of an event sent with a secret key, or the
    /// reverse. The class is the one Postgres knows for the key, not the one the envelope claims.
    pub fn dedup_key(&self) -> (&'static str, &str) {
        (self.key_type.as_str(), self.envelope.message_id.as_str())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub processed: u64,
    pub failed: u64,
    /// Already stored by an earlier delivery (or twice in this batch): nothing written.
    pub duplicates: u64,
}

/// Whether retrying can help. Only conditions known to pass are retried: lost connections, an
/// exhausted pool, shutdowns, serialization failures and deadlocks, lock and statement timeouts,
/// and resource shortages. Anything else is deterministic for the message (a data, constraint,
/// limit or privilege error comes back identically every time) and must not block its partition.
pub fn is_transient(err: &DbErr) -> bool {
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => {
            match err {
                sqlx::Error::Database(db) => {
                    db.code().is_some_and(|code| is_transient_sqlstate(&code))
                }
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            }
        }
        _ => false,
    }
}

/// SQLSTATEs that describe the server's condition, not the statement's.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: disk, memory, connections
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "57014" // query_canceled (statement_timeout)
                | "25P03" // idle_in_transaction_session_timeout
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "57P05" // idle_session_timeout
                | "58000" // system_error
                | "58030" // io_error
        )
}

/// The SQLSTATE of a database error, for the dead-letter reason.
pub fn sqlstate(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(db)))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(db))) => {
            db.code().map(|code| code.into_owned())
        }
        _ => None,
    }
}

/// sqlx errors as the rest of the worker classifies them.
fn db_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err))
}

/// Stores `items` (one project's, or a share of them) in one tenant transaction: the dedup keys
/// first, so an event seen before is left out, then the end users the new events name, then the
/// events. Each statement binds whole columns as typed arrays (`UNNEST`), so a batch of any size
/// is a fixed number of round trips and nothing is serialised to JSON text but the payloads.
pub async fn persist_project(db: &Db, project_id: Uuid, items: &[&Item]) -> Result<Outcome, DbErr> {
    persist_events(db, project_id, items, Rollups::Kept).await
}

/// Whether the analytics rollups are kept with the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollups {
    Kept,
    Skipped,
}

/// [`persist_project`], with or without the analytics rollups.
pub async fn persist_events(
    db: &Db,
    project_id: Uuid,
    items: &[&Item],
    rollups: Rollups,
) -> Result<Outcome, DbErr> {
    let mut outcome = Outcome::default();
    // Postgres handles in-statement duplicates too, but deciding here keeps "first one wins"
    // explicit and the counts exact.
    let mut seen = HashSet::with_capacity(items.len());
    let mut unique = Vec::with_capacity(items.len());
    for item in items {
        if seen.insert(item.dedup_key()) {
            unique.push(*item);
        }
    }

    let mut txn = db.tenant_bulk(project_id).await.map_err(db_err)?;

    let mut key_types = Vec::with_capacity(unique.len());
    let mut message_ids = Vec::with_capacity(unique.len());
    let mut event_ids = Vec::with_capacity(unique.len());
    let mut occurred = Vec::with_capacity(unique.len());
    for item in &unique {
        key_types.push(item.key_type.as_str());
        message_ids.push(item.envelope.message_id.as_str());
        event_ids.push(item.envelope.id);
        occurred.push(item.envelope.occurred_at);
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO event_message_ids (project_id, key_type, message_id, event_id, occurred_at)
         SELECT $1, r.key_type, r.message_id, r.event_id, r.occurred_at
         FROM UNNEST($2::text[], $3::text[], $4::uuid[], $5::timestamptz[])
              AS r(key_type, message_id, event_id, occurred_at)
         ON CONFLICT (project_id, key_type, message_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(project_id)
    .bind(key_types)
    .bind(message_ids)
    .bind(event_ids)
    .bind(occurred)
    .fetch_all(&mut *txn)
    .await
    .map_err(db_err)?;
    // An envelope's id is unique to it (a redelivery carries the same one), so the returned ids
    // name exactly the envelopes whose messageId was new.
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    let fresh: Vec<&Item> = unique
        .into_iter()
        .filter(|item| inserted.contains(&item.envelope.id))
        .collect();
    outcome.duplicates = (items.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        txn.commit().await.map_err(db_err)?;
        return Ok(outcome);
    }

    let user_ids = resolve_users(&mut txn, project_id, &fresh).await?;
    insert_events(&mut txn, project_id, &fresh, &user_ids).await?;
    if rollups == Rollups::Kept {
        insert_rollups(&mut txn, project_id, &fresh).await?;
    }
    txn.commit().await.map_err(db_err)?;

    for item in &fresh {
        match item.status {
            Status::Processed => outcome.processed += 1,
            Status::Failed(_) => outcome.failed += 1,
        }
    }
    Ok(outcome)
}

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

/// The row id of every end user the events name, creating the users not seen before. Traits of
/// this batch's identifies are merged in offset order so later keys win, and
/// `metadata || traits` lets them win over what is stored. Users of failed events are created too
/// (a publishable key may create users anyway) but their traits are ignored.
///
/// Several transactions write one project's users at once (the chunks of a batch, other
/// workers), so the order of locks matters. First every user is inserted when absent
/// (`DO NOTHING`: a user that exists is read, never rewritten, so tracks cost no new row version
/// and no row lock), in sorted order, so two transactions inserting the same new users wait on
/// each other in one order. Then, only where there are new traits, the users are locked in sorted
/// order and updated. A transaction in the first step only waits for another's first-step
/// inserts or its updates, and one in the second step only for another's second-step locks, taken
/// in the same order: no cycle, no deadlock.
async fn resolve_users(
    txn: &mut Txn,
    project_id: Uuid,
    fresh: &[&Item],
) -> Result<HashMap<String, Uuid>, DbErr> {
    let mut users: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for item in fresh {
        let Some(external_id) = item.envelope.user_id.as_deref() else {
            continue;
        };
        let traits = users.entry(external_id).or_default();
        if item.envelope.kind == Kind::Identify && item.status == Status::Processed {
            if let Some(new) = &item.envelope.traits {
                for (key, value) in new {
                    traits.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let mut ids: HashMap<String, Uuid> = HashMap::with_capacity(users.len());
    if users.is_empty() {
        return Ok(ids);
    }

    let new_ids: Vec<Uuid> = users.keys().map(|_| Uuid::now_v7()).collect();
    let external: Vec<&str> = users.keys().copied().collect();
    // The inserted rows come from RETURNING and the existing ones from the statement's snapshot,
    // which cannot see the rows it inserts itself: the two halves never overlap.
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH created AS (
             INSERT INTO end_users (id, project_id, external_id)
             SELECT u.id, $1, u.external_id FROM UNNEST($2::uuid[], $3::text[]) AS u(id, external_id)
             ON CONFLICT (project_id, external_id) DO NOTHING
             RETURNING id, external_id)
         SELECT id, external_id FROM created
         UNION ALL
         SELECT id, external_id FROM end_users WHERE project_id = $1 AND external_id = ANY($3)",
    )
    .bind(project_id)
    .bind(new_ids)
    .bind(&external)
    .fetch_all(&mut **txn)
    .await
    .map_err(db_err)?;
    ids.extend(rows.into_iter().map(|(id, external_id)| (external_id, id)));
    // A user another transaction inserted and committed after this statement's snapshot was taken
    // is in neither half; a new statement sees it.
    let missing: Vec<&str> = external
        .iter()
        .copied()
        .filter(|external_id| !ids.contains_key(*external_id))
        .collect();
    if !missing.is_empty() {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, external_id FROM end_users WHERE project_id = $1 AND external_id = ANY($2)",
        )
        .bind(project_id)
        .bind(missing)
        .fetch_all(&mut **txn)
        .await
        .map_err(db_err)?;
        ids.extend(rows.into_iter().map(|(id, external_id)| (external_id, id)));
    }

    let mut with_traits: Vec<&str> = Vec::new();
    let mut traits = Vec::new();
    for (external_id, merged) in &users {
        if !merged.is_empty() {
            with_traits.push(*external_id);
            traits.push(sqlx::types::Json(merged));
        }
    }
    if !with_traits.is_empty() {
        sqlx::query(
            "WITH locked AS (
                 SELECT id FROM end_users WHERE project_id = $1 AND external_id = ANY($2)
                 ORDER BY external_id FOR NO KEY UPDATE)
             UPDATE end_users u SET metadata = u.metadata || t.metadata, updated_at = now()
             FROM UNNEST($2::text[], $3::jsonb[]) AS t(external_id, metadata)
             WHERE u.project_id = $1 AND u.external_id = t.external_id
               AND u.id IN (SELECT id FROM locked)",
        )
        .bind(project_id)
        .bind(with_traits)
        .bind(traits)
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    }
    Ok(ids)
}

async fn insert_events(
    txn: &mut Txn,
    project_id: Uuid,
    fresh: &[&Item],
    user_ids: &HashMap<String, Uuid>,
) -> Result<(), DbErr> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    let n = fresh.len();
    let mut ids = Vec::with_capacity(n);
    let mut message_ids = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut anonymous_ids = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut contexts = Vec::with_capacity(n);
    let mut key_ids = Vec::with_capacity(n);
    let mut key_types = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    for item in fresh {
        let envelope = &item.envelope;
        let payload = match envelope.kind {
            Kind::Track => envelope.properties.as_ref(),
            Kind::Identify => envelope.traits.as_ref(),
        };
        let (status, error_details) = match &item.status {
            Status::Processed => ("processed", None),
            Status::Failed(details) => ("failed", Some(details.as_str())),
        };
        ids.push(envelope.id);
        message_ids.push(envelope.message_id.as_str());
        event_types.push(envelope.event.as_str());
        users.push(
            envelope
                .user_id
                .as_deref()
                .and_then(|user| user_ids.get(user).copied()),
        );
        anonymous_ids.push(envelope.anonymous_id.as_deref());
        payloads.push(sqlx::types::Json(payload.unwrap_or(&EMPTY)));
        contexts.push(sqlx::types::Json(&envelope.context));
        key_ids.push(envelope.key_id);
        key_types.push(item.key_type.as_str());
        statuses.push(status);
        errors.push(error_details);
        occurred.push(envelope.occurred_at);
        received.push(envelope.received_at);
    }
    sqlx::query(
        "INSERT INTO events (id, project_id, message_id, event_type, user_id, anonymous_id,
                             payload, context, key_id, key_type, status, error_details,
                             occurred_at, received_at, processed_at)
         SELECT r.id, $1, r.message_id, r.event_type, r.user_id, r.anonymous_id, r.payload,
                r.context, r.key_id, r.key_type, r.status, r.error_details, r.occurred_at,
                r.received_at, CASE WHEN r.status = 'processed' THEN now() END
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::jsonb[],
                     $8::jsonb[], $9::uuid[], $10::text[], $11::text[], $12::text[],
                     $13::timestamptz[], $14::timestamptz[])
              AS r(id, message_id, event_type, user_id, anonymous_id, payload, context, key_id,
                   key_type, status, error_details, occurred_at, received_at)",
    )
    .bind(project_id)
    .bind(ids)
    .bind(message_ids)
    .bind(event_types)
    .bind(users)
    .bind(anonymous_ids)
    .bind(payloads)
    .bind(contexts)
    .bind(key_ids)
    .bind(key_types)
    .bind(statuses)
    .bind(errors)
    .bind(occurred)
    .bind(received)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Who the distinct-user counts count: the user id, else the anonymous id.
fn who(envelope: &Envelope) -> Option<String> {
    match (&envelope.user_id, &envelope.anonymous_id) {
        (Some(user_id), _) => Some(format!("u:{user_id}")),
        (None, Some(anonymous_id)) => Some(format!("a:{anonymous_id}")),
        (None, None) => None,
    }
}

/// Counts the stored track events into the hourly rollups, in the transaction that stored them:
/// a redelivery that the dedup refused was never in `fresh`, so it is never counted twice. Each
/// (event, UTC hour) of the chunk is one upsert, in sorted order, on this backend's shard of the
/// hour (so concurrent chunks of one project do not wait on one row); the users are hashed into
/// the hour's HyperLogLog sketch. Users seen for the first time get their `user_first_seen` row
/// (`DO NOTHING`: an existing row is neither rewritten nor locked).
async fn insert_rollups(txn: &mut Txn, project_id: Uuid, fresh: &[&Item]) -> Result<(), DbErr> {
    let mut occurred = Vec::with_capacity(fresh.len());
    let mut event_types = Vec::with_capacity(fresh.len());
    let mut users: Vec<Option<String>> = Vec::with_capacity(fresh.len());
    let mut first_seen: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for item in fresh {
        let envelope = &item.envelope;
        if item.status != Status::Processed || envelope.kind != Kind::Track {
            continue;
        }
        let who = who(envelope);
        if let Some(who) = &who {
            let at = first_seen
                .entry(who.clone())
                .or_insert(envelope.occurred_at);
            *at = (*at).min(envelope.occurred_at);
        }
        occurred.push(envelope.occurred_at);
        event_types.push(envelope.event.as_str());
        users.push(who);
    }
    if occurred.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO event_rollups AS r (project_id, event_type, hour, shard, events, users)
         SELECT $1, e.event_type, date_trunc('hour', e.occurred_at, 'UTC'),
                (pg_backend_pid() % 16)::smallint, count(*),
                coalesce(hll_add_agg(hll_hash_text(e.who)), hll_empty())
         FROM UNNEST($2::timestamptz[], $3::text[], $4::text[]) AS e(occurred_at, event_type, who)
         GROUP BY 2, 3 ORDER BY 2, 3
         ON CONFLICT (project_id, event_type, hour, shard) DO UPDATE
         SET events = r.events + excluded.events, users = hll_union(r.users, excluded.users)",
    )
    .bind(project_id)
    .bind(occurred)
    .bind(event_types)
    .bind(users)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    if !first_seen.is_empty() {
        let (who, at): (Vec<String>, Vec<chrono::DateTime<chrono::Utc>>) =
            first_seen.into_iter().unzip();
        sqlx::query(
            "INSERT INTO user_first_seen (project_id, who, first_seen_at)
             SELECT $1, f.who, f.at FROM UNNEST($2::text[], $3::timestamptz[]) AS f(who, at)
             ON CONFLICT (project_id, who) DO NOTHING",
        )
        .bind(project_id)
        .bind(who)
        .bind(at)
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}
