use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use gamify_common::{events::validate_event_name, ingest::MAX_BATCH_EVENTS};
use gamify_db::{
    entities::{api_keys, projects},
    sea_orm::{
        ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
        QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
    },
    sources::ProjectRateLimit,
    trusted_lists,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{audit, caller::Caller, roles::Permission},
    http::{
        error::{Error, Result},
        extract::{Json, Path},
        validate::{nullable, validate_name, validate_storable},
    },
    ingest::keys::Change,
    state::AppState,
};

const MAX_DESCRIPTION_CHARS: usize = 2000;
const MAX_TRUSTED_EVENTS: usize = 200;
const MAX_EVENTS_PER_SECOND: u32 = 10_000_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateProject {
    pub(crate) organization_id: Uuid,
    /// 1–255 characters, not blank; unique within the organization.
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) name: String,
    #[schema(max_length = 2000)]
    pub(crate) description: Option<String>,
}

/// `{eventsPerSecond, burst}`: the project's ceiling on accepted events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RateLimit)]
pub struct RateLimitDoc {
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub(crate) events_per_second: u32,
    /// At least one full batch.
    #[schema(minimum = 500, maximum = 100_000_000)]
    pub(crate) burst: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProject {
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub(crate) description: Option<Option<String>>,
    /// Extra server-only event names (replaces the list): at most 200, each 1–200 characters
    /// without control characters.
    #[schema(max_items = 200)]
    pub(crate) trusted_events: Option<Vec<String>>,
    /// The project's ceiling on accepted events; `null` returns to the gateway's default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitDoc>)]
    pub(crate) rate_limit: Option<Option<ProjectRateLimit>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectOut {
    pub(crate) id: Uuid,
    pub(crate) organization_id: Uuid,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) trusted_events: Vec<String>,
    /// The project's own ceiling on accepted events; `null`: the gateway's default applies.
    #[schema(value_type = Option<RateLimitDoc>)]
    pub(crate) rate_limit: Option<ProjectRateLimit>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl From<projects::Model> for ProjectOut {
    fn from(model: projects::Model) -> Self {
        let rate_limit = match (model.rate_limit_events_per_second, model.rate_limit_burst) {
            (Some(per_second), Some(burst)) => Some(ProjectRateLimit {
                events_per_second: u32::try_from(per_second).unwrap_or(0),
                burst: u32::try_from(burst).unwrap_or(0),
            }),
            _ => None,
        };
        Self {
            trusted_events: model.trusted_event_names(),
            rate_limit,
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
        Some(d) => validate_storable("description", d),
        None => Ok(()),
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

/// A batch counts as many events as it holds, so the burst must let a full batch through.
fn validate_rate_limit(limit: &ProjectRateLimit) -> Result<()> {
    if !(1..=MAX_EVENTS_PER_SECOND).contains(&limit.events_per_second) {
        return Err(Error::invalid_field(
            "rateLimit.eventsPerSecond",
            format_args!("must be 1–{MAX_EVENTS_PER_SECOND}"),
        ));
    }
    let min_burst = MAX_BATCH_EVENTS as u32;
    if !(min_burst..=MAX_EVENTS_PER_SECOND * 10).contains(&limit.burst) {
        return Err(Error::invalid_field(
            "rateLimit.burst",
            format_args!(
                "must be {min_burst}–{} (at least one full batch)",
                MAX_EVENTS_PER_SECOND * 10
            ),
        ));
    }
    Ok(())
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

/// Creates a project in an organization.
#[utoipa::path(
    post,
    path = "/v1/projects",
    tag = "management",
    request_body = CreateProject,
    responses((status = 201, description = "Created", body = ProjectOut), crate::http::schemas::CreateErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["projects:write"]))
)]
pub(crate) async fn create_project(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<CreateProject>,
) -> Result<(StatusCode, axum::Json<ProjectOut>)> {
    validate_name("name", &body.name)?;
    validate_description(body.description.as_deref())?;
    caller
        .authorize(&state, body.organization_id, Permission::ProjectsWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    let now = Utc::now();
    let project = projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(body.organization_id),
        name: Set(body.name),
        description: Set(body.description),
        trusted_events: Set(serde_json::json!([])),
        trusted_events_version: Set(1),
        rate_limit_events_per_second: Set(None),
        rate_limit_burst: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(name_taken)?;
    audit::record(
        &txn,
        project.organization_id,
        audit::Entry::new(&caller, "project.created", "project")
            .target(project.id)
            .details(serde_json::json!({ "name": project.name })),
    )
    .await?;
    txn.commit().await?;
    tracing::info!(project_id = %project.id, organization_id = %project.organization_id, "project created");
    Ok((StatusCode::CREATED, axum::Json(project.into())))
}

/// A project.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}",
    tag = "management",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "The project", body = ProjectOut), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn get_project(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<axum::Json<ProjectOut>> {
    let (project, _) = caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    Ok(axum::Json(project.into()))
}

/// Changes a project; absent fields stay as they are.
#[utoipa::path(
    patch,
    path = "/v1/projects/{project_id}",
    tag = "management",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    request_body = UpdateProject,
    responses((status = 200, description = "The changed project", body = ProjectOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["projects:write"]))
)]
pub(crate) async fn update_project(
    caller: Caller,
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
    if let Some(Some(limit)) = &body.rate_limit {
        validate_rate_limit(limit)?;
    }

    caller
        .authorize_project(&state, project_id, Permission::ProjectsWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    // Locked: two changes of the trusted list must not both replace the same version.
    let current = projects::Entity::find_by_id(project_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(|| Error::not_found("project"))?;
    // The stored JSON, not its reading: an unreadable stored list is replaced whatever it is.
    let trusted_events =
        trusted_events.filter(|names| serde_json::json!(names) != current.trusted_events);
    // A new list holds on every gateway only once they all learned of it; until then a gateway
    // may still apply the old one, which is kept with the instant it stops being applied.
    let superseded = match &trusted_events {
        Some(_) => {
            let until = state.provisional_effect();
            trusted_lists::supersede(
                &txn,
                current.id,
                current.trusted_events_version,
                &current.trusted_events,
                until,
            )
            .await?;
            Some((current.trusted_events_version, until))
        }
        None => None,
    };
    let version = current.trusted_events_version;
    let mut project = current.into_active_model();
    if let Some(name) = body.name {
        project.name = Set(name);
    }
    if let Some(description) = body.description {
        project.description = Set(description);
    }
    if let Some(trusted_events) = &trusted_events {
        project.trusted_events = Set(serde_json::json!(trusted_events));
        project.trusted_events_version = Set(version.saturating_add(1));
    }
    if let Some(limit) = body.rate_limit {
        let to_column = |value: u32| i32::try_from(value).ok();
        project.rate_limit_events_per_second =
            Set(limit.and_then(|l| to_column(l.events_per_second)));
        project.rate_limit_burst = Set(limit.and_then(|l| to_column(l.burst)));
    }
    project.updated_at = Set(Utc::now());
    let project = project.update(&txn).await.map_err(name_taken)?;
    audit::record(
        &txn,
        project.organization_id,
        audit::Entry::new(&caller, "project.updated", "project")
            .target(project.id)
            .details(serde_json::json!({
                "name": project.name,
                "trustedEventsVersion": project.trusted_events_version,
                "rateLimitChanged": body.rate_limit.is_some(),
            })),
    )
    .await?;
    txn.commit().await?;
    // Cached keys carry their project's trusted list and rate limit.
    if trusted_events.is_some() || body.rate_limit.is_some() {
        let db = state.db().shared();
        let hashes = api_keys::Entity::find()
            .select_only()
            .column(api_keys::Column::KeyHash)
            .filter(api_keys::Column::ProjectId.eq(project.id))
            .into_tuple::<String>()
            .all(db)
            .await?;
        match superseded {
            Some((old_version, until)) => {
                let effective = state
                    .settle_key_change(&hashes, Change::Updated, until)
                    .await;
                if effective < until {
                    state
                        .db()
                        .settle_superseded(project.id, old_version, effective)
                        .await?;
                }
            }
            None => state.refresh_keys(&hashes).await,
        }
    }
    tracing::info!(project_id = %project.id, trusted_events_version = project.trusted_events_version, "project updated");
    Ok(axum::Json(project.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub(crate) data: Vec<ProjectOut>,
}

/// The organization's projects, by name.
#[utoipa::path(
    get,
    path = "/v1/organizations/{organization_id}/projects",
    tag = "management",
    params(("organization_id" = Uuid, Path, description = "The organization's id")),
    responses((status = 200, description = "The projects", body = ProjectList), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_organization_projects(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<axum::Json<ProjectList>> {
    caller
        .authorize(&state, organization_id, Permission::Read)
        .await?;
    let projects = projects::Entity::find()
        .filter(projects::Column::OrganizationId.eq(organization_id))
        .order_by_asc(projects::Column::Name)
        .order_by_asc(projects::Column::Id)
        .limit(10_000)
        .all(state.db().shared())
        .await?;
    Ok(axum::Json(ProjectList {
        data: projects.into_iter().map(Into::into).collect(),
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project))
        .routes(routes!(list_organization_projects))
        .routes(routes!(get_project, update_project))
}
