use gamify_db::sea_orm::{ConnectionTrait, Statement};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{TestServer, expect_error, expect_json};

fn keys_path(project: &Value) -> String {
    format!("/v1/projects/{}/api-keys", project["id"].as_str().unwrap())
}

async fn stored_hash(server: &TestServer, key_id: &str) -> Option<String> {
    let db = server.db.shared();
    let row = db
        .query_one(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT key_hash FROM api_keys WHERE id = $1::uuid",
            [key_id.into()],
        ))
        .await
        .unwrap()?;
    row.try_get::<String>("", "key_hash").ok()
}

#[tokio::test]
async fn created_key_is_shown_once_and_stored_as_its_sha256() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    for (key_type, prefix) in [("publishable", "pk_live_"), ("secret", "sk_live_")] {
        let created = server
            .create_key(project["id"].as_str().unwrap(), key_type)
            .await;
        let key = created["key"].as_str().unwrap();
        assert!(key.starts_with(prefix));
        assert_eq!(key.len(), 72);
        assert_eq!(created["type"], key_type);
        assert_eq!(created["name"], "Website");
        assert_eq!(created["prefix"], format!("{}…", &key[..12]));

        let id = created["id"].as_str().unwrap();
        let expected = hex::encode(Sha256::digest(key.as_bytes()));
        assert_eq!(
            stored_hash(&server, id).await.as_deref(),
            Some(expected.as_str())
        );
    }

    let response = server
        .admin(Method::GET, &keys_path(&project))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!text.contains("\"key\""), "listing shows a key: {text}");
    assert!(!text.contains("keyHash") && !text.contains("key_hash"));
    for item in listed.as_array().unwrap() {
        let hash = stored_hash(&server, item["id"].as_str().unwrap())
            .await
            .unwrap();
        assert!(!text.contains(&hash));
        for field in [
            "id",
            "name",
            "type",
            "prefix",
            "createdAt",
            "lastUsedAt",
            "revokedAt",
            "expiresAt",
        ] {
            assert!(item.get(field).is_some(), "missing {field} in {item}");
        }
    }
}

#[tokio::test]
async fn key_creation_validates_input() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    for body in [
        json!({ "name": "Website", "type": "admin" }),
        json!({ "name": "", "type": "secret" }),
        json!({ "name": "x".repeat(256), "type": "secret" }),
        json!({ "name": "Website" }),
    ] {
        let response = server
            .admin(Method::POST, &keys_path(&project))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }

    let unknown = json!({ "id": uuid::Uuid::new_v4() });
    let response = server
        .admin(Method::POST, &keys_path(&unknown))
        .json(&json!({ "name": "Website", "type": "secret" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = server
        .admin(Method::GET, &keys_path(&unknown))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn revoke_is_idempotent_and_scoped_to_the_project() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    let other_project = server.create_project().await;
    let key = server
        .create_key(project["id"].as_str().unwrap(), "secret")
        .await;
    let key_path = format!("{}/{}", keys_path(&project), key["id"].as_str().unwrap());

    // Another project's path does not reach this key.
    let foreign_path = format!(
        "{}/{}",
        keys_path(&other_project),
        key["id"].as_str().unwrap()
    );
    let response = server
        .admin(Method::DELETE, &foreign_path)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;

    let response = server
        .admin(Method::DELETE, &key_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let listed = expect_json(
        server
            .admin(Method::GET, &keys_path(&project))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let revoked_at = listed[0]["revokedAt"].clone();
    assert!(revoked_at.is_string());

    let response = server
        .admin(Method::DELETE, &key_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let listed = expect_json(
        server
            .admin(Method::GET, &keys_path(&project))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        listed[0]["revokedAt"], revoked_at,
        "a repeat must keep the first time"
    );

    for id in [uuid::Uuid::new_v4().to_string(), "nope".to_owned()] {
        let response = server
            .admin(Method::DELETE, &format!("{}/{id}", keys_path(&project)))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

fn seconds_from_now(timestamp: &Value) -> i64 {
    let at = chrono::DateTime::parse_from_rfc3339(timestamp.as_str().unwrap()).unwrap();
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
}

#[tokio::test]
async fn roll_issues_a_new_key_and_expires_the_old_one() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    let old = server
        .create_key(project["id"].as_str().unwrap(), "publishable")
        .await;
    let roll_path = format!(
        "{}/{}/roll",
        keys_path(&project),
        old["id"].as_str().unwrap()
    );

    let response = server
        .admin(Method::POST, &roll_path)
        .json(&json!({ "expiresInSeconds": 3600 }))
        .send()
        .await
        .unwrap();
    let rolled = expect_json(response, StatusCode::CREATED).await;
    assert_ne!(rolled["id"], old["id"]);
    assert_ne!(rolled["key"], old["key"]);
    assert_eq!(rolled["type"], "publishable");
    assert_eq!(rolled["name"], old["name"]);
    assert!(rolled["key"].as_str().unwrap().starts_with("pk_live_"));

    let listed = expect_json(
        server
            .admin(Method::GET, &keys_path(&project))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let old_listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old["id"])
        .unwrap();
    let remaining = seconds_from_now(&old_listed["expiresAt"]);
    assert!(
        (3590..=3600).contains(&remaining),
        "old key expires in {remaining}s"
    );
    let new_listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == rolled["id"])
        .unwrap();
    assert_eq!(new_listed["expiresAt"], json!(null));

    // Rolling again without a body ends the old key now; it never extends it.
    let response = server.admin(Method::POST, &roll_path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let listed = expect_json(
        server
            .admin(Method::GET, &keys_path(&project))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let old_listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old["id"])
        .unwrap();
    assert!(seconds_from_now(&old_listed["expiresAt"]) <= 0);
    assert_eq!(listed.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn roll_errors() {
    let server = TestServer::start().await;
    let project = server.create_project().await;
    let key = server
        .create_key(project["id"].as_str().unwrap(), "secret")
        .await;
    let key_path = format!("{}/{}", keys_path(&project), key["id"].as_str().unwrap());

    for body in [
        json!({ "expiresInSeconds": -1 }),
        json!({ "expiresInSeconds": 999_999_999 }),
    ] {
        let response = server
            .admin(Method::POST, &format!("{key_path}/roll"))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }

    let response = server
        .admin(
            Method::POST,
            &format!("{}/{}/roll", keys_path(&project), uuid::Uuid::new_v4()),
        )
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;

    server
        .admin(Method::DELETE, &key_path)
        .send()
        .await
        .unwrap();
    let response = server
        .admin(Method::POST, &format!("{key_path}/roll"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, "conflict").await;
}
