//! gamify-api: the management API (organizations, projects, keys) and, in later issues, event
//! ingestion.

pub mod config;
pub mod error;
pub mod extract;
mod health;
mod v1;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::Request};
use gamify_db::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use crate::error::{Error, Result};

/// Request bodies of the management API are small; ingestion sets its own limits.
pub const MANAGEMENT_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    db: Db,
    admin_token: String,
    readiness_timeout: Duration,
}

impl AppState {
    pub fn new(db: Db, admin_token: String) -> Self {
        Self(Arc::new(Inner {
            db,
            admin_token,
            readiness_timeout: Duration::from_secs(2),
        }))
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    fn admin_token(&self) -> &str {
        &self.0.admin_token
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(v1::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MANAGEMENT_BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // The path only: query strings and headers may carry keys.
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed("method not allowed on this route".to_owned())
}

/// Serves on an already bound listener (tests bind port 0) until `shutdown` is cancelled, then
/// finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
