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
/// Everything one request produces, after a batch's shared fields are merged into every event:
/// a small body cannot fan out into megabytes on the topic.
/// The longest User-Agent copied into an event's context; a longer one is cut at a character
/// boundary (real browsers send 100–300 bytes).
pub const MAX_USER_AGENT_BYTES: usize = 512;
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
    /// The problem is the event's size (413), not its content (400).
    #[serde(skip)]
    pub too_large: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            too_large: false,
        }
    }

    /// An event larger than [`MAX_EVENT_BYTES`] as produced.
    pub fn event_too_large() -> Self {
        Self {
            too_large: true,
            ..Self::new("", EVENT_TOO_LARGE)
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

// The one definition of the track and identify fields: parsed here, published as the OpenAPI
// schemas (the doc comments are their descriptions), stamped into the envelope by `Envelope::new`.

/// `POST /v1/events/track` (and each item of a batch). `userId` or `anonymousId` is required.
#[derive(Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackBody {
    /// 1–200 characters, no control characters. Trusted names need a secret key.
    #[schema(min_length = 1, max_length = 200, example = "page_view")]
    event: String,
    #[schema(min_length = 1, max_length = 255)]
    user_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    anonymous_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    properties: Option<Map<String, Value>>,
    /// 1–100 characters; retries with the same value are stored once. Assigned (UUIDv7) if absent.
    #[schema(min_length = 1, max_length = 100)]
    message_id: Option<String>,
    /// RFC 3339, years 0001–9999.
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    /// RFC 3339: when the client sent it, to correct its clock.
    #[schema(format = DateTime)]
    sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    context: Option<Map<String, Value>>,
}

/// `POST /v1/identify`.
#[derive(Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentifyBody {
    #[schema(min_length = 1, max_length = 255)]
    user_id: String,
    #[schema(value_type = Option<Object>)]
    traits: Option<Map<String, Value>>,
    #[schema(min_length = 1, max_length = 100)]
    message_id: Option<String>,
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    #[schema(format = DateTime)]
    sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    context: Option<Map<String, Value>>,
}

/// The typed bodies taken straight out of a parsed object when every known field has the type
/// serde would accept: no path tracking and no second map per nested object. `None` means some
/// field does not, and the value goes through serde for the exact error it gives.
mod typed {
    use serde_json::{Map, Value};

    use super::{IdentifyBody, TrackBody};

    fn is_string(map: &Map<String, Value>, key: &str) -> bool {
        matches!(map.get(key), Some(Value::String(_)))
    }

    fn is_optional_string(map: &Map<String, Value>, key: &str) -> bool {
        matches!(map.get(key), None | Some(Value::Null | Value::String(_)))
    }

    fn is_optional_object(map: &Map<String, Value>, key: &str) -> bool {
        matches!(map.get(key), None | Some(Value::Null | Value::Object(_)))
    }

    fn string(map: &mut Map<String, Value>, key: &str) -> Option<String> {
        match map.remove(key) {
            Some(Value::String(text)) => Some(text),
            _ => None,
        }
    }

    fn object(map: &mut Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
        match map.remove(key) {
            Some(Value::Object(object)) => Some(object),
            _ => None,
        }
    }

    fn common_fields_fit(map: &Map<String, Value>) -> bool {
        is_optional_string(map, "messageId")
            && is_optional_string(map, "timestamp")
            && is_optional_string(map, "sentAt")
            && is_optional_object(map, "context")
    }

    pub(super) fn track(map: &mut Map<String, Value>) -> Option<TrackBody> {
        let fits = is_string(map, "event")
            && is_optional_string(map, "userId")
            && is_optional_string(map, "anonymousId")
            && is_optional_object(map, "properties")
            && common_fields_fit(map);
        fits.then(|| TrackBody {
            event: string(map, "event").unwrap_or_default(),
            user_id: string(map, "userId"),
            anonymous_id: string(map, "anonymousId"),
            properties: object(map, "properties"),
            message_id: string(map, "messageId"),
            timestamp: string(map, "timestamp"),
            sent_at: string(map, "sentAt"),
            context: object(map, "context"),
        })
    }

    pub(super) fn identify(map: &mut Map<String, Value>) -> Option<IdentifyBody> {
        let fits =
            is_string(map, "userId") && is_optional_object(map, "traits") && common_fields_fit(map);
        fits.then(|| IdentifyBody {
            user_id: string(map, "userId").unwrap_or_default(),
            traits: object(map, "traits"),
            message_id: string(map, "messageId"),
            timestamp: string(map, "timestamp"),
            sent_at: string(map, "sentAt"),
            context: object(map, "context"),
        })
    }
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
    /// Serialized size as the gateway produces it (see [`Event::measure_produced_len`]), measured
    /// once when the event is parsed.
    pub produced_len: usize,
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

    /// Serialized size of the event as the gateway produces it, shared context merged in.
    pub fn measure_produced_len(&self) -> usize {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Produced<'a> {
            event: &'a str,
            user_id: Option<&'a str>,
            anonymous_id: Option<&'a str>,
            message_id: Option<&'a str>,
            #[serde(serialize_with = "crate::timestamp::serialize_option")]
            timestamp: Option<DateTime<Utc>>,
            #[serde(serialize_with = "crate::timestamp::serialize_option")]
            sent_at: Option<DateTime<Utc>>,
            properties: &'a Map<String, Value>,
            context: &'a Map<String, Value>,
        }
        let mut counter = ByteCounter(0);
        // Writing to a sink that cannot fail cannot fail.
        let _ = serde_json::to_writer(
            &mut counter,
            &Produced {
                event: &self.event,
                user_id: self.user_id.as_deref(),
                anonymous_id: self.anonymous_id.as_deref(),
                message_id: self.message_id.as_deref(),
                timestamp: self.timestamp,
                sent_at: self.sent_at,
                properties: &self.data,
                context: &self.context,
            },
        );
        counter.0
    }

    /// The user the event is about, for ordering and storage.
    pub fn subject(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default()
    }
}

/// Parses and validates one track call (`value` is one JSON object) received at `received_at`.
pub fn parse_track(
    value: Value,
    defaults: &BatchDefaults,
    received_at: DateTime<Utc>,
) -> Result<Event, Vec<FieldError>> {
    check_size(&value)?;
    let body: TrackBody = take_body(value, typed::track)?;
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
        produced_len: 0,
    };
    finish(event, errors, received_at)
}

/// The checks that need the whole event: field rules, storability, the corrected time and the
/// size as produced (after a batch's context was merged in).
fn finish(
    mut event: Event,
    mut errors: Vec<FieldError>,
    received_at: DateTime<Utc>,
) -> Result<Event, Vec<FieldError>> {
    errors.extend(validate(&event));
    let data_field = match event.kind {
        Kind::Track => "properties",
        Kind::Identify => "traits",
    };
    errors.extend(storable_problem(data_field, &event.data));
    errors.extend(storable_problem("context", &event.context));
    if errors.is_empty() && !storable_times().contains(&event.occurred_at(received_at)) {
        errors.push(FieldError::new(
            "timestamp",
            "corrected for the client's clock (sentAt), lies outside the years 0001–9999",
        ));
    }
    if errors.is_empty() {
        event.produced_len = event.measure_produced_len();
        if event.produced_len > MAX_EVENT_BYTES {
            errors.push(FieldError::event_too_large());
        }
    }
    if errors.is_empty() {
        Ok(event)
    } else {
        Err(errors)
    }
}

/// Parses and validates one identify call received at `received_at`.
pub fn parse_identify(value: Value, received_at: DateTime<Utc>) -> Result<Event, Vec<FieldError>> {
    check_size(&value)?;
    let body: IdentifyBody = take_body(value, typed::identify)?;
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
        produced_len: 0,
    };
    finish(event, errors, received_at)
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
        } else if message_id.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "messageId",
                "must not contain control characters",
            ));
        }
    }
    errors
}

/// The first place in `map` that Postgres cannot store, as a field error under `field`. text and
/// jsonb refuse the NUL character, in keys and values alike; everything else JSON can say, jsonb
/// holds.
pub fn storable_problem(field: &str, map: &Map<String, Value>) -> Option<FieldError> {
    fn walk(path: &mut String, value: &Value) -> Option<String> {
        match value {
            Value::String(text) if text.contains('\0') => Some(path.clone()),
            Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                let found = walk(path, item);
                path.truncate(len);
                found
            }),
            Value::Object(map) => walk_map(path, map),
            _ => None,
        }
    }
    fn walk_map(path: &mut String, map: &Map<String, Value>) -> Option<String> {
        map.iter().find_map(|(key, value)| {
            let len = path.len();
            if key
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
            {
                path.push('.');
                path.push_str(key);
            } else {
                // Quoted as JSON, so a key with dots, spaces or a NUL is still named exactly.
                path.push_str(&format!("[{}]", Value::String(key.clone())));
            }
            let found = if key.contains('\0') {
                Some(path.clone())
            } else {
                walk(path, value)
            };
            path.truncate(len);
            found
        })
    }
    let mut path = field.to_owned();
    walk_map(&mut path, map)
        .map(|path| FieldError::new(path, "must not contain the NUL character (\\u0000)"))
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
        Ok(time) if storable_times().contains(&time.with_timezone(&Utc)) => {
            Some(time.with_timezone(&Utc))
        }
        Ok(_) => {
            errors.push(FieldError::new(
                field,
                "must lie within the years 0001–9999",
            ));
            None
        }
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

/// `typed` takes the body straight out of the object when it can; serde, otherwise, for its error.
fn take_body<T: serde::de::DeserializeOwned>(
    value: Value,
    typed: fn(&mut Map<String, Value>) -> Option<T>,
) -> Result<T, Vec<FieldError>> {
    match value {
        Value::Object(mut map) => match typed(&mut map) {
            Some(body) => Ok(body),
            None => deserialize(Value::Object(map)),
        },
        other => deserialize(other),
    }
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
pub const EVENT_TOO_LARGE: &str =
    "event is larger than 32 KB serialized (a batch's shared context counts in every event)";

fn check_size(value: &Value) -> Result<(), Vec<FieldError>> {
    if serialized_len(value) > MAX_EVENT_BYTES {
        Err(vec![FieldError::event_too_large()])
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
        parse_track(value, &BatchDefaults::default(), Utc::now())
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
            at("2026-11-23T13:00:00Z"),
        )
        .unwrap();
        assert_eq!(event.sent_at, defaults.sent_at);
        assert_eq!(event.context["locale"], "fr");
        assert_eq!(event.context["library"]["name"], "web");
    }

    #[test]
    fn identify_requires_a_user_id() {
        let now = Utc::now();
        let event =
            parse_identify(json!({ "userId": "u1", "traits": { "plan": "pro" } }), now).unwrap();
        assert_eq!(event.kind, Kind::Identify);
        assert_eq!(event.event, IDENTIFY_EVENT);
        assert_eq!(event.data["plan"], "pro");
        assert!(parse_identify(json!({ "traits": {} }), now).is_err());
        assert!(parse_identify(json!({ "userId": "" }), now).is_err());
    }

    fn fields_of(result: Result<Event, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn what_postgres_cannot_store_is_refused_naming_the_field() {
        let fields = |value| fields_of(track(value));
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "properties": { "note": "a\0b" } })),
            ["properties.note"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "properties": { "a\0": 1 } })),
            ["properties[\"a\\u0000\"]"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u",
                "properties": { "items": [ { "name": "ok" }, { "name": "\0" } ] } })),
            ["properties.items[1].name"]
        );
        assert_eq!(
            fields(
                json!({ "event": "x", "userId": "u", "context": { "page": { "title": "\0" } } })
            ),
            ["context.page.title"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "messageId": "m\0" })),
            ["messageId"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "messageId": "m\n1" })),
            ["messageId"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "anonymousId": "a\0" })),
            ["anonymousId"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "timestamp": "0000-01-01T00:00:00Z" })),
            ["timestamp"]
        );
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u", "sentAt": "0000-06-01T00:00:00Z" })),
            ["sentAt"]
        );
        // Each time is fine alone, but the clock correction would move the event before year 1.
        assert_eq!(
            fields(json!({ "event": "x", "userId": "u",
                "timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:00Z" })),
            ["timestamp"]
        );
        assert_eq!(
            fields_of(parse_identify(
                json!({ "userId": "u", "traits": { "k\0": "v" } }),
                Utc::now()
            )),
            ["traits[\"k\\u0000\"]"]
        );
        // Other control characters are ordinary data in properties.
        assert!(
            track(json!({ "event": "x", "userId": "u", "properties": { "tab": "a\tb\u{1}" } }))
                .is_ok()
        );
        assert!(
            track(json!({ "event": "x", "userId": "u", "timestamp": "0001-01-01T00:00:00Z" }))
                .is_ok()
        );
    }

    #[test]
    fn a_batch_context_counts_in_every_event() {
        let context = json!({ "page": { "title": "t".repeat(20_000) } });
        let defaults = BatchDefaults {
            sent_at: None,
            context: Some(context.as_object().unwrap().clone()),
        };
        let item =
            json!({ "event": "x", "userId": "u", "properties": { "p": "a".repeat(15_000) } });
        // Alone each part is small; merged, the event as produced is over 32 KB.
        assert!(track(item.clone()).is_ok());
        let err = parse_track(item, &defaults, Utc::now()).unwrap_err();
        assert_eq!(err[0].message, EVENT_TOO_LARGE);
        let small = json!({ "event": "x", "userId": "u" });
        let event = parse_track(small, &defaults, Utc::now()).unwrap();
        assert!(event.produced_len > 20_000);
        assert_eq!(event.produced_len, event.measure_produced_len());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,12}",
                "[a-z]{1,8}",
                proptest::collection::vec(
                    prop_oneof![Just('\0'), Just('\n'), Just('\u{7f}'), any::<char>()],
                    0..6
                )
                .prop_map(|chars| chars.into_iter().collect()),
            ]
        }

        fn contains_nul(value: &Value) -> bool {
            match value {
                Value::String(text) => text.contains('\0'),
                Value::Array(items) => items.iter().any(contains_nul),
                Value::Object(map) => map
                    .iter()
                    .any(|(key, value)| key.contains('\0') || contains_nul(value)),
                _ => false,
            }
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                text().prop_map(Value::from),
            ];
            leaf.prop_recursive(6, 48, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(text(), inner, 0..6)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        /// An object over the fields the bodies know (and one they do not), each of any type.
        fn body_object() -> impl Strategy<Value = Map<String, Value>> {
            let field = prop_oneof![
                Just("event"),
                Just("userId"),
                Just("anonymousId"),
                Just("properties"),
                Just("traits"),
                Just("messageId"),
                Just("timestamp"),
                Just("sentAt"),
                Just("context"),
                Just("other"),
            ];
            let value = prop_oneof![
                3 => text().prop_map(Value::from),
                1 => Just(Value::Null),
                1 => json_value(),
                1 => proptest::collection::btree_map(text(), json_value(), 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ];
            proptest::collection::btree_map(field, value, 0..9)
                .prop_map(|fields| fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }

        proptest! {
            /// The typed fast path takes a body exactly when serde would, and takes the same one.
            #[test]
            fn typed_bodies_agree_with_serde(map in body_object()) {
                let by_serde = deserialize::<TrackBody>(Value::Object(map.clone())).ok();
                prop_assert_eq!(typed::track(&mut map.clone()), by_serde);
                let by_serde = deserialize::<IdentifyBody>(Value::Object(map.clone())).ok();
                prop_assert_eq!(typed::identify(&mut map.clone()), by_serde);
            }
        }

        proptest! {
            #[test]
            fn accepted_events_hold_nothing_postgres_refuses(
                event in text(), user in text(), message in text(),
                properties in proptest::collection::btree_map(text(), json_value(), 0..4),
                context in proptest::collection::btree_map(text(), json_value(), 0..3),
                seconds in -70_000_000_000i64..260_000_000_000i64,
            ) {
                let timestamp = DateTime::<Utc>::from_timestamp(seconds, 0)
                    .map(|t| t.to_rfc3339());
                let value = json!({
                    "event": event, "userId": user, "messageId": message,
                    "properties": properties, "context": context, "timestamp": timestamp,
                });
                let now = Utc::now();
                if let Ok(accepted) = parse_track(value, &BatchDefaults::default(), now) {
                    let stored = json!({ "properties": accepted.data, "context": accepted.context });
                    prop_assert!(!contains_nul(&stored));
                    prop_assert!(!accepted.event.contains('\0'));
                    prop_assert!(!accepted.user_id.as_deref().unwrap().chars().any(char::is_control));
                    prop_assert!(!accepted.message_id.as_deref().unwrap().chars().any(char::is_control));
                    prop_assert!(storable_times().contains(&accepted.occurred_at(now)));
                }
            }

            #[test]
            fn storable_problem_finds_every_nul(map in proptest::collection::btree_map(text(), json_value(), 0..4)) {
                let map: Map<String, Value> = map.into_iter().collect();
                let has_nul = contains_nul(&Value::Object(map.clone()));
                prop_assert_eq!(storable_problem("properties", &map).is_some(), has_nul);
            }
        }
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
