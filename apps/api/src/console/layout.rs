//! What every console page shows around its content: who is signed in, the organization and
//! project being looked at (with switchers), and the navigation between screens. Built from the
//! same calls the JSON API answers (`/v1/sessions/current`, the organization's projects), after
//! the same authorization: a page of an organization the person has no part in is a 404.

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use uuid::Uuid;

use crate::{
    accounts::{
        roles::{Permission, Role},
        sessions::{self, MembershipOut},
    },
    console::{
        assets::{ASSETS, Assets},
        viewer::Viewer,
    },
    http::{error::Result, extract::Path},
    manage::projects,
    state::AppState,
};

pub struct NavProject {
    pub id: Uuid,
    pub name: String,
}

pub struct Nav {
    pub title: String,
    pub section: &'static str,
    pub email: String,
    pub csrf: String,
    pub organizations: Vec<MembershipOut>,
    pub organization_id: Option<Uuid>,
    pub organization_name: String,
    pub role: Option<Role>,
    pub projects: Vec<NavProject>,
    pub project: Option<NavProject>,
    pub assets: &'static Assets,
}

impl Nav {
    /// For pages outside any organization (the list of organizations).
    pub async fn signed_in(state: &AppState, viewer: &Viewer, title: &str) -> Result<Nav> {
        let current = sessions::current(state, viewer.user.id, viewer.csrf.clone()).await?;
        Ok(Nav {
            title: title.to_owned(),
            section: "organizations",
            email: viewer.user.email.clone(),
            csrf: viewer.csrf.clone(),
            organizations: current.organizations,
            organization_id: None,
            organization_name: String::new(),
            role: None,
            projects: Vec::new(),
            project: None,
            assets: &ASSETS,
        })
    }

    /// For an organization's pages; 404 when the person is not a member.
    pub async fn organization(
        state: &AppState,
        viewer: &Viewer,
        organization_id: Uuid,
        section: &'static str,
        title: &str,
    ) -> Result<Nav> {
        let grant = viewer
            .caller
            .authorize(state, organization_id, Permission::Read)
            .await?;
        let mut nav = Nav::signed_in(state, viewer, title).await?;
        nav.section = section;
        nav.role = grant.role;
        nav.organization_id = Some(organization_id);
        nav.organization_name = nav
            .organizations
            .iter()
            .find(|org| org.id == organization_id)
            .map(|org| org.name.clone())
            .unwrap_or_default();
        let listed = projects::list_organization_projects(
            viewer.caller.clone(),
            State(state.clone()),
            Path(organization_id),
        )
        .await?;
        nav.projects = listed
            .0
            .data
            .into_iter()
            .map(|project| NavProject {
                id: project.id,
                name: project.name,
            })
            .collect();
        Ok(nav)
    }

    /// For a project's pages; 404 when the person is not a member of its organization.
    pub async fn project(
        state: &AppState,
        viewer: &Viewer,
        project_id: Uuid,
        section: &'static str,
        title: &str,
    ) -> Result<Nav> {
        let (project, _) = viewer
            .caller
            .authorize_project(state, project_id, Permission::Read)
            .await?;
        let mut nav =
            Nav::organization(state, viewer, project.organization_id, section, title).await?;
        nav.project = Some(NavProject {
            id: project.id,
            name: project.name,
        });
        Ok(nav)
    }

    /// Whether the person's role allows `permission`: pages leave out controls they may not use
    /// (the server refuses them anyway).
    pub fn can(&self, permission: &str) -> bool {
        let permission = match permission {
            "keys" => Permission::KeysWrite,
            "rules" => Permission::RulesWrite,
            "webhooks" => Permission::WebhooksWrite,
            "projects" => Permission::ProjectsWrite,
            "members" => Permission::MembersWrite,
            "tokens" => Permission::TokensWrite,
            "audit" => Permission::AuditRead,
            "owners" => Permission::OwnersWrite,
            _ => Permission::Read,
        };
        self.role.is_some_and(|role| role.allows(permission))
    }

    pub fn is(&self, section: &str) -> bool {
        self.section == section
    }

    pub fn project_name(&self) -> String {
        self.project
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    pub fn organization_id(&self) -> String {
        self.organization_id
            .map(|id| id.to_string())
            .unwrap_or_default()
    }

    /// `hx-headers` for the page: every htmx request carries the session's CSRF token.
    pub fn htmx_headers(&self) -> String {
        serde_json::json!({ "X-CSRF-Token": self.csrf }).to_string()
    }
}

/// Renders a template as the response.
pub fn render(template: &impl askama::Template) -> Result<Response> {
    Ok(Html(template.render()?).into_response())
}
