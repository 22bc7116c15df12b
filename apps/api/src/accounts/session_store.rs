//! tower-sessions' store for console sessions, in Postgres: a session is found by the SHA-256 of
//! its id (the cookie's value exists only in the browser), carries its user in a column (listing,
//! "sign out everywhere"), and once deleted — signed out or revoked — is never written back by a
//! request still holding it.

use gamify_db::{
    AccountScope, Db,
    sea_orm::{ConnectionTrait, DbErr, Statement},
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store::{Error as StoreError, Result as StoreResult},
};
use uuid::Uuid;

/// The session data key holding the signed-in person.
pub const USER_KEY: &str = "user";

#[derive(Debug, Clone)]
pub struct PgSessionStore {
    db: Db,
}

impl PgSessionStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// SHA-256 of the id as the cookie carries it.
pub fn session_hash(id: &Id) -> [u8; 32] {
    Sha256::digest(id.to_string().as_bytes()).into()
}

fn backend(error: DbErr) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn user_of(record: &Record) -> StoreResult<Uuid> {
    record
        .data
        .get(USER_KEY)
        .and_then(|user| user.get("id"))
        .and_then(|id| id.as_str())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| StoreError::Encode("a session is stored only once someone signed in".into()))
}

fn expiry(record: &Record) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(record.expiry_date.unix_timestamp(), 0).unwrap_or_default()
}

#[async_trait::async_trait]
impl SessionStore for PgSessionStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        let user = user_of(record)?;
        let data = serde_json::to_value(&record.data)
            .map_err(|error| StoreError::Encode(error.to_string()))?;
        // A colliding id (2^-128) is drawn again rather than overwriting someone's session.
        loop {
            let hash = session_hash(&record.id);
            let txn = self
                .db
                .accounts(&AccountScope {
                    user: Some(user),
                    session_hash: Some(hash),
                    ..AccountScope::default()
                })
                .await
                .map_err(|error| StoreError::Backend(error.to_string()))?;
            let inserted = txn
                .execute(Statement::from_sql_and_values(
                    txn.get_database_backend(),
                    "INSERT INTO sessions (id, id_hash, user_id, data, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id_hash) DO NOTHING",
                    [
                        Uuid::now_v7().into(),
                        hash.to_vec().into(),
                        user.into(),
                        data.clone().into(),
                        expiry(record).into(),
                    ],
                ))
                .await
                .map_err(backend)?
                .rows_affected();
            txn.commit().await.map_err(backend)?;
            if inserted == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        let data = serde_json::to_value(&record.data)
            .map_err(|error| StoreError::Encode(error.to_string()))?;
        let txn = self
            .db
            .accounts(&AccountScope {
                session_hash: Some(session_hash(&record.id)),
                user: user_of(record).ok(),
                ..AccountScope::default()
            })
            .await
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        // An update only: a session deleted meanwhile stays deleted.
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE sessions SET data = $2, expires_at = $3, last_seen_at = now() WHERE id_hash = $1",
            [
                session_hash(&record.id).to_vec().into(),
                data.into(),
                expiry(record).into(),
            ],
        ))
        .await
        .map_err(backend)?;
        txn.commit().await.map_err(backend)
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        let hash = session_hash(id);
        let txn = self
            .db
            .accounts(&AccountScope {
                session_hash: Some(hash),
                ..AccountScope::default()
            })
            .await
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let row = txn
            .query_one(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "SELECT data, extract(epoch FROM expires_at)::bigint AS expires \
                 FROM sessions WHERE id_hash = $1 AND expires_at > now()",
                [hash.to_vec().into()],
            ))
            .await
            .map_err(backend)?;
        txn.commit().await.map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let data: serde_json::Value = row.try_get("", "data").map_err(backend)?;
        let expires: i64 = row.try_get("", "expires").map_err(backend)?;
        Ok(Some(Record {
            id: *id,
            data: serde_json::from_value(data)
                .map_err(|error| StoreError::Decode(error.to_string()))?,
            expiry_date: OffsetDateTime::from_unix_timestamp(expires)
                .map_err(|error| StoreError::Decode(error.to_string()))?,
        }))
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        let hash = session_hash(id);
        let txn = self
            .db
            .accounts(&AccountScope {
                session_hash: Some(hash),
                ..AccountScope::default()
            })
            .await
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "DELETE FROM sessions WHERE id_hash = $1",
            [hash.to_vec().into()],
        ))
        .await
        .map_err(backend)?;
        txn.commit().await.map_err(backend)
    }
}
