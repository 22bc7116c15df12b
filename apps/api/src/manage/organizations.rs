//! Organizations. Who may call: creating takes the operator's token or a signed-in person (who
//! becomes its owner), never a management token; listing shows what the caller may see (the
//! operator everything, a person their memberships, a token its own organization); reading one
//! takes `Read` on it; renaming takes the admin role (`projects:write` for a token).

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use gamify_common::ErrorCode;
use gamify_db::{
    AccountScope,
    entities::organizations,
    sea_orm::{
        ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
        QuerySelect, Set, Statement, TransactionTrait,
    },
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{
        audit,
        caller::{Actor, Caller},
        roles::{Permission, Role},
    },
    http::{
        error::{Error, Result},
        extract::{Json, Path},
        validate::validate_name,
    },
    state::AppState,
};

/// The most organizations one listing returns.
const MAX_LISTED: u64 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrganization {
    /// 1–255 characters, not blank.
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationOut {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) created_at: DateTime<Utc>,
    /// The caller's role in it, when the caller is a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationList {
    pub(crate) data: Vec<OrganizationOut>,
}

impl From<organizations::Model> for OrganizationOut {
    fn from(model: organizations::Model) -> Self {
        Self {
            id: model.id,
            name: model.name,
            created_at: model.created_at,
            role: None,
        }
    }
}

/// Creates an organization; a person creating one becomes its owner.
#[utoipa::path(
    post,
    path = "/v1/organizations",
    tag = "management",
    request_body = CreateOrganization,
    responses((status = 201, description = "Created", body = OrganizationOut), crate::http::schemas::CreateErrors),
    security(("adminToken" = []), ("session" = []))
)]
pub(crate) async fn create_organization(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<CreateOrganization>,
) -> Result<(StatusCode, axum::Json<OrganizationOut>)> {
    if matches!(caller.actor, Actor::Token { .. }) {
        return Err(Error::forbidden(
            ErrorCode::Forbidden,
            "a management token belongs to one organization and cannot create others",
        ));
    }
    validate_name("name", &body.name)?;
    let now = Utc::now();
    let txn = state.db().shared().begin().await?;
    let organization = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(body.name),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let mut out = OrganizationOut::from(organization);
    if let Some(user) = caller.user() {
        AccountScope::organization(out.id).apply(&txn).await?;
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')",
            [out.id.into(), user.id.into()],
        ))
        .await?;
        out.role = Some(Role::Owner);
    }
    audit::record(
        &txn,
        out.id,
        audit::Entry::new(&caller, "organization.created", "organization")
            .target(out.id)
            .details(serde_json::json!({ "name": out.name })),
    )
    .await?;
    txn.commit().await?;
    tracing::info!(organization_id = %out.id, "organization created");
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// The organizations the caller may see, by name.
#[utoipa::path(
    get,
    path = "/v1/organizations",
    tag = "management",
    responses((status = 200, description = "The organizations", body = OrganizationList), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = []), ("orgToken" = []))
)]
pub(crate) async fn list_organizations(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<axum::Json<OrganizationList>> {
    let db = state.db().shared();
    let data = match &caller.actor {
        Actor::Operator => organizations::Entity::find()
            .order_by_asc(organizations::Column::Name)
            .order_by_asc(organizations::Column::Id)
            .limit(MAX_LISTED)
            .all(db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
        Actor::Token {
            organization_id, ..
        } => organizations::Entity::find()
            .filter(organizations::Column::Id.eq(*organization_id))
            .all(db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
        Actor::User(user) => {
            let roles: std::collections::HashMap<Uuid, Role> =
                crate::accounts::sessions::current(&state, user.id, String::new())
                    .await?
                    .organizations
                    .into_iter()
                    .map(|membership| (membership.id, membership.role))
                    .collect();
            organizations::Entity::find()
                .filter(organizations::Column::Id.is_in(roles.keys().copied()))
                .order_by_asc(organizations::Column::Name)
                .order_by_asc(organizations::Column::Id)
                .all(db)
                .await?
                .into_iter()
                .map(|model| OrganizationOut {
                    role: roles.get(&model.id).copied(),
                    ..model.into()
                })
                .collect()
        }
    };
    Ok(axum::Json(OrganizationList { data }))
}

/// One organization.
#[utoipa::path(
    get,
    path = "/v1/organizations/{organization_id}",
    tag = "management",
    params(("organization_id" = Uuid, Path, description = "The organization's id")),
    responses((status = 200, description = "The organization", body = OrganizationOut), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn get_organization(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<axum::Json<OrganizationOut>> {
    let grant = caller
        .authorize(&state, organization_id, Permission::Read)
        .await?;
    let organization = organizations::Entity::find_by_id(organization_id)
        .one(state.db().shared())
        .await?
        .ok_or_else(|| Error::not_found("organization"))?;
    Ok(axum::Json(OrganizationOut {
        role: grant.role,
        ..organization.into()
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RenameOrganization {
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) name: String,
}

/// Renames the organization.
#[utoipa::path(
    patch,
    path = "/v1/organizations/{organization_id}",
    tag = "management",
    params(("organization_id" = Uuid, Path, description = "The organization's id")),
    request_body = RenameOrganization,
    responses((status = 200, description = "Renamed", body = OrganizationOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["projects:write"]))
)]
pub(crate) async fn rename_organization(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Json(body): Json<RenameOrganization>,
) -> Result<axum::Json<OrganizationOut>> {
    validate_name("name", &body.name)?;
    let grant = caller
        .authorize(&state, organization_id, Permission::ProjectsWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    let found = organizations::Entity::find_by_id(organization_id)
        .one(&txn)
        .await?
        .ok_or_else(|| Error::not_found("organization"))?;
    let previous = found.name.clone();
    let mut changed: organizations::ActiveModel = found.into();
    changed.name = Set(body.name);
    changed.updated_at = Set(Utc::now());
    let organization = changed.update(&txn).await?;
    audit::record(
        &txn,
        organization_id,
        audit::Entry::new(&caller, "organization.renamed", "organization")
            .target(organization_id)
            .details(serde_json::json!({ "from": previous, "to": organization.name })),
    )
    .await?;
    txn.commit().await?;
    Ok(axum::Json(OrganizationOut {
        role: grant.role,
        ..organization.into()
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_organization, list_organizations))
        .routes(routes!(get_organization, rename_organization))
}
