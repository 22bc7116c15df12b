//! gamify-dev-broker itself: `serve` publishes its bootstrap address and answers on the control
//! socket; topics are created through it; `broker-down` and `broker-up` take the broker away and
//! bring it back with its data. Each test starts a broker of its own, never the shared one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gamify_dev_broker::{BOOTSTRAP_FILE, Error, control};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};

const BINARY: &str = env!("CARGO_BIN_EXE_gamify-dev-broker");

/// A `gamify-dev-broker serve` process with a directory of its own; both go when it is dropped.
struct Broker {
    child: Child,
    dir: PathBuf,
    bootstrap: String,
}

impl Broker {
    fn start() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "gamify-dev-broker-test-{}-{nanos}",
            std::process::id()
        ));
        let child = Command::new(BINARY)
            .args(["serve", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut broker = Self {
            child,
            dir,
            bootstrap: String::new(),
        };
        // The bootstrap file is written last, once the socket listens.
        let file = broker.dir.join(BOOTSTRAP_FILE);
        let deadline = Instant::now() + Duration::from_secs(20);
        broker.bootstrap = loop {
            if let Ok(contents) = std::fs::read_to_string(&file) {
                break contents.trim().to_owned();
            }
            assert!(
                broker.child.try_wait().unwrap().is_none(),
                "gamify-dev-broker serve exited"
            );
            assert!(
                Instant::now() < deadline,
                "no {} after 20 s",
                file.display()
            );
            // Polling a file: nothing to block on.
            std::thread::sleep(Duration::from_millis(20));
        };
        broker
    }

    fn control(&self, command: &str) -> Result<String, Error> {
        control(&self.dir, command)
    }

    fn producer(&self, message_timeout: Duration) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("broker.address.family", "v4")
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            )
            .create()
            .unwrap()
    }

    /// Every payload on partition 0 of `topic`, read from the beginning to the high watermark.
    fn read(&self, topic: &str) -> Vec<String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", "control-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut payloads = Vec::new();
        let mut next = 0;
        while next < high {
            assert!(Instant::now() < deadline, "read {next} of {high} messages");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                next = message.offset() + 1;
                payloads.push(String::from_utf8_lossy(message.payload().unwrap()).into_owned());
            }
        }
        payloads
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn produce(producer: &FutureProducer, topic: &str, payloads: &[String]) {
    for payload in payloads {
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(err, _)| err)
            .unwrap();
    }
}

fn payloads(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn serve_publishes_its_address_and_answers_commands() {
    let broker = Broker::start();
    assert!(
        broker.bootstrap.starts_with("127.0.0.1:"),
        "{}",
        broker.bootstrap
    );
    assert_eq!(broker.control("bootstrap").unwrap(), broker.bootstrap);
    assert_eq!(
        broker.control("create-topic control.a 3").unwrap(),
        "created control.a with 3 partitions"
    );
    assert_eq!(
        broker.control("create-topic control.a 3").unwrap(),
        "control.a exists"
    );
    for bad in ["create-topic control.b many", "broker-down", "frobnicate"] {
        let answer = broker.control(bad);
        assert!(
            matches!(answer, Err(Error::Refused(ref message)) if message.starts_with("error ")),
            "{bad}: {answer:?}"
        );
    }

    // The command line sends the same commands.
    let output = Command::new(BINARY)
        .args(["ctl", "--dir"])
        .arg(&broker.dir)
        .arg("bootstrap")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        broker.bootstrap
    );
    let output = Command::new(BINARY)
        .args(["ctl", "--dir"])
        .arg(&broker.dir)
        .args(["broker-up", "99"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "broker-up 99: {output:?}");
    let missing = control(Path::new("/nonexistent/gamify-dev-broker"), "bootstrap");
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
}

#[tokio::test]
async fn a_broker_taken_down_refuses_produce_and_comes_back_with_its_data() {
    let broker = Broker::start();
    let topic = "control.faults";
    broker.control(&format!("create-topic {topic} 1")).unwrap();
    let steady = broker.producer(Duration::from_secs(30));
    let before = payloads("before", 20);
    produce(&steady, topic, &before).await;

    broker.control("broker-down 1").unwrap();
    let started = Instant::now();
    let refused = broker
        .producer(Duration::from_secs(2))
        .send(
            FutureRecord::<(), _>::to(topic)
                .partition(0)
                .payload("while-down"),
            Duration::from_secs(5),
        )
        .await;
    match refused {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _)) => {}
        other => panic!("produce to a broker that is down: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    broker.control("broker-up 1").unwrap();
    // The producer from before reconnects (within its message timeout), and a new one connects.
    let after = payloads("after", 10);
    produce(&steady, topic, &after).await;
    let fresh = payloads("fresh", 10);
    produce(&broker.producer(Duration::from_secs(10)), topic, &fresh).await;

    let read = tokio::task::spawn_blocking(move || broker.read(topic))
        .await
        .unwrap();
    let expected: Vec<String> = before.into_iter().chain(after).chain(fresh).collect();
    assert_eq!(read, expected);
}
