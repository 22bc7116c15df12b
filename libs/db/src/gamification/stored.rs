//! Stored events as the rule library reads them, and the switch of a project's active rule
//! version: what replay and the management API (preview, publishing) share.

use chrono::{DateTime, Utc};
use gamify_rules::{Input, Kind, Source};
use sea_orm::{DbErr, sqlx};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::db_err;

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

/// The key class of a stored event (`events.key_type`).
pub fn source(key_type: &str) -> Source {
    if key_type == "secret" {
        Source::Secret
    } else {
        Source::Publishable
    }
}

/// A stored event as the rule library reads it: `events.payload` holds an identify's traits or a
/// track's properties.
pub struct StoredEvent<'a> {
    pub event_id: Uuid,
    pub user_id: &'a str,
    pub name: &'a str,
    pub source: Source,
    pub payload: Option<&'a Map<String, Value>>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

impl<'a> StoredEvent<'a> {
    pub fn input(&self) -> Input<'a> {
        let identify = self.name == gamify_common::events::IDENTIFY_EVENT;
        Input {
            event_id: self.event_id,
            kind: if identify {
                Kind::Identify
            } else {
                Kind::Track
            },
            name: self.name,
            source: self.source,
            user_id: self.user_id,
            properties: if identify { None } else { self.payload },
            traits: if identify { self.payload } else { None },
            occurred_at: self.occurred_at,
            received_at: self.received_at,
        }
    }
}

/// Retires the project's active rule version, if any; the caller makes another one active in the
/// same transaction.
pub async fn retire_active(txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
    sqlx::query(
        "UPDATE rule_versions SET state = 'retired', retired_at = now()
         WHERE project_id = $1 AND state = 'active'",
    )
    .bind(project_id)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    Ok(())
}
