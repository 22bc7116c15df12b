//! Load shedding and the request deadline: at most `HTTP_MAX_IN_FLIGHT` API requests are handled
//! at once, the rest get 503 with Retry-After at once instead of queueing until the gateway falls
//! over; and a request not done within `HTTP_REQUEST_TIMEOUT_MS` (a client trickling its body) gets
//! 408. Applied to the API's routes only (`http::layers`): health, readiness and metrics are not
//! governed by it, so an orchestrator sees a busy gateway as alive.

use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{http::error::Error, state::AppState};

pub async fn guard(state: &AppState, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.in_flight().try_acquire() else {
        metrics::counter!("gamify_http_shed_total").increment(1);
        return Error::unavailable(
            "the gateway is at capacity; retry after Retry-After seconds",
            Some(1),
        )
        .into_response();
    };
    match tokio::time::timeout(state.http_limits().request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::RequestTimeout.into_response(),
    }
}
