//! The decisions of the ingestion path that need no service: what a request adds to its events,
//! the size limits with it, the trusted-event guard, the errors they answer with, and a project's
//! quota. Unit-tested here; `routes.rs` applies them.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use gamify_common::{
    ErrorCode, KeyType,
    envelope::{Received, Source},
    events::requires_secret_key,
    ingest::{EVENT_TOO_LARGE, Event, FieldError, MAX_EVENT_BYTES},
};
use serde_json::json;

use crate::{config::Quota, http::error::Error, ingest::keys::KeyRecord};

/// What the request itself adds to its events; the User-Agent cut to its bound.
pub(super) fn received(
    headers: &HeaderMap,
    client_ip: Option<IpAddr>,
    at: DateTime<Utc>,
) -> Received {
    Received {
        at,
        ip: client_ip.map(|ip| ip.to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(Received::bounded_user_agent),
    }
}

pub(super) fn source(record: &KeyRecord) -> Source {
    Source {
        project_id: record.project_id,
        key_id: record.key_id,
        key_type: record.key_type,
        trusted_events_version: record.trusted_events_version,
    }
}

/// An event's size once the request's own fields are added, within the per-event limit.
pub(super) fn produced_size(event: &Event, received: &Received) -> Result<usize, FieldError> {
    let size = event.produced_len + received.added_bytes();
    if size > MAX_EVENT_BYTES {
        return Err(FieldError::event_too_large());
    }
    Ok(size)
}

/// 413 when any problem is an oversized event, else 400 with every field error.
pub(super) fn rejected(errors: Vec<FieldError>, indexes: Option<Vec<usize>>) -> Error {
    let too_large = errors.iter().any(|e| e.too_large);
    let mut details = json!({ "errors": errors });
    if let Some(indexes) = indexes {
        details["indexes"] = json!(indexes);
    }
    if too_large {
        return Error::PayloadTooLarge {
            message: EVENT_TOO_LARGE.to_owned(),
            details: Some(details),
        };
    }
    // The message stays short however many items failed; details carries them all.
    const SHOWN: usize = 3;
    let mut summary = errors
        .iter()
        .take(SHOWN)
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > SHOWN {
        summary.push_str(&format!(" (and {} more)", errors.len() - SHOWN));
    }
    Error::InvalidRequest {
        message: format!("invalid event: {summary}"),
        details: Some(details),
    }
}

pub(super) fn requires_secret(record: &KeyRecord, event: &Event) -> bool {
    record.key_type == KeyType::Publishable
        && requires_secret_key(&event.event, &record.trusted_events)
}

pub(super) fn secret_key_required(events: Vec<String>, indexes: Option<Vec<usize>>) -> Error {
    let mut details = json!({ "events": events });
    if let Some(indexes) = indexes {
        details["indexes"] = json!(indexes);
    }
    Error::Forbidden {
        code: ErrorCode::EventRequiresSecretKey,
        message: "trusted events can only be sent with a secret key".to_owned(),
        details: Some(details),
    }
}

/// The project's own ceiling on accepted events, or the deployment's `default`.
pub(super) fn project_quota(key: &KeyRecord, default: Quota) -> Quota {
    key.project_rate_limit.map_or(default, |own| Quota {
        per_second: own.events_per_second,
        burst: own.burst,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode, header::USER_AGENT};
    use axum::response::IntoResponse;
    use gamify_common::{
        events::NameList,
        ingest::{BatchDefaults, MAX_USER_AGENT_BYTES, parse_track},
    };
    use gamify_db::sources::ProjectRateLimit;
    use proptest::prelude::*;
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;

    fn key(key_type: KeyType, trusted: NameList) -> KeyRecord {
        KeyRecord {
            key_id: Uuid::from_u128(1),
            project_id: Uuid::from_u128(2),
            key_type,
            expires_at: None,
            trusted_events: trusted,
            trusted_events_version: 3,
            allowed_origins: NameList::default(),
            project_rate_limit: None,
        }
    }

    fn event(body: Value) -> Event {
        parse_track(body, &BatchDefaults::default(), Utc::now()).unwrap()
    }

    fn status(error: Error) -> StatusCode {
        error.into_response().status()
    }

    #[test]
    fn trusted_events_need_a_secret_key() {
        let purchase = event(json!({ "event": "purchase", "userId": "u" }));
        let reward = event(json!({ "event": "vip.reward", "userId": "u" }));
        let click = event(json!({ "event": "click", "userId": "u" }));
        let listed = NameList::listed(&["vip.reward"]);
        let browser = key(KeyType::Publishable, listed.clone());
        assert!(requires_secret(&browser, &purchase));
        assert!(requires_secret(&browser, &reward));
        assert!(!requires_secret(&browser, &click));
        let server = key(KeyType::Secret, listed);
        assert!(!requires_secret(&server, &purchase));
        assert!(!requires_secret(&server, &reward));
        // A list that cannot be read refuses every event of a browser key.
        assert!(requires_secret(
            &key(KeyType::Publishable, NameList::Unreadable),
            &click
        ));
        let refusal = secret_key_required(vec!["purchase".into()], Some(vec![4]));
        assert_eq!(status(refusal), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_request_s_own_fields_count_in_the_event_limit() {
        let big = "x".repeat(MAX_EVENT_BYTES - 200);
        let event = event(json!({ "event": "click", "userId": "u", "properties": { "p": big } }));
        let quiet = received(&HeaderMap::new(), None, Utc::now());
        assert!(produced_size(&event, &quiet).is_ok());
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_str(&"M".repeat(5_000)).unwrap(),
        );
        let loud = received(&headers, Some(IpAddr::from([10, 0, 0, 1])), Utc::now());
        assert_eq!(
            loud.user_agent.as_ref().map(String::len),
            Some(MAX_USER_AGENT_BYTES)
        );
        let size = produced_size(&event, &loud).unwrap_err();
        assert_eq!(size.message, EVENT_TOO_LARGE);
        assert_eq!(
            status(rejected(vec![size], None)),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn a_user_agent_that_is_not_visible_ascii_is_not_recorded() {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(received(&headers, None, Utc::now()).user_agent, None);
    }

    #[test]
    fn a_key_expires_at_its_instant_wherever_the_body_is() {
        let at = Utc::now();
        let mut record = key(KeyType::Secret, NameList::default());
        record.expires_at = Some(at);
        assert!(!record.is_expired_at(at - chrono::Duration::milliseconds(1)));
        assert!(record.is_expired_at(at));
        assert!(record.is_expired_at(at + chrono::Duration::seconds(30)));
    }

    #[test]
    fn a_project_s_own_ceiling_overrides_the_default() {
        let default = Quota {
            per_second: 5_000,
            burst: 10_000,
        };
        let mut record = key(KeyType::Publishable, NameList::default());
        assert_eq!(project_quota(&record, default), default);
        record.project_rate_limit = Some(ProjectRateLimit {
            events_per_second: 1,
            burst: 500,
        });
        assert_eq!(
            project_quota(&record, default),
            Quota {
                per_second: 1,
                burst: 500
            }
        );
    }

    proptest! {
        /// Whatever the event and the key, the guard refuses exactly the trusted events of a
        /// publishable key, and its source carries the list version the guard used.
        #[test]
        fn the_guard_refuses_exactly_trusted_events_from_browser_keys(
            name in "[a-z._]{1,12}",
            listed in proptest::collection::vec("[a-z._]{1,12}", 0..4),
            secret in any::<bool>(),
        ) {
            let names: Vec<&str> = listed.iter().map(String::as_str).collect();
            let key_type = if secret { KeyType::Secret } else { KeyType::Publishable };
            let record = key(key_type, NameList::listed(&names));
            let event = event(json!({ "event": name, "userId": "u" }));
            let trusted = gamify_common::events::BUILTIN_TRUSTED_EVENTS.contains(&name.as_str())
                || listed.contains(&name);
            prop_assert_eq!(requires_secret(&record, &event), !secret && trusted);
            prop_assert_eq!(source(&record).trusted_events_version, 3);
        }
    }
}
