//! Whether the consumer loop is alive: it beats whenever it advances (a batch collected, an
//! attempt at persisting finished, a pause between attempts). Waiting for messages while nothing is
//! waiting is not a stall; being busy with a batch, or having lag, without a beat for longer than
//! the stall timeout is, and `/healthz` then fails so an orchestrator restarts the worker.

use std::{
    sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    time::{Duration, Instant},
};

#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    stall_timeout: Duration,
    last_beat_ms: AtomicU64,
    busy: AtomicBool,
    lag: AtomicI64,
}

impl Liveness {
    pub fn new(stall_timeout: Duration) -> Self {
        Self {
            started: Instant::now(),
            stall_timeout,
            last_beat_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            lag: AtomicI64::new(0),
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn beat(&self) {
        self.beat_at(self.elapsed());
    }

    fn beat_at(&self, at: Duration) {
        self.last_beat_ms
            .store(at.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
        self.beat();
    }

    /// Messages on assigned partitions not yet committed, from librdkafka's statistics.
    pub fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// How long the loop has not advanced while work waits, when that exceeds the stall timeout.
    pub fn stalled(&self) -> Option<Duration> {
        self.stalled_at(self.elapsed())
    }

    fn stalled_at(&self, now: Duration) -> Option<Duration> {
        let waiting = self.busy.load(Ordering::Relaxed) || self.lag.load(Ordering::Relaxed) > 0;
        let since = now.saturating_sub(Duration::from_millis(
            self.last_beat_ms.load(Ordering::Relaxed),
        ));
        (waiting && since > self.stall_timeout).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(10);

    #[test]
    fn idle_without_work_is_never_a_stall() {
        let liveness = Liveness::new(STALL);
        liveness.beat_at(Duration::ZERO);
        assert_eq!(liveness.stalled_at(Duration::from_secs(3600)), None);
    }

    #[test]
    fn a_busy_loop_without_beats_stalls_after_the_timeout() {
        let liveness = Liveness::new(STALL);
        liveness.busy.store(true, Ordering::Relaxed);
        liveness.beat_at(Duration::from_secs(100));
        assert_eq!(liveness.stalled_at(Duration::from_secs(105)), None);
        assert_eq!(
            liveness.stalled_at(Duration::from_secs(111)),
            Some(Duration::from_secs(11))
        );
        liveness.beat_at(Duration::from_secs(111));
        assert_eq!(liveness.stalled_at(Duration::from_secs(112)), None);
    }

    #[test]
    fn lag_that_is_not_consumed_is_work_waiting() {
        let liveness = Liveness::new(STALL);
        liveness.beat_at(Duration::ZERO);
        liveness.set_lag(5);
        assert!(liveness.stalled_at(Duration::from_secs(11)).is_some());
        liveness.set_lag(0);
        assert_eq!(liveness.stalled_at(Duration::from_secs(11)), None);
    }
}
