//! gamify-worker: consumes the envelopes gamify-api acknowledged, re-checks them, and stores each
//! one exactly once under row-level security. See docs/WORKER.md.

pub mod check;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod error;
pub mod liveness;
pub mod metrics;
pub mod persist;
pub mod stage;

use std::{net::SocketAddr, sync::Arc};

use gamify_db::{Db, PoolOptions};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};
pub use liveness::Liveness;
pub use metrics::Stats;

/// A worker that has connected to Postgres and bound its HTTP port, ready to consume.
pub struct Worker {
    stage: Arc<dyn stage::Stage>,
    config: Config,
    db: Db,
    listener: TcpListener,
    handle: PrometheusHandle,
    stats: Arc<Stats>,
}

impl Worker {
    pub async fn start(config: Config) -> Result<Self> {
        let rollups = if config.analytics_rollups {
            persist::Rollups::Kept
        } else {
            persist::Rollups::Skipped
        };
        Self::start_with(config, Arc::new(stage::Store { rollups })).await
    }

    /// A consumer loop that hands checked events to `stage` (the gamification engine's).
    pub async fn start_with(config: Config, stage: Arc<dyn stage::Stage>) -> Result<Self> {
        let handle = metrics::install()?;
        let defaults = PoolOptions::default();
        let options = PoolOptions {
            statement_timeout: config.statement_timeout,
            // Every concurrent transaction of a batch, plus the source lookups and upkeep.
            max_connections: defaults
                .max_connections
                .max(config.db_concurrency as u32 + 4),
            ..defaults
        };
        let db = Db::connect(&config.database_url, options)
            .await
            .map_err(Error::Connect)?;
        db.ping().await.map_err(Error::Connect)?;
        let listener = TcpListener::bind(("0.0.0.0", config.port))
            .await
            .map_err(Error::Listen)?;
        Ok(Self {
            stage,
            config,
            db,
            listener,
            handle,
            stats: Arc::default(),
        })
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Listen)
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown` is cancelled, then finishes the current batch, commits its
    /// offsets and leaves the consumer group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let addr = self.local_addr()?;
        let server_stop = CancellationToken::new();
        let liveness = Arc::new(Liveness::new(self.config.stall_timeout));
        let upkeep_handle = self.handle.clone();
        let metrics_upkeep = tokio::spawn(async move {
            // Histogram samples are drained into buckets here, not only when scraped.
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                ticks.tick().await;
                upkeep_handle.run_upkeep();
            }
        });
        let server = tokio::spawn(metrics::serve(
            self.listener,
            self.handle,
            Arc::clone(&liveness),
            server_stop.clone(),
        ));
        let consumer = Arc::new(consumer::consumer(
            &self.config,
            Arc::clone(&self.stats),
            Arc::clone(&liveness),
        )?);
        let dead_letters = if self.stage.stores_events() {
            Some(dlq::DeadLetters::new(&self.config)?)
        } else {
            None
        };
        tracing::info!(
            %addr,
            topic = %self.config.topic,
            group_id = %self.config.group_id,
            // Config's Debug redacts the database password and leaves the envelope secret out.
            config = ?self.config,
            stage = self.stage.name(),
            "consumer ready"
        );
        let worker_loop = consumer::Loop {
            sources: check::Sources::new(self.config.source_cache_ttl),
            config: self.config,
            db: self.db.clone(),
            consumer: Arc::clone(&consumer),
            dead_letters,
            stage: Arc::clone(&self.stage),
            stats: Arc::clone(&self.stats),
            expected: Default::default(),
            generation: 0,
            liveness,
            pending_commit: None,
        };
        // Partitions and retention are the storage worker's to keep.
        let upkeep = self.stage.stores_events().then(|| {
            tokio::spawn(keep_partitions(
                self.db.clone(),
                worker_loop.config.retention_months,
                shutdown.clone(),
            ))
        });
        let result = worker_loop.run(shutdown).await;
        if let Some(upkeep) = upkeep {
            upkeep.abort();
        }
        metrics_upkeep.abort();

        // Closing the consumer leaves the group at once, so the partitions move to the other
        // workers without waiting for the session to time out. It blocks while it does so.
        // Bounded like everything after a stop: a broker that does not answer must not keep the
        // process past its grace period (the session timeout then moves the partitions).
        let close = tokio::task::spawn_blocking(move || drop(consumer));
        match tokio::time::timeout(CLOSE_TIMEOUT, close).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "closing the consumer failed"),
            Err(_) => tracing::warn!("the consumer did not close in time; exiting without it"),
        }
        server_stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "metrics server failed"),
            Err(err) => tracing::warn!(error = %err, "metrics server task failed"),
        }
        // A connection still running an abandoned batch's statement would hold `close` until the
        // statement timeout; the process exit ends it (and rolls its transaction back) at once.
        match tokio::time::timeout(CLOSE_TIMEOUT, self.db.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "closing the database pool failed"),
            Err(_) => {
                tracing::warn!("database connections still busy; exiting without waiting for them")
            }
        }
        let stats = &self.stats;
        tracing::info!(
            consumed = Stats::get(&stats.consumed),
            persisted = Stats::get(&stats.persisted),
            failed = Stats::get(&stats.failed),
            duplicates = Stats::get(&stats.duplicates),
            dead_lettered = Stats::get(&stats.dead_lettered),
            offset_gaps = Stats::get(&stats.offset_gaps),
            stage = self.stage.name(),
            "consumer stopped cleanly"
        );
        result
    }
}

/// How long each step of closing (consumer, database pool) may take once the loop has stopped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Monthly partitions of `events` this far ahead are kept in existence.
const PARTITION_MONTHS_AHEAD: i32 = 3;
const PARTITION_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Creates upcoming event partitions at start and daily, so no deployment depends on an operator
/// remembering to (rows would otherwise fall into the default partition), and with a retention set
/// drops the months past it together with their dedup keys.
async fn keep_partitions(db: Db, retention_months: Option<u32>, shutdown: CancellationToken) {
    loop {
        if let Some(months) = retention_months {
            let cutoff = chrono::Utc::now()
                .checked_sub_months(chrono::Months::new(months))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            match db.drop_events_before(cutoff).await {
                Ok(dropped) => tracing::info!(months, dropped, "event retention applied"),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot apply event retention; retrying tomorrow")
                }
            }
        }
        match db.ensure_event_partitions(PARTITION_MONTHS_AHEAD).await {
            Ok(()) => tracing::debug!(
                months_ahead = PARTITION_MONTHS_AHEAD,
                "event partitions ensured"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "cannot ensure upcoming event partitions; retrying tomorrow")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PARTITION_UPKEEP_INTERVAL) => {}
        }
    }
}

/// Starts a worker and runs it until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    Worker::start(config).await?.run(shutdown).await
}
