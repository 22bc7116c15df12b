//! Rate limits without a Redis round trip per request: every decision is taken on local GCRA
//! buckets, and a background task keeps the buckets of all gateway instances in step by
//! exchanging consumption through shared counters (Redis). Each instance adds what it admitted
//! since the last exchange to a counter per bucket and charges what the others admitted to its own
//! bucket, so across N instances a bucket behaves like one bucket seen one exchange late.
//!
//! Tolerance (docs/OPERATIONS.md): between two exchanges each instance may admit what its own
//! stale view allows, so N instances can together overshoot by at most (N − 1) × (burst + rate ×
//! sync interval) in one interval, and a bucket an instance has not used recently starts full
//! there. Without Redis every instance enforces the limits on its own.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gamify_common::{ErrorCode, KeyType};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::config::{Limits, Quota};
use crate::http::error::Error;

/// What is limited; the error code of a 429 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Client(Uuid, IpAddr),
    SecretKey(Uuid),
    /// A project's accepted events from one key class: publishable and secret keys each have the
    /// project's ceiling, so browsers can never spend what the project's servers need.
    Project(Uuid, KeyType),
    /// Requests with unknown or invalid keys from one client address: a flood of random keys is
    /// refused before it costs a lookup.
    InvalidKeys(IpAddr),
}

impl Bucket {
    pub fn code(&self) -> ErrorCode {
        match self {
            Bucket::Client(..) => ErrorCode::ClientRateLimited,
            Bucket::SecretKey(_) => ErrorCode::KeyRateLimited,
            Bucket::Project(..) => ErrorCode::ProjectRateLimited,
            Bucket::InvalidKeys(_) => ErrorCode::InvalidKeyRateLimited,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Bucket::Client(..) => {
                "too many requests from this client with this key; retry after Retry-After seconds"
            }
            Bucket::SecretKey(_) => {
                "too many requests with this secret key; retry after Retry-After seconds"
            }
            Bucket::Project(..) => {
                "the project's limit on accepted events is reached; retry after Retry-After seconds"
            }
            Bucket::InvalidKeys(_) => {
                "too many requests with unknown or invalid API keys from this client; retry after Retry-After seconds"
            }
        }
    }

    /// The 429 for this limit, to retry after `wait`.
    pub fn refusal(&self, wait: Duration) -> Error {
        Error::rate_limited(self.code(), self.message(), wait)
    }

    fn shared_name(&self) -> String {
        match self {
            Bucket::Client(key, ip) => format!("gamify:rl:client:{key}:{ip}"),
            Bucket::SecretKey(key) => format!("gamify:rl:key:{key}"),
            Bucket::Project(project, class) => format!("gamify:rl:project:{project}:{class}"),
            Bucket::InvalidKeys(ip) => format!("gamify:rl:invalid:{ip}"),
        }
    }
}

/// Monotonic time, injected so the bucket arithmetic is tested without waiting.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Duration;
}

pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Counters that every gateway instance sees: `add` adds each delta to its counter and returns the
/// totals after the additions, in order.
pub trait SharedCounters: Send + Sync + 'static {
    fn add(
        &self,
        deltas: &[(String, u64)],
    ) -> impl std::future::Future<Output = Result<Vec<u64>, Error>> + Send;
}

#[derive(Debug)]
struct State {
    /// GCRA theoretical arrival time, in nanoseconds of the clock.
    tat: u128,
    interval_nanos: u128,
    burst: u64,
    /// Admitted here since the last exchange.
    pending: u64,
    /// The shared total after this instance's last exchange; `None` before the first.
    last_total: Option<u64>,
    last_used: Duration,
}

/// Buckets unused this long are forgotten; by then they have refilled.
const IDLE_RETENTION: Duration = Duration::from_secs(30);
/// Upper bound on remembered buckets; the idle ones go first.
const MAX_BUCKETS: usize = 200_000;

/// GCRA: the theoretical arrival time after admitting `cost` units, or how long to wait when that
/// would exceed the burst.
fn gcra(tat: u128, now: u128, cost: u32, interval: u128, burst: u64) -> Result<u128, Duration> {
    let new_tat = tat.max(now) + u128::from(cost) * interval;
    let allowed_until = now + u128::from(burst) * interval;
    if new_tat > allowed_until {
        let wait = (new_tat - allowed_until).min(u128::from(u64::MAX));
        return Err(Duration::from_nanos(wait as u64));
    }
    Ok(new_tat)
}

pub struct RateLimiter<C: Clock = MonotonicClock> {
    clock: C,
    buckets: Mutex<HashMap<Bucket, State>>,
}

impl Default for RateLimiter<MonotonicClock> {
    fn default() -> Self {
        Self::new(MonotonicClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits `cost` units against `bucket`, or says how long to wait. A cost above the burst can
    /// never be admitted and waits for a whole burst.
    pub fn check(&self, bucket: Bucket, quota: Quota, cost: u32) -> Result<(), Duration> {
        let now = self.clock.now();
        let now_nanos = now.as_nanos();
        let interval_nanos = 1_000_000_000u128 / u128::from(quota.per_second.max(1));
        let burst = u64::from(quota.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let state = buckets.entry(bucket).or_insert(State {
            tat: now_nanos,
            interval_nanos,
            burst,
            pending: 0,
            last_total: None,
            last_used: now,
        });
        // A project may change its quota: what it owes, in units, carries over to the new rate.
        if state.interval_nanos != interval_nanos {
            let owed_units = state.tat.saturating_sub(now_nanos) / state.interval_nanos.max(1);
            state.tat = now_nanos + owed_units * interval_nanos;
            state.interval_nanos = interval_nanos;
        }
        state.burst = burst;
        state.last_used = now;
        state.tat = gcra(state.tat, now_nanos, cost, interval_nanos, burst)?;
        state.pending += u64::from(cost);
        Ok(())
    }

    /// Whether one more unit would pass `bucket`, without spending it (and without remembering a
    /// bucket never charged).
    pub fn peek(&self, bucket: Bucket, quota: Quota) -> Result<(), Duration> {
        let now_nanos = self.clock.now().as_nanos();
        let interval_nanos = 1_000_000_000u128 / u128::from(quota.per_second.max(1));
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = buckets.get(&bucket) else {
            return Ok(());
        };
        let burst = u64::from(quota.burst.max(1));
        gcra(state.tat, now_nanos, 1, interval_nanos, burst).map(drop)
    }

    /// The buckets to exchange: every bucket used since `IDLE_RETENTION`, with what it admitted
    /// since the last exchange (which is reset). Idle buckets are forgotten.
    fn take_pending(&self) -> Vec<(Bucket, u64)> {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, state| now.saturating_sub(state.last_used) < IDLE_RETENTION);
        if buckets.len() > MAX_BUCKETS {
            let mut by_age: Vec<(Bucket, Duration)> =
                buckets.iter().map(|(b, s)| (*b, s.last_used)).collect();
            by_age.sort_by_key(|(_, used)| *used);
            for (bucket, _) in by_age.iter().take(buckets.len() - MAX_BUCKETS) {
                buckets.remove(bucket);
            }
        }
        buckets
            .iter_mut()
            .map(|(bucket, state)| (*bucket, std::mem::take(&mut state.pending)))
            .collect()
    }

    /// Charges what other instances admitted: the shared total grew by more than this instance's
    /// own `sent` units since its last exchange.
    fn settle(&self, bucket: Bucket, sent: u64, total: u64) {
        let now_nanos = self.clock.now().as_nanos();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = buckets.get_mut(&bucket) else {
            return;
        };
        if let Some(last_total) = state.last_total {
            // A total below what we know means the counter expired or was lost: start again.
            let others = total.saturating_sub(last_total).saturating_sub(sent);
            if others > 0 {
                let charged = state.tat.max(now_nanos) + u128::from(others) * state.interval_nanos;
                // No deeper than one burst of debt beyond what is allowed now: old consumption
                // cannot keep a bucket shut for longer than a burst takes to drain.
                let floor = now_nanos + 2 * u128::from(state.burst) * state.interval_nanos;
                state.tat = charged.min(floor);
            }
        }
        state.last_total = Some(total);
    }

    /// Where a failed exchange leaves the buckets: the unsent units count again next time.
    fn restore(&self, unsent: &[(Bucket, u64)]) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for (bucket, units) in unsent {
            if let Some(state) = buckets.get_mut(bucket) {
                state.pending += units;
            }
        }
    }

    /// One exchange with the other instances through `counters`.
    pub async fn exchange(&self, counters: &impl SharedCounters) -> Result<(), Error> {
        let pending = self.take_pending();
        if pending.is_empty() {
            return Ok(());
        }
        let deltas: Vec<(String, u64)> = pending
            .iter()
            .map(|(bucket, units)| (bucket.shared_name(), *units))
            .collect();
        match counters.add(&deltas).await {
            Ok(totals) if totals.len() == pending.len() => {
                for ((bucket, sent), total) in pending.into_iter().zip(totals) {
                    self.settle(bucket, sent, total);
                }
                Ok(())
            }
            Ok(_) => {
                self.restore(&pending);
                Err(Error::RedisUnreachable)
            }
            Err(err) => {
                self.restore(&pending);
                Err(err)
            }
        }
    }
}

/// Exchanges consumption every `interval` until shutdown. Failures leave every instance with its
/// local limits, which is what holds without Redis.
pub async fn keep_in_step<C: Clock>(
    limiter: Arc<RateLimiter<C>>,
    counters: impl SharedCounters,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(err) = limiter.exchange(&counters).await {
            metrics::counter!("gamify_rate_limit_sync_failures_total").increment(1);
            tracing::debug!(error = %err, "cannot exchange rate-limit consumption; limiting locally");
        }
    }
}

/// Redis as the shared counters: one pipelined round trip per exchange, each counter expiring a
/// while after its last use.
pub struct RedisCounters(pub Arc<crate::redis::Redis>);

impl SharedCounters for RedisCounters {
    async fn add(&self, deltas: &[(String, u64)]) -> Result<Vec<u64>, Error> {
        let mut pipe = redis::pipe();
        for (name, delta) in deltas {
            pipe.cmd("INCRBY").arg(name).arg(*delta);
            pipe.cmd("PEXPIRE")
                .arg(name)
                .arg(IDLE_RETENTION.as_millis() as u64 * 2)
                .ignore();
        }
        self.0.pipeline(&pipe).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[derive(Default, Clone)]
    struct ManualClock(Arc<AtomicU64>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }

    #[derive(Default, Clone)]
    struct MemoryCounters(Arc<Mutex<HashMap<String, u64>>>);

    impl SharedCounters for MemoryCounters {
        async fn add(&self, deltas: &[(String, u64)]) -> Result<Vec<u64>, Error> {
            let mut counters = self.0.lock().unwrap();
            Ok(deltas
                .iter()
                .map(|(name, delta)| {
                    let total = counters.entry(name.clone()).or_insert(0);
                    *total += delta;
                    *total
                })
                .collect())
        }
    }

    const KEY: Uuid = Uuid::from_u128(7);
    const QUOTA: Quota = Quota {
        per_second: 20,
        burst: 100,
    };

    fn client(ip: [u8; 4]) -> Bucket {
        Bucket::Client(KEY, IpAddr::from(ip))
    }

    fn admitted<C: Clock>(limiter: &RateLimiter<C>, bucket: Bucket, tries: u32) -> u32 {
        (0..tries)
            .filter(|_| limiter.check(bucket, QUOTA, 1).is_ok())
            .count() as u32
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let clock = ManualClock::default();
        let limiter = RateLimiter::new(clock.clone());
        assert_eq!(admitted(&limiter, client([10, 0, 0, 1]), 150), 100);
        let wait = limiter.check(client([10, 0, 0, 1]), QUOTA, 1).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50));
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, client([10, 0, 0, 1]), 150), 20);
    }

    #[test]
    fn a_new_quota_carries_the_debt_over_in_units() {
        let limiter = RateLimiter::new(ManualClock::default());
        let project = Bucket::Project(KEY, KeyType::Publishable);
        let slow = Quota {
            per_second: 1,
            burst: 600,
        };
        assert!(limiter.check(project, slow, 600).is_ok());
        assert!(limiter.check(project, slow, 1).is_err());
        let fast = Quota {
            per_second: 1_000,
            burst: 5_000,
        };
        // 600 units owed of a 5,000 burst: 4,400 more pass at once.
        assert!(limiter.check(project, fast, 4_400).is_ok());
        assert!(limiter.check(project, fast, 1).is_err());
    }

    #[test]
    fn peeking_spends_nothing_and_remembers_nothing() {
        let limiter = RateLimiter::new(ManualClock::default());
        let bucket = Bucket::InvalidKeys(IpAddr::from([10, 0, 0, 8]));
        assert!(limiter.peek(bucket, QUOTA).is_ok());
        assert!(limiter.take_pending().is_empty());
        assert_eq!(admitted(&limiter, bucket, 100), 100);
        assert!(limiter.peek(bucket, QUOTA).is_err());
        assert!(limiter.peek(client([10, 0, 0, 9]), QUOTA).is_ok());
    }

    #[test]
    fn one_abusive_client_does_not_throttle_the_others() {
        let limiter = RateLimiter::new(ManualClock::default());
        assert_eq!(admitted(&limiter, client([10, 0, 0, 1]), 1_000), 100);
        for visitor in 2..52u8 {
            assert_eq!(admitted(&limiter, client([10, 0, 1, visitor]), 16), 16);
        }
    }

    #[test]
    fn costs_count_in_units_and_a_cost_above_the_burst_never_passes() {
        let limiter = RateLimiter::new(ManualClock::default());
        let project = Bucket::Project(KEY, KeyType::Publishable);
        let quota = Quota {
            per_second: 5_000,
            burst: 10_000,
        };
        for _ in 0..20 {
            assert!(limiter.check(project, quota, 500).is_ok());
        }
        assert!(limiter.check(project, quota, 1).is_err());
        let other = Bucket::Project(Uuid::from_u128(8), KeyType::Publishable);
        assert!(limiter.check(other, quota, 10_001).is_err());
    }

    /// Two instances, each sent the same abusive client's requests, hold the limit together once
    /// they exchange consumption.
    #[tokio::test]
    async fn instances_in_step_share_one_bucket() {
        let clock = ManualClock::default();
        let counters = MemoryCounters::default();
        let first = RateLimiter::new(clock.clone());
        let second = RateLimiter::new(clock.clone());
        let bucket = client([10, 0, 0, 9]);
        // Both learn the bucket and exchange once, so each knows the shared total.
        assert!(first.check(bucket, QUOTA, 1).is_ok());
        assert!(second.check(bucket, QUOTA, 1).is_ok());
        first.exchange(&counters).await.unwrap();
        second.exchange(&counters).await.unwrap();

        // Then 10 seconds at 200 requests/s offered to each, exchanging every 100 ms.
        let mut total = 0;
        for _ in 0..100 {
            total += admitted(&first, bucket, 20) + admitted(&second, bucket, 20);
            clock.advance(Duration::from_millis(100));
            first.exchange(&counters).await.unwrap();
            second.exchange(&counters).await.unwrap();
        }
        // One bucket would admit 100 + 20 × 10 = 300; the tolerance adds at most one burst and
        // one interval's rate per extra instance.
        let tolerance = 100 + 2;
        assert!(total >= 300 - 2, "{total}");
        assert!(total <= 300 + tolerance, "{total}");
        // Without exchanges each instance alone would have admitted 300.
        let alone = RateLimiter::new(clock.clone());
        let mut unsynced = 0;
        for _ in 0..100 {
            unsynced += admitted(&alone, bucket, 20);
            clock.advance(Duration::from_millis(100));
        }
        assert!(unsynced > 250, "{unsynced}");
    }

    #[tokio::test]
    async fn a_failed_exchange_keeps_the_units_for_the_next() {
        struct Down;
        impl SharedCounters for Down {
            async fn add(&self, _: &[(String, u64)]) -> Result<Vec<u64>, Error> {
                Err(Error::RedisUnreachable)
            }
        }
        let clock = ManualClock::default();
        let limiter = RateLimiter::new(clock.clone());
        let counters = MemoryCounters::default();
        let bucket = client([10, 0, 0, 3]);
        assert_eq!(admitted(&limiter, bucket, 5), 5);
        assert!(limiter.exchange(&Down).await.is_err());
        limiter.exchange(&counters).await.unwrap();
        assert_eq!(counters.0.lock().unwrap()[&bucket.shared_name()], 5);
        // Local limits hold meanwhile.
        assert_eq!(admitted(&limiter, bucket, 200), 95);
    }

    /// A project's ceiling is a bucket per key class: browser keys spending theirs leave the
    /// servers' untouched.
    #[test]
    fn a_project_s_key_classes_have_budgets_of_their_own() {
        let limiter = RateLimiter::new(ManualClock::default());
        let ceiling = Quota {
            per_second: 1,
            burst: 500,
        };
        let browser = Bucket::Project(KEY, KeyType::Publishable);
        let servers = Bucket::Project(KEY, KeyType::Secret);
        assert!(limiter.check(browser, ceiling, 499).is_ok());
        assert!(limiter.check(browser, ceiling, 2).is_err());
        assert!(limiter.check(servers, ceiling, 500).is_ok());
        assert_ne!(browser.shared_name(), servers.shared_name());
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let clock = ManualClock::default();
        let limiter = RateLimiter::new(clock.clone());
        assert!(limiter.check(client([10, 0, 0, 4]), QUOTA, 1).is_ok());
        assert_eq!(limiter.take_pending().len(), 1);
        clock.advance(IDLE_RETENTION);
        assert!(limiter.take_pending().is_empty());
    }
}
