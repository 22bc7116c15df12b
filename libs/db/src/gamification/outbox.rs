//! The webhook outbox: a delivery per subscribed endpoint and award, written in the transaction
//! that made the award, so a webhook exists exactly when its award does. The dispatcher
//! (`webhooks`) sends them later, retrying under the same `webhook-id`.

use chrono::{DateTime, Utc};
use gamify_rules::{Award, StreakChange};
use sea_orm::{DbErr, sqlx};
use serde_json::{Value, json};
use uuid::Uuid;

use super::db_err;

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

/// Every webhook event type, as endpoints subscribe to them.
pub const EVENT_TYPES: &[&str] = &[
    "achievement.unlocked",
    "points.changed",
    "level.changed",
    "streak.extended",
    "streak.broken",
];

/// An award to announce. Its body is built only for the endpoints subscribed to its type, so a
/// project without webhooks pays nothing for them.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub user_id: String,
    pub event_id: Option<Uuid>,
    pub award: Award,
    pub at: DateTime<Utc>,
}

/// A live webhook endpoint of the project and the event types it subscribes to.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Endpoint {
    pub id: Uuid,
    pub events: Vec<String>,
}

impl Endpoint {
    fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|event| event == event_type)
    }
}

/// The project's live endpoints as a JSON array `[{id, events}]`: a subquery other statements
/// embed (with `$1` the project), so reading them costs no round trip of its own.
pub const ENDPOINTS_JSON: &str =
    "(SELECT coalesce(json_agg(json_build_object('id', id, 'events', events)), '[]')
      FROM webhook_endpoints WHERE project_id = $1 AND deleted_at IS NULL)";

/// The project's live endpoints, on their own (where no other statement carries them).
pub async fn endpoints(txn: &mut Txn, project_id: Uuid) -> Result<Vec<Endpoint>, DbErr> {
    let sqlx::types::Json(endpoints) = sqlx::query_scalar(&format!("SELECT {ENDPOINTS_JSON}"))
        .bind(project_id)
        .fetch_one(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(endpoints)
}

/// The webhook event type of an award.
pub fn event_type(award: &Award) -> &'static str {
    match award {
        Award::Achievement { .. } => "achievement.unlocked",
        Award::Points { .. } => "points.changed",
        Award::Level { .. } => "level.changed",
        Award::Streak {
            change: StreakChange::Broken,
            ..
        } => "streak.broken",
        Award::Streak { .. } => "streak.extended",
    }
}

/// The Standard Webhooks body: `{type, timestamp, data: {projectId, userId, eventId, …the award}}`.
pub fn payload(project_id: Uuid, delivery: &Delivery) -> Value {
    let event_type = event_type(&delivery.award);
    let mut data = serde_json::Map::new();
    data.insert("projectId".into(), json!(project_id));
    data.insert("userId".into(), json!(delivery.user_id));
    data.insert("eventId".into(), json!(delivery.event_id));
    if let Ok(Value::Object(fields)) = serde_json::to_value(&delivery.award) {
        for (name, value) in fields {
            if name != "type" {
                data.insert(name, value);
            }
        }
    }
    json!({
        "type": event_type,
        "timestamp": delivery.at,
        "data": Value::Object(data),
    })
}

/// Writes a delivery for every endpoint (as read in this transaction) subscribed to each one's type.
pub async fn write(
    txn: &mut Txn,
    project_id: Uuid,
    endpoints: &[Endpoint],
    deliveries: &[Delivery],
) -> Result<(), DbErr> {
    if deliveries.is_empty() || endpoints.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut endpoint_ids = Vec::new();
    let mut types = Vec::new();
    let mut payloads = Vec::new();
    for delivery in deliveries {
        let event_type = event_type(&delivery.award);
        let mut body = None;
        for endpoint in endpoints
            .iter()
            .filter(|endpoint| endpoint.wants(event_type))
        {
            ids.push(format!("msg_{}", Uuid::now_v7().simple()));
            endpoint_ids.push(endpoint.id);
            types.push(event_type);
            payloads.push(
                body.get_or_insert_with(|| payload(project_id, delivery))
                    .clone(),
            );
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (project_id, id, endpoint_id, event_type, payload)
         SELECT $1, r.id, r.endpoint_id, r.event_type, r.payload
         FROM UNNEST($2::text[], $3::uuid[], $4::text[], $5::jsonb[]) AS r(id, endpoint_id, event_type, payload)",
    )
    .bind(project_id)
    .bind(&ids)
    .bind(&endpoint_ids)
    .bind(&types)
    .bind(&payloads)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO webhook_queue (project_id, delivery_id, due_at)
         SELECT $1, id, now() FROM UNNEST($2::text[]) AS id",
    )
    .bind(project_id)
    .bind(&ids)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    Ok(())
}
