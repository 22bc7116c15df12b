//! The gateway's shared state: the components every request may use (database, key resolver,
//! producer, rate limiter, limits), built once from the settings.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use gamify_common::KeyVoucher;
use gamify_db::{Db, gamification::rule_sets::RuleSets};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::{SystemClock, WallClock},
    config::{HttpLimits, Limits, Settings},
    gamification::user_tokens::UserTokens,
    http::error::Result,
    ingest::{
        keys::{self, KeyResolver, KeyStore},
        producer::EventProducer,
        rate_limit::{self, RateLimiter, RedisCounters},
        sink::EventSink,
    },
    redis::Redis,
    telemetry,
};

/// Request bodies of the management API are small; ingestion sets its own limits.
pub const MANAGEMENT_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    db: Db,
    admin_token: String,
    redis: Arc<Redis>,
    keys: Arc<KeyResolver>,
    key_voucher: KeyVoucher,
    user_tokens: UserTokens,
    rule_sets: RuleSets,
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn WallClock>,
    rate_limiter: Arc<RateLimiter>,
    limits: Limits,
    http_limits: HttpLimits,
    in_flight: tokio::sync::Semaphore,
    metrics: PrometheusHandle,
    readiness_timeout: Duration,
    trusted_proxy_hops: usize,
    accounts: Accounts,
    /// Cancelled when the server stops: long-lived responses (the console's live stream) end.
    shutdown: CancellationToken,
}

/// What the accounts routes share: the settings and the password hasher.
#[derive(Debug)]
pub struct Accounts {
    pub settings: crate::config::AccountSettings,
    pub passwords: crate::accounts::Passwords,
    origin: String,
}

impl Accounts {
    /// The deployment's own origin, as browsers write it in `Origin`.
    pub fn public_origin(&self) -> &str {
        &self.origin
    }
}

impl AppState {
    /// Builds the state on Postgres (`db`) and the broker the settings name; background tasks
    /// (key invalidations, last-used writes, rate-limit exchange) stop with `shutdown`.
    pub fn new(db: Db, settings: &Settings, shutdown: &CancellationToken) -> Result<Self> {
        // The recorder first: the producer registers its metrics once, at creation.
        telemetry::handle();
        let producer = EventProducer::new(
            &settings.kafka_brokers,
            &settings.kafka_topic,
            &settings.kafka_producer_properties,
            &settings.envelope_secret,
            settings.produce_timeout,
        )?;
        let store = Arc::new(db.clone());
        Self::with_parts(
            db,
            settings,
            shutdown,
            Arc::new(producer),
            store,
            Arc::new(SystemClock),
        )
    }

    /// The state with the given event sink, key store and clock: what `new` builds on the broker,
    /// Postgres and the system clock, or memory and a clock a test moves.
    pub fn with_parts(
        db: Db,
        settings: &Settings,
        shutdown: &CancellationToken,
        sink: Arc<dyn EventSink>,
        store: Arc<dyn KeyStore>,
        clock: Arc<dyn WallClock>,
    ) -> Result<Self> {
        // The recorder first: the key resolver registers its metrics once, at creation.
        let metrics = telemetry::handle();
        let redis = Arc::new(Redis::new(&settings.redis_url)?);
        let keys = KeyResolver::start(
            store,
            redis.clone(),
            settings.key_cache_ttl,
            settings.negative_cache_ttl,
            shutdown,
        );
        tokio::spawn(telemetry::keep_up(metrics.clone(), shutdown.clone()));
        let rate_limiter = Arc::new(RateLimiter::default());
        tokio::spawn(rate_limit::keep_in_step(
            rate_limiter.clone(),
            RedisCounters(redis.clone()),
            settings.rate_limit.sync_interval,
            shutdown.clone(),
        ));
        Ok(Self(Arc::new(Inner {
            db,
            admin_token: settings.admin_token.value.clone(),
            rate_limiter,
            limits: settings.rate_limit,
            http_limits: settings.http,
            in_flight: tokio::sync::Semaphore::new(settings.http.max_in_flight),
            redis,
            keys,
            key_voucher: KeyVoucher::new(settings.envelope_secret.as_bytes()),
            user_tokens: UserTokens::new(settings.envelope_secret.as_bytes()),
            rule_sets: RuleSets::default(),
            sink,
            clock,
            metrics,
            readiness_timeout: Duration::from_secs(2),
            trusted_proxy_hops: settings.trusted_proxy_hops,
            shutdown: shutdown.clone(),
            accounts: Accounts {
                passwords: crate::accounts::Passwords::new(settings.accounts.password_hash)
                    .map_err(|error| {
                        crate::Error::invalid(format!("password hash cost: {error}"))
                    })?,
                origin: settings.accounts.public_origin(),
                settings: settings.accounts.clone(),
            },
        })))
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    pub(crate) fn admin_token(&self) -> &str {
        &self.0.admin_token
    }

    pub fn keys(&self) -> &KeyResolver {
        &self.0.keys
    }

    /// Tags the keys this deployment issues, and tells them from made-up ones without a lookup.
    pub(crate) fn user_tokens(&self) -> &UserTokens {
        &self.0.user_tokens
    }

    /// Parsed rule versions, shared by the routes that read under a project's rules.
    pub(crate) fn rule_sets(&self) -> &RuleSets {
        &self.0.rule_sets
    }

    pub(crate) fn key_voucher(&self) -> &KeyVoucher {
        &self.0.key_voucher
    }

    /// The latest instant a key change committed now may take to hold on every gateway: what the
    /// management API writes first, before it knows better.
    pub(crate) fn provisional_effect(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.0.keys.unconfirmed_change_delay())
                .unwrap_or(chrono::Duration::MAX)
    }

    /// Announces a change of keys (committed to Postgres, taking effect at `provisional` at the
    /// latest) to every gateway and returns the instant from which every gateway applies it: soon
    /// after every gateway acknowledged, or `provisional` when not all did. Returns only once that
    /// instant has passed, so that once the caller answers, no gateway accepts what the change
    /// forbids — and no event a gateway accepted before is judged otherwise by the worker.
    pub(crate) async fn settle_key_change(
        &self,
        hashes: &[String],
        change: keys::Change,
        provisional: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let announced = tokio::time::Instant::now();
        let effective = match self.0.keys.announce(hashes, change).await {
            keys::Propagation::Confirmed => {
                tokio::time::sleep_until(announced + keys::CONFIRMED_CHANGE_GRACE).await;
                Utc::now().min(provisional)
            }
            keys::Propagation::Unconfirmed => provisional,
        };
        if let Ok(wait) = (effective - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        effective
    }

    /// Makes every gateway read keys again after a change that refuses nothing it accepted before
    /// (origins aside, which the worker does not judge; rate limits).
    pub(crate) async fn refresh_keys(&self, hashes: &[String]) {
        self.0.keys.announce(hashes, keys::Change::Updated).await;
    }

    /// The time of day, from the clock this state was given.
    pub fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }

    pub fn sink(&self) -> &dyn EventSink {
        self.0.sink.as_ref()
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.0.redis
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    pub(crate) fn accounts(&self) -> &Accounts {
        &self.0.accounts
    }

    pub(crate) fn proxy_hops(&self) -> usize {
        self.0.trusted_proxy_hops
    }

    pub(crate) fn rate_limiter(&self) -> &RateLimiter {
        &self.0.rate_limiter
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.0.limits
    }

    pub(crate) fn http_limits(&self) -> &HttpLimits {
        &self.0.http_limits
    }

    pub(crate) fn in_flight(&self) -> &tokio::sync::Semaphore {
        &self.0.in_flight
    }

    pub(crate) fn readiness_timeout(&self) -> Duration {
        self.0.readiness_timeout
    }

    pub(crate) fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }
}
