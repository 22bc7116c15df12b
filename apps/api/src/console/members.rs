//! `/console/orgs/{orgId}/members`: who is in the organization, with what role, and the
//! invitations waiting. An invitation's one-time link is shown once, in the answer to the form
//! that made it. Who may call: any member sees members; inviting, changing roles, removing and
//! revoking invitations need the admin role (owners for owner changes), as on
//! `/v1/organizations/{id}/members` and `/invitations`.

use askama::Template;
use axum::{
    Router,
    extract::State,
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    accounts::{
        invitations::{self, CreateInvitation, CreatedInvitation, InvitationOut},
        members::{self, ChangeRole, MemberOut},
        roles::Role,
    },
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    http::{
        error::{Error, Result},
        extract::{Form, Json, Path},
    },
    state::AppState,
};

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    nav: Nav,
    organization_id: Uuid,
    members: Vec<MemberOut>,
    invitations: Vec<InvitationOut>,
    can_write: bool,
    roles: [Role; 4],
    me: Uuid,
    oob: bool,
}

#[derive(Template)]
#[template(path = "members_changed.html")]
struct MembersChanged {
    organization_id: Uuid,
    members: Vec<MemberOut>,
    invitations: Vec<InvitationOut>,
    can_write: bool,
    roles: [Role; 4],
    me: Uuid,
    oob: bool,
    invited: Option<CreatedInvitation>,
}

#[derive(Debug, Deserialize)]
pub struct InviteForm {
    email: String,
    role: String,
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    role: String,
}

fn role(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| {
        Error::invalid_field("role", "must be one of viewer, developer, admin, owner")
    })
}

async fn lists(
    viewer: &Viewer,
    state: &AppState,
    organization_id: Uuid,
    can_write: bool,
) -> Result<(Vec<MemberOut>, Vec<InvitationOut>)> {
    let listed = members::list_members(
        viewer.caller.clone(),
        State(state.clone()),
        Path(organization_id),
    )
    .await?;
    // Pending invitations are the admins' business; a viewer's page leaves them out.
    let invitations = if can_write {
        invitations::list_invitations(
            viewer.caller.clone(),
            State(state.clone()),
            Path(organization_id),
        )
        .await?
        .0
        .data
    } else {
        Vec::new()
    };
    Ok((listed.0.data, invitations))
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::organization(&state, &viewer, organization_id, "members", "Members").await?;
    let can_write = nav.can("members");
    let (members, invitations) = lists(&viewer, &state, organization_id, can_write).await?;
    let me = viewer.user.id;
    render(&MembersPage {
        nav,
        organization_id,
        members,
        invitations,
        can_write,
        roles: Role::ALL,
        me,
        oob: false,
    })
}

async fn changed(
    viewer: &Viewer,
    state: &AppState,
    organization_id: Uuid,
    invited: Option<CreatedInvitation>,
) -> Result<Response> {
    let (members, invitations) = lists(viewer, state, organization_id, true).await?;
    render(&MembersChanged {
        organization_id,
        members,
        invitations,
        can_write: true,
        roles: Role::ALL,
        me: viewer.user.id,
        oob: true,
        invited,
    })
}

async fn invite(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Form(form): Form<InviteForm>,
) -> Result<Response> {
    let body = CreateInvitation {
        email: form.email,
        role: role(&form.role)?,
    };
    let (_, created) = invitations::create_invitation(
        viewer.caller.clone(),
        State(state.clone()),
        Path(organization_id),
        Json(body),
    )
    .await?;
    changed(&viewer, &state, organization_id, Some(created.0)).await
}

async fn change_role(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((organization_id, user_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<RoleForm>,
) -> Result<Response> {
    let _changed = members::change_role(
        viewer.caller.clone(),
        State(state.clone()),
        Path((organization_id, user_id)),
        Json(ChangeRole {
            role: role(&form.role)?,
        }),
    )
    .await?;
    changed(&viewer, &state, organization_id, None).await
}

async fn remove(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((organization_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    members::remove_member(
        viewer.caller.clone(),
        State(state.clone()),
        Path((organization_id, user_id)),
    )
    .await?;
    changed(&viewer, &state, organization_id, None).await
}

async fn revoke_invitation(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((organization_id, invitation_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    invitations::revoke_invitation(
        viewer.caller.clone(),
        State(state.clone()),
        Path((organization_id, invitation_id)),
    )
    .await?;
    changed(&viewer, &state, organization_id, None).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/orgs/{organization_id}/members", get(page))
        .route("/console/orgs/{organization_id}/invitations", post(invite))
        .route(
            "/console/orgs/{organization_id}/invitations/{invitation_id}/revoke",
            post(revoke_invitation),
        )
        .route(
            "/console/orgs/{organization_id}/members/{user_id}/role",
            post(change_role),
        )
        .route(
            "/console/orgs/{organization_id}/members/{user_id}/remove",
            post(remove),
        )
}
