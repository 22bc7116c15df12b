//! Schema migrations. They run as the owner role (`DATABASE_OWNER_URL`), which owns every table; the
//! application role that gamify-api and gamify-worker use is created and granted DML here, so it can
//! never alter the schema nor bypass row-level security.

use sea_orm_migration::{
    MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
    sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement},
};

mod m20261123_000001_tenancy_and_events;
mod m20261123_000002_api_key_allowed_origins;
mod m20261123_000003_partition_upkeep_by_the_application;
mod m20261123_000004_partition_creation_without_deadlocks;
mod m20261124_000005_dedup_scoped_by_key_class;
mod m20261124_000006_project_rate_limits;
mod m20261124_000007_event_retention;
mod m20261124_000008_retention_without_deadlocks;
mod m20261124_000009_events_without_row_foreign_keys;
mod m20261204_000010_versioned_trusted_events;
mod m20261204_000011_gamification_engine;
mod m20261205_000012_accounts_and_audit;
mod m20261205_000013_event_rollups;
mod m20261206_000014_engine_hot_updates;
mod m20261206_000015_outcome_awards_as_json;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_tenancy_and_events::migration()),
            Box::new(m20261123_000002_api_key_allowed_origins::migration()),
            Box::new(m20261123_000003_partition_upkeep_by_the_application::migration()),
            Box::new(m20261123_000004_partition_creation_without_deadlocks::migration()),
            Box::new(m20261124_000005_dedup_scoped_by_key_class::migration()),
            Box::new(m20261124_000006_project_rate_limits::migration()),
            Box::new(m20261124_000007_event_retention::migration()),
            Box::new(m20261124_000008_retention_without_deadlocks::migration()),
            Box::new(m20261124_000009_events_without_row_foreign_keys::migration()),
            Box::new(m20261204_000010_versioned_trusted_events::migration()),
            Box::new(m20261204_000011_gamification_engine::migration()),
            Box::new(m20261205_000012_accounts_and_audit::migration()),
            Box::new(m20261205_000013_event_rollups::migration()),
            Box::new(m20261206_000014_engine_hot_updates::migration()),
            Box::new(m20261206_000015_outcome_awards_as_json::migration()),
        ]
    }
}

/// A migration written as SQL: partitioning, policies and functions have no schema-builder form,
/// and SQL is what an operator reads when auditing tenant isolation.
pub struct SqlMigration {
    name: &'static str,
    up: &'static str,
    /// Empty when going down deliberately changes nothing.
    down: &'static str,
}

impl MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SqlMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(self.up).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !self.down.is_empty() {
            manager
                .get_connection()
                .execute_unprepared(self.down)
                .await?;
        }
        Ok(())
    }
}

/// Tables the application role may read and write. Partitions of `events` are deliberately absent:
/// reaching them directly would skip the parent's row-level security policies.
const APPLICATION_TABLES: &[&str] = &[
    "organizations",
    "projects",
    "api_keys",
    "end_users",
    "events",
    "event_message_ids",
    "superseded_trusted_events",
    "rule_versions",
    "engine_user_states",
    "engine_outcomes",
    "engine_message_ids",
    "points_ledger",
    "leaderboard_scores",
    "leaderboard_score_counts",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "webhook_queue",
    "users",
    "memberships",
    "invitations",
    "sessions",
    "org_tokens",
    "event_rollups",
    "user_first_seen",
];

/// Tables the application role may only read and append to.
const APPEND_ONLY_TABLES: &[&str] = &["audit_log"];

/// How many monthly partitions of `events` exist ahead of the current month after migrating.
pub const PARTITION_MONTHS_AHEAD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("the application role name {0:?} is not a plain identifier")]
    BadRoleName(String),
}

/// The application role as parsed from `DATABASE_URL`.
#[derive(Debug, Clone)]
pub struct ApplicationRole {
    pub name: String,
    pub password: Option<String>,
}

/// Applies pending migrations, makes sure the application role exists with DML grants only, and
/// creates the upcoming monthly partitions of `events`.
pub async fn migrate(owner_url: &str, application_role: &ApplicationRole) -> Result<(), Error> {
    let mut options = ConnectOptions::new(owner_url);
    options.sqlx_logging(false);
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    ensure_application_role(&db, application_role).await?;
    ensure_event_partitions(&db, PARTITION_MONTHS_AHEAD).await?;
    db.close().await?;
    Ok(())
}

/// Creates the monthly partitions of `events` from the current month to `months_ahead` months after
/// it. Safe to call repeatedly and concurrently; `migrate` calls it, and so does gamify-worker at
/// start and daily (as the application role, through the SECURITY DEFINER function).
pub async fn ensure_event_partitions(
    db: &DatabaseConnection,
    months_ahead: i32,
) -> Result<(), Error> {
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT gamify_ensure_event_partitions($1)",
        [months_ahead.into()],
    ))
    .await?;
    Ok(())
}

async fn ensure_application_role(
    db: &DatabaseConnection,
    role: &ApplicationRole,
) -> Result<(), Error> {
    let name = quote_identifier(&role.name)?;
    let password = match &role.password {
        Some(password) => format!("PASSWORD {}", quote_literal(password)),
        None => String::new(),
    };
    let exists = db
        .query_one(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            [role.name.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        tracing::info!(role = %role.name, "creating application role");
        db.execute_unprepared(&format!(
            "CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS {password}"
        ))
        .await?;
    }
    let tables = APPLICATION_TABLES.join(", ");
    let append_only = APPEND_ONLY_TABLES.join(", ");
    let database: String = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_database() AS name",
        ))
        .await?
        .map(|row| row.try_get("", "name"))
        .transpose()?
        .unwrap_or_default();
    let database = quote_identifier(&database)?;
    db.execute_unprepared(&format!(
        "GRANT CONNECT ON DATABASE {database} TO {name};
         GRANT USAGE ON SCHEMA public TO {name};
         GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {name};
         GRANT SELECT, INSERT ON {append_only} TO {name};
         GRANT USAGE ON SEQUENCE engine_seq TO {name};
         GRANT EXECUTE ON FUNCTION gamify_ensure_event_partitions(integer) TO {name};
         GRANT EXECUTE ON FUNCTION gamify_drop_events_before(timestamptz) TO {name};"
    ))
    .await?;
    Ok(())
}

fn quote_identifier(name: &str) -> Result<String, Error> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(format!("\"{name}\""))
    } else {
        Err(Error::BadRoleName(name.to_owned()))
    }
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
