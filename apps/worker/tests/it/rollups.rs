//! The analytics rollups the worker keeps beside the events: checked against a brute-force count
//! over the stored events, under concurrent chunks of one project and redeliveries.

use chrono::{Duration, DurationRound, Utc};
use gamify_common::KeyType;
use gamify_db::sea_orm::DbBackend;
use gamify_db::sea_orm::{ConnectionTrait, Statement};
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

/// Trends read from the rollups equal a brute-force count over the stored events, in a time zone
/// with summer time, for events and for distinct users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trends_from_the_rollups_equal_a_count_over_the_events() {
    use gamify_worker::persist::{Item, Status, persist_project};
    use reqwest::{Method, StatusCode};

    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    // Ten days across the end of summer time in Berlin (2026-10-25).
    let start = chrono::DateTime::parse_from_rfc3339("2026-10-20T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let items: Vec<Item> = (0..600i64)
        .map(|n| {
            let event = if n % 4 == 0 { "purchase" } else { "page_view" };
            let user = format!("user-{}", (n * 13) % 37);
            let mut envelope = tenant.track(KeyType::Secret, event, &user, json!({}));
            envelope.occurred_at = start + Duration::minutes(n * 23);
            Item {
                key_type: envelope.key_type,
                envelope: envelope.into(),
                status: Status::Processed,
            }
        })
        .collect();
    for chunk in items.chunks(100) {
        let refs: Vec<&Item> = chunk.iter().collect();
        persist_project(&db, tenant.project, &refs).await.unwrap();
    }
    let topics = crate::harness::Topics::create(1).await;
    let gateway = crate::e2e::Gateway::start(&topics.topic).await;
    let from = "2026-10-20T00:00:00Z";
    let to = "2026-10-30T00:00:00Z";
    for (measure, aggregate) in [
        ("count", "count(*)"),
        ("users", "count(DISTINCT u.external_id)"),
    ] {
        let path = format!(
            "/v1/analytics/trends?projectId={}&interval=day&timezone=Europe/Berlin&event=page_view&measure={measure}&from={from}&to={to}",
            tenant.project
        );
        let (status, trend) = gateway
            .call(Method::GET, &path, &gateway.admin_token, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{trend}");
        let txn = db.tenant(tenant.project).await.unwrap();
        let rows = txn
            .query_all(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT to_char(date_trunc('day', e.occurred_at AT TIME ZONE 'Europe/Berlin'), 'YYYY-MM-DD') AS day,
                            {aggregate} AS value
                     FROM events e JOIN end_users u ON u.id = e.user_id
                     WHERE e.event_type = 'page_view' AND e.occurred_at >= '{from}' AND e.occurred_at < '{to}'
                     GROUP BY 1 ORDER BY 1"
                ),
            ))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        let expected: std::collections::BTreeMap<String, i64> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get("", "day").unwrap(),
                    r.try_get("", "value").unwrap(),
                )
            })
            .collect();
        let data = trend["data"].as_array().unwrap();
        // Berlin days from 20 to 30 October: 11 buckets (the range starts at 02:00 local).
        assert_eq!(data.len(), 11, "{trend}");
        // A day in summer time starts at +02:00, one after it at +01:00.
        assert_eq!(data[1]["start"], "2026-10-21T00:00:00+02:00");
        assert_eq!(data[8]["start"], "2026-10-28T00:00:00+01:00");
        for bucket in data {
            let day = &bucket["start"].as_str().unwrap()[..10];
            let want = expected.get(day).copied().unwrap_or(0);
            assert_eq!(
                bucket["value"].as_i64().unwrap(),
                want,
                "{measure} on {day}: {trend}"
            );
        }
        assert!(expected.values().sum::<i64>() > 0);
    }
    // A range over the interval's cap.
    let (status, body) = gateway
        .call(
            Method::GET,
            &format!(
                "/v1/analytics/trends?projectId={}&interval=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
                tenant.project
            ),
            &gateway.admin_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Without a project, with a management credential.
    let (status, _) = gateway
        .call(
            Method::GET,
            "/v1/analytics/trends",
            &gateway.admin_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
