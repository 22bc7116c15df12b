//! gamify-api: event ingestion (track, batch, identify), the tenant read API, and the management
//! API for organizations, projects and keys. Each folder holds one concern: `http` what every
//! route shares (server loop, errors, extractors, middleware, health), `ingest` the ingestion
//! path, `manage` the management API, `read` the tenant reads; `state` the components they use.

pub mod accounts;
mod analytics;
pub mod clock;
pub mod config;
mod console;
mod gamification;
pub mod http;
pub mod ingest;
pub mod manage;
pub mod openapi;
mod read;
pub mod redis;
pub mod state;
mod telemetry;

use std::time::Duration;

use axum::{Router, extract::DefaultBodyLimit, http::Request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};

use crate::{
    accounts::{session_store::PgSessionStore, sessions::COOKIE_NAME},
    http::{health, layers, metrics, server},
};
pub use crate::{
    http::error::{Error, Result},
    ingest::rate_limit,
    state::{AppState, MANAGEMENT_BODY_LIMIT},
};

/// Every route, each registered with `routes!()` so that it is also in the OpenAPI document
/// ([`openapi::document`]). Routes are added here and nowhere else: the test
/// `every_route_is_registered_through_the_openapi_router` checks the sources for others.
pub fn api() -> OpenApiRouter<AppState> {
    let (api, operations) = routes();
    OpenApiRouter::with_openapi(openapi::base())
        .merge(api)
        .merge(operations)
}

/// The API's routes (`/v1/…`: ingestion, reads, management), which load shedding and the request
/// deadline govern, and the operational ones (health, metrics, the document), which they do not:
/// an orchestrator must see a busy gateway as alive.
fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let (management, api) = api_routes();
    (api.merge(management), operational_routes())
}

/// The management routes (accounts, organizations, projects, keys, rules, webhooks, analytics,
/// the export: what a console session may call) and the rest of the API.
fn api_routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let management = OpenApiRouter::new()
        .merge(accounts::router())
        .merge(manage::router())
        .merge(analytics::router())
        .merge(read::export_router());
    let api = OpenApiRouter::new()
        .merge(ingest::router())
        .merge(read::router())
        .merge(gamification::router());
    (management, api)
}

fn operational_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
}

/// The routes with their per-route middleware. Middleware that needs no route (tracing, the body
/// limit) wraps the router once in [`serve`] instead: as a router layer it would be one more boxed
/// service cloned per request on every route.
pub fn router(state: AppState) -> Router {
    let (management, api) = api_routes();
    // Only management routes read the session cookie: ingestion never touches the store.
    let sessions = SessionManagerLayer::new(PgSessionStore::new(state.db().clone()))
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_secure(state.accounts().settings.secure_cookies())
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
            i64::try_from(state.accounts().settings.session_idle_timeout.as_secs())
                .unwrap_or(i64::MAX),
        )));
    // An ingestion fleet (INGEST_ONLY=1) serves neither the management API nor the console.
    let management_enabled = state.accounts().settings.management;
    let api = if management_enabled {
        api.merge(management.layer(sessions.clone()))
    } else {
        api
    };
    let operations = operational_routes();
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        layers::api_route,
    ));
    let operations = operations.route_layer(axum::middleware::from_fn(layers::operational_route));
    let (mut routes, _) = api.merge(operations).split_for_parts();
    if management_enabled {
        routes = routes.merge(
            console::router()
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    layers::api_route,
                ))
                .layer(sessions),
        );
    }
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
    let app = tower::ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // The path only: query strings and headers may carry keys.
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
            }),
        )
        .layer(DefaultBodyLimit::max(MANAGEMENT_BODY_LIMIT))
        .service(router(state.clone()));
    let served = server::run(listener, app, *state.http_limits(), shutdown).await;
    // Events already acknowledged are safe; this only lets late deliveries finish cleanly.
    let producer_state = state.clone();
    let _ =
        tokio::task::spawn_blocking(move || producer_state.sink().flush(Duration::from_secs(5)))
            .await;
    served
}
