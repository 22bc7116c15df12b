//! The limits every event and request obeys, and the measurement of sizes against them.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::FieldError;

pub const MAX_ID_CHARS: usize = 255;
pub const MAX_MESSAGE_ID_CHARS: usize = 100;
/// One event, serialized.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_EVENTS: usize = 500;
/// A whole request body after decompression.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// The longest User-Agent copied into an event's context; a longer one is cut at a character
/// boundary (real browsers send 100–300 bytes).
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// Everything one request produces, after a batch's shared fields are merged into every event:
/// a small body cannot fan out into megabytes on the topic.
pub const MAX_PRODUCED_BYTES_PER_REQUEST: usize = 1024 * 1024;
/// Client timestamps further ahead than this are not believed.
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

/// The times Postgres can store and RFC 3339 can write: years 0001 to 9999. (timestamptz reaches
/// further, but not through the four-digit years every client and the worker exchange.)
pub fn storable_times() -> std::ops::RangeInclusive<DateTime<Utc>> {
    let min = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0);
    let max = DateTime::<Utc>::from_timestamp(253_402_300_799, 999_999_000);
    // Both constants are valid instants (0001-01-01T00:00:00Z, 9999-12-31T23:59:59.999999Z).
    min.unwrap_or(DateTime::<Utc>::MIN_UTC)..=max.unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Counts serialized bytes without building the string.
pub(super) struct ByteCounter(pub(super) usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serialized size of a JSON value.
pub fn serialized_len(value: &Value) -> usize {
    let mut counter = ByteCounter(0);
    // Writing a Value to a sink that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Marker message for the one size error, so the gateway can answer 413 instead of 400.
pub const EVENT_TOO_LARGE: &str =
    "event is larger than 32 KB serialized (a batch's shared context counts in every event)";

pub(super) fn check_size(value: &Value) -> Result<(), Vec<FieldError>> {
    if serialized_len(value) > MAX_EVENT_BYTES {
        Err(vec![FieldError::event_too_large()])
    } else {
        Ok(())
    }
}
