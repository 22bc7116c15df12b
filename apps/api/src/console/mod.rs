//! The console: the web app a team signs in to, served by gamify-api under `/console`.
//! Server-rendered HTML (askama) with htmx for partial updates; every page and action calls the
//! same handler the JSON API routes to (same authorization, same validation), then renders its
//! answer. Who may call each route is the JSON route's rule: a page of an organization the
//! person has no part in answers 404, a control their role lacks is left out and refused if
//! posted anyway. The routes are HTML, not part of the JSON API's OpenAPI document.

mod analytics;
mod assets;
mod audit;
mod error_pages;
mod events;
mod keys;
mod layout;
mod leaderboards;
mod live;
mod members;
mod organizations;
mod rules;
mod rules_form;
mod settings;
mod sign_in;
mod tokens;
mod users;
mod viewer;
mod webhooks;

use axum::{
    Router,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{console::viewer::Viewer, state::AppState};

/// `/console/…`; needs the session layer (the caller adds it with the management routes').
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/static/{file}", get(assets::serve))
        .route(
            "/console/sign-in",
            get(sign_in::sign_in_page).post(sign_in::sign_in),
        )
        .route("/console/sign-out", post(sign_in::sign_out))
        .route(
            "/console/sign-out-everywhere",
            post(sign_in::sign_out_everywhere),
        )
        .route(
            "/console/invitations/accept",
            get(sign_in::accept_page).post(sign_in::accept),
        )
        .merge(organizations::router())
        .merge(members::router())
        .merge(tokens::router())
        .merge(audit::router())
        .merge(settings::router())
        .merge(keys::router())
        .merge(events::router())
        .merge(live::router())
        .merge(users::router())
        .merge(leaderboards::router())
        .merge(webhooks::router())
        .merge(rules::router())
        .merge(analytics::router())
        .layer(axum::middleware::from_fn(error_pages::console_responses))
}

/// `/console`: the person's organizations.
async fn home(viewer: Viewer, state: axum::extract::State<AppState>) -> Response {
    organizations::list(viewer, state).await.into_response()
}
