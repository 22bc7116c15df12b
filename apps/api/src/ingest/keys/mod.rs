//! API key resolution on the ingestion path: L0 in-process (moka) → L1 Redis → L2 Postgres.
//! Unknown keys are remembered as unknown for a few seconds at L0 and L1, so a flood of random keys
//! does not reach Postgres.
//!
//! A change that can make a key refuse what it accepted before (a revocation, an expiry brought
//! forward, a trusted-event list) is *announced* ([`KeyResolver::announce`]): every gateway drops
//! the key from its L0 and acknowledges, and the announcement answers [`Propagation::Confirmed`]
//! only once every gateway did. The management API then fixes the instant the change takes effect
//! after that, so no gateway accepts under the old facts an event received after it — which is
//! what the worker checks. Three rules keep a stale view from outliving an announcement:
//! - a load that began before an invalidation of its key is never served (it may have read the
//!   old row);
//! - an announced key's Redis entry is replaced by a marker that no refill may overwrite
//!   (`SET NX`), for longer than any load that read the old row could take to write it back;
//! - a gateway whose invalidation feed is not known to be live serves an L0 entry only briefly
//!   after loading it ([`DISCONNECTED_SERVE_FOR`]), so one that Redis no longer counts as a
//!   subscriber cannot keep serving what it cached.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use gamify_common::{KeyHash, KeyType, events::NameList};
use gamify_db::sources::ProjectRateLimit;
use moka::{Expiry, future::Cache};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod announce;
mod last_used;
mod store;

pub use announce::{Change, Propagation};
use announce::{listen_for_invalidations, retry_invalidations};
use last_used::write_last_used;
pub use store::KeyStore;

use crate::{
    http::error::{Error, Result},
    redis::Redis,
};

fn cannot_verify() -> Error {
    Error::unavailable("cannot verify the API key right now", Some(1))
}

/// Channel on which key changes are announced to every gateway instance. A message is
/// `<nonce> <hash> [<hash>…]`; each receiver acknowledges by incrementing `ACK_PREFIX<nonce>`.
/// A bare `<hash>` (from gateways before acknowledgements) is dropped without one.
pub const INVALIDATION_CHANNEL: &str = "gamify:apikey:invalidate";
const ACK_PREFIX: &str = "gamify:apikey:ack:";
/// How long acknowledgement counters live in Redis.
const ACK_TTL_SECONDS: u64 = 60;
/// How long an announcement waits for every gateway's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// An unknown (or revoked) key, at L1.
const NEGATIVE_MARKER: &str = "-";
/// A changed key, at L1: read Postgres, and let no refill overwrite this for a while.
const CHANGED_MARKER: &str = "~";
/// How long a marker written by an announcement stays: longer than a load that read the old row
/// could take to try writing it back (Postgres' statement timeout, 30 s, plus Redis' call bound).
const MARKER_TTL_SECONDS: u64 = 60;
/// Invalidations that could not reach Redis wait here, retried until Redis takes them; beyond this
/// many, new ones are dropped (and logged): other instances then drop the key when their L0 entry
/// expires or their subscription reconnects, and Redis' L1 entry when it expires.
const MAX_PENDING_INVALIDATIONS: usize = 10_000;
/// How often pending invalidations are retried (through the breaker, so a retry while Redis is
/// known to be down costs nothing).
const INVALIDATION_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// last_used_at is written at most this often per key.
const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);
/// How often the invalidation feed is pinged, and how recent its last answer must be for the feed
/// to count as live.
const FEED_PING_INTERVAL: Duration = Duration::from_millis(100);
const FEED_LIVE_FOR: Duration = Duration::from_millis(300);
/// How long after loading it a gateway whose feed is not live serves an L0 entry.
pub const DISCONNECTED_SERVE_FOR: Duration = Duration::from_millis(300);
/// A change confirmed by every gateway takes effect no sooner than this after it was announced:
/// a gateway whose feed died unnoticed (not counted among the receivers) stops serving what it
/// cached within this time ([`FEED_LIVE_FOR`], [`DISCONNECTED_SERVE_FOR`]).
pub const CONFIRMED_CHANGE_GRACE: Duration = Duration::from_millis(300);
/// Added to the L0 lifetime for a change no acknowledgement confirmed: loads in flight and clocks.
pub const UNCONFIRMED_CHANGE_MARGIN: Duration = Duration::from_secs(5);
/// How recent a check [`KeyResolver::unchanged_since`] vouches for: a body that took longer gets
/// its key looked up again.
const FAST_CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// Loads of one key tried in a row while it keeps being invalidated during them.
const MAX_LOAD_ATTEMPTS: usize = 3;

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
    /// The version of `trusted_events`; 0 in entries cached by gateways before versions.
    #[serde(default)]
    pub trusted_events_version: i32,
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

/// The result of resolving a key.
#[derive(Debug, Clone)]
pub enum Resolved {
    Found(Arc<KeyRecord>),
    /// Unknown or revoked; `looked_up` when this call asked Postgres to find that out.
    Unknown {
        looked_up: bool,
    },
    /// Not in any cache, and the caller may not ask Postgres.
    NotLookedUp,
}

#[derive(Debug, Clone)]
enum Lookup {
    Found(Arc<KeyRecord>),
    Unknown,
}

/// An L0 entry: what was found, when its load began, how long it may be kept.
#[derive(Debug, Clone)]
struct Cached {
    lookup: Lookup,
    loaded: Instant,
    keep_for: Duration,
    from_postgres: bool,
}

struct CachedExpiry;

impl Expiry<String, Cached> for CachedExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        created_at: Instant,
    ) -> Option<Duration> {
        // Counted from the start of the load: what it read is that old already.
        Some(
            value
                .keep_for
                .saturating_sub(created_at.saturating_duration_since(value.loaded)),
        )
    }
}

#[derive(Debug)]
enum LoadError {
    Failed(Error),
    NotAllowed,
}

/// Instants as nanoseconds since the resolver started, for atomics.
struct Epoch(Instant);

impl Epoch {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }
}

pub struct KeyResolver {
    l0: Cache<String, Cached>,
    redis: Arc<Redis>,
    store: Arc<dyn KeyStore>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    epoch: Epoch,
    /// When each recently invalidated key was last invalidated here.
    invalidated: moka::sync::Cache<String, Instant>,
    /// The latest invalidation of any key, and the latest of all of L0 (in `epoch` nanos): a load
    /// that began after both is not checked against `invalidated`.
    last_invalidation: AtomicU64,
    all_invalidated: AtomicU64,
    /// When the last answered ping of the invalidation feed was sent (`epoch` nanos; 0: never).
    feed_confirmed: AtomicU64,
    recently_used: moka::sync::Cache<Uuid, ()>,
    used: mpsc::Sender<Uuid>,
    /// Key hashes whose invalidation did not reach Redis yet, with the marker each needs.
    pending_invalidations: Mutex<HashMap<String, Change>>,
    /// `gamify_key_cache_lookups_total{level="l0"}`, registered once: by name it costs a hash and
    /// a map probe per request.
    l0_hits: metrics::Counter,
}

impl KeyResolver {
    /// Also spawns, bound to `shutdown`, the invalidation listener and the last_used_at writer.
    pub fn start(
        store: Arc<dyn KeyStore>,
        redis: Arc<Redis>,
        positive_ttl: Duration,
        negative_ttl: Duration,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let l0 = Cache::builder()
            .max_capacity(100_000)
            .expire_after(CachedExpiry)
            .build();
        let (used, used_rx) = mpsc::channel(10_000);
        let resolver = Arc::new(Self {
            l0,
            redis,
            store: store.clone(),
            positive_ttl,
            negative_ttl,
            epoch: Epoch(Instant::now()),
            invalidated: moka::sync::Cache::builder()
                .max_capacity(100_000)
                // Longer than an L0 entry lives, counted from a load that may have taken the
                // statement timeout.
                .time_to_live(positive_ttl + Duration::from_secs(MARKER_TTL_SECONDS))
                .build(),
            last_invalidation: AtomicU64::new(0),
            all_invalidated: AtomicU64::new(0),
            feed_confirmed: AtomicU64::new(0),
            recently_used: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LAST_USED_INTERVAL)
                .build(),
            used,
            pending_invalidations: Mutex::new(HashMap::new()),
            l0_hits: metrics::counter!("gamify_key_cache_lookups_total", "level" => "l0"),
        });
        tokio::spawn(listen_for_invalidations(resolver.clone(), shutdown.clone()));
        tokio::spawn(retry_invalidations(resolver.clone(), shutdown.clone()));
        tokio::spawn(write_last_used(store, used_rx, shutdown.clone()));
        resolver
    }

    /// How long after a change that no acknowledgement confirmed another gateway may still accept
    /// under the old facts: the change takes effect that long after it was announced.
    pub fn unconfirmed_change_delay(&self) -> Duration {
        self.positive_ttl + UNCONFIRMED_CHANGE_MARGIN
    }

    /// The key's record, whether it is unknown (or revoked), or — when `may_query_postgres` says
    /// no (asked only on an L0 miss) and no cache knows it — that it was not looked up. Expiry is
    /// the caller's check, so that an expired key is refused the moment it expires, whatever the
    /// caches hold.
    pub async fn resolve(
        &self,
        hash: &KeyHash,
        may_query_postgres: impl FnOnce() -> bool,
    ) -> Result<Resolved> {
        // A hit needs none of the loading machinery. The loader's future (Redis, then Postgres)
        // is boxed: inline, its several KB would be part of every request's future, copied
        // whenever that future is moved or boxed, on hits as much as on misses.
        if let Some(cached) = self.l0.get(hash.as_str()).await {
            if self.servable(hash.as_str(), &cached) {
                self.l0_hits.increment(1);
                return Ok(cached.resolved(false));
            }
            self.l0.invalidate(hash.as_str()).await;
        }
        let may_query_postgres = may_query_postgres();
        for _ in 0..MAX_LOAD_ATTEMPTS {
            match Box::pin(self.load_into_l0(hash, may_query_postgres)).await {
                Ok((cached, fresh)) => {
                    if !self.invalidated_since(hash.as_str(), cached.loaded) {
                        return Ok(cached.resolved(fresh));
                    }
                    // It began before an invalidation of this key: it may hold the old row.
                    self.l0.invalidate(hash.as_str()).await;
                }
                Err(err) => match err.as_ref() {
                    LoadError::NotAllowed => return Ok(Resolved::NotLookedUp),
                    LoadError::Failed(err) => {
                        tracing::warn!(error = %err, "cannot resolve api key");
                        return Err(cannot_verify());
                    }
                },
            }
        }
        tracing::warn!("an api key kept changing while it was loaded");
        Err(cannot_verify())
    }

    /// Whether an L0 entry may answer now: no invalidation since its load began, and, for a
    /// found key, either a live feed (any change would have reached this gateway) or a recent load.
    fn servable(&self, hash: &str, cached: &Cached) -> bool {
        if self.invalidated_since(hash, cached.loaded) {
            return false;
        }
        match cached.lookup {
            Lookup::Unknown => true,
            Lookup::Found(_) => {
                let now = Instant::now();
                self.feed_is_live_at(now)
                    || now.saturating_duration_since(cached.loaded) < DISCONNECTED_SERVE_FOR
            }
        }
    }

    /// Whether a record this gateway found servable at `checked` (an instant taken before it
    /// looked) still is, without looking again: no key was invalidated here since, the feed is
    /// live (so no change went unseen), and it was a moment ago ([`FAST_CONFIRM_WITHIN`]).
    pub fn unchanged_since(&self, checked: Instant) -> bool {
        let now = Instant::now();
        now.saturating_duration_since(checked) < FAST_CONFIRM_WITHIN
            && self.epoch.nanos(checked) > self.last_invalidation.load(Ordering::Acquire)
            && self.feed_is_live_at(now)
    }

    fn feed_is_live_at(&self, now: Instant) -> bool {
        let confirmed = self.feed_confirmed.load(Ordering::Acquire);
        confirmed != 0
            && self.epoch.nanos(now).saturating_sub(confirmed) < FEED_LIVE_FOR.as_nanos() as u64
    }

    /// Whether `hash` (or all of L0) was invalidated here at or after `loaded`.
    fn invalidated_since(&self, hash: &str, loaded: Instant) -> bool {
        let loaded_nanos = self.epoch.nanos(loaded);
        if loaded_nanos > self.last_invalidation.load(Ordering::Acquire) {
            return false;
        }
        loaded_nanos <= self.all_invalidated.load(Ordering::Acquire)
            || self.invalidated.get(hash).is_some_and(|at| loaded <= at)
    }

    /// Drops `hashes` from L0, and makes sure a load already under way for one is not served.
    async fn forget_locally(&self, hashes: &[&str]) {
        let now = Instant::now();
        for hash in hashes {
            self.invalidated.insert((*hash).to_owned(), now);
        }
        self.last_invalidation
            .fetch_max(self.epoch.nanos(now), Ordering::AcqRel);
        for hash in hashes {
            self.l0.invalidate(*hash).await;
        }
    }

    fn forget_all_locally(&self) {
        let now = self.epoch.nanos(Instant::now());
        self.all_invalidated.fetch_max(now, Ordering::AcqRel);
        self.last_invalidation.fetch_max(now, Ordering::AcqRel);
        self.l0.invalidate_all();
    }

    /// Concurrent misses of one key share a single load; `true` with the entry when this call's
    /// load made it.
    async fn load_into_l0(
        &self,
        hash: &KeyHash,
        may_query_postgres: bool,
    ) -> Result<(Cached, bool), Arc<LoadError>> {
        let entry = self
            .l0
            .entry_by_ref(hash.as_str())
            .or_try_insert_with(self.load(hash, may_query_postgres))
            .await?;
        if !entry.is_fresh() {
            self.l0_hits.increment(1);
        }
        let fresh = entry.is_fresh();
        Ok((entry.into_value(), fresh))
    }

    /// L1, then L2; fills L1 on the way back unless a marker says the key just changed.
    async fn load(&self, hash: &KeyHash, may_query_postgres: bool) -> Result<Cached, LoadError> {
        let loaded = Instant::now();
        let redis_key = format!("apikey:{hash}");
        let mut read = redis::pipe();
        read.atomic()
            .cmd("GET")
            .arg(&redis_key)
            .cmd("PTTL")
            .arg(&redis_key);
        let mut refill = true;
        match self.redis.pipeline::<(Option<String>, i64)>(&read).await {
            Ok((Some(cached), _)) if cached == NEGATIVE_MARKER => {
                metrics::counter!("gamify_key_cache_lookups_total", "level" => "l1").increment(1);
                return Ok(Cached {
                    lookup: Lookup::Unknown,
                    loaded,
                    keep_for: self.negative_ttl,
                    from_postgres: false,
                });
            }
            Ok((Some(cached), _)) if cached == CHANGED_MARKER => refill = false,
            Ok((Some(cached), remaining_ms)) => {
                if let Ok(record) = serde_json::from_str::<KeyRecord>(&cached) {
                    metrics::counter!("gamify_key_cache_lookups_total", "level" => "l1")
                        .increment(1);
                    // Whoever wrote it read Postgres when its lifetime began: it is kept here
                    // only for what is left of it.
                    let remaining = u64::try_from(remaining_ms)
                        .map_or(self.positive_ttl, Duration::from_millis);
                    return Ok(Cached {
                        lookup: Lookup::Found(Arc::new(record)),
                        loaded,
                        keep_for: remaining.min(self.positive_ttl),
                        from_postgres: false,
                    });
                }
                tracing::warn!("unreadable key cache entry in redis; reading postgres");
            }
            Ok((None, _)) => {}
            Err(err) => {
                tracing::debug!(error = %err, "redis unavailable for key lookup; reading postgres");
                metrics::counter!("gamify_key_cache_redis_errors_total").increment(1);
            }
        }
        if !may_query_postgres {
            return Err(LoadError::NotAllowed);
        }

        metrics::counter!("gamify_key_cache_lookups_total", "level" => "l2").increment(1);
        let lookup = match self
            .load_from_postgres(hash)
            .await
            .map_err(LoadError::Failed)?
        {
            Some(record) => Lookup::Found(Arc::new(record)),
            None => Lookup::Unknown,
        };
        let (value, keep_for) = match &lookup {
            Lookup::Found(record) => (
                serde_json::to_string(record.as_ref()).unwrap_or_default(),
                self.positive_ttl,
            ),
            Lookup::Unknown => (NEGATIVE_MARKER.to_owned(), self.negative_ttl),
        };
        if refill {
            // NX: an announcement's marker written since this load began is never overwritten
            // with what it read.
            let fill = redis::cmd("SET")
                .arg(&redis_key)
                .arg(value)
                .arg("PX")
                .arg(keep_for.as_millis().max(1) as u64)
                .arg("NX")
                .to_owned();
            if let Err(err) = self.redis.query::<()>(&fill).await {
                tracing::debug!(error = %err, "cannot fill the redis key cache");
            }
        }
        Ok(Cached {
            lookup,
            loaded,
            keep_for,
            from_postgres: true,
        })
    }

    /// Through the one source lookup the worker uses too; a revoked key is unknown here.
    async fn load_from_postgres(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, Error> {
        let Some(source) = self.store.key_by_hash(hash.as_str()).await? else {
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
            trusted_events_version: source.trusted_events_version,
            allowed_origins: source.allowed_origins,
            project_rate_limit: source.rate_limit,
        }))
    }
}

impl Cached {
    fn resolved(&self, fresh: bool) -> Resolved {
        match &self.lookup {
            Lookup::Found(record) => Resolved::Found(record.clone()),
            Lookup::Unknown => Resolved::Unknown {
                looked_up: fresh && self.from_postgres,
            },
        }
    }
}
