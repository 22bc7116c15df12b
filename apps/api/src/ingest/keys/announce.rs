//! Announcing key changes to every gateway, and hearing them: the markers that replace a changed
//! key's Redis entry, the invalidation channel with its acknowledgements, the retry of what could
//! not reach Redis, and the listener that drops announced keys and keeps the feed's liveness.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration, time::Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    ACK_PREFIX, ACK_TIMEOUT, ACK_TTL_SECONDS, CHANGED_MARKER, FEED_PING_INTERVAL,
    INVALIDATION_CHANNEL, INVALIDATION_RETRY_INTERVAL, KeyResolver, MARKER_TTL_SECONDS,
    MAX_PENDING_INVALIDATIONS, NEGATIVE_MARKER,
};
use crate::http::error::Error;

/// What a change does to a key, for the marker that replaces its Redis entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key is refused from now on: unknown everywhere.
    Revoked,
    /// The key or its project changed: read it again from Postgres.
    Updated,
}

/// Whether every gateway acknowledged an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Every gateway subscribed when it was announced dropped the keys.
    Confirmed,
    /// Redis could not be reached, or some gateway did not answer in time: only the L0 lifetime
    /// bounds how long another gateway may still use what it cached.
    Unconfirmed,
}

impl KeyResolver {
    /// Announces a change of `hashes` (already committed to Postgres) to every gateway: this one's
    /// L0 now, Redis' entries replaced by a marker, and every other gateway's L0 through the
    /// invalidation channel, waiting for each to acknowledge. What cannot reach Redis now is
    /// retried in the background until it does, so other gateways learn of it once Redis is back.
    pub async fn announce(&self, hashes: &[String], change: Change) -> Propagation {
        let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
        self.forget_locally(&refs).await;
        if hashes.is_empty() {
            return Propagation::Confirmed;
        }
        let nonce = Uuid::new_v4().simple().to_string();
        match self.announce_in_redis(hashes, change, &nonce).await {
            Ok(receivers) => {
                if self.acknowledged(&nonce, receivers).await {
                    Propagation::Confirmed
                } else {
                    metrics::counter!("gamify_key_announcements_unconfirmed_total").increment(1);
                    tracing::warn!(
                        receivers,
                        "not every gateway acknowledged a key change in time"
                    );
                    Propagation::Unconfirmed
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot announce a key change through redis; retrying in the background");
                self.defer_invalidations(hashes.iter().map(|hash| (hash.clone(), change)));
                Propagation::Unconfirmed
            }
        }
    }

    /// Writes the markers, then publishes; the number of gateways that received it.
    async fn announce_in_redis(
        &self,
        hashes: &[String],
        change: Change,
        nonce: &str,
    ) -> Result<u64, Error> {
        let marker = match change {
            Change::Revoked => NEGATIVE_MARKER,
            Change::Updated => CHANGED_MARKER,
        };
        let mut pipe = redis::pipe();
        for hash in hashes {
            pipe.cmd("SET")
                .arg(format!("apikey:{hash}"))
                .arg(marker)
                .arg("EX")
                .arg(MARKER_TTL_SECONDS)
                .ignore();
        }
        let mut message = String::with_capacity(nonce.len() + hashes.len() * 65);
        message.push_str(nonce);
        for hash in hashes {
            message.push(' ');
            message.push_str(hash);
        }
        pipe.cmd("PUBLISH").arg(INVALIDATION_CHANNEL).arg(message);
        let (receivers,): (u64,) = self.redis.pipeline(&pipe).await?;
        Ok(receivers)
    }

    /// Whether `receivers` gateways acknowledged announcement `nonce` within [`ACK_TIMEOUT`].
    async fn acknowledged(&self, nonce: &str, receivers: u64) -> bool {
        if receivers == 0 {
            return true;
        }
        let counter = format!("{ACK_PREFIX}{nonce}");
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            match self
                .redis
                .query::<Option<u64>>(redis::cmd("GET").arg(&counter))
                .await
            {
                Ok(Some(acks)) if acks >= receivers => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            if Instant::now() + pause > deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// A received announcement: drop the keys, then acknowledge (when it asks for it).
    async fn receive(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let first = parts.next().unwrap_or_default();
        let hashes: Vec<&str> = parts.collect();
        if hashes.is_empty() {
            self.forget_locally(&[first]).await;
            return;
        }
        self.forget_locally(&hashes).await;
        let counter = format!("{ACK_PREFIX}{first}");
        let mut ack = redis::pipe();
        ack.cmd("INCR")
            .arg(&counter)
            .ignore()
            .cmd("EXPIRE")
            .arg(&counter)
            .arg(ACK_TTL_SECONDS)
            .ignore();
        if let Err(err) = self.redis.pipeline::<()>(&ack).await {
            tracing::debug!(error = %err, "cannot acknowledge a key change");
        }
    }

    fn defer_invalidations(&self, changes: impl IntoIterator<Item = (String, Change)>) {
        let Ok(mut pending) = self.pending_invalidations.lock() else {
            tracing::error!("pending key invalidations unavailable; dropped");
            return;
        };
        let mut dropped = 0usize;
        for (hash, change) in changes {
            if let Some(known) = pending.get_mut(&hash) {
                // A revocation is final: it wins over any later update of the same key.
                if change == Change::Revoked {
                    *known = Change::Revoked;
                }
            } else if pending.len() < MAX_PENDING_INVALIDATIONS {
                pending.insert(hash, change);
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
pub(super) async fn retry_invalidations(resolver: Arc<KeyResolver>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INVALIDATION_RETRY_INTERVAL) => {}
        }
        let batch: Vec<(String, Change)> = match resolver.pending_invalidations.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            continue;
        }
        let mut remaining = batch.into_iter();
        let mut delivered = 0usize;
        let mut failed = Vec::new();
        for (hash, change) in remaining.by_ref() {
            let nonce = Uuid::new_v4().simple().to_string();
            let sent = resolver
                .announce_in_redis(std::slice::from_ref(&hash), change, &nonce)
                .await;
            if sent.is_ok() {
                delivered += 1;
            } else {
                // Redis is down again (and the breaker now open): keep the rest for later.
                failed.push((hash, change));
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

/// Drops announced keys from L0 and acknowledges them. After any disconnection the whole L0 is
/// dropped, since announcements may have been missed meanwhile; a subscription that stops
/// answering pings (a Redis that hangs rather than closes) counts as disconnected. Each answered
/// ping marks the feed live (see [`KeyResolver::servable`]).
pub(super) async fn listen_for_invalidations(
    resolver: Arc<KeyResolver>,
    shutdown: CancellationToken,
) {
    const SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(2);
    loop {
        let subscribed = tokio::time::timeout(SUBSCRIPTION_TIMEOUT, async {
            let mut pubsub = resolver.redis.client().get_async_pubsub().await?;
            pubsub.subscribe(INVALIDATION_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                resolver.forget_all_locally();
                tracing::debug!("listening for key invalidations");
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(FEED_PING_INTERVAL);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                if let Ok(payload) = message.get_payload::<String>() {
                                    resolver.receive(&payload).await;
                                }
                            }
                            None => break,
                        },
                        _ = ping.tick() => {
                            let sent = Instant::now();
                            let answered = tokio::time::timeout(
                                SUBSCRIPTION_TIMEOUT,
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if !matches!(answered, Ok(Ok(_))) {
                                break;
                            }
                            resolver
                                .feed_confirmed
                                .fetch_max(resolver.epoch.nanos(sent).max(1), Ordering::AcqRel);
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
        resolver.feed_confirmed.store(0, Ordering::Release);
        resolver.forget_all_locally();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
