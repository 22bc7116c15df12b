//! The trust boundary under attack (issue 18): decisions that must hold at the moment an event is
//! accepted however slowly its body arrives, header-derived fields inside the size limits, budgets
//! that one key class or one tenant cannot spend for another, reserved names, and the small holes
//! (rolling an expired key, multi-member gzip).

use std::{io::Write, time::Duration};

use gamify_common::{ApiKey, KeyType};
use gamify_db::sea_orm::{ConnectionTrait, DbBackend, Statement};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::{TestServer, create_topic, expect_error, expect_json, read_topic, settings};

fn address(server: &TestServer) -> String {
    server.url("").trim_start_matches("http://").to_owned()
}

/// A request whose headers and first bytes of body are sent, the rest held back.
struct SlowRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowRequest {
    async fn start(server: &TestServer, path: &str, key: &str, body: &Value) -> Self {
        let body = body.to_string().into_bytes();
        let mut stream = TcpStream::connect(address(server)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..5]).await.unwrap();
        Self {
            stream,
            rest: body[5..].to_vec(),
        }
    }

    /// Sends the rest of the body; the status and JSON body of the answer.
    async fn finish(mut self) -> (u16, Value) {
        self.stream.write_all(&self.rest).await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            self.stream.read_to_end(&mut received),
        )
        .await
        .expect("no answer")
        .unwrap();
        let text = String::from_utf8_lossy(&received).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// Waits until the gateway has authenticated a request with the key `key_id`: it records the
/// key's first use once the key check passed.
async fn wait_until_key_checked(server: &TestServer, key_id: &str) {
    let sql = format!(
        "SELECT count(*) AS n FROM api_keys WHERE id = '{key_id}' AND last_used_at IS NOT NULL"
    );
    for _ in 0..500 {
        let row = server
            .db
            .shared()
            .query_one(Statement::from_string(DbBackend::Postgres, sql.clone()))
            .await
            .unwrap()
            .unwrap();
        if row.try_get::<i64>("", "n").unwrap() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway never checked key {key_id}");
}

fn purchase() -> Value {
    json!({ "event": "purchase", "userId": "u1", "properties": { "orderId": "o-1", "amount": 4200 } })
}

#[tokio::test]
async fn a_key_revoked_while_its_body_arrives_is_refused_when_the_body_is_complete() {
    let server = TestServer::start().await;
    let (project, _, _) = server.project_with_keys().await;
    let key = server.create_key(&project, "secret").await;
    let sk = key["key"].as_str().unwrap();
    let slow = SlowRequest::start(&server, "/v1/events/track", sk, &purchase()).await;
    wait_until_key_checked(&server, key["id"].as_str().unwrap()).await;

    assert_eq!(
        server.revoke_key(&project, &key).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(
        server.track(sk, purchase()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    let (status, body) = slow.finish().await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn an_event_trusted_while_its_body_arrives_is_refused_from_a_publishable_key() {
    let server = TestServer::start().await;
    let (project, _, _) = server.project_with_keys().await;
    let key = server.create_key(&project, "publishable").await;
    let pk = key["key"].as_str().unwrap();
    let reward = json!({ "event": "vip.reward", "userId": "u1" });
    let slow = SlowRequest::start(&server, "/v1/events/track", pk, &reward).await;
    wait_until_key_checked(&server, key["id"].as_str().unwrap()).await;

    let response = server
        .admin(Method::PATCH, &format!("/v1/projects/{project}"))
        .json(&json!({ "trustedEvents": ["vip.reward"] }))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;
    expect_error(
        server.track(pk, reward.clone()).await,
        StatusCode::FORBIDDEN,
        "event_requires_secret_key",
    )
    .await;
    let (status, body) = slow.finish().await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "event_requires_secret_key");
}

/// Once a revocation has answered, no instance accepts the key: not the one that revoked it, and
/// not another that had it cached a moment before.
#[tokio::test]
async fn once_a_revocation_answers_every_instance_refuses_the_key() {
    let first = TestServer::start().await;
    let second = TestServer::start().await;
    let (project, _, _) = first.project_with_keys().await;
    for _ in 0..5 {
        let key = first.create_key(&project, "secret").await;
        let sk = key["key"].as_str().unwrap();
        for server in [&first, &second] {
            let response = server.track(sk, purchase()).await;
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
        assert_eq!(
            first.revoke_key(&project, &key).await.status(),
            StatusCode::NO_CONTENT
        );
        for server in [&second, &first] {
            expect_error(
                server.track(sk, purchase()).await,
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
            )
            .await;
        }
    }
}

/// The User-Agent is copied into every event: it is cut to a bounded length, and a header block
/// larger than the server reads is refused before it reaches any handler.
#[tokio::test]
async fn the_user_agent_is_bounded_in_every_event() {
    let topic = create_topic(1).await;
    let mut settings = settings();
    settings.kafka_topic = topic.clone();
    let server = TestServer::with_settings(settings).await;
    let (_, pk, _) = server.project_with_keys().await;

    let huge = "M".repeat(420_000);
    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header("user-agent", &huge)
        .json(&json!({ "event": "page_view", "userId": "u1" }))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    let long = format!("Mozilla/5.0 {}", "M".repeat(20_000));
    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header("user-agent", &long)
        .json(&json!({ "event": "page_view", "userId": "u1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({ "event": "click", "userId": format!("u{i}") }))
        .collect();
    let response = server
        .request(Method::POST, "/v1/events/batch")
        .header("x-api-key", &pk)
        .header("user-agent", &long)
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let messages = read_topic(&topic, 11, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 11);
    for message in &messages {
        assert!(message.payload.len() < 4_096, "{}", message.payload.len());
        let envelope = message.envelope();
        let agent = envelope["context"]["userAgent"].as_str().unwrap();
        assert!(agent.len() <= gamify_common::ingest::MAX_USER_AGENT_BYTES);
        assert!(long.starts_with(agent));
    }
}

/// A project's ceiling is kept per key class: browsers spending theirs never refuse the events of
/// the project's servers.
#[tokio::test]
async fn publishable_traffic_cannot_spend_the_secret_keys_budget() {
    let server = TestServer::start().await;
    let (project, pk, sk) = server.project_with_keys().await;
    let response = server
        .admin(Method::PATCH, &format!("/v1/projects/{project}"))
        .json(&json!({ "rateLimit": { "eventsPerSecond": 1, "burst": 500 } }))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;
    let batch: Vec<Value> = (0..499)
        .map(|i| json!({ "event": "click", "userId": format!("u{i}") }))
        .collect();
    let response = server
        .request(Method::POST, "/v1/events/batch")
        .header("x-api-key", &pk)
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = server
        .request(Method::POST, "/v1/events/batch")
        .header("x-api-key", &pk)
        .json(&json!({ "batch": [{ "event": "click", "userId": "u" }, { "event": "click", "userId": "v" }] }))
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "project_rate_limited",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            server.track(&sk, purchase()).await.status(),
            StatusCode::ACCEPTED
        );
    }
}

/// Bad keys from one address do not lock out another tenant's valid keys behind that address,
/// whether those keys were in use already or never seen by this gateway.
#[tokio::test]
async fn bad_keys_from_a_shared_address_do_not_lock_out_valid_keys() {
    let mut settings = settings();
    settings.trusted_proxy_hops = 1;
    settings.http.invalid_keys = gamify_api::config::HttpLimits::default().invalid_keys;
    let server = TestServer::with_settings(settings).await;
    let (_, _, warm) = server.project_with_keys().await;
    let (_, _, cold) = server.project_with_keys().await;
    let nat = format!(
        "198.51.{}.{}",
        uuid::Uuid::new_v4().as_u128() % 250,
        uuid::Uuid::new_v4().as_u128() % 250
    );
    let send = |key: String| {
        server
            .request(Method::POST, "/v1/events/track")
            .header("x-forwarded-for", &nat)
            .header("x-api-key", key)
            .json(&purchase())
            .send()
    };
    assert_eq!(
        send(warm.clone()).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let made_up = format!("sk_live_{}", "0".repeat(64));
    for _ in 0..22 {
        let status = send(made_up.clone()).await.unwrap().status();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
    }
    // Then many distinct random keys, which do cost lookups: the address' budget is spent.
    let mut limited = 0;
    for _ in 0..40 {
        let random = ApiKey::generate(KeyType::Secret);
        if send(random.expose().to_owned()).await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS
        {
            limited += 1;
        }
    }
    assert!(limited > 0, "the unknown-key budget never applied");
    assert_eq!(
        send(warm.clone()).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(cold.clone()).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let read = server
        .request(Method::GET, "/v1/events?limit=1")
        .header("x-forwarded-for", &nat)
        .bearer_auth(&warm)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
}

/// `$`-prefixed names are the platform's own: a track call cannot claim one.
#[tokio::test]
async fn reserved_event_names_are_refused_on_track() {
    let server = TestServer::start().await;
    let (_, pk, sk) = server.project_with_keys().await;
    for key in [&pk, &sk] {
        for name in ["$identify", "$anything"] {
            let body = expect_error(
                server
                    .track(key, json!({ "event": name, "userId": "u1" }))
                    .await,
                StatusCode::BAD_REQUEST,
                "invalid_request",
            )
            .await;
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("reserved"),
                "{body}"
            );
        }
    }
    let response = server
        .request(Method::POST, "/v1/events/batch")
        .header("x-api-key", &pk)
        .json(&json!({ "batch": [{ "event": "click", "userId": "u" }, { "event": "$identify", "userId": "u" }] }))
        .send()
        .await
        .unwrap();
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(body["error"]["details"]["indexes"], json!([1]));
    // Identify keeps its own route.
    let response = server
        .request(Method::POST, "/v1/identify")
        .header("x-api-key", &pk)
        .json(&json!({ "userId": "u1", "traits": { "plan": "pro" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_expired_key_cannot_be_rolled() {
    let server = TestServer::start().await;
    let (project, _, _) = server.project_with_keys().await;
    let key = server.create_key(&project, "secret").await;
    let response = server
        .roll_key(&project, &key, Some(json!({ "expiresInSeconds": 0 })))
        .await;
    expect_json(response, StatusCode::CREATED).await;
    let response = server.roll_key(&project, &key, None).await;
    expect_error(response, StatusCode::CONFLICT, "conflict").await;
}

/// A gzip body of several members (RFC 1952 allows concatenating them) is read whole, never cut
/// after the first.
#[tokio::test]
async fn every_member_of_a_gzip_body_is_read() {
    let topic = create_topic(1).await;
    let mut settings = settings();
    settings.kafka_topic = topic.clone();
    let server = TestServer::with_settings(settings).await;
    let (_, pk, _) = server.project_with_keys().await;
    let gzip = |part: &str| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(part.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let mut body = gzip(r#"{"event":"page_view","userId":"u1","#);
    body.extend(gzip(r#""properties":{"page":"/second-member"}}"#));
    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::ACCEPTED).await;
    let messages = read_topic(&topic, 1, Duration::from_secs(10)).await;
    assert_eq!(
        messages[0].envelope()["properties"]["page"],
        "/second-member"
    );
}

/// A gateway cut off from the invalidation feed cannot learn of a change: it stops serving what it
/// cached within a fraction of a second and asks Postgres instead, rather than for the cache's
/// lifetime (10 s here).
#[tokio::test]
async fn a_gateway_without_its_invalidation_feed_stops_serving_its_cache() {
    use std::time::Instant;

    let mut redis = crate::harness::PrivateRedis::start().await;
    let mut settings = settings();
    settings.redis_url = redis.url.clone();
    let server = TestServer::with_settings(settings).await;
    let (project, _, _) = server.project_with_keys().await;
    let key = server.create_key(&project, "secret").await;
    let sk = key["key"].as_str().unwrap();
    assert_eq!(
        server.track(sk, purchase()).await.status(),
        StatusCode::ACCEPTED
    );
    redis.stop().await;
    // Revoked behind this gateway's back, as another gateway would while Redis is away.
    server
        .db
        .shared()
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid",
            [key["id"].as_str().unwrap().into()],
        ))
        .await
        .unwrap();
    let revoked = Instant::now();
    loop {
        let status = server.track(sk, purchase()).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "the cached key was still served after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
