//! `/console/orgs/{orgId}/tokens`: the organization's management tokens (for scripts and CI). A
//! new token is shown once. Who may call: members see the list; creating and revoking need the
//! admin role (`/v1/organizations/{id}/tokens`; tokens cannot mint tokens).

use askama::Template;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    response::Response,
    routing::{get, post},
};
use uuid::Uuid;

use crate::{
    accounts::{
        roles::Scope,
        tokens::{self, CreateToken, CreatedToken, TokenOut},
    },
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    http::{
        error::{Error, Result},
        extract::{Json, Path},
    },
    state::AppState,
};

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    nav: Nav,
    organization_id: Uuid,
    tokens: Vec<TokenOut>,
    scopes: [Scope; 7],
    oob: bool,
    can_write: bool,
}

#[derive(Template)]
#[template(path = "tokens_changed.html")]
struct TokensChanged {
    organization_id: Uuid,
    tokens: Vec<TokenOut>,
    oob: bool,
    can_write: bool,
    created: Option<CreatedToken>,
}

/// The create form: a name, the checked scopes (a repeated field) and an expiry.
fn read_create_form(body: &[u8]) -> Result<CreateToken> {
    let mut name = String::new();
    let mut scopes = Vec::new();
    let mut expires_in_seconds = None;
    for (field, value) in url::form_urlencoded::parse(body) {
        match field.as_ref() {
            "name" => name = value.into_owned(),
            "scope" => scopes.push(Scope::parse(&value).ok_or_else(|| {
                Error::invalid_field("scopes", format!("has an unknown scope {value}"))
            })?),
            "expires" if !value.is_empty() => {
                expires_in_seconds = Some(value.parse::<u64>().map_err(|_| {
                    Error::invalid_field("expiresInSeconds", "must be a whole number of seconds")
                })?);
            }
            _ => {}
        }
    }
    Ok(CreateToken {
        name,
        scopes,
        expires_in_seconds,
    })
}

async fn list(viewer: &Viewer, state: &AppState, organization_id: Uuid) -> Result<Vec<TokenOut>> {
    Ok(tokens::list_tokens(
        viewer.caller.clone(),
        State(state.clone()),
        Path(organization_id),
    )
    .await?
    .0
    .data)
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::organization(
        &state,
        &viewer,
        organization_id,
        "tokens",
        "Management tokens",
    )
    .await?;
    let tokens = list(&viewer, &state, organization_id).await?;
    let can_write = nav.can("tokens");
    render(&TokensPage {
        nav,
        organization_id,
        tokens,
        scopes: Scope::ALL,
        oob: false,
        can_write,
    })
}

async fn changed(
    viewer: &Viewer,
    state: &AppState,
    organization_id: Uuid,
    created: Option<CreatedToken>,
) -> Result<Response> {
    let tokens = list(viewer, state, organization_id).await?;
    render(&TokensChanged {
        organization_id,
        tokens,
        oob: true,
        can_write: true,
        created,
    })
}

async fn create(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    body: Bytes,
) -> Result<Response> {
    let form = read_create_form(&body)?;
    let (_, created) = tokens::create_token(
        viewer.caller.clone(),
        State(state.clone()),
        Path(organization_id),
        Json(form),
    )
    .await?;
    changed(&viewer, &state, organization_id, Some(created.0)).await
}

async fn revoke(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((organization_id, token_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    tokens::revoke_token(
        viewer.caller.clone(),
        State(state.clone()),
        Path((organization_id, token_id)),
    )
    .await?;
    changed(&viewer, &state, organization_id, None).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console/orgs/{organization_id}/tokens",
            get(page).post(create),
        )
        .route(
            "/console/orgs/{organization_id}/tokens/{token_id}/revoke",
            post(revoke),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_form_reads_repeated_scopes_and_refuses_unknown_ones() {
        let form = read_create_form(b"name=CI&scope=read&scope=keys%3Awrite&expires=3600").unwrap();
        assert_eq!(form.name, "CI");
        assert_eq!(form.scopes, [Scope::Read, Scope::KeysWrite]);
        assert_eq!(form.expires_in_seconds, Some(3600));
        let never = read_create_form(b"name=CI&scope=read&expires=").unwrap();
        assert_eq!(never.expires_in_seconds, None);
        assert!(read_create_form(b"name=CI&scope=root").is_err());
    }
}
