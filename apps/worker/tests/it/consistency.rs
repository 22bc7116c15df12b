//! A 202 means "stored processed", without exception: the worker's re-check judges every event by
//! the facts the gateway applied when it accepted it, across trusted-list changes and revocations
//! racing the requests (issue 18).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    e2e::Gateway,
    harness::{Running, Topics, config, wait_until},
};

async fn set_trusted_events(gateway: &Gateway, project: Uuid, names: &[&str]) {
    let (status, body) = gateway
        .call(
            Method::PATCH,
            &format!("/v1/projects/{project}"),
            &gateway.admin_token,
            Some(json!({ "trustedEvents": names })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Every stored event of the project, once `expected` are there.
async fn stored(gateway: &Gateway, sk: &str, expected: usize) -> Vec<Value> {
    wait_until(
        Duration::from_secs(30),
        &format!("{expected} stored events"),
        || async { gateway.events(sk).await.len() >= expected },
    )
    .await;
    gateway.events(sk).await
}

#[tokio::test]
async fn an_event_accepted_after_its_name_stopped_being_trusted_is_stored_processed() {
    let topics = Topics::create(1).await;
    let gateway = Gateway::start(&topics.topic).await;
    let _worker = Running::start(config(&topics)).await;
    let (project, pk, sk) = gateway.project().await;

    set_trusted_events(&gateway, project, &["bonus.granted"]).await;
    let (status, body) = gateway
        .send(
            &pk,
            "/v1/events/track",
            json!({ "event": "page_view", "userId": "u1" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The worker has now read the project with its list.
    stored(&gateway, &sk, 1).await;

    set_trusted_events(&gateway, project, &[]).await;
    let (status, body) = gateway
        .send(
            &pk,
            "/v1/events/track",
            json!({ "event": "bonus.granted", "userId": "u1" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let events = stored(&gateway, &sk, 2).await;
    assert!(
        events.iter().all(|event| event["status"] == "processed"),
        "{events:#?}"
    );
}

/// Requests race the revocation of their key, on the revoking instance and on another one that
/// had the key cached: each either is refused or is stored processed.
#[tokio::test]
async fn events_accepted_while_their_key_is_being_revoked_are_stored_processed() {
    let topics = Topics::create(2).await;
    let revoking = Gateway::start(&topics.topic).await;
    let other = Gateway::start(&topics.topic).await;
    let _worker = Running::start(config(&topics)).await;
    let (project, _, reader) = revoking.project().await;
    let keys_path = format!("/v1/projects/{project}/api-keys");
    let mut accepted = 0;
    for round in 0..15 {
        let key = revoking
            .admin(&keys_path, json!({ "name": "racing", "type": "secret" }))
            .await;
        let sk = key["key"].as_str().unwrap().to_owned();
        let event = |n: usize| json!({ "event": "purchase", "userId": "u1", "messageId": format!("r{round}-{n}") });
        for (n, gateway) in [&revoking, &other].into_iter().enumerate() {
            let (status, body) = gateway.send(&sk, "/v1/events/track", event(100 + n)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            accepted += 1;
        }
        let key_path = format!("{keys_path}/{}", key["id"].as_str().unwrap());
        let revoke = revoking.call(Method::DELETE, &key_path, &revoking.admin_token, None);
        let racing = async {
            let mut sent = Vec::new();
            for n in 1..=12 {
                let gateway = if n % 2 == 0 { &revoking } else { &other };
                sent.push(gateway.send(&sk, "/v1/events/track", event(n)));
            }
            futures::future::join_all(sent).await
        };
        let ((revoked, _), results) = tokio::join!(revoke, racing);
        assert_eq!(revoked, StatusCode::NO_CONTENT);
        for (status, body) in results {
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::UNAUTHORIZED => {}
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    let events = stored(&revoking, &reader, accepted).await;
    assert_eq!(events.len(), accepted);
    let failed: Vec<&Value> = events
        .iter()
        .filter(|event| event["status"] != "processed")
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {accepted} accepted events not processed: {failed:#?}",
        failed.len()
    );
}

/// Envelopes stamped with a list version the project has replaced since are judged by that
/// version while it was in force when they were received, and refused when it no longer was.
#[tokio::test]
async fn envelopes_are_judged_by_the_trusted_list_version_they_carry() {
    use gamify_common::KeyType;
    use gamify_db::sea_orm::{ConnectionTrait, DbBackend, Statement};

    use crate::harness::{Tenant, connect, database_url, produce_envelopes};

    let db = connect(&database_url()).await;
    // Version 1 trusts nothing; version 2 trusts vip.reward, and replaced version 1 an hour from now.
    let tenant = Tenant::create(&db, &[]).await;
    let replaced_at = chrono::Utc::now() + chrono::Duration::hours(1);
    gamify_db::trusted_lists::supersede(db.shared(), tenant.project, 1, &json!([]), replaced_at)
        .await
        .unwrap();
    db.shared()
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE projects SET trusted_events = '[\"vip.reward\"]', trusted_events_version = 2
             WHERE id = $1",
            [tenant.project.into()],
        ))
        .await
        .unwrap();
    let envelope = |message_id: &str, event: &str, version: i32, late: bool| {
        let mut envelope = tenant.track(KeyType::Publishable, event, "u1", json!({}));
        envelope.message_id = message_id.to_owned();
        envelope.trusted_events_version = Some(version);
        if late {
            envelope.received_at = replaced_at + chrono::Duration::seconds(1);
        }
        envelope
    };
    let topics = Topics::create(1).await;
    produce_envelopes(
        &topics.topic,
        &[
            envelope("under-v1", "vip.reward", 1, false),
            envelope("under-v2", "vip.reward", 2, false),
            envelope("v1-after-it-was-replaced", "page_view", 1, true),
        ],
    )
    .await;
    let _worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "3 stored events", || async {
        tenant.events(&db).await == 3
    })
    .await;
    let rows = tenant.rows(&db).await;
    let status = |id: &str| {
        let row = rows.iter().find(|row| row.message_id == id).unwrap();
        (
            row.status.clone(),
            row.error_details.clone().unwrap_or_default(),
        )
    };
    assert_eq!(status("under-v1").0, "processed");
    let (v2, why) = status("under-v2");
    assert_eq!(v2, "failed");
    assert!(why.contains("requires a secret key"), "{why}");
    let (late, why) = status("v1-after-it-was-replaced");
    assert_eq!(late, "failed");
    assert!(why.contains("replaced"), "{why}");
}
