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

#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_type: &'static str,
    pub payload: Value,
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
pub fn delivery(
    project_id: Uuid,
    user_id: &str,
    event_id: Option<Uuid>,
    award: &Award,
    at: DateTime<Utc>,
) -> Delivery {
    let event_type = event_type(award);
    let mut data = serde_json::Map::new();
    data.insert("projectId".into(), json!(project_id));
    data.insert("userId".into(), json!(user_id));
    data.insert("eventId".into(), json!(event_id));
    if let Ok(Value::Object(fields)) = serde_json::to_value(award) {
        for (name, value) in fields {
            if name != "type" {
                data.insert(name, value);
            }
        }
    }
    Delivery {
        event_type,
        payload: json!({
            "type": event_type,
            "timestamp": at,
            "data": Value::Object(data),
        }),
    }
}

/// Writes a delivery for every endpoint of the project subscribed to each one's type.
pub async fn write(txn: &mut Txn, project_id: Uuid, deliveries: &[Delivery]) -> Result<(), DbErr> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let endpoints: Vec<(Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT id, events FROM webhook_endpoints WHERE project_id = $1 AND deleted_at IS NULL",
    )
    .bind(project_id)
    .fetch_all(&mut **txn)
    .await
    .map_err(db_err)?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut endpoint_ids = Vec::new();
    let mut types = Vec::new();
    let mut payloads = Vec::new();
    for delivery in deliveries {
        for (endpoint, events) in &endpoints {
            if events.iter().any(|event| event == delivery.event_type) {
                ids.push(format!("msg_{}", Uuid::now_v7().simple()));
                endpoint_ids.push(*endpoint);
                types.push(delivery.event_type);
                payloads.push(delivery.payload.clone());
            }
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
