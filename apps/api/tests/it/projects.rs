use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{TestServer, expect_error, expect_json};

#[tokio::test]
async fn create_and_get_project() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&json!({
            "organizationId": organization["id"],
            "name": "Shop",
            "description": "The web shop"
        }))
        .send()
        .await
        .unwrap();
    let created = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(created["organizationId"], organization["id"]);
    assert_eq!(created["name"], "Shop");
    assert_eq!(created["description"], "The web shop");
    assert_eq!(created["trustedEvents"], json!([]));
    assert!(created["createdAt"].is_string());

    let id = created["id"].as_str().unwrap();
    let response = server
        .admin(Method::GET, &format!("/v1/projects/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(response, StatusCode::OK).await, created);
}

#[tokio::test]
async fn project_requires_an_existing_organization() {
    let server = TestServer::start().await;
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&json!({ "organizationId": uuid::Uuid::new_v4(), "name": "Shop" }))
        .send()
        .await
        .unwrap();
    // The same answer as for another organization's id: nothing tells them apart.
    let body = expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(body["error"]["message"], "organization not found");

    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&json!({ "organizationId": "not-a-uuid", "name": "Shop" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn project_names_are_unique_per_organization() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let body = json!({ "organizationId": organization["id"], "name": "Shop" });
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, "conflict").await;

    // Another organization may use the same name.
    let other = server.create_organization().await;
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&json!({ "organizationId": other["id"], "name": "Shop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_or_malformed_project_ids_are_404() {
    let server = TestServer::start().await;
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let response = server
            .admin(Method::GET, &format!("/v1/projects/{id}"))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
        let response = server
            .admin(Method::PATCH, &format!("/v1/projects/{id}"))
            .json(&json!({ "name": "x" }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn patch_updates_only_given_fields() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    let path = format!("/v1/projects/{}", project["id"].as_str().unwrap());

    let response = server
        .admin(Method::PATCH, &path)
        .json(&json!({
            "description": "Loyalty",
            "trustedEvents": ["bonus.granted", "vip.upgraded", "bonus.granted"]
        }))
        .send()
        .await
        .unwrap();
    let updated = expect_json(response, StatusCode::OK).await;
    assert_eq!(updated["name"], project["name"]);
    assert_eq!(updated["description"], "Loyalty");
    assert_eq!(
        updated["trustedEvents"],
        json!(["bonus.granted", "vip.upgraded"])
    );

    let response = server
        .admin(Method::PATCH, &path)
        .json(&json!({ "name": "Renamed", "description": null }))
        .send()
        .await
        .unwrap();
    let updated = expect_json(response, StatusCode::OK).await;
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["description"], json!(null));
    assert_eq!(
        updated["trustedEvents"],
        json!(["bonus.granted", "vip.upgraded"])
    );

    let response = server.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(expect_json(response, StatusCode::OK).await, updated);
}

#[tokio::test]
async fn patch_validates_fields() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    let path = format!("/v1/projects/{}", project["id"].as_str().unwrap());
    for body in [
        json!({ "name": "" }),
        json!({ "name": "x".repeat(256) }),
        json!({ "trustedEvents": [""] }),
        json!({ "trustedEvents": ["bad\u{7}name"] }),
        json!({ "trustedEvents": "purchase" }),
    ] {
        let response = server
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}
