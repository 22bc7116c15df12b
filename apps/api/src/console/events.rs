//! `/console/projects/{projectId}/events`: the events explorer (filters, cursor paging, export as
//! CSV or NDJSON through `GET /v1/events/export`), and `/events/{eventId}`: one event in full with
//! its status, the key that sent it and what it earned. Who may call: any member of the project's
//! organization (`read`), as the export and `GET /v1/events` with a secret key.

use askama::Template;
use axum::{Router, extract::State, response::Response, routing::get};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    gamification::{
        Reader,
        outcomes::{self, OutcomesOut, OutcomesQuery},
    },
    http::{
        error::{Error, Result},
        extract::{Path, Query},
    },
    manage::api_keys::{self, ApiKeyOut},
    read::events::{self, EventOut, ListEvents},
    state::AppState,
};

const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    #[serde(default)]
    event: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    status: String,
    /// `datetime-local` values, read as UTC.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    nav: Nav,
    project_id: Uuid,
    filters: Filters,
    events: Vec<EventOut>,
    next_cursor: Option<String>,
    export_query: String,
    next_query: String,
    statuses: &'static [&'static str],
}

impl EventsPage {
    fn first_page(&self) -> String {
        self.filters.query(&[])
    }
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    nav: Nav,
    project_id: Uuid,
    event: EventOut,
    key: Option<ApiKeyOut>,
    outcomes: OutcomesOut,
    json: String,
    awards: String,
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}

/// A `datetime-local` value (`2026-12-06T10:30`, seconds optional) or RFC 3339, as RFC 3339 UTC.
fn instant(field: &str, text: &str) -> Result<Option<String>> {
    let Some(text) = some(text) else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(at.with_timezone(&Utc).to_rfc3339()));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&text, format).ok())
        .map(|at| Some(at.and_utc().to_rfc3339()))
        .ok_or_else(|| Error::invalid_field(field, "must be a date and time"))
}

impl Filters {
    /// The filters as a query string (`name=value&…`), `extra` appended.
    fn query(&self, extra: &[(&str, &str)]) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("event", &self.event),
            ("userId", &self.user_id),
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                out.append_pair(name, value.trim());
            }
        }
        for (name, value) in extra {
            out.append_pair(name, value);
        }
        out.finish()
    }
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(filters): Query<Filters>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "events", "Events").await?;
    let since = instant("since", &filters.since)?;
    let until = instant("until", &filters.until)?;
    let listed = events::events_page(
        &state,
        project_id,
        ListEvents {
            user_id: some(&filters.user_id),
            event: some(&filters.event),
            status: some(&filters.status),
            since: since.clone(),
            until: until.clone(),
            limit: Some(PAGE_SIZE.to_string()),
            cursor: filters.cursor.clone(),
        },
    )
    .await?;
    let mut export = url::form_urlencoded::Serializer::new(String::new());
    export.append_pair("projectId", &project_id.to_string());
    for (name, value) in [
        ("event", some(&filters.event)),
        ("userId", some(&filters.user_id)),
        ("status", some(&filters.status)),
        ("from", since),
        ("to", until),
    ] {
        if let Some(value) = value {
            export.append_pair(name, &value);
        }
    }
    let next_query = listed
        .next_cursor
        .as_deref()
        .map(|cursor| filters.query(&[("cursor", cursor)]))
        .unwrap_or_default();
    render(&EventsPage {
        nav,
        project_id,
        events: listed.data,
        next_cursor: listed.next_cursor,
        export_query: export.finish(),
        next_query,
        filters,
        statuses: &["pending", "processed", "failed"],
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    /// The event's `occurredAt`, which the lists link with: it makes the lookup one index probe.
    at: Option<String>,
}

async fn detail(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, event_id)): Path<(Uuid, Uuid)>,
    Query(query): Query<DetailQuery>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "events", "Event").await?;
    let at = query
        .at
        .as_deref()
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc));
    let event = events::event_by_id(&state, project_id, event_id, at).await?;
    let keys = api_keys::list_api_keys(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await?
    .0;
    let key = keys.into_iter().find(|key| key.id == event.source.key_id);
    let outcomes = outcomes::get_outcomes(
        State(state.clone()),
        Reader::Member { project_id },
        Path(event_id),
        Query(OutcomesQuery { wait: None }),
    )
    .await?
    .0;
    let json = serde_json::to_string_pretty(&event)?;
    let awards = serde_json::to_string_pretty(&outcomes.awards)?;
    render(&EventPage {
        nav,
        project_id,
        event,
        key,
        outcomes,
        json,
        awards,
    })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/projects/{project_id}/events", get(page))
        .route(
            "/console/projects/{project_id}/events/{event_id}",
            get(detail),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_accept_the_browsers_local_form_as_utc_and_name_a_bad_one() {
        assert_eq!(
            instant("since", "2026-12-06T10:30").unwrap().as_deref(),
            Some("2026-12-06T10:30:00+00:00")
        );
        assert_eq!(
            instant("since", "2026-12-06T10:30:00+01:00")
                .unwrap()
                .as_deref(),
            Some("2026-12-06T09:30:00+00:00")
        );
        assert_eq!(instant("since", " ").unwrap(), None);
        assert!(
            instant("until", "yesterday")
                .unwrap_err()
                .to_string()
                .contains("until")
        );
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let filters = Filters {
            event: "purchase".to_owned(),
            user_id: "u 1".to_owned(),
            ..Filters::default()
        };
        assert_eq!(
            filters.query(&[("cursor", "abc")]),
            "event=purchase&userId=u+1&cursor=abc"
        );
    }
}
