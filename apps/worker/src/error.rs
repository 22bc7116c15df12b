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
