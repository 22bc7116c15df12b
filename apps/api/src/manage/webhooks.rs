//! A project's webhook endpoints and their deliveries, with the admin token. The engine writes a
//! delivery per subscribed endpoint in the transaction that makes an award and its dispatcher sends
//! it, signed the Standard Webhooks way with the endpoint's secret, retrying with backoff under the
//! same `webhook-id` (docs/GAMIFICATION.md). Endpoints and deliveries are tenant data: every query
//! runs in the project's tenant transaction. The secret is shown once, when the endpoint is made.

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use gamify_db::{
    gamification::outbox::EVENT_TYPES,
    sea_orm::sqlx::{self, Row, postgres::PgRow},
};
use rand::{RngCore, rngs::OsRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{
    IntoParams, IntoResponses, ToSchema,
    openapi::{self, Ref, RefOr, ResponseBuilder, content::ContentBuilder},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{audit, caller::Caller, roles::Permission},
    http::{
        error::{Error, Result},
        extract::{Json, Path, Query},
        validate::validate_storable,
    },
    state::AppState,
};

/// Live endpoints one project may have.
const MAX_ENDPOINTS: i64 = 20;
const MAX_URL_CHARS: usize = 2048;
/// The first key of the advisory lock that serializes a project's endpoint creations ("whk").
const CREATE_LOCK_CLASS: i32 = 0x0077_686b;
/// Random bytes in a secret (`whsec_` + their base64).
const SECRET_BYTES: usize = 24;
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
/// Longer than any delivery id the engine makes (`msg_` + 32 hex).
const MAX_DELIVERY_ID_CHARS: usize = 64;

/// The award a webhook tells of.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "documents the values; never built")]
#[schema(as = WebhookEventType)]
pub enum WebhookEventTypeDoc {
    #[serde(rename = "achievement.unlocked")]
    AchievementUnlocked,
    #[serde(rename = "points.changed")]
    PointsChanged,
    #[serde(rename = "level.changed")]
    LevelChanged,
    #[serde(rename = "streak.extended")]
    StreakExtended,
    #[serde(rename = "streak.broken")]
    StreakBroken,
}

/// Where a delivery stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the values; never built")]
#[schema(as = WebhookDeliveryState)]
pub enum DeliveryStateDoc {
    /// Not answered with a 2xx yet; `nextAttemptAt` says when the next attempt is due.
    Pending,
    /// Answered with a 2xx.
    Delivered,
    /// Every attempt failed, or its endpoint was deleted first.
    Failed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateWebhook {
    /// Absolute `http` or `https` URL without user name or password, at most 2048 characters.
    /// Deliveries go to public addresses only unless the engine allows private ones.
    #[schema(max_length = 2048)]
    pub(crate) url: String,
    /// The event types to send, at least one, each once.
    #[schema(value_type = Vec<WebhookEventTypeDoc>, min_items = 1, max_items = 5)]
    pub(crate) events: Vec<String>,
}

/// The one response that carries the secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhookOut {
    pub(crate) id: Uuid,
    pub(crate) url: String,
    #[schema(value_type = Vec<WebhookEventTypeDoc>)]
    pub(crate) events: Vec<String>,
    /// `whsec_` + base64 of 24 random bytes: the key that signs this endpoint's deliveries
    /// (Standard Webhooks). Shown only here.
    pub(crate) secret: String,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookOut {
    pub(crate) id: Uuid,
    pub(crate) url: String,
    #[schema(value_type = Vec<WebhookEventTypeDoc>)]
    pub(crate) events: Vec<String>,
    pub(crate) created_at: DateTime<Utc>,
}

/// The project's live webhook endpoints, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub(crate) data: Vec<WebhookOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    /// 1–200, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub(crate) limit: Option<String>,
    /// A `nextCursor` from the previous page.
    pub(crate) cursor: Option<String>,
}

/// The latest attempt at a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOut {
    /// 1 for the first attempt.
    pub(crate) attempt: i32,
    pub(crate) attempted_at: DateTime<Utc>,
    /// The answer's status; `null` when there was none (`error` says why).
    pub(crate) response_status: Option<i32>,
    /// The answer's body, its first 4 KB.
    pub(crate) response_body: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: i32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOut {
    /// The `webhook-id` every attempt carries (`msg_…`).
    pub(crate) id: String,
    #[schema(value_type = WebhookEventTypeDoc)]
    pub(crate) event_type: String,
    #[schema(value_type = DeliveryStateDoc)]
    pub(crate) state: String,
    /// Attempts made so far.
    pub(crate) attempts: i32,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due; `null` unless `pending`.
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    /// The body every attempt sends: `{type, timestamp, data}`.
    #[schema(value_type = Object)]
    pub(crate) payload: Value,
    pub(crate) last_attempt: Option<AttemptOut>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub(crate) data: Vec<DeliveryOut>,
    /// Pass back as `cursor` for the next page; `null` on the last.
    pub(crate) next_cursor: Option<String>,
}

/// A retry scheduled.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetriedDeliveryOut {
    pub(crate) id: String,
    #[schema(value_type = DeliveryStateDoc)]
    pub(crate) state: String,
    pub(crate) next_attempt_at: DateTime<Utc>,
}

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

/// The project's tenant transaction, once the caller is authorized for `permission` on it (404
/// for a project that does not exist or that the caller cannot see), and the organization that
/// owns it.
pub(crate) async fn tenant(
    caller: &Caller,
    state: &AppState,
    project_id: Uuid,
    permission: Permission,
) -> Result<(Txn, Uuid)> {
    let (project, _) = caller
        .authorize_project(state, project_id, permission)
        .await?;
    let txn = state
        .db()
        .tenant_bulk(project_id)
        .await
        .map_err(Error::from)?;
    Ok((txn, project.organization_id))
}

/// When the endpoint was deleted (`None`: it is live); 404 when the project has no such endpoint.
pub(crate) async fn find_endpoint(
    txn: &mut Txn,
    project_id: Uuid,
    webhook_id: Uuid,
) -> Result<Option<DateTime<Utc>>> {
    let found: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
        "SELECT deleted_at FROM webhook_endpoints WHERE project_id = $1 AND id = $2",
    )
    .bind(project_id)
    .bind(webhook_id)
    .fetch_optional(&mut **txn)
    .await
    .map_err(Error::from)?;
    found
        .map(|(deleted_at,)| deleted_at)
        .ok_or_else(|| Error::not_found("webhook"))
}

/// `http(s)://host…`, no user name or password, at most 2048 characters; returned as it will be
/// called (normalized by the URL standard).
fn validate_url(raw: &str) -> Result<String> {
    validate_storable("url", raw)?;
    let too_long = || {
        Error::invalid_field(
            "url",
            format_args!("must be at most {MAX_URL_CHARS} characters"),
        )
    };
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(too_long());
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|_| Error::invalid_field("url", "is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid_field(
            "url",
            "must be an http or https URL with a host",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid_field(
            "url",
            "must not contain a user name or password",
        ));
    }
    let normalized = String::from(url);
    if normalized.chars().count() > MAX_URL_CHARS {
        return Err(too_long());
    }
    Ok(normalized)
}

/// A non-empty subset of the event types, each once.
fn validate_events(events: &[String]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::invalid_field(
            "events",
            "must list at least one event type",
        ));
    }
    for (index, event) in events.iter().enumerate() {
        let field = format!("events[{index}]");
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(Error::invalid_field(
                &field,
                format_args!("must be one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if events[..index].contains(event) {
            return Err(Error::invalid_field(&field, "is listed twice"));
        }
    }
    Ok(())
}

fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Adds an endpoint; the response is the only one that shows its secret.
#[utoipa::path(
    post,
    path = "/v1/projects/{project_id}/webhooks",
    tag = "management",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    request_body = CreateWebhook,
    responses((status = 201, description = "Created, with the secret", body = CreatedWebhookOut), CreateWebhookErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["webhooks:write"]))
)]
pub(crate) async fn create_webhook(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, axum::Json<CreatedWebhookOut>)> {
    let url = validate_url(&body.url)?;
    validate_events(&body.events)?;
    let (mut txn, organization_id) =
        tenant(&caller, &state, project_id, Permission::WebhooksWrite).await?;
    // One creation at a time per project, so two cannot both pass the count. Two int4 keys: a
    // key space apart from the engine's bigint project locks.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(CREATE_LOCK_CLASS)
        .bind(project_id)
        .execute(&mut *txn)
        .await
        .map_err(Error::from)?;
    let (live,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM webhook_endpoints WHERE project_id = $1 AND deleted_at IS NULL",
    )
    .bind(project_id)
    .fetch_one(&mut *txn)
    .await
    .map_err(Error::from)?;
    if live >= MAX_ENDPOINTS {
        return Err(Error::Conflict(format!(
            "a project has at most {MAX_ENDPOINTS} webhooks; delete one first"
        )));
    }
    let id = Uuid::now_v7();
    let secret = generate_secret();
    let (created_at,): (DateTime<Utc>,) = sqlx::query_as(
        "INSERT INTO webhook_endpoints (project_id, id, url, events, secret)
         VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
    )
    .bind(project_id)
    .bind(id)
    .bind(&url)
    .bind(&body.events)
    .bind(&secret)
    .fetch_one(&mut *txn)
    .await
    .map_err(Error::from)?;
    audit::record_in(
        &mut txn,
        organization_id,
        audit::Entry::new(&caller, "webhook.created", "webhook")
            .target(id)
            .details(
                serde_json::json!({ "projectId": project_id, "url": url, "events": body.events }),
            ),
    )
    .await?;
    txn.commit().await.map_err(Error::from)?;
    tracing::info!(%project_id, webhook_id = %id, events = ?body.events, "webhook created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhookOut {
            id,
            url,
            events: body.events,
            secret,
            created_at,
        }),
    ))
}

/// The project's live endpoints, oldest first, without their secrets.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}/webhooks",
    tag = "management",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "The endpoints", body = WebhookList), WebhookReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_webhooks(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<axum::Json<WebhookList>> {
    let (mut txn, _) = tenant(&caller, &state, project_id, Permission::Read).await?;
    let rows: Vec<(Uuid, String, Vec<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, url, events, created_at FROM webhook_endpoints
         WHERE project_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
    )
    .bind(project_id)
    .fetch_all(&mut *txn)
    .await
    .map_err(Error::from)?;
    txn.commit().await.map_err(Error::from)?;
    let data = rows
        .into_iter()
        .map(|(id, url, events, created_at)| WebhookOut {
            id,
            url,
            events,
            created_at,
        })
        .collect();
    Ok(axum::Json(WebhookList { data }))
}

/// Deletes the endpoint: nothing more is sent to it, and its pending deliveries fail. Repeating it
/// is harmless.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project_id}/webhooks/{webhook_id}",
    tag = "management",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("webhook_id" = Uuid, Path, description = "The endpoint's id"),
    ),
    responses((status = 204, description = "Deleted (also when it already was)"), WebhookReadErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["webhooks:write"]))
)]
pub(crate) async fn delete_webhook(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, webhook_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let (mut txn, organization_id) =
        tenant(&caller, &state, project_id, Permission::WebhooksWrite).await?;
    find_endpoint(&mut txn, project_id, webhook_id).await?;
    let deleted = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now()
         WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(project_id)
    .bind(webhook_id)
    .execute(&mut *txn)
    .await
    .map_err(Error::from)?
    .rows_affected();
    let (failed,): (i64,) = sqlx::query_as(
        "WITH failed AS (
             UPDATE webhook_deliveries SET state = 'failed'
             WHERE project_id = $1 AND endpoint_id = $2 AND state = 'pending'
             RETURNING id),
         dequeued AS (
             DELETE FROM webhook_queue q USING failed
             WHERE q.project_id = $1 AND q.delivery_id = failed.id)
         SELECT count(*) FROM failed",
    )
    .bind(project_id)
    .bind(webhook_id)
    .fetch_one(&mut *txn)
    .await
    .map_err(Error::from)?;
    if deleted > 0 {
        audit::record_in(
            &mut txn,
            organization_id,
            audit::Entry::new(&caller, "webhook.deleted", "webhook")
                .target(webhook_id)
                .details(serde_json::json!({ "projectId": project_id })),
        )
        .await?;
    }
    txn.commit().await.map_err(Error::from)?;
    if deleted > 0 {
        tracing::info!(%project_id, %webhook_id, pending_failed = failed, "webhook deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Position after which the next page starts: the last item's (createdAt, id).
struct Cursor {
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }

    fn decode(raw: &str) -> Option<Self> {
        let (micros, id) = raw.split_once('.')?;
        let plain = !id.is_empty()
            && id.len() <= MAX_DELIVERY_ID_CHARS
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        plain.then_some(())?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.to_owned(),
        })
    }
}

fn delivery_from_row(row: &PgRow) -> Result<DeliveryOut, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let next_attempt_at: DateTime<Utc> = row.try_get("next_attempt_at")?;
    let last_attempt = match row.try_get::<Option<i32>, _>("attempt")? {
        Some(attempt) => Some(AttemptOut {
            attempt,
            attempted_at: row.try_get("attempted_at")?,
            response_status: row.try_get("response_status")?,
            response_body: row.try_get("response_body")?,
            error: row.try_get("error")?,
            duration_ms: row.try_get("duration_ms")?,
        }),
        None => None,
    };
    Ok(DeliveryOut {
        id: row.try_get("id")?,
        event_type: row.try_get("event_type")?,
        next_attempt_at: (state == "pending").then_some(next_attempt_at),
        state,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
        payload: row.try_get("payload")?,
        last_attempt,
    })
}

/// The endpoint's deliveries, newest first, keyset-paginated, each with its latest attempt.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries",
    tag = "management",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("webhook_id" = Uuid, Path, description = "The endpoint's id"),
        ListDeliveries,
    ),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage), ListDeliveriesErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_deliveries(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, webhook_id)): Path<(Uuid, Uuid)>,
    Query(query): Query<ListDeliveries>,
) -> Result<axum::Json<DeliveryPage>> {
    let limit = match query.limit.as_deref().map(str::parse::<u32>) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return Err(Error::invalid_field(
                "limit",
                format_args!("must be an integer from 1 to {MAX_LIMIT}"),
            ));
        }
    };
    let cursor =
        match query.cursor.as_deref() {
            None => None,
            Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| {
                Error::invalid_field("cursor", "is not a cursor this API returned")
            })?),
        };
    let (mut txn, _) = tenant(&caller, &state, project_id, Permission::Read).await?;
    find_endpoint(&mut txn, project_id, webhook_id).await?;
    let rows = sqlx::query(
        "SELECT d.id, d.event_type, d.state, d.attempts, d.created_at, d.delivered_at,
                d.next_attempt_at, d.payload,
                a.attempt, a.attempted_at, a.response_status, a.response_body, a.error,
                a.duration_ms
         FROM webhook_deliveries d
         LEFT JOIN LATERAL (
             SELECT * FROM webhook_attempts a
             WHERE a.project_id = d.project_id AND a.delivery_id = d.id
             ORDER BY a.attempt DESC LIMIT 1) a ON true
         WHERE d.project_id = $1 AND d.endpoint_id = $2
           AND ($3::timestamptz IS NULL OR (d.created_at, d.id) < ($3, $4))
         ORDER BY d.created_at DESC, d.id DESC
         LIMIT $5",
    )
    .bind(project_id)
    .bind(webhook_id)
    .bind(cursor.as_ref().map(|c| c.created_at))
    .bind(cursor.as_ref().map(|c| c.id.as_str()))
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *txn)
    .await
    .map_err(Error::from)?;
    txn.commit().await.map_err(Error::from)?;
    let mut data = rows
        .iter()
        .map(delivery_from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::from)?;
    let next_cursor = if data.len() > limit as usize {
        data.truncate(limit as usize);
        data.last().map(|last| {
            Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(axum::Json(DeliveryPage { data, next_cursor }))
}

/// Schedules a new attempt at once, under the same `webhook-id`, whatever the delivery's state.
#[utoipa::path(
    post,
    path = "/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    tag = "management",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("webhook_id" = Uuid, Path, description = "The endpoint's id"),
        ("delivery_id" = String, Path, description = "The delivery's id (`msg_…`)"),
    ),
    responses((status = 202, description = "Scheduled", body = RetriedDeliveryOut), RetryErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["webhooks:write"]))
)]
pub(crate) async fn retry_delivery(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, webhook_id, delivery_id)): Path<(Uuid, Uuid, String)>,
) -> Result<(StatusCode, axum::Json<RetriedDeliveryOut>)> {
    // Postgres text holds no NUL; such an id names nothing.
    if delivery_id.contains('\0') || delivery_id.chars().count() > MAX_DELIVERY_ID_CHARS {
        return Err(Error::not_found("delivery"));
    }
    let (mut txn, _) = tenant(&caller, &state, project_id, Permission::WebhooksWrite).await?;
    if find_endpoint(&mut txn, project_id, webhook_id)
        .await?
        .is_some()
    {
        return Err(Error::Conflict(
            "the webhook was deleted; its deliveries cannot be retried".to_owned(),
        ));
    }
    let retried: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now()
         WHERE project_id = $1 AND endpoint_id = $2 AND id = $3
         RETURNING id, next_attempt_at",
    )
    .bind(project_id)
    .bind(webhook_id)
    .bind(&delivery_id)
    .fetch_optional(&mut *txn)
    .await
    .map_err(Error::from)?;
    let (id, next_attempt_at) = retried.ok_or_else(|| Error::not_found("delivery"))?;
    sqlx::query(
        "INSERT INTO webhook_queue (project_id, delivery_id, due_at) VALUES ($1, $2, $3)
         ON CONFLICT (project_id, delivery_id) DO UPDATE SET due_at = EXCLUDED.due_at",
    )
    .bind(project_id)
    .bind(&id)
    .bind(next_attempt_at)
    .execute(&mut *txn)
    .await
    .map_err(Error::from)?;
    txn.commit().await.map_err(Error::from)?;
    tracing::info!(%project_id, %webhook_id, delivery_id = %id, "webhook delivery retry scheduled");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RetriedDeliveryOut {
            id,
            state: "pending".to_owned(),
            next_attempt_at,
        }),
    ))
}

/// Error responses: (status, when), each with the error body.
fn error_responses(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<openapi::Response>> {
    list.iter()
        .map(|(status, when)| {
            let response = ResponseBuilder::new().description(*when).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            (status.to_string(), response.build().into())
        })
        .collect()
}

const UNAUTHORIZED: (u16, &str) = (401, "Missing or wrong admin token (`unauthorized`)");
const NOT_FOUND: (u16, &str) = (
    404,
    "No such project, or no such webhook in it; a malformed id too (`not_found`)",
);
const INTERNAL: (u16, &str) = (500, "A genuine fault (`internal_error`)");

struct CreateWebhookErrors;

impl IntoResponses for CreateWebhookErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[
            (
                400,
                "Invalid request: malformed JSON, an invalid `url` or `events` (`details.field` names it)",
            ),
            UNAUTHORIZED,
            (404, "No such project; a malformed id too (`not_found`)"),
            (409, "The project already has 20 webhooks (`conflict`)"),
            (413, "Body over 64 KB (`payload_too_large`)"),
            (
                415,
                "Body without Content-Type: application/json (`unsupported_media_type`)",
            ),
            INTERNAL,
        ])
    }
}

struct WebhookReadErrors;

impl IntoResponses for WebhookReadErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[UNAUTHORIZED, NOT_FOUND, INTERNAL])
    }
}

struct ListDeliveriesErrors;

impl IntoResponses for ListDeliveriesErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[
            (
                400,
                "An invalid `limit` or `cursor` (`details.field` names it)",
            ),
            UNAUTHORIZED,
            NOT_FOUND,
            INTERNAL,
        ])
    }
}

struct RetryErrors;

impl IntoResponses for RetryErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[
            UNAUTHORIZED,
            (
                404,
                "No such project, webhook in it or delivery of that webhook (`not_found`)",
            ),
            (409, "The webhook was deleted (`conflict`)"),
            INTERNAL,
        ])
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://hooks.example/gamify",
            "http://127.0.0.1:8080/hook?x=1",
            "https://[2001:db8::1]/",
        ] {
            assert!(validate_url(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            validate_url("HTTPS://Hooks.Example").unwrap(),
            "https://hooks.example/"
        );
        for bad in [
            "",
            "hooks.example/x",
            "/relative",
            "ftp://hooks.example/",
            "mailto:a@hooks.example",
            "https://user:pass@hooks.example/",
            "https://user@hooks.example/",
            "https://hooks.example/\0",
            "file:///etc/passwd",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?}");
        }
        let long = format!("https://hooks.example/{}", "a".repeat(MAX_URL_CHARS));
        assert!(validate_url(&long).is_err());
    }

    #[test]
    fn events() {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(validate_events(&list(EVENT_TYPES)).is_ok());
        assert!(validate_events(&list(&["points.changed"])).is_ok());
        assert!(validate_events(&[]).is_err());
        assert!(validate_events(&list(&["points.changed", "points.changed"])).is_err());
        assert!(validate_events(&list(&["points.changd"])).is_err());
    }

    #[test]
    fn secrets_are_24_random_bytes() {
        let secret = generate_secret();
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(key.len(), SECRET_BYTES);
        assert_ne!(secret, generate_secret());
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: "msg_0192f0c1a2b37c4d8e9f001122334455".to_owned(),
        };
        let decoded = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(decoded.created_at, cursor.created_at);
        assert_eq!(decoded.id, cursor.id);
        for bad in [
            "",
            "x",
            "1.",
            ".msg_1",
            "abc.msg_1",
            "1.msg 1",
            "1.msg_1'--",
        ] {
            assert!(Cursor::decode(bad).is_none(), "{bad}");
        }
    }
}
