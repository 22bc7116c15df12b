//! Configuration, read once from the environment at start.

use gamify_common::config::{self, ConfigError};
use std::time::Duration;

use rand::{RngCore, rngs::OsRng};

pub const DEFAULT_PORT: u16 = 3000;
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub port: u16,
    pub settings: Settings,
}

/// Everything the server needs besides its database pool and listener; tests build it directly.
#[derive(Clone)]
pub struct Settings {
    pub admin_token: AdminToken,
    pub redis_url: String,
    pub kafka_brokers: String,
    pub kafka_topic: String,
    /// librdkafka producer properties applied over the defaults (`KAFKA_PRODUCER_PROPERTIES`).
    pub kafka_producer_properties: Vec<(String, String)>,
    /// HMAC key that signs every envelope; shared with gamify-worker.
    pub envelope_secret: String,
    /// How long a request waits for the broker to acknowledge its events before answering 503.
    pub produce_timeout: Duration,
    pub rate_limit: Limits,
    /// How long a resolved key stays in the in-process cache (invalidations end it sooner).
    pub key_cache_ttl: Duration,
    /// How long an unknown key is remembered as unknown, in-process and in Redis.
    pub negative_cache_ttl: Duration,
    /// Proxies in front of the gateway that append to `X-Forwarded-For`; 0 ignores the header.
    pub trusted_proxy_hops: usize,
    pub http: HttpLimits,
    pub accounts: AccountSettings,
}

/// People, sessions and invitations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    /// The deployment's own origin (`PUBLIC_URL`, e.g. `https://gamify.example.com`): invitation
    /// links point at it, cookie-authenticated changes must come from it, and session cookies are
    /// `Secure` unless it is plain `http`.
    pub public_url: url::Url,
    /// A console session ends after this long without use (`SESSION_IDLE_TIMEOUT_SECONDS`).
    pub session_idle_timeout: Duration,
    /// How long an invitation link stays valid (`INVITATION_TTL_SECONDS`).
    pub invitation_ttl: Duration,
    pub password_hash: crate::accounts::HashCost,
    /// Failed sign-ins per account, and per address, in `sign_in_window`, before sign-in is refused.
    pub sign_in_failures_per_account: u32,
    pub sign_in_failures_per_address: u32,
    pub sign_in_window: Duration,
    /// Whether this instance serves the management API and the console (`INGEST_ONLY=1` turns
    /// both off, so an ingestion fleet serves ingestion, reads and health only).
    pub management: bool,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            public_url: url::Url::parse("http://localhost:3000").unwrap_or_else(|_| unreachable!()),
            session_idle_timeout: Duration::from_secs(7 * 24 * 3600),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            password_hash: crate::accounts::HashCost::default(),
            sign_in_failures_per_account: 10,
            sign_in_failures_per_address: 50,
            sign_in_window: Duration::from_secs(15 * 60),
            management: true,
        }
    }
}

impl AccountSettings {
    /// `scheme://host[:port]`, as browsers send it in `Origin`.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

fn account_settings(port: u16) -> Result<AccountSettings, ConfigError> {
    let defaults = AccountSettings::default();
    let public_url = match config::optional("PUBLIC_URL")? {
        Some(text) => {
            let url = url::Url::parse(&text).map_err(|_| {
                ConfigError::invalid("PUBLIC_URL", "must be an absolute http(s) URL")
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::invalid(
                    "PUBLIC_URL",
                    "must be an absolute http(s) URL",
                ));
            }
            url
        }
        None => url::Url::parse(&format!("http://localhost:{port}"))
            .map_err(|_| ConfigError::invalid("PORT", "does not make a URL"))?,
    };
    Ok(AccountSettings {
        public_url,
        session_idle_timeout: Duration::from_secs(config::parsed_in(
            "SESSION_IDLE_TIMEOUT_SECONDS",
            defaults.session_idle_timeout.as_secs(),
            300..=90 * 24 * 3600,
        )?),
        invitation_ttl: Duration::from_secs(config::parsed_in(
            "INVITATION_TTL_SECONDS",
            defaults.invitation_ttl.as_secs(),
            300..=30 * 24 * 3600,
        )?),
        password_hash: crate::accounts::HashCost {
            memory_kib: config::parsed_in(
                "PASSWORD_HASH_MEMORY_KIB",
                defaults.password_hash.memory_kib,
                8..=1024 * 1024,
            )?,
            iterations: config::parsed_in(
                "PASSWORD_HASH_ITERATIONS",
                defaults.password_hash.iterations,
                1..=100,
            )?,
            concurrency: config::parsed_in(
                "PASSWORD_HASH_CONCURRENCY",
                defaults.password_hash.concurrency,
                1..=1024,
            )?,
        },
        sign_in_failures_per_account: config::parsed_in(
            "SIGN_IN_FAILURES_PER_ACCOUNT",
            defaults.sign_in_failures_per_account,
            1..=10_000,
        )?,
        sign_in_failures_per_address: config::parsed_in(
            "SIGN_IN_FAILURES_PER_ADDRESS",
            defaults.sign_in_failures_per_address,
            1..=100_000,
        )?,
        sign_in_window: defaults.sign_in_window,
        management: !config::flag("INGEST_ONLY")?,
    })
}

/// What one client can hold of the server: time for its headers and for a whole request,
/// connections, requests in flight, and failed key checks before it is refused without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub invalid_keys: Quota,
    /// The longest one analytics query may run before it is cancelled and the request answered
    /// 422 `query_too_expensive` (`ANALYTICS_QUERY_TIMEOUT_MS`; below the request timeout).
    pub analytics_query_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_in_flight: 2_048,
            invalid_keys: Quota {
                per_second: 5,
                burst: 20,
            },
            analytics_query_timeout: Duration::from_secs(10),
        }
    }
}

/// Requests (or events) per second sustained, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

/// The limits of the gateway, each with its default quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A publishable key, per client IP: one visitor of a site is throttled, the others are not.
    pub client: Quota,
    /// A secret key: a team's servers.
    pub secret_key: Quota,
    /// Accepted events of a project, counted in events; projects may set their own.
    pub project: Quota,
    /// How often instances exchange their consumption.
    pub sync_interval: Duration,
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

impl std::fmt::Debug for Settings {
    // Fit for the start-up log: the Redis password and secret librdkafka properties are redacted,
    // the admin token and envelope secret left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("redis_url", &config::redact_url(&self.redis_url))
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_topic", &self.kafka_topic)
            .field(
                "kafka_producer_properties",
                &config::redact_properties(&self.kafka_producer_properties),
            )
            .field("produce_timeout", &self.produce_timeout)
            .field("rate_limit", &self.rate_limit)
            .field("key_cache_ttl", &self.key_cache_ttl)
            .field("trusted_proxy_hops", &self.trusted_proxy_hops)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &config::redact_url(&self.database_url))
            .field("port", &self.port)
            .field("settings", &self.settings)
            .finish()
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
        let kafka_brokers = config::kafka_brokers()?;
        let kafka_topic = config::kafka_topic()?;
        let envelope_secret = config::envelope_secret()?;
        let port = config::parsed_or("PORT", DEFAULT_PORT)?;
        let produce_timeout_ms: u64 = config::parsed_in("PRODUCE_TIMEOUT_MS", 5000, 1..=120_000)?;
        let rate_limit = rate_limits()?;
        let admin_token = admin_token(config::flag("GAMIFY_DEV_MODE")?)?;
        Ok(Self {
            database_url,
            port,
            settings: Settings {
                admin_token,
                redis_url,
                kafka_brokers,
                kafka_topic,
                kafka_producer_properties: config::kafka_properties("KAFKA_PRODUCER_PROPERTIES")?,
                envelope_secret,
                produce_timeout: Duration::from_millis(produce_timeout_ms),
                rate_limit,
                key_cache_ttl: Duration::from_secs(config::parsed_or("KEY_CACHE_TTL_SECONDS", 10)?),
                negative_cache_ttl: Duration::from_secs(5),
                trusted_proxy_hops: config::parsed_in("TRUSTED_PROXY_HOPS", 0, 0..=10)?,
                http: http_limits(produce_timeout_ms)?,
                accounts: account_settings(port)?,
            },
        })
    }
}

/// Each default has its variable; a project's own limit (PATCH /v1/projects/{id}) overrides the
/// project default.
fn rate_limits() -> Result<Limits, ConfigError> {
    fn quota(
        (rate_variable, rate): (&'static str, u32),
        (burst_variable, burst): (&'static str, u32),
        min_burst: u32,
    ) -> Result<Quota, ConfigError> {
        Ok(Quota {
            per_second: config::parsed_in(rate_variable, rate, 1..=10_000_000)?,
            burst: config::parsed_in(burst_variable, burst, min_burst..=100_000_000)?,
        })
    }
    let max_batch = gamify_common::ingest::MAX_BATCH_EVENTS as u32;
    Ok(Limits {
        client: quota(
            ("CLIENT_RATE_LIMIT_PER_SECOND", 20),
            ("CLIENT_RATE_LIMIT_BURST", 100),
            1,
        )?,
        secret_key: quota(
            ("SECRET_KEY_RATE_LIMIT_PER_SECOND", 1_000),
            ("SECRET_KEY_RATE_LIMIT_BURST", 2_000),
            1,
        )?,
        // A batch counts as many events as it holds: the burst must let a full batch through.
        project: quota(
            ("PROJECT_RATE_LIMIT_PER_SECOND", 5_000),
            ("PROJECT_RATE_LIMIT_BURST", 10_000),
            max_batch,
        )?,
        sync_interval: Duration::from_millis(config::parsed_in(
            "RATE_LIMIT_SYNC_MS",
            100,
            10..=10_000,
        )?),
    })
}

fn http_limits(produce_timeout_ms: u64) -> Result<HttpLimits, ConfigError> {
    let defaults = HttpLimits::default();
    let request_ms: u64 = config::parsed_in("HTTP_REQUEST_TIMEOUT_MS", 30_000, 1_000..=600_000)?;
    if request_ms <= produce_timeout_ms {
        return Err(ConfigError::invalid(
            "HTTP_REQUEST_TIMEOUT_MS",
            "must be longer than PRODUCE_TIMEOUT_MS, or acknowledged requests would time out",
        ));
    }
    let analytics_ms: u64 = config::parsed_in("ANALYTICS_QUERY_TIMEOUT_MS", 10_000, 10..=600_000)?;
    if analytics_ms >= request_ms {
        return Err(ConfigError::invalid(
            "ANALYTICS_QUERY_TIMEOUT_MS",
            "must be shorter than HTTP_REQUEST_TIMEOUT_MS, or a slow query would end in a request timeout instead of its own answer",
        ));
    }
    Ok(HttpLimits {
        analytics_query_timeout: Duration::from_millis(analytics_ms),
        header_timeout: Duration::from_millis(config::parsed_in(
            "HTTP_HEADER_TIMEOUT_MS",
            10_000,
            100..=600_000,
        )?),
        request_timeout: Duration::from_millis(request_ms),
        max_connections: config::parsed_in("HTTP_MAX_CONNECTIONS", 10_000, 1..=1_000_000)?,
        max_in_flight: config::parsed_in("HTTP_MAX_IN_FLIGHT", 2_048, 1..=1_000_000)?,
        invalid_keys: Quota {
            per_second: config::parsed_in(
                "INVALID_KEY_RATE_LIMIT_PER_SECOND",
                defaults.invalid_keys.per_second,
                1..=1_000_000,
            )?,
            burst: config::parsed_in(
                "INVALID_KEY_RATE_LIMIT_BURST",
                defaults.invalid_keys.burst,
                1..=1_000_000,
            )?,
        },
    })
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
