//! gamify-api: event ingestion (track, batch, identify), the tenant read API, and the management
//! API for organizations, projects and keys.

mod body;
mod client_ip;
pub mod config;
pub mod error;
pub mod extract;
mod health;
pub mod key_cache;
pub mod metrics;
pub mod openapi;
mod overload;
pub mod producer;
pub mod rate_limit;
pub mod redis;
mod server;
mod v1;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::Request};
use chrono::{DateTime, Utc};
use gamify_common::KeyVoucher;
use gamify_db::Db;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use crate::error::{Error, Result};
use crate::{
    config::{HttpLimits, Settings},
    key_cache::KeyResolver,
    producer::EventProducer,
    rate_limit::{Limits, RateLimiter, RedisCounters},
    redis::Redis,
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
    producer: EventProducer,
    rate_limiter: Arc<RateLimiter>,
    limits: Limits,
    http_limits: HttpLimits,
    in_flight: tokio::sync::Semaphore,
    metrics: PrometheusHandle,
    readiness_timeout: Duration,
    trusted_proxy_hops: usize,
}

impl AppState {
    /// Builds the state; background tasks (key invalidations, last-used writes) stop with
    /// `shutdown`.
    pub fn new(db: Db, settings: &Settings, shutdown: &CancellationToken) -> Result<Self> {
        // The recorder first: the key resolver and the producer register their metrics once, at
        // creation.
        let metrics = metrics::handle();
        let redis = Arc::new(Redis::new(&settings.redis_url)?);
        let keys = KeyResolver::start(
            db.clone(),
            redis.clone(),
            settings.key_cache_ttl,
            settings.negative_cache_ttl,
            shutdown,
        );
        let producer = EventProducer::new(
            &settings.kafka_brokers,
            &settings.kafka_topic,
            &settings.kafka_producer_properties,
            &settings.envelope_secret,
            settings.produce_timeout,
        )?;
        tokio::spawn(metrics::keep_up(metrics.clone(), shutdown.clone()));
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
            producer,
            metrics,
            readiness_timeout: Duration::from_secs(2),
            trusted_proxy_hops: settings.trusted_proxy_hops,
        })))
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    fn admin_token(&self) -> &str {
        &self.0.admin_token
    }

    pub fn keys(&self) -> &KeyResolver {
        &self.0.keys
    }

    /// Tags the keys this deployment issues, and tells them from made-up ones without a lookup.
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
        change: key_cache::Change,
        provisional: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let announced = tokio::time::Instant::now();
        let effective = match self.0.keys.announce(hashes, change).await {
            key_cache::Propagation::Confirmed => {
                tokio::time::sleep_until(announced + key_cache::CONFIRMED_CHANGE_GRACE).await;
                Utc::now().min(provisional)
            }
            key_cache::Propagation::Unconfirmed => provisional,
        };
        if let Ok(wait) = (effective - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        effective
    }

    /// Makes every gateway read keys again after a change that refuses nothing it accepted before
    /// (origins aside, which the worker does not judge; rate limits).
    pub(crate) async fn refresh_keys(&self, hashes: &[String]) {
        self.0
            .keys
            .announce(hashes, key_cache::Change::Updated)
            .await;
    }

    pub fn producer(&self) -> &EventProducer {
        &self.0.producer
    }

    fn redis(&self) -> &Redis {
        &self.0.redis
    }

    fn proxy_hops(&self) -> usize {
        self.0.trusted_proxy_hops
    }

    fn rate_limiter(&self) -> &RateLimiter {
        &self.0.rate_limiter
    }

    fn limits(&self) -> &Limits {
        &self.0.limits
    }

    fn http_limits(&self) -> &HttpLimits {
        &self.0.http_limits
    }

    fn in_flight(&self) -> &tokio::sync::Semaphore {
        &self.0.in_flight
    }

    fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }
}

/// Every route, each registered with `routes!()` so that it is also in the OpenAPI document
/// ([`openapi::document`]). Routes are added here and nowhere else: the test
/// `every_route_is_registered_through_the_openapi_router` checks the sources for others.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(v1::router())
        .merge(metrics::router())
        .merge(openapi::router())
}

/// The routes with their per-route middleware. Middleware that needs no route (tracing, the body
/// limit) wraps the router once in [`serve`] instead: as a router layer it would be one more boxed
/// service cloned per request on every route.
pub fn router(state: AppState) -> Router {
    let (routes, _) = api().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed("method not allowed on this route".to_owned())
}

/// Serves on an already bound listener (tests bind port 0) until `shutdown` is cancelled, then
/// finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = tower::ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // The path only: query strings and headers may carry keys.
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
            }),
        )
        .layer(DefaultBodyLimit::max(MANAGEMENT_BODY_LIMIT))
        .service(router(state.clone()));
    let served = server::run(listener, app, state.0.http_limits, shutdown).await;
    // Events already acknowledged are safe; this only lets late deliveries finish cleanly.
    let producer_state = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        producer_state.producer().flush(Duration::from_secs(5))
    })
    .await;
    served
}
