//! gamify-worker as a process: configuration errors, SIGTERM and SIGKILL.

use std::{collections::HashSet, process::Stdio, time::Duration};

use gamify_common::KeyType;
use serde_json::json;

use crate::harness::{
    Running, Tenant, Topics, config, connect, database_url, produce_envelopes, signal,
    spawn_binary, stat, wait_until,
};

#[tokio::test]
async fn configuration_errors_name_the_variable() {
    let run = |vars: Vec<(&'static str, String)>| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-worker"))
            .env_clear()
            .envs(vars)
            .stdout(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(vec![]).await.contains("DATABASE_URL"));
    let db = ("DATABASE_URL", database_url());
    assert!(run(vec![db.clone()]).await.contains("ENVELOPE_SECRET"));
    let short = run(vec![db.clone(), ("ENVELOPE_SECRET", "too-short".into())]).await;
    assert!(
        short.contains("ENVELOPE_SECRET") && short.contains("32"),
        "{short}"
    );
    let secret = ("ENVELOPE_SECRET", "x".repeat(32));
    let batch = run(vec![
        db.clone(),
        secret.clone(),
        ("WORKER_BATCH_SIZE", "zero".into()),
    ])
    .await;
    assert!(batch.contains("WORKER_BATCH_SIZE"), "{batch}");
    let properties = run(vec![
        db.clone(),
        secret.clone(),
        ("KAFKA_CONSUMER_PROPERTIES", "fetch.min.bytes".into()),
    ])
    .await;
    assert!(
        properties.contains("KAFKA_CONSUMER_PROPERTIES"),
        "{properties}"
    );
    let port = run(vec![db, secret, ("WORKER_PORT", "70000".into())]).await;
    assert!(port.contains("WORKER_PORT"), "{port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_commits_offsets_and_exits_zero() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(4).await;
    let envelopes: Vec<_> = (0..1000)
        .map(|i| {
            tenant.track(
                KeyType::Secret,
                "page_view",
                &format!("u{}", i % 37),
                json!({ "i": i }),
            )
        })
        .collect();
    produce_envelopes(&topics.topic, &envelopes).await;

    let mut child = spawn_binary(&topics, &[("WORKER_BATCH_SIZE", "50")]).await;
    wait_until(Duration::from_secs(30), "the first events", || async {
        tenant.events(&db).await >= 100
    })
    .await;
    signal(&child, "-TERM");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("worker did not stop after SIGTERM")
        .unwrap();
    assert!(exit.success(), "worker exited with {exit}");

    // Everything stored is committed and everything committed is stored: the batch in flight was
    // finished and its offsets committed before the exit.
    let stored = tenant.events(&db).await;
    let committed = topics.committed().await;
    assert_eq!(stored, committed);

    // A new worker in the group starts exactly where the old one stopped.
    let worker = Running::start(config(&topics)).await;
    wait_until(
        Duration::from_secs(40),
        "the rest of the events",
        || async { tenant.events(&db).await == 1000 },
    )
    .await;
    let stats = worker.stop().await;
    assert_eq!(stat(&stats.consumed) as i64, 1000 - committed);
    assert_eq!(stat(&stats.duplicates), 0);
    assert_eq!(topics.committed().await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(4).await;
    let envelopes: Vec<_> = (0..2000)
        .map(|i| {
            tenant.track(
                KeyType::Publishable,
                "click",
                &format!("u{}", i % 101),
                json!({ "i": i }),
            )
        })
        .collect();
    produce_envelopes(&topics.topic, &envelopes).await;

    let extra = [("WORKER_BATCH_SIZE", "50"), ("WORKER_BATCH_MS", "20")];
    let mut child = spawn_binary(&topics, &extra).await;
    wait_until(Duration::from_secs(30), "the first events", || async {
        tenant.events(&db).await >= 200
    })
    .await;
    signal(&child, "-KILL");
    child.wait().await.unwrap();
    let at_kill = tenant.events(&db).await;
    assert!(
        at_kill < 2000,
        "the worker finished before it could be killed"
    );

    let mut child = spawn_binary(&topics, &extra).await;
    wait_until(
        Duration::from_secs(60),
        "every event after the restart",
        || async { tenant.events(&db).await >= 2000 },
    )
    .await;
    signal(&child, "-TERM");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());

    let rows = tenant.rows(&db).await;
    assert_eq!(rows.len(), 2000);
    let stored: HashSet<String> = rows.into_iter().map(|r| r.message_id).collect();
    let sent: HashSet<String> = envelopes.into_iter().map(|e| e.message_id).collect();
    assert_eq!(stored, sent);
    assert_eq!(
        tenant
            .count(&db, "SELECT count(*) FROM event_message_ids")
            .await,
        2000
    );
    assert_eq!(topics.committed().await, 2000);
}
