//! The engine's dedup claim against a concurrent claimant: a messageId that another transaction
//! takes while a share is being evaluated is found held, never evaluated twice.

use std::{sync::Arc, time::Duration};

use gamify_common::{Envelope, KeyType, ingest::Kind};
use gamify_db::{gamification::rule_sets::RuleSets, sea_orm::sqlx};
use gamify_engine::evaluate::{DUPLICATE_OF, Evaluate};
use gamify_worker::{
    persist::{Item, Status},
    stage::Stage,
};
use uuid::Uuid;

use crate::harness::{Stack, shop_rules};

fn purchase(project_id: Uuid, message_id: &str) -> Item {
    let now = chrono::Utc::now();
    Item {
        envelope: Arc::new(Envelope {
            v: 1,
            id: Uuid::now_v7(),
            message_id: message_id.to_owned(),
            project_id,
            key_id: Uuid::nil(),
            key_type: KeyType::Secret,
            trusted_events_version: Some(1),
            kind: Kind::Track,
            event: "purchase".into(),
            user_id: Some("ada".into()),
            anonymous_id: None,
            properties: Some(serde_json::from_value(serde_json::json!({ "amount": 500 })).unwrap()),
            traits: None,
            occurred_at: now,
            received_at: now,
            context: Default::default(),
        }),
        status: Status::Processed,
        key_type: KeyType::Secret,
    }
}

#[tokio::test]
async fn a_message_id_claimed_by_a_concurrent_transaction_is_found_held() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;
    let message_id = format!("race-{}", Uuid::new_v4());
    let holder = Uuid::now_v7();

    // Another claimant takes the messageId and has not committed yet.
    let mut other = stack.db.tenant_bulk(project.id).await.unwrap();
    sqlx::query(
        "INSERT INTO engine_message_ids (project_id, key_type, message_id, event_id)
         VALUES ($1, 'secret', $2, $3)",
    )
    .bind(project.id)
    .bind(&message_id)
    .bind(holder)
    .execute(&mut *other)
    .await
    .unwrap();

    let item = purchase(project.id, &message_id);
    let event_id = item.envelope.id;
    let db = stack.db.clone();
    let evaluation = tokio::spawn(async move {
        let engine = Evaluate {
            rule_sets: RuleSets::default(),
        };
        engine.apply(&db, project.id, &[&item]).await
    });

    // The share's claim waits on the other claimant's key before that one commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO engine_message_ids%'
               AND query LIKE '%UNNEST%'",
        )
        .fetch_one(stack.db.shared().get_postgres_connection_pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the claim never waited on the other"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.commit().await.unwrap();

    let outcome = evaluation.await.unwrap().unwrap();
    assert_eq!((outcome.processed, outcome.failed), (0, 1), "{outcome:?}");
    let mut txn = stack.db.tenant_bulk(project.id).await.unwrap();
    let (status, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT status, reason FROM engine_outcomes WHERE project_id = $1 AND event_id = $2",
    )
    .bind(project.id)
    .bind(event_id)
    .fetch_one(&mut *txn)
    .await
    .unwrap();
    assert_eq!(status, "not_counted");
    assert_eq!(
        reason.as_deref(),
        Some(format!("{DUPLICATE_OF}{holder}").as_str())
    );
    let ledger: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM points_ledger WHERE project_id = $1 AND event_id = $2",
    )
    .bind(project.id)
    .bind(event_id)
    .fetch_one(&mut *txn)
    .await
    .unwrap();
    assert_eq!(ledger, 0, "a duplicate earns nothing");
}
