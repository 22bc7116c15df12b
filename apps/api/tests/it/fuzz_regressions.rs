//! Defects found by fuzzing the gateway against its OpenAPI document (scripts/api-fuzz.sh) and
//! while writing that document, each pinned here.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{TestServer, expect_error};

/// A NUL character (valid JSON: `\u0000`) in a stored string reached Postgres, whose text
/// columns refuse it: 500. Now 400 naming the field, and nothing is stored.
#[tokio::test]
async fn nul_in_management_strings_is_a_400_not_a_500() {
    let server = TestServer::start().await;
    let response = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "Acme\u{0}" }))
        .send()
        .await
        .unwrap();
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(body["error"]["details"]["field"], "name");

    let organization = server.create_organization().await;
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&json!({
            "organizationId": organization["id"],
            "name": "Shop",
            "description": "R\u{0}P",
        }))
        .send()
        .await
        .unwrap();
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(body["error"]["details"]["field"], "description");

    let project = server.create_project().await;
    let project_id = project["id"].as_str().unwrap();
    for patch in [
        json!({ "name": "\u{0}" }),
        json!({ "description": "a\u{0}" }),
    ] {
        let response = server
            .admin(Method::PATCH, &format!("/v1/projects/{project_id}"))
            .json(&patch)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }

    let response = server
        .admin(Method::POST, &format!("/v1/projects/{project_id}/api-keys"))
        .json(&json!({ "name": "k\u{0}", "type": "secret" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = server
        .admin(Method::POST, &format!("/v1/projects/{project_id}/api-keys"))
        .json(&json!({ "name": "k", "type": "publishable", "allowedOrigins": ["https://a\u{0}b"] }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

/// The same NUL in a read's filter or path: the query failed (500). Now 400 for a filter and
/// 404 for a user id (no user can have one).
#[tokio::test]
async fn nul_in_read_filters_and_user_ids_is_not_a_500() {
    let server = TestServer::start().await;
    let (_, _, sk) = server.project_with_keys().await;
    for query in ["userId=a%00b", "event=%00"] {
        let response = server
            .request(Method::GET, &format!("/v1/events?{query}"))
            .header("x-api-key", &sk)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = server
        .request(Method::GET, "/v1/users/a%00b")
        .header("x-api-key", &sk)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

/// A query string axum cannot deserialize (a parameter given twice) was answered in plain text;
/// every error is the API's JSON.
#[tokio::test]
async fn an_unreadable_query_string_is_a_json_400() {
    let server = TestServer::start().await;
    let (_, _, sk) = server.project_with_keys().await;
    let response = server
        .request(Method::GET, "/v1/events?limit=1&limit=2")
        .header("x-api-key", &sk)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}
