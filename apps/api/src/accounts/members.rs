//! An organization's members. Who may call: listing needs `Read`; changing a role or removing a
//! member needs `MembersWrite`, and an owner (`OwnersWrite`) when the owner role is given, taken or
//! its holder removed. The last owner can be neither demoted nor removed (409).

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use gamify_db::{
    AccountScope,
    sea_orm::{ConnectionTrait, DatabaseTransaction, Statement},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{
        audit,
        caller::Caller,
        roles::{Permission, Role},
    },
    http::{
        error::{Error, Result},
        extract::{Json, Path},
    },
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberOut {
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    pub(crate) name: Option<String>,
    pub(crate) role: Role,
    pub(crate) joined_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub(crate) data: Vec<MemberOut>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeRole {
    pub(crate) role: Role,
}

/// The organization's members.
#[utoipa::path(
    get,
    path = "/v1/organizations/{organization_id}/members",
    tag = "accounts",
    params(("organization_id" = Uuid, Path)),
    responses((status = 200, body = MemberList), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_members(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<axum::Json<MemberList>> {
    caller
        .authorize(&state, organization_id, Permission::Read)
        .await?;
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope::organization(organization_id),
            "SELECT u.id, u.email, u.name, m.role, m.created_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1 \
             ORDER BY m.created_at, u.id LIMIT 10000",
            [organization_id.into()].into(),
        )
        .await?;
    let data = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("", "role")?;
            Ok(MemberOut {
                user_id: row.try_get("", "id")?,
                email: row.try_get("", "email")?,
                name: row.try_get("", "name")?,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                joined_at: row.try_get("", "created_at")?,
            })
        })
        .collect::<Result<Vec<_>, gamify_db::sea_orm::DbErr>>()?;
    Ok(axum::Json(MemberList { data }))
}

/// The member's role, with the organization's owner rows locked, so that two concurrent changes
/// cannot both leave it without an owner. `None`: not a member.
pub(crate) async fn lock_member(
    txn: &DatabaseTransaction,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<Option<(Role, usize)>> {
    let rows = txn
        .query_all(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT user_id, role FROM memberships WHERE organization_id = $1 \
               AND (role = 'owner' OR user_id = $2) ORDER BY user_id FOR UPDATE",
            [organization_id.into(), user_id.into()],
        ))
        .await?;
    let mut owners = 0;
    let mut role = None;
    for row in &rows {
        let member: Uuid = row.try_get("", "user_id")?;
        let text: String = row.try_get("", "role")?;
        let parsed = Role::parse(&text).unwrap_or(Role::Viewer);
        if parsed == Role::Owner {
            owners += 1;
        }
        if member == user_id {
            role = Some(parsed);
        }
    }
    Ok(role.map(|role| (role, owners)))
}

/// Changes a member's role.
#[utoipa::path(
    patch,
    path = "/v1/organizations/{organization_id}/members/{user_id}",
    tag = "accounts",
    params(("organization_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    request_body = ChangeRole,
    responses((status = 200, body = MemberOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["members:write"]))
)]
pub(crate) async fn change_role(
    caller: Caller,
    State(state): State<AppState>,
    Path((organization_id, user_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ChangeRole>,
) -> Result<axum::Json<MemberOut>> {
    caller
        .authorize(&state, organization_id, Permission::MembersWrite)
        .await?;
    let txn = state
        .db()
        .accounts(&AccountScope::organization(organization_id))
        .await?;
    let (current, owners) = lock_member(&txn, organization_id, user_id)
        .await?
        .ok_or_else(|| Error::not_found("member"))?;
    if current == Role::Owner || body.role == Role::Owner {
        caller
            .authorize(&state, organization_id, Permission::OwnersWrite)
            .await?;
    }
    if current == Role::Owner && body.role != Role::Owner && owners <= 1 {
        return Err(Error::Conflict(
            "the last owner cannot be demoted; make someone else owner first".into(),
        ));
    }
    let row = txn
        .query_one(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "WITH changed AS (UPDATE memberships SET role = $3 \
                 WHERE organization_id = $1 AND user_id = $2 RETURNING user_id, role, created_at) \
             SELECT u.id, u.email, u.name, c.role, c.created_at FROM changed c JOIN users u ON u.id = c.user_id",
            [
                organization_id.into(),
                user_id.into(),
                body.role.as_str().into(),
            ],
        ))
        .await
        ?
        .ok_or_else(|| Error::not_found("member"))?;
    if current != body.role {
        audit::record(
            &txn,
            organization_id,
            audit::Entry::new(&caller, "member.role_changed", "user")
                .target(user_id)
                .details(serde_json::json!({ "from": current, "to": body.role })),
        )
        .await?;
    }
    let member = MemberOut {
        user_id: row.try_get("", "id")?,
        email: row.try_get("", "email")?,
        name: row.try_get("", "name")?,
        role: body.role,
        joined_at: row.try_get("", "created_at")?,
    };
    txn.commit().await?;
    Ok(axum::Json(member))
}

/// Removes a member from the organization (their account and other memberships stay).
#[utoipa::path(
    delete,
    path = "/v1/organizations/{organization_id}/members/{user_id}",
    tag = "accounts",
    params(("organization_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["members:write"]))
)]
pub(crate) async fn remove_member(
    caller: Caller,
    State(state): State<AppState>,
    Path((organization_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    caller
        .authorize(&state, organization_id, Permission::MembersWrite)
        .await?;
    let txn = state
        .db()
        .accounts(&AccountScope::organization(organization_id))
        .await?;
    let (current, owners) = lock_member(&txn, organization_id, user_id)
        .await?
        .ok_or_else(|| Error::not_found("member"))?;
    if current == Role::Owner {
        caller
            .authorize(&state, organization_id, Permission::OwnersWrite)
            .await?;
        if owners <= 1 {
            return Err(Error::Conflict(
                "the last owner cannot be removed; make someone else owner first".into(),
            ));
        }
    }
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2",
        [organization_id.into(), user_id.into()],
    ))
    .await?;
    audit::record(
        &txn,
        organization_id,
        audit::Entry::new(&caller, "member.removed", "user")
            .target(user_id)
            .details(serde_json::json!({ "role": current })),
    )
    .await?;
    txn.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members))
        .routes(routes!(change_role, remove_member))
}
