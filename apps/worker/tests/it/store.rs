//! What ends up in Postgres for correctly signed envelopes.

use std::time::Duration;

use gamify_common::KeyType;
use serde_json::json;

use crate::harness::{
    Running, Tenant, Topics, config, connect, database_url, produce_envelopes, stat, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_purchase_and_identify_are_stored_under_their_project() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let other = Tenant::create(&db, &[]).await;
    let topics = Topics::create(3).await;

    let view = tenant.track(
        KeyType::Publishable,
        "page_view",
        "user-1",
        json!({ "page": "/" }),
    );
    let purchase = tenant.track(
        KeyType::Secret,
        "purchase",
        "user-1",
        json!({ "amount": 42 }),
    );
    let first = tenant.identify("user-2", json!({ "plan": "free", "name": "Ada" }));
    let second = tenant.identify("user-2", json!({ "plan": "pro", "seats": 3 }));
    let elsewhere = other.track(KeyType::Publishable, "click", "user-1", json!({}));
    produce_envelopes(
        &topics.topic,
        &[view.clone(), purchase.clone(), first, elsewhere],
    )
    .await;
    // A later identify in a later batch must merge over the stored metadata.
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "the first four events", || async {
        tenant.events(&db).await == 3 && other.events(&db).await == 1
    })
    .await;
    produce_envelopes(&topics.topic, &[second]).await;
    wait_until(Duration::from_secs(30), "the second identify", || async {
        tenant.events(&db).await == 4
    })
    .await;

    // The lag gauges come from librdkafka statistics, refreshed every 200 ms in the tests.
    wait_until(
        Duration::from_secs(10),
        "the consumer lag gauge",
        || async {
            reqwest::get(format!("http://{}/metrics", worker.addr))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains(&format!(
                    "gamify_worker_consumer_lag{{topic=\"{}\"",
                    topics.topic
                ))
        },
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", worker.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let health = reqwest::get(format!("http://{}/healthz", worker.addr))
        .await
        .unwrap();
    let stats = worker.stop().await;
    assert_eq!(stat(&stats.persisted), 5);
    assert_eq!(stat(&stats.failed), 0);
    assert_eq!(stat(&stats.dead_lettered), 0);
    assert!(health.status().is_success());
    for name in [
        "gamify_worker_messages_consumed_total",
        "gamify_worker_events_persisted_total",
        "gamify_worker_batch_size_bucket",
        "gamify_worker_batch_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    let rows = tenant.rows(&db).await;
    assert_eq!(rows.len(), 4);
    let view_row = rows
        .iter()
        .find(|r| r.message_id == view.message_id)
        .unwrap();
    assert_eq!(view_row.id, view.id);
    assert_eq!(view_row.project_id, tenant.project);
    assert_eq!(view_row.event_type, "page_view");
    assert_eq!(view_row.status, "processed");
    assert!(view_row.processed_at.is_some());
    assert_eq!(view_row.error_details, None);
    assert_eq!(view_row.occurred_at, view.occurred_at);
    assert_eq!(view_row.user.as_deref(), Some("user-1"));
    assert_eq!(view_row.key_type, "publishable");
    assert_eq!(view_row.payload, json!({ "page": "/" }));

    let purchase_row = rows
        .iter()
        .find(|r| r.message_id == purchase.message_id)
        .unwrap();
    assert_eq!(purchase_row.status, "processed");
    assert_eq!(purchase_row.key_type, "secret");
    assert_eq!(purchase_row.user.as_deref(), Some("user-1"));
    assert_eq!(purchase_row.payload, json!({ "amount": 42 }));

    let identifies: Vec<_> = rows
        .iter()
        .filter(|r| r.event_type == "$identify")
        .collect();
    assert_eq!(identifies.len(), 2);
    assert!(
        identifies
            .iter()
            .all(|r| r.user.as_deref() == Some("user-2"))
    );
    assert_eq!(
        tenant.user_metadata(&db, "user-2").await,
        Some(json!({ "plan": "pro", "name": "Ada", "seats": 3 }))
    );
    assert_eq!(tenant.user_metadata(&db, "user-1").await, Some(json!({})));
    // Row-level security: each project sees its own rows only.
    assert_eq!(other.events(&db).await, 1);
    assert_eq!(tenant.count(&db, "SELECT count(*) FROM end_users").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifies_in_one_batch_merge_in_order() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;
    let envelopes = [
        tenant.identify("u", json!({ "a": 1, "b": 1 })),
        tenant.identify("u", json!({ "b": 2, "c": 2 })),
        tenant.identify("u", json!({ "c": 3 })),
    ];
    produce_envelopes(&topics.topic, &envelopes).await;
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "three identifies", || async {
        tenant.events(&db).await == 3
    })
    .await;
    worker.stop().await;
    assert_eq!(
        tenant.user_metadata(&db, "u").await,
        Some(json!({ "a": 1, "b": 2, "c": 3 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_event_from_a_publishable_key_is_stored_as_failed() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &["bonus.granted"]).await;
    let topics = Topics::create(1).await;

    // Correctly signed, but claims a secret key while naming the publishable one.
    let mut forged = tenant.track(KeyType::Secret, "purchase", "u", json!({ "amount": 1 }));
    forged.key_id = tenant.publishable;
    // Honest about its publishable key, but the project made this event trusted.
    let custom = tenant.track(KeyType::Publishable, "bonus.granted", "u", json!({}));
    // Another project's key.
    let stranger = Tenant::create(&db, &[]).await;
    let mut foreign = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    foreign.key_id = stranger.secret;
    // Fails the shared validation rules.
    let mut invalid = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    invalid.user_id = None;
    let ok = tenant.track(KeyType::Secret, "bonus.granted", "u", json!({}));
    produce_envelopes(
        &topics.topic,
        &[
            forged.clone(),
            custom.clone(),
            foreign.clone(),
            invalid.clone(),
            ok.clone(),
        ],
    )
    .await;
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "five events", || async {
        tenant.events(&db).await == 5
    })
    .await;
    let stats = worker.stop().await;
    assert_eq!(stat(&stats.failed), 4);
    assert_eq!(stat(&stats.persisted), 1);

    let rows = tenant.rows(&db).await;
    let row = |id: &str| rows.iter().find(|r| r.message_id == id).unwrap();
    let forged_row = row(&forged.message_id);
    assert_eq!(forged_row.status, "failed");
    assert_eq!(forged_row.processed_at, None);
    let details = forged_row.error_details.as_deref().unwrap();
    assert!(details.contains("claims a secret key"), "{details}");
    // The stored key type is the key's real one.
    assert_eq!(forged_row.key_type, "publishable");

    let custom_row = row(&custom.message_id);
    assert_eq!(custom_row.status, "failed");
    assert!(
        custom_row
            .error_details
            .as_deref()
            .unwrap()
            .contains("requires a secret key")
    );
    let foreign_row = row(&foreign.message_id);
    assert_eq!(foreign_row.status, "failed");
    assert!(
        foreign_row
            .error_details
            .as_deref()
            .unwrap()
            .contains("another project")
    );
    let invalid_row = row(&invalid.message_id);
    assert_eq!(invalid_row.status, "failed");
    assert!(
        invalid_row
            .error_details
            .as_deref()
            .unwrap()
            .contains("invalid envelope")
    );
    assert_eq!(row(&ok.message_id).status, "processed");
    // The other project saw nothing.
    assert_eq!(stranger.events(&db).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_id_is_stored_once() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(2).await;
    let event = tenant.track(KeyType::Secret, "purchase", "u", json!({ "n": 1 }));
    // A retried request: same messageId, new envelope id.
    let mut retry = event.clone();
    retry.id = uuid::Uuid::now_v7();
    produce_envelopes(
        &topics.topic,
        &[event.clone(), event.clone(), retry.clone()],
    )
    .await;
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "the first delivery", || async {
        stat(&worker.stats.duplicates) == 2
    })
    .await;
    // A redelivery in a later batch.
    produce_envelopes(&topics.topic, &[retry]).await;
    wait_until(Duration::from_secs(30), "the redelivery", || async {
        stat(&worker.stats.duplicates) == 3
    })
    .await;
    let stats = worker.stop().await;
    assert_eq!(stat(&stats.persisted), 1);
    let rows = tenant.rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, event.id);
    assert_eq!(
        tenant
            .count(&db, "SELECT count(*) FROM event_message_ids")
            .await,
        1
    );
}

/// The worker reads a key's source through the same lookup as the gateway, and an unreadable
/// trusted-event list refuses publishable events instead of letting them through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_trusted_list_fails_publishable_events() {
    use gamify_db::sea_orm::{ConnectionTrait, DbBackend, Statement};
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    db.shared()
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE projects SET trusted_events = '[true]'::jsonb WHERE id = $1",
            [tenant.project.into()],
        ))
        .await
        .unwrap();
    let topics = Topics::create(1).await;
    let browser = tenant.track(KeyType::Publishable, "page_view", "u", json!({}));
    let server = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    produce_envelopes(&topics.topic, &[browser.clone(), server.clone()]).await;
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "both events", || async {
        tenant.events(&db).await == 2
    })
    .await;
    worker.stop().await;
    let rows = tenant.rows(&db).await;
    let status = |message_id: &str| {
        rows.iter()
            .find(|r| r.message_id == message_id)
            .map(|r| r.status.clone())
            .unwrap()
    };
    assert_eq!(status(&browser.message_id), "failed");
    assert_eq!(status(&server.message_id), "processed");
}

/// Chunks of one project written at the same time share new users: each user is created once,
/// every event points at its own user, and traits of every chunk's identifies arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chunks_of_one_project_share_new_users_without_losing_any() {
    use gamify_worker::persist::{Item, Status, persist_project};

    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let users = 200;
    for round in 0..3 {
        let chunks: Vec<Vec<Item>> = (0..4)
            .map(|chunk| {
                (0..users)
                    .map(|n| {
                        // Every chunk names every user, in another order each.
                        let user = format!("user-{}", (n * 7 + chunk * 31) % users);
                        let envelope = if n % 50 == 0 {
                            tenant
                                .identify(&user, json!({ format!("round{round}chunk{chunk}"): n }))
                        } else {
                            tenant.track(
                                KeyType::Publishable,
                                "click",
                                &user,
                                json!({ "user": user }),
                            )
                        };
                        Item {
                            key_type: envelope.key_type,
                            envelope: envelope.into(),
                            status: Status::Processed,
                        }
                    })
                    .collect()
            })
            .collect();
        let writes = chunks.iter().map(|items| {
            let db = db.clone();
            let project = tenant.project;
            async move {
                let refs: Vec<&Item> = items.iter().collect();
                persist_project(&db, project, &refs).await
            }
        });
        for outcome in futures::future::join_all(writes).await {
            assert_eq!(outcome.unwrap().processed, users as u64);
        }
    }

    assert_eq!(
        tenant.count(&db, "SELECT count(*) FROM end_users").await,
        users as i64
    );
    let rows = tenant.rows(&db).await;
    assert_eq!(rows.len(), 3 * 4 * users);
    assert!(rows.iter().all(|row| row.user.is_some()));
    // Each track points at the user its envelope named.
    assert_eq!(
        tenant
            .count(&db, "SELECT count(*) FROM events WHERE payload ? 'user'")
            .await,
        (3 * 4 * (users - users / 50)) as i64
    );
    assert_eq!(
        tenant
            .count(
                &db,
                "SELECT count(*) FROM events e JOIN end_users u ON u.id = e.user_id
                 WHERE e.payload ? 'user' AND e.payload->>'user' <> u.external_id",
            )
            .await,
        0
    );
    // Every identify's trait was merged into its user.
    assert_eq!(
        tenant
            .count(
                &db,
                "SELECT count(*) FROM end_users, jsonb_object_keys(metadata)",
            )
            .await,
        (3 * 4 * (users / 50)) as i64
    );
}
