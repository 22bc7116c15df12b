//! Ingestion endpoints against the real broker: every status, and what lands on the topic.

use std::{io::Write, time::Duration};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::harness::{
    TestServer, create_topic, envelope_secret, expect_error, expect_json, read_topic, settings,
    topic_message_count,
};

/// A server producing to a topic of this test's own.
async fn server_with_topic() -> (TestServer, String) {
    let topic = create_topic(3).await;
    let mut settings = settings();
    settings.kafka_topic = topic.clone();
    (TestServer::with_settings(settings).await, topic)
}

#[tokio::test]
async fn publishable_page_view_is_acknowledged_and_signed_on_the_topic() {
    let (server, topic) = server_with_topic().await;
    let (project, pk, _) = server.project_with_keys().await;
    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header(header::USER_AGENT, "test-browser/1.0")
        .json(&json!({
            "event": "page_view",
            "userId": "user_123",
            "properties": { "page": "/products" },
            "context": { "library": { "name": "@gamify/core", "version": "0.1.0" } }
        }))
        .send()
        .await
        .unwrap();
    let accepted = expect_json(response, StatusCode::ACCEPTED).await;

    let messages = read_topic(&topic, 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.key, format!("{project}:user_123"));
    let signature = message.signature.as_deref().expect("no signature header");
    assert!(gamify_common::envelope::verify(
        envelope_secret().as_bytes(),
        &message.payload,
        signature.as_bytes()
    ));
    let envelope = message.envelope();
    assert_eq!(envelope["v"], 1);
    assert_eq!(envelope["id"], accepted["id"]);
    assert_eq!(envelope["messageId"], accepted["messageId"]);
    assert_eq!(envelope["projectId"], project.as_str());
    assert_eq!(envelope["keyType"], "publishable");
    assert_eq!(envelope["kind"], "track");
    assert_eq!(envelope["event"], "page_view");
    assert_eq!(envelope["userId"], "user_123");
    assert_eq!(envelope["properties"]["page"], "/products");
    assert_eq!(envelope["context"]["userAgent"], "test-browser/1.0");
    assert_eq!(envelope["context"]["ip"], "127.0.0.1");
    assert_eq!(envelope["context"]["library"]["name"], "@gamify/core");
    assert!(envelope["keyId"].is_string());
    // The envelope parses into the shared definition the worker uses.
    let parsed: gamify_common::Envelope = serde_json::from_slice(&message.payload).unwrap();
    assert!(parsed.validate().is_empty());
}

#[tokio::test]
async fn trusted_events_need_a_secret_key_and_nothing_is_produced_for_a_publishable_one() {
    let (server, topic) = server_with_topic().await;
    let (project, pk, sk) = server.project_with_keys().await;

    for event in ["purchase", "quest.completed", "referral_success"] {
        let response = server
            .track(&pk, json!({ "event": event, "userId": "u1" }))
            .await;
        let body = expect_error(response, StatusCode::FORBIDDEN, "event_requires_secret_key").await;
        assert_eq!(body["error"]["details"]["events"], json!([event]));
    }

    // A project's own trusted names are refused for its publishable key too.
    let response = server
        .track(&pk, json!({ "event": "bonus.granted", "userId": "u1" }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    server
        .admin(Method::PATCH, &format!("/v1/projects/{project}"))
        .json(&json!({ "trustedEvents": ["bonus.granted"] }))
        .send()
        .await
        .unwrap();
    // The project change reaches the warm key cache at once.
    let response = server
        .track(&pk, json!({ "event": "bonus.granted", "userId": "u1" }))
        .await;
    expect_error(response, StatusCode::FORBIDDEN, "event_requires_secret_key").await;
    assert_eq!(
        topic_message_count(&topic).await,
        1,
        "only the first bonus.granted"
    );

    // Secret keys may send everything.
    for event in ["purchase", "bonus.granted", "page_view"] {
        let response = server
            .track(
                &sk,
                json!({ "event": event, "userId": "u1", "properties": { "amount": 4200 } }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{event}");
    }
    let messages = read_topic(&topic, 4, Duration::from_secs(10)).await;
    let purchase = messages
        .iter()
        .map(|m| m.envelope())
        .find(|e| e["event"] == "purchase")
        .unwrap();
    assert_eq!(purchase["keyType"], "secret");
}

#[tokio::test]
async fn api_key_failures_are_401_and_indistinguishable() {
    let server = TestServer::start().await;
    let (project, pk, _) = server.project_with_keys().await;
    let body = json!({ "event": "page_view", "userId": "u1" });
    let unknown = format!("pk_live_{}", "0".repeat(64));

    let revoked = server.create_key(&project, "publishable").await;
    server.revoke_key(&project, &revoked).await;
    let expired = server.create_key(&project, "publishable").await;
    server.roll_key(&project, &expired, None).await;

    let mut messages = Vec::new();
    let no_key = server
        .request(Method::POST, "/v1/events/track")
        .json(&body)
        .send()
        .await
        .unwrap();
    messages.push(expect_error(no_key, StatusCode::UNAUTHORIZED, "invalid_api_key").await);
    for key in [
        "garbage",
        &pk[..40],
        &format!("{pk}0"),
        &pk.to_uppercase(),
        &unknown,
        revoked["key"].as_str().unwrap(),
        expired["key"].as_str().unwrap(),
    ] {
        let response = server.track(key, body.clone()).await;
        messages.push(expect_error(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await);
    }
    assert!(
        messages.windows(2).all(|pair| pair[0] == pair[1]),
        "{messages:?}"
    );

    // Both header forms authenticate.
    let response = server.track(&pk, body.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = server
        .request(Method::POST, "/v1/events/track")
        .bearer_auth(&pk)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn invalid_events_are_400_with_field_details() {
    let server = TestServer::start().await;
    let (_, pk, _) = server.project_with_keys().await;
    for (body, field) in [
        (json!({ "event": "page_view" }), "userId"),
        (json!({ "event": "", "userId": "u" }), "event"),
        (json!({ "event": "a\u{1}b", "userId": "u" }), "event"),
        (
            json!({ "event": "x", "userId": "u", "properties": "nope" }),
            "properties",
        ),
        (
            json!({ "event": "x", "userId": "u", "timestamp": "last week" }),
            "timestamp",
        ),
        (
            json!({ "event": "x", "userId": "u", "messageId": "m".repeat(101) }),
            "messageId",
        ),
        (json!({ "event": "x", "userId": "u".repeat(256) }), "userId"),
    ] {
        let response = server.track(&pk, body).await;
        let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert_eq!(
            error["error"]["details"]["errors"][0]["field"], field,
            "{error}"
        );
    }

    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"event\":")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;

    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(json!({ "event": "x", "userId": "u" }).to_string())
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn message_id_and_clock_skew_reach_the_envelope() {
    let (server, topic) = server_with_topic().await;
    let (_, pk, _) = server.project_with_keys().await;
    // The client's clock runs an hour ahead.
    let sent_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let timestamp = sent_at - chrono::Duration::minutes(5);
    let response = server
        .track(
            &pk,
            json!({ "event": "page_view", "anonymousId": "anon-1", "messageId": "msg-42",
                    "timestamp": timestamp.to_rfc3339(), "sentAt": sent_at.to_rfc3339() }),
        )
        .await;
    let accepted = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(accepted["messageId"], "msg-42");
    let envelope = read_topic(&topic, 1, Duration::from_secs(10)).await[0].envelope();
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(envelope[field].as_str().unwrap()).unwrap()
    };
    let skew = (at("receivedAt") - at("occurredAt")).num_seconds();
    assert!(
        (299..=301).contains(&skew),
        "occurredAt is {skew}s before receivedAt"
    );
    assert_eq!(envelope["anonymousId"], "anon-1");
    assert_eq!(envelope["userId"], Value::Null);
}

#[tokio::test]
async fn identify_travels_as_an_identify_envelope() {
    let (server, topic) = server_with_topic().await;
    let (_, pk, _) = server.project_with_keys().await;
    let response = server
        .request(Method::POST, "/v1/identify")
        .header("x-api-key", &pk)
        .json(&json!({ "userId": "user_123", "traits": { "plan": "pro" } }))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::ACCEPTED).await;
    let envelope = read_topic(&topic, 1, Duration::from_secs(10)).await[0].envelope();
    assert_eq!(envelope["kind"], "identify");
    assert_eq!(envelope["event"], "$identify");
    assert_eq!(envelope["traits"]["plan"], "pro");

    let response = server
        .request(Method::POST, "/v1/identify")
        .header("x-api-key", &pk)
        .json(&json!({ "traits": { "plan": "pro" } }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

fn batch_of(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({ "event": "page_view", "userId": format!("u{}", i % 7) }))
        .collect()
}

async fn send_batch(server: &TestServer, key: &str, body: Value) -> reqwest::Response {
    server
        .request(Method::POST, "/v1/events/batch")
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_gets_one_verdict() {
    let (server, topic) = server_with_topic().await;
    let (_, pk, sk) = server.project_with_keys().await;

    let mut items = batch_of(5);
    items[1] = json!({ "event": "page_view" });
    items[3] = json!({ "event": "", "userId": "u" });
    let response = send_batch(&server, &pk, json!({ "batch": items })).await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(body["error"]["details"]["indexes"], json!([1, 3]));
    assert_eq!(
        body["error"]["details"]["errors"][0]["field"],
        "batch[1].userId"
    );

    // However many items fail, the message stays short and details lists them all.
    let response = send_batch(
        &server,
        &pk,
        json!({ "batch": vec![json!({ "event": "x" }); 10] }),
    )
    .await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("(and 7 more)")
    );
    assert_eq!(
        body["error"]["details"]["errors"].as_array().unwrap().len(),
        10
    );

    let mut items = batch_of(5);
    items[2] = json!({ "event": "purchase", "userId": "u" });
    items[4] = json!({ "event": "quest.completed", "userId": "u" });
    let response = send_batch(&server, &pk, json!({ "batch": items.clone() })).await;
    let body = expect_error(response, StatusCode::FORBIDDEN, "event_requires_secret_key").await;
    assert_eq!(body["error"]["details"]["indexes"], json!([2, 4]));
    assert_eq!(
        topic_message_count(&topic).await,
        0,
        "a refused batch produced events"
    );

    let response = send_batch(&server, &sk, json!({ "batch": items })).await;
    let body = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(body["accepted"], 5);
    assert_eq!(body["ids"].as_array().unwrap().len(), 5);

    let response = send_batch(
        &server,
        &pk,
        json!({ "batch": batch_of(500), "context": { "library": { "name": "web" } } }),
    )
    .await;
    assert_eq!(
        expect_json(response, StatusCode::ACCEPTED).await["accepted"],
        500
    );
    let messages = read_topic(&topic, 505, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 505);
    assert!(
        messages
            .iter()
            .filter(|m| m.envelope()["context"]["library"]["name"] == "web")
            .count()
            == 500
    );

    let response = send_batch(&server, &pk, json!({ "batch": batch_of(501) })).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let response = send_batch(&server, &pk, json!({ "batch": [] })).await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = send_batch(&server, &pk, json!({ "events": batch_of(1) })).await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(topic_message_count(&topic).await, 505);
}

#[tokio::test]
async fn size_limits_are_413() {
    let server = TestServer::start().await;
    let (_, pk, _) = server.project_with_keys().await;
    let big =
        json!({ "event": "x", "userId": "u", "properties": { "blob": "a".repeat(33 * 1024) } });
    let response = server.track(&pk, big.clone()).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = send_batch(
        &server,
        &pk,
        json!({ "batch": [batch_of(1)[0].clone(), big] }),
    )
    .await;
    let body = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(body["error"]["details"]["indexes"], json!([1]));

    // 20 events of 30 KB: each is allowed, the body is not.
    let items: Vec<Value> = (0..20)
        .map(|_| json!({ "event": "x", "userId": "u", "properties": { "blob": "a".repeat(30 * 1024) } }))
        .collect();
    let response = send_batch(&server, &pk, json!({ "batch": items })).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

/// The shared context of a batch is merged into every event before anything is produced: the
/// per-event limit holds for the event as produced and a request cannot fan out into megabytes.
#[tokio::test]
async fn a_batch_context_cannot_fan_out() {
    let (server, topic) = server_with_topic().await;
    let (_, pk, _) = server.project_with_keys().await;
    let tiny = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| json!({ "event": "click", "userId": format!("u{i}") }))
            .collect()
    };
    // 460 KB of context and 500 tiny items: under the body limit, 230 MB once merged.
    let huge_context = json!({ "page": { "title": "t".repeat(460 * 1024) } });
    let response = send_batch(
        &server,
        &pk,
        json!({ "context": huge_context, "batch": tiny(500) }),
    )
    .await;
    let body = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        body["error"]["details"]["indexes"]
            .as_array()
            .unwrap()
            .len(),
        500
    );

    // Every event fits within 32 KB once merged, but 200 × 20 KB is more than a request may produce.
    let context = json!({ "page": { "title": "t".repeat(20 * 1024) } });
    let response = send_batch(
        &server,
        &pk,
        json!({ "context": context, "batch": tiny(200) }),
    )
    .await;
    let body = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shared context"),
        "{body}"
    );
    // The same context with 20 events is fine.
    let response = send_batch(
        &server,
        &pk,
        json!({ "context": context, "batch": tiny(20) }),
    )
    .await;
    expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(topic_message_count(&topic).await, 20);
}

/// Whatever the gateway acknowledges the worker can store: input Postgres cannot hold is a 400
/// naming the field, never a 202 followed by a dead letter.
#[tokio::test]
async fn input_postgres_cannot_store_is_400_naming_the_field() {
    let (server, topic) = server_with_topic().await;
    let (_, pk, _) = server.project_with_keys().await;
    let cases = [
        (
            json!({ "event": "x", "userId": "u", "properties": { "note": "a\u{0}" } }),
            "properties.note",
        ),
        (
            json!({ "event": "x", "userId": "u", "properties": { "k\u{0}": 1 } }),
            "properties[\"k\\u0000\"]",
        ),
        (
            json!({ "event": "x", "userId": "u", "properties": { "a": { "b": ["\u{0}"] } } }),
            "properties.a.b[0]",
        ),
        (
            json!({ "event": "x", "userId": "u", "context": { "page": "\u{0}" } }),
            "context.page",
        ),
        (
            json!({ "event": "x", "userId": "u", "messageId": "m\u{0}" }),
            "messageId",
        ),
        (json!({ "event": "x", "userId": "u\u{0}" }), "userId"),
        (
            json!({ "event": "x", "anonymousId": "a\u{1b}" }),
            "anonymousId",
        ),
        (
            json!({ "event": "x", "userId": "u", "timestamp": "0000-01-01T00:00:00Z" }),
            "timestamp",
        ),
    ];
    for (body, field) in cases {
        let response = server.track(&pk, body.clone()).await;
        let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert_eq!(
            error["error"]["details"]["errors"][0]["field"], field,
            "{body}: {error}"
        );
    }
    let response = server
        .request(Method::POST, "/v1/identify")
        .header("x-api-key", &pk)
        .json(&json!({ "userId": "u", "traits": { "k\u{0}": "v" } }))
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(
        error["error"]["details"]["errors"][0]["field"],
        "traits[\"k\\u0000\"]"
    );
    assert_eq!(topic_message_count(&topic).await, 0);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_inflated_with_the_limit_checked_as_they_stream() {
    let server = TestServer::start().await;
    let (_, pk, _) = server.project_with_keys().await;
    let post = |body: Vec<u8>, encoding: &'static str| {
        server
            .request(Method::POST, "/v1/events/batch")
            .header("x-api-key", &pk)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, encoding)
            .body(body)
            .send()
    };
    let body = json!({ "batch": batch_of(10) }).to_string();
    let response = post(gzip(body.as_bytes()), "gzip").await.unwrap();
    assert_eq!(
        expect_json(response, StatusCode::ACCEPTED).await["accepted"],
        10
    );

    // 10 MB of spaces compresses to ~10 KB: refused once inflation passes 500 KB.
    let mut bomb = b"{\"batch\":[".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 10 * 1024 * 1024));
    bomb.extend(b"]}");
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 100 * 1024);
    let response = post(compressed, "gzip").await.unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = post(b"not gzip at all".to_vec(), "gzip").await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = post(body.into_bytes(), "br").await.unwrap();
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn broker_unreachable_is_503_never_202() {
    let mut settings = settings();
    settings.kafka_brokers = "127.0.0.1:1".to_owned();
    settings.produce_timeout = Duration::from_millis(1500);
    let server = TestServer::with_settings(settings).await;
    let (_, pk, _) = server.project_with_keys().await;

    let response = server
        .track(&pk, json!({ "event": "page_view", "userId": "u1" }))
        .await;
    assert!(response.headers().get(header::RETRY_AFTER).is_some());
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let response = send_batch(&server, &pk, json!({ "batch": batch_of(3) })).await;
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}

#[tokio::test]
async fn cors_preflight_allows_any_origin() {
    let server = TestServer::start().await;
    for path in ["/v1/events/track", "/v1/events/batch", "/v1/identify"] {
        let response = server
            .request(Method::OPTIONS, path)
            .header(header::ORIGIN, "https://shop.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,x-api-key",
            )
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let headers = response.headers();
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_lowercase();
        assert!(
            allowed.contains("x-api-key") && allowed.contains("content-type"),
            "{allowed}"
        );
    }
    let (_, pk, _) = server.project_with_keys().await;
    let response = server
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header(header::ORIGIN, "https://anywhere.example")
        .json(&json!({ "event": "page_view", "userId": "u" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

#[tokio::test]
async fn publishable_keys_can_be_restricted_to_origins() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    let project = project["id"].as_str().unwrap();
    let response = server
        .admin(Method::POST, &format!("/v1/projects/{project}/api-keys"))
        .json(&json!({ "name": "Shop", "type": "publishable", "allowedOrigins": ["https://shop.example"] }))
        .send()
        .await
        .unwrap();
    let key = expect_json(response, StatusCode::CREATED).await;
    let pk = key["key"].as_str().unwrap();
    let send = |origin: &'static str| {
        server
            .request(Method::POST, "/v1/events/track")
            .header("x-api-key", pk)
            .header(header::ORIGIN, origin)
            .json(&json!({ "event": "page_view", "userId": "u" }))
            .send()
    };
    assert_eq!(
        send("https://shop.example").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    expect_error(
        send("https://evil.example").await.unwrap(),
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
    )
    .await;

    // Changing the list takes effect at once.
    let response = server
        .admin(
            Method::PATCH,
            &format!(
                "/v1/projects/{project}/api-keys/{}",
                key["id"].as_str().unwrap()
            ),
        )
        .json(&json!({ "allowedOrigins": ["https://evil.example", "https://shop.example/"] }))
        .send()
        .await
        .unwrap();
    let updated = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        updated["allowedOrigins"],
        json!(["https://evil.example", "https://shop.example"])
    );
    assert_eq!(
        send("https://evil.example").await.unwrap().status(),
        StatusCode::ACCEPTED
    );

    for origins in [
        json!(["shop.example"]),
        json!(["https://shop.example/path"]),
        json!(["ftp://x.example"]),
    ] {
        let response = server
            .admin(
                Method::PATCH,
                &format!(
                    "/v1/projects/{project}/api-keys/{}",
                    key["id"].as_str().unwrap()
                ),
            )
            .json(&json!({ "allowedOrigins": origins }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = server
        .admin(Method::POST, &format!("/v1/projects/{project}/api-keys"))
        .json(&json!({ "name": "Server", "type": "secret", "allowedOrigins": ["https://shop.example"] }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

/// One publishable key serves every visitor of a site: an abusive client is throttled, the
/// others are not.
#[tokio::test]
async fn publishable_keys_are_limited_per_client_address() {
    let mut limited = settings();
    limited.trusted_proxy_hops = 1;
    limited.rate_limit.client = gamify_api::config::Quota {
        per_second: 1,
        burst: 3,
    };
    let server = TestServer::with_settings(limited).await;
    let (_, pk, _) = server.project_with_keys().await;
    let from = |ip: &str| {
        server
            .request(Method::POST, "/v1/events/track")
            .header("x-api-key", &pk)
            .header("x-forwarded-for", ip)
            .json(&json!({ "event": "page_view", "userId": "u" }))
    };
    for _ in 0..3 {
        let response = from("198.51.100.1").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response = from("198.51.100.1").send().await.unwrap();
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    expect_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "client_rate_limited",
    )
    .await;
    // 50 other visitors of the same site, 3 requests each: none throttled.
    for visitor in 0..50 {
        for _ in 0..3 {
            let response = from(&format!("203.0.113.{visitor}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED, "visitor {visitor}");
        }
    }
}

#[tokio::test]
async fn secret_keys_are_limited_per_key() {
    let mut limited = settings();
    limited.rate_limit.secret_key = gamify_api::config::Quota {
        per_second: 1,
        burst: 2,
    };
    let server = TestServer::with_settings(limited).await;
    let (project, _, sk) = server.project_with_keys().await;
    let other = server.create_key(&project, "secret").await;
    let body = json!({ "event": "purchase", "userId": "u" });
    for _ in 0..2 {
        expect_json(server.track(&sk, body.clone()).await, StatusCode::ACCEPTED).await;
    }
    let response = server.track(&sk, body.clone()).await;
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "key_rate_limited").await;
    // Another key has its own bucket.
    let response = server.track(other["key"].as_str().unwrap(), body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Every project has a ceiling on accepted events, counted in events, that it can set itself.
#[tokio::test]
async fn projects_have_a_ceiling_on_accepted_events() {
    let mut limited = settings();
    limited.rate_limit.project = gamify_api::config::Quota {
        per_second: 1,
        burst: 600,
    };
    let server = TestServer::with_settings(limited).await;
    let (project, pk, sk) = server.project_with_keys().await;
    let items = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| json!({ "event": "click", "userId": format!("u{i}") }))
            .collect()
    };
    // The default: 600 events at once, counted in events, for each key class (issue 18: browser
    // keys have a budget of their own, so they can never spend the one of the project's servers).
    for key in [&pk, &sk] {
        expect_json(
            send_batch(&server, key, json!({ "batch": items(500) })).await,
            StatusCode::ACCEPTED,
        )
        .await;
        expect_json(
            send_batch(&server, key, json!({ "batch": items(100) })).await,
            StatusCode::ACCEPTED,
        )
        .await;
        let response = server
            .track(key, json!({ "event": "click", "userId": "u" }))
            .await;
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        expect_error(
            response,
            StatusCode::TOO_MANY_REQUESTS,
            "project_rate_limited",
        )
        .await;
    }

    // The project's own limit, through the management API.
    let patch = |body: Value| {
        server
            .admin(Method::PATCH, &format!("/v1/projects/{project}"))
            .json(&body)
            .send()
    };
    let response = patch(json!({ "rateLimit": { "eventsPerSecond": 100, "burst": 100 } }))
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(error.to_string().contains("rateLimit.burst"), "{error}");
    let response = patch(json!({ "rateLimit": { "eventsPerSecond": 1000, "burst": 5000 } }))
        .await
        .unwrap();
    let updated = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        updated["rateLimit"],
        json!({ "eventsPerSecond": 1000, "burst": 5000 })
    );
    // The change reaches the gateway's key cache at once: the larger burst applies.
    expect_json(
        send_batch(&server, &pk, json!({ "batch": items(500) })).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let response = patch(json!({ "rateLimit": null })).await.unwrap();
    let reset = expect_json(response, StatusCode::OK).await;
    assert_eq!(reset["rateLimit"], Value::Null);
}

/// Gateway instances keep their local buckets in step through Redis: together they admit about
/// what one bucket would, within the documented tolerance, with no Redis call per request.
#[tokio::test]
async fn instances_keep_their_buckets_in_step_through_redis() {
    use gamify_api::rate_limit::{Bucket, Clock, Quota, RateLimiter, RedisCounters};
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    #[derive(Clone, Default)]
    struct TestClock(Arc<AtomicU64>);
    impl Clock for TestClock {
        fn now(&self) -> Duration {
            Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }
    let clock = TestClock::default();
    let redis_url = settings().redis_url;
    let counters = RedisCounters(Arc::new(gamify_api::redis::Redis::new(&redis_url).unwrap()));
    let instances = [
        RateLimiter::new(clock.clone()),
        RateLimiter::new(clock.clone()),
        RateLimiter::new(clock.clone()),
    ];
    let bucket = Bucket::SecretKey(uuid::Uuid::new_v4());
    let quota = Quota {
        per_second: 100,
        burst: 50,
    };
    for instance in &instances {
        assert!(instance.check(bucket, quota, 1).is_ok());
        instance.exchange(&counters).await.unwrap();
    }
    // 5 s at 300 requests/s offered to each instance, exchanging every 100 ms.
    let mut admitted = 0;
    for _ in 0..50 {
        for instance in &instances {
            admitted += (0..30)
                .filter(|_| instance.check(bucket, quota, 1).is_ok())
                .count();
        }
        clock.0.fetch_add(100_000_000, Ordering::SeqCst);
        for instance in &instances {
            instance.exchange(&counters).await.unwrap();
        }
    }
    // One bucket: 50 + 100 × 5 = 550. Tolerance: (N − 1) × (burst + rate × interval) = 120.
    assert!((540..=550 + 120).contains(&admitted), "{admitted}");
}

#[tokio::test]
async fn forwarded_for_is_trusted_only_behind_configured_proxies() {
    let topic = create_topic(1).await;
    let mut behind_proxy = settings();
    behind_proxy.kafka_topic = topic.clone();
    behind_proxy.trusted_proxy_hops = 1;
    let proxied = TestServer::with_settings(behind_proxy).await;
    let mut direct = settings();
    direct.kafka_topic = topic.clone();
    let direct = TestServer::with_settings(direct).await;
    let (_, pk, _) = proxied.project_with_keys().await;

    for (server, user) in [(&proxied, "via-proxy"), (&direct, "direct")] {
        let response = server
            .request(Method::POST, "/v1/events/track")
            .header("x-api-key", &pk)
            // The client forged the first entry; the proxy appended the address it saw.
            .header("x-forwarded-for", "10.9.9.9, 203.0.113.7")
            .json(&json!({ "event": "page_view", "userId": user }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let envelopes: Vec<Value> = read_topic(&topic, 2, Duration::from_secs(10))
        .await
        .iter()
        .map(|m| m.envelope())
        .collect();
    let ip_of = |user: &str| {
        envelopes.iter().find(|e| e["userId"] == user).unwrap()["context"]["ip"].clone()
    };
    assert_eq!(ip_of("via-proxy"), "203.0.113.7");
    assert_eq!(ip_of("direct"), "127.0.0.1");
}

/// Browsers deliver on page unload with `navigator.sendBeacon`, which cannot set headers and whose
/// request must not need a CORS preflight: `text/plain` with the key inside the JSON body. Same
/// checks, limits and errors as a header-keyed request.
#[tokio::test]
async fn text_plain_bodies_carry_the_key_for_unload_delivery() {
    let (server, topic) = server_with_topic().await;
    let (_, pk, _) = server.project_with_keys().await;
    let beacon = |body: Value| {
        server
            .request(Method::POST, "/v1/events/batch")
            .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .header(header::ORIGIN, "https://shop.example")
            .body(body.to_string())
            .send()
    };
    let response = beacon(json!({ "apiKey": pk, "batch": [
        { "event": "page_view", "anonymousId": "anon-1", "messageId": "beacon-1" }
    ] }))
    .await
    .unwrap();
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let accepted = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(accepted["accepted"], 1);
    let messages = read_topic(&topic, 1, Duration::from_secs(10)).await;
    let envelope = messages[0].envelope();
    assert_eq!(envelope["messageId"], "beacon-1");
    assert_eq!(envelope["keyType"], "publishable");
    assert!(!messages[0].payload.windows(6).any(|w| w == b"apiKey"));

    // The single-event endpoints take it too.
    let response = server
        .request(Method::POST, "/v1/events/track")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(json!({ "apiKey": pk, "event": "click", "userId": "u1" }).to_string())
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::ACCEPTED).await;

    // The same refusals as with a header.
    let response = beacon(json!({ "batch": [{ "event": "x", "userId": "u" }] }))
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    let response =
        beacon(json!({ "apiKey": "pk_live_nope", "batch": [{ "event": "x", "userId": "u" }] }))
            .await
            .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    let response =
        beacon(json!({ "apiKey": pk, "batch": [{ "event": "purchase", "userId": "u" }] }))
            .await
            .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "event_requires_secret_key").await;
    let response = beacon(json!({ "apiKey": pk, "batch": [{ "event": "", "userId": "u" }] }))
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = server
        .request(Method::POST, "/v1/events/batch")
        .header(header::CONTENT_TYPE, "text/plain")
        .body("not json")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = server
        .request(Method::POST, "/v1/events/batch")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(format!(
            "{{\"apiKey\":\"{pk}\",\"batch\":[],\"pad\":\"{}\"}}",
            "a".repeat(600 * 1024)
        ))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(topic_message_count(&topic).await, 2);
}
