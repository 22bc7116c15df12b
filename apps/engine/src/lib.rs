//! gamify-engine: its own consumer group on the events topic. Each event the storage path stores
//! is re-checked the same way and evaluated once against the project's active rules (the rule
//! library `gamify-rules`, which has no I/O); state, awards, the points ledger, leaderboard scores,
//! the webhook outbox and the engine's dedup record commit in one tenant transaction. Beside the
//! consumer loop it runs rule-version replays and the webhook dispatcher. See docs/GAMIFICATION.md.

pub mod config;
pub mod error;
pub mod evaluate;
pub mod metrics;
pub mod replay;
pub mod webhooks;

use std::sync::Arc;

use gamify_db::{Db, PoolOptions};
use sea_orm::{DbErr, RuntimeErr, sqlx};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};

/// An engine that has connected to Postgres and bound its metrics port, ready to consume.
pub struct Engine {
    consumer: gamify_worker::Worker,
    db: Db,
    rule_sets: gamify_db::gamification::rule_sets::RuleSets,
    config: Config,
}

impl Engine {
    pub async fn start(config: Config) -> Result<Self> {
        let rule_sets = gamify_db::gamification::rule_sets::RuleSets::default();
        let stage = Arc::new(evaluate::Evaluate {
            rule_sets: rule_sets.clone(),
        });
        let consumer = gamify_worker::Worker::start_with(config.consumer.clone(), stage).await?;
        metrics::describe();
        let db = Db::connect(&config.consumer.database_url, PoolOptions::default())
            .await
            .map_err(|err| Error::Consumer(gamify_worker::Error::Connect(err)))?;
        Ok(Self {
            consumer,
            db,
            rule_sets,
            config,
        })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        Ok(self.consumer.local_addr()?)
    }

    /// Consumes, replays and delivers until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let replays = tokio::spawn(replay::run(
            self.db.clone(),
            self.rule_sets.clone(),
            shutdown.clone(),
        ));
        let webhooks = tokio::spawn(webhooks::run(
            self.db.clone(),
            self.config.webhooks_allow_private,
            shutdown.clone(),
        ));
        let result = self.consumer.run(shutdown).await;
        replays.abort();
        webhooks.abort();
        Ok(result?)
    }
}

/// Starts an engine and runs it until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    Engine::start(config).await?.run(shutdown).await
}

pub(crate) fn db_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err))
}
