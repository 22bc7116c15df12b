//! `GET /v1/users/{externalId}`: a tenant reads one of its end users.

use axum::extract::State;
use chrono::{DateTime, Utc};
use gamify_db::sea_orm::{ConnectionTrait, Statement};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        error::{Error, Result},
        extract::Path,
    },
    read::SecretKey,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndUserOut {
    pub(crate) external_id: String,
    /// The identify calls' traits, merged.
    #[schema(value_type = Object)]
    pub(crate) metadata: Value,
    pub(crate) first_seen_at: DateTime<Utc>,
    pub(crate) last_seen_at: DateTime<Utc>,
    pub(crate) event_count: i64,
}

/// One end user of the key's project.
#[utoipa::path(
    get,
    path = "/v1/users/{external_id}",
    tag = "reads",
    params(("external_id" = String, Path, description = "The end user's userId")),
    responses((status = 200, description = "The end user", body = EndUserOut), crate::http::schemas::GetUserErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    SecretKey(key): SecretKey,
    Path(external_id): Path<String>,
) -> Result<axum::Json<EndUserOut>> {
    // A userId never holds NUL (ingestion refuses it), and Postgres text cannot: no such user.
    if external_id.contains('\0') {
        return Err(Error::not_found("user"));
    }
    let txn = state.db().tenant(key.project_id).await?;
    let row = txn
        .query_one(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT u.external_id, u.metadata,
                    COALESCE(LEAST(min(e.occurred_at), u.created_at), u.created_at) AS first_seen_at,
                    COALESCE(GREATEST(max(e.occurred_at), u.updated_at), u.updated_at) AS last_seen_at,
                    count(e.id) AS event_count
             FROM end_users u
             LEFT JOIN events e ON e.project_id = u.project_id AND e.user_id = u.id
             WHERE u.project_id = $1 AND u.external_id = $2
             GROUP BY u.id",
            [key.project_id.into(), external_id.into()],
        ))
        .await?;
    txn.commit().await?;
    let row = row.ok_or_else(|| Error::not_found("user"))?;
    Ok(axum::Json(EndUserOut {
        external_id: row.try_get("", "external_id")?,
        metadata: row.try_get("", "metadata")?,
        first_seen_at: row.try_get("", "first_seen_at")?,
        last_seen_at: row.try_get("", "last_seen_at")?,
        event_count: row.try_get("", "event_count")?,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_user))
}
