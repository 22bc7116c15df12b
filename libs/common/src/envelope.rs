//! The versioned message that gamify-api produces to Kafka and gamify-worker consumes. Each one is
//! signed with HMAC-SHA256 over its exact bytes (header [`SIGNATURE_HEADER`]), so the worker can
//! tell a gateway-made message from anything else written to the topic.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use uuid::Uuid;

use crate::{
    KeyType,
    ingest::{
        Event, FieldError, Kind, MAX_USER_AGENT_BYTES, storable_problem, storable_times,
        validate_fields,
    },
};

pub const ENVELOPE_VERSION: u8 = 1;
/// Kafka header holding the lowercase hex HMAC-SHA256 of the message value.
pub const SIGNATURE_HEADER: &str = "gamify-signature";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub v: u8,
    pub id: Uuid,
    pub message_id: String,
    pub project_id: Uuid,
    pub key_id: Uuid,
    pub key_type: KeyType,
    /// The version of the project's trusted-event list the gateway applied when it accepted the
    /// event; the worker judges the event by that same list. Absent from envelopes made before
    /// lists were versioned, which are judged by the project's current list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_events_version: Option<i32>,
    pub kind: Kind,
    pub event: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Map<String, Value>>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub received_at: DateTime<Utc>,
    pub context: EnvelopeContext,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeContext {
    /// The address the gateway saw the request come from.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The SDK's self-description, as the client sent it.
    pub library: Option<Value>,
    /// Everything else the client put in its context (page, locale, …).
    #[serde(flatten)]
    pub client: Map<String, Value>,
}

/// Who sent an event, as the gateway authenticated it.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub project_id: Uuid,
    pub key_id: Uuid,
    pub key_type: KeyType,
    /// The version of the project's trusted-event list the gateway judged the event by.
    pub trusted_events_version: i32,
}

/// What the gateway knows about the request itself.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Received {
    /// `user_agent` cut to [`MAX_USER_AGENT_BYTES`] at a character boundary: it is copied into
    /// every event of the request, so its size must be bounded like the body's.
    pub fn bounded_user_agent(user_agent: &str) -> String {
        let mut end = user_agent.len().min(MAX_USER_AGENT_BYTES);
        while !user_agent.is_char_boundary(end) {
            end -= 1;
        }
        user_agent[..end].to_owned()
    }

    /// Bytes the request's own fields add to each of its events (address and User-Agent), counted
    /// in the per-event and per-request limits with the client's fields.
    pub fn added_bytes(&self) -> usize {
        self.ip.as_ref().map_or(0, String::len) + self.user_agent.as_ref().map_or(0, String::len)
    }
}

impl Envelope {
    /// Stamps a validated event: a new id, a messageId (UUIDv7 unless the client gave one), the
    /// corrected occurredAt and the request's context.
    pub fn new(event: Event, source: Source, received: &Received) -> Self {
        let id = Uuid::now_v7();
        let occurred_at = event.occurred_at(received.at);
        let mut client = event.context;
        let library = client.remove("library");
        client.remove("ip");
        client.remove("userAgent");
        let (properties, traits) = match event.kind {
            Kind::Track => (Some(event.data), None),
            Kind::Identify => (None, Some(event.data)),
        };
        Self {
            v: ENVELOPE_VERSION,
            id,
            message_id: event
                .message_id
                .unwrap_or_else(|| Uuid::now_v7().to_string()),
            project_id: source.project_id,
            key_id: source.key_id,
            key_type: source.key_type,
            trusted_events_version: Some(source.trusted_events_version),
            kind: event.kind,
            event: event.event,
            user_id: event.user_id,
            anonymous_id: event.anonymous_id,
            properties,
            traits,
            occurred_at,
            received_at: received.at,
            context: EnvelopeContext {
                ip: received.ip.clone(),
                user_agent: received.user_agent.clone(),
                library,
                client,
            },
        }
    }

    /// Kafka message key: one user's events go to one partition and stay ordered.
    pub fn partition_key(&self) -> String {
        let subject = self
            .user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default();
        format!("{}:{subject}", self.project_id)
    }

    /// [`Envelope::partition_key`] appended to `out`, for a buffer reused across messages.
    pub fn write_partition_key(&self, out: &mut Vec<u8>) {
        let subject = self
            .user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default();
        let mut project = Uuid::encode_buffer();
        out.extend_from_slice(
            self.project_id
                .hyphenated()
                .encode_lower(&mut project)
                .as_bytes(),
        );
        out.push(b':');
        out.extend_from_slice(subject.as_bytes());
    }

    /// The same rules the gateway applied, for an envelope read back from the topic.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.v != ENVELOPE_VERSION {
            errors.push(FieldError::new(
                "v",
                format!("unsupported version {}", self.v),
            ));
        }
        errors.extend(validate_fields(
            self.kind,
            &self.event,
            self.user_id.as_deref(),
            self.anonymous_id.as_deref(),
            Some(&self.message_id),
        ));
        for (field, map) in [("properties", &self.properties), ("traits", &self.traits)] {
            if let Some(map) = map {
                errors.extend(storable_problem(field, map));
            }
        }
        errors.extend(storable_problem("context", &self.context.client));
        if let Some(library) = &self.context.library {
            let mut wrapped = Map::new();
            wrapped.insert("library".to_owned(), library.clone());
            errors.extend(storable_problem("context", &wrapped));
        }
        for (field, at) in [
            ("occurredAt", self.occurred_at),
            ("receivedAt", self.received_at),
        ] {
            if !storable_times().contains(&at) {
                errors.push(FieldError::new(field, "lies outside the years 0001–9999"));
            }
        }
        errors
    }
}

/// Lowercase hex HMAC-SHA256 of `payload`.
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    hex::encode(Signer::new(secret).mac(payload).finalize().into_bytes())
}

/// Length of a signature: 32 bytes of HMAC-SHA256 in hex.
pub const SIGNATURE_LEN: usize = 64;

/// [`sign`] for one secret and many payloads. Keying HMAC hashes the padded secret twice, as much
/// work as signing a small envelope; that is done once here and the keyed state cloned per payload.
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self(
            <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(payload);
        mac
    }

    /// The same lowercase hex as [`sign`], without allocating.
    pub fn sign(&self, payload: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut hex = [0; SIGNATURE_LEN];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(self.mac(payload).finalize().into_bytes(), &mut hex);
        hex
    }

    /// [`verify`] with the key schedule done once: the worker checks every message it reads.
    pub fn verify(&self, payload: &[u8], signature_hex: &[u8]) -> bool {
        let Ok(signature) = hex::decode(signature_hex) else {
            return false;
        };
        self.mac(payload).verify_slice(&signature).is_ok()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Checks a signature in constant time.
pub fn verify(secret: &[u8], payload: &[u8], signature_hex: &[u8]) -> bool {
    Signer::new(secret).verify(payload, signature_hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{BatchDefaults, parse_identify, parse_track};
    use serde_json::json;

    fn source(key_type: KeyType) -> Source {
        Source {
            project_id: Uuid::new_v4(),
            key_id: Uuid::new_v4(),
            key_type,
            trusted_events_version: 1,
        }
    }

    fn received() -> Received {
        Received {
            at: Utc::now(),
            ip: Some("203.0.113.7".to_owned()),
            user_agent: Some("Mozilla/5.0".to_owned()),
        }
    }

    #[test]
    fn track_envelope_carries_source_and_context() {
        let event = parse_track(
            json!({ "event": "page_view", "userId": "u1", "properties": { "page": "/" },
                    "context": { "library": { "name": "@gamify/core" }, "ip": "10.0.0.1", "locale": "de" } }),
            &BatchDefaults::default(),
            Utc::now(),
        )
        .unwrap();
        let source = source(KeyType::Publishable);
        let envelope = Envelope::new(event, source, &received());
        assert_eq!(envelope.v, 1);
        assert_eq!(envelope.kind, Kind::Track);
        assert_eq!(envelope.key_type, KeyType::Publishable);
        assert_eq!(envelope.project_id, source.project_id);
        assert!(Uuid::parse_str(&envelope.message_id).is_ok());
        assert_eq!(
            envelope.partition_key(),
            format!("{}:u1", source.project_id)
        );
        let mut written = b"left over".to_vec();
        written.clear();
        envelope.write_partition_key(&mut written);
        assert_eq!(written, envelope.partition_key().as_bytes());
        // The client cannot choose the ip the gateway records.
        assert_eq!(envelope.context.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(
            envelope.context.library,
            Some(json!({ "name": "@gamify/core" }))
        );
        assert_eq!(envelope.context.client["locale"], "de");

        let value = serde_json::to_value(&envelope).unwrap();
        assert_eq!(value["properties"]["page"], "/");
        assert!(value.get("traits").is_none());
        assert_eq!(value["context"]["userAgent"], "Mozilla/5.0");
        assert_eq!(value["keyType"], "publishable");
        let back: Envelope = serde_json::from_value(value).unwrap();
        assert_eq!(back, envelope);
        assert!(back.validate().is_empty());
    }

    #[test]
    fn identify_envelope_carries_traits() {
        let event = parse_identify(
            json!({ "userId": "u1", "traits": { "plan": "pro" }, "messageId": "m-1" }),
            Utc::now(),
        )
        .unwrap();
        let envelope = Envelope::new(event, source(KeyType::Secret), &received());
        assert_eq!(envelope.message_id, "m-1");
        assert_eq!(envelope.event, "$identify");
        let value = serde_json::to_value(&envelope).unwrap();
        assert_eq!(value["kind"], "identify");
        assert_eq!(value["traits"]["plan"], "pro");
        assert!(value.get("properties").is_none());
    }

    #[test]
    fn signatures_verify_only_the_exact_bytes_and_secret() {
        let payload = br#"{"v":1}"#;
        let signature = sign(b"secret", payload);
        assert_eq!(signature.len(), 64);
        assert!(verify(b"secret", payload, signature.as_bytes()));
        assert!(!verify(b"other", payload, signature.as_bytes()));
        assert!(!verify(b"secret", br#"{"v":2}"#, signature.as_bytes()));
        assert!(!verify(b"secret", payload, b"not hex"));
        assert!(!verify(b"secret", payload, b""));
    }

    #[test]
    fn a_keyed_signer_signs_as_sign_does() {
        let signer = Signer::new(b"secret");
        for payload in [&b""[..], br#"{"v":1}"#, &[7; 300]] {
            let signature = signer.sign(payload);
            assert_eq!(&signature[..], sign(b"secret", payload).as_bytes());
            assert!(verify(b"secret", payload, &signature));
        }
    }

    #[test]
    fn tampered_envelopes_fail_validation() {
        let event = parse_track(
            json!({ "event": "x", "userId": "u" }),
            &BatchDefaults::default(),
            Utc::now(),
        )
        .unwrap();
        let mut envelope = Envelope::new(event, source(KeyType::Secret), &received());
        envelope.v = 9;
        envelope.event = String::new();
        let fields: Vec<_> = envelope.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["v", "event"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Only the exact bytes under the exact secret verify: any other payload, secret or
            /// signature is refused, and no input makes verification panic.
            #[test]
            fn signatures_bind_bytes_and_secret(
                payload in proptest::collection::vec(any::<u8>(), 0..512),
                secret in proptest::collection::vec(any::<u8>(), 1..64),
                flip in any::<prop::sample::Index>(),
                garbage in proptest::collection::vec(any::<u8>(), 0..80),
            ) {
                let signature = sign(&secret, &payload);
                prop_assert!(verify(&secret, &payload, signature.as_bytes()));
                let signer = Signer::new(&secret);
                prop_assert_eq!(&signer.sign(&payload)[..], signature.as_bytes());
                prop_assert!(signer.verify(&payload, signature.as_bytes()));
                prop_assert_eq!(
                    signer.verify(&payload, &garbage),
                    verify(&secret, &payload, &garbage)
                );
                if !payload.is_empty() {
                    let mut altered = payload.clone();
                    let at = flip.index(altered.len());
                    altered[at] ^= 0x01;
                    prop_assert!(!verify(&secret, &altered, signature.as_bytes()));
                    prop_assert!(!signer.verify(&altered, signature.as_bytes()));
                }
                // (HMAC pads keys with zero bytes, so a secret differing only by trailing zeros
                // is the same key: change a byte instead. Secrets come from environment
                // strings, which cannot end in NUL.)
                let mut other = secret.clone();
                other[0] ^= 0x80;
                prop_assert!(!verify(&other, &payload, signature.as_bytes()));
                prop_assert!(!verify(&secret, &payload, &garbage) || garbage == signature.as_bytes());
            }

            /// Decoding arbitrary bytes as an envelope never panics.
            #[test]
            fn user_agents_are_cut_to_their_bound_at_a_character_boundary(agent in ".{0,700}") {
                let bounded = Received::bounded_user_agent(&agent);
                prop_assert!(bounded.len() <= MAX_USER_AGENT_BYTES);
                prop_assert!(agent.starts_with(&bounded));
                // Nothing is cut that fits, and no more than one character's bytes beyond it.
                if agent.len() <= MAX_USER_AGENT_BYTES {
                    prop_assert_eq!(&bounded, &agent);
                } else {
                    prop_assert!(bounded.len() > MAX_USER_AGENT_BYTES - 4);
                }
            }

            #[test]
            fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = serde_json::from_slice::<Envelope>(&bytes);
            }
        }
    }
}
