//! What every contract test needs: the broker under test, unique names, topics, clients that record
//! what they see, and reading a topic to its end.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, DeliveryResult, Headers},
    producer::{BaseProducer, ProducerContext},
};

/// Long enough for any step on a loaded machine; conditions are polled, so a passing step takes
/// only as long as the broker needs.
pub const STEP: Duration = Duration::from_secs(30);

/// The session timeout of group members (Apache Kafka's minimum by default): short, because every
/// rebalance on the development broker waits most of it (see `rebalance_bound`).
pub const SESSION: Duration = Duration::from_secs(6);

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "KAFKA_BROKERS is not set: run the suite through ./scripts/test.sh, \
             or point KAFKA_BROKERS at the broker to check"
        )
    })
}

/// A topic or group name no other test, run or process uses.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "contract.{what}.{}.{nanos}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the broker under test is librdkafka's mock cluster (the development broker), which
/// names its cluster `mockCluster…`.
pub fn development_broker() -> bool {
    static MOCK: OnceLock<bool> = OnceLock::new();
    *MOCK.get_or_init(|| {
        let cluster = consumer(None, &[])
            .client()
            .fetch_cluster_id(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no cluster id from the broker at {}", brokers()));
        cluster.starts_with("mockCluster")
    })
}

/// The longest a consumer-group rebalance may take to settle once it has begun (after a leave, an
/// expiry or a join), for members with session timeout `session`.
///
/// Apache Kafka completes a rebalance as soon as every remaining member has rejoined, within a
/// heartbeat or two. librdkafka's mock cluster, the development broker, always waits for its join
/// timer instead: session.timeout.ms − 1 s, whoever has rejoined
/// (`rd_kafka_mock_cgrp_classic_rebalance` in librdkafka 2.12.1's `src/rdkafka_mock_cgrp.c`; no
/// mock property or safe rdkafka call changes it). That is the one point where the suite holds the
/// two to different bounds; both bounds still separate a broker that handles the event from one
/// that ignores it.
pub fn rebalance_bound(session: Duration) -> Duration {
    let slack = Duration::from_secs(5);
    if development_broker() {
        session.saturating_sub(Duration::from_secs(1)) + slack
    } else {
        slack
    }
}

/// Calls `condition` until it holds and returns how long that took; panics naming `what` after
/// `timeout`. Every condition given here blocks briefly itself (a poll, a metadata request).
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if condition() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
    }
}

/// Creates topics the way the scripts and test harnesses do: `gamify_dev_broker::create_topics`.
pub fn create_topics(topics: &[(&str, i32)]) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(gamify_dev_broker::create_topics(&brokers(), topics))
        .unwrap();
}

/// A new topic with `partitions` partitions, returned once its metadata shows them all led.
pub fn topic(what: &str, partitions: i32) -> String {
    let name = unique(what);
    create_topics(&[(&name, partitions)]);
    wait_for_partitions(&name, partitions);
    name
}

pub fn wait_for_partitions(topic: &str, partitions: i32) {
    let client = consumer(None, &[]);
    wait_until(STEP, &format!("metadata of {topic}"), || {
        let leaders = leaders(&client, topic);
        leaders.len() == partitions as usize && leaders.values().all(|leader| *leader >= 0)
    });
}

/// Partition → leader broker id, as the topic's metadata has it (empty while it is unknown).
pub fn leaders(client: &BaseConsumer, topic: &str) -> BTreeMap<i32, i32> {
    let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), p.leader()))
        .collect()
}

/// Per topic, from librdkafka's producer statistics: how many record batches were sent and how
/// many messages they held.
#[derive(Debug, Default, Clone, Copy)]
pub struct Batches {
    pub batches: i64,
    pub messages: i64,
    pub largest: i64,
}

#[derive(Debug)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub error: Option<KafkaError>,
}

/// Producer context that keeps every delivery report and the batch statistics.
#[derive(Default)]
pub struct Recorder {
    deliveries: Mutex<Vec<Delivery>>,
    batches: Mutex<BTreeMap<String, Batches>>,
    idempotence: Mutex<Option<(String, i64)>>,
}

impl Recorder {
    pub fn deliveries(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.deliveries.lock().unwrap())
    }

    pub fn batches(&self, topic: &str) -> Batches {
        self.batches
            .lock()
            .unwrap()
            .get(topic)
            .copied()
            .unwrap_or_default()
    }

    /// The idempotent producer's state and producer id, from the latest statistics.
    pub fn idempotence(&self) -> Option<(String, i64)> {
        self.idempotence.lock().unwrap().clone()
    }
}

impl ClientContext for Recorder {
    fn stats(&self, statistics: Statistics) {
        if let Some(eos) = &statistics.eos {
            *self.idempotence.lock().unwrap() = Some((eos.idemp_state.clone(), eos.producer_id));
        }
        // The batch windows cover the time since the previous report: add them up.
        let mut batches = self.batches.lock().unwrap();
        for (name, topic) in statistics.topics {
            let seen = batches.entry(name).or_default();
            seen.batches += topic.batchcnt.cnt;
            seen.messages += topic.batchcnt.sum;
            seen.largest = seen.largest.max(topic.batchcnt.max);
        }
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (message, error) = match result {
            Ok(message) => (message, None),
            Err((err, message)) => (message, Some(err.clone())),
        };
        self.deliveries.lock().unwrap().push(Delivery {
            partition: message.partition(),
            offset: message.offset(),
            payload: message.payload().unwrap_or_default().to_vec(),
            error,
        });
    }
}

pub type Producer = BaseProducer<Recorder>;

fn config(settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers())
        .set("broker.address.family", "v4");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config
}

pub fn producer(settings: &[(&str, &str)]) -> Producer {
    config(settings)
        .create_with_context(Recorder::default())
        .unwrap()
}

/// A consumer that commits only by hand and starts at the oldest message; `group` is required to
/// subscribe or commit.
pub fn consumer(group: Option<&str>, settings: &[(&str, &str)]) -> BaseConsumer {
    let mut config = config(&[
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("enable.partition.eof", "false"),
    ]);
    if let Some(group) = group {
        config.set("group.id", group);
    }
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

/// A group member with this session timeout, subscribed to `topic`.
pub fn member(group: &str, topic: &str, session: Duration) -> BaseConsumer {
    let session_ms = session.as_millis().to_string();
    let member = consumer(
        Some(group),
        &[
            ("session.timeout.ms", &session_ms),
            ("heartbeat.interval.ms", "500"),
        ],
    );
    member.subscribe(&[topic]).unwrap();
    member
}

/// A message as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn from(message: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Polls once and returns the message, if any; a consume error fails the test.
pub fn poll(consumer: &BaseConsumer) -> Option<Record> {
    consumer
        .poll(Duration::from_millis(100))
        .map(|message| Record::from(&message.unwrap()))
}

/// The next `n` messages `consumer` delivers.
pub fn take(consumer: &BaseConsumer, n: usize) -> Vec<Record> {
    let mut records = Vec::with_capacity(n);
    wait_until(STEP, &format!("{n} messages"), || {
        if let Some(record) = poll(consumer) {
            records.push(record);
        }
        records.len() >= n
    });
    records
}

/// The partitions of `topic` assigned to `consumer` now.
pub fn assignment(consumer: &BaseConsumer, topic: &str) -> BTreeSet<i32> {
    consumer
        .assignment()
        .unwrap()
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Partition → high watermark (the offset the next message will get).
pub fn high_watermarks(topic: &str) -> BTreeMap<i32, i64> {
    let client = consumer(None, &[]);
    leaders(&client, topic)
        .into_keys()
        .map(|partition| {
            let (_, high) = client
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .unwrap();
            (partition, high)
        })
        .collect()
}

/// Every message on `topic`, read from the start of each partition up to its high watermark,
/// without a consumer group.
pub fn read_all(topic: &str) -> Vec<Record> {
    let ends = high_watermarks(topic);
    // Assigned, not subscribed: the group only names the client, it never joins or commits.
    let reader = consumer(Some(&unique("reader")), &[]);
    let mut list = TopicPartitionList::new();
    for partition in ends.keys() {
        list.add_partition_offset(topic, *partition, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&list).unwrap();
    let mut next: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let mut records = Vec::new();
    wait_until(STEP, &format!("{topic} to its end {ends:?}"), || {
        if let Some(record) = poll(&reader) {
            next.insert(record.partition, record.offset + 1);
            records.push(record);
        }
        ends.iter().all(|(p, end)| next[p] >= *end)
    });
    records
}

/// Asserts that each partition's records are consecutive offsets from `from` (default 0) up to the
/// partition's high watermark: nothing skipped, nothing twice, nothing left.
pub fn assert_contiguous_to_end(topic: &str, records: &[Record], from: &BTreeMap<i32, i64>) {
    let ends = high_watermarks(topic);
    for (partition, end) in ends {
        let start = from.get(&partition).copied().unwrap_or(0);
        let offsets: Vec<i64> = records
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect();
        assert_eq!(
            offsets,
            (start..end).collect::<Vec<_>>(),
            "partition {partition} of {topic}: expected offsets {start}..{end}"
        );
    }
}

/// Offsets committed by `group`, partition → offset, for the partitions that have one.
pub fn committed(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let client = consumer(Some(group), &[]);
    let mut list = TopicPartitionList::new();
    for partition in leaders(&client, topic).into_keys() {
        list.add_partition(topic, partition);
    }
    client
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some((e.partition(), n)),
            _ => None,
        })
        .collect()
}
