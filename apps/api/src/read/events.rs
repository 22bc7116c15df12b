//! `GET /v1/events`: a tenant reads its own events, newest first, with keyset pagination on
//! (occurredAt, id) so pages stay stable while events keep arriving.

use axum::extract::State;
use chrono::{DateTime, Utc};
use gamify_common::ingest::{FieldError, parse_time};
use gamify_db::sea_orm::{QueryResult, Value as DbValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    http::{
        error::{Error, Result},
        extract::Query,
    },
    read::SecretKey,
    state::AppState,
};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
pub(crate) const STATUSES: &[&str] = &["pending", "processed", "failed"];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Only this end user's events.
    pub(crate) user_id: Option<String>,
    /// Only events of this name.
    pub(crate) event: Option<String>,
    /// `pending`, `processed` or `failed`.
    #[param(value_type = Option<EventStatus>)]
    pub(crate) status: Option<String>,
    /// Inclusive lower bound on `occurredAt` (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) since: Option<String>,
    /// Exclusive upper bound on `occurredAt` (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) until: Option<String>,
    /// 1–1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// A `nextCursor` from the previous page.
    pub(crate) cursor: Option<String>,
}

/// An event's processing status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the values; never built")]
pub enum EventStatus {
    Pending,
    Processed,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventSource {
    pub(crate) key_id: Uuid,
    #[schema(value_type = crate::http::schemas::KeyTypeDoc)]
    pub(crate) key_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventOut {
    pub(crate) id: Uuid,
    pub(crate) message_id: String,
    pub(crate) event: String,
    pub(crate) user_id: Option<String>,
    pub(crate) anonymous_id: Option<String>,
    #[schema(value_type = Object)]
    pub(crate) properties: Value,
    #[schema(value_type = EventStatus)]
    pub(crate) status: String,
    pub(crate) error_details: Option<String>,
    pub(crate) source: EventSource,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) processed_at: Option<DateTime<Utc>>,
}

/// A page of events, newest first by `occurredAt`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub(crate) data: Vec<EventOut>,
    /// Pass back as `cursor` for the next page; `null` on the last.
    pub(crate) next_cursor: Option<String>,
}

/// The columns [`event_from_row`] reads, from the project's events (`$1`: the project).
pub(crate) const EVENTS_OF_PROJECT: &str =
    "SELECT e.id, e.message_id, e.event_type, u.external_id, e.anonymous_id, e.payload,
            e.status, e.error_details, e.key_id, e.key_type, e.occurred_at, e.received_at,
            e.processed_at
     FROM events e LEFT JOIN end_users u ON u.id = e.user_id
     WHERE e.project_id = $1";

/// The filter on one end user, by their `userId`: the user's row first (one unique-index probe),
/// then their events on the `(project_id, user_id, occurred_at)` index. Joining on
/// `u.external_id` instead scanned every end user of the project (368 ms against 0.4 ms for a
/// user of a million).
pub(crate) const USER_FILTER: &str =
    " AND e.user_id = (SELECT id FROM end_users WHERE project_id = $1 AND external_id = ?)";

/// Position after which the next page starts: the last item's (occurredAt, id).
struct Cursor {
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) id: Uuid,
}

impl Cursor {
    fn encode(&self) -> String {
        format!(
            "{}.{}",
            self.occurred_at.timestamp_micros(),
            self.id.simple()
        )
    }

    fn decode(raw: &str) -> Option<Self> {
        let (micros, id) = raw.split_once('.')?;
        Some(Self {
            occurred_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

pub(crate) fn event_from_row(row: &QueryResult) -> Result<EventOut, gamify_db::sea_orm::DbErr> {
    Ok(EventOut {
        id: row.try_get("", "id")?,
        message_id: row.try_get("", "message_id")?,
        event: row.try_get("", "event_type")?,
        user_id: row.try_get("", "external_id")?,
        anonymous_id: row.try_get("", "anonymous_id")?,
        properties: row.try_get("", "payload")?,
        status: row.try_get("", "status")?,
        error_details: row.try_get("", "error_details")?,
        source: EventSource {
            key_id: row.try_get("", "key_id")?,
            key_type: row.try_get("", "key_type")?,
        },
        occurred_at: row.try_get("", "occurred_at")?,
        received_at: row.try_get("", "received_at")?,
        processed_at: row.try_get("", "processed_at")?,
    })
}

/// The project's events, newest first, keyset-paginated.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "reads",
    params(ListEvents),
    responses((status = 200, description = "A page of events", body = EventPage), crate::http::schemas::ListEventsErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    SecretKey(key): SecretKey,
    Query(query): Query<ListEvents>,
) -> Result<axum::Json<EventPage>> {
    Ok(axum::Json(
        events_page(&state, key.project_id, query).await?,
    ))
}

/// A page of the project's events as `GET /v1/events` answers it (the console's explorer too).
pub(crate) async fn events_page(
    state: &AppState,
    project_id: Uuid,
    query: ListEvents,
) -> Result<EventPage> {
    let mut errors = Vec::new();
    let since = parse_time("since", query.since.as_deref(), &mut errors);
    let until = parse_time("until", query.until.as_deref(), &mut errors);
    let limit = match query.limit.as_deref().map(str::parse::<u32>) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "must be an integer from 1 to 1000",
            ));
            DEFAULT_LIMIT
        }
    };
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            errors.push(FieldError::new(
                "status",
                "must be pending, processed or failed",
            ));
        }
    }
    // Postgres text cannot hold NUL; a filter with one would fail the query rather than match.
    for (field, value) in [("userId", &query.user_id), ("event", &query.event)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            errors.push(FieldError::new(
                field,
                "must not contain the NUL character (\\u0000)",
            ));
        }
    }
    let cursor = match query.cursor.as_deref().map(Cursor::decode) {
        Some(None) => {
            errors.push(FieldError::new(
                "cursor",
                "is not a cursor this API returned",
            ));
            None
        }
        Some(cursor) => cursor,
        None => None,
    };
    if let Some(error) = errors.into_iter().next() {
        return Err(Error::invalid_field(&error.field, error.message));
    }

    // The project filter repeats what row-level security enforces, so the planner uses the
    // (project_id, occurred_at, id) index.
    let mut sql = String::from(EVENTS_OF_PROJECT);
    let mut values: Vec<DbValue> = vec![project_id.into()];
    let mut bind = |clause: &str, value: DbValue, sql: &mut String| {
        values.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", values.len())));
    };
    if let Some(user_id) = query.user_id {
        bind(USER_FILTER, user_id.into(), &mut sql);
    }
    if let Some(event) = query.event {
        bind(" AND e.event_type = ?", event.into(), &mut sql);
    }
    if let Some(status) = query.status {
        bind(" AND e.status = ?", status.into(), &mut sql);
    }
    if let Some(since) = since {
        bind(" AND e.occurred_at >= ?", since.into(), &mut sql);
    }
    if let Some(until) = until {
        bind(" AND e.occurred_at < ?", until.into(), &mut sql);
    }
    if let Some(cursor) = &cursor {
        bind(
            " AND (e.occurred_at, e.id) < (?",
            cursor.occurred_at.into(),
            &mut sql,
        );
        bind(", ?)", cursor.id.into(), &mut sql);
    }
    sql.push_str(&format!(
        " ORDER BY e.occurred_at DESC, e.id DESC LIMIT {}",
        limit + 1
    ));

    let rows = state.db().tenant_rows(project_id, sql, values).await?;
    let mut data = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if data.len() > limit as usize {
        data.truncate(limit as usize);
        data.last().map(|last| {
            Cursor {
                occurred_at: last.occurred_at,
                id: last.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(EventPage { data, next_cursor })
}

/// One of the project's events by id; another project's id is not found.
///
/// Events are keyed by `(project_id, occurred_at, id)`, so an id alone would be looked up in
/// every partition. `occurred_at`, when the caller has it (a list links it), makes it one index
/// lookup; otherwise the id's own time (a UUIDv7 stamped on receipt, which `occurred_at` follows
/// by at most a day and rarely precedes by more than a week) bounds the search: the hour around
/// it, then the week before it; only an event backfilled from further back needs the whole
/// search.
pub(crate) async fn event_by_id(
    state: &AppState,
    project_id: Uuid,
    event_id: Uuid,
    occurred_at: Option<DateTime<Utc>>,
) -> Result<EventOut> {
    let find = |clause: &str, mut values: Vec<DbValue>| {
        let mut all: Vec<DbValue> = vec![project_id.into(), event_id.into()];
        all.append(&mut values);
        let sql = format!("{EVENTS_OF_PROJECT} AND e.id = $2{clause}");
        async move {
            let rows = state.db().tenant_rows(project_id, sql, all).await?;
            rows.first()
                .map(event_from_row)
                .transpose()
                .map_err(Error::from)
        }
    };
    if let Some(at) = occurred_at {
        if let Some(event) = find(" AND e.occurred_at = $3", vec![at.into()]).await? {
            return Ok(event);
        }
    }
    if let Some(stamped) = received_time(event_id) {
        // Most events occur within the hour of their receipt; a week covers offline queues.
        for (before, after) in [
            (chrono::Duration::hours(1), chrono::Duration::hours(1)),
            (chrono::Duration::days(7), chrono::Duration::days(1)),
        ] {
            let window = find(
                " AND e.occurred_at >= $3 AND e.occurred_at <= $4",
                vec![(stamped - before).into(), (stamped + after).into()],
            )
            .await?;
            if let Some(event) = window {
                return Ok(event);
            }
        }
    }
    find("", Vec::new())
        .await?
        .ok_or_else(|| Error::not_found("event"))
}

/// The instant a UUIDv7 was made, for the ids the gateway stamps; `None` for other versions.
fn received_time(id: Uuid) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

#[cfg(test)]
mod received_time_tests {
    use super::*;

    #[test]
    fn a_v7_id_tells_when_it_was_stamped_and_others_tell_nothing() {
        let at = DateTime::from_timestamp(1_800_000_000, 123_000_000).unwrap();
        let id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_800_000_000,
            123_000_000,
        ));
        assert_eq!(received_time(id), Some(at));
        assert_eq!(received_time(Uuid::new_v4()), None);
    }
}
