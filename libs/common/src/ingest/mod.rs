//! What SDKs send to the ingestion endpoints, and the validation that gateway and worker share:
//! the bodies (`bodies`), the limits and size measurement (`limits`), the field rules (`rules`),
//! and here the parsing of one call into an [`Event`].

mod bodies;
mod limits;
mod rules;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::events::IDENTIFY_EVENT;
use bodies::typed;
pub use bodies::{IdentifyBody, TrackBody};
pub use limits::*;
use limits::{ByteCounter, check_size};
pub use rules::{parse_time, storable_problem, validate_fields};

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

/// Fields a batch gives to every item that lacks its own.
#[derive(Debug, Default, Clone)]
pub struct BatchDefaults {
    pub sent_at: Option<DateTime<Utc>>,
    pub context: Option<Map<String, Value>>,
}

/// A validated track or identify call, before the gateway stamps it into an envelope. Serialized,
/// it is what its size as produced is measured by ([`Event::measure_produced_len`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(skip)]
    pub kind: Kind,
    pub event: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Properties of a track call, traits of an identify call.
    #[serde(rename = "properties")]
    pub data: Map<String, Value>,
    pub message_id: Option<String>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub sent_at: Option<DateTime<Utc>>,
    pub context: Map<String, Value>,
    /// Serialized size as the gateway produces it (see [`Event::measure_produced_len`]), measured
    /// once when the event is parsed.
    #[serde(skip)]
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
        let mut counter = ByteCounter(0);
        // Writing to a sink that cannot fail cannot fail.
        let _ = serde_json::to_writer(&mut counter, self);
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

fn validate(event: &Event) -> Vec<FieldError> {
    validate_fields(
        event.kind,
        &event.event,
        event.user_id.as_deref(),
        event.anonymous_id.as_deref(),
        event.message_id.as_deref(),
    )
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
