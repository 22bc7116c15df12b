//! The gamification runtime API: users' progress, event outcomes, leaderboards, the points ledger
//! and adjustments, and user tokens. Read with a secret key, or with a user token (`ut_…`) limited
//! to its own user; a publishable key may read its own project's event outcomes by id.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{HeaderName, Method, StatusCode, header, request::Parts},
};
use gamify_common::{ErrorCode, KeyType};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{
    http::{
        error::{Error, Result},
        extract::bearer_token,
    },
    ingest::{keys::KeyRecord, request::IngestKey},
    state::AppState,
};

pub(crate) mod leaderboards;
pub(crate) mod outcomes;
pub(crate) mod points;
pub(crate) mod progress;
pub mod user_tokens;

pub fn router() -> OpenApiRouter<AppState> {
    // What a browser reads (with the publishable key or a user token) answers CORS preflights
    // from any origin; a publishable key with allowed origins is still held to them.
    let browser = OpenApiRouter::new()
        .merge(progress::router())
        .merge(outcomes::router())
        .merge(leaderboards::router())
        .merge(points::ledger_router())
        .routes(routes!(progress_preflight))
        .routes(routes!(outcomes_preflight))
        .routes(routes!(leaderboard_preflight))
        .routes(routes!(ledger_preflight))
        .layer(cors());
    OpenApiRouter::new().merge(browser).merge(points::router())
}

/// A documented OPTIONS operation for one path a browser reads; the CORS layer answers it.
macro_rules! preflight_route {
    ($name:ident, $path:literal, $($param:literal),+) => {
        /// CORS preflight, answered by the CORS layer for every origin.
        #[utoipa::path(
            options,
            path = $path,
            tag = "gamification",
            params($(($param = String, Path)),+),
            responses((status = 200, description = "CORS preflight: allowed methods, headers and origin (any)"))
        )]
        async fn $name() -> StatusCode {
            StatusCode::NO_CONTENT
        }
    };
}

preflight_route!(
    progress_preflight,
    "/v1/users/{user_id}/progress",
    "user_id"
);
preflight_route!(
    outcomes_preflight,
    "/v1/events/{event_id}/outcomes",
    "event_id"
);
preflight_route!(leaderboard_preflight, "/v1/leaderboards/{key}", "key");
preflight_route!(
    ledger_preflight,
    "/v1/users/{user_id}/points/{key}/ledger",
    "user_id",
    "key"
);

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, HeaderName::from_static("x-api-key")])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(24 * 3600))
}

/// Who reads: a key of a project, or a user token for one user of one project.
pub enum Reader {
    Key(Arc<KeyRecord>),
    User {
        project_id: Uuid,
        user_id: String,
    },
    /// A member of the project's organization, already authorized to read it (the console
    /// builds this after `Caller::authorize_project`; no request yields it).
    Member {
        project_id: Uuid,
    },
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
            Reader::User { project_id, .. } | Reader::Member { project_id } => *project_id,
        }
    }

    /// A secret key reads any user; a user token only its own; a publishable key none.
    pub fn may_read_user(&self, user_id: &str) -> Result<()> {
        match self {
            Reader::Key(key) if key.key_type == KeyType::Secret => Ok(()),
            Reader::Member { .. } => Ok(()),
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
