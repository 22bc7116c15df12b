//! `/console/orgs/{orgId}/audit`: who did what in the organization, newest first, a page at a
//! time. Who may call: admins (`audit:read`), as `GET /v1/organizations/{id}/audit-log`.

use askama::Template;
use axum::{Router, extract::State, response::Response, routing::get};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    accounts::audit::{self, AuditEntryOut, AuditQuery},
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

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    organization_id: Uuid,
    entries: Vec<AuditEntryOut>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    let nav = Nav::organization(&state, &viewer, organization_id, "audit", "Audit log").await?;
    let listed = audit::list_audit_log(
        viewer.caller.clone(),
        State(state),
        Path(organization_id),
        axum::extract::Query(AuditQuery {
            cursor: query.cursor,
        }),
    )
    .await?
    .0;
    render(&AuditPage {
        nav,
        organization_id,
        entries: listed.data,
        next_cursor: listed.next_cursor,
    })
}

impl AuditPage {
    fn details(entry: &AuditEntryOut) -> String {
        if entry.details.as_object().is_some_and(|d| d.is_empty()) || entry.details.is_null() {
            String::new()
        } else {
            entry.details.to_string()
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/console/orgs/{organization_id}/audit", get(page))
}
