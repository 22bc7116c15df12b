//! Per-key rate limiting: a GCRA token bucket in Redis so the limit holds across gateway
//! instances, falling back to an in-process limiter when Redis does not answer.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter as LocalLimiter,
    clock::{Clock, DefaultClock},
};
use uuid::Uuid;

use crate::{config::RateLimit, redis::Redis};

/// GCRA with the theoretical arrival time (µs) stored per key. Returns 0 when allowed, otherwise
/// the µs to wait. Uses Redis' clock so all gateways agree.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

pub struct RateLimiter {
    redis: Arc<Redis>,
    script: redis::Script,
    interval_micros: u64,
    burst: u32,
    local: DefaultKeyedRateLimiter<Uuid>,
}

impl RateLimiter {
    pub fn new(redis: Arc<Redis>, limit: RateLimit) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            redis,
            script: redis::Script::new(GCRA),
            interval_micros: (1_000_000 / u64::from(per_second.get())).max(1),
            burst: burst.get(),
            local: LocalLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// `Err(wait)` when the key must wait before its next request.
    pub async fn check(&self, key_id: Uuid) -> Result<(), Duration> {
        let mut invocation = self.script.key(format!("ratelimit:{key_id}"));
        invocation.arg(self.interval_micros).arg(self.burst);
        match self.redis.invoke::<u64>(&invocation).await {
            Ok(0) => Ok(()),
            Ok(wait_micros) => Err(Duration::from_micros(wait_micros)),
            Err(err) => {
                tracing::debug!(error = %err, "redis rate limiter unavailable; limiting locally");
                metrics::counter!("gamify_rate_limit_fallbacks_total").increment(1);
                self.check_locally(key_id)
            }
        }
    }

    fn check_locally(&self, key_id: Uuid) -> Result<(), Duration> {
        if self.local.len() > 100_000 {
            self.local.retain_recent();
        }
        self.local
            .check_key(&key_id)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
