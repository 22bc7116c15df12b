//! Replay equals live: a stream of events evaluated live through the broker, then recomputed by a
//! replayed rule version with the same rules, gives identical states, ledgers and leaderboards;
//! and a replay with other rules switches over without losing the events sent meanwhile.

use std::time::Duration;

use gamify_db::{gamification::project_lock, sea_orm::sqlx};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Project, Stack, shop_rules, wait_until_blocked_by};

/// A small deterministic generator (the stream must be the same on every run to be debuggable).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

async fn send_stream(stack: &Stack, project: &Project, seed: u64, count: usize) -> Vec<String> {
    let users = ["ann", "ben", "cat", "dan"];
    let mut random = Lcg(seed);
    let mut ids = Vec::new();
    for n in 0..count {
        let user = users[random.next(users.len() as u64) as usize];
        let day = random.next(10);
        let timestamp = format!("2026-11-{:02}T{:02}:00:00Z", 10 + day, random.next(24));
        let (key, body) = match random.next(6) {
            0 | 1 => (
                &project.sk,
                json!({"event": "purchase", "userId": user, "timestamp": timestamp,
                       "properties": {"amount": random.next(400)}}),
            ),
            2 | 3 => (
                if random.next(2) == 0 {
                    &project.sk
                } else {
                    &project.pk
                },
                json!({"event": "lesson_completed", "userId": user, "timestamp": timestamp,
                       "properties": {"score": random.next(100)}}),
            ),
            4 => (
                &project.sk,
                json!({"event": "page_view", "userId": user, "timestamp": timestamp}),
            ),
            _ => {
                let (status, body) = stack
                    .call(
                        Method::POST,
                        &format!("/v1/users/{user}/points/xp/adjustments"),
                        &project.sk,
                        Some(json!({"amount": random.next(50) as i64 - 25 + 1, "reason": format!("manual {n}")})),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                continue;
            }
        };
        ids.push(stack.track(key, body).await);
    }
    for id in &ids {
        stack.outcome(&project.sk, id).await;
    }
    ids
}

type Time = chrono::DateTime<chrono::Utc>;
/// board, period start, user, score, reached at.
type ScoreRow = (String, Time, String, i64, Time);

/// Everything a generation holds for the project: states, ledger entries and scores, ordered.
async fn generation(
    stack: &Stack,
    project: Uuid,
    generation: i32,
) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut txn = stack.db.tenant_bulk(project).await.unwrap();
    let states: Vec<(String, Value)> = sqlx::query_as(
        "SELECT user_id, state FROM engine_user_states WHERE project_id = $1 AND generation = $2 ORDER BY user_id",
    )
    .bind(project)
    .bind(generation)
    .fetch_all(&mut *txn)
    .await
    .unwrap();
    let ledger: Vec<(String, String, i64, String, Option<Uuid>, i64)> = sqlx::query_as(
        "SELECT user_id, points_key, amount, reason, event_id, seq FROM points_ledger
         WHERE project_id = $1 AND generation = $2 ORDER BY seq, points_key, reason, amount",
    )
    .bind(project)
    .bind(generation)
    .fetch_all(&mut *txn)
    .await
    .unwrap();
    let scores: Vec<ScoreRow> = sqlx::query_as(
        "SELECT board, period_start, user_id, score, reached_at FROM leaderboard_scores
             WHERE project_id = $1 AND generation = $2 ORDER BY board, period_start, user_id",
    )
    .bind(project)
    .bind(generation)
    .fetch_all(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
    (
        states
            .into_iter()
            .map(|(user, state)| json!([user, state]))
            .collect(),
        ledger
            .into_iter()
            .map(|row| json!([row.0, row.1, row.2, row.3, row.4, row.5]))
            .collect(),
        scores
            .into_iter()
            .map(|row| json!([row.0, row.1, row.2, row.3, row.4]))
            .collect(),
    )
}

async fn wait_active(stack: &Stack, project: &Project, version: i64) -> Value {
    let path = format!("/v1/projects/{}/rules/versions/{version}", project.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, version) = stack.get(&path, &stack.admin_token).await;
        assert_ne!(version["state"], "failed", "{version}");
        if version["state"] == "active" {
            return version;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed version did not become active: {version}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_replay_of_the_same_rules_reproduces_live_evaluation_exactly() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;
    let ids = send_stream(&stack, &project, 20261204, 80).await;
    assert!(ids.len() > 40);

    let version = stack.publish(&project, shop_rules(), "replay").await;
    assert_eq!(version, 2);
    let replayed = wait_active(&stack, &project, version).await;
    assert_eq!(
        replayed["progress"]["eventsDone"],
        replayed["progress"]["eventsTotal"]
    );
    let (_, versions) = stack
        .get(
            &format!("/v1/projects/{}/rules/versions", project.id),
            &stack.admin_token,
        )
        .await;
    assert_eq!(versions["data"][1]["state"], "retired", "{versions}");

    let live = generation(&stack, project.id, 1).await;
    let replay = generation(&stack, project.id, 2).await;
    assert!(!live.0.is_empty() && !live.1.is_empty() && !live.2.is_empty());
    assert_eq!(live.0, replay.0, "states");
    assert_eq!(live.1, replay.1, "ledgers");
    assert_eq!(live.2, replay.2, "leaderboard scores");
}

#[tokio::test]
async fn a_replay_with_new_rules_switches_over_keeping_adjustments_and_later_events() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;
    let lesson = |score: u64| json!({"event": "lesson_completed", "userId": "liv", "properties": {"score": score}});
    for score in [60, 70, 80] {
        let id = stack.track(&project.sk, lesson(score)).await;
        stack.outcome(&project.sk, &id).await;
    }
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/users/liv/points/xp/adjustments",
            &project.sk,
            Some(json!({"amount": 5, "reason": "welcome gift"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, progress) = stack.get("/v1/users/liv/progress", &project.sk).await;
    assert_eq!(progress["points"]["xp"]["balance"], 35);

    // Lessons are worth 20 now, retroactively.
    let mut richer = shop_rules();
    richer["points"][0]["triggers"][0]["points"] = json!(20);
    let version = stack.publish(&project, richer, "replay").await;
    // Sent while the replay may be running: counted exactly once, under one version or the other
    // and then carried over by the switch.
    let late = stack.track(&project.sk, lesson(90)).await;
    stack.outcome(&project.sk, &late).await;
    wait_active(&stack, &project, version).await;
    let (_, progress) = stack.get("/v1/users/liv/progress", &project.sk).await;
    assert_eq!(progress["metrics"]["lessons"], 4, "{progress}");
    assert_eq!(
        progress["points"]["xp"]["balance"],
        4 * 20 + 5,
        "{progress}"
    );
    let (_, ledger) = stack
        .get("/v1/users/liv/points/xp/ledger", &project.sk)
        .await;
    let sum: i64 = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 85, "the balance is the ledger's sum: {ledger}");
}

/// A replay page reads only below a sequence number that every live evaluation of the project
/// has settled: live transactions commit in any order, so one still in flight may hold a lower
/// number than one already committed, and a page read past it would leave it out of the replayed
/// version for good. The bound is taken with the project lock held exclusively, so it waits for
/// an evaluation in flight (here one that has taken its number and not committed).
#[tokio::test]
async fn a_replay_page_bound_waits_for_evaluations_in_flight() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    let mut live = stack
        .db
        .tenant_bulk_sharing(project.id, project_lock(project.id))
        .await
        .unwrap();
    let (taken, live_pid): (i64, i32) =
        sqlx::query_as("SELECT nextval('engine_seq'), pg_backend_pid()")
            .fetch_one(&mut *live)
            .await
            .unwrap();

    let db = stack.db.clone();
    let bound = tokio::spawn(async move { gamify_engine::replay::settled(&db, project.id).await });
    // A bound taken without waiting would leave nothing blocked: this would time out.
    wait_until_blocked_by(&stack, live_pid).await;
    assert!(!bound.is_finished());
    live.commit().await.unwrap();
    let bound = bound.await.unwrap().unwrap();
    assert!(bound > taken, "{bound} ≤ {taken}");
}
