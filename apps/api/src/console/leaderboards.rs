//! `/console/projects/{projectId}/leaderboards`: each leaderboard of the active rules, for the
//! current period, the previous one, or the period holding a chosen instant — the ranking
//! `GET /v1/leaderboards/{key}` answers. Who may call: any member of the project's organization.

use askama::Template;
use axum::{Router, extract::State, response::Response, routing::get};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    gamification::{
        Reader,
        leaderboards::{self, LeaderboardOut, LeaderboardQuery},
    },
    http::{
        error::{Error, Result},
        extract::{Path, Query},
    },
    manage::rules,
    state::AppState,
};

#[derive(Template)]
#[template(path = "leaderboards.html")]
struct LeaderboardsPage {
    nav: Nav,
    project_id: Uuid,
    keys: Vec<String>,
    key: String,
    period: String,
    board: Option<LeaderboardOut>,
}

#[derive(Debug, Default, Deserialize)]
pub struct BoardQuery {
    key: Option<String>,
    period: Option<String>,
    cursor: Option<String>,
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(query): Query<BoardQuery>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "leaderboards", "Leaderboards").await?;
    let keys: Vec<String> = match rules::get_rules(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await
    {
        Ok(active) => active
            .0
            .rules
            .get("leaderboards")
            .and_then(|boards| boards.as_array())
            .map(|boards| {
                boards
                    .iter()
                    .filter_map(|board| board.get("key")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        Err(Error::NotFound(_)) => Vec::new(),
        Err(error) => return Err(error),
    };
    let key = query
        .key
        .filter(|key| keys.contains(key))
        .or_else(|| keys.first().cloned())
        .unwrap_or_default();
    let period = query
        .period
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "current".to_owned());
    let board = if key.is_empty() {
        None
    } else {
        Some(
            leaderboards::get_leaderboard(
                State(state.clone()),
                Reader::Member { project_id },
                Path(key.clone()),
                Query(LeaderboardQuery {
                    period: Some(period.clone()),
                    limit: None,
                    cursor: query.cursor,
                }),
            )
            .await?
            .0,
        )
    };
    render(&LeaderboardsPage {
        nav,
        project_id,
        keys,
        key,
        period,
        board,
    })
}

pub fn router() -> Router<AppState> {
    Router::new().route("/console/projects/{project_id}/leaderboards", get(page))
}
