//! Postgres access for Gamify. Tenant data (end users, events) sits behind row-level security, and
//! [`Db::tenant`] is the only place in the code base that tells Postgres which tenant is acting.

pub mod entities;
pub mod gamification;
pub mod key_changes;
pub mod sources;
pub mod trusted_lists;

use std::{ops::Deref, time::Duration};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    Statement, TransactionTrait,
};
use uuid::Uuid;

pub use sea_orm;
use sea_orm::sqlx;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether Postgres cancelled the statement for running past its `statement_timeout`.
pub fn is_statement_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.code().as_deref() == Some("57014"))
}

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// Postgres cancels any statement running longer (SQLSTATE 57014), so no query can hang a
    /// caller for good.
    pub statement_timeout: Duration,
    /// Postgres ends a session left idle inside a transaction this long (SQLSTATE 25P03), so a
    /// stuck caller cannot hold locks that delay every other tenant.
    pub idle_in_transaction_timeout: Duration,
    /// Connect on first use instead of at once (a process that may not need Postgres at all, such
    /// as the gateway's unit tests of its ingestion path).
    pub lazy: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 20,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
            lazy: false,
        }
    }
}

/// A pool of connections as the application role.
#[derive(Debug, Clone)]
pub struct Db {
    conn: DatabaseConnection,
}

impl Db {
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self> {
        let mut connect = ConnectOptions::new(url);
        connect
            .max_connections(options.max_connections)
            .min_connections(u32::from(!options.lazy))
            .connect_lazy(options.lazy)
            .connect_timeout(options.connect_timeout)
            .acquire_timeout(options.connect_timeout)
            .sqlx_logging(false);
        let statement_ms = options.statement_timeout.as_millis().to_string();
        let idle_ms = options.idle_in_transaction_timeout.as_millis().to_string();
        connect.map_sqlx_postgres_opts(move |postgres| {
            postgres.options([
                ("statement_timeout", statement_ms.as_str()),
                ("idle_in_transaction_session_timeout", idle_ms.as_str()),
            ])
        });
        Ok(Self {
            conn: Database::connect(connect).await?,
        })
    }

    /// For tables without row-level security (organizations, projects, api keys).
    pub fn shared(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Opens a transaction scoped to one tenant: row-level security shows and accepts only rows of
    /// `project_id` until the transaction ends. The setting is transaction-local, so it never leaks
    /// to the next user of the pooled connection.
    pub async fn tenant(&self, project_id: Uuid) -> Result<TenantTransaction> {
        let txn = self.conn.begin().await?;
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT set_config('app.project_id', $1, true)",
            [project_id.to_string().into()],
        ))
        .await?;
        Ok(TenantTransaction { txn, project_id })
    }

    /// Runs one read in `project_id`'s tenant scope (its own transaction) and returns the rows.
    pub async fn tenant_rows(
        &self,
        project_id: Uuid,
        sql: impl Into<String>,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<sea_orm::QueryResult>> {
        let txn = self.tenant(project_id).await?;
        let rows = read(&txn.txn, sql.into(), values).await?;
        txn.commit().await?;
        Ok(rows)
    }

    /// Runs one read in an accounts `scope` (its own transaction) and returns the rows.
    pub async fn accounts_rows(
        &self,
        scope: &AccountScope,
        sql: impl Into<String>,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<sea_orm::QueryResult>> {
        let txn = self.accounts(scope).await?;
        let rows = read(&txn, sql.into(), values).await?;
        txn.commit().await?;
        Ok(rows)
    }

    /// A read-only tenant transaction on sqlx for analytics, whose statements Postgres cancels
    /// after `statement_timeout` (SQLSTATE 57014, see [`is_statement_timeout`]) instead of the
    /// pool's longer default: analytics queries scan as much as their filters select, and a
    /// request must be refused rather than left to hang. Two settings for scans of millions of
    /// rows, measured on the 20-million-event benchmark (docs/BENCHMARKS.md): no JIT (compiling
    /// a funnel's plan took 0.9 s of its 1.9 s, and a query runs once); sorts and hashes of up
    /// to 64 MB in memory instead of spilling to disk at the default 4 MB; and a plan for each
    /// execution's own range: after five runs of a prepared statement Postgres may switch to a
    /// generic plan, which for a funnel was a serial index scan of 14 days, 5–7 s instead of 2.
    pub async fn tenant_bounded(
        &self,
        project_id: Uuid,
        statement_timeout: Duration,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut txn = self.conn.get_postgres_connection_pool().begin().await?;
        sqlx::query(
            "SELECT set_config('app.project_id', $1, true), set_config('statement_timeout', $2, true), \
             set_config('transaction_read_only', 'on', true), set_config('jit', 'off', true), \
             set_config('work_mem', '64MB', true), set_config('plan_cache_mode', 'force_custom_plan', true)",
        )
        .bind(project_id.to_string())
        .bind(format!("{}ms", statement_timeout.as_millis().max(1)))
        .execute(&mut *txn)
        .await?;
        Ok(txn)
    }

    /// The same tenant scope as [`Db::tenant`], on a plain sqlx transaction: bulk writes bind
    /// whole columns as typed arrays in Postgres's binary format, with NULL elements, which
    /// sea-orm's values cannot carry.
    pub async fn tenant_bulk(
        &self,
        project_id: Uuid,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut txn = self.conn.get_postgres_connection_pool().begin().await?;
        sqlx::query("SELECT set_config('app.project_id', $1, true)")
            .bind(project_id.to_string())
            .execute(&mut *txn)
            .await?;
        Ok(txn)
    }

    /// [`Db::tenant_bulk`] that also takes the transaction-level advisory lock `lock` shared, in the
    /// same round trip (the gamification engine's project lock: every evaluating transaction
    /// starts with it).
    pub async fn tenant_bulk_sharing(
        &self,
        project_id: Uuid,
        lock: i64,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut txn = self.conn.get_postgres_connection_pool().begin().await?;
        sqlx::query(
            "SELECT set_config('app.project_id', $1, true), pg_advisory_xact_lock_shared($2)",
        )
        .bind(project_id.to_string())
        .bind(lock)
        .execute(&mut *txn)
        .await?;
        Ok(txn)
    }

    /// A transaction scoped to what the acting request has established about accounts (the
    /// tables of people, memberships, sessions, tokens, invitations and the audit log): row-level
    /// security shows only the rows `scope` names. One round trip; the settings end with the
    /// transaction.
    pub async fn accounts(&self, scope: &AccountScope) -> Result<DatabaseTransaction> {
        let txn = self.conn.begin().await?;
        scope.apply(&txn).await?;
        Ok(txn)
    }

    /// Creates the monthly partitions of `events` up to `months_ahead` months from now, through the
    /// owner's SECURITY DEFINER function (the application role may not create tables itself).
    pub async fn ensure_event_partitions(&self, months_ahead: i32) -> Result<()> {
        self.conn
            .execute(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                "SELECT gamify_ensure_event_partitions($1)",
                [months_ahead.into()],
            ))
            .await?;
        Ok(())
    }

    /// Retention: drops every month of events that ended before `cutoff`'s month began, with the
    /// dedup keys of those events, through the owner's SECURITY DEFINER function. Returns the
    /// number of monthly partitions dropped.
    pub async fn drop_events_before(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<i32> {
        let row = self
            .conn
            .query_one(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                "SELECT gamify_drop_events_before($1) AS dropped",
                [cutoff.into()],
            ))
            .await?;
        Ok(row
            .map(|row| row.try_get::<i32>("", "dropped"))
            .transpose()?
            .unwrap_or(0))
    }

    pub async fn ping(&self) -> Result<()> {
        self.conn.ping().await?;
        Ok(())
    }

    pub async fn close(self) -> Result<()> {
        self.conn.close().await?;
        Ok(())
    }
}

async fn read(
    txn: &DatabaseTransaction,
    sql: String,
    values: Vec<sea_orm::Value>,
) -> Result<Vec<sea_orm::QueryResult>> {
    Ok(txn
        .query_all(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            values,
        ))
        .await?)
}

/// What an accounts transaction ([`Db::accounts`]) may see: each field set widens it by the rows
/// that one fact names, and nothing is visible without one.
#[derive(Debug, Clone, Default)]
pub struct AccountScope {
    /// The organization the caller was authorized for: its memberships, invitations, tokens,
    /// audit log, and its members' user rows.
    pub organization: Option<Uuid>,
    /// The signed-in person: their user row, memberships and sessions.
    pub user: Option<Uuid>,
    /// SHA-256 of a session id the request holds: that session.
    pub session_hash: Option<[u8; 32]>,
    /// SHA-256 of a management token the request holds: that token.
    pub token_hash: Option<[u8; 32]>,
    /// SHA-256 of an invitation token the request holds: that invitation.
    pub invitation_hash: Option<[u8; 32]>,
    /// The (lower-cased) email someone is signing in with: that user.
    pub sign_in_email: Option<String>,
}

impl AccountScope {
    /// Sets the scope on a transaction already open (one that also writes management tables).
    pub async fn apply(&self, txn: &DatabaseTransaction) -> Result<()> {
        let uuid = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
        let hash = |hash: Option<[u8; 32]>| hash.map(hex::encode).unwrap_or_default();
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT set_config('app.organization_id', $1, true), set_config('app.user_id', $2, true), \
             set_config('app.session_hash', $3, true), set_config('app.token_hash', $4, true), \
             set_config('app.invitation_hash', $5, true), set_config('app.sign_in_email', $6, true)",
            [
                uuid(self.organization).into(),
                uuid(self.user).into(),
                hash(self.session_hash).into(),
                hash(self.token_hash).into(),
                hash(self.invitation_hash).into(),
                self.sign_in_email.clone().unwrap_or_default().into(),
            ],
        ))
        .await?;
        Ok(())
    }

    pub fn organization(id: Uuid) -> Self {
        Self {
            organization: Some(id),
            ..Self::default()
        }
    }

    pub fn user(id: Uuid) -> Self {
        Self {
            user: Some(id),
            ..Self::default()
        }
    }
}

/// A transaction in which Postgres sees exactly one tenant. Dropped without [`commit`] it rolls
/// back.
///
/// [`commit`]: TenantTransaction::commit
#[derive(Debug)]
pub struct TenantTransaction {
    txn: DatabaseTransaction,
    project_id: Uuid,
}

impl TenantTransaction {
    pub fn project_id(&self) -> Uuid {
        self.project_id
    }

    pub async fn commit(self) -> Result<()> {
        self.txn.commit().await?;
        Ok(())
    }
}

impl Deref for TenantTransaction {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}
