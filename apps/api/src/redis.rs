//! Redis is an accelerator for the gateway, never a condition of correctness: every call is bounded
//! in time, callers fall back when it fails (Postgres for keys, local state for rates), and a
//! circuit breaker skips Redis for a while after any failure, so that without Redis a request costs
//! what it costs with it instead of waiting for a timeout each time.

use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{
    FromRedisValue, RedisResult,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::OnceCell;

use crate::http::error::Error;

/// Upper bound on any one Redis round trip from the request path.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, calls skip Redis this long before one probe is let through.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);

/// Calls refused without a network round trip because the breaker was open.
pub const SKIPPED_CALLS_METRIC: &str = "gamify_redis_skipped_calls_total";
const BREAKER_OPEN_METRIC: &str = "gamify_redis_breaker_open";

/// The breaker's state machine. Time is passed in, so it is tested without Redis or sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One probe went to Redis; the others fail fast until it reports. A probe that never reports
    /// (its caller was cancelled) is replaced by another at `probe_expires`.
    HalfOpen { probe_expires: Instant },
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<BreakerState>,
    open_for: Duration,
}

impl Breaker {
    pub fn new(open_for: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed),
            open_for,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.state.lock() {
            Ok(state) => *state,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut BreakerState) -> R) -> R {
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether a call may go to Redis at `now`; when the open period is over, the first caller is
    /// the half-open probe.
    pub fn admit(&self, now: Instant) -> bool {
        self.with_state(|state| match *state {
            BreakerState::Closed => true,
            BreakerState::Open { until }
            | BreakerState::HalfOpen {
                probe_expires: until,
            } if now < until => false,
            BreakerState::Open { .. } => {
                *state = BreakerState::HalfOpen {
                    probe_expires: now + self.open_for,
                };
                true
            }
            BreakerState::HalfOpen { .. } => {
                // The previous probe never reported: let another one through.
                *state = BreakerState::HalfOpen {
                    probe_expires: now + self.open_for,
                };
                true
            }
        })
    }

    /// Reports an admitted call's outcome: success closes the breaker, failure (re-)opens it.
    /// Returns true when this report changed whether Redis is considered available.
    pub fn record(&self, now: Instant, ok: bool) -> bool {
        self.with_state(|state| {
            let was_closed = *state == BreakerState::Closed;
            *state = if ok {
                BreakerState::Closed
            } else {
                BreakerState::Open {
                    until: now + self.open_for,
                }
            };
            was_closed != ok
        })
    }
}

pub struct Redis {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    breaker: Breaker,
    skipped: AtomicU64,
}

impl Redis {
    /// Parses the URL; connecting happens on first use, so the gateway starts without Redis.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: OnceCell::new(),
            breaker: Breaker::new(BREAKER_OPEN_FOR),
            skipped: AtomicU64::new(0),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Calls this instance refused without trying Redis, because the breaker was open.
    pub fn skipped_calls(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    async fn connection(&self) -> Result<ConnectionManager, Error> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let connect = self.manager.get_or_try_init(|| {
            self.client
                .get_connection_manager_with_config(config.clone())
        });
        match tokio::time::timeout(CALL_TIMEOUT * 2, connect).await {
            Ok(Ok(manager)) => Ok(manager.clone()),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => Err(Error::RedisUnreachable),
        }
    }

    /// Runs `op` on a connection within the call timeout, through the breaker: while it is open
    /// this fails at once with [`Error::RedisUnreachable`]. Any failure (connecting, a timeout, an
    /// error reply) opens it.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.admit(Instant::now()) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(SKIPPED_CALLS_METRIC).increment(1);
            return Err(Error::RedisUnreachable);
        }
        let result = async {
            let connection = self.connection().await?;
            match tokio::time::timeout(CALL_TIMEOUT, op(connection)).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(Error::RedisUnreachable),
            }
        }
        .await;
        if self.breaker.record(Instant::now(), result.is_ok()) {
            match &result {
                Ok(_) => {
                    metrics::gauge!(BREAKER_OPEN_METRIC).set(0.0);
                    tracing::info!("redis answers again; using it");
                }
                Err(err) => {
                    metrics::gauge!(BREAKER_OPEN_METRIC).set(1.0);
                    tracing::warn!(
                        error = %err,
                        retry_after_ms = BREAKER_OPEN_FOR.as_millis() as u64,
                        "redis failed; skipping it until a probe succeeds"
                    );
                }
            }
        }
        result
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.call(|mut connection| async move { cmd.query_async(&mut connection).await })
            .await
    }

    /// Runs a pipeline in one round trip.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        self.call(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await
    }

    /// Runs a Lua script.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        self.call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    pub async fn ping(&self) -> Result<(), Error> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::RedisUnreachable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(1);

    #[test]
    fn closed_admits_every_call() {
        let breaker = Breaker::new(OPEN_FOR);
        let now = Instant::now();
        assert!((0..10).all(|_| breaker.admit(now)));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failure_at_any_time_opens_and_calls_fail_fast_until_the_period_ends() {
        let breaker = Breaker::new(OPEN_FOR);
        let start = Instant::now();
        // Successes first, as when the first connection worked.
        assert!(breaker.admit(start));
        assert!(!breaker.record(start, true));
        assert!(breaker.admit(start));
        assert!(breaker.record(start, false), "a change to report");
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: start + OPEN_FOR
            }
        );
        for offset in [0, 1, 500, 999] {
            assert!(!breaker.admit(start + Duration::from_millis(offset)));
        }
    }

    #[test]
    fn after_the_period_one_probe_goes_through_and_success_closes() {
        let breaker = Breaker::new(OPEN_FOR);
        let start = Instant::now();
        breaker.record(start, false);
        let later = start + OPEN_FOR;
        assert!(breaker.admit(later), "the probe");
        assert!(!breaker.admit(later), "others wait for the probe");
        assert!(!breaker.admit(later + Duration::from_millis(10)));
        assert!(breaker.record(later, true));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit(later));
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_period() {
        let breaker = Breaker::new(OPEN_FOR);
        let start = Instant::now();
        breaker.record(start, false);
        let probe_at = start + OPEN_FOR * 3;
        assert!(breaker.admit(probe_at));
        assert!(!breaker.record(probe_at, false), "still unavailable");
        assert!(!breaker.admit(probe_at + OPEN_FOR / 2));
        assert!(breaker.admit(probe_at + OPEN_FOR));
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_period() {
        let breaker = Breaker::new(OPEN_FOR);
        let start = Instant::now();
        breaker.record(start, false);
        assert!(breaker.admit(start + OPEN_FOR));
        assert!(!breaker.admit(start + OPEN_FOR + OPEN_FOR / 2));
        assert!(breaker.admit(start + OPEN_FOR * 2), "a new probe");
        assert!(!breaker.admit(start + OPEN_FOR * 2));
    }

    /// Without a server: the first call pays the connection failure, the next ones are skipped.
    #[tokio::test]
    async fn calls_are_skipped_without_a_network_round_trip_while_open() {
        let redis = Redis::new("redis://127.0.0.1:1").unwrap();
        assert!(redis.ping().await.is_err());
        assert_eq!(redis.skipped_calls(), 0);
        for _ in 0..5 {
            assert!(matches!(redis.ping().await, Err(Error::RedisUnreachable)));
        }
        assert_eq!(redis.skipped_calls(), 5);
        assert!(matches!(redis.breaker_state(), BreakerState::Open { .. }));
    }
}
