//! The management API: organizations, projects and their API keys, with the operator's admin
//! token; and the validation rules its bodies share.

use axum::{extract::FromRequestParts, http::request::Parts};
use gamify_common::keys::constant_time_eq;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    http::{
        error::{Error, Result},
        extract::bearer_token,
    },
    state::AppState,
};

mod api_keys;
mod organizations;
mod projects;
mod rules;
mod webhooks;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(organizations::router())
        .merge(projects::router())
        .merge(api_keys::router())
        .merge(rules::router())
        .merge(webhooks::router())
}

/// Proof that the request carries the admin token (`Authorization: Bearer <ADMIN_TOKEN>`).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match bearer_token(parts) {
            Some(token) if constant_time_eq(token, state.admin_token()) => Ok(Admin),
            _ => Err(Error::Unauthorized),
        }
    }
}
