//! The crate's one error type.

use gamify_common::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to Postgres (DATABASE_URL): {0}")]
    Connect(#[source] gamify_db::Error),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot serve /metrics on WORKER_PORT: {0}")]
    Listen(#[source] std::io::Error),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A librdkafka client refused its configuration. When the refused property came from `variable`
/// (`KAFKA_CONSUMER_PROPERTIES`, `KAFKA_PRODUCER_PROPERTIES`), the error names the variable like
/// every other configuration error; a secret property's value is never quoted.
pub fn client_config_error(
    variable: &'static str,
    properties: &[(String, String)],
    err: rdkafka::error::KafkaError,
) -> Error {
    use gamify_common::config::{REDACTED, is_secret_name};
    use rdkafka::error::KafkaError;
    match err {
        KafkaError::ClientConfig(_, description, key, value)
            if properties.iter().any(|(name, _)| *name == key) =>
        {
            let description = if is_secret_name(&key) && !value.is_empty() {
                description.replace(&value, REDACTED)
            } else {
                description
            };
            Error::Config(ConfigError::invalid(
                variable,
                format!("librdkafka refuses {key}: {description}"),
            ))
        }
        KafkaError::ClientConfig(code, description, key, value) if is_secret_name(&key) => {
            let description = description.replace(&value, REDACTED);
            Error::Kafka(KafkaError::ClientConfig(
                code,
                description,
                key,
                REDACTED.to_owned(),
            ))
        }
        other => Error::Kafka(other),
    }
}
