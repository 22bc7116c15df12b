//! Messages that must never be stored go to the dead-letter topic, byte for byte, with a reason.

use std::time::Duration;

use gamify_common::KeyType;
use gamify_worker::dlq;
use serde_json::json;

use crate::harness::{
    Raw, Running, Tenant, Topics, config, connect, database_url, produce, stat, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_garbage_and_unknown_keys_are_dead_lettered() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;

    let forged = tenant.track(KeyType::Secret, "purchase", "u", json!({ "amount": 1000 }));
    let mut bad_signature = Raw::signed(&forged);
    bad_signature.signature = Some("00".repeat(32));
    let mut unsigned = Raw::signed(&forged);
    unsigned.signature = None;
    let garbage = Raw {
        key: "garbage".into(),
        payload: b"\xff\x00 not json".to_vec(),
        signature: Some(gamify_common::envelope::sign(
            b"some-other-secret-of-32-characters!!",
            b"\xff\x00 not json",
        )),
    };
    // Signed with the right secret, but not an envelope.
    let signed_garbage = Raw {
        key: "garbage".into(),
        payload: b"{\"hello\":1}".to_vec(),
        signature: Some(gamify_common::envelope::sign(
            crate::harness::secret().as_bytes(),
            b"{\"hello\":1}",
        )),
    };
    let mut unknown_key = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    unknown_key.key_id = uuid::Uuid::new_v4();
    let good = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    let payloads = [
        bad_signature.payload.clone(),
        unsigned.payload.clone(),
        garbage.payload.clone(),
        signed_garbage.payload.clone(),
        serde_json::to_vec(&unknown_key).unwrap(),
    ];
    produce(
        &topics.topic,
        vec![
            bad_signature,
            unsigned,
            garbage,
            signed_garbage,
            Raw::signed(&unknown_key),
            Raw::signed(&good),
        ],
    )
    .await;

    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "the batch", || async {
        stat(&worker.stats.dead_lettered) == 5 && stat(&worker.stats.persisted) == 1
    })
    .await;
    worker.stop().await;

    let letters = topics.dead_letters(5, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 5);
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.header(dlq::REASON_HEADER).unwrap())
        .collect();
    assert_eq!(reasons[0], "bad signature");
    assert!(
        reasons[1].contains("missing gamify-signature"),
        "{}",
        reasons[1]
    );
    assert_eq!(reasons[2], "bad signature");
    assert!(
        reasons[3].starts_with("unparseable envelope"),
        "{}",
        reasons[3]
    );
    assert!(reasons[4].starts_with("unknown API key"), "{}", reasons[4]);
    for (index, letter) in letters.iter().enumerate() {
        assert_eq!(
            letter.payload, payloads[index],
            "original bytes of letter {index}"
        );
        assert_eq!(
            letter.header(dlq::TOPIC_HEADER),
            Some(topics.topic.as_str())
        );
        assert_eq!(letter.header(dlq::PARTITION_HEADER), Some("0"));
        assert_eq!(
            letter.header(dlq::OFFSET_HEADER),
            Some(index.to_string().as_str())
        );
    }

    // Only the good envelope was stored.
    let rows = tenant.rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message_id, good.message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_postgres_keeps_rejecting_is_dead_lettered_without_blocking() {
    let db = connect(&database_url()).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;
    let before = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    // jsonb cannot hold U+0000: Postgres rejects this row every time.
    let poison = tenant.track(KeyType::Secret, "page_view", "u", json!({ "x": "a\u{0}b" }));
    let after = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
    crate::harness::produce_envelopes(
        &topics.topic,
        &[before.clone(), poison.clone(), after.clone()],
    )
    .await;
    let worker = Running::start(config(&topics)).await;
    wait_until(Duration::from_secs(30), "the poison message", || async {
        stat(&worker.stats.dead_lettered) == 1
    })
    .await;
    worker.stop().await;
    let letters = topics.dead_letters(1, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 1);
    let reason = letters[0].header(dlq::REASON_HEADER).unwrap();
    assert!(
        reason.starts_with("rejected by Postgres 3 times"),
        "{reason}"
    );
    assert_eq!(letters[0].header(dlq::OFFSET_HEADER), Some("1"));
    let ids: Vec<String> = tenant
        .rows(&db)
        .await
        .into_iter()
        .map(|r| r.message_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&before.message_id) && ids.contains(&after.message_id));
    assert_eq!(topics.committed().await, 3);
}
