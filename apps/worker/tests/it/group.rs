//! Several workers in one consumer group share the partitions; each event is stored once.

use std::{collections::HashSet, sync::atomic::Ordering, time::Duration};

use gamify_common::KeyType;
use serde_json::json;

use crate::harness::{
    Running, Tenant, Topics, config, connect, database_url, produce_envelopes, stat, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_partitions() {
    let db = connect(&database_url()).await;
    let tenants = [
        Tenant::create(&db, &[]).await,
        Tenant::create(&db, &[]).await,
    ];
    let topics = Topics::create(4).await;
    let mut config = config(&topics);
    config.batch_size = 100;
    let first = Running::start(config.clone()).await;
    let second = Running::start(config).await;
    wait_until(
        Duration::from_secs(40),
        "both workers to own partitions",
        || async {
            let a = first.stats.assigned.load(Ordering::Relaxed);
            let b = second.stats.assigned.load(Ordering::Relaxed);
            a > 0 && b > 0 && a + b == 4
        },
    )
    .await;

    let envelopes: Vec<_> = (0..1000)
        .map(|i| {
            tenants[i % 2].track(
                KeyType::Secret,
                "page_view",
                &format!("u{}", i % 53),
                json!({ "i": i }),
            )
        })
        .collect();
    produce_envelopes(&topics.topic, &envelopes).await;
    wait_until(Duration::from_secs(40), "every event", || async {
        tenants[0].events(&db).await + tenants[1].events(&db).await == 1000
    })
    .await;
    let a = first.stop().await;
    let b = second.stop().await;
    assert!(stat(&a.consumed) > 0 && stat(&b.consumed) > 0);
    assert_eq!(stat(&a.consumed) + stat(&b.consumed), 1000);
    assert_eq!(stat(&a.persisted) + stat(&b.persisted), 1000);

    let mut stored = HashSet::new();
    for tenant in &tenants {
        for row in tenant.rows(&db).await {
            assert_eq!(row.project_id, tenant.project);
            assert!(stored.insert(row.message_id));
        }
    }
    assert_eq!(stored.len(), 1000);
    assert_eq!(topics.committed().await, 1000);
}
