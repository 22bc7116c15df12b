//! Produces envelopes to Kafka and reports success only once the broker acknowledged every one.

use std::time::{Duration, Instant};

use crate::Error;
use gamify_common::envelope::{Envelope, SIGNATURE_HEADER, sign};
use rdkafka::{
    ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};

/// Label of a produce failure in `gamify_produce_failures_total`.
fn failure_reason(err: &Error) -> &'static str {
    match err {
        Error::ProduceQueueFull => "queue_full",
        Error::ProduceTimeout => "timeout",
        Error::Serialize(_) => "serialize",
        _ => "broker_error",
    }
}

pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    secret: Vec<u8>,
    timeout: Duration,
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
        let producer: FutureProducer = config.create().map_err(redact_config_error)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            secret: secret.as_bytes().to_vec(),
            timeout,
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
        metrics::histogram!("gamify_produce_duration_seconds").record(started.elapsed());
        match &result {
            Ok(()) => {
                metrics::counter!("gamify_produced_events_total").increment(envelopes.len() as u64)
            }
            Err(err) => {
                metrics::counter!("gamify_produce_failures_total", "reason" => failure_reason(err))
                    .increment(1);
                tracing::warn!(error = %err, events = envelopes.len(), topic = %self.topic, "produce failed");
            }
        }
        result
    }

    async fn produce_all(&self, envelopes: &[Envelope]) -> Result<(), Error> {
        let mut deliveries = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let payload = serde_json::to_vec(envelope)?;
            let signature = sign(&self.secret, &payload);
            let key = envelope.partition_key();
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: SIGNATURE_HEADER,
                    value: Some(&signature),
                }));
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(Error::ProduceQueueFull);
                }
                Err((err, _)) => return Err(err.into()),
            }
        }
        let acknowledged =
            tokio::time::timeout(self.timeout, futures::future::join_all(deliveries)).await;
        let reports = acknowledged.map_err(|_| Error::ProduceTimeout)?;
        for report in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => return Err(err.into()),
                // The producer dropped the message without a report.
                Err(_canceled) => return Err(Error::ProduceTimeout),
            }
        }
        Ok(())
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
