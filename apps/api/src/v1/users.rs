//! `GET /v1/users/{externalId}`: a tenant reads one of its end users.

use axum::{Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use gamify_db::sea_orm::{ConnectionTrait, Statement};
use serde::Serialize;
use serde_json::Value;

use crate::{
    AppState, Error, Result,
    extract::{Path, SecretKey},
};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndUserOut {
    external_id: String,
    metadata: Value,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    event_count: i64,
}

async fn get_user(
    State(state): State<AppState>,
    SecretKey(key): SecretKey,
    Path(external_id): Path<String>,
) -> Result<axum::Json<EndUserOut>> {
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

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users/{external_id}", get(get_user))
}
