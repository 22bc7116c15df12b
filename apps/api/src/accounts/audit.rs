//! The organization's audit log: appended in the same transaction as the change it records (so a
//! change that rolls back leaves no entry, and none commits without one), read newest first.

use std::net::IpAddr;

use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use gamify_db::{
    AccountScope,
    sea_orm::{ConnectionTrait, DatabaseTransaction, Statement},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{
        caller::{Actor, Caller},
        roles::Permission,
    },
    http::{
        error::{Error, Result},
        extract::Path,
    },
    state::AppState,
};

const PAGE_SIZE: u64 = 50;

/// One change to record: `action` such as `key.created`; `target` the kind and id of what
/// changed; `details` anything else worth keeping — never a secret.
#[derive(Debug)]
pub struct Entry<'a> {
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub details: Value,
    pub actor: &'a Actor,
    pub ip: Option<IpAddr>,
}

impl<'a> Entry<'a> {
    pub fn new(caller: &'a Caller, action: &'static str, target_type: &'static str) -> Self {
        Self {
            action,
            target_type,
            target_id: None,
            details: Value::Object(Default::default()),
            actor: &caller.actor,
            ip: caller.ip,
        }
    }

    pub fn target(mut self, id: impl ToString) -> Self {
        self.target_id = Some(id.to_string());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Appends `entry` to `organization_id`'s log inside `txn`, scoping the transaction to that
/// organization's account rows as it does.
pub async fn record(
    txn: &DatabaseTransaction,
    organization_id: Uuid,
    entry: Entry<'_>,
) -> Result<()> {
    let (actor_type, actor_id, actor_label) = entry.actor.audit_identity();
    record_as(
        txn,
        organization_id,
        (actor_type, actor_id, actor_label),
        entry,
    )
    .await
}

const INSERT: &str = "WITH scope AS (SELECT set_config('app.organization_id', $2::text, true)) \
     INSERT INTO audit_log (id, organization_id, actor_type, actor_id, actor_label, action, \
                            target_type, target_id, details, ip) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::inet FROM scope";

/// [`record`] inside a plain sqlx transaction (the routes that write tenant tables in bulk).
pub async fn record_in(
    txn: &mut gamify_db::sea_orm::sqlx::PgConnection,
    organization_id: Uuid,
    entry: Entry<'_>,
) -> Result<()> {
    let (actor_type, actor_id, actor_label) = entry.actor.audit_identity();
    gamify_db::sea_orm::sqlx::query(INSERT)
        .bind(Uuid::now_v7())
        .bind(organization_id)
        .bind(actor_type)
        .bind(actor_id)
        .bind(actor_label)
        .bind(entry.action)
        .bind(entry.target_type)
        .bind(entry.target_id)
        .bind(entry.details)
        .bind(entry.ip.map(|ip| ip.to_string()))
        .execute(txn)
        .await
        .map_err(|error| {
            gamify_db::Error::from(gamify_db::sea_orm::DbErr::Exec(
                gamify_db::sea_orm::RuntimeErr::SqlxError(error),
            ))
        })?;
    Ok(())
}

/// [`record`] with an explicit actor (sign-in failures have no authenticated one).
pub async fn record_as(
    txn: &DatabaseTransaction,
    organization_id: Uuid,
    (actor_type, actor_id, actor_label): (&str, Option<Uuid>, String),
    entry: Entry<'_>,
) -> Result<()> {
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        INSERT,
        [
            Uuid::now_v7().into(),
            organization_id.into(),
            actor_type.into(),
            actor_id.into(),
            actor_label.into(),
            entry.action.into(),
            entry.target_type.into(),
            entry.target_id.into(),
            entry.details.into(),
            entry.ip.map(|ip| ip.to_string()).into(),
        ],
    ))
    .await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `nextCursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditActor {
    /// `user`, `token`, `operator` or `anonymous` (a failed sign-in).
    #[serde(rename = "type")]
    pub(crate) actor_type: String,
    pub(crate) id: Option<Uuid>,
    /// The user's email, the token's prefix, or `operator`.
    pub(crate) label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTarget {
    #[serde(rename = "type")]
    pub(crate) target_type: String,
    pub(crate) id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryOut {
    pub(crate) id: Uuid,
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: AuditActor,
    /// e.g. `key.created`, `member.role_changed`, `rules.published`.
    pub(crate) action: String,
    pub(crate) target: AuditTarget,
    #[schema(value_type = Object)]
    pub(crate) details: Value,
    pub(crate) ip: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub(crate) data: Vec<AuditEntryOut>,
    pub(crate) next_cursor: Option<String>,
}

fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let invalid = || Error::invalid_field("cursor", "is not a cursor this API returned");
    let (at, id) = cursor.split_once('_').ok_or_else(invalid)?;
    let micros: i64 = at.parse().map_err(|_| invalid())?;
    Ok((
        DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id.parse().map_err(|_| invalid())?,
    ))
}

/// The organization's audit log, newest first. Admins and owners, tokens with `audit:read`.
#[utoipa::path(
    get,
    path = "/v1/organizations/{organization_id}/audit-log",
    tag = "accounts",
    params(("organization_id" = Uuid, Path), AuditQuery),
    responses((status = 200, body = AuditPage), crate::http::schemas::ListErrors),
    security(("adminToken" = []), ("session" = ["admin"]), ("orgToken" = ["audit:read"]))
)]
pub(crate) async fn list_audit_log(
    caller: Caller,
    State(state): State<AppState>,
    Path(organization_id): Path<Uuid>,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>> {
    caller
        .authorize(&state, organization_id, Permission::AuditRead)
        .await?;
    let after = query
        .cursor
        .as_deref()
        .filter(|cursor| !cursor.is_empty())
        .map(parse_cursor)
        .transpose()?;
    let (at, id) = after.unzip();
    let rows = state
        .db()
        .accounts_rows(
            &AccountScope::organization(organization_id),
            "SELECT id, at, actor_type, actor_id, actor_label, action, target_type, target_id, \
                    details, host(ip) AS ip \
             FROM audit_log WHERE organization_id = $1 \
               AND ($2::timestamptz IS NULL OR (at, id) < ($2, $3)) \
             ORDER BY at DESC, id DESC LIMIT $4",
            [
                organization_id.into(),
                at.into(),
                id.into(),
                (PAGE_SIZE as i64 + 1).into(),
            ]
            .into(),
        )
        .await?;
    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        let get = |column: &str| row.try_get::<Option<String>>("", column);
        let entry = (|| -> Result<AuditEntryOut, gamify_db::sea_orm::DbErr> {
            Ok(AuditEntryOut {
                id: row.try_get("", "id")?,
                at: row.try_get("", "at")?,
                actor: AuditActor {
                    actor_type: row.try_get("", "actor_type")?,
                    id: row.try_get("", "actor_id")?,
                    label: row.try_get("", "actor_label")?,
                },
                action: row.try_get("", "action")?,
                target: AuditTarget {
                    target_type: row.try_get("", "target_type")?,
                    id: get("target_id")?,
                },
                details: row.try_get("", "details")?,
                ip: get("ip")?,
            })
        })()?;
        data.push(entry);
    }
    let next_cursor = if data.len() > PAGE_SIZE as usize {
        data.truncate(PAGE_SIZE as usize);
        data.last()
            .map(|last| format!("{}_{}", last.at.timestamp_micros(), last.id))
    } else {
        None
    };
    Ok(axum::Json(AuditPage { data, next_cursor }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_log))
}
