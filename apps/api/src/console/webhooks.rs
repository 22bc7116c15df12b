//! `/console/projects/{projectId}/webhooks`: the project's endpoints (the signing secret shown
//! once, when one is added), and `/webhooks/{webhookId}`: its delivery log with each delivery's
//! body and last response, and retry. Who may call: any member reads; adding, deleting and
//! retrying need the developer role (`webhooks:write`), as on `/v1/projects/{id}/webhooks`.

use askama::Template;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    response::Response,
    routing::{get, post},
};
use gamify_db::gamification::outbox::EVENT_TYPES;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        organizations::go_to,
        viewer::Viewer,
    },
    http::{
        error::Result,
        extract::{Json, Path, Query},
    },
    manage::webhooks::{
        self, CreateWebhook, CreatedWebhookOut, DeliveryOut, ListDeliveries, WebhookOut,
    },
    state::AppState,
};

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    nav: Nav,
    project_id: Uuid,
    endpoints: Vec<WebhookOut>,
    event_types: &'static [&'static str],
    can_write: bool,
    oob: bool,
}

#[derive(Template)]
#[template(path = "webhooks_changed.html")]
struct WebhooksChanged {
    project_id: Uuid,
    endpoints: Vec<WebhookOut>,
    can_write: bool,
    oob: bool,
    created: Option<CreatedWebhookOut>,
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    nav: Nav,
    project_id: Uuid,
    endpoint: WebhookOut,
    deliveries: Vec<DeliveryView>,
    next_cursor: Option<String>,
    can_write: bool,
}

struct DeliveryView {
    delivery: DeliveryOut,
    payload: String,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
}

/// The add form: a URL and the checked event types (a repeated field).
fn read_create_form(body: &[u8]) -> CreateWebhook {
    let mut url = String::new();
    let mut events = Vec::new();
    for (field, value) in url::form_urlencoded::parse(body) {
        match field.as_ref() {
            "url" => url = value.trim().to_owned(),
            "event" => events.push(value.into_owned()),
            _ => {}
        }
    }
    CreateWebhook { url, events }
}

async fn endpoints(viewer: &Viewer, state: &AppState, project_id: Uuid) -> Result<Vec<WebhookOut>> {
    Ok(webhooks::list_webhooks(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await?
    .0
    .data)
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "webhooks", "Webhooks").await?;
    let endpoints = endpoints(&viewer, &state, project_id).await?;
    let can_write = nav.can("webhooks");
    render(&WebhooksPage {
        nav,
        project_id,
        endpoints,
        event_types: EVENT_TYPES,
        can_write,
        oob: false,
    })
}

async fn changed(
    viewer: &Viewer,
    state: &AppState,
    project_id: Uuid,
    created: Option<CreatedWebhookOut>,
) -> Result<Response> {
    let endpoints = endpoints(viewer, state, project_id).await?;
    render(&WebhooksChanged {
        project_id,
        endpoints,
        can_write: true,
        oob: true,
        created,
    })
}

async fn create(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    body: Bytes,
) -> Result<Response> {
    let (_, created) = webhooks::create_webhook(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
        Json(read_create_form(&body)),
    )
    .await?;
    changed(&viewer, &state, project_id, Some(created.0)).await
}

async fn delete(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, webhook_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    webhooks::delete_webhook(
        viewer.caller.clone(),
        State(state.clone()),
        Path((project_id, webhook_id)),
    )
    .await?;
    changed(&viewer, &state, project_id, None).await
}

async fn deliveries(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, webhook_id)): Path<(Uuid, Uuid)>,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    let nav = Nav::project(
        &state,
        &viewer,
        project_id,
        "webhooks",
        "Webhook deliveries",
    )
    .await?;
    let page = webhooks::list_deliveries(
        viewer.caller.clone(),
        State(state.clone()),
        Path((project_id, webhook_id)),
        Query(ListDeliveries {
            limit: Some("50".to_owned()),
            cursor: query.cursor,
        }),
    )
    .await?
    .0;
    let endpoint = endpoints(&viewer, &state, project_id)
        .await?
        .into_iter()
        .find(|endpoint| endpoint.id == webhook_id)
        .ok_or_else(|| crate::Error::not_found("webhook"))?;
    let deliveries = page
        .data
        .into_iter()
        .map(|delivery| DeliveryView {
            payload: serde_json::to_string_pretty(&delivery.payload).unwrap_or_default(),
            delivery,
        })
        .collect();
    let can_write = nav.can("webhooks");
    render(&DeliveriesPage {
        nav,
        project_id,
        endpoint,
        deliveries,
        next_cursor: page.next_cursor,
        can_write,
    })
}

async fn retry(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, webhook_id, delivery_id)): Path<(Uuid, Uuid, String)>,
) -> Result<Response> {
    let _retried = webhooks::retry_delivery(
        viewer.caller,
        State(state),
        Path((project_id, webhook_id, delivery_id)),
    )
    .await?;
    Ok(go_to(&format!(
        "/console/projects/{project_id}/webhooks/{webhook_id}"
    )))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console/projects/{project_id}/webhooks",
            get(page).post(create),
        )
        .route(
            "/console/projects/{project_id}/webhooks/{webhook_id}",
            get(deliveries),
        )
        .route(
            "/console/projects/{project_id}/webhooks/{webhook_id}/delete",
            post(delete),
        )
        .route(
            "/console/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            post(retry),
        )
}

#[cfg(test)]
mod tests {
    use super::read_create_form;

    #[test]
    fn the_add_form_reads_every_checked_event_type() {
        let form = read_create_form(
            b"url=+https%3A%2F%2Fhooks.example%2Fgamify+&event=achievement.unlocked&event=points.changed",
        );
        assert_eq!(form.url, "https://hooks.example/gamify");
        assert_eq!(form.events, ["achievement.unlocked", "points.changed"]);
    }
}
