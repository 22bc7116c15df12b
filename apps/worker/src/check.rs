//! Re-checks every envelope instead of trusting the topic: the signature proves the gateway made it,
//! and the key and project in Postgres prove it was allowed to.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use gamify_common::{
    Envelope, KeyType,
    envelope::{SIGNATURE_HEADER, Signer},
    events::requires_secret_key,
};
use gamify_db::{Db, sources::KeySource};
use sea_orm::DbErr;
use uuid::Uuid;

/// One message as read from the topic, owned so a batch can outlive the consumer's buffers and be
/// retried.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }
}

/// The signature covers the exact value bytes, so it is checked before anything is parsed.
pub fn decode(signer: &Signer, record: &Record) -> Result<Envelope, String> {
    let Some(payload) = record.payload.as_deref() else {
        return Err("empty message".into());
    };
    let Some(signature) = record.header(SIGNATURE_HEADER) else {
        return Err(format!("missing {SIGNATURE_HEADER} header"));
    };
    if !signer.verify(payload, signature) {
        return Err("bad signature".into());
    }
    serde_json::from_slice(payload).map_err(|err| format!("unparseable envelope: {err}"))
}

/// API keys with their projects' trusted events, cached briefly: a batch of 500 events from one
/// key costs one lookup, and a revoked key or changed trusted-event list takes effect within the
/// TTL. Absence is not cached, so a key created a moment ago is found on the next batch. Read
/// through `gamify_db::sources`, the same lookup the gateway uses.
#[derive(Debug)]
pub struct Sources {
    ttl: Duration,
    keys: HashMap<Uuid, (Instant, KeySource)>,
}

impl Sources {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keys: HashMap::new(),
        }
    }

    pub fn key(&self, id: Uuid) -> Option<&KeySource> {
        self.keys.get(&id).map(|(_, key)| key)
    }

    /// Reads every key of `envelopes` that is not cached or has expired.
    pub async fn load<'a>(
        &mut self,
        db: &Db,
        envelopes: impl Iterator<Item = &'a Envelope>,
    ) -> Result<(), DbErr> {
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < self.ttl;
        let mut key_ids = HashSet::new();
        for envelope in envelopes {
            if !self
                .keys
                .get(&envelope.key_id)
                .is_some_and(|(at, _)| fresh(at))
            {
                key_ids.insert(envelope.key_id);
            }
        }
        if key_ids.is_empty() {
            return Ok(());
        }
        self.keys.retain(|_, (at, _)| fresh(at));
        let ids: Vec<Uuid> = key_ids.into_iter().collect();
        let sources = db
            .key_sources_by_id(&ids)
            .await
            .map_err(|gamify_db::Error::Db(err)| err)?;
        for source in sources {
            self.keys.insert(source.key_id, (now, source));
        }
        Ok(())
    }
}

/// What happens to a correctly signed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Processed,
    /// Stored with status `failed` and this explanation, never processed.
    Failed(String),
    /// Cannot be stored at all (its project or key does not exist): dead-lettered with this reason.
    DeadLetter(String),
}

/// The key type stored with the event: the one Postgres knows, not the one the envelope claims.
pub fn stored_key_type(envelope: &Envelope, sources: &Sources) -> KeyType {
    sources
        .key(envelope.key_id)
        .map_or(envelope.key_type, |key| key.key_type)
}

pub fn judge(envelope: &Envelope, sources: &Sources) -> Verdict {
    let Some(key) = sources.key(envelope.key_id) else {
        return Verdict::DeadLetter(format!("unknown API key {}", envelope.key_id));
    };
    let errors = envelope.validate();
    if !errors.is_empty() {
        let details: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        return Verdict::Failed(format!("invalid envelope: {}", details.join("; ")));
    }
    if key.project_id != envelope.project_id {
        return Verdict::Failed(format!(
            "API key {} belongs to another project",
            envelope.key_id
        ));
    }
    if key.key_type != envelope.key_type {
        return Verdict::Failed(format!(
            "envelope claims a {} key but API key {} is {}",
            envelope.key_type, envelope.key_id, key.key_type
        ));
    }
    if key.revoked_at.is_some_and(|at| at <= envelope.received_at) {
        return Verdict::Failed(format!(
            "API key {} was revoked before the event was received",
            envelope.key_id
        ));
    }
    if key.expires_at.is_some_and(|at| at <= envelope.received_at) {
        return Verdict::Failed(format!(
            "API key {} had expired when the event was received",
            envelope.key_id
        ));
    }
    if key.key_type != KeyType::Secret && requires_secret_key(&envelope.event, &key.trusted_events)
    {
        return Verdict::Failed(format!(
            "trusted event {:?} requires a secret key, but was sent with a {} key",
            envelope.event, key.key_type
        ));
    }
    Verdict::Processed
}

#[cfg(test)]
mod tests {
    use super::*;
    use gamify_common::envelope::sign;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"an-envelope-secret-of-at-least-32-bytes";

    fn record(payload: Option<Vec<u8>>, headers: Vec<(String, Option<Vec<u8>>)>) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload,
            headers,
        }
    }

    proptest! {
        /// Whatever is written to the topic — garbage, forged or replayed-and-altered bodies, odd
        /// headers — decoding never panics, and only bytes signed with the secret decode.
        #[test]
        fn only_signed_envelopes_decode(
            payload in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
            signature in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
            extra in proptest::collection::vec((".{0,20}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))), 0..3),
        ) {
            let mut headers: Vec<(String, Option<Vec<u8>>)> = extra;
            headers.push((SIGNATURE_HEADER.to_owned(), signature.clone()));
            let decoded = decode(&Signer::new(SECRET), &record(payload.clone(), headers));
            if decoded.is_ok() {
                let payload = payload.unwrap_or_default();
                prop_assert_eq!(signature.unwrap_or_default(), sign(SECRET, &payload).into_bytes());
            }
        }

        /// A correctly signed message whose body is then altered (a replay with changes) is
        /// refused as a bad signature.
        #[test]
        fn altered_bodies_are_refused(
            body in proptest::collection::vec(any::<u8>(), 1..256),
            at in any::<prop::sample::Index>(),
        ) {
            let signature = sign(SECRET, &body).into_bytes();
            let mut altered = body.clone();
            altered[at.index(body.len())] ^= 0x20;
            let headers = vec![(SIGNATURE_HEADER.to_owned(), Some(signature))];
            prop_assert_eq!(decode(&Signer::new(SECRET), &record(Some(altered), headers)).unwrap_err(), "bad signature");
        }
    }
}
