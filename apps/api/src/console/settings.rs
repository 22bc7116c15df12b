//! `/console/projects/{projectId}`: a project's settings — name, description, the event names
//! only a secret key may send, and its rate limit; the time zone its rules count days in is the
//! rule set's `timezone` (shown here, edited on the rules page). Who may call: any member reads;
//! saving needs the admin role (`projects:write`), as `PATCH /v1/projects/{id}`.

use askama::Template;
use axum::{Router, extract::State, response::Response, routing::get};
use gamify_db::sources::ProjectRateLimit;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    http::{
        error::{Error, Result},
        extract::{Form, Json, Path},
    },
    manage::{
        projects::{self, ProjectOut, UpdateProject},
        rules,
    },
    state::AppState,
};

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    nav: Nav,
    project: ProjectOut,
    timezone: Option<String>,
    can_write: bool,
    saved: bool,
}

#[derive(Template)]
#[template(path = "settings_form.html")]
struct SettingsForm {
    project: ProjectOut,
    can_write: bool,
    saved: bool,
}

#[derive(Debug, Deserialize)]
pub struct SettingsInput {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    trusted_events: String,
    #[serde(default)]
    events_per_second: String,
    #[serde(default)]
    burst: String,
}

fn rate_limit(per_second: &str, burst: &str) -> Result<Option<ProjectRateLimit>> {
    let (per_second, burst) = (per_second.trim(), burst.trim());
    if per_second.is_empty() && burst.is_empty() {
        return Ok(None);
    }
    let number = |field: &str, text: &str| {
        text.parse::<u32>()
            .map_err(|_| Error::invalid_field(field, "must be a whole number"))
    };
    Ok(Some(ProjectRateLimit {
        events_per_second: number("rateLimit.eventsPerSecond", per_second)?,
        burst: number("rateLimit.burst", burst)?,
    }))
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "settings", "Settings").await?;
    let project = projects::get_project(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await?
    .0;
    let timezone = match rules::get_rules(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await
    {
        Ok(active) => active
            .0
            .rules
            .get("timezone")
            .and_then(|tz| tz.as_str())
            .map(str::to_owned),
        Err(Error::NotFound(_)) => None,
        Err(error) => return Err(error),
    };
    let can_write = nav.can("projects");
    render(&SettingsPage {
        nav,
        project,
        timezone,
        can_write,
        saved: false,
    })
}

async fn save(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Form(input): Form<SettingsInput>,
) -> Result<Response> {
    let description = Some(input.description.trim().to_owned()).filter(|d| !d.is_empty());
    let trusted_events = input
        .trusted_events
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    let body = UpdateProject {
        name: Some(input.name),
        description: Some(description),
        trusted_events: Some(trusted_events),
        rate_limit: Some(rate_limit(&input.events_per_second, &input.burst)?),
    };
    let project =
        projects::update_project(viewer.caller, State(state), Path(project_id), Json(body))
            .await?
            .0;
    render(&SettingsForm {
        project,
        can_write: true,
        saved: true,
    })
}

pub fn router() -> Router<AppState> {
    Router::new().route("/console/projects/{project_id}", get(page).post(save))
}

#[cfg(test)]
mod tests {
    use super::rate_limit;

    #[test]
    fn an_empty_rate_limit_returns_to_the_default_and_a_bad_one_names_its_field() {
        assert!(rate_limit(" ", "").unwrap().is_none());
        let limit = rate_limit("100", "1000").unwrap().unwrap();
        assert_eq!((limit.events_per_second, limit.burst), (100, 1000));
        let error = rate_limit("lots", "1000").unwrap_err();
        assert!(
            error.to_string().contains("rateLimit.eventsPerSecond"),
            "{error}"
        );
    }
}
