//! Invitations: a single-use link, shown once to whoever invited, that makes its holder a member.
//! Who may call: inviting, listing and revoking need `MembersWrite` (inviting an owner needs an
//! owner); accepting needs only the link's token (and, for an existing account, its password).

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use chrono::{DateTime, Utc};
use gamify_db::{
    AccountScope,
    sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, TransactionTrait},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{
        audit,
        caller::{Actor, Caller, SessionUser, token_hash},
        passwords::validate_new_password,
        roles::{Permission, Role},
        sessions::{
            CurrentCookie, CurrentSession, check_sign_in_origin, current, normalize_email,
            random_secret, start_session,
        },
    },
    config::AccountSettings,
    http::{
        client_ip::client_ip,
        error::{Error, Result},
        extract::{Json, Path, Peer},
        validate::validate_name,
    },
    state::AppState,
};

pub const INVITATION_PREFIX: &str = "ginv_";

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateInvitation {
    #[schema(max_length = 254)]
    pub(crate) email: String,
    pub(crate) role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedInvitation {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// The single-use link, shown only in this response.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationOut {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) role: Role,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    pub(crate) data: Vec<InvitationOut>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AcceptInvitation {
    /// The `token` of the invitation's link.
    #[schema(max_length = 128)]
    pub(crate) token: String,
    /// A new password, or the existing account's password when the email already has one.
    #[schema(max_length = 256)]
    pub(crate) password: String,
    #[schema(max_length = 255)]
    pub(crate) name: Option<String>,
}

/// The permission inviting or granting `role` takes.
pub fn permission_to_grant(role: Role) -> Permission {
    if role == Role::Owner {
        Permission::OwnersWrite
    } else {
        Permission::MembersWrite
    }
}

/// Creates an invitation inside `txn` (scoped to the organization) and returns it with its link.
pub async fn insert_invitation(
    settings: &AccountSettings,
    txn: &DatabaseTransaction,
    organization_id: Uuid,
    email: String,
    role: Role,
    invited_by: Option<Uuid>,
) -> Result<CreatedInvitation> {
    let token = random_secret(INVITATION_PREFIX);
    let id = Uuid::now_v7();
    let expires_at = Utc::now()
        + chrono::Duration::from_std(settings.invitation_ttl).unwrap_or(chrono::Duration::days(7));
    AccountScope::organization(organization_id)
        .apply(txn)
        .await?;
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO invitations (id, organization_id, email, role, token_hash, invited_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            id.into(),
            organization_id.into(),
            email.clone().into(),
            role.as_str().into(),
            token_hash(&token).to_vec().into(),
            invited_by.into(),
            expires_at.into(),
        ],
    ))
    .await
    ?;
    let mut url = settings.public_url.clone();
    url.set_path("/console/invitations/accept");
    url.set_query(Some(&format!("token={token}")));
    Ok(CreatedInvitation {
        id,
        email,
        role,
        url: url.to_string(),
        expires_at,
    })
}

/// Invites someone by email; the link is in this response only.
#[utoipa::path(
    post,
    path = "/v1/organizations/{organization_id}/invitations",
    tag = "accounts",
    params(("organization_id" = Uuid, Path)),
    request_body = CreateInvitation,
    responses((status = 201, body = CreatedInvitation), crate::http::schemas::CreateErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["members:write"]))
)]
pub(crate) async fn create_invitation(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Json(body): Json<CreateInvitation>,
) -> Result<(StatusCode, axum::Json<CreatedInvitation>)> {
    caller
        .authorize(&state, organization_id, Permission::MembersWrite)
        .await?;
    caller
        .authorize(&state, organization_id, permission_to_grant(body.role))
        .await?;
    let email = normalize_email("email", &body.email)?;
    let txn = state.db().shared().begin().await?;
    let invited_by = caller.user().map(|user| user.id);
    let created = insert_invitation(
        &state.accounts().settings,
        &txn,
        organization_id,
        email,
        body.role,
        invited_by,
    )
    .await?;
    audit::record(
        &txn,
        organization_id,
        audit::Entry::new(&caller, "member.invited", "invitation")
            .target(created.id)
            .details(serde_json::json!({ "email": created.email, "role": created.role })),
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Pending invitations (not accepted, revoked or expired).
#[utoipa::path(
    get,
    path = "/v1/organizations/{organization_id}/invitations",
    tag = "accounts",
    params(("organization_id" = Uuid, Path)),
    responses((status = 200, body = InvitationList), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["members:write"]))
)]
pub(crate) async fn list_invitations(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<axum::Json<InvitationList>> {
    caller
        .authorize(&state, organization_id, Permission::MembersWrite)
        .await?;
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope::organization(organization_id),
            "SELECT id, email, role, created_at, expires_at FROM invitations \
             WHERE organization_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL \
               AND expires_at > now() ORDER BY created_at LIMIT 1000",
            [organization_id.into()].into(),
        )
        .await?;
    let data = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("", "role")?;
            Ok(InvitationOut {
                id: row.try_get("", "id")?,
                email: row.try_get("", "email")?,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                created_at: row.try_get("", "created_at")?,
                expires_at: row.try_get("", "expires_at")?,
            })
        })
        .collect::<Result<Vec<_>, gamify_db::sea_orm::DbErr>>()?;
    Ok(axum::Json(InvitationList { data }))
}

/// Revokes a pending invitation: its link stops working.
#[utoipa::path(
    delete,
    path = "/v1/organizations/{organization_id}/invitations/{invitation_id}",
    tag = "accounts",
    params(("organization_id" = Uuid, Path), ("invitation_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["members:write"]))
)]
pub(crate) async fn revoke_invitation(
    caller: Caller,
    State(state): State<AppState>,
    Path((organization_id, invitation_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    caller
        .authorize(&state, organization_id, Permission::MembersWrite)
        .await?;
    let txn = state
        .db()
        .accounts(&AccountScope::organization(organization_id))
        .await?;
    let revoked = txn
        .execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE invitations SET revoked_at = now() \
             WHERE id = $1 AND organization_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
            [invitation_id.into(), organization_id.into()],
        ))
        .await?
        .rows_affected();
    if revoked == 0 {
        return Err(Error::not_found("invitation"));
    }
    audit::record(
        &txn,
        organization_id,
        audit::Entry::new(&caller, "invitation.revoked", "invitation").target(invitation_id),
    )
    .await?;
    txn.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts an invitation: creates the account (or, for an email that has one, adds the
/// membership once its password is proven) and starts a session.
#[utoipa::path(
    post,
    path = "/v1/invitations/accept",
    tag = "accounts",
    request_body = AcceptInvitation,
    responses(
        (status = 201, description = "A member now, signed in; the `gamify_session` cookie is set", body = CurrentSession),
        (status = 400, description = "A password too short, too long or too common (`invalid_request`)", body = crate::http::schemas::ErrorBody),
        (status = 401, description = "The email has an account and this is not its password (`unauthorized`)", body = crate::http::schemas::ErrorBody),
        (status = 403, description = "From another origin (`csrf_rejected`)", body = crate::http::schemas::ErrorBody),
        (status = 404, description = "No such invitation, or it was used, revoked or has expired (`not_found`)", body = crate::http::schemas::ErrorBody),
        (status = 409, description = "Already a member (`conflict`)", body = crate::http::schemas::ErrorBody),
        (status = 413, description = "Body over 64 KB (`payload_too_large`)", body = crate::http::schemas::ErrorBody),
        (status = 415, description = "Body without Content-Type: application/json (`unsupported_media_type`)", body = crate::http::schemas::ErrorBody),
    ),
    security(())
)]
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    CurrentCookie(session): CurrentCookie,
    headers: HeaderMap,
    peer: Peer,
    Json(body): Json<AcceptInvitation>,
) -> Result<(StatusCode, axum::Json<CurrentSession>)> {
    check_sign_in_origin(
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        &state,
    )?;
    let ip = client_ip(&headers, peer.0, state.proxy_hops());
    if !body.token.starts_with(INVITATION_PREFIX) || body.token.len() > 128 {
        return Err(Error::not_found("invitation"));
    }
    if let Some(name) = &body.name {
        validate_name("name", name)?;
    }
    let hash = token_hash(&body.token);
    let txn = state
        .db()
        .accounts(&AccountScope {
            invitation_hash: Some(hash),
            ..AccountScope::default()
        })
        .await?;
    let backend = txn.get_database_backend();
    let invitation = txn
        .query_one(Statement::from_sql_and_values(
            backend,
            "SELECT id, organization_id, email, role FROM invitations \
             WHERE token_hash = $1 AND accepted_at IS NULL AND revoked_at IS NULL \
               AND expires_at > now() FOR UPDATE",
            [hash.to_vec().into()],
        ))
        .await?
        .ok_or_else(|| Error::not_found("invitation"))?;
    let invitation_id: Uuid = invitation.try_get("", "id")?;
    let organization_id: Uuid = invitation.try_get("", "organization_id")?;
    let email: String = invitation.try_get("", "email")?;
    let role: String = invitation.try_get("", "role")?;
    let role = Role::parse(&role).unwrap_or(Role::Viewer);

    AccountScope {
        invitation_hash: Some(hash),
        sign_in_email: Some(email.clone()),
        organization: Some(organization_id),
        ..AccountScope::default()
    }
    .apply(&txn)
    .await?;
    let existing = txn
        .query_one(Statement::from_sql_and_values(
            backend,
            "SELECT id, password_hash FROM users WHERE email = $1",
            [email.clone().into()],
        ))
        .await?;
    let user_id = match existing {
        Some(row) => {
            let stored: String = row.try_get("", "password_hash")?;
            if !state
                .accounts()
                .passwords
                .verify(&body.password, Some(stored))
                .await?
            {
                return Err(Error::Unauthorized);
            }
            row.try_get("", "id")?
        }
        None => {
            validate_new_password("password", &body.password)?;
            let password_hash = state.accounts().passwords.hash(&body.password).await?;
            let user_id = Uuid::now_v7();
            AccountScope {
                invitation_hash: Some(hash),
                user: Some(user_id),
                organization: Some(organization_id),
                ..AccountScope::default()
            }
            .apply(&txn)
            .await?;
            txn.execute(Statement::from_sql_and_values(
                backend,
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)",
                [
                    user_id.into(),
                    email.clone().into(),
                    body.name.clone().into(),
                    password_hash.into(),
                ],
            ))
            .await?;
            user_id
        }
    };
    let joined = txn
        .execute(Statement::from_sql_and_values(
            backend,
            "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            [organization_id.into(), user_id.into(), role.as_str().into()],
        ))
        .await?
        .rows_affected();
    if joined == 0 {
        return Err(Error::Conflict(
            "already a member of this organization".into(),
        ));
    }
    txn.execute(Statement::from_sql_and_values(
        backend,
        "UPDATE invitations SET accepted_at = now() WHERE id = $1",
        [invitation_id.into()],
    ))
    .await?;
    let joined_as = SessionUser {
        id: user_id,
        email: email.clone(),
    };
    let actor = Actor::User(joined_as.clone());
    audit::record(
        &txn,
        organization_id,
        audit::Entry {
            action: "member.joined",
            target_type: "user",
            target_id: Some(user_id.to_string()),
            details: serde_json::json!({ "role": role, "invitation": invitation_id }),
            actor: &actor,
            ip,
        },
    )
    .await?;
    txn.commit().await?;
    let csrf = start_session(&session, joined_as).await?;
    tracing::info!(user_id = %user_id, organization_id = %organization_id, "invitation accepted");
    Ok((
        StatusCode::CREATED,
        axum::Json(current(&state, user_id, csrf).await?),
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invitation, list_invitations))
        .routes(routes!(revoke_invitation))
        .routes(routes!(accept_invitation))
}
