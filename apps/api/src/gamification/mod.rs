//! The gamification runtime API: users' progress, event outcomes, leaderboards, the points ledger
//! and adjustments, and user tokens. Read with a secret key, or with a user token (`ut_…`) limited
//! to its own user; a publishable key may read its own project's event outcomes by id.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use gamify_common::{ErrorCode, KeyType};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::{
    http::{
        error::{Error, Result},
        extract::bearer_token,
    },
    ingest::{keys::KeyRecord, request::IngestKey},
    state::AppState,
};

mod leaderboards;
mod outcomes;
mod points;
mod progress;
pub mod user_tokens;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(progress::router())
        .merge(outcomes::router())
        .merge(leaderboards::router())
        .merge(points::router())
}

/// Who reads: a key of a project, or a user token for one user of one project.
pub enum Reader {
    Key(Arc<KeyRecord>),
    User { project_id: Uuid, user_id: String },
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(token) = bearer_token(parts).filter(|t| t.starts_with(user_tokens::PREFIX)) {
            let claims = state
                .user_tokens()
                .verify(token, state.now())
                .ok_or(Error::InvalidApiKey)?;
            return Ok(Reader::User {
                project_id: claims.project_id,
                user_id: claims.user_id,
            });
        }
        let IngestKey(record) = IngestKey::from_request_parts(parts, state).await?;
        Ok(Reader::Key(record))
    }
}

impl Reader {
    pub fn project_id(&self) -> Uuid {
        match self {
            Reader::Key(key) => key.project_id,
            Reader::User { project_id, .. } => *project_id,
        }
    }

    /// A secret key reads any user; a user token only its own; a publishable key none.
    pub fn may_read_user(&self, user_id: &str) -> Result<()> {
        match self {
            Reader::Key(key) if key.key_type == KeyType::Secret => Ok(()),
            Reader::User { user_id: own, .. } if own == user_id => Ok(()),
            Reader::User { .. } => Err(Error::Forbidden {
                code: ErrorCode::SecretKeyRequired,
                message: "a user token reads only its own user's data".to_owned(),
                details: None,
            }),
            Reader::Key(_) => Err(secret_required()),
        }
    }

    /// Project-wide data (leaderboards): a secret key or a user token, not a publishable key.
    pub fn may_read_project(&self) -> Result<()> {
        match self {
            Reader::Key(key) if key.key_type != KeyType::Secret => Err(secret_required()),
            _ => Ok(()),
        }
    }
}

fn secret_required() -> Error {
    Error::Forbidden {
        code: ErrorCode::SecretKeyRequired,
        message: "reading this requires a secret key or a user token".to_owned(),
        details: None,
    }
}
