use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::harness::{TestServer, expect_error, expect_json};

#[tokio::test]
async fn create_organization_returns_it() {
    let server = TestServer::start().await;
    let response = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap();
    let body = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(body["name"], "Acme");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(body["createdAt"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn admin_token_is_required() {
    let server = TestServer::start().await;
    let body = json!({ "name": "Acme" });

    let response = server
        .request(Method::POST, "/v1/organizations")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let wrong = format!("{}x", server.admin_token);
    let response = server
        .request(Method::POST, "/v1/organizations")
        .bearer_auth(wrong)
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let response = server
        .request(Method::POST, "/v1/organizations")
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", server.admin_token),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // The scheme is case-insensitive.
    let response = server
        .request(Method::POST, "/v1/organizations")
        .header(
            header::AUTHORIZATION,
            format!("bearer {}", server.admin_token),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn organization_name_is_validated() {
    let server = TestServer::start().await;
    for name in [json!(""), json!("   "), json!("x".repeat(256)), json!(42)] {
        let response = server
            .admin(Method::POST, "/v1/organizations")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;

    let response = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "é".repeat(255) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let server = TestServer::start().await;
    let response = server
        .admin(Method::POST, "/v1/organizations")
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let server = TestServer::start().await;
    let response = server
        .admin(Method::POST, "/v1/organizations")
        .header(header::CONTENT_TYPE, "text/plain")
        .body("{\"name\": \"Acme\"}")
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
async fn bodies_over_64_kib_are_413() {
    let server = TestServer::start().await;
    let response = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "Acme", "padding": "x".repeat(64 * 1024) }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}
