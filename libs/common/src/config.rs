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
            // The entry itself is not quoted: it may be the tail of a secret containing a comma.
            _ => Err(ConfigError::invalid(
                variable,
                "expected key=value pairs separated by commas (values cannot contain commas)",
            )),
        })
        .collect()
}

/// What replaces a secret in logs and errors.
pub const REDACTED: &str = "***";

/// A URL fit for logs and errors: its password (and any query parameter that looks like a secret,
/// such as Postgres' `?password=`) replaced by `***`, e.g. `postgres://user:***@host/db`. A value
/// that does not parse as a URL with a host keeps only its scheme: `postgres://***`.
pub fn redact_url(raw: &str) -> String {
    let scheme_only = || match raw.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://{REDACTED}")
        }
        _ => REDACTED.to_owned(),
    };
    let Ok(mut url) = url::Url::parse(raw) else {
        return scheme_only();
    };
    if url.cannot_be_a_base() || !url.has_host() {
        return scheme_only();
    }
    if url.password().is_some() && url.set_password(Some(REDACTED)).is_err() {
        return scheme_only();
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_name(&name) {
                    REDACTED.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Whether a configuration or librdkafka property name carries a secret: any name containing
/// "password" or "secret" (`sasl.password`, `ssl.key.password`, `ssl.keystore.password`,
/// `sasl.oauthbearer.client.secret`), and the properties holding a private key or credentials.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || matches!(name.as_str(), "ssl.key.pem" | "sasl.oauthbearer.config")
}

/// Properties fit for logs: the value of every secret one replaced by `***`.
pub fn redact_properties(properties: &[(String, String)]) -> Vec<(&str, &str)> {
    properties
        .iter()
        .map(|(name, value)| {
            let value = if is_secret_name(name) {
                REDACTED
            } else {
                value.as_str()
            };
            (name.as_str(), value)
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

    #[test]
    fn a_malformed_property_list_does_not_echo_its_entries() {
        // A comma inside a password splits it; the tail must not reach the error message.
        let err = parse_kafka_properties("KAFKA_PRODUCER_PROPERTIES", "sasl.password=HEAD,TAIL")
            .unwrap_err()
            .to_string();
        assert!(err.contains("KAFKA_PRODUCER_PROPERTIES"), "{err}");
        assert!(!err.contains("TAIL") && !err.contains("HEAD"), "{err}");
    }

    #[test]
    fn url_passwords_are_redacted() {
        for (raw, expected) in [
            (
                "postgres://gamify:hunter2@db.internal:5432/gamify",
                "postgres://gamify:***@db.internal:5432/gamify",
            ),
            (
                "postgresql://user:p%40ss@localhost/db?sslmode=require",
                "postgresql://user:***@localhost/db?sslmode=require",
            ),
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "rediss://default:hunter2@cache:6380",
                "rediss://default:***@cache:6380",
            ),
            (
                "postgres://user@host/db?password=hunter2&application_name=x",
                "postgres://user@host/db?password=***&application_name=x",
            ),
            // Nothing secret: unchanged.
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("postgres://user@host/db", "postgres://user@host/db"),
        ] {
            assert_eq!(redact_url(raw), expected, "{raw}");
        }
    }

    #[test]
    fn unparseable_urls_keep_only_their_scheme() {
        for (raw, expected) in [
            ("postgres://user:hunter2@host:notaport/db", "postgres://***"),
            // No "://": not even the scheme is trusted.
            ("postgres:user:hunter2@host", "***"),
            ("redis://user:hun ter2@[::1/0", "redis://***"),
            ("user:hunter2@host", "***"),
            ("", "***"),
        ] {
            assert_eq!(redact_url(raw), expected, "{raw}");
        }
    }

    #[test]
    fn secret_kafka_properties_are_redacted() {
        let properties: Vec<(String, String)> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "hunter3"),
            ("ssl.keystore.password", "hunter4"),
            ("sasl.oauthbearer.client.secret", "hunter5"),
            ("Custom.Secret.Thing", "hunter6"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let redacted = format!("{:?}", redact_properties(&properties));
        assert!(!redacted.contains("hunter"), "{redacted}");
        assert!(!redacted.contains("PRIVATE KEY"), "{redacted}");
        assert!(
            redacted.contains("SASL_SSL") && redacted.contains("PLAIN"),
            "{redacted}"
        );
        assert!(redacted.contains("sasl.password"), "names stay: {redacted}");
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Whatever surrounds it, a password written in a URL's userinfo never survives
            /// redaction. The password is delimited by `Z`, which nothing else generated contains.
            #[test]
            fn no_password_survives_redaction(
                scheme in prop::sample::select(vec!["postgres", "postgresql", "redis", "rediss"]),
                user in "[a-z_.%0-9-]{0,8}",
                password in "[^/?#@\\\\Z\\s]{0,16}",
                host in "[a-z0-9.-]{0,12}",
                rest in "[^Z]{0,24}",
            ) {
                let raw = format!("{scheme}://{user}:Z{password}Z@{host}{rest}");
                let redacted = redact_url(&raw);
                prop_assert!(!redacted.contains('Z'), "{raw} -> {redacted}");
                prop_assert!(redacted.starts_with(scheme), "{raw} -> {redacted}");
            }

            /// Arbitrary input never panics and never grows a password.
            #[test]
            fn arbitrary_input_is_handled(raw in ".{0,64}") {
                let redacted = redact_url(&raw);
                if let Ok(url) = url::Url::parse(&redacted) {
                    prop_assert!(url.password().is_none_or(|p| p == REDACTED), "{raw} -> {redacted}");
                }
            }
        }
    }
}
