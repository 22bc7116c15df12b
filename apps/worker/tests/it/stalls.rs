//! A worker stuck on Postgres must never hold up everything for good: its statements time out, an
//! attempt at a batch has a deadline, a stop is honoured within the grace period whatever the
//! batch waits on, and `/healthz` fails while it makes no progress so an orchestrator restarts it.

use std::time::Duration;

use gamify_common::KeyType;
use gamify_db::sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;

use crate::harness::{
    Running, Tenant, Topics, config, connect, database_url, produce_envelopes, var, wait_until,
};

async fn healthz(worker: &Running) -> reqwest::StatusCode {
    reqwest::get(format!("http://{}/healthz", worker.addr))
        .await
        .unwrap()
        .status()
}

/// A table lock held by someone else: the worker's insert waits on it. Statement and batch
/// timeouts are set long here, so only the liveness signal and the shutdown deadline can act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_worker_fails_liveness_and_still_stops_within_its_grace_period() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;
    let mut settings = config(&topics);
    settings.stall_timeout = Duration::from_millis(500);
    settings.shutdown_timeout = Duration::from_secs(1);
    settings.statement_timeout = Duration::from_secs(600);
    settings.batch_timeout = Duration::from_secs(600);
    let worker = Running::start(settings).await;
    wait_until(Duration::from_secs(10), "a healthy idle worker", || async {
        healthz(&worker).await == reqwest::StatusCode::OK
    })
    .await;

    let owner = connect(&var("DATABASE_OWNER_URL")).await;
    let lock = owner.shared().begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE event_message_ids IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    produce_envelopes(
        &topics.topic,
        &[tenant.track(KeyType::Secret, "purchase", "u", json!({ "amount": 1 }))],
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "/healthz to report the stall",
        || async { healthz(&worker).await == reqwest::StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;

    // The lock is still held: without a shutdown deadline the stop would wait for it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), worker.stop()).await;
    assert!(
        stopped.is_ok(),
        "the worker did not stop within its grace period"
    );
    lock.rollback().await.unwrap();
    assert_eq!(tenant.events(&db).await, 0);
    assert_eq!(
        topics.committed().await,
        0,
        "the abandoned batch stays uncommitted"
    );

    // A new worker stores the redelivered event.
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "the redelivered event", || async {
        tenant.events(&db).await == 1
    })
    .await;
    worker.stop().await;
}

/// With the default-style statement timeout a lock wait is cancelled (SQLSTATE 57014), retried as
/// transient, and the event is stored once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_stuck_on_a_lock_is_cancelled_and_retried() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;
    let mut settings = config(&topics);
    settings.statement_timeout = Duration::from_millis(300);
    let worker = Running::start(settings).await;
    let owner = connect(&var("DATABASE_OWNER_URL")).await;
    let lock = owner.shared().begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE event_message_ids IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    produce_envelopes(
        &topics.topic,
        &[tenant.track(KeyType::Secret, "purchase", "u", json!({ "amount": 1 }))],
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "a retry after a statement timeout",
        || async { crate::harness::stat(&worker.stats.db_retries) >= 1 },
    )
    .await;
    lock.rollback().await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the event once the lock is gone",
        || async { tenant.events(&db).await == 1 },
    )
    .await;
    assert_eq!(crate::harness::stat(&worker.stats.dead_lettered), 0);
    worker.stop().await;
}
