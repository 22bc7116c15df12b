//! Liveness and readiness.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{AppState, Error, Result};

async fn root() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while the process runs.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when every dependency answers; 503 naming the first that does not.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>> {
    let postgres = tokio::time::timeout(state.0.readiness_timeout, state.db().ping()).await;
    if !matches!(postgres, Ok(Ok(()))) {
        tracing::warn!(dependency = "postgres", "readiness check failed");
        return Err(Error::Unavailable("postgres".to_owned()));
    }
    Ok(Json(
        json!({ "status": "ready", "checks": { "postgres": "ok" } }),
    ))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}
