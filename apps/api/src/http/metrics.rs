//! Prometheus metrics: the recorder, the per-route request middleware and `GET /metrics`.

use std::{
    collections::HashMap,
    future::Future,
    sync::{OnceLock, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use metrics::{Counter, Histogram};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// The request counter of one route and status, and the route's latency histogram.
struct RouteMetrics {
    requests: Counter,
    duration: Histogram,
}

impl RouteMetrics {
    fn record(&self, elapsed: std::time::Duration) {
        self.requests.increment(1);
        self.duration.record(elapsed);
    }
}

/// Handles by route and status, so a request costs two map lookups and no allocation: building a
/// labelled key (two label strings) and finding it in the registry cost more than the update.
/// Bounded: routes are the router's patterns (or "unmatched"), statuses are a few dozen.
fn record(route: &str, status: StatusCode, elapsed: std::time::Duration) {
    type ByRoute = HashMap<Box<str>, HashMap<u16, RouteMetrics>>;
    static HANDLES: OnceLock<RwLock<ByRoute>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let status = status.as_u16();
    if let Some(found) = handles
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(|by_status| by_status.get(&status))
    {
        found.record(elapsed);
        return;
    }
    let found = RouteMetrics {
        requests: metrics::counter!(
            "gamify_http_requests_total",
            "route" => route.to_owned(),
            "status" => status.to_string()
        ),
        duration: metrics::histogram!(
            "gamify_http_request_duration_seconds",
            "route" => route.to_owned()
        ),
    };
    handles
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(route.into())
        .or_default()
        .entry(status)
        .or_insert(found)
        .record(elapsed);
}

/// Counts the request by route and status and records its latency, around `handle` (whatever
/// answers it, the overload guard's 503 and 408 included).
pub async fn measured<F>(request: Request, handle: impl FnOnce(Request) -> F) -> Response
where
    F: Future<Output = Response>,
{
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = handle(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record(route, response.status(), started.elapsed());
    response
}

/// Prometheus text exposition; docs/API.md lists the metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
async fn render(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(render))
}
