//! A broker that skips messages is reported, never silently accepted.

use std::time::Duration;

use gamify_common::KeyType;
use serde_json::json;

use crate::harness::{
    Raw, Running, Tenant, Topics, config, connect, database_url, produce_with, stat, wait_until,
};

/// Two producer batches (offsets 0–19 and 20–49); the group resumes from offset 10, inside the
/// first. Apache Kafka and gamify-dev-broker deliver 10–49. A broker that skips the rest of a batch
/// (Tansu 0.6, the earlier development broker) delivers only 20–49: the worker must then report the
/// ten skipped offsets as a gap. Either way, every message below the resume point that was not
/// stored is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_inside_a_producer_batch_stores_everything_or_reports_the_gap() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;
    let envelopes: Vec<_> = (0..50)
        .map(|i| tenant.track(KeyType::Secret, "page_view", "u", json!({ "i": i })))
        .collect();
    produce_with(
        &topics.topic,
        envelopes[..20].iter().map(Raw::signed).collect(),
        "1000",
    )
    .await;
    produce_with(
        &topics.topic,
        envelopes[20..].iter().map(Raw::signed).collect(),
        "1000",
    )
    .await;
    topics.commit(10).await;

    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "the last message", || async {
        topics.committed().await == 50
    })
    .await;
    let stats = worker.stop().await;
    let stored = tenant.events(&db).await;
    if stored == 40 {
        assert_eq!(stat(&stats.offset_gaps), 0);
    } else {
        println!(
            "the broker skipped {} messages; the worker reported it",
            40 - stored
        );
        assert_eq!(stored, 30);
        assert_eq!(stat(&stats.offset_gaps), 1);
    }
}
