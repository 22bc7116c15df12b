use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use gamify_common::events::validate_event_name;
use gamify_db::{
    entities::{api_keys, organizations, projects},
    sea_orm::{
        ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
        QueryFilter, QuerySelect, Set,
    },
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    AppState, Error, Result,
    extract::{Admin, Json, Path},
    v1::{nullable, validate_name},
};

const MAX_DESCRIPTION_CHARS: usize = 2000;
const MAX_TRUSTED_EVENTS: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateProject {
    organization_id: Uuid,
    name: String,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProject {
    name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    trusted_events: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectOut {
    id: Uuid,
    organization_id: Uuid,
    name: String,
    description: Option<String>,
    trusted_events: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<projects::Model> for ProjectOut {
    fn from(model: projects::Model) -> Self {
        Self {
            trusted_events: model.trusted_event_names(),
            id: model.id,
            organization_id: model.organization_id,
            name: model.name,
            description: model.description,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

fn validate_description(description: Option<&str>) -> Result<()> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(Error::invalid_field(
            "description",
            format_args!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

/// Validates the names and drops repeats, keeping the first occurrence's position.
fn normalize_trusted_events(names: Vec<String>) -> Result<Vec<String>> {
    if names.len() > MAX_TRUSTED_EVENTS {
        return Err(Error::invalid_field(
            "trustedEvents",
            format_args!("must hold at most {MAX_TRUSTED_EVENTS} names"),
        ));
    }
    let mut unique = Vec::with_capacity(names.len());
    for (index, name) in names.into_iter().enumerate() {
        validate_event_name(&name)
            .map_err(|problem| Error::invalid_field(&format!("trustedEvents[{index}]"), problem))?;
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    Ok(unique)
}

/// Project names are unique within their organization.
fn name_taken(err: DbErr) -> Error {
    match Error::from(err) {
        Error::Conflict(_) => {
            Error::Conflict("the organization already has a project with this name".to_owned())
        }
        other => other,
    }
}

/// The project, or 404.
pub async fn find_project(db: &impl ConnectionTrait, project_id: Uuid) -> Result<projects::Model> {
    projects::Entity::find_by_id(project_id)
        .one(db)
        .await?
        .ok_or_else(|| Error::not_found("project"))
}

async fn create_project(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateProject>,
) -> Result<(StatusCode, axum::Json<ProjectOut>)> {
    validate_name("name", &body.name)?;
    validate_description(body.description.as_deref())?;
    let db = state.db().shared();
    if organizations::Entity::find_by_id(body.organization_id)
        .one(db)
        .await?
        .is_none()
    {
        return Err(Error::invalid_field(
            "organizationId",
            "does not name an existing organization",
        ));
    }
    let now = Utc::now();
    let project = projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(body.organization_id),
        name: Set(body.name),
        description: Set(body.description),
        trusted_events: Set(serde_json::json!([])),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .map_err(name_taken)?;
    tracing::info!(project_id = %project.id, organization_id = %project.organization_id, "project created");
    Ok((StatusCode::CREATED, axum::Json(project.into())))
}

async fn get_project(
    _: Admin,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<axum::Json<ProjectOut>> {
    let project = find_project(state.db().shared(), project_id).await?;
    Ok(axum::Json(project.into()))
}

async fn update_project(
    _: Admin,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Json(body): Json<UpdateProject>,
) -> Result<axum::Json<ProjectOut>> {
    if let Some(name) = &body.name {
        validate_name("name", name)?;
    }
    if let Some(description) = &body.description {
        validate_description(description.as_deref())?;
    }
    let trusted_events = body
        .trusted_events
        .map(normalize_trusted_events)
        .transpose()?;

    let db = state.db().shared();
    let mut project = find_project(db, project_id).await?.into_active_model();
    if let Some(name) = body.name {
        project.name = Set(name);
    }
    if let Some(description) = body.description {
        project.description = Set(description);
    }
    let trusted_events_changed = trusted_events.is_some();
    if let Some(trusted_events) = trusted_events {
        project.trusted_events = Set(serde_json::json!(trusted_events));
    }
    project.updated_at = Set(Utc::now());
    let project = project.update(db).await.map_err(name_taken)?;
    if trusted_events_changed {
        // Cached keys carry their project's trusted list: the change must reach the gateway now.
        let hashes = api_keys::Entity::find()
            .select_only()
            .column(api_keys::Column::KeyHash)
            .filter(api_keys::Column::ProjectId.eq(project.id))
            .into_tuple::<String>()
            .all(db)
            .await?;
        state.forget_keys(hashes).await;
    }
    tracing::info!(project_id = %project.id, "project updated");
    Ok(axum::Json(project.into()))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/projects", post(create_project))
        .route(
            "/v1/projects/{project_id}",
            get(get_project).patch(update_project),
        )
}
