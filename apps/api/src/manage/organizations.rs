use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use gamify_db::{
    entities::organizations,
    sea_orm::{ActiveModelTrait, Set},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    http::{error::Result, extract::Json, validate::validate_name},
    manage::Admin,
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrganization {
    /// 1–255 characters, not blank.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationOut {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<organizations::Model> for OrganizationOut {
    fn from(model: organizations::Model) -> Self {
        Self {
            id: model.id,
            name: model.name,
            created_at: model.created_at,
        }
    }
}

/// Creates an organization.
#[utoipa::path(
    post,
    path = "/v1/organizations",
    tag = "management",
    request_body = CreateOrganization,
    responses((status = 201, description = "Created", body = OrganizationOut), crate::http::schemas::CreateErrors),
    security(("adminToken" = []))
)]
async fn create_organization(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateOrganization>,
) -> Result<(StatusCode, axum::Json<OrganizationOut>)> {
    validate_name("name", &body.name)?;
    let now = Utc::now();
    let organization = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(body.name),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(state.db().shared())
    .await?;
    tracing::info!(organization_id = %organization.id, "organization created");
    Ok((StatusCode::CREATED, axum::Json(organization.into())))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_organization))
}
