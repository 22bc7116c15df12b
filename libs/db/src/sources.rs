//! The one definition of a valid event source, read the same way by the gateway (by key hash, when
//! a request arrives) and by the worker (by key id, when it re-checks an envelope): the key, its
//! project's trusted events and the key's allowed origins, from one query.

use chrono::{DateTime, Utc};
use gamify_common::{KeyType, events::NameList};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};
use uuid::Uuid;

use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct KeySource {
    pub key_id: Uuid,
    pub project_id: Uuid,
    pub key_type: KeyType,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The project's extra server-only event names.
    pub trusted_events: NameList,
    /// The version of `trusted_events`, bumped on every change.
    pub trusted_events_version: i32,
    /// Browser origins allowed to use a publishable key; an empty list allows any.
    pub allowed_origins: NameList,
    /// The project's own ceiling on accepted events, when it has one.
    pub rate_limit: Option<ProjectRateLimit>,
}

/// A project's ceiling on accepted events, in events per second with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRateLimit {
    pub events_per_second: u32,
    pub burst: u32,
}

const SELECT: &str = "SELECT k.id, k.project_id, k.type, k.revoked_at, k.expires_at,
        k.allowed_origins, p.trusted_events, p.trusted_events_version,
        p.rate_limit_events_per_second, p.rate_limit_burst
    FROM api_keys k JOIN projects p ON p.id = k.project_id";

impl Db {
    /// The key whose SHA-256 hash is `hash`, revoked or not.
    pub async fn key_source_by_hash(&self, hash: &str) -> Result<Option<KeySource>> {
        let row = self
            .shared()
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("{SELECT} WHERE k.key_hash = $1"),
                [hash.into()],
            ))
            .await?;
        row.map(|row| decode(&row)).transpose().map(Option::flatten)
    }

    /// Records that the keys `ids` were used just now (`last_used_at`).
    pub async fn record_key_use(&self, ids: &[Uuid]) -> Result<()> {
        self.shared()
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)",
                [ids.to_vec().into()],
            ))
            .await?;
        Ok(())
    }

    /// The keys among `ids` that exist.
    pub async fn key_sources_by_id(&self, ids: &[Uuid]) -> Result<Vec<KeySource>> {
        let rows = self
            .shared()
            .query_all(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("{SELECT} WHERE k.id = ANY($1)"),
                [ids.to_vec().into()],
            ))
            .await?;
        let mut sources = Vec::with_capacity(rows.len());
        for row in rows {
            sources.extend(decode(&row)?);
        }
        Ok(sources)
    }
}

/// `None` for a key of a type this version does not know: it is treated as absent.
fn decode(row: &QueryResult) -> Result<Option<KeySource>> {
    let key_type: String = row.try_get("", "type")?;
    let Some(key_type) = KeyType::from_name(&key_type) else {
        tracing::error!(key_type, "api key with an unknown type in the database");
        return Ok(None);
    };
    let key_id: Uuid = row.try_get("", "id")?;
    let list = |column: &str| -> Result<NameList> {
        let value: serde_json::Value = row.try_get("", column)?;
        let list = NameList::from_json(&value);
        if list == NameList::Unreadable {
            tracing::error!(%key_id, column, "unreadable name list in the database; refusing what it might forbid");
        }
        Ok(list)
    };
    let per_second: Option<i32> = row.try_get("", "rate_limit_events_per_second")?;
    let burst: Option<i32> = row.try_get("", "rate_limit_burst")?;
    let rate_limit = match (per_second, burst) {
        (Some(per_second), Some(burst)) => Some(ProjectRateLimit {
            events_per_second: u32::try_from(per_second).unwrap_or(0),
            burst: u32::try_from(burst).unwrap_or(0),
        }),
        _ => None,
    };
    Ok(Some(KeySource {
        key_id,
        project_id: row.try_get("", "project_id")?,
        key_type,
        revoked_at: row.try_get("", "revoked_at")?,
        expires_at: row.try_get("", "expires_at")?,
        trusted_events: list("trusted_events")?,
        trusted_events_version: row.try_get("", "trusted_events_version")?,
        allowed_origins: list("allowed_origins")?,
        rate_limit,
    }))
}
