//! Console sessions: sign in, who am I, sign out, sign out everywhere, list and revoke one.
//! Who may call: `POST /v1/sessions` anyone (the password is the credential); the rest a
//! signed-in person, on their own sessions only.

use std::net::IpAddr;

use axum::{
    extract::{FromRequestParts, State},
    http::{StatusCode, header, request::Parts},
};
use chrono::{DateTime, Utc};
use gamify_common::ErrorCode;
use gamify_db::{
    AccountScope,
    sea_orm::{ConnectionTrait, Statement},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{
        audit,
        caller::{CSRF_KEY, Caller, SessionUser, session_unavailable},
        roles::Role,
        session_store::{USER_KEY, session_hash},
    },
    http::{
        client_ip::client_ip,
        error::{Error, Result},
        extract::{Json, Path},
    },
    state::AppState,
};

pub const COOKIE_NAME: &str = "gamify_session";
const MAX_EMAIL_BYTES: usize = 254;

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignIn {
    #[schema(max_length = 254)]
    pub(crate) email: String,
    #[schema(max_length = 256)]
    pub(crate) password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipOut {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentSession {
    pub user: UserOut,
    pub organizations: Vec<MembershipOut>,
    /// Send as `X-CSRF-Token` on cookie-authenticated changes made from scripts that cannot set
    /// `Origin` (the console's forms carry it).
    pub csrf_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionOut {
    pub(crate) id: Uuid,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_seen_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    /// The session this request came with.
    pub(crate) current: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub(crate) data: Vec<SessionOut>,
}

/// The request's session, which the session layer of the management routes provides.
pub struct CurrentCookie(pub Session);

impl FromRequestParts<AppState> for CurrentCookie {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .map(CurrentCookie)
            .ok_or(Error::Unauthorized)
    }
}

/// Requests that start a session (sign-in, accepting an invitation) are refused from another
/// origin, so no other site can sign a visitor into an account of its choosing.
pub fn check_sign_in_origin(parts_origin: Option<&str>, state: &AppState) -> Result<()> {
    match parts_origin {
        Some(origin) if origin != state.accounts().public_origin() => Err(Error::forbidden(
            ErrorCode::CsrfRejected,
            "sign-in is accepted only from this deployment's own origin",
        )),
        _ => Ok(()),
    }
}

pub fn normalize_email(field: &str, email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && email.len() >= 3
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(email)
    } else {
        Err(Error::invalid_field(field, "must be an email address"))
    }
}

/// Random, URL-safe, `prefix` first: what tokens, invitation links and CSRF tokens are made of.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Starts a session for `user`: a new id whatever the request came with (no fixation), a new
/// CSRF token.
pub async fn start_session(session: &Session, user: SessionUser) -> Result<String> {
    session.cycle_id().await.map_err(session_unavailable)?;
    let csrf = random_secret("");
    session
        .insert(USER_KEY, user)
        .await
        .map_err(session_unavailable)?;
    session
        .insert(CSRF_KEY, &csrf)
        .await
        .map_err(session_unavailable)?;
    Ok(csrf)
}

/// The person and the organizations they belong to.
pub async fn current(
    state: &AppState,
    user_id: Uuid,
    csrf_token: String,
) -> Result<CurrentSession> {
    let txn = state.db().accounts(&AccountScope::user(user_id)).await?;
    let backend = txn.get_database_backend();
    let user = txn
        .query_one(Statement::from_sql_and_values(
            backend,
            "SELECT id, email, name FROM users WHERE id = $1",
            [user_id.into()],
        ))
        .await?
        .ok_or(Error::Unauthorized)?;
    let rows = txn
        .query_all(Statement::from_sql_and_values(
            backend,
            "SELECT o.id, o.name, m.role FROM memberships m JOIN organizations o ON o.id = m.organization_id \
             WHERE m.user_id = $1 ORDER BY o.name, o.id",
            [user_id.into()],
        ))
        .await
        ?;
    txn.commit().await?;
    let organizations = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("", "role")?;
            Ok(MembershipOut {
                id: row.try_get("", "id")?,
                name: row.try_get("", "name")?,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
            })
        })
        .collect::<Result<Vec<_>, gamify_db::sea_orm::DbErr>>()?;
    Ok(CurrentSession {
        user: UserOut {
            id: user.try_get("", "id")?,
            email: user.try_get("", "email")?,
            name: user.try_get("", "name")?,
        },
        organizations,
        csrf_token,
    })
}

/// Failed sign-ins counted in Redis per account and per address, shared by every gateway.
struct SignInLimits<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) account: String,
    pub(crate) address: Option<String>,
}

impl<'a> SignInLimits<'a> {
    fn new(state: &'a AppState, email: &str, ip: Option<IpAddr>) -> Self {
        Self {
            state,
            account: format!(
                "gamify:sign_in:account:{}",
                hex::encode(Sha256::digest(email))
            ),
            address: ip.map(|ip| format!("gamify:sign_in:address:{ip}")),
        }
    }

    /// Refuses when either count is at its limit. Fails closed: without Redis, no sign-in.
    async fn check(&self) -> Result<()> {
        let settings = &self.state.accounts().settings;
        let mut pipe = redis::pipe();
        pipe.get(&self.account);
        pipe.get(
            self.address
                .as_deref()
                .unwrap_or("gamify:sign_in:address:unknown"),
        );
        let (account, address): (Option<u32>, Option<u32>) = self
            .state
            .redis()
            .pipeline(&pipe)
            .await
            .map_err(|_| Error::unavailable("sign-in is unavailable right now", Some(1)))?;
        if account.unwrap_or(0) >= settings.sign_in_failures_per_account
            || address.unwrap_or(0) >= settings.sign_in_failures_per_address
        {
            return Err(Error::rate_limited(
                ErrorCode::SignInRateLimited,
                "too many failed sign-ins; try again later",
                settings.sign_in_window,
            ));
        }
        Ok(())
    }

    /// Counts a failure; returns the account's count.
    async fn fail(&self) -> Result<u32> {
        let window = self.state.accounts().settings.sign_in_window.as_secs();
        // SET … NX EX starts the window with the first failure; INCR keeps its expiry. (EXPIRE's
        // NX needs Redis 7; this works on any Redis since 2.6.12.)
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&self.account)
            .arg(0)
            .arg("EX")
            .arg(window)
            .arg("NX")
            .ignore()
            .incr(&self.account, 1u32);
        if let Some(address) = &self.address {
            pipe.cmd("SET")
                .arg(address)
                .arg(0)
                .arg("EX")
                .arg(window)
                .arg("NX")
                .ignore()
                .incr(address, 1u32)
                .ignore();
        }
        let (count,): (u32,) = self
            .state
            .redis()
            .pipeline(&pipe)
            .await
            .map_err(|_| Error::unavailable("sign-in is unavailable right now", Some(1)))?;
        Ok(count)
    }

    async fn succeeded(&self) {
        let _: Result<(), _> = self
            .state
            .redis()
            .query(redis::cmd("DEL").arg(&self.account))
            .await;
    }
}

/// Records, once per window, that an account's failed sign-ins reached the threshold, in each
/// organization it belongs to.
pub(crate) async fn audit_failures(
    state: &AppState,
    user_id: Uuid,
    email: &str,
    ip: Option<IpAddr>,
    count: u32,
) -> Result<()> {
    let txn = state.db().accounts(&AccountScope::user(user_id)).await?;
    let organizations = txn
        .query_all(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT organization_id FROM memberships WHERE user_id = $1",
            [user_id.into()],
        ))
        .await?;
    for row in organizations {
        let organization_id: Uuid = row.try_get("", "organization_id")?;
        let entry = audit::Entry {
            action: "sign_in.failures_exceeded",
            target_type: "user",
            target_id: Some(user_id.to_string()),
            details: serde_json::json!({ "failures": count }),
            actor: &crate::accounts::caller::Actor::Operator,
            ip,
        };
        audit::record_as(
            &txn,
            organization_id,
            ("anonymous", None, email.to_owned()),
            entry,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Signs in with email and password. A wrong email and a wrong password get the same 401 in the
/// same time (an unknown email is verified against a decoy hash).
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "accounts",
    request_body = SignIn,
    responses(
        (status = 201, description = "Signed in; the `gamify_session` cookie is set", body = CurrentSession),
        (status = 400, description = "Malformed body (`invalid_request`)", body = crate::http::schemas::ErrorBody),
        (status = 401, description = "Wrong email or password (`unauthorized`)", body = crate::http::schemas::ErrorBody),
        (status = 403, description = "From another origin (`csrf_rejected`)", body = crate::http::schemas::ErrorBody),
        (status = 413, description = "Body over 64 KB (`payload_too_large`)", body = crate::http::schemas::ErrorBody),
        (status = 415, description = "Body without Content-Type: application/json (`unsupported_media_type`)", body = crate::http::schemas::ErrorBody),
        (status = 429, description = "Too many failed sign-ins for the account or the address (`sign_in_rate_limited`)", body = crate::http::schemas::ErrorBody),
        (status = 503, description = "The sign-in limits cannot be checked (Redis) or the session stored (`unavailable`): sign-in fails closed", body = crate::http::schemas::ErrorBody),
    ),
    security(())
)]
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    CurrentCookie(session): CurrentCookie,
    headers: axum::http::HeaderMap,
    peer: crate::http::extract::Peer,
    Json(body): Json<SignIn>,
) -> Result<(StatusCode, axum::Json<CurrentSession>)> {
    check_sign_in_origin(
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        &state,
    )?;
    let ip = client_ip(&headers, peer.0, state.proxy_hops());
    let email = body.email.trim().to_lowercase();
    if email.len() > MAX_EMAIL_BYTES
        || body.password.len() > crate::accounts::passwords::MAX_PASSWORD_BYTES
    {
        return Err(Error::Unauthorized);
    }
    let limits = SignInLimits::new(&state, &email, ip);
    limits.check().await?;
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope {
                sign_in_email: Some(email.clone()),
                ..AccountScope::default()
            },
            "SELECT id, password_hash FROM users WHERE email = $1",
            vec![email.clone().into()],
        )
        .await?;
    let (user_id, stored) = match rows.first() {
        Some(row) => (
            Some(row.try_get::<Uuid>("", "id")?),
            Some(row.try_get::<String>("", "password_hash")?),
        ),
        None => (None, None),
    };
    let matched = state
        .accounts()
        .passwords
        .verify(&body.password, stored)
        .await?;
    let Some(user_id) = user_id.filter(|_| matched) else {
        let failures = limits.fail().await?;
        if let Some(user_id) = user_id {
            if failures == state.accounts().settings.sign_in_failures_per_account {
                audit_failures(&state, user_id, &email, ip, failures).await?;
            }
        }
        tracing::info!(client_ip = ?ip, "sign-in failed");
        return Err(Error::Unauthorized);
    };
    limits.succeeded().await;
    let csrf = start_session(&session, SessionUser { id: user_id, email }).await?;
    tracing::info!(user_id = %user_id, "signed in");
    Ok((
        StatusCode::CREATED,
        axum::Json(current(&state, user_id, csrf).await?),
    ))
}

fn signed_in(caller: &Caller) -> Result<&SessionUser> {
    caller.user().ok_or(Error::Unauthorized)
}

/// The signed-in person and their organizations.
#[utoipa::path(
    get,
    path = "/v1/sessions/current",
    tag = "accounts",
    responses((status = 200, body = CurrentSession), (status = 401, description = "Not signed in (`unauthorized`)", body = crate::http::schemas::ErrorBody)),
    security(("session" = []))
)]
pub(crate) async fn get_current(
    caller: Caller,
    State(state): State<AppState>,
    CurrentCookie(session): CurrentCookie,
) -> Result<axum::Json<CurrentSession>> {
    let user = signed_in(&caller)?;
    let csrf: String = session
        .get(CSRF_KEY)
        .await
        .map_err(session_unavailable)?
        .unwrap_or_default();
    Ok(axum::Json(current(&state, user.id, csrf).await?))
}

/// Signs out of this session.
#[utoipa::path(
    delete,
    path = "/v1/sessions/current",
    tag = "accounts",
    responses((status = 204, description = "Signed out"), (status = 401, description = "Not signed in (`unauthorized`)", body = crate::http::schemas::ErrorBody), (status = 403, description = "From another origin without the CSRF token (`csrf_rejected`)", body = crate::http::schemas::ErrorBody)),
    security(("session" = []))
)]
pub(crate) async fn sign_out(
    caller: Caller,
    CurrentCookie(session): CurrentCookie,
) -> Result<StatusCode> {
    signed_in(&caller)?;
    session.flush().await.map_err(session_unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Signs out of every session of the signed-in person, this one included.
#[utoipa::path(
    delete,
    path = "/v1/sessions",
    tag = "accounts",
    responses((status = 204, description = "Every session ended"), (status = 401, description = "Not signed in (`unauthorized`)", body = crate::http::schemas::ErrorBody), (status = 403, description = "From another origin without the CSRF token (`csrf_rejected`)", body = crate::http::schemas::ErrorBody)),
    security(("session" = []))
)]
pub(crate) async fn sign_out_everywhere(
    caller: Caller,
    State(state): State<AppState>,
    CurrentCookie(session): CurrentCookie,
) -> Result<StatusCode> {
    let user = signed_in(&caller)?;
    let txn = state.db().accounts(&AccountScope::user(user.id)).await?;
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "DELETE FROM sessions WHERE user_id = $1",
        [user.id.into()],
    ))
    .await?;
    txn.commit().await?;
    session.flush().await.map_err(session_unavailable)?;
    tracing::info!(user_id = %user.id, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in person's sessions.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "accounts",
    responses((status = 200, body = SessionList), (status = 401, description = "Not signed in (`unauthorized`)", body = crate::http::schemas::ErrorBody)),
    security(("session" = []))
)]
pub(crate) async fn list_sessions(
    caller: Caller,
    State(state): State<AppState>,
    CurrentCookie(session): CurrentCookie,
) -> Result<axum::Json<SessionList>> {
    let user = signed_in(&caller)?;
    let current = session.id().map(|id| session_hash(&id).to_vec());
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope::user(user.id),
            "SELECT id, id_hash, created_at, last_seen_at, expires_at FROM sessions \
             WHERE user_id = $1 AND expires_at > now() ORDER BY last_seen_at DESC LIMIT 100",
            [user.id.into()].into(),
        )
        .await?;
    let data = rows
        .iter()
        .map(|row| {
            let hash: Vec<u8> = row.try_get("", "id_hash")?;
            Ok(SessionOut {
                id: row.try_get("", "id")?,
                created_at: row.try_get("", "created_at")?,
                last_seen_at: row.try_get("", "last_seen_at")?,
                expires_at: row.try_get("", "expires_at")?,
                current: current.as_deref() == Some(hash.as_slice()),
            })
        })
        .collect::<Result<Vec<_>, gamify_db::sea_orm::DbErr>>()?;
    Ok(axum::Json(SessionList { data }))
}

/// Ends one of the signed-in person's sessions.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{session_id}",
    tag = "accounts",
    params(("session_id" = Uuid, Path)),
    responses((status = 204, description = "Ended"), (status = 401, description = "Not signed in (`unauthorized`)", body = crate::http::schemas::ErrorBody), (status = 403, description = "From another origin without the CSRF token (`csrf_rejected`)", body = crate::http::schemas::ErrorBody), (status = 404, description = "No such session of yours (`not_found`)", body = crate::http::schemas::ErrorBody)),
    security(("session" = []))
)]
pub(crate) async fn revoke_session(
    caller: Caller,
    State(state): State<AppState>,
    Path(session_id): Path<Uuid>,
) -> Result<StatusCode> {
    let user = signed_in(&caller)?;
    let txn = state.db().accounts(&AccountScope::user(user.id)).await?;
    let deleted = txn
        .execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "DELETE FROM sessions WHERE id = $1 AND user_id = $2",
            [session_id.into(), user.id.into()],
        ))
        .await?
        .rows_affected();
    txn.commit().await?;
    if deleted == 0 {
        return Err(Error::not_found("session"));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_in))
        .routes(routes!(get_current, sign_out))
        .routes(routes!(list_sessions, sign_out_everywhere))
        .routes(routes!(revoke_session))
}
