//! Liveness and readiness.

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        error::{Error, Result},
        schemas::{Readiness, StatusOk},
    },
    state::AppState,
};

/// 200 `{"status":"ok"}`.
#[utoipa::path(get, path = "/", tag = "health", responses((status = 200, description = "The process runs", body = StatusOk)))]
async fn root() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process runs", body = StatusOk)))]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when Postgres and the broker answer: `"ready"`, or `"degraded"` when Redis does not, since
/// the gateway serves without it (keys from Postgres, local rate limits). 503 naming the required
/// dependencies that do not answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Postgres and the broker answer: `ready`, or `degraded` when Redis does not", body = Readiness),
        (status = 503, description = "Postgres or the broker does not answer (`unavailable`; the message names them)", body = crate::http::schemas::ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>> {
    let timeout = state.readiness_timeout();
    let (postgres, redis, kafka) = tokio::join!(
        tokio::time::timeout(timeout, state.db().ping()),
        // Through the breaker: while Redis is known to be down this answers at once.
        tokio::time::timeout(timeout, state.redis().ping()),
        state.sink().check(timeout),
    );
    let redis_ok = matches!(redis, Ok(Ok(())));
    let required = [
        ("postgres", matches!(postgres, Ok(Ok(())))),
        ("kafka", kafka.is_ok()),
    ];
    let status = |ok: bool| json!(if ok { "ok" } else { "failing" });
    let mut checks = Map::new();
    checks.insert("postgres".to_owned(), status(required[0].1));
    checks.insert("redis".to_owned(), status(redis_ok));
    checks.insert("kafka".to_owned(), status(required[1].1));
    let failing: Vec<&str> = required
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    if failing.is_empty() {
        if !redis_ok {
            tracing::debug!("ready without redis (degraded)");
        }
        let overall = if redis_ok { "ready" } else { "degraded" };
        return Ok(Json(json!({ "status": overall, "checks": checks })));
    }
    tracing::warn!(failing = ?failing, redis_ok, "readiness check failed");
    let degraded = if redis_ok { "" } else { "; redis degraded" };
    Err(Error::unavailable(
        format!("not ready: {} not available{degraded}", failing.join(", ")),
        None,
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}
