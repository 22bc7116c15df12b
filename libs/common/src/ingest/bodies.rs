//! The track and identify bodies, and the fast path that takes them straight out of a parsed object.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// The one definition of the track and identify fields: parsed here, published as the OpenAPI
// schemas (the doc comments are their descriptions), stamped into the envelope by `Envelope::new`.

/// `POST /v1/events/track` (and each item of a batch). `userId` or `anonymousId` is required.
#[derive(Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackBody {
    /// 1–200 characters, no control characters. Trusted names need a secret key.
    #[schema(min_length = 1, max_length = 200, example = "page_view")]
    pub(super) event: String,
    #[schema(min_length = 1, max_length = 255)]
    pub(super) user_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub(super) anonymous_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub(super) properties: Option<Map<String, Value>>,
    /// 1–100 characters; retries with the same value are stored once. Assigned (UUIDv7) if absent.
    #[schema(min_length = 1, max_length = 100)]
    pub(super) message_id: Option<String>,
    /// RFC 3339, years 0001–9999.
    #[schema(format = DateTime)]
    pub(super) timestamp: Option<String>,
    /// RFC 3339: when the client sent it, to correct its clock.
    #[schema(format = DateTime)]
    pub(super) sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub(super) context: Option<Map<String, Value>>,
}

/// `POST /v1/identify`.
#[derive(Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentifyBody {
    #[schema(min_length = 1, max_length = 255)]
    pub(super) user_id: String,
    #[schema(value_type = Option<Object>)]
    pub(super) traits: Option<Map<String, Value>>,
    #[schema(min_length = 1, max_length = 100)]
    pub(super) message_id: Option<String>,
    #[schema(format = DateTime)]
    pub(super) timestamp: Option<String>,
    #[schema(format = DateTime)]
    pub(super) sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub(super) context: Option<Map<String, Value>>,
}

/// The typed bodies taken straight out of a parsed object when every known field has the type
/// serde would accept: no path tracking and no second map per nested object. `None` means some
/// field does not, and the value goes through serde for the exact error it gives.
pub(super) mod typed {
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

    pub(in crate::ingest) fn track(map: &mut Map<String, Value>) -> Option<TrackBody> {
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

    pub(in crate::ingest) fn identify(map: &mut Map<String, Value>) -> Option<IdentifyBody> {
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
