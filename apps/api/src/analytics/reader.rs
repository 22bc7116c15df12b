//! Who may read a project's analytics: its secret key (the project is the key's), or a console
//! session, an organization token with `read`, or the operator, naming the project in
//! `projectId` and authorized on the organization that owns it (404 for one they cannot see).

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    accounts::{caller::Caller, roles::Permission},
    http::{
        error::{Error, Result},
        extract::bearer_token,
    },
    read::SecretKey,
    state::AppState,
};

/// The project whose analytics the request may read.
#[derive(Debug, Clone, Copy)]
pub struct ProjectReader {
    pub project_id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectParam {
    project_id: Option<String>,
}

/// Project keys are told from management credentials by their form, before any lookup.
fn carries_project_key(parts: &Parts) -> bool {
    parts.headers.contains_key("x-api-key")
        || bearer_token(parts)
            .is_some_and(|token| token.starts_with("sk_live_") || token.starts_with("pk_live_"))
}

impl FromRequestParts<AppState> for ProjectReader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let param = axum::extract::Query::<ProjectParam>::try_from_uri(&parts.uri)
            .map_err(|_| Error::invalid("the query string is not readable"))?;
        // A malformed id names no project, as in a path.
        let named = param
            .0
            .project_id
            .as_deref()
            .map(|raw| Uuid::parse_str(raw).map_err(|_| Error::not_found("project")))
            .transpose()?;
        if carries_project_key(parts) {
            let SecretKey(key) = SecretKey::from_request_parts(parts, state).await?;
            // A key reads its own project only; naming another is naming one it cannot see.
            if named.is_some_and(|id| id != key.project_id) {
                return Err(Error::not_found("project"));
            }
            return Ok(ProjectReader {
                project_id: key.project_id,
            });
        }
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && !parts.headers.contains_key(header::COOKIE)
        {
            return Err(Error::Unauthorized);
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        let project_id = named.ok_or_else(|| {
            Error::invalid_field(
                "projectId",
                "is required with a session or a management token (a secret key names its project)",
            )
        })?;
        caller
            .authorize_project(state, project_id, Permission::Read)
            .await?;
        Ok(ProjectReader { project_id })
    }
}
