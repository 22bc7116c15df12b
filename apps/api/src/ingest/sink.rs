//! Where accepted events go. In production the broker ([`EventProducer`]); in unit tests memory. A
//! request is answered 202 only once [`EventSink::send`] resolved without error.

use std::time::Duration;

use futures::future::BoxFuture;
use gamify_common::Envelope;

use crate::{http::error::Error, ingest::producer::EventProducer};

pub trait EventSink: Send + Sync + 'static {
    /// Resolves once every envelope is acknowledged (by the broker's in-sync replicas), or fails.
    fn send<'a>(&'a self, envelopes: &'a [Envelope]) -> BoxFuture<'a, Result<(), Error>>;

    /// Whether the sink can take events now, within `timeout` (readiness).
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;

    /// Waits, blocking, until what was sent is delivered or `timeout` has passed (on stop).
    fn flush(&self, timeout: Duration);
}

impl EventSink for EventProducer {
    fn send<'a>(&'a self, envelopes: &'a [Envelope]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.produce(envelopes))
    }

    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(EventProducer::check(self, timeout))
    }

    fn flush(&self, timeout: Duration) {
        EventProducer::flush(self, timeout);
    }
}
