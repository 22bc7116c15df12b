use axum::{
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use gamify_common::{ApiKey, KeyType, KeyVoucher};
use gamify_db::{
    entities::api_keys,
    sea_orm::{
        ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
        TransactionTrait, sea_query::Expr,
    },
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{audit, caller::Caller, roles::Permission},
    http::{
        error::{Error, Result},
        extract::{Json, Path},
        validate::validate_name,
    },
    ingest::keys::Change,
    state::AppState,
};

/// The longest overlap a roll may give the old key.
const MAX_ROLL_EXPIRY_SECONDS: u64 = 30 * 24 * 3600;

/// Most origins one publishable key may list.
const MAX_ALLOWED_ORIGINS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKey {
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) name: String,
    #[serde(rename = "type")]
    #[schema(value_type = crate::http::schemas::KeyTypeDoc)]
    pub(crate) key_type: KeyType,
    /// Browser origins (`scheme://host[:port]`) a publishable key may be used from, at most 100;
    /// absent or empty: any.
    #[schema(max_items = 100)]
    pub(crate) allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateApiKey {
    /// Publishable keys only, at most 100; empty: any origin.
    #[schema(max_items = 100)]
    pub(crate) allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollApiKey {
    /// How long the old key keeps working, at most 30 days; 0 (the default) ends it now.
    #[serde(default)]
    #[schema(maximum = 2_592_000)]
    pub(crate) expires_in_seconds: u64,
}

/// The one response that carries the full key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKeyOut {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    #[serde(rename = "type")]
    #[schema(value_type = crate::http::schemas::KeyTypeDoc)]
    pub(crate) key_type: String,
    pub(crate) prefix: String,
    pub(crate) key: String,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyOut {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    #[serde(rename = "type")]
    #[schema(value_type = crate::http::schemas::KeyTypeDoc)]
    pub(crate) key_type: String,
    pub(crate) prefix: String,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl From<api_keys::Model> for ApiKeyOut {
    fn from(model: api_keys::Model) -> Self {
        Self {
            id: model.id,
            name: model.name,
            key_type: model.key_type,
            prefix: model.prefix,
            allowed_origins: serde_json::from_value(model.allowed_origins).unwrap_or_default(),
            created_at: model.created_at,
            last_used_at: model.last_used_at,
            revoked_at: model.revoked_at,
            expires_at: model.expires_at,
        }
    }
}

/// Generates a key and stores its hash; the full key exists only in the returned value.
pub(crate) async fn insert_key(
    db: &impl ConnectionTrait,
    voucher: &KeyVoucher,
    project_id: Uuid,
    name: String,
    key_type: KeyType,
    allowed_origins: &[String],
) -> Result<CreatedApiKeyOut> {
    let key = ApiKey::generate_vouched(key_type, voucher);
    let model = api_keys::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project_id),
        name: Set(name),
        key_hash: Set(key.hash().as_str().to_owned()),
        prefix: Set(key.display_prefix()),
        key_type: Set(key_type.as_str().to_owned()),
        scopes: Set(serde_json::json!([])),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
        expires_at: Set(None),
        allowed_origins: Set(serde_json::json!(allowed_origins)),
    }
    .insert(db)
    .await?;
    tracing::info!(project_id = %project_id, key_id = %model.id, key_type = %key_type, prefix = %model.prefix, "api key created");
    Ok(CreatedApiKeyOut {
        id: model.id,
        name: model.name,
        key_type: model.key_type,
        prefix: model.prefix,
        key: key.expose().to_owned(),
        created_at: model.created_at,
    })
}

pub(crate) async fn find_key(
    db: &impl ConnectionTrait,
    project_id: Uuid,
    key_id: Uuid,
) -> Result<api_keys::Model> {
    api_keys::Entity::find_by_id(key_id)
        .filter(api_keys::Column::ProjectId.eq(project_id))
        .one(db)
        .await?
        .ok_or_else(|| Error::not_found("api key"))
}

/// Creates a key; the response is the only one that shows it.
#[utoipa::path(
    post,
    path = "/v1/projects/{project_id}/api-keys",
    tag = "management",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    request_body = CreateApiKey,
    responses((status = 201, description = "Created, with the full key", body = CreatedApiKeyOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["keys:write"]))
)]
pub(crate) async fn create_api_key(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, axum::Json<CreatedApiKeyOut>)> {
    validate_name("name", &body.name)?;
    let allowed_origins =
        normalize_origins(body.key_type, body.allowed_origins.unwrap_or_default())?;
    let (project, _) = caller
        .authorize_project(&state, project_id, Permission::KeysWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    let created = insert_key(
        &txn,
        state.key_voucher(),
        project_id,
        body.name,
        body.key_type,
        &allowed_origins,
    )
    .await?;
    audit::record(
        &txn,
        project.organization_id,
        audit::Entry::new(&caller, "key.created", "api_key")
            .target(created.id)
            .details(serde_json::json!({ "projectId": project_id, "prefix": created.prefix, "type": created.key_type })),
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// The project's keys, oldest first, without the keys themselves.
#[utoipa::path(
    get,
    path = "/v1/projects/{project_id}/api-keys",
    tag = "management",
    params(("project_id" = Uuid, Path, description = "The project's id")),
    responses((status = 200, description = "The keys", body = Vec<ApiKeyOut>), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_api_keys(
    caller: Caller,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<axum::Json<Vec<ApiKeyOut>>> {
    caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let db = state.db().shared();
    let keys = api_keys::Entity::find()
        .filter(api_keys::Column::ProjectId.eq(project_id))
        .order_by_asc(api_keys::Column::CreatedAt)
        .order_by_asc(api_keys::Column::Id)
        .all(db)
        .await?;
    Ok(axum::Json(keys.into_iter().map(Into::into).collect()))
}

/// Revokes the key. Repeating it is harmless and keeps the first revocation time. Answers once no
/// gateway accepts the key any more; `revokedAt` is that instant.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project_id}/api-keys/{key_id}",
    tag = "management",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("key_id" = Uuid, Path, description = "The key's id"),
    ),
    responses((status = 204, description = "Revoked (also when it already was): from now on every gateway refuses the key"), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["keys:write"]))
)]
pub(crate) async fn revoke_api_key(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let (project, _) = caller
        .authorize_project(&state, project_id, Permission::KeysWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    let key = find_key(&txn, project_id, key_id).await?;
    // First the latest instant the revocation can take to hold everywhere: from it on, no lookup
    // finds the key, and the worker refuses events received after it.
    let provisional = state.provisional_effect();
    let revoked_at = gamify_db::key_changes::revoke_key_in(&txn, key_id, provisional)
        .await?
        .ok_or_else(|| Error::not_found("api key"))?;
    if key.revoked_at.is_none() {
        audit::record(
            &txn,
            project.organization_id,
            audit::Entry::new(&caller, "key.revoked", "api_key")
                .target(key_id)
                .details(serde_json::json!({ "projectId": project_id, "prefix": key.prefix })),
        )
        .await?;
    }
    txn.commit().await?;
    // Also on a repeat: a caller retrying a revoke must be able to rely on every gateway refusing
    // the key once it answers.
    let effective = state
        .settle_key_change(&[key.key_hash], Change::Revoked, revoked_at)
        .await;
    if effective < revoked_at {
        // Every gateway confirmed sooner: that is when the key stopped being accepted.
        state
            .db()
            .bring_revocation_forward(key_id, effective)
            .await?;
    }
    if key.revoked_at.is_none() {
        tracing::info!(project_id = %project_id, key_id = %key_id, revoked_at = %effective.min(revoked_at), "api key revoked");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new key of the same name and type and lets the old one expire after the overlap.
#[utoipa::path(
    post,
    path = "/v1/projects/{project_id}/api-keys/{key_id}/roll",
    tag = "management",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("key_id" = Uuid, Path, description = "The key's id"),
    ),
    request_body(content = RollApiKey, description = "Optional: without a body (and Content-Type) the old key ends now", content_type = "application/json"),
    responses((status = 201, description = "The new key, in full", body = CreatedApiKeyOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["keys:write"]))
)]
pub(crate) async fn roll_api_key(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, key_id)): Path<(Uuid, Uuid)>,
    body: std::result::Result<Option<axum::Json<RollApiKey>>, JsonRejection>,
) -> Result<(StatusCode, axum::Json<CreatedApiKeyOut>)> {
    // The body is optional: without a Content-Type there is none.
    let body = body?.map(|axum::Json(body)| body).unwrap_or_default();
    if body.expires_in_seconds > MAX_ROLL_EXPIRY_SECONDS {
        return Err(Error::invalid_field(
            "expiresInSeconds",
            format_args!("must be at most {MAX_ROLL_EXPIRY_SECONDS}"),
        ));
    }
    let (project, _) = caller
        .authorize_project(&state, project_id, Permission::KeysWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    let old = find_key(&txn, project_id, key_id).await?;
    if old.revoked_at.is_some() {
        return Err(Error::Conflict("a revoked key cannot be rolled".to_owned()));
    }
    let now = state.now();
    if old.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::Conflict(
            "an expired key cannot be rolled".to_owned(),
        ));
    }
    let key_type = KeyType::from_name(&old.key_type)
        .ok_or_else(|| Error::invalid("the stored key has an unknown type"))?;
    let seconds = i64::try_from(body.expires_in_seconds).unwrap_or(i64::MAX);
    let requested = now + chrono::Duration::seconds(seconds);
    // An expiry sooner than every gateway can learn of it is written as the latest instant that
    // can take, and brought forward once they confirmed. A roll never extends a key that already
    // expires sooner: every gateway knows that expiry already.
    let known_everywhere_by = state.provisional_effect();
    let cap = |at: DateTime<Utc>| old.expires_at.map_or(at, |e| e.min(at));
    let provisional = cap(requested.max(known_everywhere_by));
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::ExpiresAt, Expr::value(provisional))
        .filter(api_keys::Column::Id.eq(key_id))
        .exec(&txn)
        .await?;
    let origins: Vec<String> = serde_json::from_value(old.allowed_origins).unwrap_or_default();
    let created = insert_key(
        &txn,
        state.key_voucher(),
        project_id,
        old.name,
        key_type,
        &origins,
    )
    .await?;
    audit::record(
        &txn,
        project.organization_id,
        audit::Entry::new(&caller, "key.rolled", "api_key")
            .target(key_id)
            .details(serde_json::json!({ "projectId": project_id, "newKeyId": created.id, "expiresInSeconds": body.expires_in_seconds })),
    )
    .await?;
    txn.commit().await?;
    let hashes = [old.key_hash];
    let expires_at = if requested < provisional {
        let known = state
            .settle_key_change(&hashes, Change::Updated, provisional)
            .await;
        let effective = cap(requested.max(known));
        if effective < provisional {
            state.db().bring_expiry_forward(key_id, effective).await?;
        }
        effective
    } else {
        // Far enough ahead for every gateway to learn of it before it arrives.
        state.refresh_keys(&hashes).await;
        provisional
    };
    tracing::info!(project_id = %project_id, key_id = %key_id, new_key_id = %created.id, %expires_at, "api key rolled");
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Sets the browser origins of a publishable key.
#[utoipa::path(
    patch,
    path = "/v1/projects/{project_id}/api-keys/{key_id}",
    tag = "management",
    params(
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("key_id" = Uuid, Path, description = "The key's id"),
    ),
    request_body = UpdateApiKey,
    responses((status = 200, description = "The key, as listed", body = ApiKeyOut), crate::http::schemas::UpdateErrors),
    security(("adminToken" = []), ("session" = ["developer"]), ("orgToken" = ["keys:write"]))
)]
pub(crate) async fn update_api_key(
    caller: Caller,
    State(state): State<AppState>,
    Path((project_id, key_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateApiKey>,
) -> Result<axum::Json<ApiKeyOut>> {
    let (project, _) = caller
        .authorize_project(&state, project_id, Permission::KeysWrite)
        .await?;
    let txn = state.db().shared().begin().await?;
    let key = find_key(&txn, project_id, key_id).await?;
    let key_type = KeyType::from_name(&key.key_type)
        .ok_or_else(|| Error::invalid("the stored key has an unknown type"))?;
    let origins = normalize_origins(key_type, body.allowed_origins)?;
    let mut active: api_keys::ActiveModel = key.into();
    active.allowed_origins = Set(serde_json::json!(origins));
    let key = active.update(&txn).await?;
    audit::record(
        &txn,
        project.organization_id,
        audit::Entry::new(&caller, "key.updated", "api_key")
            .target(key_id)
            .details(serde_json::json!({ "projectId": project_id, "allowedOrigins": origins })),
    )
    .await?;
    txn.commit().await?;
    // A narrower list must hold on every gateway once this answers, as a revocation does.
    let provisional = state.provisional_effect();
    state
        .settle_key_change(
            std::slice::from_ref(&key.key_hash),
            Change::Updated,
            provisional,
        )
        .await;
    tracing::info!(project_id = %project_id, key_id = %key_id, origins = origins.len(), "api key origins updated");
    Ok(axum::Json(key.into()))
}

/// Origins are `scheme://host[:port]` exactly as browsers send them in the Origin header.
fn normalize_origins(key_type: KeyType, origins: Vec<String>) -> Result<Vec<String>> {
    if origins.is_empty() {
        return Ok(origins);
    }
    if key_type != KeyType::Publishable {
        return Err(Error::invalid_field(
            "allowedOrigins",
            "applies to publishable keys only",
        ));
    }
    if origins.len() > MAX_ALLOWED_ORIGINS {
        return Err(Error::invalid_field(
            "allowedOrigins",
            format_args!("must hold at most {MAX_ALLOWED_ORIGINS} origins"),
        ));
    }
    let mut normalized: Vec<String> = Vec::with_capacity(origins.len());
    for (index, origin) in origins.iter().enumerate() {
        let field = format!("allowedOrigins[{index}]");
        let url = url::Url::parse(origin.trim_end_matches('/')).map_err(|_| {
            Error::invalid_field(&field, "is not a URL origin like https://shop.example")
        })?;
        let serialized = url.origin().ascii_serialization();
        let plain = matches!(url.scheme(), "http" | "https")
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && serialized == origin.trim_end_matches('/').to_ascii_lowercase();
        if !plain {
            return Err(Error::invalid_field(
                &field,
                "must be scheme://host[:port] with no path, e.g. https://shop.example",
            ));
        }
        if !normalized.contains(&serialized) {
            normalized.push(serialized);
        }
    }
    Ok(normalized)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key, update_api_key))
        .routes(routes!(roll_api_key))
}
