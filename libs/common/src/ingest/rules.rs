//! The field rules every event obeys, wherever it comes from (gateway request or envelope).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{FieldError, Kind, MAX_ID_CHARS, MAX_MESSAGE_ID_CHARS, storable_times};
use crate::events::{IDENTIFY_EVENT, validate_event_name};

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
