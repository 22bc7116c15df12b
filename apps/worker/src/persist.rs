//! Writes one project's share of a batch in one tenant transaction, exactly once per messageId and
//! key class.
//!
//! Rows travel as one jsonb array per statement (`jsonb_to_recordset`), so a batch of any size is
//! three statements with two bind parameters each: no 65,535-parameter limit to chunk around, and
//! no per-row round trips.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use gamify_common::{Envelope, KeyType, ingest::Kind};
use gamify_db::Db;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, RuntimeErr, Statement, sqlx};
use serde_json::{Map, Value, json};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Processed,
    Failed(String),
}

/// An envelope ready to be stored.
#[derive(Debug, Clone)]
pub struct Item {
    pub envelope: Envelope,
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

fn timestamp(at: DateTime<Utc>) -> String {
    // Postgres keeps microseconds; sending exactly that avoids any rounding surprise.
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub async fn persist_project(db: &Db, project_id: Uuid, items: &[&Item]) -> Result<Outcome, DbErr> {
    let mut outcome = Outcome::default();
    // Postgres handles in-statement duplicates too, but deciding here keeps "first one wins"
    // explicit and the counts exact.
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(items.len());
    for item in items {
        if seen.insert(item.dedup_key()) {
            unique.push(*item);
        } else {
            outcome.duplicates += 1;
        }
    }

    let txn = db.tenant(project_id).await.map_err(|err| match err {
        gamify_db::Error::Db(err) => err,
    })?;

    let ids: Vec<Value> = unique
        .iter()
        .map(|item| {
            json!({
                "key_type": item.key_type.as_str(),
                "message_id": item.envelope.message_id,
                "event_id": item.envelope.id,
                "occurred_at": timestamp(item.envelope.occurred_at),
            })
        })
        .collect();
    let rows = txn
        .query_all(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO event_message_ids (project_id, key_type, message_id, event_id, occurred_at)
             SELECT $1::uuid, r.key_type, r.message_id, r.event_id, r.occurred_at
             FROM jsonb_to_recordset($2::jsonb)
                  AS r(key_type text, message_id text, event_id uuid, occurred_at timestamptz)
             ON CONFLICT (project_id, key_type, message_id) DO NOTHING
             RETURNING key_type, message_id",
            [project_id.into(), Value::Array(ids).into()],
        ))
        .await?;
    let mut new_ids = HashSet::with_capacity(rows.len());
    for row in rows {
        let key_type: String = row.try_get("", "key_type")?;
        new_ids.insert((key_type, row.try_get::<String>("", "message_id")?));
    }
    let fresh: Vec<&Item> = unique
        .into_iter()
        .filter(|item| {
            let (key_type, message_id) = item.dedup_key();
            new_ids.contains(&(key_type.to_owned(), message_id.to_owned()))
        })
        .collect();
    outcome.duplicates = (items.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        txn.commit()
            .await
            .map_err(|gamify_db::Error::Db(err)| err)?;
        return Ok(outcome);
    }

    // One row per end user, traits of this batch's identifies merged in offset order so later
    // keys win; `metadata || EXCLUDED.metadata` then lets them win over what is stored. Users of
    // failed events are created too (a publishable key may create users anyway) but their traits
    // are ignored.
    let mut users: Vec<(String, Map<String, Value>)> = Vec::new();
    let mut user_index: HashMap<&str, usize> = HashMap::new();
    for item in &fresh {
        let Some(external_id) = item.envelope.user_id.as_deref() else {
            continue;
        };
        let index = *user_index.entry(external_id).or_insert_with(|| {
            users.push((external_id.to_owned(), Map::new()));
            users.len() - 1
        });
        if item.envelope.kind == Kind::Identify && item.status == Status::Processed {
            if let Some(traits) = &item.envelope.traits {
                for (key, value) in traits {
                    users[index].1.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let mut user_ids: HashMap<String, Uuid> = HashMap::new();
    if !users.is_empty() {
        let rows: Vec<Value> = users
            .into_iter()
            .map(|(external_id, metadata)| {
                json!({ "id": Uuid::now_v7(), "external_id": external_id, "metadata": metadata })
            })
            .collect();
        let returned = txn
            .query_all(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO end_users (id, project_id, external_id, metadata)
                 SELECT r.id, $1::uuid, r.external_id, r.metadata
                 FROM jsonb_to_recordset($2::jsonb) AS r(id uuid, external_id text, metadata jsonb)
                 ON CONFLICT (project_id, external_id) DO UPDATE
                 SET metadata = end_users.metadata || EXCLUDED.metadata,
                     updated_at = CASE WHEN EXCLUDED.metadata = '{}'::jsonb
                                       THEN end_users.updated_at ELSE now() END
                 RETURNING id, external_id",
                [project_id.into(), Value::Array(rows).into()],
            ))
            .await?;
        for row in returned {
            user_ids.insert(row.try_get("", "external_id")?, row.try_get("", "id")?);
        }
    }

    let events: Vec<Value> = fresh
        .iter()
        .map(|item| {
            let envelope = &item.envelope;
            let payload = match envelope.kind {
                Kind::Track => envelope.properties.clone(),
                Kind::Identify => envelope.traits.clone(),
            }
            .unwrap_or_default();
            let (status, error_details) = match &item.status {
                Status::Processed => ("processed", None),
                Status::Failed(details) => ("failed", Some(details.as_str())),
            };
            json!({
                "id": envelope.id,
                "message_id": envelope.message_id,
                "event_type": envelope.event,
                "user_id": envelope.user_id.as_deref().and_then(|u| user_ids.get(u)),
                "anonymous_id": envelope.anonymous_id,
                "payload": payload,
                "context": envelope.context,
                "key_id": envelope.key_id,
                "key_type": item.key_type.as_str(),
                "status": status,
                "error_details": error_details,
                "occurred_at": timestamp(envelope.occurred_at),
                "received_at": timestamp(envelope.received_at),
            })
        })
        .collect();
    txn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO events (id, project_id, message_id, event_type, user_id, anonymous_id,
                             payload, context, key_id, key_type, status, error_details,
                             occurred_at, received_at, processed_at)
         SELECT r.id, $1::uuid, r.message_id, r.event_type, r.user_id, r.anonymous_id,
                COALESCE(r.payload, '{}'::jsonb), COALESCE(r.context, '{}'::jsonb), r.key_id,
                r.key_type, r.status, r.error_details, r.occurred_at, r.received_at,
                CASE WHEN r.status = 'processed' THEN now() END
         FROM jsonb_to_recordset($2::jsonb) AS r(
             id uuid, message_id text, event_type text, user_id uuid, anonymous_id text,
             payload jsonb, context jsonb, key_id uuid, key_type text, status text,
             error_details text, occurred_at timestamptz, received_at timestamptz)",
        [project_id.into(), Value::Array(events).into()],
    ))
    .await?;
    txn.commit()
        .await
        .map_err(|gamify_db::Error::Db(err)| err)?;

    for item in &fresh {
        match item.status {
            Status::Processed => outcome.processed += 1,
            Status::Failed(_) => outcome.failed += 1,
        }
    }
    Ok(outcome)
}
