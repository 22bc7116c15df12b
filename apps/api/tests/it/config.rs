//! Start-up configuration, checked by running the real binary.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::database_url;

fn gamify_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gamify-api"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("ENVELOPE_SECRET", crate::harness::envelope_secret())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn stderr_of(command: &mut Command) -> (bool, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_to_start_without_admin_token() {
    let (ok, stderr) = stderr_of(
        gamify_api()
            .arg("serve")
            .env("DATABASE_URL", database_url()),
    );
    assert!(!ok);
    assert!(stderr.contains("ADMIN_TOKEN"), "stderr: {stderr}");
}

#[test]
fn missing_database_url_is_named() {
    let (ok, stderr) = stderr_of(gamify_api().arg("serve"));
    assert!(!ok);
    assert!(stderr.contains("DATABASE_URL"), "stderr: {stderr}");
}

#[test]
fn invalid_port_is_named() {
    let (ok, stderr) = stderr_of(
        gamify_api()
            .env("DATABASE_URL", database_url())
            .env("ADMIN_TOKEN", "a-long-enough-admin-token")
            .env("PORT", "http"),
    );
    assert!(!ok);
    assert!(stderr.contains("PORT"), "stderr: {stderr}");
}

#[test]
fn short_admin_token_is_refused() {
    let (ok, stderr) = stderr_of(
        gamify_api()
            .env("DATABASE_URL", database_url())
            .env("ADMIN_TOKEN", "short"),
    );
    assert!(!ok);
    assert!(stderr.contains("ADMIN_TOKEN"), "stderr: {stderr}");
}

#[test]
fn envelope_secret_is_required_and_long_enough() {
    for value in [None, Some("too-short")] {
        let mut command = gamify_api();
        command
            .env_remove("ENVELOPE_SECRET")
            .env("DATABASE_URL", database_url())
            .env("ADMIN_TOKEN", "a-long-enough-admin-token");
        if let Some(value) = value {
            command.env("ENVELOPE_SECRET", value);
        }
        let (ok, stderr) = stderr_of(&mut command);
        assert!(!ok);
        assert!(stderr.contains("ENVELOPE_SECRET"), "stderr: {stderr}");
    }
}

#[test]
fn rate_limit_settings_are_validated() {
    let (ok, stderr) = stderr_of(
        gamify_api()
            .env("DATABASE_URL", database_url())
            .env("ADMIN_TOKEN", "a-long-enough-admin-token")
            .env("PROJECT_RATE_LIMIT_BURST", "499"),
    );
    assert!(!ok);
    // A project's burst must let one full batch of 500 through.
    assert!(
        stderr.contains("PROJECT_RATE_LIMIT_BURST"),
        "stderr: {stderr}"
    );
}

#[test]
fn migrate_needs_the_owner_url() {
    let (ok, stderr) = stderr_of(
        gamify_api()
            .arg("migrate")
            .env("DATABASE_URL", database_url()),
    );
    assert!(!ok);
    assert!(stderr.contains("DATABASE_OWNER_URL"), "stderr: {stderr}");
}

#[test]
fn unknown_command_is_a_usage_error() {
    let output = gamify_api().arg("launch").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// Dev mode generates a token, prints it, and the server accepts it.
#[tokio::test]
async fn dev_mode_generates_and_prints_an_admin_token() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-api"))
        .env_clear()
        .env("DATABASE_URL", database_url())
        .env("GAMIFY_DEV_MODE", "1")
        .env("ENVELOPE_SECRET", crate::harness::envelope_secret())
        .env("KAFKA_BROKERS", crate::harness::brokers())
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no output from dev mode")
        .unwrap()
        .unwrap();
    let token = line
        .split_once("ADMIN_TOKEN=")
        .map(|(_, token)| token.trim().to_owned())
        .expect("dev mode did not print ADMIN_TOKEN");

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/organizations");
    let mut status = None;
    for _ in 0..100 {
        match client
            .post(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": "dev" }))
            .send()
            .await
        {
            Ok(response) => {
                status = Some(response.status());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(status, Some(reqwest::StatusCode::CREATED));
    child.kill().await.unwrap();
}
