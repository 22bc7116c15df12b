//! The tenant read API: a project's events (listed, or exported as CSV or NDJSON) and end users,
//! with a secret key.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use gamify_common::{ErrorCode, KeyType};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    http::error::{Error, Result},
    ingest::{keys::KeyRecord, request::IngestKey},
    state::AppState,
};

pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod users;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::router())
        .merge(users::router())
}

/// The export, which a console session may call too (it sits with the management routes, behind
/// the session layer).
pub fn export_router() -> OpenApiRouter<AppState> {
    export::router()
}

/// A request authenticated with a secret key; a publishable key gets 403.
pub struct SecretKey(pub Arc<KeyRecord>);

impl FromRequestParts<AppState> for SecretKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let IngestKey(record) = IngestKey::from_request_parts(parts, state).await?;
        if record.key_type != KeyType::Secret {
            return Err(Error::Forbidden {
                code: ErrorCode::SecretKeyRequired,
                message: "reading data requires a secret key".to_owned(),
                details: None,
            });
        }
        Ok(SecretKey(record))
    }
}
