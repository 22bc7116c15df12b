//! The points ledger (`GET /v1/users/{userId}/points/{key}/ledger`), manual adjustments
//! (`POST …/adjustments`, idempotent with `Idempotency-Key`) and user tokens
//! (`POST /v1/users/{userId}/tokens`). The ledger is append-only and a balance is its sum; an
//! adjustment is kept by every rule version, replays included.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use gamify_db::{
    gamification::{
        changes::{self, Changes},
        outbox::Delivery,
        project_lock,
    },
    sea_orm::sqlx,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{Reader, user_tokens};
use crate::{
    http::{
        error::{Error, Result},
        extract::{Json, Path, Query},
    },
    read::SecretKey,
    state::AppState,
};

const PAGE: i64 = 100;

/// id, seq, amount, reason, event id, created at.
type LedgerRow = (Uuid, i64, i64, String, Option<Uuid>, DateTime<Utc>);
/// id, amount, reason, balance after, created at.
type AdjustmentRow = (Uuid, i64, String, Option<i64>, DateTime<Utc>);
const MAX_REASON_CHARS: usize = 200;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
const MAX_AMOUNT: i64 = 1_000_000_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// A `nextCursor` from the previous page.
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryOut {
    pub(crate) id: Uuid,
    pub(crate) amount: i64,
    pub(crate) reason: String,
    /// The event that earned it; null for an adjustment.
    pub(crate) event_id: Option<Uuid>,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPage {
    pub(crate) data: Vec<LedgerEntryOut>,
    pub(crate) next_cursor: Option<String>,
}

/// A user's points ledger in one points system, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/points/{key}/ledger",
    tag = "gamification",
    params(
        ("user_id" = String, Path, description = "The end user's userId"),
        ("key" = String, Path, description = "The points system's key"),
        LedgerQuery
    ),
    responses((status = 200, description = "One page of the ledger", body = LedgerPage), crate::http::schemas::GamificationReadErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn get_ledger(
    State(state): State<AppState>,
    reader: Reader,
    Path((user_id, key)): Path<(String, String)>,
    Query(query): Query<LedgerQuery>,
) -> Result<axum::Json<LedgerPage>> {
    reader.may_read_user(&user_id)?;
    let project_id = reader.project_id();
    let before = match query.cursor.as_deref() {
        Some(raw) => Some(
            raw.parse::<i64>()
                .map_err(|_| Error::invalid_field("cursor", "is not a cursor this API returned"))?,
        ),
        None => None,
    };
    let mut txn = state
        .db()
        .tenant_bulk(project_id)
        .await
        .map_err(Error::from)?;
    let version = state
        .rule_sets()
        .active(&mut txn, project_id)
        .await?
        .map_or(0, |active| active.generation);
    let rows: Vec<LedgerRow> = sqlx::query_as(
        "SELECT id, seq, amount, reason, event_id, created_at FROM points_ledger
         WHERE project_id = $1 AND user_id = $2 AND points_key = $3
           AND (generation = $4 OR generation IS NULL)
           AND ($5::bigint IS NULL OR seq < $5)
         ORDER BY seq DESC, id DESC LIMIT $6",
    )
    .bind(project_id)
    .bind(&user_id)
    .bind(&key)
    .bind(version)
    .bind(before)
    .bind(PAGE + 1)
    .fetch_all(&mut *txn)
    .await
    .map_err(Error::from)?;
    txn.commit().await.map_err(Error::from)?;
    // One event's entries share its sequence number: a page never ends inside them.
    let mut data: Vec<(i64, LedgerEntryOut)> = rows
        .into_iter()
        .map(|(id, seq, amount, reason, event_id, created_at)| {
            (
                seq,
                LedgerEntryOut {
                    id,
                    amount,
                    reason,
                    event_id,
                    created_at,
                },
            )
        })
        .collect();
    let next_cursor = if data.len() as i64 > PAGE {
        let last_seq = data[PAGE as usize].0;
        data.retain(|(seq, _)| *seq > last_seq);
        data.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    Ok(axum::Json(LedgerPage {
        data: data.into_iter().map(|(_, entry)| entry).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Adjustment {
    /// Non-zero, at most 1,000,000,000 either way.
    pub(crate) amount: i64,
    /// 1–200 characters.
    pub(crate) reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentOut {
    pub(crate) id: Uuid,
    pub(crate) amount: i64,
    pub(crate) reason: String,
    /// The balance right after this adjustment.
    pub(crate) balance: i64,
    pub(crate) created_at: DateTime<Utc>,
}

/// Adds or removes points by hand. With an `Idempotency-Key` header, a repeat returns the first
/// result and changes nothing.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/points/{key}/adjustments",
    tag = "gamification",
    params(
        ("user_id" = String, Path, description = "The end user's userId"),
        ("key" = String, Path, description = "The points system's key"),
        ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 characters; a repeat returns the first result"),
    ),
    request_body = Adjustment,
    responses((status = 201, description = "The adjustment", body = AdjustmentOut), crate::http::schemas::GamificationWriteErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn post_adjustment(
    State(state): State<AppState>,
    SecretKey(key_record): SecretKey,
    Path((user_id, points_key)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Adjustment>,
) -> Result<(StatusCode, axum::Json<AdjustmentOut>)> {
    // unsigned_abs: i64::MIN has no positive counterpart (abs() would overflow).
    if body.amount == 0 || body.amount.unsigned_abs() > MAX_AMOUNT.unsigned_abs() {
        return Err(Error::invalid_field(
            "amount",
            "must be non-zero and at most 1000000000 either way",
        ));
    }
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS || reason.contains('\0') {
        return Err(Error::invalid_field("reason", "must be 1-200 characters"));
    }
    crate::http::validate::validate_name("userId", &user_id)?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => {
            let value = value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= MAX_IDEMPOTENCY_KEY_CHARS)
                .ok_or_else(|| {
                    Error::invalid_field(
                        "Idempotency-Key",
                        "must be 1-255 visible ASCII characters",
                    )
                })?;
            Some(value.to_owned())
        }
        None => None,
    };
    let project_id = key_record.project_id;
    let mut txn = state
        .db()
        .tenant_bulk_sharing(project_id, project_lock(project_id))
        .await
        .map_err(Error::from)?;
    if let Some(found) = previous(
        &mut txn,
        project_id,
        &user_id,
        &points_key,
        idempotency_key.as_deref(),
    )
    .await?
    {
        txn.commit().await.map_err(Error::from)?;
        return Ok((StatusCode::CREATED, axum::Json(found)));
    }
    let start = state.rule_sets().start(&mut txn, project_id, 1).await?;
    let active = start
        .active
        .filter(|active| {
            active
                .rules
                .document()
                .points
                .iter()
                .any(|system| system.key == points_key)
        })
        .ok_or_else(|| Error::not_found("points system"))?;
    let mut states =
        changes::lock_states(&mut txn, project_id, active.generation, &[user_id.as_str()]).await?;
    let seq = *start.seqs.first().ok_or_else(|| {
        gamify_db::sea_orm::DbErr::Custom("the engine sequence gave no number".into())
    })?;
    // Postgres keeps microseconds: the first answer must be the one a repeat reads back.
    let now = chrono::SubsecRound::trunc_subsecs(state.now(), 6);
    let user_state = states.entry(user_id.clone()).or_default();
    let mut evaluation = gamify_rules::adjust(
        &active.rules,
        user_state,
        &points_key,
        body.amount,
        reason,
        now,
    );
    let balance = user_state
        .points
        .get(&points_key)
        .map_or(0, |points| points.balance);
    // The adjustment's own row belongs to no rule version: every version, replays included,
    // keeps it.
    evaluation.ledger.clear();
    let mut changes = Changes::new(active.version, active.generation);
    changes.record(&user_id, seq, None, &evaluation);
    changes
        .states
        .insert(user_id.clone(), (user_state.clone(), seq));
    changes
        .deliveries
        .extend(evaluation.awards.iter().map(|award| Delivery {
            user_id: user_id.clone(),
            event_id: None,
            award: award.clone(),
            at: now,
        }));
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO points_ledger (project_id, id, seq, generation, user_id, points_key, amount,
                                    reason, idempotency_key, balance_after, created_at)
         VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (project_id, user_id, points_key, idempotency_key)
             WHERE idempotency_key IS NOT NULL DO NOTHING",
    )
    .bind(project_id)
    .bind(id)
    .bind(seq)
    .bind(&user_id)
    .bind(&points_key)
    .bind(body.amount)
    .bind(reason)
    .bind(idempotency_key.as_deref())
    .bind(balance)
    .bind(now)
    .execute(&mut *txn)
    .await
    .map_err(Error::from)?;
    if inserted.rows_affected() == 0 {
        // A concurrent request with the same key won: answer with its result.
        drop(txn);
        let mut txn = state
            .db()
            .tenant_bulk(project_id)
            .await
            .map_err(Error::from)?;
        let found = previous(
            &mut txn,
            project_id,
            &user_id,
            &points_key,
            idempotency_key.as_deref(),
        )
        .await?
        .ok_or_else(|| Error::Conflict("the adjustment is being made; retry".into()))?;
        txn.commit().await.map_err(Error::from)?;
        return Ok((StatusCode::CREATED, axum::Json(found)));
    }
    changes
        .write(&mut txn, project_id, &start.endpoints)
        .await?;
    txn.commit().await.map_err(Error::from)?;
    tracing::info!(%project_id, points_key = %points_key, amount = body.amount, "points adjusted");
    Ok((
        StatusCode::CREATED,
        axum::Json(AdjustmentOut {
            id,
            amount: body.amount,
            reason: reason.to_owned(),
            balance,
            created_at: now,
        }),
    ))
}

pub(crate) async fn previous(
    txn: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    project_id: Uuid,
    user_id: &str,
    points_key: &str,
    idempotency_key: Option<&str>,
) -> Result<Option<AdjustmentOut>> {
    let Some(idempotency_key) = idempotency_key else {
        return Ok(None);
    };
    let row: Option<AdjustmentRow> = sqlx::query_as(
        "SELECT id, amount, reason, balance_after, created_at FROM points_ledger
         WHERE project_id = $1 AND user_id = $2 AND points_key = $3 AND idempotency_key = $4",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(points_key)
    .bind(idempotency_key)
    .fetch_optional(&mut **txn)
    .await
    .map_err(Error::from)?;
    Ok(
        row.map(|(id, amount, reason, balance, created_at)| AdjustmentOut {
            id,
            amount,
            reason,
            balance: balance.unwrap_or_default(),
            created_at,
        }),
    )
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserToken {
    /// 60–86400, default 3600.
    pub(crate) ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserTokenOut {
    /// `ut_…`: send as `Authorization: Bearer`.
    pub(crate) token: String,
    pub(crate) expires_at: DateTime<Utc>,
}

/// A short-lived token that reads only this user's progress, ledger and outcomes, and the
/// project's leaderboards: for a browser to show a user their own progress.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/tokens",
    tag = "gamification",
    params(("user_id" = String, Path, description = "The end user's userId")),
    request_body(content = Option<CreateUserToken>, description = "Optional: none, `{}` or `{ttlSeconds}`"),
    responses((status = 201, description = "The token", body = UserTokenOut), crate::http::schemas::GamificationWriteErrors),
    security(("apiKey" = []), ("apiKeyBearer" = []))
)]
pub(crate) async fn post_user_token(
    State(state): State<AppState>,
    SecretKey(key_record): SecretKey,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<UserTokenOut>)> {
    crate::http::validate::validate_name("userId", &user_id)?;
    // The body is optional: none, `{}` or `{ttlSeconds}`.
    let body: CreateUserToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateUserToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| Error::invalid(format!("invalid JSON body: {err}")))?
    };
    let ttl = body.ttl_seconds.unwrap_or(user_tokens::DEFAULT_TTL_SECONDS);
    if !(user_tokens::MIN_TTL_SECONDS..=user_tokens::MAX_TTL_SECONDS).contains(&ttl) {
        return Err(Error::invalid_field(
            "ttlSeconds",
            "must be between 60 and 86400",
        ));
    }
    let expires_at = state.now() + chrono::Duration::seconds(ttl);
    let token = state.user_tokens().mint(&user_tokens::Claims {
        project_id: key_record.project_id,
        user_id,
        expires: expires_at.timestamp(),
    });
    Ok((
        StatusCode::CREATED,
        axum::Json(UserTokenOut { token, expires_at }),
    ))
}

/// Read by browsers too (with a user token).
pub fn ledger_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_ledger))
}

/// Server-only (secret key): no CORS.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_adjustment))
        .routes(routes!(post_user_token))
}
