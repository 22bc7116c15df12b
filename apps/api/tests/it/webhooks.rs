//! Webhook endpoints and their deliveries through the management API. Deliveries are written the
//! way the engine writes them: as the application role, inside the tenant's scope.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration, Utc};
use gamify_db::sea_orm::sqlx;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestServer, expect_error, expect_json};

fn webhooks_path(project: &str) -> String {
    format!("/v1/projects/{project}/webhooks")
}

async fn create(server: &TestServer, project: &str, body: Value) -> reqwest::Response {
    server
        .admin(Method::POST, &webhooks_path(project))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A project and one endpoint in it: (project id, endpoint as created).
async fn project_with_webhook(server: &TestServer) -> (String, Value) {
    let project = server.create_project().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({ "url": "https://hooks.example/gamify", "events": ["points.changed"] });
    let created = expect_json(create(server, &project, body).await, StatusCode::CREATED).await;
    (project, created)
}

fn uuid(value: &Value) -> Uuid {
    Uuid::parse_str(value.as_str().unwrap()).unwrap()
}

/// A delivery as the engine's outbox writes it, with a queue row when pending.
async fn insert_delivery(
    server: &TestServer,
    project: Uuid,
    endpoint: Uuid,
    state: &str,
    created_at: DateTime<Utc>,
) -> String {
    let id = format!("msg_{}", Uuid::now_v7().simple());
    let mut txn = server.db.tenant_bulk(project).await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_deliveries
             (project_id, id, endpoint_id, event_type, payload, state, created_at, delivered_at)
         VALUES ($1, $2, $3, 'points.changed', $4, $5, $6,
                 CASE WHEN $5 = 'delivered' THEN $6 END)",
    )
    .bind(project)
    .bind(&id)
    .bind(endpoint)
    .bind(json!({"type": "points.changed", "timestamp": created_at, "data": {"userId": "u1", "amount": 10}}))
    .bind(state)
    .bind(created_at)
    .execute(&mut *txn)
    .await
    .unwrap();
    if state == "pending" {
        sqlx::query(
            "INSERT INTO webhook_queue (project_id, delivery_id, due_at) VALUES ($1, $2, now() + interval '1 hour')",
        )
        .bind(project)
        .bind(&id)
        .execute(&mut *txn)
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
    id
}

async fn insert_attempt(
    server: &TestServer,
    project: Uuid,
    delivery: &str,
    attempt: i32,
    status: Option<i32>,
    error: Option<&str>,
) {
    let mut txn = server.db.tenant_bulk(project).await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_attempts
             (project_id, delivery_id, attempt, attempted_at, response_status, response_body, error,
              duration_ms)
         VALUES ($1, $2, $3, now(), $4, $5, $6, 12)",
    )
    .bind(project)
    .bind(delivery)
    .bind(attempt)
    .bind(status)
    .bind(status.map(|s| format!("answer {s}")))
    .bind(error)
    .execute(&mut *txn)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = greatest(attempts, $3)
         WHERE project_id = $1 AND id = $2",
    )
    .bind(project)
    .bind(delivery)
    .bind(attempt)
    .execute(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
}

/// (state, queue due time) of a delivery.
async fn delivery_row(
    server: &TestServer,
    project: Uuid,
    delivery: &str,
) -> (String, Option<DateTime<Utc>>) {
    let mut txn = server.db.tenant_bulk(project).await.unwrap();
    let (state,): (String,) =
        sqlx::query_as("SELECT state FROM webhook_deliveries WHERE project_id = $1 AND id = $2")
            .bind(project)
            .bind(delivery)
            .fetch_one(&mut *txn)
            .await
            .unwrap();
    let due: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "SELECT due_at FROM webhook_queue WHERE project_id = $1 AND delivery_id = $2",
    )
    .bind(project)
    .bind(delivery)
    .fetch_optional(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
    (state, due.map(|(due,)| due))
}

#[tokio::test]
async fn webhook_secret_is_shown_once() {
    let server = TestServer::start().await;
    let project = server.create_project().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = expect_json(
        create(
            &server,
            &project,
            json!({ "url": "https://hooks.example/gamify?tenant=1", "events": ["achievement.unlocked", "level.changed"] }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["url"], "https://hooks.example/gamify?tenant=1");
    assert_eq!(
        created["events"],
        json!(["achievement.unlocked", "level.changed"])
    );
    assert!(created["createdAt"].is_string());
    let secret = created["secret"].as_str().unwrap();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(key.len(), 24);

    // What the dispatcher will sign with is what was shown.
    let project_id = Uuid::parse_str(&project).unwrap();
    let mut txn = server.db.tenant_bulk(project_id).await.unwrap();
    let (stored,): (String,) =
        sqlx::query_as("SELECT secret FROM webhook_endpoints WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(uuid(&created["id"]))
            .fetch_one(&mut *txn)
            .await
            .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(stored, secret);

    let response = server
        .admin(Method::GET, &webhooks_path(&project))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains(secret) && !text.contains("secret"), "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        listed,
        json!({ "data": [{
            "id": created["id"],
            "url": created["url"],
            "events": created["events"],
            "createdAt": created["createdAt"],
        }]})
    );

    // A second endpoint gets a secret of its own; the URL is kept as it will be called.
    let second = expect_json(
        create(
            &server,
            &project,
            json!({ "url": "HTTP://Hooks.Example:8080", "events": ["streak.broken"] }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(second["url"], "http://hooks.example:8080/");
    assert_ne!(second["secret"], created["secret"]);
}

#[tokio::test]
async fn webhook_creation_validates_input() {
    let server = TestServer::start().await;
    let project = server.create_project().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let long = format!("https://hooks.example/{}", "a".repeat(2048));
    let cases = [
        (
            json!({ "url": "hooks.example/x", "events": ["points.changed"] }),
            "url",
        ),
        (
            json!({ "url": "ftp://hooks.example/", "events": ["points.changed"] }),
            "url",
        ),
        (
            json!({ "url": "/relative", "events": ["points.changed"] }),
            "url",
        ),
        (
            json!({ "url": "https://user:pw@hooks.example/", "events": ["points.changed"] }),
            "url",
        ),
        (
            json!({ "url": "https://user@hooks.example/", "events": ["points.changed"] }),
            "url",
        ),
        (json!({ "url": long, "events": ["points.changed"] }), "url"),
        (
            json!({ "url": "https://hooks.example/\u{0}", "events": ["points.changed"] }),
            "url",
        ),
        (
            json!({ "url": "https://hooks.example/", "events": [] }),
            "events",
        ),
        (
            json!({ "url": "https://hooks.example/", "events": ["points.changed", "nope"] }),
            "events[1]",
        ),
        (
            json!({ "url": "https://hooks.example/", "events": ["points.changed", "points.changed"] }),
            "events[1]",
        ),
    ];
    for (body, field) in cases {
        let error = expect_error(
            create(&server, &project, body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        assert_eq!(error["error"]["details"]["field"], field, "{body}");
    }
    for body in [
        json!({ "events": ["points.changed"] }),
        json!({ "url": "https://hooks.example/" }),
        json!({ "url": 5, "events": ["points.changed"] }),
        json!([]),
    ] {
        expect_error(
            create(&server, &project, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    let response = server
        .admin(Method::POST, &webhooks_path(&project))
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let valid = json!({ "url": "https://hooks.example/", "events": ["points.changed"] });
    expect_error(
        create(&server, &Uuid::new_v4().to_string(), valid.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // At most 20 live endpoints; a deleted one frees its place.
    let mut ids = Vec::new();
    for _ in 0..20 {
        let created = expect_json(
            create(&server, &project, valid.clone()).await,
            StatusCode::CREATED,
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    expect_error(
        create(&server, &project, valid.clone()).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let response = server
        .admin(
            Method::DELETE,
            &format!("{}/{}", webhooks_path(&project), ids[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_json(create(&server, &project, valid).await, StatusCode::CREATED).await;
}

#[tokio::test]
async fn webhook_routes_require_the_admin_token() {
    let server = TestServer::start().await;
    let (project, created) = project_with_webhook(&server).await;
    let webhook = format!(
        "{}/{}",
        webhooks_path(&project),
        created["id"].as_str().unwrap()
    );
    let routes = [
        (Method::POST, webhooks_path(&project)),
        (Method::GET, webhooks_path(&project)),
        (Method::DELETE, webhook.clone()),
        (Method::GET, format!("{webhook}/deliveries")),
        (Method::POST, format!("{webhook}/deliveries/msg_1/retry")),
    ];
    for (method, path) in routes {
        for token in [None, Some("adm_wrong"), Some("")] {
            let mut request = server.request(method.clone(), &path);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let request = if method == Method::POST {
                request
                    .json(&json!({ "url": "https://hooks.example/", "events": ["points.changed"] }))
            } else {
                request
            };
            let response = request.send().await.unwrap();
            expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
    // Nothing was changed by the refused calls.
    let listed = expect_json(
        server
            .admin(Method::GET, &webhooks_path(&project))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn webhooks_of_another_project_are_not_found() {
    let server = TestServer::start().await;
    let (project_a, webhook_a) = project_with_webhook(&server).await;
    let (project_b, _) = project_with_webhook(&server).await;
    let delivery = insert_delivery(
        &server,
        Uuid::parse_str(&project_a).unwrap(),
        uuid(&webhook_a["id"]),
        "failed",
        Utc::now(),
    )
    .await;
    let id = webhook_a["id"].as_str().unwrap();
    let from_b = format!("{}/{id}", webhooks_path(&project_b));
    for (method, path) in [
        (Method::DELETE, from_b.clone()),
        (Method::GET, format!("{from_b}/deliveries")),
        (
            Method::POST,
            format!("{from_b}/deliveries/{delivery}/retry"),
        ),
    ] {
        let response = server.admin(method, &path).send().await.unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let listed = expect_json(
        server
            .admin(Method::GET, &webhooks_path(&project_b))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["id"] != id)
    );

    // Unknown and malformed ids, and unknown projects.
    let unknown = Uuid::new_v4();
    for path in [
        format!("{}/{unknown}/deliveries", webhooks_path(&project_a)),
        format!("{}/not-a-uuid/deliveries", webhooks_path(&project_a)),
        format!("{}/{id}/deliveries", webhooks_path(&unknown.to_string())),
        webhooks_path(&unknown.to_string()),
    ] {
        let response = server.admin(Method::GET, &path).send().await.unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    for delivery in ["msg_unknown", "msg%00x"] {
        let path = format!(
            "{}/{id}/deliveries/{delivery}/retry",
            webhooks_path(&project_a)
        );
        let response = server.admin(Method::POST, &path).send().await.unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }

    // The webhook and its delivery are untouched in their own project.
    let (state, _) = delivery_row(&server, Uuid::parse_str(&project_a).unwrap(), &delivery).await;
    assert_eq!(state, "failed");
}

#[tokio::test]
async fn deliveries_are_listed_newest_first_with_their_last_attempt() {
    let server = TestServer::start().await;
    let (project, webhook) = project_with_webhook(&server).await;
    let project_id = Uuid::parse_str(&project).unwrap();
    let endpoint = uuid(&webhook["id"]);
    let start = Utc::now() - Duration::minutes(10);
    let mut ids = Vec::new();
    for (minute, state) in [
        (0, "delivered"),
        (1, "failed"),
        (2, "pending"),
        (3, "pending"),
        (4, "delivered"),
    ] {
        ids.push(
            insert_delivery(
                &server,
                project_id,
                endpoint,
                state,
                start + Duration::minutes(minute),
            )
            .await,
        );
    }
    insert_attempt(&server, project_id, &ids[1], 1, Some(500), None).await;
    insert_attempt(
        &server,
        project_id,
        &ids[1],
        2,
        None,
        Some("cannot connect"),
    )
    .await;
    insert_attempt(&server, project_id, &ids[4], 1, Some(204), None).await;
    // Another endpoint's delivery is not listed.
    let other = expect_json(
        create(
            &server,
            &project,
            json!({ "url": "https://other.example/", "events": ["points.changed"] }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    insert_delivery(
        &server,
        project_id,
        uuid(&other["id"]),
        "pending",
        Utc::now(),
    )
    .await;

    let path = format!("{}/{endpoint}/deliveries", webhooks_path(&project));
    let all = expect_json(
        server.admin(Method::GET, &path).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let listed: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(all["nextCursor"], Value::Null);

    let newest = &all["data"][0];
    assert_eq!(newest["state"], "delivered");
    assert_eq!(newest["eventType"], "points.changed");
    assert_eq!(newest["attempts"], 1);
    assert!(newest["deliveredAt"].is_string());
    assert_eq!(newest["nextAttemptAt"], Value::Null);
    assert_eq!(newest["payload"]["data"]["amount"], 10);
    assert_eq!(newest["lastAttempt"]["attempt"], 1);
    assert_eq!(newest["lastAttempt"]["responseStatus"], 204);
    assert_eq!(newest["lastAttempt"]["responseBody"], "answer 204");
    assert_eq!(newest["lastAttempt"]["durationMs"], 12);
    assert!(newest["lastAttempt"]["attemptedAt"].is_string());

    let pending = &all["data"][1];
    assert_eq!(pending["state"], "pending");
    assert!(pending["nextAttemptAt"].is_string());
    assert_eq!(pending["lastAttempt"], Value::Null);
    assert_eq!(pending["deliveredAt"], Value::Null);

    let failed = &all["data"][3];
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["lastAttempt"]["attempt"], 2);
    assert_eq!(failed["lastAttempt"]["responseStatus"], Value::Null);
    assert_eq!(failed["lastAttempt"]["error"], "cannot connect");

    // Pages of two, then one, with nothing skipped or repeated.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let mut request = server.admin(Method::GET, &path).query(&[("limit", "2")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page = expect_json(request.send().await.unwrap(), StatusCode::OK).await;
        for item in page["data"].as_array().unwrap() {
            paged.push(item["id"].as_str().unwrap().to_owned());
        }
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(paged, newest_first);
    assert_eq!(cursor, None);

    for (name, value) in [
        ("limit", "0"),
        ("limit", "201"),
        ("limit", "two"),
        ("cursor", "nonsense"),
        ("cursor", "1.msg_1'--"),
    ] {
        let response = server
            .admin(Method::GET, &path)
            .query(&[(name, value)])
            .send()
            .await
            .unwrap();
        let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert_eq!(error["error"]["details"]["field"], name);
    }
}

#[tokio::test]
async fn retry_schedules_a_new_attempt_under_the_same_id() {
    let server = TestServer::start().await;
    let (project, webhook) = project_with_webhook(&server).await;
    let project_id = Uuid::parse_str(&project).unwrap();
    let endpoint = uuid(&webhook["id"]);
    let failed = insert_delivery(&server, project_id, endpoint, "failed", Utc::now()).await;
    insert_attempt(&server, project_id, &failed, 1, Some(500), None).await;
    assert_eq!(
        delivery_row(&server, project_id, &failed).await,
        ("failed".to_owned(), None)
    );

    let path = format!(
        "{}/{endpoint}/deliveries/{failed}/retry",
        webhooks_path(&project)
    );
    let before = Utc::now() - Duration::seconds(1);
    let retried = expect_json(
        server.admin(Method::POST, &path).send().await.unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(retried["id"], failed.as_str());
    assert_eq!(retried["state"], "pending");
    let next: DateTime<Utc> = retried["nextAttemptAt"].as_str().unwrap().parse().unwrap();
    assert!(next >= before && next <= Utc::now() + Duration::seconds(1));
    let (state, due) = delivery_row(&server, project_id, &failed).await;
    assert_eq!(state, "pending");
    assert_eq!(due, Some(next));

    // A pending delivery due later is brought forward; its id stays.
    let pending = insert_delivery(&server, project_id, endpoint, "pending", Utc::now()).await;
    let (_, due_later) = delivery_row(&server, project_id, &pending).await;
    let path = format!(
        "{}/{endpoint}/deliveries/{pending}/retry",
        webhooks_path(&project)
    );
    let retried = expect_json(
        server.admin(Method::POST, &path).send().await.unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(retried["id"], pending.as_str());
    let (_, due_now) = delivery_row(&server, project_id, &pending).await;
    assert!(due_now.unwrap() < due_later.unwrap());

    // The listing shows it pending, attempts kept.
    let page = expect_json(
        server
            .admin(
                Method::GET,
                &format!("{}/{endpoint}/deliveries", webhooks_path(&project)),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let listed = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == failed.as_str())
        .unwrap();
    assert_eq!(listed["state"], "pending");
    assert_eq!(listed["attempts"], 1);
    assert_eq!(listed["lastAttempt"]["responseStatus"], 500);

    // A delivery of another endpoint of the same project is not found under this one.
    let other = expect_json(
        create(
            &server,
            &project,
            json!({ "url": "https://other.example/", "events": ["points.changed"] }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!(
        "{}/{}/deliveries/{failed}/retry",
        webhooks_path(&project),
        other["id"].as_str().unwrap()
    );
    let response = server.admin(Method::POST, &path).send().await.unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn deleting_a_webhook_fails_its_pending_deliveries() {
    let server = TestServer::start().await;
    let (project, webhook) = project_with_webhook(&server).await;
    let project_id = Uuid::parse_str(&project).unwrap();
    let endpoint = uuid(&webhook["id"]);
    let pending = insert_delivery(&server, project_id, endpoint, "pending", Utc::now()).await;
    let delivered = insert_delivery(&server, project_id, endpoint, "delivered", Utc::now()).await;
    // A pending delivery of another endpoint of the project is left alone.
    let other = expect_json(
        create(
            &server,
            &project,
            json!({ "url": "https://other.example/", "events": ["points.changed"] }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let others = insert_delivery(
        &server,
        project_id,
        uuid(&other["id"]),
        "pending",
        Utc::now(),
    )
    .await;

    let path = format!("{}/{endpoint}", webhooks_path(&project));
    let response = server.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        delivery_row(&server, project_id, &pending).await,
        ("failed".to_owned(), None)
    );
    assert_eq!(
        delivery_row(&server, project_id, &delivered).await.0,
        "delivered"
    );
    let (state, due) = delivery_row(&server, project_id, &others).await;
    assert_eq!(state, "pending");
    assert!(due.is_some());

    let listed = expect_json(
        server
            .admin(Method::GET, &webhooks_path(&project))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let ids: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["id"])
        .collect();
    assert_eq!(ids, vec![&other["id"]]);

    // Repeating it is harmless; its deliveries stay readable, and cannot be retried.
    let response = server.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let page = expect_json(
        server
            .admin(Method::GET, &format!("{path}/deliveries"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let response = server
        .admin(Method::POST, &format!("{path}/deliveries/{pending}/retry"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, "conflict").await;
}
