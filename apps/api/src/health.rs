//! Liveness and readiness.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Map, Value, json};

use crate::{AppState, Error, Result};

async fn root() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while the process runs.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when Postgres, Redis and the broker answer; 503 naming those that do not.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>> {
    let timeout = state.0.readiness_timeout;
    let (postgres, redis, kafka) = tokio::join!(
        tokio::time::timeout(timeout, state.db().ping()),
        tokio::time::timeout(timeout, state.redis().ping()),
        state.producer().check(timeout),
    );
    let results = [
        ("postgres", matches!(postgres, Ok(Ok(())))),
        ("redis", matches!(redis, Ok(Ok(())))),
        ("kafka", kafka.is_ok()),
    ];
    let checks: Map<String, Value> = results
        .iter()
        .map(|(name, ok)| {
            (
                (*name).to_owned(),
                json!(if *ok { "ok" } else { "failing" }),
            )
        })
        .collect();
    let failing: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    if failing.is_empty() {
        return Ok(Json(json!({ "status": "ready", "checks": checks })));
    }
    tracing::warn!(failing = ?failing, "readiness check failed");
    Err(Error::unavailable(
        format!("not ready: {} not available", failing.join(", ")),
        None,
    ))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}
