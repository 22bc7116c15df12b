//! API key resolution on the ingestion path: L0 in-process (moka) → L1 Redis → L2 Postgres.
//! Unknown keys are remembered as unknown for a few seconds at L0 and L1, so a flood of random keys
//! does not reach Postgres. Revoke and roll delete the Redis entry and publish an invalidation that
//! every gateway drops from its L0.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use gamify_common::{KeyHash, KeyType, events::NameList};
use gamify_db::{
    Db,
    sea_orm::{ConnectionTrait, Statement},
    sources::ProjectRateLimit,
};
use moka::{Expiry, future::Cache};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Error, redis::Redis};

/// Channel on which revocations and rolls are announced to every gateway instance.
pub const INVALIDATION_CHANNEL: &str = "gamify:apikey:invalidate";
const L1_TTL_SECONDS: u64 = 60;
const NEGATIVE_MARKER: &str = "-";
/// Invalidations that could not reach Redis wait here, retried until Redis takes them; beyond this
/// many, new ones are dropped (and logged): other instances then drop the key when their L0 entry
/// expires or their subscription reconnects, and Redis' L1 entry when it expires.
const MAX_PENDING_INVALIDATIONS: usize = 10_000;
/// How often pending invalidations are retried (through the breaker, so a retry while Redis is
/// known to be down costs nothing).
const INVALIDATION_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// last_used_at is written at most this often per key.
const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

/// What the gateway needs to know about a key, cached at every level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub key_id: Uuid,
    pub project_id: Uuid,
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub expires_at: Option<DateTime<Utc>>,
    /// The project's extra server-only event names.
    pub trusted_events: NameList,
    /// Browser origins allowed to use a publishable key; empty: any.
    pub allowed_origins: NameList,
    /// The project's own ceiling on accepted events, if it set one.
    pub project_rate_limit: Option<ProjectRateLimit>,
}

impl KeyRecord {
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

#[derive(Debug, Clone)]
enum Lookup {
    Found(Arc<KeyRecord>),
    Unknown,
}

struct LookupExpiry {
    found: Duration,
    unknown: Duration,
}

impl Expiry<String, Lookup> for LookupExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Lookup,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Lookup::Found(_) => self.found,
            Lookup::Unknown => self.unknown,
        })
    }
}

pub struct KeyResolver {
    l0: Cache<String, Lookup>,
    redis: Arc<Redis>,
    db: Db,
    negative_ttl: Duration,
    recently_used: moka::sync::Cache<Uuid, ()>,
    used: mpsc::Sender<Uuid>,
    /// Key hashes whose invalidation did not reach Redis yet.
    pending_invalidations: Mutex<HashSet<String>>,
    /// `gamify_key_cache_lookups_total{level="l0"}`, registered once: by name it costs a hash and
    /// a map probe per request.
    l0_hits: metrics::Counter,
}

impl KeyResolver {
    /// Also spawns, bound to `shutdown`, the invalidation listener and the last_used_at writer.
    pub fn start(
        db: Db,
        redis: Arc<Redis>,
        positive_ttl: Duration,
        negative_ttl: Duration,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let l0 = Cache::builder()
            .max_capacity(100_000)
            .expire_after(LookupExpiry {
                found: positive_ttl,
                unknown: negative_ttl,
            })
            .build();
        let (used, used_rx) = mpsc::channel(10_000);
        let resolver = Arc::new(Self {
            l0,
            redis,
            db: db.clone(),
            negative_ttl,
            recently_used: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LAST_USED_INTERVAL)
                .build(),
            used,
            pending_invalidations: Mutex::new(HashSet::new()),
            l0_hits: metrics::counter!("gamify_key_cache_lookups_total", "level" => "l0"),
        });
        tokio::spawn(listen_for_invalidations(resolver.clone(), shutdown.clone()));
        tokio::spawn(retry_invalidations(resolver.clone(), shutdown.clone()));
        tokio::spawn(write_last_used(db, used_rx, shutdown.clone()));
        resolver
    }

    /// The key's record, or `None` when it is unknown or revoked. Expiry is the caller's check, so
    /// that an expired key is refused the moment it expires, whatever the caches hold.
    pub async fn resolve(&self, hash: &KeyHash) -> Result<Option<Arc<KeyRecord>>, Arc<Error>> {
        // A hit needs none of the loading machinery. The loader's future (Redis, then Postgres)
        // is boxed: inline, its several KB would be part of every request's future, copied
        // whenever that future is moved or boxed, on hits as much as on misses.
        let lookup = match self.l0.get(hash.as_str()).await {
            Some(lookup) => {
                self.l0_hits.increment(1);
                lookup
            }
            None => Box::pin(self.load_into_l0(hash)).await?,
        };
        Ok(match lookup {
            Lookup::Found(record) => Some(record),
            Lookup::Unknown => None,
        })
    }

    /// Concurrent misses of one key share a single load.
    async fn load_into_l0(&self, hash: &KeyHash) -> Result<Lookup, Arc<Error>> {
        let entry = self
            .l0
            .entry_by_ref(hash.as_str())
            .or_try_insert_with(self.load(hash))
            .await?;
        if !entry.is_fresh() {
            self.l0_hits.increment(1);
        }
        Ok(entry.into_value())
    }

    /// L1, then L2; fills L1 on the way back.
    async fn load(&self, hash: &KeyHash) -> Result<Lookup, Error> {
        let redis_key = format!("apikey:{hash}");
        match self
            .redis
            .query::<Option<String>>(redis::cmd("GET").arg(&redis_key))
            .await
        {
            Ok(Some(cached)) if cached == NEGATIVE_MARKER => {
                metrics::counter!("gamify_key_cache_lookups_total", "level" => "l1").increment(1);
                return Ok(Lookup::Unknown);
            }
            Ok(Some(cached)) => {
                if let Ok(record) = serde_json::from_str::<KeyRecord>(&cached) {
                    metrics::counter!("gamify_key_cache_lookups_total", "level" => "l1")
                        .increment(1);
                    return Ok(Lookup::Found(Arc::new(record)));
                }
                tracing::warn!("unreadable key cache entry in redis; reading postgres");
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(error = %err, "redis unavailable for key lookup; reading postgres");
                metrics::counter!("gamify_key_cache_redis_errors_total").increment(1);
            }
        }

        metrics::counter!("gamify_key_cache_lookups_total", "level" => "l2").increment(1);
        let lookup = match self.load_from_postgres(hash).await? {
            Some(record) => Lookup::Found(Arc::new(record)),
            None => Lookup::Unknown,
        };
        let (value, ttl) = match &lookup {
            Lookup::Found(record) => (
                serde_json::to_string(record.as_ref()).unwrap_or_default(),
                L1_TTL_SECONDS,
            ),
            Lookup::Unknown => (
                NEGATIVE_MARKER.to_owned(),
                self.negative_ttl.as_secs().max(1),
            ),
        };
        if let Err(err) = self
            .redis
            .query::<()>(
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(value)
                    .arg("EX")
                    .arg(ttl),
            )
            .await
        {
            tracing::debug!(error = %err, "cannot fill the redis key cache");
        }
        Ok(lookup)
    }

    /// Through the one source lookup the worker uses too; a revoked key is unknown here.
    async fn load_from_postgres(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, Error> {
        let Some(source) = self.db.key_source_by_hash(hash.as_str()).await? else {
            return Ok(None);
        };
        if source.revoked_at.is_some() {
            return Ok(None);
        }
        Ok(Some(KeyRecord {
            key_id: source.key_id,
            project_id: source.project_id,
            key_type: source.key_type,
            expires_at: source.expires_at,
            trusted_events: source.trusted_events,
            allowed_origins: source.allowed_origins,
            project_rate_limit: source.rate_limit,
        }))
    }

    /// Records that a key was used; written to Postgres off the request path, at most once a
    /// minute per key.
    pub fn mark_used(&self, key_id: Uuid) {
        if self.recently_used.contains_key(&key_id) {
            return;
        }
        self.recently_used.insert(key_id, ());
        // A full queue only delays last_used_at until the next minute; never block a request.
        let _ = self.used.try_send(key_id);
    }

    /// Forgets keys everywhere: this instance's L0 now, Redis, and every other instance's L0 through
    /// the invalidation channel. What cannot reach Redis now is retried in the background until it
    /// does, so other instances learn of it once Redis is back.
    pub async fn invalidate(&self, hashes: &[String]) {
        for hash in hashes {
            self.l0.invalidate(hash).await;
        }
        let mut failed = Vec::new();
        for hash in hashes {
            if let Err(err) = self.invalidate_in_redis(hash).await {
                tracing::warn!(error = %err, "cannot invalidate a key through redis; retrying in the background");
                failed.push(hash.clone());
            }
        }
        self.defer_invalidations(failed);
    }

    /// Deletes the L1 entry, then announces the key to every instance.
    async fn invalidate_in_redis(&self, hash: &str) -> Result<(), Error> {
        self.redis
            .query::<()>(redis::cmd("DEL").arg(format!("apikey:{hash}")))
            .await?;
        self.redis
            .query::<()>(redis::cmd("PUBLISH").arg(INVALIDATION_CHANNEL).arg(hash))
            .await
    }

    fn defer_invalidations(&self, hashes: Vec<String>) {
        if hashes.is_empty() {
            return;
        }
        let Ok(mut pending) = self.pending_invalidations.lock() else {
            tracing::error!(
                keys = hashes.len(),
                "pending key invalidations unavailable; dropped"
            );
            return;
        };
        let mut dropped = 0usize;
        for hash in hashes {
            if pending.len() < MAX_PENDING_INVALIDATIONS || pending.contains(&hash) {
                pending.insert(hash);
            } else {
                dropped += 1;
            }
        }
        metrics::gauge!("gamify_key_invalidations_pending").set(pending.len() as f64);
        if dropped > 0 {
            metrics::counter!("gamify_key_invalidations_dropped_total").increment(dropped as u64);
            tracing::error!(
                dropped,
                pending = pending.len(),
                "too many key invalidations waiting for redis; dropped some (other instances forget those keys when their cache entries expire)"
            );
        }
    }

    /// Invalidations still waiting for Redis.
    pub fn pending_invalidations(&self) -> usize {
        self.pending_invalidations
            .lock()
            .map(|pending| pending.len())
            .unwrap_or(0)
    }
}

/// Retries invalidations that did not reach Redis, until each does.
async fn retry_invalidations(resolver: Arc<KeyResolver>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INVALIDATION_RETRY_INTERVAL) => {}
        }
        let batch: Vec<String> = match resolver.pending_invalidations.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            continue;
        }
        let mut remaining = batch.into_iter();
        let mut delivered = 0usize;
        let mut failed = Vec::new();
        for hash in remaining.by_ref() {
            if resolver.invalidate_in_redis(&hash).await.is_ok() {
                delivered += 1;
            } else {
                // Redis is down again (and the breaker now open): keep the rest for later.
                failed.push(hash);
                break;
            }
        }
        failed.extend(remaining);
        if delivered > 0 {
            tracing::info!(
                delivered,
                pending = failed.len(),
                "delayed key invalidations reached redis"
            );
        }
        resolver.defer_invalidations(failed);
        if resolver.pending_invalidations() == 0 {
            metrics::gauge!("gamify_key_invalidations_pending").set(0.0);
        }
    }
}

/// Drops announced keys from L0. After any disconnection the whole L0 is dropped, since
/// announcements may have been missed meanwhile; a subscription that stops answering pings (a Redis
/// that hangs rather than closes) counts as disconnected.
async fn listen_for_invalidations(resolver: Arc<KeyResolver>, shutdown: CancellationToken) {
    const SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(2);
    const PING_INTERVAL: Duration = Duration::from_secs(5);
    loop {
        let subscribed = tokio::time::timeout(SUBSCRIPTION_TIMEOUT, async {
            let mut pubsub = resolver.redis.client().get_async_pubsub().await?;
            pubsub.subscribe(INVALIDATION_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                resolver.l0.invalidate_all();
                tracing::debug!("listening for key invalidations");
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(PING_INTERVAL);
                ping.tick().await;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                if let Ok(hash) = message.get_payload::<String>() {
                                    resolver.l0.invalidate(&hash).await;
                                }
                            }
                            None => break,
                        },
                        _ = ping.tick() => {
                            let answered = tokio::time::timeout(
                                SUBSCRIPTION_TIMEOUT,
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if !matches!(answered, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!("key invalidation channel lost; reconnecting");
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "redis unavailable for key invalidations")
            }
            Err(_) => tracing::debug!("redis did not answer the key invalidation subscription"),
        }
        resolver.l0.invalidate_all();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn write_last_used(db: Db, mut used: mpsc::Receiver<Uuid>, shutdown: CancellationToken) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            key = used.recv() => match key { Some(key) => key, None => return },
        };
        let mut keys = HashSet::from([first]);
        while let Ok(key) = used.try_recv() {
            keys.insert(key);
        }
        let keys: Vec<Uuid> = keys.into_iter().collect();
        let conn = db.shared();
        let result = conn
            .execute(Statement::from_sql_and_values(
                conn.get_database_backend(),
                "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)",
                [keys.into()],
            ))
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "cannot record api key use");
        }
    }
}
