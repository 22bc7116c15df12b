//! A project's rules: one versioned JSON document (metrics, streaks, achievements, points systems
//! with levels, leaderboards), validated as a whole by the rule library. Versions are immutable; a
//! new one applies from now on (carrying users' progress over) or is replayed over the evaluated
//! events first and then switched to atomically. `preview` evaluates a draft over recent stored
//! events without changing anything. All with the admin token.

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use gamify_db::{
    gamification::{
        project_lock,
        stored::{self, StoredEvent},
    },
    sea_orm::{DbErr, sqlx},
};
use gamify_rules::{Award, Rules, UserState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{audit, caller::Caller, roles::Permission},
    http::{
        error::{Error, Result},
        extract::{Json, Path},
    },
    state::AppState,
};

const DEFAULT_PREVIEW_EVENTS: u32 = 1_000;
const MAX_PREVIEW_EVENTS: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Active at once; users keep their progress and later events count under the new rules.
    FromNow,
    /// Recomputed over every evaluated event and adjustment first, then switched to.
    Replay,
}

impl Apply {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Apply::FromNow => "from_now",
            Apply::Replay => "replay",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRules {
    /// The rule document (see docs/GAMIFICATION.md).
    #[schema(value_type = Object)]
    pub(crate) rules: Value,
    pub(crate) apply: Apply,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedOut {
    pub(crate) version: i32,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) apply: Apply,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressCounts {
    pub(crate) events_done: i64,
    pub(crate) events_total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionOut {
    pub(crate) version: i32,
    pub(crate) apply: Apply,
    /// `replaying`, `active`, `retired` or `failed`.
    pub(crate) state: String,
    pub(crate) progress: ProgressCounts,
    /// Why a replay failed or was superseded.
    pub(crate) error: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) activated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRulesOut {
    pub(crate) version: i32,
    #[schema(value_type = Object)]
    pub(crate) rules: Value,
    pub(crate) apply: Apply,
    pub(crate) state: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) activated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub(crate) data: Vec<VersionOut>,
}

/// 400 naming every problem of the document, each with its JSON path.
fn parse(rules: &Value) -> Result<Rules> {
    Rules::parse(rules).map_err(|errors| Error::InvalidRequest {
        message: format!(
            "the rules are invalid: {}",
            errors
                .first()
                .map(|e| format!("{}: {}", e.path, e.message))
                .unwrap_or_default()
        ),
        details: Some(json!({ "errors": errors })),
    })
}

/// Publishes a new version of the project's rules.
#[utoipa::path(
    put,
    path = "/v1/projects/{project_id}/rules",
    tag = "gamification",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    request_body = PublishRules,
    responses((status = 201, description = "The new version", body = PublishedOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["rules:write"]))
)]
pub(crate) async fn put_rules(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Json(body): Json<PublishRules>,
) -> Result<(StatusCode, axum::Json<PublishedOut>)> {
    let (project, _) = caller
        .authorize_project(&state, project_id, Permission::RulesWrite)
        .await?;
    // Stored as the parser read it: defaults filled in, so a version means one thing forever.
    let rules = parse(&body.rules)?;
    let document = serde_json::to_value(rules.document())
        .map_err(|err| Error::from(DbErr::Custom(format!("cannot store rules: {err}"))))?;
    let mut txn = state
        .db()
        .tenant_bulk(project_id)
        .await
        .map_err(Error::from)?;
    // Versions are numbered in order: one publication per project at a time.
    sqlx::query("SELECT id FROM projects WHERE id = $1 FOR UPDATE")
        .bind(project_id)
        .execute(&mut *txn)
        .await
        .map_err(Error::from)?;
    let (version, active_generation): (i32, Option<i32>) = sqlx::query_as(
        "SELECT COALESCE(max(version), 0) + 1,
                (SELECT generation FROM rule_versions WHERE project_id = $1 AND state = 'active')
         FROM rule_versions WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_one(&mut *txn)
    .await
    .map_err(Error::from)?;
    // A newer publication supersedes a replay still running.
    sqlx::query(
        "UPDATE rule_versions SET state = 'failed', error = $2, lease_until = NULL
         WHERE project_id = $1 AND state = 'replaying'",
    )
    .bind(project_id)
    .bind(format!("superseded by version {version}"))
    .execute(&mut *txn)
    .await
    .map_err(Error::from)?;
    let (state_name, generation) = match body.apply {
        Apply::FromNow => {
            // Held off every evaluation of the project for the moment of the switch.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(project_lock(project_id))
                .execute(&mut *txn)
                .await
                .map_err(Error::from)?;
            stored::retire_active(&mut txn, project_id).await?;
            ("active", active_generation.unwrap_or(version))
        }
        Apply::Replay => ("replaying", version),
    };
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO rule_versions (project_id, version, generation, document, apply, state, activated_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 = 'active' THEN now() END)
         RETURNING created_at",
    )
    .bind(project_id)
    .bind(version)
    .bind(generation)
    .bind(&document)
    .bind(body.apply.as_str())
    .bind(state_name)
    .fetch_one(&mut *txn)
    .await
    .map_err(Error::from)?;
    audit::record_in(
        &mut txn,
        project.organization_id,
        audit::Entry::new(&caller, "rules.published", "rules")
            .target(format!("{project_id}/{version}"))
            .details(json!({ "projectId": project_id, "version": version, "apply": body.apply.as_str() })),
    )
    .await?;
    txn.commit().await.map_err(Error::from)?;
    tracing::info!(%project_id, version, apply = body.apply.as_str(), "rules published");
    Ok((
        StatusCode::CREATED,
        axum::Json(PublishedOut {
            version,
            created_at,
            apply: body.apply,
        }),
    ))
}

/// version, document, apply, state, created at, activated at.
type ActiveRow = (
    i32,
    Value,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

type VersionRow = (
    i32,
    String,
    String,
    i64,
    i64,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const VERSION_COLUMNS: &str =
    "version, apply, state, events_done, events_total, error, created_at, activated_at";

fn version_out(row: VersionRow) -> VersionOut {
    let (version, apply, state, events_done, events_total, error, created_at, activated_at) = row;
    VersionOut {
        version,
        apply: if apply == "replay" {
            Apply::Replay
        } else {
            Apply::FromNow
        },
        state,
        progress: ProgressCounts {
            events_done,
            events_total,
        },
        error,
        created_at,
        activated_at,
    }
}

/// The active version of the project's rules.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}/rules",
    tag = "gamification",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "The active rules", body = ActiveRulesOut), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn get_rules(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<axum::Json<ActiveRulesOut>> {
    caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let row: Option<ActiveRow> = sqlx::query_as(
        "SELECT version, document, apply, state, created_at, activated_at FROM rule_versions
             WHERE project_id = $1 AND state = 'active'",
    )
    .bind(project_id)
    .fetch_optional(state.db().shared().get_postgres_connection_pool())
    .await
    .map_err(Error::from)?;
    let (version, rules, apply, state_name, created_at, activated_at) =
        row.ok_or_else(|| Error::not_found("active rule version"))?;
    Ok(axum::Json(ActiveRulesOut {
        version,
        rules,
        apply: if apply == "replay" {
            Apply::Replay
        } else {
            Apply::FromNow
        },
        state: state_name,
        created_at,
        activated_at,
    }))
}

/// One version's document, for a caller already authorized to read the project (the console's
/// diff between versions); `None` when there is no such version.
pub(crate) async fn version_document(
    state: &AppState,
    project_id: Uuid,
    version: i32,
) -> Result<Option<Value>> {
    sqlx::query_scalar("SELECT document FROM rule_versions WHERE project_id = $1 AND version = $2")
        .bind(project_id)
        .bind(version)
        .fetch_optional(state.db().shared().get_postgres_connection_pool())
        .await
        .map_err(Error::from)
}

/// Every version of the project's rules, newest first.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}/rules/versions",
    tag = "gamification",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "The versions", body = VersionList), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_versions(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<axum::Json<VersionList>> {
    caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM rule_versions WHERE project_id = $1 ORDER BY version DESC"
    ))
    .bind(project_id)
    .fetch_all(state.db().shared().get_postgres_connection_pool())
    .await
    .map_err(Error::from)?;
    Ok(axum::Json(VersionList {
        data: rows.into_iter().map(version_out).collect(),
    }))
}

/// One version, with a replay's progress.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}/rules/versions/{version_number}",
    tag = "gamification",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("version_number" = i32, Path, description = "The version number"),
    ),
    responses((status = 200, description = "The version", body = VersionOut), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn get_version(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, version)): Path<(Uuid, i32)>,
) -> Result<axum::Json<VersionOut>> {
    caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM rule_versions WHERE project_id = $1 AND version = $2"
    ))
    .bind(project_id)
    .bind(version)
    .fetch_optional(state.db().shared().get_postgres_connection_pool())
    .await
    .map_err(Error::from)?;
    row.map(version_out)
        .map(axum::Json)
        .ok_or_else(|| Error::not_found("rule version"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewRules {
    #[schema(value_type = Object)]
    pub(crate) rules: Value,
    /// Only this user's events.
    pub(crate) user_id: Option<String>,
    /// How many of the most recent stored events (1–10000, default 1000).
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewOut {
    pub(crate) events_evaluated: usize,
    /// What each event would have earned, oldest first; events that earn nothing are left out.
    pub(crate) awards: Vec<PreviewAward>,
    /// Each user's progress after those events, as `GET …/progress` shows it.
    #[schema(value_type = Object)]
    pub(crate) users: BTreeMap<String, gamify_rules::Progress>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewAward {
    pub(crate) event_id: Uuid,
    pub(crate) user_id: String,
    #[schema(value_type = Vec<Object>)]
    pub(crate) awards: Vec<Award>,
}

/// Evaluates a draft over the project's most recent stored events, each user starting from
/// nothing, and returns what it would award. Changes nothing.
#[utoipa::path(
    post,
    path = "/v1/projects/{project_id}/rules/preview",
    tag = "gamification",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    request_body = PreviewRules,
    responses((status = 200, description = "What the draft would award", body = PreviewOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["rules:write"]))
)]
pub(crate) async fn preview(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Json(body): Json<PreviewRules>,
) -> Result<axum::Json<PreviewOut>> {
    caller
        .authorize_project(&state, project_id, Permission::RulesWrite)
        .await?;
    let rules = parse(&body.rules)?;
    let limit = body.limit.unwrap_or(DEFAULT_PREVIEW_EVENTS);
    if !(1..=MAX_PREVIEW_EVENTS).contains(&limit) {
        return Err(Error::invalid_field("limit", "must be between 1 and 10000"));
    }
    let mut txn = state
        .db()
        .tenant_bulk(project_id)
        .await
        .map_err(Error::from)?;
    type Row = (
        Uuid,
        String,
        String,
        String,
        Value,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT e.id, u.external_id, e.event_type, e.key_type, e.payload, e.occurred_at, e.received_at
         FROM events e JOIN end_users u ON u.id = e.user_id
         WHERE e.project_id = $1 AND e.status = 'processed' AND ($2::text IS NULL OR u.external_id = $2)
         ORDER BY e.received_at DESC, e.id DESC LIMIT $3",
    )
    .bind(project_id)
    .bind(body.user_id.as_deref())
    .bind(i64::from(limit))
    .fetch_all(&mut *txn)
    .await
    .map_err(Error::from)?;
    txn.commit().await.map_err(Error::from)?;
    rows.reverse();
    let mut states: BTreeMap<String, UserState> = BTreeMap::new();
    let mut awards = Vec::new();
    for (event_id, user_id, name, key_type, payload, occurred_at, received_at) in &rows {
        let input = StoredEvent {
            event_id: *event_id,
            user_id,
            name,
            source: stored::source(key_type),
            payload: payload.as_object(),
            occurred_at: *occurred_at,
            received_at: *received_at,
        }
        .input();
        let user_state = states.entry(user_id.clone()).or_default();
        let evaluation = gamify_rules::apply(&rules, user_state, &input);
        if !evaluation.awards.is_empty() {
            awards.push(PreviewAward {
                event_id: *event_id,
                user_id: user_id.clone(),
                awards: evaluation.awards,
            });
        }
    }
    let now = state.now();
    let users = states
        .iter()
        .map(|(user, user_state)| {
            (
                user.clone(),
                gamify_rules::progress(&rules, user_state, now),
            )
        })
        .collect();
    Ok(axum::Json(PreviewOut {
        events_evaluated: rows.len(),
        awards,
        users,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_rules, get_rules))
        .routes(routes!(list_versions))
        .routes(routes!(get_version))
        .routes(routes!(preview))
}
