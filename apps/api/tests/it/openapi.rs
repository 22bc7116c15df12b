//! The OpenAPI document: committed copy current, served as built, and in step with the router.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{TestServer, expect_json};

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// docs/openapi.json is what the handlers generate. `UPDATE_OPENAPI=1` rewrites it.
#[test]
fn openapi_document_is_current() {
    let generated = gamify_api::openapi::document_json().unwrap();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: regenerate it with\n  \
         UPDATE_OPENAPI=1 ./scripts/test.sh -p gamify-api openapi_document_is_current\n\
         or\n  cargo run -q -p gamify-api -- openapi > docs/openapi.json"
    );
}

#[test]
fn document_is_openapi_3_1_with_security_schemes() {
    let document: Value =
        serde_json::from_str(&gamify_api::openapi::document_json().unwrap()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(schemes["apiKeyBearer"]["scheme"], "bearer");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                !responses.is_empty(),
                "{method} {path} documents no response"
            );
            for (status, response) in responses {
                // Every error status carries the API's error body.
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn openapi_json_serves_the_document() {
    let server = TestServer::start().await;
    let response = server
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    let served = expect_json(response, StatusCode::OK).await;
    let built: Value =
        serde_json::from_str(&gamify_api::openapi::document_json().unwrap()).unwrap();
    assert_eq!(served, built);
}

/// Every (method, path) of the document reaches a handler: not the router's 404 fallback nor its
/// 405. (Sent without credentials or body, so handlers answer 200, 401, 404 "… not found" or 415.)
#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let server = TestServer::start().await;
    let document = gamify_api::openapi::document();
    let mut checked = 0;
    for (path, item) in &document.paths.paths {
        let concrete = path
            .replace("{project_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{key_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{external_id}", "someone")
            .replace("{user_id}", "someone")
            .replace("{event_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{webhook_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{delivery_id}", "msg_x")
            .replace("{version_number}", "1")
            .replace("{organization_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{invitation_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{token_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{session_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{key}", "xp");
        assert!(!concrete.contains('{'), "unhandled parameter in {path}");
        let methods = [
            (&item.get, Method::GET),
            (&item.post, Method::POST),
            (&item.put, Method::PUT),
            (&item.patch, Method::PATCH),
            (&item.delete, Method::DELETE),
            (&item.options, Method::OPTIONS),
            (&item.head, Method::HEAD),
        ];
        for (_, method) in methods
            .into_iter()
            .filter(|(operation, _)| operation.is_some())
        {
            let response = server
                .request(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND && body.contains("no such route")),
                "{method} {path} is documented but not routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations documented");
}

/// Routes exist only through `OpenApiRouter::routes(routes!(…))`, which documents them: the
/// sources hold no other way of adding one (axum's `route`, `route_service`, `nest`,
/// `nest_service` or method routers). Lists every offender.
#[test]
fn every_route_is_registered_through_the_openapi_router() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src];
    let mut offenders = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            // The console's routes are HTML pages, not the JSON API: the console's own matrix
            // (tests/it/console.rs) checks each of them.
            if path.ends_with("src/console") {
                continue;
            }
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let undocumented = [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                "routing::",
                "MethodRouter",
            ]
            .iter()
            .any(|needle| code.contains(needle));
            if undocumented {
                offenders.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes added outside the OpenApiRouter (use .routes(routes!(handler)) with a \
         #[utoipa::path]):\n{}",
        offenders.join("\n")
    );
}
