//! Prometheus metrics and the small HTTP server for `/metrics` and `/healthz`.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, Result},
    liveness::Liveness,
};

pub const CONSUMED: &str = "gamify_worker_messages_consumed_total";
pub const PERSISTED: &str = "gamify_worker_events_persisted_total";
pub const FAILED: &str = "gamify_worker_events_failed_total";
pub const DUPLICATES: &str = "gamify_worker_duplicates_total";
pub const DEAD_LETTERED: &str = "gamify_worker_messages_dead_lettered_total";
pub const DB_RETRIES: &str = "gamify_worker_db_retries_total";
pub const OFFSET_GAPS: &str = "gamify_worker_offset_gaps_total";
pub const BATCH_SIZE: &str = "gamify_worker_batch_size";
pub const BATCH_SECONDS: &str = "gamify_worker_batch_duration_seconds";
/// How long the loop waited for its next batch after finishing one: near zero when Postgres is
/// the bottleneck, most of the time when the broker (or the traffic) is.
pub const BATCH_WAIT_SECONDS: &str = "gamify_worker_batch_wait_seconds";
pub const LAG: &str = "gamify_worker_consumer_lag";

/// The recorder is process-global; several workers in one process (tests) share it. The lock
/// makes concurrent starts install it once.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

pub fn install() -> Result<PrometheusHandle> {
    let mut installed = HANDLE
        .lock()
        .map_err(|_| Error::Metrics("metrics lock poisoned".into()))?;
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(BATCH_SIZE.into()),
            &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
        )
        .and_then(|b| {
            let seconds = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            b.set_buckets_for_metric(Matcher::Full(BATCH_SECONDS.into()), &seconds)?
                .set_buckets_for_metric(Matcher::Full(BATCH_WAIT_SECONDS.into()), &seconds)
        })
        .map_err(|err| Error::Metrics(err.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    // Fails only when the process already has a recorder (a test running gamify-api in-process
    // too); metrics then go there instead of failing the worker.
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; worker metrics go to it");
    }
    *installed = Some(handle.clone());
    Ok(handle)
}

/// What one worker did, for its caller (tests, the final log line). Prometheus has the same numbers
/// aggregated per process.
#[derive(Debug, Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub persisted: AtomicU64,
    pub failed: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    /// Partitions currently assigned to this worker.
    pub assigned: AtomicU64,
    /// Assignments and revocations seen.
    pub rebalances: AtomicU64,
    /// Attempts at a batch that failed because Postgres was unreachable or failing.
    pub db_retries: AtomicU64,
    /// Times a partition continued past the offset it should have continued from.
    pub offset_gaps: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(Arc::new(handle))
        .route("/healthz", get(healthz).with_state(liveness));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// 200 while the consumer loop advances or has nothing to do; 503 when it has not advanced for
/// the stall timeout while work waits, so an orchestrator restarts the worker.
async fn healthz(State(liveness): State<Arc<Liveness>>) -> impl IntoResponse {
    match liveness.stalled() {
        None => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Some(since) => {
            tracing::error!(
                stalled_ms = since.as_millis() as u64,
                "the consumer loop is stalled"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "stalled", "stalledForSeconds": since.as_secs() })),
            )
        }
    }
}

async fn render(State(handle): State<Arc<PrometheusHandle>>) -> impl IntoResponse {
    // Without the exporter's own HTTP listener nobody else drains histogram buffers.
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
