//! `/console/projects/{projectId}/keys`: a project's API keys. A new or rolled key is shown once,
//! in the answer to the form that made it, and never again (the page itself only ever lists
//! prefixes). Who may call: any member sees the list; creating, rolling, revoking and editing
//! origins need the developer role (`keys:write`), as on `/v1/projects/{id}/api-keys`.

use askama::Template;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use gamify_common::KeyType;
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
    manage::api_keys::{self, ApiKeyOut, CreateApiKey, CreatedApiKeyOut, RollApiKey, UpdateApiKey},
    state::AppState,
};

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    project_id: Uuid,
    keys: Vec<ApiKeyOut>,
    can_write: bool,
    oob: bool,
}

#[derive(Template)]
#[template(path = "keys_changed.html")]
struct KeysChanged {
    project_id: Uuid,
    keys: Vec<ApiKeyOut>,
    can_write: bool,
    oob: bool,
    revealed: Option<CreatedApiKeyOut>,
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    name: String,
    #[serde(rename = "type")]
    key_type: String,
    #[serde(default)]
    origins: String,
}

#[derive(Debug, Deserialize)]
pub struct RollForm {
    #[serde(default)]
    overlap: u64,
}

#[derive(Debug, Deserialize)]
pub struct OriginsForm {
    #[serde(default)]
    origins: String,
}

fn origin_lines(text: &str) -> Vec<String> {
    text.lines()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn keys_of(viewer: &Viewer, state: &AppState, project_id: Uuid) -> Result<Vec<ApiKeyOut>> {
    let listed = api_keys::list_api_keys(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await?;
    Ok(listed.0)
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "keys", "API keys").await?;
    let keys = keys_of(&viewer, &state, project_id).await?;
    let can_write = nav.can("keys");
    render(&KeysPage {
        nav,
        project_id,
        keys,
        can_write,
        oob: false,
    })
}

/// The answer to a change: the table again (out of band) and, for a new key, the key once.
async fn changed(
    viewer: &Viewer,
    state: &AppState,
    project_id: Uuid,
    revealed: Option<CreatedApiKeyOut>,
) -> Result<Response> {
    let keys = keys_of(viewer, state, project_id).await?;
    render(&KeysChanged {
        project_id,
        keys,
        can_write: true,
        oob: true,
        revealed,
    })
}

async fn create(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Form(form): Form<CreateForm>,
) -> Result<Response> {
    let key_type = match form.key_type.as_str() {
        "publishable" => KeyType::Publishable,
        "secret" => KeyType::Secret,
        _ => {
            return Err(Error::invalid_field(
                "type",
                "must be publishable or secret",
            ));
        }
    };
    let origins = origin_lines(&form.origins);
    let body = CreateApiKey {
        name: form.name,
        key_type,
        allowed_origins: (!origins.is_empty()).then_some(origins),
    };
    let (_, created) = api_keys::create_api_key(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
        Json(body),
    )
    .await?;
    changed(&viewer, &state, project_id, Some(created.0)).await
}

async fn roll(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, key_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<RollForm>,
) -> Result<Response> {
    let body = RollApiKey {
        expires_in_seconds: form.overlap,
    };
    let (_, rolled) = api_keys::roll_api_key(
        viewer.caller.clone(),
        State(state.clone()),
        Path((project_id, key_id)),
        Ok(Some(axum::Json(body))),
    )
    .await?;
    changed(&viewer, &state, project_id, Some(rolled.0)).await
}

async fn revoke(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    let status = api_keys::revoke_api_key(
        viewer.caller.clone(),
        State(state.clone()),
        Path((project_id, key_id)),
    )
    .await?;
    debug_assert_eq!(status, StatusCode::NO_CONTENT);
    changed(&viewer, &state, project_id, None).await
}

async fn origins(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, key_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<OriginsForm>,
) -> Result<Response> {
    let _updated = api_keys::update_api_key(
        viewer.caller.clone(),
        State(state.clone()),
        Path((project_id, key_id)),
        Json(UpdateApiKey {
            allowed_origins: origin_lines(&form.origins),
        }),
    )
    .await?;
    changed(&viewer, &state, project_id, None).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console/projects/{project_id}/keys",
            get(page).post(create),
        )
        .route(
            "/console/projects/{project_id}/keys/{key_id}/roll",
            post(roll),
        )
        .route(
            "/console/projects/{project_id}/keys/{key_id}/revoke",
            post(revoke),
        )
        .route(
            "/console/projects/{project_id}/keys/{key_id}/origins",
            post(origins),
        )
}

#[cfg(test)]
mod tests {
    use super::origin_lines;

    #[test]
    fn origins_are_read_one_per_line_or_comma_separated() {
        assert_eq!(
            origin_lines(" https://a.example \n\nhttps://b.example, https://c.example\n"),
            [
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        assert!(origin_lines(" \n ").is_empty());
    }
}
