//! Event ingestion: `POST /v1/events/track`, `POST /v1/events/batch`, `POST /v1/identify`.
//! A request is answered 202 only after the broker acknowledged every one of its events.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderName, Method, StatusCode, header},
};
use chrono::{DateTime, Utc};
use gamify_common::{
    Envelope,
    ingest::{
        self, BatchDefaults, Event, FieldError, MAX_BATCH_EVENTS, MAX_PRODUCED_BYTES_PER_REQUEST,
    },
};
use serde::Serialize;
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    http::{
        error::{Error, Result},
        schemas::{
            BatchBody, BeaconBatchBody, BeaconIdentifyBody, BeaconTrackBody, IdentifyBody,
            IngestErrors, TrackBody,
        },
    },
    ingest::{
        decisions::{
            produced_size, project_quota, received, rejected, requires_secret, secret_key_required,
            source,
        },
        keys::KeyRecord,
        rate_limit::Bucket,
        request::IngestRequest,
    },
    state::AppState,
};

/// Seconds a client should wait before retrying after the broker did not acknowledge.
const RETRY_AFTER_UNAVAILABLE: u64 = 1;

/// The project's ceiling on accepted events, counted in events, checked once a request is valid.
/// Each key class has a budget of its own: a browser key spending its project's ceiling never
/// refuses the events the project's servers send.
fn within_project_limit(state: &AppState, key: &KeyRecord, events: usize) -> Result<()> {
    let quota = project_quota(key, state.limits().project);
    let cost = u32::try_from(events).unwrap_or(u32::MAX);
    state
        .rate_limiter()
        .check(Bucket::Project(key.project_id, key.key_type), quota, cost)
        .map_err(|wait| Bucket::Project(key.project_id, key.key_type).refusal(wait))
}

async fn produce(state: &AppState, envelopes: &[Envelope]) -> Result<()> {
    state.sink().send(envelopes).await.map_err(|_| {
        Error::unavailable(
            "the event could not be stored right now; retry with the same messageId",
            Some(RETRY_AFTER_UNAVAILABLE),
        )
    })
}

/// 202: the broker acknowledged the event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The event's id (UUIDv7).
    id: Uuid,
    /// The client's messageId, or the one the gateway assigned.
    message_id: String,
}

/// 202: the broker acknowledged every event of the batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    accepted: usize,
    /// The events' ids, in the batch's order.
    ids: Vec<Uuid>,
}

/// The path of a single-event request: read, parse with `parse`, guard, produce, acknowledge.
async fn accept_one(
    state: &AppState,
    request: IngestRequest,
    parse: impl FnOnce(Value, DateTime<Utc>) -> Result<Event, Vec<FieldError>>,
) -> Result<(StatusCode, axum::Json<Accepted>)> {
    let IngestRequest {
        key,
        client_ip,
        headers,
        body: value,
        received_at,
    } = request;
    let key = key.as_ref();
    let received = received(&headers, client_ip, received_at);
    let event = parse(value, received.at).map_err(|errors| rejected(errors, None))?;
    produced_size(&event, &received).map_err(|error| rejected(vec![error], None))?;
    if requires_secret(key, &event) {
        return Err(secret_key_required(vec![event.event], None));
    }
    within_project_limit(state, key, 1)?;
    let envelope = Envelope::new(event, source(key), &received);
    produce(state, std::slice::from_ref(&envelope)).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            id: envelope.id,
            message_id: envelope.message_id,
        }),
    ))
}

/// Sends one event.
#[utoipa::path(
    post,
    path = "/v1/events/track",
    tag = "ingestion",
    request_body(content(
        (TrackBody = "application/json"),
        (BeaconTrackBody = "text/plain"),
    ), description = "JSON, optionally gzip (`Content-Encoding: gzip`); as `text/plain` the key may be a top-level `apiKey` field"),
    responses((status = 202, description = "The broker acknowledged the event", body = Accepted), IngestErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
async fn track(
    State(state): State<AppState>,
    request: IngestRequest,
) -> Result<(StatusCode, axum::Json<Accepted>)> {
    accept_one(&state, request, |value, received_at| {
        ingest::parse_track(value, &BatchDefaults::default(), received_at)
    })
    .await
}

/// Records an end user's traits.
#[utoipa::path(
    post,
    path = "/v1/identify",
    tag = "ingestion",
    request_body(content(
        (IdentifyBody = "application/json"),
        (BeaconIdentifyBody = "text/plain"),
    ), description = "JSON, optionally gzip (`Content-Encoding: gzip`); as `text/plain` the key may be a top-level `apiKey` field"),
    responses((status = 202, description = "The broker acknowledged the identify call", body = Accepted), IngestErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
async fn identify(
    State(state): State<AppState>,
    request: IngestRequest,
) -> Result<(StatusCode, axum::Json<Accepted>)> {
    accept_one(&state, request, ingest::parse_identify).await
}

/// One verdict for the whole batch: any invalid item → 400 naming the indexes; any trusted item
/// with a publishable key → 403 naming them; otherwise every item is produced and acknowledged,
/// or 503 for all.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    tag = "ingestion",
    request_body(content(
        (BatchBody = "application/json"),
        (BeaconBatchBody = "text/plain"),
    ), description = "JSON, optionally gzip (`Content-Encoding: gzip`); as `text/plain` the key may be a top-level `apiKey` field"),
    responses((status = 202, description = "The broker acknowledged every event", body = BatchAccepted), IngestErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
async fn batch(
    State(state): State<AppState>,
    IngestRequest {
        key,
        client_ip,
        headers,
        body,
        received_at,
    }: IngestRequest,
) -> Result<(StatusCode, axum::Json<BatchAccepted>)> {
    let Value::Object(mut body) = body else {
        return Err(Error::invalid(
            "the body must be a JSON object with a batch array",
        ));
    };
    let Some(Value::Array(items)) = body.remove("batch") else {
        return Err(Error::invalid_field("batch", "must be an array of events"));
    };
    if items.is_empty() {
        return Err(Error::invalid_field(
            "batch",
            "must hold at least one event",
        ));
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(Error::too_large(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events"
        )));
    }
    let mut errors = Vec::new();
    let sent_at = ingest::parse_time(
        "sentAt",
        body.get("sentAt").and_then(Value::as_str),
        &mut errors,
    );
    if body
        .get("sentAt")
        .is_some_and(|v| !v.is_string() && !v.is_null())
    {
        errors.push(FieldError::new("sentAt", "must be an RFC 3339 date-time"));
    }
    let context = match body.remove("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(context)) => Some(context),
        Some(_) => {
            errors.push(FieldError::new("context", "must be a JSON object"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(rejected(errors, None));
    }
    let defaults = BatchDefaults { sent_at, context };
    let received = received(&headers, client_ip, received_at);

    let mut events = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    let mut produced_bytes = 0;
    for (index, item) in items.into_iter().enumerate() {
        match ingest::parse_track(item, &defaults, received.at).and_then(|event| {
            Ok((
                produced_size(&event, &received).map_err(|e| vec![e])?,
                event,
            ))
        }) {
            Ok((size, event)) => {
                produced_bytes += size;
                events.push(event);
            }
            Err(item_errors) => {
                invalid.push(index);
                errors.extend(item_errors.into_iter().map(|e| e.within("batch", index)));
            }
        }
    }
    if !invalid.is_empty() {
        return Err(rejected(errors, Some(invalid)));
    }
    if produced_bytes > MAX_PRODUCED_BYTES_PER_REQUEST {
        return Err(Error::too_large(format!(
            "the batch would produce {produced_bytes} bytes once its shared context is merged into \
             every event; at most {MAX_PRODUCED_BYTES_PER_REQUEST} per request: send fewer events \
             per batch or a smaller context"
        )));
    }

    let trusted: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| requires_secret(&key, event))
        .map(|(index, _)| index)
        .collect();
    if !trusted.is_empty() {
        let names = trusted.iter().map(|&i| events[i].event.clone()).collect();
        return Err(secret_key_required(names, Some(trusted)));
    }
    within_project_limit(&state, &key, events.len())?;

    let envelopes: Vec<Envelope> = events
        .into_iter()
        .map(|event| Envelope::new(event, source(&key), &received))
        .collect();
    produce(&state, &envelopes).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(BatchAccepted {
            accepted: envelopes.len(),
            ids: envelopes.iter().map(|e| e.id).collect(),
        }),
    ))
}

/// Answered by the CORS layer before it gets here; present so the method router knows OPTIONS.
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// A documented OPTIONS operation for one ingestion path, served by [`preflight`].
macro_rules! preflight_route {
    ($name:ident, $path:literal) => {
        /// CORS preflight, answered by the CORS layer for every origin.
        #[utoipa::path(
            options,
            path = $path,
            tag = "ingestion",
            responses((status = 200, description = "CORS preflight: allowed methods, headers and origin (any)"))
        )]
        async fn $name() -> StatusCode {
            preflight().await
        }
    };
}

preflight_route!(track_preflight, "/v1/events/track");
preflight_route!(batch_preflight, "/v1/events/batch");
preflight_route!(identify_preflight, "/v1/identify");

/// Browsers call these endpoints from any site: preflights pass for every origin, and keys with
/// allowed origins are enforced on the request itself.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(24 * 3600))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(track, track_preflight))
        .routes(routes!(batch, batch_preflight))
        .routes(routes!(identify, identify_preflight))
        .layer(cors())
}
