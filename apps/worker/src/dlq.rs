//! The dead-letter topic: messages the worker must not store, kept byte for byte with the reason.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{
    check::Record,
    config::Config,
    error::{Result, client_config_error},
};

pub const REASON_HEADER: &str = "gamify-dlq-reason";
pub const TOPIC_HEADER: &str = "gamify-dlq-original-topic";
pub const PARTITION_HEADER: &str = "gamify-dlq-original-partition";
pub const OFFSET_HEADER: &str = "gamify-dlq-original-offset";

/// The dead-letter producer's librdkafka configuration: the defaults below, then
/// `KAFKA_PRODUCER_PROPERTIES` (the gateway's producer reads the same variable).
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("client.id", "gamify-worker-dlq")
        // A dead letter must not be lost once its offset is committed.
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "10000");
    for (key, value) in &config.kafka_producer_properties {
        client.set(key, value);
    }
    client
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(config: &Config) -> Result<Self> {
        let producer = producer_config(config).create().map_err(|err| {
            client_config_error(
                "KAFKA_PRODUCER_PROPERTIES",
                &config.kafka_producer_properties,
                err,
            )
        })?;
        Ok(Self {
            producer,
            topic: config.dlq_topic.clone(),
        })
    }

    /// Produces every message and waits for all acknowledgements; the first failure is returned so
    /// the caller retries the lot (duplicates on the dead-letter topic are acceptable, losses are
    /// not).
    pub async fn send(&self, letters: &[(Record, String)]) -> Result<()> {
        let sends = letters.iter().map(|(record, reason)| {
            let partition = record.partition.to_string();
            let offset = record.offset.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 4);
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: value.as_deref(),
                });
            }
            headers = headers
                .insert(Header {
                    key: REASON_HEADER,
                    value: Some(reason.as_bytes()),
                })
                .insert(Header {
                    key: TOPIC_HEADER,
                    value: Some(record.topic.as_bytes()),
                })
                .insert(Header {
                    key: PARTITION_HEADER,
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: OFFSET_HEADER,
                    value: Some(offset.as_bytes()),
                });
            let mut message: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(payload) = record.payload.as_deref() {
                message = message.payload(payload);
            }
            if let Some(key) = record.key.as_deref() {
                message = message.key(key);
            }
            // librdkafka only enqueues when the future is first polled, so all of them are
            // awaited together.
            self.producer.send(message, Duration::from_secs(10))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(err, _)| err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::kafka::tests::config;

    #[test]
    fn producer_properties_reach_the_dead_letter_producer() {
        let config = config(&[], &[("linger.ms", "17"), ("acks", "all")]);
        let native = producer_config(&config).create_native_config().unwrap();
        assert_eq!(native.get("linger.ms").unwrap(), "17");
        assert_eq!(native.get("broker.address.family").unwrap(), "any");
        DeadLetters::new(&config).unwrap();
    }

    #[test]
    fn a_refused_producer_property_names_the_variable() {
        let err = DeadLetters::new(&config(
            &[],
            &[("ssl.key.password", "hunter2"), ("bogus.x", "1")],
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("KAFKA_PRODUCER_PROPERTIES"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
