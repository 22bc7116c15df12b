//! Producing: idempotent acks=all, librdkafka's normal batching with a resume from a commit inside a
//! record batch, and dead letters whose headers and bytes must come back unchanged.

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, Producer as _},
};

use crate::common::{
    Record, STEP, assert_contiguous_to_end, committed, consumer, producer, read_all, take, topic,
    unique, wait_until,
};

#[test]
fn idempotent_acks_all_produce_acknowledges_every_message_exactly_once() {
    let topic = topic("idempotent", 3);
    let producer = producer(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "5"),
        ("statistics.interval.ms", "100"),
    ]);
    let count = 1000;
    for i in 0..count {
        let key = format!("key-{}", i % 7);
        let payload = format!("{i}");
        producer
            .send(BaseRecord::to(&topic).key(&key).payload(&payload))
            .map_err(|(err, _)| err)
            .unwrap();
    }
    producer.flush(STEP).unwrap();

    // The broker granted a producer id: the messages really went out idempotently.
    wait_until(STEP, "the idempotent producer's statistics", || {
        producer.poll(std::time::Duration::from_millis(100));
        producer.context().idempotence().is_some()
    });
    let (state, producer_id) = producer.context().idempotence().unwrap();
    assert_eq!(state, "Assigned");
    assert!(producer_id >= 0, "producer id {producer_id}");
    assert!(producer.client().fatal_error().is_none());

    let deliveries = producer.context().deliveries();
    assert_eq!(deliveries.len(), count);
    let failed: Vec<_> = deliveries.iter().filter(|d| d.error.is_some()).collect();
    assert!(failed.is_empty(), "failed deliveries: {failed:?}");
    let acknowledged: BTreeMap<(i32, i64), Vec<u8>> = deliveries
        .into_iter()
        .map(|d| ((d.partition, d.offset), d.payload))
        .collect();
    assert_eq!(acknowledged.len(), count, "two messages at one offset");

    let records = read_all(&topic);
    assert_contiguous_to_end(&topic, &records, &BTreeMap::new());
    let read: BTreeMap<(i32, i64), Vec<u8>> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r.payload.clone().unwrap()))
        .collect();
    assert_eq!(read.len(), count, "read back {} messages", records.len());
    assert_eq!(read, acknowledged);

    // One key, one partition, in the order sent.
    for key in 0..7 {
        let key = format!("key-{key}").into_bytes();
        let of_key: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_ref() == Some(&key))
            .collect();
        let partitions: BTreeSet<i32> = of_key.iter().map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 1, "{partitions:?}");
        let sent_order: Vec<usize> = of_key
            .iter()
            .map(|r| {
                String::from_utf8_lossy(r.payload.as_deref().unwrap())
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(sent_order.is_sorted(), "{sent_order:?}");
    }
}

/// Two flushes of 50 messages each make two record batches (offsets 0–49 and 50–99), as the
/// producer's own statistics confirm. A group commits offset 20, then 73, both inside a batch; each
/// new consumer of the group resumes exactly there.
#[test]
fn a_new_consumer_resumes_exactly_at_a_commit_inside_a_record_batch() {
    let topic = topic("mid-batch", 1);
    let group = unique("mid-batch");
    let producer = producer(&[
        // Batches close on flush, not on a timer or a message count.
        ("linger.ms", "10000"),
        ("batch.num.messages", "10000"),
        ("statistics.interval.ms", "100"),
    ]);
    producer
        .client()
        .fetch_metadata(Some(&topic), STEP)
        .unwrap();
    for round in 0..2 {
        for i in 0..50 {
            let payload = format!("m-{}", round * 50 + i);
            producer
                .send(BaseRecord::<(), _>::to(&topic).payload(&payload))
                .map_err(|(err, _)| err)
                .unwrap();
        }
        producer.flush(STEP).unwrap();
    }
    let deliveries = producer.context().deliveries();
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "{deliveries:?}"
    );
    wait_until(STEP, "batch statistics for 100 messages", || {
        producer.poll(std::time::Duration::from_millis(100));
        producer.context().batches(&topic).messages >= 100
    });
    let batches = producer.context().batches(&topic);
    assert_eq!(
        (batches.batches, batches.messages, batches.largest),
        (2, 100, 50),
        "expected two record batches of 50 messages: {batches:?}"
    );

    let payloads = |records: &[Record]| -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap()).into_owned())
            .collect()
    };
    let expected =
        |range: std::ops::Range<i64>| -> Vec<String> { range.map(|i| format!("m-{i}")).collect() };

    let first = resume(&group, &topic);
    let read = take(&first, 20);
    assert_eq!(payloads(&read), expected(0..20));
    commit(&first, &topic, 20);
    drop(first);
    assert_eq!(committed(&group, &topic), BTreeMap::from([(0, 20)]));

    let second = resume(&group, &topic);
    let read = take(&second, 80);
    assert_contiguous_to_end(&topic, &read, &BTreeMap::from([(0, 20)]));
    assert_eq!(payloads(&read), expected(20..100));
    commit(&second, &topic, 73);
    drop(second);

    let third = resume(&group, &topic);
    let read = take(&third, 27);
    assert_contiguous_to_end(&topic, &read, &BTreeMap::from([(0, 73)]));
    assert_eq!(payloads(&read), expected(73..100));
}

/// A consumer of `group` reading partition 0 from the group's committed offset (the start if there
/// is none), without joining the group: the join is what `groups` checks, this is about offsets.
fn resume(group: &str, topic: &str) -> rdkafka::consumer::BaseConsumer {
    let consumer = consumer(Some(group), &[]);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Stored).unwrap();
    consumer.assign(&list).unwrap();
    consumer
}

fn commit(consumer: &rdkafka::consumer::BaseConsumer, topic: &str, offset: i64) {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    consumer.commit(&list, CommitMode::Sync).unwrap();
}

/// The worker's dead letters carry the original bytes (often not valid UTF-8 or JSON) and headers
/// naming the reason and origin; all of it must come back as written.
#[test]
fn a_dead_letter_round_trips_its_headers_and_bytes() {
    let topic = topic("dead-letters", 3);
    let producer = producer(&[]);
    let payload: Vec<u8> = (0..=255u8).chain(*b"{\"truncated\": ").collect();
    let key: &[u8] = b"project:\xff\x00key";
    let headers: Vec<(&str, Option<&[u8]>)> = vec![
        (
            "gamify-dlq-reason",
            Some("invalid signature: ünïcödé ✓".as_bytes()),
        ),
        ("gamify-dlq-original-topic", Some(b"gamify.events")),
        ("gamify-dlq-original-partition", Some(b"11")),
        ("gamify-dlq-original-offset", Some(b"9007199254740993")),
        ("gamify-signature", Some(&[0, 159, 146, 150, 255])),
        ("empty", Some(b"")),
        ("null", None),
        ("gamify-dlq-reason", Some(b"a repeated key keeps its place")),
    ];
    let owned = headers
        .iter()
        .fold(OwnedHeaders::new(), |owned, (key, value)| {
            owned.insert(Header { key, value: *value })
        });
    producer
        .send(
            BaseRecord::to(&topic)
                .partition(2)
                .key(key)
                .payload(&payload)
                .headers(owned),
        )
        .map_err(|(err, _)| err)
        .unwrap();
    // And a message without headers next to it.
    producer
        .send(
            BaseRecord::to(&topic)
                .partition(2)
                .key("plain")
                .payload("plain"),
        )
        .map_err(|(err, _)| err)
        .unwrap();
    producer.flush(STEP).unwrap();
    let deliveries = producer.context().deliveries();
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "{deliveries:?}"
    );

    let records = read_all(&topic);
    assert_eq!(records.len(), 2, "{records:?}");
    let letter = &records[0];
    assert_eq!(letter.partition, 2);
    assert_eq!(letter.key.as_deref(), Some(key));
    assert_eq!(letter.payload.as_deref(), Some(payload.as_slice()));
    let expected: Vec<(String, Option<Vec<u8>>)> = headers
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(letter.headers, expected);
    assert_eq!(records[1].payload.as_deref(), Some(&b"plain"[..]));
    assert!(records[1].headers.is_empty(), "{:?}", records[1].headers);
}
