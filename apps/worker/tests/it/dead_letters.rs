//! Messages that must never be stored go to the dead-letter topic, byte for byte, with a reason.

use std::time::Duration;

use gamify_common::KeyType;
use gamify_db::sea_orm::ConnectionTrait;
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
        reason.starts_with("rejected by Postgres (SQLSTATE 22P05)"),
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

/// Postgres errors outside the data and constraint classes can be just as deterministic: a
/// program limit or a missing privilege fails the same message the same way every time. Such a
/// message is dead-lettered on its first failure, with its SQLSTATE, and the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_errors_of_any_class_dead_letter_at_once_and_never_stall_the_partition() {
    let db = connect(&database_url()).await;
    // A trigger that fails chosen messageIds with chosen SQLSTATEs, as the owner role.
    let owner = connect(&crate::harness::var("DATABASE_OWNER_URL")).await;
    owner
        .shared()
        .execute_unprepared(
            "CREATE OR REPLACE FUNCTION gamify_test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.message_id LIKE 'poison-%' THEN
                     RAISE EXCEPTION 'injected by the test' USING ERRCODE = split_part(NEW.message_id, '-', 2);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE OR REPLACE TRIGGER gamify_test_poison BEFORE INSERT ON event_message_ids
                 FOR EACH ROW EXECUTE FUNCTION gamify_test_poison();",
        )
        .await
        .unwrap();
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(1).await;
    let event = |message_id: &str| {
        let mut envelope = tenant.track(KeyType::Secret, "page_view", "u", json!({}));
        envelope.message_id = message_id.to_owned();
        envelope
    };
    crate::harness::produce_envelopes(
        &topics.topic,
        &[
            event("ok-1"),
            event("poison-54000-limit"),
            event("ok-2"),
            event("poison-42501-privilege"),
            event("ok-3"),
        ],
    )
    .await;
    let worker = Running::start(config(&topics)).await;
    wait_until(
        Duration::from_secs(30),
        "the two poison messages",
        || async { stat(&worker.stats.dead_lettered) == 2 && tenant.events(&db).await == 3 },
    )
    .await;
    // The partition is not blocked: a later event is stored too.
    crate::harness::produce_envelopes(&topics.topic, &[event("ok-4")]).await;
    wait_until(
        Duration::from_secs(30),
        "the event after the poison",
        || async { tenant.events(&db).await == 4 },
    )
    .await;
    assert_eq!(stat(&worker.stats.db_retries), 0);
    worker.stop().await;

    let letters = topics.dead_letters(2, Duration::from_secs(20)).await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.header(dlq::REASON_HEADER).unwrap())
        .collect();
    assert!(
        reasons[0].starts_with("rejected by Postgres (SQLSTATE 54000)"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("rejected by Postgres (SQLSTATE 42501)"),
        "{reasons:?}"
    );
    assert_eq!(letters[0].header(dlq::OFFSET_HEADER), Some("1"));
    assert_eq!(letters[1].header(dlq::OFFSET_HEADER), Some("3"));
    assert_eq!(topics.committed().await, 6);
}
