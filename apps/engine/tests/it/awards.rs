//! Events become awards exactly once, only from the key classes a rule trusts, and a browser reads
//! what it earned with its publishable key or a user token.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Stack, shop_rules};

fn award<'a>(outcome: &'a Value, kind: &str, key: &str) -> Option<&'a Value> {
    outcome["awards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|award| award["type"] == kind && award["key"] == key)
}

#[tokio::test]
async fn a_purchase_sent_by_a_server_earns_an_achievement_points_a_level_and_a_rank() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;

    let id = stack
        .track(
            &project.sk,
            json!({"event": "purchase", "userId": "ada", "properties": {"amount": 250}}),
        )
        .await;
    // The browser that sent nothing trusted may still read the outcome by id.
    let outcome = stack.outcome(&project.pk, &id).await;
    assert_eq!(outcome["status"], "evaluated", "{outcome}");
    assert_eq!(outcome["eventId"], id);
    let unlocked = award(&outcome, "achievement", "first_purchase").expect("first_purchase");
    assert_eq!(unlocked["name"], "First purchase");
    let points: i64 = outcome["awards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "points")
        .map(|a| a["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(
        points,
        2 + 100,
        "two whole 100s of revenue and the achievement: {outcome}"
    );
    // Bronze is the level at 0: a user has it from the start, so reaching it is no award.
    assert!(award(&outcome, "level", "xp").is_none(), "{outcome}");

    // A user token reads the user's own progress, and nobody else's.
    let (status, token) = stack
        .call(
            Method::POST,
            "/v1/users/ada/tokens",
            &project.sk,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ut_"));
    let (status, progress) = stack.get("/v1/users/ada/progress", &token).await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(progress["metrics"]["purchases"], 1);
    assert_eq!(progress["metrics"]["revenue"], 250);
    assert_eq!(progress["points"]["xp"]["balance"], 102);
    assert_eq!(progress["points"]["xp"]["level"], "bronze");
    assert_eq!(progress["achievements"][0]["key"], "first_purchase");
    assert_eq!(progress["achievements"][0]["eventId"], id);
    assert_eq!(progress["leaderboards"]["weekly_xp"]["rank"], 1);
    assert_eq!(progress["leaderboards"]["weekly_xp"]["score"], 102);
    let (status, _) = stack.get("/v1/users/bob/progress", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = stack.get("/v1/users/ada/progress", &project.pk).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a publishable key reads no progress"
    );

    // The ledger sums to the balance.
    let (status, ledger) = stack.get("/v1/users/ada/points/xp/ledger", &token).await;
    assert_eq!(status, StatusCode::OK, "{ledger}");
    let sum: i64 = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 102);

    // A second user below: ranks are stable and the board pages.
    let second = stack
        .track(
            &project.sk,
            json!({"event": "purchase", "userId": "bob", "properties": {"amount": 100}}),
        )
        .await;
    stack.outcome(&project.sk, &second).await;
    let (status, board) = stack
        .get("/v1/leaderboards/weekly_xp?limit=1", &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{board}");
    assert_eq!(
        board["entries"],
        json!([{"rank": 1, "userId": "ada", "score": 102}])
    );
    let cursor = board["nextCursor"].as_str().unwrap().to_owned();
    let (_, page) = stack
        .get(
            &format!("/v1/leaderboards/weekly_xp?limit=1&cursor={cursor}"),
            &project.sk,
        )
        .await;
    assert_eq!(
        page["entries"],
        json!([{"rank": 2, "userId": "bob", "score": 101}])
    );
    assert_eq!(page["nextCursor"], Value::Null);
    let (status, _) = stack.get("/v1/leaderboards/weekly_xp", &project.pk).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a publishable key reads no leaderboard"
    );
    let (status, _) = stack
        .get("/v1/leaderboards/no_such_board", &project.sk)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn browser_events_never_feed_a_secret_metric_in_any_form() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;

    // Single, batch, case variant and identify, all with the publishable key.
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/identify",
            &project.pk,
            Some(json!({"userId": "eve", "traits": {"timezone": "Europe/Berlin", "verified_views": 99}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let single = stack
        .track(&project.pk, json!({"event": "page_view", "userId": "eve"}))
        .await;
    let (status, batch) = stack
        .call(
            Method::POST,
            "/v1/events/batch",
            &project.pk,
            Some(json!({"batch": [
                {"event": "page_view", "userId": "eve"},
                {"event": "Page_View", "userId": "eve"},
                {"event": "PAGE_VIEW", "userId": "eve"}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let mut ids = vec![single];
    ids.extend(
        batch["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned()),
    );
    // The beacon form: the key in a text/plain body, as navigator.sendBeacon sends it.
    let beacon = stack
        .client
        .post(format!("{}/v1/events/track", stack.base_url))
        .header("Content-Type", "text/plain;charset=UTF-8")
        .body(json!({"apiKey": project.pk, "event": "page_view", "userId": "eve"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), StatusCode::ACCEPTED);
    let beacon: Value = beacon.json().await.unwrap();
    ids.push(beacon["id"].as_str().unwrap().to_owned());
    assert_eq!(ids.len(), 5, "every event has an id: {batch}");
    for id in &ids {
        let outcome = stack.outcome(&project.pk, id).await;
        assert_eq!(outcome["status"], "evaluated", "{outcome}");
        assert_eq!(outcome["awards"], json!([]), "{outcome}");
    }
    // A browser event a rule opted into does count.
    let lesson = stack
        .track(
            &project.pk,
            json!({"event": "lesson_completed", "userId": "eve", "properties": {"score": 80}}),
        )
        .await;
    let outcome = stack.outcome(&project.pk, &lesson).await;
    assert_eq!(
        award(&outcome, "points", "xp").unwrap()["amount"],
        10,
        "{outcome}"
    );
    // The same browser event name from the server counts for the secret metric.
    let server = stack
        .track(&project.sk, json!({"event": "page_view", "userId": "eve"}))
        .await;
    let outcome = stack.outcome(&project.sk, &server).await;
    assert!(
        award(&outcome, "achievement", "verified_visitor").is_some(),
        "{outcome}"
    );

    let (_, progress) = stack.get("/v1/users/eve/progress", &project.sk).await;
    assert_eq!(progress["metrics"]["verified_views"], 1, "{progress}");
    assert_eq!(progress["metrics"]["lessons"], 1);
    assert_eq!(progress["points"]["xp"]["balance"], 10);
}

#[tokio::test]
async fn a_repeated_message_id_is_evaluated_once_and_adjustments_are_idempotent() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;
    let body = json!({"event": "purchase", "userId": "kim", "messageId": "order-1",
                      "properties": {"amount": 300}});
    let first = stack.track(&project.sk, body.clone()).await;
    let second = stack.track(&project.sk, body).await;
    assert_ne!(first, second);
    assert_eq!(
        stack.outcome(&project.sk, &first).await["status"],
        "evaluated"
    );
    let repeat = stack.outcome(&project.sk, &second).await;
    assert_eq!(repeat["status"], "not_counted", "{repeat}");
    assert_eq!(
        repeat["duplicateOf"], first,
        "a retry whose first answer was lost can find what the first copy earned"
    );
    assert_eq!(repeat["awards"], json!([]));

    let adjust = |key: &'static str| {
        let stack = &stack;
        let sk = project.sk.clone();
        async move {
            let response = stack
                .client
                .post(format!(
                    "{}/v1/users/kim/points/xp/adjustments",
                    stack.base_url
                ))
                .bearer_auth(sk)
                .header("Idempotency-Key", key)
                .json(&json!({"amount": -50, "reason": "refund"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.unwrap()
        }
    };
    let once = adjust("refund-1").await;
    let again = adjust("refund-1").await;
    assert_eq!(once, again, "a repeat returns the first result");
    assert_eq!(once["balance"], 103 - 50);
    let (_, progress) = stack.get("/v1/users/kim/progress", &project.sk).await;
    assert_eq!(progress["points"]["xp"]["balance"], 53, "{progress}");
    assert_eq!(progress["metrics"]["purchases"], 1);

    // Found by schemathesis: i64::MIN has no absolute value, and taking it panicked.
    for amount in [i64::MIN, i64::MAX, 0, 1_000_000_001] {
        let (status, body) = stack
            .call(
                Method::POST,
                "/v1/users/kim/points/xp/adjustments",
                &project.sk,
                Some(json!({"amount": amount, "reason": "out of range"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{amount}: {body}");
    }
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/users/kim/points/no_such_points/adjustments",
            &project.sk,
            Some(json!({"amount": 5, "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/users/kim/points/xp/adjustments",
            &project.pk,
            Some(json!({"amount": 5, "reason": "x"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a publishable key adjusts nothing"
    );
}

#[tokio::test]
async fn rules_are_validated_as_a_whole_and_managed_only_with_the_admin_token() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    let other = stack.project().await;
    let path = format!("/v1/projects/{}/rules", project.id);

    let mut broken = shop_rules();
    broken["achievements"][0]["metric"] = json!("no_such_metric");
    broken["metrics"][2]["where"] = json!("properties.score >=");
    let (status, error) = stack
        .call(
            Method::PUT,
            &path,
            &stack.admin_token,
            Some(json!({"rules": broken, "apply": "from_now"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let paths: Vec<&str> = error["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"$.achievements[0].metric"), "{paths:?}");
    assert!(paths.contains(&"$.metrics[2].where"), "{paths:?}");

    let (status, _) = stack
        .call(
            Method::PUT,
            &path,
            &project.sk,
            Some(json!({"rules": shop_rules(), "apply": "from_now"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a secret key does not manage rules"
    );
    let (status, _) = stack.get(&path, &stack.admin_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no active version yet");

    assert_eq!(stack.publish(&project, shop_rules(), "from_now").await, 1);
    assert_eq!(stack.publish(&project, shop_rules(), "from_now").await, 2);
    let (status, active) = stack.get(&path, &stack.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(active["version"], 2);
    assert_eq!(active["state"], "active");
    let (_, versions) = stack
        .get(&format!("{path}/versions"), &stack.admin_token)
        .await;
    let states: Vec<(i64, &str)> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_i64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![(2, "active"), (1, "retired")]);
    let (status, _) = stack
        .get(
            &format!("/v1/projects/{}/rules/versions/1", other.id),
            &stack.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "versions are per project");
    let (status, _) = stack
        .get(
            &format!("/v1/projects/{}/rules", uuid::Uuid::new_v4()),
            &stack.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_users_rank_matches_the_leaderboards_order_through_ties_and_adjustments() {
    let stack = Stack::start().await;
    let project = stack.project().await;
    stack.publish(&project, shop_rules(), "from_now").await;
    let users: Vec<String> = (0..24).map(|n| format!("u{n:02}")).collect();
    let mut ids = Vec::new();
    for (n, user) in users.iter().enumerate() {
        // Three amounts only: many users share a score, and who got there first decides.
        let amount = [100, 300, 500][n % 3];
        ids.push(
            stack
                .track(
                    &project.sk,
                    json!({"event": "purchase", "userId": user, "properties": {"amount": amount}}),
                )
                .await,
        );
    }
    for id in &ids {
        stack.outcome(&project.sk, id).await;
    }
    // Scores move down and up across the shared values: the per-score counts must follow.
    for (user, amount) in [
        ("u01", -2),
        ("u05", 2),
        ("u07", -4),
        ("u10", 4),
        ("u02", -2),
    ] {
        let (status, body) = stack
            .call(
                Method::POST,
                &format!("/v1/users/{user}/points/xp/adjustments"),
                &project.sk,
                Some(json!({"amount": amount, "reason": "move"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, board) = stack.get("/v1/leaderboards/weekly_xp", &project.sk).await;
    assert_eq!(status, StatusCode::OK, "{board}");
    let entries = board["entries"].as_array().unwrap();
    assert_eq!(entries.len(), users.len());
    let mut previous = i64::MAX;
    for entry in entries {
        let score = entry["score"].as_i64().unwrap();
        assert!(score <= previous, "the board is ordered by score: {board}");
        previous = score;
        let user = entry["userId"].as_str().unwrap();
        let (_, progress) = stack
            .get(&format!("/v1/users/{user}/progress"), &project.sk)
            .await;
        let standing = &progress["leaderboards"]["weekly_xp"];
        assert_eq!(
            standing["rank"], entry["rank"],
            "{user}: {progress} vs {board}"
        );
        assert_eq!(standing["score"], entry["score"]);
    }
}
