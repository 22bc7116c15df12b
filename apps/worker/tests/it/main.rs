//! gamify-worker as a process: it starts against the real Postgres and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn worker_reports_ready_and_exits_cleanly_on_sigterm() {
    let database_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through ./scripts/test.sh");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-worker"))
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("gamify-worker ready") {
                return;
            }
        }
        panic!("worker exited before reporting ready");
    })
    .await
    .expect("worker did not report ready");

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("worker did not stop after SIGTERM")
        .unwrap();
    assert!(exit.success(), "worker exited with {exit}");
}

#[tokio::test]
async fn worker_names_a_missing_database_url() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-worker"))
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}
