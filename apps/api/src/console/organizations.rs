//! `/console` (the person's organizations) and `/console/orgs/{orgId}` (an organization's
//! projects), with creating either and renaming the organization. Who may call: a signed-in
//! person; creating a project and renaming the organization need the admin role
//! (`POST /v1/projects`, `PATCH /v1/organizations/{id}`); any person may create an organization
//! and owns it.

use askama::Template;
use axum::{
    Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    http::{
        error::Result,
        extract::{Form, Json, Path},
    },
    manage::{
        organizations::{self, CreateOrganization, RenameOrganization},
        projects::{self, CreateProject, ProjectOut},
    },
    state::AppState,
};

#[derive(Template)]
#[template(path = "organizations.html")]
struct OrganizationsPage {
    nav: Nav,
}

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    nav: Nav,
    projects: Vec<ProjectOut>,
}

#[derive(Debug, Deserialize)]
pub struct NameForm {
    name: String,
}

/// An htmx answer that sends the browser to `to` (a full page load).
pub fn go_to(to: &str) -> Response {
    ([("hx-redirect", to.to_owned())], "").into_response()
}

pub async fn list(viewer: Viewer, State(state): State<AppState>) -> Result<Response> {
    let nav = Nav::signed_in(&state, &viewer, "Organizations").await?;
    render(&OrganizationsPage { nav })
}

async fn create_organization(
    viewer: Viewer,
    State(state): State<AppState>,
    Form(form): Form<NameForm>,
) -> Result<Response> {
    let (_, created) = organizations::create_organization(
        viewer.caller,
        State(state),
        Json(CreateOrganization { name: form.name }),
    )
    .await?;
    Ok(go_to(&format!("/console/orgs/{}", created.0.id)))
}

async fn projects_page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::organization(&state, &viewer, organization_id, "projects", "Projects").await?;
    let listed =
        projects::list_organization_projects(viewer.caller, State(state), Path(organization_id))
            .await?;
    render(&ProjectsPage {
        nav,
        projects: listed.0.data,
    })
}

async fn rename(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Form(form): Form<NameForm>,
) -> Result<Response> {
    let _renamed = organizations::rename_organization(
        viewer.caller,
        State(state),
        Path(organization_id),
        Json(RenameOrganization { name: form.name }),
    )
    .await?;
    Ok(go_to(&format!("/console/orgs/{organization_id}")))
}

async fn create_project(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Form(form): Form<NameForm>,
) -> Result<Response> {
    let (_, created) = projects::create_project(
        viewer.caller,
        State(state),
        Json(CreateProject {
            organization_id,
            name: form.name,
            description: None,
        }),
    )
    .await?;
    Ok(go_to(&format!("/console/projects/{}/keys", created.0.id)))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/orgs", post(create_organization))
        .route(
            "/console/orgs/{organization_id}",
            get(projects_page).post(rename),
        )
        .route(
            "/console/orgs/{organization_id}/projects",
            post(create_project),
        )
}
