//! Produces envelopes to Kafka and reports success only once the broker acknowledged every one.

use std::{
    cell::RefCell,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::http::error::Error;
use gamify_common::envelope::{Envelope, SIGNATURE_HEADER, Signer};
use rdkafka::{
    ClientConfig, ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
};
use tokio::sync::Notify;

/// Label of a produce failure in `gamify_produce_failures_total`.
fn failure_reason(err: &Error) -> &'static str {
    match err {
        Error::ProduceQueueFull => "queue_full",
        Error::ProduceTimeout => "timeout",
        Error::Serialize(_) => "serialize",
        _ => "broker_error",
    }
}

/// The delivery reports one request waits for. Every message of the request carries the same
/// `Arc` as its delivery opaque, so a batch of 100 events costs one counter and one wake-up, not
/// a channel, a boxed sender and a future per event.
struct Acks {
    remaining: AtomicUsize,
    failure: Mutex<Option<KafkaError>>,
    all_reported: Notify,
}

impl Acks {
    fn new(messages: usize) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(messages),
            failure: Mutex::new(None),
            all_reported: Notify::new(),
        })
    }

    fn report(&self, result: Result<(), &KafkaError>) {
        if let Err(err) = result {
            self.failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| err.clone());
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when nobody waits yet, so the last report is never missed.
            self.all_reported.notify_one();
        }
    }

    async fn all(&self) {
        while self.remaining.load(Ordering::Acquire) > 0 {
            self.all_reported.notified().await;
        }
    }

    fn failure(&self) -> Option<KafkaError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Hands each delivery report to the [`Acks`] of the request that produced the message. Runs on
/// the producer's polling thread.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        acks.report(result.as_ref().map(drop).map_err(|(err, _)| err));
    }
}

pub struct EventProducer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    signer: Signer,
    timeout: Duration,
    produced: metrics::Counter,
    duration: metrics::Histogram,
}

/// Per-thread buffers for one message's value and key: librdkafka copies both when a message is
/// enqueued, so they are reused for the next message instead of allocated anew for each.
struct Scratch {
    payload: Vec<u8>,
    key: Vec<u8>,
}

/// Above this a buffer is given back after use: one large event must not pin its size per thread.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        payload: Vec::with_capacity(1024),
        key: Vec::with_capacity(128),
    });
}

impl EventProducer {
    pub fn new(
        brokers: &str,
        topic: &str,
        properties: &[(String, String)],
        secret: &str,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "gamify-api")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "1")
            // librdkafka gives up on a message no later than the request does.
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("queue.buffering.max.messages", "200000");
        for (key, value) in properties {
            config.set(key, value);
        }
        let producer = config
            .create_with_context(Deliveries)
            .map_err(redact_config_error)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            signer: Signer::new(secret.as_bytes()),
            timeout,
            // Registered once: looking a metric up by name costs a hash and a map probe per call.
            produced: metrics::counter!("gamify_produced_events_total"),
            duration: metrics::histogram!("gamify_produce_duration_seconds"),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues every envelope at once, then waits for all delivery reports together, so a batch
    /// costs one linger and one round trip, not one per event.
    pub async fn produce(&self, envelopes: &[Envelope]) -> Result<(), Error> {
        let started = Instant::now();
        let result = self.produce_all(envelopes).await;
        self.duration.record(started.elapsed());
        match &result {
            Ok(()) => self.produced.increment(envelopes.len() as u64),
            Err(err) => {
                metrics::counter!("gamify_produce_failures_total", "reason" => failure_reason(err))
                    .increment(1);
                tracing::warn!(error = %err, events = envelopes.len(), topic = %self.topic, "produce failed");
            }
        }
        result
    }

    async fn produce_all(&self, envelopes: &[Envelope]) -> Result<(), Error> {
        let acks = Acks::new(envelopes.len());
        for envelope in envelopes {
            SCRATCH.with_borrow_mut(|scratch| {
                let Scratch { payload, key } = scratch;
                payload.clear();
                key.clear();
                let sent = self.send_one(envelope, payload, key, &acks);
                if payload.capacity() > SCRATCH_KEEP {
                    *payload = Vec::with_capacity(1024);
                }
                sent
            })?;
        }
        tokio::time::timeout(self.timeout, acks.all())
            .await
            .map_err(|_| Error::ProduceTimeout)?;
        match acks.failure() {
            None => Ok(()),
            Some(err) => Err(err.into()),
        }
    }

    /// Serialises, signs and enqueues one envelope, using `payload` and `key` as scratch space;
    /// its delivery report goes to `acks`.
    fn send_one(
        &self,
        envelope: &Envelope,
        payload: &mut Vec<u8>,
        key: &mut Vec<u8>,
        acks: &Arc<Acks>,
    ) -> Result<(), Error> {
        serde_json::to_writer(&mut *payload, envelope)?;
        let signature = self.signer.sign(payload);
        envelope.write_partition_key(key);
        let record = BaseRecord::with_opaque_to(&self.topic, Arc::clone(acks))
            .key(key.as_slice())
            .payload(payload.as_slice())
            .headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: SIGNATURE_HEADER,
                value: Some(&signature[..]),
            }));
        match self.producer.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Error::ProduceQueueFull)
            }
            Err((err, _)) => Err(err.into()),
        }
    }

    /// Whether the broker answers and knows the topic.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|err| err.to_string())
                .and_then(
                    |metadata| match metadata.topics().iter().find(|t| t.name() == topic) {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                        _ => Err(format!("topic {topic} is missing")),
                    },
                )
        })
        .await;
        metadata.unwrap_or_else(|err| Err(err.to_string()))
    }

    /// Waits for messages still in flight (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer.flush(timeout) {
            tracing::warn!(error = %err, "messages left unflushed at shutdown");
        }
    }
}

/// librdkafka's configuration errors quote the offending property's value; a secret one is
/// replaced by `***` before the error goes anywhere.
fn redact_config_error(err: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use gamify_common::config::{REDACTED, is_secret_name};
    use rdkafka::error::KafkaError;
    match err {
        KafkaError::ClientConfig(code, description, key, value) if is_secret_name(&key) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, REDACTED)
            };
            KafkaError::ClientConfig(code, description, key, REDACTED.to_owned())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Managed Kafka services require TLS: librdkafka must be built with OpenSSL, or the producer
    /// refuses `security.protocol=SSL` at creation ("OpenSSL not available at build time").
    #[test]
    fn tls_and_scram_are_built_in() {
        let properties = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "gamify"),
            ("sasl.password", "not-a-real-password"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let producer = EventProducer::new(
            "127.0.0.1:1",
            "gamify.events",
            &properties,
            "an-envelope-secret-of-at-least-32-bytes",
            Duration::from_secs(1),
        );
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
