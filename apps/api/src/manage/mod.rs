//! The management API: organizations, projects, their API keys, rules and webhooks. Every route
//! authorizes its caller with [`crate::accounts::caller::Caller`] on the organization that owns the
//! resource.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub(crate) mod api_keys;
pub(crate) mod organizations;
pub mod projects;
pub(crate) mod rules;
pub(crate) mod webhooks;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(organizations::router())
        .merge(projects::router())
        .merge(api_keys::router())
        .merge(rules::router())
        .merge(webhooks::router())
}
