use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{PrivateRedis, TestServer, connect, expect_error, expect_json, settings};

#[tokio::test]
async fn root_and_liveness_answer_ok() {
    let server = TestServer::start().await;
    for path in ["/", "/healthz"] {
        let response = server.request(Method::GET, path).send().await.unwrap();
        assert_eq!(
            expect_json(response, StatusCode::OK).await,
            json!({ "status": "ok" })
        );
    }
}

#[tokio::test]
async fn readiness_checks_postgres() {
    let server = TestServer::start().await;
    let response = server.request(Method::GET, "/readyz").send().await.unwrap();
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(
        body["checks"],
        json!({ "postgres": "ok", "redis": "ok", "kafka": "ok" })
    );
}

/// Kafka is required: 503, and the message also says Redis is degraded.
#[tokio::test]
async fn readiness_names_kafka_when_it_fails_and_redis_as_degraded() {
    let mut settings = settings();
    settings.redis_url = "redis://127.0.0.1:1".to_owned();
    settings.kafka_brokers = "127.0.0.1:1".to_owned();
    let server = TestServer::with_settings(settings).await;
    let response = server.request(Method::GET, "/readyz").send().await.unwrap();
    let body = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("kafka not available") && message.contains("redis degraded"),
        "{message}"
    );
    assert!(!message.contains("postgres"), "{message}");
}

/// Redis is an accelerator: with it killed the gateway stays in rotation and says it is degraded.
#[tokio::test]
async fn readiness_stays_200_and_degraded_when_redis_dies() {
    let mut redis = PrivateRedis::start().await;
    let mut settings = settings();
    settings.redis_url = redis.url.clone();
    let server = TestServer::with_settings(settings).await;
    let response = server.request(Method::GET, "/readyz").send().await.unwrap();
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(body["status"], "ready", "{body}");

    redis.stop().await;
    // Twice: the first check finds Redis gone, the second meets the open breaker.
    for _ in 0..2 {
        let response = server.request(Method::GET, "/readyz").send().await.unwrap();
        let body = expect_json(response, StatusCode::OK).await;
        assert_eq!(
            body,
            json!({
                "status": "degraded",
                "checks": { "postgres": "ok", "redis": "failing", "kafka": "ok" }
            })
        );
    }
}

#[tokio::test]
async fn metrics_are_exposed_for_prometheus() {
    let server = TestServer::start().await;
    server
        .request(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    let response = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("gamify_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert!(
        text.contains("gamify_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

/// With the pool gone, readiness is 503 naming Postgres, and a request that needs the database
/// is a 500 without internals in the body.
#[tokio::test]
async fn database_failure_is_503_on_readyz_and_opaque_500_elsewhere() {
    let db = connect().await;
    let server = TestServer::start_with(db.clone(), settings()).await;
    db.close().await.unwrap();

    let response = server.request(Method::GET, "/readyz").send().await.unwrap();
    let body = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("postgres")
    );

    let response = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap();
    let body = expect_error(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    assert_eq!(body["error"]["message"], "internal server error");

    // Liveness does not depend on Postgres.
    let response = server
        .request(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let server = TestServer::start().await;
    let response = server
        .request(Method::GET, "/v1/nothing")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = server
        .request(Method::PUT, "/v1/organizations")
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}
