//! `/console/projects/{projectId}/live`: the project's events as they are stored, streamed as
//! server-sent events from the console's own origin (the session cookie authorises the
//! `EventSource`). The stream polls the stored events four times a second. It shows at most
//! [`ROWS_PER_TICK`] rows per poll and counts the rest as dropped, so a busy project cannot flood
//! a browser. Who may call: any member of the project's organization (`read`).
//!
//! Only events that occurred in the last [`RECENT_MINUTES`] minutes are followed (a backfill of old
//! events is in the explorer, not the live view); that bound keeps each poll on the
//! `(project_id, occurred_at)` index however large the project is.

use std::{collections::HashSet, convert::Infallible, time::Duration};

use askama::Template;
use axum::{
    Router,
    extract::State,
    response::{
        Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, stream};
use gamify_db::sea_orm::{QueryResult, Value as DbValue};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    accounts::roles::Permission,
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    http::{
        error::Result,
        extract::{Path, Query},
    },
    state::AppState,
};

const TICK: Duration = Duration::from_millis(250);
pub const ROWS_PER_TICK: usize = 50;
const FETCH_PER_TICK: usize = 1000;
pub const RECENT_MINUTES: i64 = 10;
/// A row is stored with its transaction's start time, so one committed later can carry an
/// earlier `created_at` than a row already shown: each poll looks back this far and skips the
/// ids it has sent.
const LOOKBACK: chrono::Duration = chrono::Duration::seconds(10);

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    nav: Nav,
    project_id: Uuid,
    recent_minutes: i64,
    rows_per_tick: usize,
}

#[derive(Template)]
#[template(path = "live_row.html")]
pub struct LiveRow {
    project_id: Uuid,
    id: Uuid,
    event: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    status: String,
    key_type: String,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveFilter {
    event: Option<String>,
    user_id: Option<String>,
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "live", "Live events").await?;
    render(&LivePage {
        nav,
        project_id,
        recent_minutes: RECENT_MINUTES,
        rows_per_tick: ROWS_PER_TICK,
    })
}

/// What one poll found: rows to show (oldest first), how many were left out, and the lag of the
/// newest (received → now).
struct Poll {
    shown: Vec<LiveRow>,
    dropped: usize,
    lag_ms: Option<i64>,
}

/// Remembers what was sent, to resume after it and never send a row twice.
struct Follower {
    project_id: Uuid,
    filter: LiveFilter,
    after: DateTime<Utc>,
    seen: HashSet<Uuid>,
    seen_at: Vec<(DateTime<Utc>, Uuid)>,
}

impl Follower {
    fn sql(&self) -> (String, Vec<DbValue>) {
        let mut sql = String::from(
            "SELECT e.id, e.event_type, u.external_id, e.anonymous_id, e.status, e.key_type, \
                    e.occurred_at, e.received_at, e.created_at \
             FROM events e LEFT JOIN end_users u ON u.id = e.user_id \
             WHERE e.project_id = $1 AND e.occurred_at > now() - make_interval(mins => $2) \
               AND e.created_at > $3",
        );
        let mut values: Vec<DbValue> = vec![
            self.project_id.into(),
            i32::try_from(RECENT_MINUTES).unwrap_or(10).into(),
            (self.after - LOOKBACK).into(),
        ];
        if let Some(event) = &self.filter.event {
            values.push(event.clone().into());
            sql.push_str(&format!(" AND e.event_type = ${}", values.len()));
        }
        if let Some(user_id) = &self.filter.user_id {
            values.push(user_id.clone().into());
            sql.push_str(&format!(" AND u.external_id = ${}", values.len()));
        }
        sql.push_str(&format!(
            " ORDER BY e.created_at, e.id LIMIT {FETCH_PER_TICK}"
        ));
        (sql, values)
    }

    /// Keeps the rows not sent yet (a row seen by an earlier poll's look-back is skipped).
    fn read(&mut self, rows: Vec<LiveRow>, now: DateTime<Utc>) -> Poll {
        let mut fresh = Vec::new();
        for row in rows {
            if self.seen.insert(row.id) {
                self.seen_at.push((row.created_at, row.id));
                self.after = self.after.max(row.created_at);
                fresh.push(row);
            }
        }
        // Forget what the look-back window has passed.
        let horizon = self.after - LOOKBACK - LOOKBACK;
        let seen = &mut self.seen;
        self.seen_at.retain(|(at, id)| {
            let keep = *at >= horizon;
            if !keep {
                seen.remove(id);
            }
            keep
        });
        let dropped = fresh.len().saturating_sub(ROWS_PER_TICK);
        let shown: Vec<LiveRow> = fresh.into_iter().skip(dropped).collect();
        let lag_ms = shown
            .last()
            .map(|row| (now - row.received_at).num_milliseconds());
        Poll {
            shown,
            dropped,
            lag_ms,
        }
    }
}

fn live_row(project_id: Uuid, row: &QueryResult) -> Result<LiveRow, gamify_db::sea_orm::DbErr> {
    Ok(LiveRow {
        project_id,
        id: row.try_get("", "id")?,
        event: row.try_get("", "event_type")?,
        user_id: row.try_get("", "external_id")?,
        anonymous_id: row.try_get("", "anonymous_id")?,
        status: row.try_get("", "status")?,
        key_type: row.try_get("", "key_type")?,
        occurred_at: row.try_get("", "occurred_at")?,
        received_at: row.try_get("", "received_at")?,
        created_at: row.try_get("", "created_at")?,
    })
}

async fn poll(state: &AppState, follower: &mut Follower) -> Vec<Event> {
    let (sql, values) = follower.sql();
    let rows = match state
        .db()
        .tenant_rows(follower.project_id, sql, values)
        .await
    {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, project_id = %follower.project_id, "live events poll failed");
            return Vec::new();
        }
    };
    let project_id = follower.project_id;
    let rows = rows
        .iter()
        .filter_map(|row| live_row(project_id, row).ok())
        .collect();
    let found = follower.read(rows, state.now());
    let mut events: Vec<Event> = found
        .shown
        .iter()
        .filter_map(|row| row.render().ok())
        .map(|html| Event::default().event("event").data(html))
        .collect();
    let stats = serde_json::json!({ "dropped": found.dropped, "lagMs": found.lag_ms });
    events.push(Event::default().event("stats").data(stats.to_string()));
    events
}

async fn stream_events(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(filter): Query<LiveFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    viewer
        .caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let filter = LiveFilter {
        event: filter.event.filter(|e| !e.is_empty() && !e.contains('\0')),
        user_id: filter
            .user_id
            .filter(|u| !u.is_empty() && !u.contains('\0')),
    };
    let follower = Follower {
        project_id,
        filter,
        after: state.now(),
        seen: HashSet::new(),
        seen_at: Vec::new(),
    };
    let stop = state.shutdown().clone().cancelled_owned();
    let polls = stream::unfold((state, follower), |(state, mut follower)| async move {
        tokio::time::sleep(TICK).await;
        let events = poll(&state, &mut follower).await;
        Some((stream::iter(events.into_iter().map(Ok)), (state, follower)))
    })
    .flatten()
    .take_until(stop);
    Ok(Sse::new(polls).keep_alive(KeepAlive::default()))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/projects/{project_id}/live", get(page))
        .route(
            "/console/projects/{project_id}/live/stream",
            get(stream_events),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(after: DateTime<Utc>) -> Follower {
        Follower {
            project_id: Uuid::nil(),
            filter: LiveFilter::default(),
            after,
            seen: HashSet::new(),
            seen_at: Vec::new(),
        }
    }

    fn row(created_at: DateTime<Utc>) -> LiveRow {
        LiveRow {
            project_id: Uuid::nil(),
            id: Uuid::new_v4(),
            event: "page_view".to_owned(),
            user_id: Some("u1".to_owned()),
            anonymous_id: None,
            status: "processed".to_owned(),
            key_type: "publishable".to_owned(),
            occurred_at: created_at,
            received_at: created_at - chrono::Duration::milliseconds(80),
            created_at,
        }
    }

    #[test]
    fn a_row_found_again_by_the_look_back_is_not_sent_twice() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut follower = follower(start);
        let first = row(start + chrono::Duration::seconds(1));
        let again = LiveRow {
            id: first.id,
            ..row(first.created_at)
        };
        let poll = follower.read(vec![first], start + chrono::Duration::seconds(2));
        assert_eq!(poll.shown.len(), 1);
        assert_eq!(poll.lag_ms, Some(1080));
        // Committed late with an earlier start: still shown, once.
        let late = row(start + chrono::Duration::milliseconds(500));
        let poll = follower.read(vec![late, again], start + chrono::Duration::seconds(3));
        assert_eq!(poll.shown.len(), 1);
        assert_eq!(poll.dropped, 0);
    }

    #[test]
    fn beyond_the_rows_a_poll_shows_the_oldest_are_counted_as_dropped() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut follower = follower(start);
        let rows: Vec<LiveRow> = (0..ROWS_PER_TICK as i64 + 7)
            .map(|i| row(start + chrono::Duration::milliseconds(i)))
            .collect();
        let newest = rows.last().map(|r| r.id);
        let poll = follower.read(rows, start + chrono::Duration::seconds(1));
        assert_eq!(poll.shown.len(), ROWS_PER_TICK);
        assert_eq!(poll.dropped, 7);
        assert_eq!(poll.shown.last().map(|r| r.id), newest);
    }

    #[test]
    fn ids_older_than_the_look_back_are_forgotten() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut follower = follower(start);
        follower.read(vec![row(start)], start);
        follower.read(vec![row(start + chrono::Duration::minutes(5))], start);
        assert_eq!(follower.seen.len(), 1);
        assert_eq!(follower.seen_at.len(), 1);
    }
}
