//! What SDKs send to the ingestion endpoints, and the validation that gateway and worker share.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::events::{IDENTIFY_EVENT, validate_event_name};

pub const MAX_ID_CHARS: usize = 255;
pub const MAX_MESSAGE_ID_CHARS: usize = 100;
/// One event, serialized.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_EVENTS: usize = 500;
/// A whole request body after decompression.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Client timestamps further ahead than this are not believed.
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Track,
    Identify,
}

/// One problem with one field; `field` is a path such as `batch[3].userId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error inside an item of a list, e.g. `batch[3].event`.
    pub fn within(self, list: &str, index: usize) -> Self {
        let field = if self.field.is_empty() {
            format!("{list}[{index}]")
        } else {
            format!("{list}[{index}].{}", self.field)
        };
        Self { field, ..self }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrackBody {
    event: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    properties: Option<Map<String, Value>>,
    message_id: Option<String>,
    timestamp: Option<String>,
    sent_at: Option<String>,
    context: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentifyBody {
    user_id: String,
    traits: Option<Map<String, Value>>,
    message_id: Option<String>,
    timestamp: Option<String>,
    sent_at: Option<String>,
    context: Option<Map<String, Value>>,
}

/// Fields a batch gives to every item that lacks its own.
#[derive(Debug, Default, Clone)]
pub struct BatchDefaults {
    pub sent_at: Option<DateTime<Utc>>,
    pub context: Option<Map<String, Value>>,
}

/// A validated track or identify call, before the gateway stamps it into an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub event: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Properties of a track call, traits of an identify call.
    pub data: Map<String, Value>,
    pub message_id: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub context: Map<String, Value>,
}

impl Event {
    /// When the event happened, corrected for the client's clock: with `sentAt` the offset between
    /// the client's and our clock is removed; a time more than 24 h ahead is not believed.
    pub fn occurred_at(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        let Some(timestamp) = self.timestamp else {
            return received_at;
        };
        let occurred = match self.sent_at {
            Some(sent_at) => received_at - (sent_at - timestamp),
            None => timestamp,
        };
        if occurred > received_at + MAX_FUTURE_SKEW {
            received_at
        } else {
            occurred
        }
    }

    /// The user the event is about, for ordering and storage.
    pub fn subject(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default()
    }
}

/// Parses and validates one track call (`value` is one JSON object).
pub fn parse_track(value: Value, defaults: &BatchDefaults) -> Result<Event, Vec<FieldError>> {
    check_size(&value)?;
    let body: TrackBody = deserialize(value)?;
    let mut errors = Vec::new();
    let timestamp = parse_time("timestamp", body.timestamp.as_deref(), &mut errors);
    let sent_at = parse_time("sentAt", body.sent_at.as_deref(), &mut errors).or(defaults.sent_at);
    let event = Event {
        kind: Kind::Track,
        event: body.event,
        user_id: body.user_id,
        anonymous_id: body.anonymous_id,
        data: body.properties.unwrap_or_default(),
        message_id: body.message_id,
        timestamp,
        sent_at,
        context: merged_context(defaults.context.as_ref(), body.context),
    };
    errors.extend(validate(&event));
    if errors.is_empty() {
        Ok(event)
    } else {
        Err(errors)
    }
}

/// Parses and validates one identify call.
pub fn parse_identify(value: Value) -> Result<Event, Vec<FieldError>> {
    check_size(&value)?;
    let body: IdentifyBody = deserialize(value)?;
    let mut errors = Vec::new();
    let timestamp = parse_time("timestamp", body.timestamp.as_deref(), &mut errors);
    let sent_at = parse_time("sentAt", body.sent_at.as_deref(), &mut errors);
    let event = Event {
        kind: Kind::Identify,
        event: IDENTIFY_EVENT.to_owned(),
        user_id: Some(body.user_id),
        anonymous_id: None,
        data: body.traits.unwrap_or_default(),
        message_id: body.message_id,
        timestamp,
        sent_at,
        context: body.context.unwrap_or_default(),
    };
    errors.extend(validate(&event));
    if errors.is_empty() {
        Ok(event)
    } else {
        Err(errors)
    }
}

/// The rules every event obeys, wherever it comes from (gateway request or envelope on the topic).
pub fn validate_fields(
    kind: Kind,
    event: &str,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    message_id: Option<&str>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match kind {
        Kind::Track => {
            if let Err(problem) = validate_event_name(event) {
                errors.push(FieldError::new("event", problem));
            }
            if user_id.is_none() && anonymous_id.is_none() {
                errors.push(FieldError::new(
                    "userId",
                    "userId or anonymousId is required",
                ));
            }
        }
        Kind::Identify => {
            if event != IDENTIFY_EVENT {
                errors.push(FieldError::new("event", "identify calls are $identify"));
            }
            if user_id.is_none() {
                errors.push(FieldError::new("userId", "is required"));
            }
        }
    }
    for (field, value) in [("userId", user_id), ("anonymousId", anonymous_id)] {
        if let Some(value) = value {
            if value.is_empty() || value.chars().count() > MAX_ID_CHARS {
                errors.push(FieldError::new(field, "must be 1–255 characters"));
            } else if value.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
    }
    if let Some(message_id) = message_id {
        if message_id.is_empty() || message_id.chars().count() > MAX_MESSAGE_ID_CHARS {
            errors.push(FieldError::new("messageId", "must be 1–100 characters"));
        }
    }
    errors
}

fn validate(event: &Event) -> Vec<FieldError> {
    validate_fields(
        event.kind,
        &event.event,
        event.user_id.as_deref(),
        event.anonymous_id.as_deref(),
        event.message_id.as_deref(),
    )
}

/// Parses an optional RFC 3339 time, recording a field error when it does not parse.
pub fn parse_time(
    field: &str,
    raw: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let raw = raw?;
    match DateTime::parse_from_rfc3339(raw) {
        Ok(time) => Some(time.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(field, "must be an RFC 3339 date-time"));
            None
        }
    }
}

fn merged_context(
    defaults: Option<&Map<String, Value>>,
    own: Option<Map<String, Value>>,
) -> Map<String, Value> {
    let mut context = defaults.cloned().unwrap_or_default();
    context.extend(own.unwrap_or_default());
    context
}

fn deserialize<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Vec<FieldError>> {
    if !value.is_object() {
        return Err(vec![FieldError::new("", "must be a JSON object")]);
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::new() } else { path };
        vec![FieldError::new(field, err.into_inner().to_string())]
    })
}

/// Counts serialized bytes without building the string.
struct ByteCounter(usize);

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
pub const EVENT_TOO_LARGE: &str = "event is larger than 32 KB serialized";

fn check_size(value: &Value) -> Result<(), Vec<FieldError>> {
    if serialized_len(value) > MAX_EVENT_BYTES {
        Err(vec![FieldError::new("", EVENT_TOO_LARGE)])
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn track(value: Value) -> Result<Event, Vec<FieldError>> {
        parse_track(value, &BatchDefaults::default())
    }

    #[test]
    fn minimal_track_is_valid() {
        let event = track(json!({ "event": "page_view", "userId": "u1" })).unwrap();
        assert_eq!(event.kind, Kind::Track);
        assert_eq!(event.subject(), "u1");
        assert!(event.data.is_empty());
        let event = track(
            json!({ "event": "page_view", "anonymousId": "a1", "properties": {"page": "/"} }),
        )
        .unwrap();
        assert_eq!(event.subject(), "a1");
        assert_eq!(event.data["page"], "/");
    }

    #[test]
    fn invalid_tracks_name_their_fields() {
        let fields = |value| -> Vec<String> {
            track(value)
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(fields(json!({ "event": "x" })), ["userId"]);
        assert_eq!(fields(json!({ "event": "", "userId": "u" })), ["event"]);
        assert_eq!(fields(json!({ "event": "a\nb", "userId": "u" })), ["event"]);
        assert_eq!(
            fields(json!({ "event": "x".repeat(201), "userId": "u" })),
            ["event"]
        );
        assert_eq!(fields(json!({ "event": "x", "userId": "" })), ["userId"]);
        assert_eq!(
            fields(json!({ "event": "x", "anonymousId": "a".repeat(256) })),
            ["anonymousId"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "messageId": "m".repeat(101) })),
            ["messageId"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "timestamp": "yesterday" })),
            ["timestamp"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "sentAt": "2024-13-01" })),
            ["sentAt"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "properties": [1] })),
            ["properties"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "context": "web" })),
            ["context"]
        );
        assert_eq!(fields(json!({ "event": 5, "userId": "u" })), ["event"]);
        assert_eq!(fields(json!({ "userId": "u" })), [""]);
        assert_eq!(fields(json!(["not", "an", "object"])), [""]);
    }

    #[test]
    fn size_limit_is_on_the_serialized_event() {
        let small =
            json!({ "event": "x", "userId": "u", "properties": { "p": "a".repeat(32_000) } });
        assert!(track(small).is_ok());
        let large =
            json!({ "event": "x", "userId": "u", "properties": { "p": "a".repeat(33_000) } });
        assert_eq!(track(large).unwrap_err()[0].message, EVENT_TOO_LARGE);
    }

    #[test]
    fn occurred_at_corrects_client_clock_skew() {
        let received = at("2026-11-23T12:00:00Z");
        let no_time = track(json!({ "event": "x", "userId": "u" })).unwrap();
        assert_eq!(no_time.occurred_at(received), received);

        // The client's clock is 1 h ahead: it sent at 13:00 an event it stamped 12:55.
        let skewed = track(json!({ "event": "x", "userId": "u",
            "timestamp": "2026-11-23T12:55:00Z", "sentAt": "2026-11-23T13:00:00Z" }))
        .unwrap();
        assert_eq!(skewed.occurred_at(received), at("2026-11-23T11:55:00Z"));

        let plain =
            track(json!({ "event": "x", "userId": "u", "timestamp": "2026-11-20T08:00:00+02:00" }))
                .unwrap();
        assert_eq!(plain.occurred_at(received), at("2026-11-20T06:00:00Z"));

        let future =
            track(json!({ "event": "x", "userId": "u", "timestamp": "2026-11-25T12:00:00Z" }))
                .unwrap();
        assert_eq!(future.occurred_at(received), received);
        let near_future =
            track(json!({ "event": "x", "userId": "u", "timestamp": "2026-11-24T11:00:00Z" }))
                .unwrap();
        assert_eq!(
            near_future.occurred_at(received),
            at("2026-11-24T11:00:00Z")
        );
    }

    #[test]
    fn batch_defaults_apply_to_items_without_their_own() {
        let defaults = BatchDefaults {
            sent_at: Some(at("2026-11-23T13:00:00Z")),
            context: Some(
                json!({ "library": { "name": "web" }, "locale": "de" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        };
        let event = parse_track(
            json!({ "event": "x", "userId": "u", "timestamp": "2026-11-23T12:55:00Z", "context": { "locale": "fr" } }),
            &defaults,
        )
        .unwrap();
        assert_eq!(event.sent_at, defaults.sent_at);
        assert_eq!(event.context["locale"], "fr");
        assert_eq!(event.context["library"]["name"], "web");
    }

    #[test]
    fn identify_requires_a_user_id() {
        let event = parse_identify(json!({ "userId": "u1", "traits": { "plan": "pro" } })).unwrap();
        assert_eq!(event.kind, Kind::Identify);
        assert_eq!(event.event, IDENTIFY_EVENT);
        assert_eq!(event.data["plan"], "pro");
        assert!(parse_identify(json!({ "traits": {} })).is_err());
        assert!(parse_identify(json!({ "userId": "" })).is_err());
    }

    #[test]
    fn field_errors_nest_into_lists() {
        let err = FieldError::new("event", "bad").within("batch", 3);
        assert_eq!(err.field, "batch[3].event");
        assert_eq!(
            FieldError::new("", "bad").within("batch", 0).field,
            "batch[0]"
        );
    }
}
