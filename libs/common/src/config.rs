//! Helpers for reading configuration from the environment once, at start, with errors that name the
//! offending variable.

use std::{fmt::Display, str::FromStr};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {variable} is required but not set")]
    Missing { variable: &'static str },
    #[error("environment variable {variable} is invalid: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(variable: &'static str, reason: impl Display) -> Self {
        Self::Invalid {
            variable,
            reason: reason.to_string(),
        }
    }
}

/// The value of `variable`, treating an empty value as unset.
pub fn optional(variable: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(variable) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ConfigError::invalid(variable, "value is not valid UTF-8"))
        }
    }
}

pub fn required(variable: &'static str) -> Result<String, ConfigError> {
    optional(variable)?.ok_or(ConfigError::Missing { variable })
}

/// Parses `variable` when set, otherwise returns `default`.
pub fn parsed_or<T>(variable: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match optional(variable)? {
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|err| ConfigError::invalid(variable, err)),
        None => Ok(default),
    }
}

/// A `postgres://` URL, checked for shape only (connecting is the caller's job).
pub fn postgres_url(variable: &'static str) -> Result<String, ConfigError> {
    let value = required(variable)?;
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err(ConfigError::invalid(
            variable,
            "expected a postgres:// or postgresql:// URL",
        ));
    }
    Ok(value)
}

/// Boolean flags accept the usual spellings so that `GAMIFY_DEV_MODE=1` and `=true` both work.
pub fn flag(variable: &'static str) -> Result<bool, ConfigError> {
    match optional(variable)?.as_deref().map(str::to_ascii_lowercase) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(ConfigError::invalid(
            variable,
            "expected one of 1, true, yes, on, 0, false, no, off",
        )),
    }
}

/// Parses `variable` when set (otherwise `default`) and checks it lies in `range`.
pub fn parsed_in<T>(
    variable: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let value = parsed_or(variable, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(
            variable,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

pub const MIN_ENVELOPE_SECRET_BYTES: usize = 32;

/// `ENVELOPE_SECRET`: the HMAC key shared by gateway and worker; required, at least 32 bytes.
pub fn envelope_secret() -> Result<String, ConfigError> {
    let secret = required("ENVELOPE_SECRET")?;
    if secret.len() < MIN_ENVELOPE_SECRET_BYTES {
        return Err(ConfigError::invalid(
            "ENVELOPE_SECRET",
            format!("must be at least {MIN_ENVELOPE_SECRET_BYTES} bytes"),
        ));
    }
    Ok(secret)
}

/// `KAFKA_BROKERS`: comma-separated host:port, default the local development broker.
pub fn kafka_brokers() -> Result<String, ConfigError> {
    let brokers = optional("KAFKA_BROKERS")?.unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    if brokers.split(',').any(|b| !b.trim().contains(':')) {
        return Err(ConfigError::invalid(
            "KAFKA_BROKERS",
            "expected a comma-separated list of host:port",
        ));
    }
    Ok(brokers)
}

/// `KAFKA_TOPIC`: where accepted events go, default `gamify.events`.
pub fn kafka_topic() -> Result<String, ConfigError> {
    Ok(optional("KAFKA_TOPIC")?.unwrap_or_else(|| "gamify.events".to_owned()))
}

/// librdkafka properties as `key=value,key=value` (e.g. SASL/TLS settings for a managed Kafka, or
/// broker-specific workarounds), applied over the built-in defaults.
pub fn kafka_properties(variable: &'static str) -> Result<Vec<(String, String)>, ConfigError> {
    match optional(variable)? {
        Some(raw) => parse_kafka_properties(variable, &raw),
        None => Ok(Vec::new()),
    }
}

fn parse_kafka_properties(
    variable: &'static str,
    raw: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    raw.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(ConfigError::invalid(
                variable,
                format!("expected key=value pairs separated by commas, found {pair:?}"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_are_key_value_pairs() {
        let parsed =
            parse_kafka_properties("X", "batch.num.messages=1, security.protocol = SASL_SSL,");
        assert_eq!(
            parsed.unwrap(),
            [
                ("batch.num.messages".to_owned(), "1".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned())
            ]
        );
        let err = parse_kafka_properties("KAFKA_PRODUCER_PROPERTIES", "linger.ms").unwrap_err();
        assert!(err.to_string().contains("KAFKA_PRODUCER_PROPERTIES"));
        assert!(parse_kafka_properties("X", "=1").is_err());
    }
}
