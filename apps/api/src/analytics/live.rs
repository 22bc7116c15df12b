//! `GET /v1/analytics/live`: the numbers a live view shows — events per minute over the last 30
//! minutes and the users active in the last 5 — from the raw events of those minutes (a range
//! the events' primary key reaches directly), so they include what was stored a moment ago.

use axum::extract::State;
use chrono::{DateTime, Duration, DurationRound, Utc};
use gamify_db::sea_orm::sqlx;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    analytics::{
        bounded::{self, COUNTED, WHO},
        reader::ProjectReader,
    },
    http::{error::Result, extract::Query},
    state::AppState,
};

const MINUTES: i64 = 30;
const ACTIVE_MINUTES: i64 = 5;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// The project, with a session or a management token (a secret key names its own).
    #[param(value_type = Option<uuid::Uuid>)]
    #[allow(dead_code, reason = "documents the parameter; ProjectReader reads it")]
    pub(crate) project_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Minute {
    /// The minute's start (RFC 3339, UTC).
    pub(crate) start: String,
    pub(crate) events: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    /// When the numbers were read.
    pub(crate) at: String,
    /// Events that happened (`occurredAt`) in each of the last 30 minutes, oldest first; the last
    /// minute is still under way.
    pub(crate) events_per_minute: Vec<Minute>,
    /// Distinct users (or anonymous ids) with an event in the last 5 minutes.
    pub(crate) active_users: u64,
}

/// Events per minute over the last 30 minutes and users active in the last 5.
#[utoipa::path(
    get,
    path = "/v1/analytics/live",
    tag = "analytics",
    params(LiveQuery),
    responses(
        (status = 200, description = "The live numbers", body = Live),
        crate::http::schemas::AnalyticsErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []), ("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn live(
    State(state): State<AppState>,
    reader: ProjectReader,
    Query(_): Query<LiveQuery>,
) -> Result<axum::Json<Live>> {
    let now = state.now();
    let current = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let first = current - Duration::minutes(MINUTES - 1);
    let end = current + Duration::minutes(1);
    let mut txn = bounded::begin(&state, reader.project_id).await?;
    let per_minute: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(&format!(
        "SELECT date_trunc('minute', occurred_at, 'UTC'), count(*) FROM events
         WHERE {COUNTED} AND occurred_at >= $2 AND occurred_at < $3 GROUP BY 1"
    ))
    .bind(reader.project_id)
    .bind(first)
    .bind(end)
    .fetch_all(&mut *txn)
    .await
    .map_err(|err| bounded::query_error(&state, err))?;
    let active: i64 = sqlx::query_scalar(&format!(
        "SELECT count(DISTINCT {WHO}) FROM events
         WHERE {COUNTED} AND occurred_at >= $2 AND occurred_at < $3"
    ))
    .bind(reader.project_id)
    .bind(now - Duration::minutes(ACTIVE_MINUTES))
    .bind(end)
    .fetch_one(&mut *txn)
    .await
    .map_err(|err| bounded::query_error(&state, err))?;
    txn.commit()
        .await
        .map_err(|err| bounded::query_error(&state, err))?;
    let format = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events_per_minute = (0..MINUTES)
        .map(|i| {
            let start = first + Duration::minutes(i);
            Minute {
                start: format(start),
                events: per_minute
                    .iter()
                    .find(|(minute, _)| *minute == start)
                    .map_or(0, |(_, count)| (*count).max(0) as u64),
            }
        })
        .collect();
    Ok(axum::Json(Live {
        at: format(now),
        events_per_minute,
        active_users: active.max(0) as u64,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live))
}
