//! Who is calling a management route, and whether they may do what it asks on the organization
//! that owns the resource.
//!
//! Three credentials are accepted: `Authorization: Bearer gmt_…` (an organization management
//! token), `Authorization: Bearer <ADMIN_TOKEN>` (the operator), and the console's session cookie.
//! Cookie-authenticated requests that change state must come from the deployment's own origin (or
//! carry the session's CSRF token); bearer requests are not cookie-bound and need neither.
//!
//! Authorization answers 404 for an organization the caller has no part in — the same answer as
//! for one that does not exist — and 403 only to a caller who can see the organization but lacks
//! the role or scope.

use std::net::IpAddr;

use axum::{
    extract::FromRequestParts,
    http::{Method, header, request::Parts},
};
use gamify_common::{ErrorCode, keys::constant_time_eq};
use gamify_db::{
    AccountScope,
    entities::projects,
    sea_orm::{ConnectionTrait, Statement},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_sessions::Session;
use uuid::Uuid;

use crate::{
    accounts::{
        roles::{Permission, Role, Scope},
        session_store::USER_KEY,
    },
    http::{
        client_ip::client_ip,
        error::{Error, Result},
        extract::bearer_token,
    },
    state::AppState,
};

/// Management tokens start with this; the gateway tells them from the operator's token by it.
pub const TOKEN_PREFIX: &str = "gmt_";

/// The session data key of the CSRF token the console's forms carry.
pub const CSRF_KEY: &str = "csrf";
/// The header a cookie-authenticated script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The session data key of when the session's expiry was last pushed forward (unix seconds).
const SEEN_KEY: &str = "seen";
/// A session's expiry slides forward at most this often: one write per minute, not per request.
const SLIDE_EVERY_SECONDS: i64 = 60;

/// The signed-in person, as the session holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: Uuid,
    pub email: String,
}

#[derive(Debug, Clone)]
pub enum Actor {
    Operator,
    User(SessionUser),
    Token {
        id: Uuid,
        organization_id: Uuid,
        prefix: String,
        scopes: Vec<Scope>,
    },
}

impl Actor {
    /// `(type, id, label)` as the audit log records the actor.
    pub fn audit_identity(&self) -> (&'static str, Option<Uuid>, String) {
        match self {
            Actor::Operator => ("operator", None, "operator".to_owned()),
            Actor::User(user) => ("user", Some(user.id), user.email.clone()),
            Actor::Token { id, prefix, .. } => ("token", Some(*id), prefix.clone()),
        }
    }
}

/// An authenticated caller of the management API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub ip: Option<IpAddr>,
}

/// What [`Caller::authorize`] established: the caller may act on this organization, with this
/// role when they are a member.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub organization_id: Uuid,
    pub role: Option<Role>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0);
        let ip = client_ip(&parts.headers, peer, state.proxy_hops());
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let token = bearer_token(parts).ok_or(Error::Unauthorized)?;
            let actor = if token.starts_with(TOKEN_PREFIX) {
                authenticate_token(state, token).await?
            } else if constant_time_eq(token, state.admin_token()) {
                Actor::Operator
            } else {
                return Err(Error::Unauthorized);
            };
            return Ok(Caller { actor, ip });
        }
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(Error::Unauthorized)?;
        let user: SessionUser = session
            .get(USER_KEY)
            .await
            .map_err(session_unavailable)?
            .ok_or(Error::Unauthorized)?;
        if !is_safe(&parts.method) {
            check_same_origin(parts, &session, state).await?;
        }
        slide_expiry(&session, state).await?;
        Ok(Caller {
            actor: Actor::User(user),
            ip,
        })
    }
}

pub fn session_unavailable(error: tower_sessions::session::Error) -> Error {
    tracing::error!(%error, "session store failed");
    Error::unavailable("sessions are unavailable", Some(1))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A state-changing request riding on the cookie must show it comes from the deployment's own
/// pages: its `Origin` is the deployment's, or it carries the session's CSRF token.
async fn check_same_origin(parts: &Parts, session: &Session, state: &AppState) -> Result<()> {
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    if origin == Some(state.accounts().public_origin()) {
        return Ok(());
    }
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok());
    let expected: Option<String> = session.get(CSRF_KEY).await.map_err(session_unavailable)?;
    match (sent, expected) {
        (Some(sent), Some(expected)) if constant_time_eq(sent, &expected) => Ok(()),
        _ => Err(Error::forbidden(
            ErrorCode::CsrfRejected,
            "a request signed in with the session cookie must come from this deployment's own origin or carry its CSRF token",
        )),
    }
}

/// Pushes the session's expiry forward (sliding expiry) at most once a minute.
async fn slide_expiry(session: &Session, state: &AppState) -> Result<()> {
    let now = state.now().timestamp();
    let seen: i64 = session
        .get(SEEN_KEY)
        .await
        .map_err(session_unavailable)?
        .unwrap_or(0);
    if now - seen >= SLIDE_EVERY_SECONDS {
        session
            .insert(SEEN_KEY, now)
            .await
            .map_err(session_unavailable)?;
    }
    Ok(())
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A management token is looked up in Postgres on every request: management calls are few, and
/// so a revocation holds on every gateway as soon as it commits.
async fn authenticate_token(state: &AppState, token: &str) -> Result<Actor> {
    if token.len() > 128 {
        return Err(Error::Unauthorized);
    }
    let hash = token_hash(token);
    let txn = state
        .db()
        .accounts(&AccountScope {
            token_hash: Some(hash),
            ..AccountScope::default()
        })
        .await?;
    let row = txn
        .query_one(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "WITH token AS ( \
                 SELECT id, organization_id, prefix, scopes FROM org_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL \
                   AND (expires_at IS NULL OR expires_at > now())), \
             used AS ( \
                 UPDATE org_tokens SET last_used_at = now() FROM token \
                 WHERE org_tokens.id = token.id \
                   AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')) \
             SELECT id, organization_id, prefix, scopes FROM token",
            [hash.to_vec().into()],
        ))
        .await?;
    txn.commit().await?;
    let row = row.ok_or(Error::Unauthorized)?;
    let scopes: Vec<String> = row.try_get("", "scopes")?;
    Ok(Actor::Token {
        id: row.try_get("", "id")?,
        organization_id: row.try_get("", "organization_id")?,
        prefix: row.try_get("", "prefix")?,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
    })
}

impl Caller {
    /// Whether the caller may do what `permission` names on `organization_id`: 404 when the
    /// organization is not theirs to see (or does not exist), 403 when it is but the role or
    /// scope falls short.
    pub async fn authorize(
        &self,
        state: &AppState,
        organization_id: Uuid,
        permission: Permission,
    ) -> Result<Grant> {
        let role = match &self.actor {
            Actor::Operator => {
                organization_exists(state, organization_id).await?;
                None
            }
            Actor::Token {
                organization_id: own,
                scopes,
                ..
            } => {
                if *own != organization_id {
                    return Err(Error::not_found("organization"));
                }
                match permission.scope() {
                    Some(scope) if scopes.contains(&scope) => None,
                    Some(scope) => {
                        return Err(Error::forbidden(
                            ErrorCode::Forbidden,
                            format!("this token lacks the scope {}", scope.as_str()),
                        ));
                    }
                    None => {
                        return Err(Error::forbidden(
                            ErrorCode::Forbidden,
                            "management tokens cannot do this; a member must",
                        ));
                    }
                }
            }
            Actor::User(user) => {
                let role = membership(state, organization_id, user.id)
                    .await?
                    .ok_or_else(|| Error::not_found("organization"))?;
                if !role.allows(permission) {
                    return Err(Error::forbidden(
                        ErrorCode::Forbidden,
                        format!("the {role} role cannot do this"),
                    ));
                }
                Some(role)
            }
        };
        Ok(Grant {
            organization_id,
            role,
        })
    }

    /// [`Caller::authorize`] on the organization that owns `project_id`; a project the caller
    /// cannot see answers 404 like a missing one.
    pub async fn authorize_project(
        &self,
        state: &AppState,
        project_id: Uuid,
        permission: Permission,
    ) -> Result<(projects::Model, Grant)> {
        let project =
            crate::manage::projects::find_project(state.db().shared(), project_id).await?;
        match self
            .authorize(state, project.organization_id, permission)
            .await
        {
            Err(Error::NotFound(_)) => Err(Error::not_found("project")),
            Err(error) => Err(error),
            Ok(grant) => Ok((project, grant)),
        }
    }

    /// The signed-in person, for routes only people may call.
    pub fn user(&self) -> Option<&SessionUser> {
        match &self.actor {
            Actor::User(user) => Some(user),
            _ => None,
        }
    }
}

async fn organization_exists(state: &AppState, organization_id: Uuid) -> Result<()> {
    use gamify_db::{entities::organizations, sea_orm::EntityTrait};
    organizations::Entity::find_by_id(organization_id)
        .one(state.db().shared())
        .await?
        .map(|_| ())
        .ok_or_else(|| Error::not_found("organization"))
}

/// The person's role in the organization, if they are a member.
pub async fn membership(
    state: &AppState,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Role>> {
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope::user(user_id),
            "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2",
            vec![organization_id.into(), user_id.into()],
        )
        .await?;
    Ok(match rows.first() {
        Some(row) => {
            let role: String = row.try_get("", "role")?;
            Role::parse(&role)
        }
        None => None,
    })
}
