//! Configuration, read once from the environment at start. The consumer settings are the storage
//! worker's variables (same topic, brokers, batch sizes), except the consumer group and port.

use gamify_common::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct Config {
    /// The consumer loop's settings, with the engine's group id and port.
    pub consumer: gamify_worker::Config,
    /// Deliver webhooks to private, loopback and link-local addresses (tests and development).
    pub webhooks_allow_private: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut consumer = gamify_worker::Config::from_env()?;
        // Its own group, so it reads every event the storage worker reads. Derived from the
        // worker's group when that is set, so each test run's pair stays apart.
        consumer.group_id = match config::optional("ENGINE_GROUP_ID")? {
            Some(group) => group,
            None => match config::optional("KAFKA_GROUP_ID")? {
                Some(worker_group) => format!("{worker_group}.engine"),
                None => "gamify-engine".to_owned(),
            },
        };
        if consumer.group_id
            == config::optional("KAFKA_GROUP_ID")?.unwrap_or_else(|| "gamify-worker".into())
        {
            return Err(ConfigError::invalid(
                "ENGINE_GROUP_ID",
                "must differ from the storage worker's KAFKA_GROUP_ID",
            ));
        }
        consumer.port = config::parsed_or("ENGINE_PORT", 3002)?;
        Ok(Self {
            consumer,
            webhooks_allow_private: config::flag("WEBHOOKS_ALLOW_PRIVATE")?,
        })
    }
}
