//! `GET /v1/events/{eventId}/outcomes?wait=`: what an event earned, long-polled until the engine
//! has evaluated it. Any key of the event's project may ask (the id, from the 202, is
//! unguessable), so a browser can show "you earned…" right after sending; a user token only for
//! its own user's events.

use std::time::Duration;

use axum::extract::State;
use gamify_db::sea_orm::sqlx;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::Reader;
use crate::{
    http::{
        error::{Error, Result},
        extract::{Path, Query},
    },
    state::AppState,
};

pub const MAX_WAIT_SECONDS: u64 = 10;
/// How often a waiting request looks again: the engine commits a batch every few tens of
/// milliseconds under load, so this adds at most that to what a browser waits.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutcomesQuery {
    /// Seconds to wait for the evaluation (0–10, default 0).
    #[param(minimum = 0, maximum = 10)]
    pub(crate) wait: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomesOut {
    pub(crate) event_id: Uuid,
    /// `pending` (not evaluated yet), `evaluated`, or `not_counted` (refused by the checks, a
    /// duplicate messageId, or sent without a userId).
    pub(crate) status: &'static str,
    /// `[{type: "achievement"|"points"|"level"|"streak", key, …}]`
    #[schema(value_type = Vec<Object>)]
    pub(crate) awards: Value,
    /// Why it was not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// For a duplicate messageId: the event id of the copy that counted, whose outcome tells
    /// what it earned (a retry whose first answer was lost finds it here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duplicate_of: Option<Uuid>,
}

/// Recorded by gamify-engine as the reason of a duplicate, followed by the first copy's id.
const DUPLICATE_OF: &str = "duplicate messageId of ";

/// What an event earned.
#[utoipa::path(
    get,
    path = "/v1/events/{event_id}/outcomes",
    tag = "gamification",
    params(("event_id" = Uuid, Path, description = "The id the 202 returned"), OutcomesQuery),
    responses(
        (status = 200, description = "The event's outcome so far", body = OutcomesOut),
        crate::http::schemas::GamificationReadErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn get_outcomes(
    State(state): State<AppState>,
    reader: Reader,
    Path(event_id): Path<Uuid>,
    Query(query): Query<OutcomesQuery>,
) -> Result<axum::Json<OutcomesOut>> {
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(Error::invalid_field(
            "wait",
            "must be between 0 and 10 seconds",
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let project_id = reader.project_id();
    loop {
        let mut txn = state
            .db()
            .tenant_bulk(project_id)
            .await
            .map_err(Error::from)?;
        let row: Option<(String, Option<String>, Value, Option<String>)> = sqlx::query_as(
            "SELECT status, user_id, awards, reason FROM engine_outcomes WHERE project_id = $1 AND event_id = $2",
        )
        .bind(project_id)
        .bind(event_id)
        .fetch_optional(&mut *txn)
        .await
        .map_err(Error::from)?;
        txn.commit().await.map_err(Error::from)?;
        if let Some((status, user_id, awards, reason)) = row {
            if let Reader::User { user_id: own, .. } = &reader {
                if user_id.as_deref() != Some(own.as_str()) {
                    return Err(Error::not_found("event"));
                }
            }
            return Ok(axum::Json(OutcomesOut {
                event_id,
                status: if status == "evaluated" {
                    "evaluated"
                } else {
                    "not_counted"
                },
                awards,
                duplicate_of: reason
                    .as_deref()
                    .and_then(|reason| reason.strip_prefix(DUPLICATE_OF))
                    .and_then(|id| Uuid::parse_str(id).ok()),
                reason,
            }));
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Ok(axum::Json(OutcomesOut {
                event_id,
                status: "pending",
                awards: Value::Array(Vec::new()),
                reason: None,
                duplicate_of: None,
            }));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_outcomes))
}
