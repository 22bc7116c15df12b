//! The OpenAPI 3.1 document. Every route is registered through `utoipa_axum`'s
//! [`OpenApiRouter`] with `routes!()`, so the router and the document come from the same
//! `#[utoipa::path]` annotations; this module holds the document's frame (info, tags, security
//! schemes; the shared schemas are in `http::schemas`). `GET /openapi.json` serves it; `docs/openapi.json` is the committed copy
//! (`gamify-api openapi` prints it; the test `openapi_document_is_current` checks it).

use std::sync::OnceLock;

use gamify_common::ErrorCode;

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    http::schemas::{ErrorBody, ErrorObject},
    state::AppState,
};

/// Security scheme names used in `security(...)` of the operations.
pub const ADMIN: &str = "adminToken";
pub const API_KEY: &str = "apiKey";
pub const API_KEY_BEARER: &str = "apiKeyBearer";
/// The console's session cookie; an operation's scopes here name the least role it needs.
pub const SESSION: &str = "session";
/// An organization management token; an operation's scopes here name the scope it needs (none:
/// any token of the organization).
pub const ORG_TOKEN: &str = "orgToken";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gamify API",
        description = "Multi-tenant event ingestion for gamification: ingestion and reads with a \
                       project's API key; management with a console session, an organization \
                       management token or the deployment's admin token. Every \
                       error is `{\"error\":{\"code\",\"message\",\"details?\"}}`; the codes are \
                       listed in docs/API.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "ingestion", description = "Events and identify calls, with a publishable or secret key"),
        (name = "reads", description = "A project's events and end users, with a secret key"),
        (name = "management", description = "Organizations, projects and keys: with a session, a management token or the operator's admin token"),
        (name = "accounts", description = "Sessions, invitations, members, management tokens and the audit log"),
        (name = "gamification", description = "Rules, progress, outcomes, leaderboards and points"),
        (name = "analytics", description = "Trends from the hourly rollups: a secret key, or a session or management token with the project's id"),
    ),
    components(schemas(ErrorBody, ErrorObject, ErrorCode))
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <ADMIN_TOKEN>`: the management API",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "A project's key: `pk_live_…` (publishable) or `sk_live_…` (secret). Ingestion \
                 also takes it as a top-level `apiKey` field of a `text/plain` body.",
            ))),
        );
        components.add_security_scheme(
            API_KEY_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The same project key as `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "gamify_session",
                "A console session (`POST /v1/sessions`). The operation's scopes name the least \
                 role it needs in the organization that owns the resource (viewer < developer < \
                 admin < owner); a change must come from the deployment's origin or carry \
                 `X-CSRF-Token`.",
            ))),
        );
        components.add_security_scheme(
            ORG_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer gmt_…`: an organization management token. The \
                         operation's scopes name the scope it needs; an operation without this \
                         scheme refuses tokens.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's frame; the operations are added by the routers.
pub fn base() -> openapi::OpenApi {
    ApiDoc::openapi()
}

/// The complete document, as served and committed.
pub fn document() -> &'static openapi::OpenApi {
    static DOCUMENT: OnceLock<openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = crate::api().split_for_parts().1;
        // A roll's body is optional (no Content-Type: no body); utoipa marks it required unless
        // the type is an Option, which would also admit a `null` body that the handler refuses.
        if let Some(body) = document
            .paths
            .paths
            .get_mut("/v1/projects/{project_id}/api-keys/{key_id}/roll")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
        {
            body.required = Some(openapi::Required::False);
        }
        document
    })
}

/// The document as committed in docs/openapi.json: pretty JSON and a final newline.
pub fn document_json() -> Result<String, serde_json::Error> {
    let mut json = document().to_pretty_json()?;
    json.push('\n');
    Ok(json)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Json<&'static openapi::OpenApi> {
    Json(document())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(openapi_json))
}
