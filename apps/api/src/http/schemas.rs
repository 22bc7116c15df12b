//! The documented shapes that several routes share: the error body and codes, the health answers,
//! the ingestion bodies that handlers read as raw JSON, and the sets of error responses. The
//! document itself is assembled by the `openapi` module at the crate root.

use std::collections::BTreeMap;

use gamify_common::ErrorCode;
pub use gamify_common::ingest::{IdentifyBody, TrackBody};
use serde::Serialize;
use serde_json::Value;
use utoipa::{
    ToSchema,
    openapi::{
        self, Ref, RefOr, ResponseBuilder,
        content::ContentBuilder,
        header::HeaderBuilder,
        schema::{ObjectBuilder, Type},
    },
};

/// Every error response: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    code: ErrorCode,
    /// Human-readable; a 500 says only "internal server error".
    message: String,
    /// Present on some 400, 403 and 413 errors: the fields, items or events concerned.
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusOk {
    #[schema(inline)]
    status: OkStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OkStatus {
    Ok,
}

/// `/readyz`: `ready`, or `degraded` when only Redis fails.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(inline)]
    status: ReadinessStatus,
    checks: ReadinessChecks,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadinessStatus {
    Ready,
    Degraded,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    #[schema(inline)]
    postgres: CheckStatus,
    #[schema(inline)]
    redis: CheckStatus,
    #[schema(inline)]
    kafka: CheckStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Failing,
}

/// A free-form JSON object (`properties`, `traits`, `context`, `metadata`): keys and string
/// values hold no NUL character.
pub type JsonObject = serde_json::Map<String, Value>;

/// The track body sent as `text/plain` (e.g. `navigator.sendBeacon`) with the key in `apiKey`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeaconTrackBody {
    /// The API key, when no header carries one; removed before validation.
    api_key: Option<String>,
    #[serde(flatten)]
    body: TrackBody,
}

/// `POST /v1/events/batch`: 1–500 track bodies; `sentAt` and `context` apply to items lacking
/// their own.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 500)]
    batch: Vec<TrackBody>,
    #[schema(format = DateTime)]
    sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    context: Option<JsonObject>,
}

/// The batch body sent as `text/plain` with the key in `apiKey`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeaconBatchBody {
    api_key: Option<String>,
    #[serde(flatten)]
    body: BatchBody,
}

/// The identify body sent as `text/plain` with the key in `apiKey`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeaconIdentifyBody {
    api_key: Option<String>,
    #[serde(flatten)]
    body: IdentifyBody,
}

/// Error responses shared by many operations: (status, when).
fn error_responses(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<openapi::Response>> {
    list.iter()
        .map(|(status, when)| {
            let mut response = ResponseBuilder::new().description(*when).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if *status == 429 {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        )
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                );
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $(($status:literal, $when:literal)),+ $(,)?) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
                error_responses(&[$(($status, $when)),+])
            }
        }
    };
}

error_set!(
    /// Errors of every ingestion endpoint.
    IngestErrors:
    (400, "Invalid request: malformed JSON, invalid fields (`details.errors`, and `details.indexes` in a batch), a body that is not an object"),
    (401, "Missing, malformed, unknown, revoked or expired API key (`invalid_api_key`)"),
    (403, "`event_requires_secret_key` (a trusted event with a publishable key; `details.events`, `details.indexes`) or `origin_not_allowed`"),
    (413, "An event over 32 KB as produced, a batch over 500 events, 500 KB or 1 MB produced (`payload_too_large`)"),
    (415, "Content-Type other than application/json or text/plain, Content-Encoding other than gzip (`unsupported_media_type`)"),
    (429, "`client_rate_limited`, `key_rate_limited` or `project_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The broker did not acknowledge in time or the key could not be verified (`unavailable`); retry with the same messageIds"),
);

error_set!(
    /// Errors of `GET /v1/events`.
    ListEventsErrors:
    (400, "An invalid query parameter (`details.field` names it)"),
    (401, "Missing, malformed, unknown, revoked or expired API key (`invalid_api_key`)"),
    (403, "`secret_key_required` (a publishable key) or `origin_not_allowed`"),
    (429, "`client_rate_limited` or `key_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The key could not be verified right now (`unavailable`)"),
);

error_set!(
    /// Errors of `GET /v1/users/{external_id}`.
    GetUserErrors:
    (401, "Missing, malformed, unknown, revoked or expired API key (`invalid_api_key`)"),
    (403, "`secret_key_required` (a publishable key) or `origin_not_allowed`"),
    (404, "No such end user in the key's project (`not_found`)"),
    (429, "`client_rate_limited` or `key_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The key could not be verified right now (`unavailable`)"),
);

error_set!(
    /// Errors of the gamification reads (progress, outcomes, leaderboards, the ledger).
    GamificationReadErrors:
    (400, "An invalid query parameter (`details.field` names it): `wait`, `limit`, `period`, `cursor`"),
    (401, "Missing, malformed, unknown, revoked or expired API key or user token (`invalid_api_key`)"),
    (403, "`secret_key_required`: a publishable key where a secret key or user token is needed, or a user token for another user; `origin_not_allowed`"),
    (404, "No such leaderboard in the active rules (`not_found`)"),
    (429, "`client_rate_limited` or `key_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The key could not be verified right now, or the gateway is at capacity (`unavailable`)"),
);

error_set!(
    /// Errors of the gamification writes with a secret key (adjustments, user tokens).
    GamificationWriteErrors:
    (400, "Invalid request: malformed JSON, invalid fields (`details.field` names it)"),
    (401, "Missing, malformed, unknown, revoked or expired API key (`invalid_api_key`)"),
    (403, "`secret_key_required` (a publishable key) or `origin_not_allowed`"),
    (404, "No such points system in the active rules (`not_found`)"),
    (409, "A concurrent adjustment with the same `Idempotency-Key` is still being made (`conflict`)"),
    (413, "Body over 64 KB (`payload_too_large`)"),
    (415, "Body without Content-Type: application/json (`unsupported_media_type`)"),
    (429, "`client_rate_limited` or `key_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The key could not be verified right now, or the gateway is at capacity (`unavailable`)"),
);

error_set!(
    /// Errors of management requests with a JSON body and no path id.
    CreateErrors:
    (400, "Invalid request: malformed JSON, invalid or missing fields (`details.field` names it)"),
    (404, "No such organization, project or key, or one the caller has no part in (`not_found`)"),
    (401, "Missing or invalid credentials: admin token, management token or session (`unauthorized`)"),
    (403, "The caller may see the organization but its role or token scope falls short (`forbidden`); a cookie-authenticated change from another origin without the CSRF token (`csrf_rejected`)"),
    (409, "A unique conflict, e.g. a project name taken in its organization (`conflict`)"),
    (413, "Body over 64 KB (`payload_too_large`)"),
    (415, "Body without Content-Type: application/json (`unsupported_media_type`)"),
    (500, "A genuine fault (`internal_error`)"),
);

error_set!(
    /// Errors of management requests with a path id and a JSON body.
    UpdateErrors:
    (400, "Invalid request: malformed JSON, invalid fields (`details.field` names it)"),
    (401, "Missing or invalid credentials: admin token, management token or session (`unauthorized`)"),
    (403, "The caller may see the organization but its role or token scope falls short (`forbidden`); a cookie-authenticated change from another origin without the CSRF token (`csrf_rejected`)"),
    (404, "No such organization, project or key, or one in an organization the caller has no part in; a malformed id too (`not_found`)"),
    (409, "A unique conflict (`conflict`): a project name taken in its organization; rolling a revoked key"),
    (413, "Body over 64 KB (`payload_too_large`)"),
    (415, "Body without Content-Type: application/json (`unsupported_media_type`)"),
    (500, "A genuine fault (`internal_error`)"),
);

error_set!(
    /// Errors of management requests with a path id and no body.
    ReadErrors:
    (401, "Missing or invalid credentials: admin token, management token or session (`unauthorized`)"),
    (403, "The caller may see the organization but its role or token scope falls short (`forbidden`); a cookie-authenticated change from another origin without the CSRF token (`csrf_rejected`)"),
    (404, "No such organization, project or key, or one in an organization the caller has no part in; a malformed id too (`not_found`)"),
    (500, "A genuine fault (`internal_error`)"),
);

error_set!(
    /// Errors of management listings with a `cursor`.
    ListErrors:
    (400, "A `cursor` this API did not return (`invalid_request`, `details.field`)"),
    (401, "Missing or invalid credentials: admin token, management token or session (`unauthorized`)"),
    (403, "The caller may see the organization but its role or token scope falls short (`forbidden`); a cookie-authenticated change from another origin without the CSRF token (`csrf_rejected`)"),
    (404, "No such organization, project or key, or one in an organization the caller has no part in; a malformed id too (`not_found`)"),
    (500, "A genuine fault (`internal_error`)"),
);

error_set!(
    /// Errors of the analytics queries.
    AnalyticsErrors:
    (400, "An invalid or missing parameter (`details.field` names it): an unknown interval or measure, a range over the cap, an invalid event name, step list or window, `projectId` missing with a session or token"),
    (401, "No valid secret key, session, management token or admin token (`unauthorized`, `invalid_api_key`)"),
    (403, "A publishable key (`secret_key_required`), a role or token scope without `read` (`forbidden`), a key's origin not allowed (`origin_not_allowed`)"),
    (404, "The `projectId` names no project the caller can see (`not_found`)"),
    (422, "The query needed longer than the deployment's `ANALYTICS_QUERY_TIMEOUT_MS` (`query_too_expensive`): narrow the range or the events"),
    (429, "`client_rate_limited` or `key_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The key could not be verified, or Postgres did not answer in time (`unavailable`)"),
);

error_set!(
    /// Errors of the analytics queries that take a JSON body (funnels).
    AnalyticsBodyErrors:
    (400, "An invalid or missing parameter (`details.field` names it): an unknown interval or measure, a range over the cap, an invalid event name, step list or window, `projectId` missing with a session or token"),
    (401, "No valid secret key, session, management token or admin token (`unauthorized`, `invalid_api_key`)"),
    (403, "A publishable key (`secret_key_required`), a role or token scope without `read` (`forbidden`), a key's origin not allowed (`origin_not_allowed`)"),
    (404, "The `projectId` names no project the caller can see (`not_found`)"),
    (413, "A body over 64 KB (`payload_too_large`)"),
    (415, "A body that is not `application/json` (`unsupported_media_type`)"),
    (422, "The query needed longer than the deployment's `ANALYTICS_QUERY_TIMEOUT_MS` (`query_too_expensive`): narrow the range or the events"),
    (429, "`client_rate_limited` or `key_rate_limited`; `Retry-After` says when to retry"),
    (500, "A genuine fault (`internal_error`)"),
    (503, "The key could not be verified, or Postgres did not answer in time (`unavailable`)"),
);

/// `publishable` (browsers) or `secret` (servers).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the values; never built")]
#[schema(as = KeyType)]
pub enum KeyTypeDoc {
    Publishable,
    Secret,
}
