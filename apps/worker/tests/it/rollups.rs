//! The analytics rollups the worker keeps beside the events: checked against a brute-force count
//! over the stored events, under concurrent chunks of one project and redeliveries.

use chrono::{Duration, DurationRound, Utc};
use gamify_common::KeyType;
use gamify_db::sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;

use crate::harness::{Tenant, connect, database_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollups_match_a_count_over_the_stored_events_and_never_count_a_redelivery() {
    use gamify_worker::persist::{Item, Status, persist_project};

    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &["purchase"]).await;
    let hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(5);
    let mut all = Vec::new();
    for round in 0..3 {
        let chunks: Vec<Vec<Item>> = (0..4)
            .map(|chunk| {
                (0..150)
                    .map(|n: i64| {
                        let user = format!("user-{}", (n * 7 + chunk * 13 + round * 3) % 90);
                        let event = ["page_view", "click", "lesson_completed"][(n % 3) as usize];
                        let mut envelope =
                            tenant.track(KeyType::Publishable, event, &user, json!({ "n": n }));
                        // Spread over three hours; anonymous visitors among them.
                        envelope.occurred_at = hour + Duration::minutes((n * 17 + chunk) % 180);
                        if n % 10 == 0 {
                            envelope.user_id = None;
                            envelope.anonymous_id = Some(format!("anon-{}", n % 20));
                        }
                        let status = if n % 25 == 0 {
                            Status::Failed("not counted".into())
                        } else {
                            Status::Processed
                        };
                        Item {
                            key_type: envelope.key_type,
                            envelope: envelope.into(),
                            status,
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
            outcome.unwrap();
        }
        all.extend(chunks.into_iter().flatten());
    }
    // Every item again, as a redelivery would bring it: the dedup refuses all of them, and the
    // rollups do not move.
    let refs: Vec<&Item> = all.iter().collect();
    let again = persist_project(&db, tenant.project, &refs).await.unwrap();
    assert_eq!(again.duplicates, all.len() as u64);

    let txn = db.tenant(tenant.project).await.unwrap();
    let compare = txn
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            "WITH raw AS (
                 SELECT e.event_type, date_trunc('hour', e.occurred_at, 'UTC') AS hour,
                        count(*) AS events,
                        count(DISTINCT coalesce('u:' || u.external_id, 'a:' || e.anonymous_id)) AS users
                 FROM events e LEFT JOIN end_users u ON u.id = e.user_id
                 WHERE e.status = 'processed' GROUP BY 1, 2),
             rolled AS (
                 SELECT event_type, hour, sum(events)::bigint AS events,
                        hll_cardinality(hll_union_agg(users))::bigint AS users
                 FROM event_rollups GROUP BY 1, 2)
             SELECT coalesce(raw.event_type, rolled.event_type) AS event_type,
                    raw.events AS raw_events, rolled.events AS rolled_events,
                    raw.users AS raw_users, rolled.users AS rolled_users
             FROM raw FULL JOIN rolled USING (event_type, hour)",
        ))
        .await
        .unwrap();
    assert!(compare.len() >= 9, "three events over three hours at least");
    for row in &compare {
        let event: String = row.try_get("", "event_type").unwrap();
        let raw: Option<i64> = row.try_get("", "raw_events").unwrap();
        let rolled: Option<i64> = row.try_get("", "rolled_events").unwrap();
        assert_eq!(raw, rolled, "{event}: events counted");
        let raw_users: Option<i64> = row.try_get("", "raw_users").unwrap();
        let rolled_users: Option<i64> = row.try_get("", "rolled_users").unwrap();
        // HyperLogLog is exact for sets this small (its explicit representation).
        assert_eq!(raw_users, rolled_users, "{event}: distinct users");
    }
    txn.commit().await.unwrap();
    // First seen: every user once. (Its time is the earliest of the chunk that first stored the
    // user: rounds here bring users back with earlier events, which `DO NOTHING` keeps out.)
    let users = tenant
        .count(&db, "SELECT count(*) FROM user_first_seen")
        .await;
    let distinct = tenant
        .count(
            &db,
            "SELECT count(DISTINCT coalesce('u:' || u.external_id, 'a:' || e.anonymous_id))
             FROM events e LEFT JOIN end_users u ON u.id = e.user_id WHERE e.status = 'processed'",
        )
        .await;
    assert_eq!(users, distinct);
}
