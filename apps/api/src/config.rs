//! Configuration, read once from the environment at start.

use gamify_common::config::{self, ConfigError};
use rand::{RngCore, rngs::OsRng};

pub const DEFAULT_PORT: u16 = 3000;
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    pub kafka_brokers: String,
    pub port: u16,
    pub admin_token: AdminToken,
}

/// What `gamify-api migrate` needs.
#[derive(Clone)]
pub struct MigrateConfig {
    pub database_owner_url: String,
    pub application_role: gamify_migrations::ApplicationRole,
}

/// The management API's bearer token. Never printed by `Debug`.
#[derive(Clone)]
pub struct AdminToken {
    pub value: String,
    /// True when dev mode made the token up because ADMIN_TOKEN was not set.
    pub generated: bool,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &self.redis_url)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = config::postgres_url("DATABASE_URL")?;
        let redis_url =
            config::optional("REDIS_URL")?.unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(ConfigError::invalid(
                "REDIS_URL",
                "expected a redis:// or rediss:// URL",
            ));
        }
        let kafka_brokers =
            config::optional("KAFKA_BROKERS")?.unwrap_or_else(|| "127.0.0.1:9092".to_owned());
        if kafka_brokers.split(',').any(|b| !b.trim().contains(':')) {
            return Err(ConfigError::invalid(
                "KAFKA_BROKERS",
                "expected a comma-separated list of host:port",
            ));
        }
        let port = config::parsed_or("PORT", DEFAULT_PORT)?;
        let admin_token = admin_token(config::flag("GAMIFY_DEV_MODE")?)?;
        Ok(Self {
            database_url,
            redis_url,
            kafka_brokers,
            port,
            admin_token,
        })
    }
}

fn admin_token(dev_mode: bool) -> Result<AdminToken, ConfigError> {
    match config::optional("ADMIN_TOKEN")? {
        Some(value) if value.chars().count() < MIN_ADMIN_TOKEN_CHARS => Err(ConfigError::invalid(
            "ADMIN_TOKEN",
            format!("must be at least {MIN_ADMIN_TOKEN_CHARS} characters"),
        )),
        Some(value) => Ok(AdminToken {
            value,
            generated: false,
        }),
        None if dev_mode => {
            let mut bytes = [0u8; 24];
            OsRng.fill_bytes(&mut bytes);
            Ok(AdminToken {
                value: format!("adm_{}", hex::encode(bytes)),
                generated: true,
            })
        }
        None => Err(ConfigError::invalid(
            "ADMIN_TOKEN",
            "is required (set GAMIFY_DEV_MODE=1 to have one generated for local development)",
        )),
    }
}

impl MigrateConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_owner_url = config::postgres_url("DATABASE_OWNER_URL")?;
        let database_url = config::postgres_url("DATABASE_URL")?;
        let parsed = url::Url::parse(&database_url)
            .map_err(|err| ConfigError::invalid("DATABASE_URL", err))?;
        if parsed.username().is_empty() {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "must name the application role as its user",
            ));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Ok(Self {
            database_owner_url,
            application_role: gamify_migrations::ApplicationRole {
                name: decode(parsed.username()),
                password: parsed.password().map(decode),
            },
        })
    }
}
