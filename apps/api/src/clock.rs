//! Wall-clock time, injected: what depends on it (the instant a request is accepted, a key's
//! expiry, a roll's overlap) is tested by moving a clock, not by sleeping.

use chrono::{DateTime, Utc};

pub trait WallClock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
