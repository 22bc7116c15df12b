//! `/console/projects/{projectId}/users/{userId}`: one end user as the engine sees them — metrics,
//! badges, streaks, points with their level and ledger, standings — and their latest events;
//! `/users` looks a user up by id. Who may call: any member of the project's organization
//! (`read`); the data is what `GET /v1/users/{id}/progress` and `/points/{key}/ledger` answer a
//! secret key.

use askama::Template;
use axum::{
    Router,
    extract::State,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    gamification::{
        Reader,
        points::{self, LedgerEntryOut, LedgerQuery},
        progress::{self, ProgressOut},
    },
    http::{
        error::Result,
        extract::{Path, Query},
    },
    read::events::{self, EventOut, ListEvents},
    state::AppState,
};

const RECENT_EVENTS: u32 = 20;

#[derive(Template)]
#[template(path = "user_lookup.html")]
struct LookupPage {
    nav: Nav,
    project_id: Uuid,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    nav: Nav,
    project_id: Uuid,
    progress: ProgressOut,
    ledgers: Vec<(String, Vec<LedgerEntryOut>)>,
    events: Vec<EventOut>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupQuery {
    user_id: Option<String>,
}

async fn lookup(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(query): Query<LookupQuery>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "users", "Users").await?;
    if let Some(user_id) = query
        .user_id
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        let encoded =
            percent_encoding::utf8_percent_encode(user_id, percent_encoding::NON_ALPHANUMERIC);
        return Ok(
            Redirect::to(&format!("/console/projects/{project_id}/users/{encoded}"))
                .into_response(),
        );
    }
    render(&LookupPage { nav, project_id })
}

async fn user(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, user_id)): Path<(Uuid, String)>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "users", &user_id).await?;
    let reader = || Reader::Member { project_id };
    let progress = progress::get_progress(State(state.clone()), reader(), Path(user_id.clone()))
        .await?
        .0;
    let mut ledgers = Vec::new();
    for key in progress.points.keys() {
        let page = points::get_ledger(
            State(state.clone()),
            reader(),
            Path((user_id.clone(), key.clone())),
            Query(LedgerQuery { cursor: None }),
        )
        .await?
        .0;
        ledgers.push((key.clone(), page.data));
    }
    let events = events::events_page(
        &state,
        project_id,
        ListEvents {
            user_id: Some(user_id),
            event: None,
            status: None,
            since: None,
            until: None,
            limit: Some(RECENT_EVENTS.to_string()),
            cursor: None,
        },
    )
    .await?
    .data;
    render(&UserPage {
        nav,
        project_id,
        progress,
        ledgers,
        events,
    })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/projects/{project_id}/users", get(lookup))
        .route("/console/projects/{project_id}/users/{user_id}", get(user))
}
