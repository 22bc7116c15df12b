//! No password from the configuration reaches the output of the real binaries, start-up log and
//! error paths included.

use std::{process::Stdio, time::Duration};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::harness::{brokers, database_url, envelope_secret};

const DATABASE_PASSWORD: &str = "pgPassw0rd-ee31c";
const OWNER_PASSWORD: &str = "ownerPassw0rd-7a1f";
const REDIS_PASSWORD: &str = "redisPassw0rd-4b9d";
const SASL_PASSWORD: &str = "saslPassw0rd-92e0";
const OAUTH_SECRET: &str = "oauthSecr3t-5c77";

fn with_password(url: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    if url.username().is_empty() {
        url.set_username("gamify").unwrap();
    }
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

fn assert_no_secret(output: &str) {
    for secret in [
        DATABASE_PASSWORD,
        OWNER_PASSWORD,
        REDIS_PASSWORD,
        SASL_PASSWORD,
        OAUTH_SECRET,
    ] {
        assert!(
            !output.contains(secret),
            "{secret} appears in the output:\n{output}"
        );
    }
}

/// Postgres uses trust auth here, so the password in DATABASE_URL still connects; the one in
/// REDIS_URL makes AUTH fail, so Redis' error paths are logged too.
#[tokio::test]
async fn gamify_api_prints_no_password_it_was_given() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let admin_token = "adm_secrets_test_token_0123456789";
    let mut properties = std::env::var("KAFKA_PRODUCER_PROPERTIES").unwrap_or_default();
    if !properties.is_empty() {
        properties.push(',');
    }
    properties.push_str(&format!(
        "security.protocol=plaintext,sasl.password={SASL_PASSWORD}"
    ));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-api"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            with_password(&database_url(), DATABASE_PASSWORD),
        )
        .env(
            "DATABASE_OWNER_URL",
            with_password(&database_url(), OWNER_PASSWORD),
        )
        .env("REDIS_URL", with_password(&redis_url, REDIS_PASSWORD))
        .env("KAFKA_BROKERS", brokers())
        .env("KAFKA_PRODUCER_PROPERTIES", properties)
        .env("ENVELOPE_SECRET", envelope_secret())
        .env("ADMIN_TOKEN", admin_token)
        .env("PORT", port.to_string())
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("PASSWORD_HASH_MEMORY_KIB", "1024")
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout_task = tokio::spawn(async move {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out).await;
        out
    });
    let stderr_task = tokio::spawn(async move {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out).await;
        out
    });

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(response) => break response,
            Err(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "gamify-api did not listen"
                );
                assert!(child.try_wait().unwrap().is_none(), "gamify-api exited");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Redis refuses the password; whatever readiness says, the check itself exercises that path.
    let _ = ready.text().await;

    // Requests that fail (bad admin token, unknown key) and requests that work.
    let response = client
        .post(format!("{base}/v1/organizations"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .post(format!("{base}/v1/events/track"))
        .header("x-api-key", "pk_live_unknown")
        .json(&json!({ "event": "page_view", "userId": "u1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .post(format!("{base}/v1/organizations"))
        .bearer_auth(admin_token)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let organization: serde_json::Value = response.json().await.unwrap();
    let response = client
        .post(format!("{base}/v1/projects"))
        .bearer_auth(admin_token)
        .json(&json!({ "organizationId": organization["id"], "name": "Shop" }))
        .send()
        .await
        .unwrap();
    let project: serde_json::Value = response.json().await.unwrap();
    let response = client
        .post(format!(
            "{base}/v1/projects/{}/api-keys",
            project["id"].as_str().unwrap()
        ))
        .bearer_auth(admin_token)
        .json(&json!({ "name": "Web", "type": "publishable" }))
        .send()
        .await
        .unwrap();
    let key: serde_json::Value = response.json().await.unwrap();
    let response = client
        .post(format!("{base}/v1/events/track"))
        .header("x-api-key", key["key"].as_str().unwrap())
        .json(&json!({ "event": "page_view", "userId": "u1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // People: an invitation link, a password, a session id, a management token — none may be
    // logged. (Redis refuses this server's password, so sign-in fails closed: that path too.)
    let person_password = "personPassw0rd-3d8e long";
    let response = client
        .post(format!(
            "{base}/v1/organizations/{}/invitations",
            organization["id"].as_str().unwrap()
        ))
        .bearer_auth(admin_token)
        .json(&json!({ "email": "person@example.com", "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let invitation: serde_json::Value = response.json().await.unwrap();
    let invitation_token = invitation["url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let response = client
        .post(format!("{base}/v1/invitations/accept"))
        .json(&json!({ "token": invitation_token, "password": person_password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let session_id = cookie.split_once('=').unwrap().1.to_owned();
    let response = client
        .post(format!(
            "{base}/v1/organizations/{}/tokens",
            organization["id"].as_str().unwrap()
        ))
        .header("cookie", &cookie)
        .header("origin", &base)
        .json(&json!({ "name": "ci", "scopes": ["read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token: serde_json::Value = response.json().await.unwrap();
    let management_token = token["token"].as_str().unwrap().to_owned();
    let response = client
        .get(format!("{base}/v1/organizations"))
        .bearer_auth(&management_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "email": "person@example.com", "password": person_password }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_client_error() || response.status() == StatusCode::SERVICE_UNAVAILABLE
    );

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("gamify-api did not stop on SIGTERM")
        .unwrap();
    let stdout = stdout_task.await.unwrap();
    let stderr = stderr_task.await.unwrap();
    let output = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(exit.success(), "{output}");
    assert_no_secret(&output);
    for secret in [
        person_password,
        invitation_token.as_str(),
        session_id.as_str(),
        management_token.as_str(),
    ] {
        assert!(
            !output.contains(secret),
            "{secret} appears in the output:\n{output}"
        );
    }
    assert!(output.contains("management token created"), "{output}");
    // The test would prove nothing if the configuration were never logged.
    assert!(output.contains("gamify-api listening"), "{output}");
    assert!(output.contains("redis_url"), "{output}");
    assert!(output.contains("sasl.password"), "{output}");
}

/// A failing migrate names what failed without the URLs' passwords.
#[tokio::test]
async fn gamify_api_migrate_failure_prints_no_password() {
    // An owner URL whose host does not exist: migrate fails and says so.
    let owner = format!("postgres://owner:{OWNER_PASSWORD}@127.0.0.1:1/gamify");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-api"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_OWNER_URL", owner)
        .env(
            "DATABASE_URL",
            with_password(&database_url(), DATABASE_PASSWORD),
        )
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.contains("migration failed"), "{output}");
    assert_no_secret(&output);
}

/// librdkafka refuses a property this build does not support and quotes its value in the error;
/// the error that stops gamify-api must not carry the secret.
#[tokio::test]
async fn a_refused_secret_kafka_property_is_not_quoted_in_the_error() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-api"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            with_password(&database_url(), DATABASE_PASSWORD),
        )
        .env("KAFKA_BROKERS", brokers())
        .env(
            "KAFKA_PRODUCER_PROPERTIES",
            format!("sasl.oauthbearer.client.secret={OAUTH_SECRET}"),
        )
        .env("ENVELOPE_SECRET", envelope_secret())
        .env("ADMIN_TOKEN", "adm_secrets_test_token_0123456789")
        .env("PORT", "0")
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let output_text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        // A librdkafka built with OAuth support accepts the property: nothing to check here.
        return;
    }
    assert!(
        output_text.contains("sasl.oauthbearer.client.secret"),
        "{output_text}"
    );
    assert_no_secret(&output_text);
}
