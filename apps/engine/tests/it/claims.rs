//! The engine's plain inserts against a concurrent writer: a messageId that another transaction
//! takes while a share is being evaluated is found held, never evaluated twice; a new user's
//! state that another transaction creates meanwhile is built on, not overwritten or doubled.

use std::sync::Arc;

use gamify_common::{Envelope, KeyType, ingest::Kind};
use gamify_db::{
    gamification::rule_sets::RuleSets,
    sea_orm::{DbErr, sqlx},
};
use gamify_engine::evaluate::{DUPLICATE_OF, Evaluate};
use gamify_worker::{
    persist::{Item, Outcome, Status},
    stage::Stage,
};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::harness::{Stack, backend, shop_rules, wait_until_blocked_by};

fn purchase(project_id: Uuid, message_id: &str, user: &str) -> Item {
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
            user_id: Some(user.into()),
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

/// The engine evaluating `item` as one share, on a task of its own (it may wait on a lock the
/// test holds).
fn evaluate_in_background(
    stack: &Stack,
    project_id: Uuid,
    item: Item,
) -> JoinHandle<Result<Outcome, DbErr>> {
    let db = stack.db.clone();
    tokio::spawn(async move {
        let engine = Evaluate {
            rule_sets: RuleSets::default(),
        };
        engine.apply(&db, project_id, &[&item]).await
    })
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
    let other_pid = backend(&mut other).await;
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

    let item = purchase(project.id, &message_id, "ada");
    let event_id = item.envelope.id;
    let evaluation = evaluate_in_background(&stack, project.id, item);

    // The share's claim waits on the other claimant's key before that one commits.
    wait_until_blocked_by(&stack, other_pid).await;
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

#[tokio::test]
async fn a_new_users_state_created_by_a_concurrent_transaction_is_built_on() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;
    let user = format!("bea-{}", Uuid::new_v4().simple());
    let generation: i32 = {
        let mut txn = stack.db.tenant_bulk(project.id).await.unwrap();
        sqlx::query_scalar(
            "SELECT generation FROM rule_versions WHERE project_id = $1 AND state = 'active'",
        )
        .bind(project.id)
        .fetch_one(&mut *txn)
        .await
        .unwrap()
    };

    // Another transaction gives the user a state (two purchases counted) and has not committed.
    let mut other = stack.db.tenant_bulk(project.id).await.unwrap();
    let other_pid = backend(&mut other).await;
    sqlx::query(
        "INSERT INTO engine_user_states (project_id, generation, user_id, state)
         VALUES ($1, $2, $3, '{\"metrics\": {\"purchases\": 2}}')",
    )
    .bind(project.id)
    .bind(generation)
    .bind(&user)
    .execute(&mut *other)
    .await
    .unwrap();

    let item = purchase(project.id, &format!("m-{}", Uuid::new_v4()), &user);
    let evaluation = evaluate_in_background(&stack, project.id, item);
    wait_until_blocked_by(&stack, other_pid).await;
    other.commit().await.unwrap();

    let outcome = evaluation.await.unwrap().unwrap();
    assert_eq!((outcome.processed, outcome.failed), (1, 0), "{outcome:?}");
    let mut txn = stack.db.tenant_bulk(project.id).await.unwrap();
    let states: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT state FROM engine_user_states WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project.id)
    .bind(&user)
    .fetch_all(&mut *txn)
    .await
    .unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0]["metrics"]["purchases"], 3.0, "{}", states[0]);
}
