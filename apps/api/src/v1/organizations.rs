use axum::{Router, extract::State, http::StatusCode, routing::post};
use chrono::{DateTime, Utc};
use gamify_db::{
    entities::organizations,
    sea_orm::{ActiveModelTrait, Set},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    AppState, Result,
    extract::{Admin, Json},
    v1::validate_name,
};

#[derive(Debug, Deserialize)]
pub struct CreateOrganization {
    name: String,
}

#[derive(Debug, Serialize)]
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

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/organizations", post(create_organization))
}
