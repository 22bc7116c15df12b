//! `GET /v1/leaderboards/{key}?period=current|previous|<periodStart>&limit=&cursor=`: a board's
//! ranking in one period. Ties rank by who reached the score first, then by userId: the same
//! order every time.

use axum::extract::State;
use chrono::{DateTime, Utc};
use gamify_db::sea_orm::sqlx;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Reader, progress::PeriodOut};
use crate::{
    http::{
        error::{Error, Result},
        extract::{Path, Query},
    },
    state::AppState,
};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaderboardQuery {
    /// `current` (default), `previous`, or an instant (RFC 3339) within the wanted period.
    pub(crate) period: Option<String>,
    /// Entries per page, 1 up to the board's size (default: its size).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<u32>,
    /// A `nextCursor` from the previous page.
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardOut {
    pub(crate) key: String,
    pub(crate) period: PeriodOut,
    pub(crate) entries: Vec<Entry>,
    /// null on the last page (and at the board's size).
    pub(crate) next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub(crate) rank: i64,
    pub(crate) user_id: String,
    pub(crate) score: i64,
}

/// The position after which a page starts: the last entry's rank, score, time and userId.
struct Cursor {
    pub(crate) rank: i64,
    pub(crate) score: i64,
    pub(crate) reached_at: DateTime<Utc>,
    pub(crate) user_id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        URL_SAFE_NO_PAD.encode(format!(
            "{}\n{}\n{}\n{}",
            self.rank,
            self.score,
            self.reached_at.timestamp_micros(),
            self.user_id
        ))
    }

    fn decode(raw: &str) -> Option<Self> {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let mut parts = text.splitn(4, '\n');
        Some(Self {
            rank: parts.next()?.parse().ok()?,
            score: parts.next()?.parse().ok()?,
            reached_at: DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?,
            user_id: parts.next()?.to_owned(),
        })
    }
}

/// A leaderboard's ranking.
#[utoipa::path(
    get,
    path = "/v1/leaderboards/{key}",
    tag = "gamification",
    params(("key" = String, Path, description = "The leaderboard's key"), LeaderboardQuery),
    responses(
        (status = 200, description = "One page of the ranking", body = LeaderboardOut),
        crate::http::schemas::GamificationReadErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn get_leaderboard(
    State(state): State<AppState>,
    reader: Reader,
    Path(key): Path<String>,
    Query(query): Query<LeaderboardQuery>,
) -> Result<axum::Json<LeaderboardOut>> {
    reader.may_read_project()?;
    let project_id = reader.project_id();
    let now = state.now();
    let cursor =
        match query.cursor.as_deref() {
            Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| {
                Error::invalid_field("cursor", "is not a cursor this API returned")
            })?),
            None => None,
        };
    let mut txn = state
        .db()
        .tenant_bulk(project_id)
        .await
        .map_err(Error::from)?;
    let active = state.rule_sets().active(&mut txn, project_id).await?;
    let Some((active, board)) = active.and_then(|active| {
        let board = active
            .rules
            .document()
            .leaderboards
            .iter()
            .find(|board| board.key == key)
            .cloned()?;
        Some((active, board))
    }) else {
        return Err(Error::not_found("leaderboard"));
    };
    let size = i64::from(board.size);
    let limit = i64::from(query.limit.unwrap_or(board.size));
    if limit < 1 || limit > size {
        return Err(Error::invalid_field(
            "limit",
            format!("must be between 1 and the board's size ({size})"),
        ));
    }
    let tz = active.rules.timezone();
    let at = match query.period.as_deref() {
        None | Some("current") => now,
        Some("previous") => gamify_rules::previous_period_start(board.period, tz, now),
        Some(instant) => DateTime::parse_from_rfc3339(instant)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| {
                Error::invalid_field("period", "must be current, previous or an RFC 3339 instant")
            })?,
    };
    let (start, end) = gamify_rules::period_bounds(board.period, tz, at);
    let offset = cursor.as_ref().map_or(0, |c| c.rank);
    let take = limit.min(size - offset);
    let rows: Vec<(String, i64, DateTime<Utc>)> = if take <= 0 {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT user_id, score, reached_at FROM leaderboard_scores
             WHERE project_id = $1 AND generation = $2 AND board = $3 AND period_start = $4
               AND ($5::bigint IS NULL
                    OR score < $5 OR (score = $5 AND (reached_at, user_id) > ($6, $7)))
             ORDER BY score DESC, reached_at, user_id
             LIMIT $8",
        )
        .bind(project_id)
        .bind(active.generation)
        .bind(&board.key)
        .bind(start)
        .bind(cursor.as_ref().map(|c| c.score))
        .bind(cursor.as_ref().map(|c| c.reached_at))
        .bind(cursor.as_ref().map(|c| c.user_id.clone()))
        .bind(take + 1)
        .fetch_all(&mut *txn)
        .await
        .map_err(Error::from)?
    };
    txn.commit().await.map_err(Error::from)?;
    let more = rows.len() as i64 > take;
    let entries: Vec<(Entry, DateTime<Utc>)> = rows
        .into_iter()
        .take(take.max(0) as usize)
        .enumerate()
        .map(|(index, (user_id, score, reached_at))| {
            (
                Entry {
                    rank: offset + index as i64 + 1,
                    user_id,
                    score,
                },
                reached_at,
            )
        })
        .collect();
    let next_cursor = match entries.last() {
        Some((last, reached_at)) if more && last.rank < size => Some(
            Cursor {
                rank: last.rank,
                score: last.score,
                reached_at: *reached_at,
                user_id: last.user_id.clone(),
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(axum::Json(LeaderboardOut {
        key,
        period: PeriodOut { start, end },
        entries: entries.into_iter().map(|(entry, _)| entry).collect(),
        next_cursor,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_leaderboard))
}
