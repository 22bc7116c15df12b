//! The one middleware each route gets (every route layer is a boxed service axum clones, and a
//! boxed future it allocates, per request: one layer composes what a route needs).

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

use crate::{
    http::{metrics, overload},
    state::AppState,
};

/// The API's routes: counted, shed when the gateway is at capacity, cut at the request deadline.
pub async fn api_route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    metrics::measured(request, |request| overload::guard(&state, request, next)).await
}

/// Health, readiness, metrics and the document: counted only, never shed, so an orchestrator sees
/// a busy gateway as alive.
pub async fn operational_route(request: Request, next: Next) -> Response {
    metrics::measured(request, |request| next.run(request)).await
}
