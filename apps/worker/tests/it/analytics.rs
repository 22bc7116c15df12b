//! The analytics queries computed from the raw events (funnels, retention, breakdowns, zones with
//! half-hour offsets, the live numbers), each checked against a brute-force computation over the
//! stored events of a generated project, and the statement timeout that bounds them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use gamify_common::KeyType;
use gamify_db::sea_orm::{ConnectionTrait, DbBackend, Statement};
use gamify_worker::persist::{Item, Status, persist_project};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    e2e::Gateway,
    harness::{Tenant, Topics, connect, database_url},
};

/// An event (its index) or a person (index 0), and who.
type Counted<'a> = (usize, &'a str);

const EVENTS: [&str; 4] = ["signup", "lesson", "purchase", "page_view"];

/// A small deterministic generator, so a failure names a data set that can be built again.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Ten days of events of 80 people (some anonymous), a few failed (never counted).
async fn generated_project(db: &gamify_db::Db) -> Tenant {
    let tenant = Tenant::create(db, &[]).await;
    let mut rng = Lcg(42);
    let mut items = Vec::new();
    for person in 0..80u64 {
        for _ in 0..rng.next(14) {
            let event = EVENTS[rng.next(4) as usize];
            let plan = ["free", "pro", ""][rng.next(3) as usize];
            let properties = if plan.is_empty() {
                json!({})
            } else {
                json!({ "plan": plan })
            };
            let mut envelope = tenant.track(
                KeyType::Secret,
                event,
                &format!("user-{person}"),
                properties,
            );
            envelope.occurred_at = start() + Duration::minutes(rng.next(10 * 24 * 60) as i64);
            if person % 9 == 0 {
                envelope.user_id = None;
                envelope.anonymous_id = Some(format!("anon-{person}"));
            }
            let status = if rng.next(30) == 0 {
                Status::Failed("not counted".into())
            } else {
                Status::Processed
            };
            items.push(Item {
                key_type: envelope.key_type,
                envelope: envelope.into(),
                status,
            });
        }
    }
    for chunk in items.chunks(200) {
        let refs: Vec<&Item> = chunk.iter().collect();
        persist_project(db, tenant.project, &refs).await.unwrap();
    }
    tenant
}

/// The counted events as stored: (who, event, occurredAt, plan), each person's in stored order.
async fn stored(
    db: &gamify_db::Db,
    tenant: &Tenant,
) -> Vec<(String, String, DateTime<Utc>, Option<String>)> {
    let txn = db.tenant(tenant.project).await.unwrap();
    let rows = txn
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            "SELECT coalesce('u:' || user_id::text, 'a:' || anonymous_id) AS who, event_type,
                    occurred_at, payload ->> 'plan' AS plan
             FROM events WHERE status = 'processed' ORDER BY who, occurred_at, id",
        ))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "who").unwrap(),
                row.try_get("", "event_type").unwrap(),
                row.try_get("", "occurred_at").unwrap(),
                row.try_get("", "plan").unwrap(),
            )
        })
        .collect()
}

async fn get(gateway: &Gateway, path: &str) -> Value {
    let (status, body) = gateway
        .call(Method::GET, path, &gateway.admin_token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnels_retention_and_breakdowns_equal_a_brute_force_count() {
    let db = connect(&database_url()).await;
    let tenant = generated_project(&db).await;
    let events = stored(&db, &tenant).await;
    let mut people: BTreeMap<&str, Vec<(DateTime<Utc>, &str)>> = BTreeMap::new();
    for (who, event, at, _) in &events {
        people.entry(who).or_default().push((*at, event));
    }
    let topics = Topics::create(1).await;
    let gateway = Gateway::start(&topics.topic).await;
    let project = tenant.project;

    // Funnel: every entering signup tried, each next step at its earliest.
    let steps = ["signup", "lesson", "purchase"];
    let (from, to, window) = (
        start() + Duration::days(1),
        start() + Duration::days(8),
        Duration::days(2),
    );
    let mut expected = [0u64; 3];
    for events in people.values() {
        let mut best: Option<usize> = None;
        for (i, (entered, name)) in events.iter().enumerate() {
            if *name != steps[0] || *entered < from || *entered >= to {
                continue;
            }
            let (mut reached, mut position) = (0, i);
            for (step, wanted) in steps.iter().enumerate().skip(1) {
                match events[position + 1..]
                    .iter()
                    .position(|(at, name)| name == wanted && *at - *entered <= window)
                {
                    Some(offset) => {
                        position += 1 + offset;
                        reached = step;
                    }
                    None => break,
                }
            }
            best = best.max(Some(reached));
        }
        if let Some(furthest) = best {
            expected[..=furthest].iter_mut().for_each(|n| *n += 1);
        }
    }
    assert!(
        expected[2] > 0,
        "the data set converts someone: {expected:?}"
    );
    let (status, funnel) = gateway
        .call(
            Method::POST,
            &format!("/v1/analytics/funnels?projectId={project}"),
            &gateway.admin_token,
            Some(json!({ "steps": steps, "window": "P2D", "from": from, "to": to })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{funnel}");
    let users: Vec<u64> = funnel["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["users"].as_u64().unwrap())
        .collect();
    assert_eq!(users, expected, "{funnel}");
    assert_eq!(funnel["steps"][0]["conversion"], 1.0);
    assert!(
        funnel["steps"][2]["medianSecondsFromPrevious"]
            .as_f64()
            .unwrap()
            >= 0.0
    );

    // Retention by UTC day: a cohort is the day of a person's first signup in the range.
    let (from, to) = (start(), start() + Duration::days(10));
    let day = |at: DateTime<Utc>| (at - from).num_days() as usize;
    let mut cohorts = vec![(0u64, vec![0u64; 10]); 10];
    for events in people.values() {
        let Some(first) = events
            .iter()
            .find(|(_, name)| *name == "signup")
            .map(|(at, _)| day(*at))
        else {
            continue;
        };
        cohorts[first].0 += 1;
        let returned: BTreeSet<usize> = events
            .iter()
            .filter(|(_, name)| *name == "lesson")
            .map(|(at, _)| day(*at))
            .filter(|d| *d > first)
            .collect();
        for d in returned {
            cohorts[first].1[d - first] += 1;
        }
    }
    let retention = get(
        &gateway,
        &format!(
            "/v1/analytics/retention?projectId={project}&start_event=signup&return_event=lesson&interval=day&from={}&to={}",
            from.to_rfc3339(),
            to.to_rfc3339()
        )
        .replace('+', "%2B"),
    )
    .await;
    let got = retention["cohorts"].as_array().unwrap();
    assert_eq!(got.len(), 10, "{retention}");
    for (k, cohort) in got.iter().enumerate() {
        let (users, returns) = &cohorts[k];
        assert_eq!(
            cohort["users"].as_u64().unwrap(),
            *users,
            "cohort {k}: {cohort}"
        );
        let values: Vec<u64> = cohort["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(values.len(), 10 - k);
        assert_eq!(values[0], *users);
        assert_eq!(&values[1..], &returns[1..10 - k], "cohort {k}: {cohort}");
    }
    assert!(cohorts.iter().any(|(_, r)| r.iter().sum::<u64>() > 0));

    // A breakdown of page views by plan per UTC day, events and distinct people, from the raw
    // events (the rollups keep no properties).
    for measure in ["count", "users"] {
        // (day, plan) → the events (or people) counted there.
        let mut counted: HashMap<(usize, Option<&str>), BTreeSet<Counted>> = HashMap::new();
        for (n, (who, event, at, plan)) in events.iter().enumerate() {
            if event == "page_view" && *at >= from && *at < to {
                let key = if measure == "count" { n } else { 0 };
                counted
                    .entry((day(*at), plan.as_deref()))
                    .or_default()
                    .insert((key, who.as_str()));
            }
        }
        let trend = get(
            &gateway,
            &format!(
                "/v1/analytics/trends?projectId={project}&event=page_view&interval=day&breakdown=plan&measure={measure}&from=2026-06-01T00:00:00Z&to=2026-06-11T00:00:00Z"
            ),
        )
        .await;
        assert_eq!(trend["source"], "events");
        let data = trend["data"].as_array().unwrap();
        // Ten days, three series: free, pro and the events without a plan.
        assert_eq!(data.len(), 30, "{trend}");
        for bucket in data {
            let d = day(
                DateTime::parse_from_rfc3339(bucket["start"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc),
            );
            let plan = bucket["breakdown"].as_str();
            let want = counted.get(&(d, plan)).map_or(0, |set| set.len() as u64);
            assert_eq!(
                bucket["value"].as_u64().unwrap(),
                want,
                "{measure} {bucket}"
            );
        }
        // The whole range: every page view, or every person who viewed (once, whatever plans).
        let whole: BTreeSet<Counted> = counted.values().flatten().copied().collect();
        assert_eq!(
            trend["total"].as_u64().unwrap(),
            whole.len() as u64,
            "{measure} {trend}"
        );
    }

    // A zone with a half-hour offset is counted from the raw events, by its own days.
    // Kolkata keeps +05:30 all year.
    let kolkata = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let mut by_day: BTreeMap<String, u64> = BTreeMap::new();
    for (_, _, at, _) in &events {
        if *at >= from && *at < to {
            *by_day
                .entry(at.with_timezone(&kolkata).format("%Y-%m-%d").to_string())
                .or_default() += 1;
        }
    }
    let trend = get(
        &gateway,
        &format!(
            "/v1/analytics/trends?projectId={project}&interval=day&timezone=Asia/Kolkata&from=2026-06-01T00:00:00Z&to=2026-06-11T00:00:00Z"
        ),
    )
    .await;
    assert_eq!(trend["source"], "events");
    let mut total = 0;
    for bucket in trend["data"].as_array().unwrap() {
        let start = bucket["start"].as_str().unwrap();
        assert!(start.ends_with("+05:30"), "{start}");
        let want = by_day.get(&start[..10]).copied().unwrap_or(0);
        assert_eq!(bucket["value"].as_u64().unwrap(), want, "{bucket}");
        total += want;
    }
    assert_eq!(trend["total"].as_u64().unwrap(), total);
    assert_eq!(total, by_day.values().sum::<u64>());

    // Without a breakdown, in UTC: the rollups, whose total of users is the distinct people of
    // the range, not a sum over days.
    let trend = get(
        &gateway,
        &format!(
            "/v1/analytics/trends?projectId={project}&interval=day&measure=users&from=2026-06-01T00:00:00Z&to=2026-06-11T00:00:00Z"
        ),
    )
    .await;
    assert_eq!(trend["source"], "rollups");
    let people_in_range = events
        .iter()
        .filter(|(_, _, at, _)| *at >= from && *at < to)
        .map(|(who, ..)| who)
        .collect::<BTreeSet<_>>()
        .len() as u64;
    assert_eq!(trend["total"].as_u64().unwrap(), people_in_range, "{trend}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_numbers_count_the_last_minutes() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let now = Utc::now();
    let items: Vec<Item> = [(1, "a"), (2, "a"), (3, "b"), (40, "c"), (7, "d")]
        .into_iter()
        .map(|(minutes_ago, user)| {
            let mut envelope = tenant.track(KeyType::Secret, "click", user, json!({}));
            envelope.occurred_at = now - Duration::minutes(minutes_ago);
            Item {
                key_type: envelope.key_type,
                envelope: envelope.into(),
                status: Status::Processed,
            }
        })
        .collect();
    let refs: Vec<&Item> = items.iter().collect();
    persist_project(&db, tenant.project, &refs).await.unwrap();
    let topics = Topics::create(1).await;
    let gateway = Gateway::start(&topics.topic).await;
    let live = get(
        &gateway,
        &format!("/v1/analytics/live?projectId={}", tenant.project),
    )
    .await;
    let minutes = live["eventsPerMinute"].as_array().unwrap();
    assert_eq!(minutes.len(), 30);
    // The one 40 minutes ago is out of the window; the others are in it.
    let events: u64 = minutes.iter().map(|m| m["events"].as_u64().unwrap()).sum();
    assert_eq!(events, 4, "{live}");
    // a, a, b in the last 5 minutes; d 7 minutes ago is not active.
    assert_eq!(live["activeUsers"], 2, "{live}");
}

async fn funnel(gateway: &Gateway, project: uuid::Uuid) -> (StatusCode, Value) {
    let path = format!("/v1/analytics/funnels?projectId={project}");
    let body = json!({ "steps": ["step0", "step1", "step2"], "window": "P1D" });
    gateway
        .call(Method::POST, &path, &gateway.admin_token, Some(body))
        .await
}

/// A query that needs longer than the deployment's analytics timeout is cancelled and refused
/// with 422, not left to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_timeout_is_refused_with_422() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let txn = db.tenant(tenant.project).await.unwrap();
    txn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO events (id, project_id, message_id, event_type, anonymous_id, key_id, key_type,
                             status, occurred_at, received_at)
         SELECT gen_random_uuid(), $1, 'm' || n, 'step' || (n % 3), 'anon-' || (n % 5000), $2,
                'secret', 'processed', $3::timestamptz - n * interval '1 second', $3::timestamptz
         FROM generate_series(1, 200000) AS n",
        [tenant.project.into(), tenant.secret.into(), Utc::now().into()],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let topics = Topics::create(1).await;
    let gateway = Gateway::start_with(&topics.topic, |settings| {
        settings.http.analytics_query_timeout = std::time::Duration::from_millis(5);
    })
    .await;
    let (status, body) = funnel(&gateway, tenant.project).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "query_too_expensive");
    // The same request with the default timeout answers.
    let gateway = Gateway::start(&topics.topic).await;
    let (status, body) = funnel(&gateway, tenant.project).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["steps"][0]["users"], 5000, "{body}");
}
