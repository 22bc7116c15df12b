//! Changes that make a key refuse what it accepted before. Each is written first with a provisional
//! instant (the latest it can take to hold on every gateway) and brought forward once every
//! gateway confirmed it: the instant is when the key stopped being accepted, which the worker
//! judges events by.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

use crate::{Db, Result};

impl Db {
    /// Revokes the key from `at` unless it already was revoked; its revocation instant, or `None`
    /// when there is no such key.
    pub async fn revoke_key(
        &self,
        key_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        revoke_key_in(self.shared(), key_id, at).await
    }

    /// Brings the key's revocation forward to `to`; never moves it later.
    pub async fn bring_revocation_forward(&self, key_id: Uuid, to: DateTime<Utc>) -> Result<()> {
        self.bring_forward("revoked_at", key_id, to).await
    }

    /// Brings the key's expiry forward to `to`; never moves it later.
    pub async fn bring_expiry_forward(&self, key_id: Uuid, to: DateTime<Utc>) -> Result<()> {
        self.bring_forward("expires_at", key_id, to).await
    }

    async fn bring_forward(
        &self,
        column: &'static str,
        key_id: Uuid,
        to: DateTime<Utc>,
    ) -> Result<()> {
        self.shared()
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("UPDATE api_keys SET {column} = $2 WHERE id = $1 AND {column} > $2"),
                [key_id.into(), to.into()],
            ))
            .await?;
        Ok(())
    }
}

/// [`Db::revoke_key`] inside a transaction the caller holds (one that also writes the audit log).
pub async fn revoke_key_in(
    conn: &impl ConnectionTrait,
    key_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let row = conn
        .query_one(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1
             RETURNING revoked_at",
            [key_id.into(), at.into()],
        ))
        .await?;
    Ok(row.map(|row| row.try_get("", "revoked_at")).transpose()?)
}
