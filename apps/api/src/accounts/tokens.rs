//! Organization management tokens `gmt_…`: scoped, stored as SHA-256 hashes, shown once. Who may
//! call: creating and revoking take `TokensWrite`, which only people hold (admins and owners): a
//! token never mints or revokes tokens. Listing takes `Read`.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use gamify_db::{
    AccountScope,
    sea_orm::{ConnectionTrait, Statement},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{
        audit,
        caller::{Caller, TOKEN_PREFIX, token_hash},
        roles::{Permission, Scope},
        sessions::random_secret,
    },
    http::{
        error::{Error, Result},
        extract::{Json, Path},
        validate::validate_name,
    },
    state::AppState,
};

/// The longest life a token may be given: a year.
const MAX_EXPIRES_IN_SECONDS: u64 = 365 * 24 * 3600;
/// Characters of the token kept to recognise it by (`gmt_` and 8 more).
const DISPLAY_PREFIX_CHARS: usize = 12;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateToken {
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) name: String,
    /// At least one.
    #[schema(min_items = 1)]
    pub(crate) scopes: Vec<Scope>,
    /// Absent: the token does not expire. At most a year.
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub(crate) expires_in_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) scopes: Vec<Scope>,
    /// The token itself, in this response only.
    pub(crate) token: String,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenOut {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub(crate) data: Vec<TokenOut>,
}

/// Creates a management token; the token is in this response only.
#[utoipa::path(
    post,
    path = "/v1/organizations/{organization_id}/tokens",
    tag = "accounts",
    params(("organization_id" = Uuid, Path)),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), crate::http::schemas::CreateErrors),
    security(("adminToken" = []), ("session" = ["admin"]))
)]
pub(crate) async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>)> {
    caller
        .authorize(&state, organization_id, Permission::TokensWrite)
        .await?;
    validate_name("name", &body.name)?;
    if body.scopes.is_empty() {
        return Err(Error::invalid_field(
            "scopes",
            "must name at least one scope",
        ));
    }
    let mut scopes = body.scopes;
    scopes.dedup();
    let expires_at = match body.expires_in_seconds {
        Some(seconds) if seconds == 0 || seconds > MAX_EXPIRES_IN_SECONDS => {
            return Err(Error::invalid_field(
                "expiresInSeconds",
                format_args!("must be between 1 and {MAX_EXPIRES_IN_SECONDS}"),
            ));
        }
        Some(seconds) => Some(state.now() + chrono::Duration::seconds(seconds as i64)),
        None => None,
    };
    let token = random_secret(TOKEN_PREFIX);
    let prefix: String = token.chars().take(DISPLAY_PREFIX_CHARS).collect();
    let id = Uuid::now_v7();
    let txn = state
        .db()
        .accounts(&AccountScope::organization(organization_id))
        .await?;
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO org_tokens (id, organization_id, name, prefix, token_hash, scopes, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            id.into(),
            organization_id.into(),
            body.name.clone().into(),
            prefix.clone().into(),
            token_hash(&token).to_vec().into(),
            scopes
                .iter()
                .map(|scope| scope.as_str().to_owned())
                .collect::<Vec<_>>()
                .into(),
            caller.user().map(|user| user.id).into(),
            expires_at.into(),
        ],
    ))
    .await
    ?;
    audit::record(
        &txn,
        organization_id,
        audit::Entry::new(&caller, "token.created", "token")
            .target(id)
            .details(serde_json::json!({ "prefix": prefix, "scopes": scopes, "name": body.name })),
    )
    .await?;
    txn.commit().await?;
    tracing::info!(organization_id = %organization_id, token_id = %id, prefix = %prefix, "management token created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            id,
            name: body.name,
            prefix,
            scopes,
            token,
            expires_at,
        }),
    ))
}

/// The organization's management tokens, without the tokens themselves.
#[utoipa::path(
    get,
    path = "/v1/organizations/{organization_id}/tokens",
    tag = "accounts",
    params(("organization_id" = Uuid, Path)),
    responses((status = 200, body = TokenList), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn list_tokens(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
) -> Result<axum::Json<TokenList>> {
    caller
        .authorize(&state, organization_id, Permission::Read)
        .await?;
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope::organization(organization_id),
            "SELECT id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at \
             FROM org_tokens WHERE organization_id = $1 ORDER BY created_at, id LIMIT 10000",
            [organization_id.into()].into(),
        )
        .await?;
    let data = rows
        .iter()
        .map(|row| {
            let scopes: Vec<String> = row.try_get("", "scopes")?;
            Ok(TokenOut {
                id: row.try_get("", "id")?,
                name: row.try_get("", "name")?,
                prefix: row.try_get("", "prefix")?,
                scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
                created_at: row.try_get("", "created_at")?,
                last_used_at: row.try_get("", "last_used_at")?,
                expires_at: row.try_get("", "expires_at")?,
                revoked_at: row.try_get("", "revoked_at")?,
            })
        })
        .collect::<Result<Vec<_>, gamify_db::sea_orm::DbErr>>()?;
    Ok(axum::Json(TokenList { data }))
}

/// Revokes a token: refused by every gateway from the moment this answers.
#[utoipa::path(
    delete,
    path = "/v1/organizations/{organization_id}/tokens/{token_id}",
    tag = "accounts",
    params(("organization_id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), crate::http::schemas::ReadErrors),
    security(("adminToken" = []), ("session" = ["admin"]))
)]
pub(crate) async fn revoke_token(
    caller: Caller,
    State(state): State<AppState>,
    Path((organization_id, token_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    caller
        .authorize(&state, organization_id, Permission::TokensWrite)
        .await?;
    let txn = state
        .db()
        .accounts(&AccountScope::organization(organization_id))
        .await?;
    let row = txn
        .query_one(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE org_tokens SET revoked_at = now() \
             WHERE id = $1 AND organization_id = $2 AND revoked_at IS NULL RETURNING prefix",
            [token_id.into(), organization_id.into()],
        ))
        .await?
        .ok_or_else(|| Error::not_found("token"))?;
    let prefix: String = row.try_get("", "prefix")?;
    audit::record(
        &txn,
        organization_id,
        audit::Entry::new(&caller, "token.revoked", "token")
            .target(token_id)
            .details(serde_json::json!({ "prefix": prefix })),
    )
    .await?;
    txn.commit().await?;
    tracing::info!(organization_id = %organization_id, token_id = %token_id, "management token revoked");
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}
