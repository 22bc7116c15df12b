//! The tenant read API. Rows are written the way the worker writes them: as the application role,
//! inside the tenant's scope.

use chrono::{DateTime, Duration, Utc};
use gamify_db::sea_orm::{ConnectionTrait, Statement};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestServer, expect_error, expect_json};

struct Seed<'a> {
    server: &'a TestServer,
    project: Uuid,
    key_id: Uuid,
}

impl Seed<'_> {
    async fn user(&self, external_id: &str, metadata: Value) -> Uuid {
        let txn = self.server.db.tenant(self.project).await.unwrap();
        let row = txn
            .query_one(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO end_users (id, project_id, external_id, metadata) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id",
                [self.project.into(), external_id.into(), metadata.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        txn.commit().await.unwrap();
        row.try_get("", "id").unwrap()
    }

    async fn event(
        &self,
        event: &str,
        user: Option<Uuid>,
        status: &str,
        occurred_at: DateTime<Utc>,
    ) -> Uuid {
        let id = Uuid::now_v7();
        let txn = self.server.db.tenant(self.project).await.unwrap();
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO events (id, project_id, message_id, event_type, user_id, payload, key_id, key_type,
                                 status, error_details, occurred_at, received_at, processed_at)
             VALUES ($1, $2, $3, $4, $5, '{\"n\":1}', $6, 'secret', $7,
                     CASE WHEN $7 = 'failed' THEN 'publishable key cannot send purchase' END, $8, now(), now())",
            [
                id.into(),
                self.project.into(),
                id.to_string().into(),
                event.into(),
                user.into(),
                self.key_id.into(),
                status.into(),
                occurred_at.into(),
            ],
        ))
        .await
        .unwrap();
        txn.commit().await.unwrap();
        id
    }
}

/// A project with keys, ready for seeding: (seed, pk, sk).
async fn seeded(server: &TestServer) -> (Seed<'_>, String, String) {
    let project = server.create_project().await;
    let project_id = project["id"].as_str().unwrap();
    let pk = server.create_key(project_id, "publishable").await;
    let sk = server.create_key(project_id, "secret").await;
    let seed = Seed {
        server,
        project: Uuid::parse_str(project_id).unwrap(),
        key_id: Uuid::parse_str(sk["id"].as_str().unwrap()).unwrap(),
    };
    (
        seed,
        pk["key"].as_str().unwrap().to_owned(),
        sk["key"].as_str().unwrap().to_owned(),
    )
}

async fn get(server: &TestServer, key: &str, path: &str) -> reqwest::Response {
    server
        .request(Method::GET, path)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn events_are_listed_newest_first_with_their_source() {
    let server = TestServer::start().await;
    let (seed, pk, sk) = seeded(&server).await;
    let user = seed.user("user_123", json!({})).await;
    let now = Utc::now();
    let older = seed
        .event(
            "page_view",
            Some(user),
            "processed",
            now - Duration::minutes(5),
        )
        .await;
    let newer = seed
        .event("purchase", Some(user), "failed", now - Duration::minutes(1))
        .await;

    let page = expect_json(get(&server, &sk, "/v1/events").await, StatusCode::OK).await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], newer.to_string());
    assert_eq!(data[1]["id"], older.to_string());
    assert_eq!(page["nextCursor"], Value::Null);
    let item = &data[0];
    assert_eq!(item["event"], "purchase");
    assert_eq!(item["userId"], "user_123");
    assert_eq!(item["status"], "failed");
    assert_eq!(item["errorDetails"], "publishable key cannot send purchase");
    assert_eq!(
        item["source"],
        json!({ "keyId": seed.key_id, "keyType": "secret" })
    );
    assert_eq!(item["properties"], json!({ "n": 1 }));
    for field in ["messageId", "occurredAt", "receivedAt", "processedAt"] {
        assert!(item[field].is_string(), "{field} in {item}");
    }

    // Reading is for servers: a publishable key is refused.
    expect_error(
        get(&server, &pk, "/v1/events").await,
        StatusCode::FORBIDDEN,
        "secret_key_required",
    )
    .await;
    expect_error(
        get(&server, "sk_live_nope", "/v1/events").await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn filters_narrow_the_list() {
    let server = TestServer::start().await;
    let (seed, _, sk) = seeded(&server).await;
    let alice = seed.user("alice", json!({})).await;
    let bob = seed.user("bob", json!({})).await;
    let now = Utc::now();
    seed.event(
        "page_view",
        Some(alice),
        "processed",
        now - Duration::hours(3),
    )
    .await;
    seed.event(
        "purchase",
        Some(alice),
        "processed",
        now - Duration::hours(2),
    )
    .await;
    seed.event("page_view", Some(bob), "failed", now - Duration::hours(1))
        .await;
    let count = |page: Value| page["data"].as_array().unwrap().len();

    let ask = |query: String| {
        let server = &server;
        let sk = sk.clone();
        async move {
            expect_json(
                get(server, &sk, &format!("/v1/events?{query}")).await,
                StatusCode::OK,
            )
            .await
        }
    };
    assert_eq!(count(ask("userId=alice".into()).await), 2);
    assert_eq!(count(ask("event=page_view".into()).await), 2);
    assert_eq!(count(ask("status=failed".into()).await), 1);
    assert_eq!(count(ask("userId=alice&event=purchase".into()).await), 1);
    let since = (now - Duration::minutes(150))
        .to_rfc3339()
        .replace('+', "%2B");
    let until = (now - Duration::minutes(30))
        .to_rfc3339()
        .replace('+', "%2B");
    assert_eq!(count(ask(format!("since={since}")).await), 2);
    assert_eq!(count(ask(format!("since={since}&until={until}")).await), 2);
    assert_eq!(count(ask("userId=nobody".into()).await), 0);

    for query in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "status=done",
        "since=yesterday",
        "cursor=abc",
    ] {
        expect_error(
            get(&server, &sk, &format!("/v1/events?{query}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
}

#[tokio::test]
async fn cursor_pagination_is_stable_under_concurrent_inserts() {
    let server = TestServer::start().await;
    let (seed, _, sk) = seeded(&server).await;
    let now = Utc::now();
    let mut expected = Vec::new();
    for minute in 0..7 {
        expected.push(
            seed.event(
                "click",
                None,
                "processed",
                now - Duration::minutes(10 + minute),
            )
            .await,
        );
    }

    let mut seen = Vec::new();
    let mut path = "/v1/events?limit=3".to_owned();
    loop {
        let page = expect_json(get(&server, &sk, &path).await, StatusCode::OK).await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        // New events arrive while the client pages: they are newer than the cursor and must not
        // shift or repeat anything on later pages.
        seed.event("click", None, "processed", now).await;
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/v1/events?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_key_never_sees_another_projects_rows() {
    let server = TestServer::start().await;
    let (mine, _, my_sk) = seeded(&server).await;
    let (theirs, _, their_sk) = seeded(&server).await;
    let their_user = theirs.user("shared-id", json!({ "owner": "them" })).await;
    theirs
        .event("purchase", Some(their_user), "processed", Utc::now())
        .await;
    mine.user("shared-id", json!({ "owner": "me" })).await;

    let page = expect_json(get(&server, &my_sk, "/v1/events").await, StatusCode::OK).await;
    assert_eq!(page["data"], json!([]));
    let page = expect_json(get(&server, &their_sk, "/v1/events").await, StatusCode::OK).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);

    let user = expect_json(
        get(&server, &my_sk, "/v1/users/shared-id").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(user["metadata"], json!({ "owner": "me" }));
    assert_eq!(user["eventCount"], 0);
}

#[tokio::test]
async fn users_are_read_with_their_activity() {
    let server = TestServer::start().await;
    let (seed, pk, sk) = seeded(&server).await;
    let user = seed.user("user 7/ü", json!({ "plan": "pro" })).await;
    let first = Utc::now() - Duration::days(3);
    let last = Utc::now() - Duration::hours(1);
    seed.event("login", Some(user), "processed", first).await;
    seed.event("page_view", Some(user), "processed", last).await;

    let body = expect_json(
        get(&server, &sk, "/v1/users/user%207%2F%C3%BC").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["externalId"], "user 7/ü");
    assert_eq!(body["metadata"], json!({ "plan": "pro" }));
    assert_eq!(body["eventCount"], 2);
    let at = |field: &str| DateTime::parse_from_rfc3339(body[field].as_str().unwrap()).unwrap();
    assert_eq!(at("firstSeenAt").timestamp(), first.timestamp());
    assert!(at("lastSeenAt").timestamp() >= last.timestamp());

    expect_error(
        get(&server, &sk, "/v1/users/nobody").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        get(&server, &pk, "/v1/users/user%207%2F%C3%BC").await,
        StatusCode::FORBIDDEN,
        "secret_key_required",
    )
    .await;
}

/// `count` events straight into the project, one statement: every third a `purchase` of user
/// `buyer`, the rest `page_view`s without a user; one per second from `start`.
async fn bulk_events(seed: &Seed<'_>, count: i32, start: DateTime<Utc>) {
    let buyer = seed.user("buyer", json!({})).await;
    let txn = seed.server.db.tenant(seed.project).await.unwrap();
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO events (id, project_id, message_id, event_type, user_id, anonymous_id, payload,
                             key_id, key_type, status, occurred_at, received_at, processed_at)
         SELECT gen_random_uuid(), $1, 'm' || n,
                CASE WHEN n % 3 = 0 THEN 'purchase' ELSE 'page_view' END,
                CASE WHEN n % 3 = 0 THEN $2::uuid END,
                CASE WHEN n % 3 = 0 THEN NULL ELSE 'anon-' || n END,
                jsonb_build_object('n', n, 'note', 'a, \"quoted\"\nline'),
                $3, 'secret', 'processed', $4::timestamptz + n * interval '1 second', now(), now()
         FROM generate_series(1, $5) AS n",
        [
            seed.project.into(),
            buyer.into(),
            seed.key_id.into(),
            start.into(),
            count.into(),
        ],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn an_export_streams_every_matching_event_once_oldest_first() {
    let server = TestServer::start().await;
    let (seed, pk, sk) = seeded(&server).await;
    let start = Utc::now() - Duration::days(1);
    // More than two of the export's chunks (1000 events each).
    bulk_events(&seed, 2345, start).await;

    let response = get(&server, &sk, "/v1/events/export").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.unwrap();
    let events: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 2345);
    let ns: Vec<i64> = events
        .iter()
        .map(|e| e["properties"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ns,
        (1..=2345).collect::<Vec<_>>(),
        "every event once, oldest first"
    );
    assert_eq!(events[2]["userId"], "buyer");
    assert_eq!(events[0]["source"]["keyType"], "secret");

    // The listing's filters, with from/to.
    let from = (start + Duration::seconds(1001)).to_rfc3339();
    let to = (start + Duration::seconds(2001)).to_rfc3339();
    let response = server
        .request(Method::GET, "/v1/events/export")
        .bearer_auth(&sk)
        .query(&[
            ("format", "csv"),
            ("event", "purchase"),
            ("from", from.as_str()),
            ("to", to.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("events.csv")
    );
    let csv = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(&reader.headers().unwrap()[2], "event");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    // n in [1001, 2000] with n % 3 == 0.
    let expected: Vec<i64> = (1001..=2000).filter(|n| n % 3 == 0).collect();
    assert_eq!(rows.len(), expected.len());
    for (row, n) in rows.iter().zip(expected) {
        assert_eq!(&row[2], "purchase");
        assert_eq!(&row[3], "buyer");
        let properties: Value = serde_json::from_str(&row[12]).unwrap();
        assert_eq!(properties["n"], n);
        assert_eq!(properties["note"], "a, \"quoted\"\nline");
    }

    // Nothing matches: NDJSON is empty, CSV is its header.
    let response = get(&server, &sk, "/v1/events/export?format=csv&event=nothing").await;
    assert_eq!(response.text().await.unwrap().lines().count(), 1);
    let response = get(&server, &sk, "/v1/events/export?event=nothing").await;
    assert_eq!(response.text().await.unwrap(), "");

    // Bad input, and a publishable key.
    let response = get(&server, &sk, "/v1/events/export?format=xml").await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = get(&server, &sk, "/v1/events/export?from=yesterday").await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = get(&server, &pk, "/v1/events/export").await;
    expect_error(response, StatusCode::FORBIDDEN, "secret_key_required").await;
}

#[tokio::test]
async fn an_export_never_shows_another_projects_events() {
    let server = TestServer::start().await;
    let (seed_a, _, sk_a) = seeded(&server).await;
    let (seed_b, _, _) = seeded(&server).await;
    bulk_events(&seed_a, 5, Utc::now() - Duration::hours(1)).await;
    bulk_events(&seed_b, 7, Utc::now() - Duration::hours(1)).await;
    let body = get(&server, &sk_a, "/v1/events/export")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(body.lines().count(), 5);
}
