//! `GET /v1/users/{userId}/progress`: a user's metrics, achievements, streaks, points, levels and
//! leaderboard positions under the project's active rules.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use gamify_db::{
    gamification::rule_sets::Active,
    sea_orm::{DbErr, sqlx},
};
use gamify_rules::{AchievementProgress, PointsProgress, StreakProgress, UserState};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::Reader;
use crate::{
    http::{
        error::{Error, Result},
        extract::Path,
    },
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressOut {
    pub(crate) user_id: String,
    /// Every metric of the active rules (0 when never fed).
    #[schema(value_type = Object)]
    pub(crate) metrics: BTreeMap<String, serde_json::Number>,
    #[schema(value_type = Vec<Object>)]
    pub(crate) achievements: Vec<AchievementProgress>,
    #[schema(value_type = Object)]
    pub(crate) streaks: BTreeMap<String, StreakProgress>,
    /// `{key: {balance, level}}`; `level` is the level's key, or null below every level.
    #[schema(value_type = Object)]
    pub(crate) points: BTreeMap<String, PointsProgress>,
    pub(crate) leaderboards: BTreeMap<String, Standing>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Standing {
    /// 1-based; null when the user has no score in the current period.
    pub(crate) rank: Option<i64>,
    pub(crate) score: i64,
    pub(crate) period: PeriodOut,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodOut {
    pub start: DateTime<Utc>,
    /// null for all_time.
    pub end: Option<DateTime<Utc>>,
}

/// A user's progress.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/progress",
    tag = "gamification",
    params(("user_id" = String, Path, description = "The end user's userId")),
    responses(
        (status = 200, description = "The user's progress (empty for a user who earned nothing yet)", body = ProgressOut),
        crate::http::schemas::GamificationReadErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn get_progress(
    State(state): State<AppState>,
    reader: Reader,
    Path(user_id): Path<String>,
) -> Result<axum::Json<ProgressOut>> {
    reader.may_read_user(&user_id)?;
    let project_id = reader.project_id();
    let now = state.now();
    let mut txn = state
        .db()
        .tenant_bulk(project_id)
        .await
        .map_err(Error::from)?;
    let Some(active) = state
        .rule_sets()
        .active(&mut txn, project_id)
        .await
        .map_err(Error::from)?
    else {
        txn.commit().await.map_err(Error::from)?;
        return Ok(axum::Json(ProgressOut {
            user_id,
            metrics: BTreeMap::new(),
            achievements: Vec::new(),
            streaks: BTreeMap::new(),
            points: BTreeMap::new(),
            leaderboards: BTreeMap::new(),
        }));
    };
    let stored: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT state FROM engine_user_states WHERE project_id = $1 AND generation = $2 AND user_id = $3",
    )
    .bind(project_id)
    .bind(active.generation)
    .bind(&user_id)
    .fetch_optional(&mut *txn)
    .await
    .map_err(Error::from)?;
    let user_state: UserState = match stored {
        Some(value) => serde_json::from_value(value).map_err(|err| {
            Error::from(DbErr::Custom(format!(
                "a stored engine state cannot be read: {err}"
            )))
        })?,
        None => UserState::default(),
    };
    let progress = gamify_rules::progress(&active.rules, &user_state, now);
    let leaderboards = standings(&mut txn, project_id, &active, &user_id, now).await?;
    txn.commit().await.map_err(Error::from)?;
    Ok(axum::Json(ProgressOut {
        user_id,
        metrics: progress.metrics,
        achievements: progress.achievements,
        streaks: progress.streaks,
        points: progress.points,
        leaderboards,
    }))
}

/// The user's rank and score on every leaderboard in its current period. Ranks count who is
/// ahead: a higher score, or the same score reached earlier (then a smaller userId).
pub(crate) async fn standings(
    txn: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    project_id: uuid::Uuid,
    active: &Active,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, Standing>> {
    let mut out = BTreeMap::new();
    for board in &active.rules.document().leaderboards {
        let (start, end) = gamify_rules::period_bounds(board.period, active.rules.timezone(), now);
        // Rank: the users holding a higher score (summed over the distinct scores above), plus
        // those who reached the same score first (or at once with a smaller userId), plus one.
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT s.score,
                    1 + (SELECT COALESCE(sum(c.users), 0)::int8 FROM leaderboard_score_counts c
                         WHERE c.project_id = s.project_id AND c.generation = s.generation
                           AND c.board = s.board AND c.period_start = s.period_start
                           AND c.score > s.score)
                      + (SELECT count(*) FROM leaderboard_scores o
                         WHERE o.project_id = s.project_id AND o.generation = s.generation
                           AND o.board = s.board AND o.period_start = s.period_start
                           AND o.score = s.score
                           AND (o.reached_at, o.user_id) < (s.reached_at, s.user_id)) AS rank
             FROM leaderboard_scores s
             WHERE s.project_id = $1 AND s.generation = $2 AND s.board = $3
               AND s.period_start = $4 AND s.user_id = $5",
        )
        .bind(project_id)
        .bind(active.generation)
        .bind(&board.key)
        .bind(start)
        .bind(user_id)
        .fetch_optional(&mut **txn)
        .await
        .map_err(Error::from)?;
        let (score, rank) = row.map_or((0, None), |(score, rank)| (score, rank));
        out.insert(
            board.key.clone(),
            Standing {
                rank,
                score,
                period: PeriodOut { start, end },
            },
        );
    }
    Ok(out)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_progress))
}
