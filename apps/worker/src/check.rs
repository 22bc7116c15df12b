//! Re-checks every envelope instead of trusting the topic: the signature proves the gateway made it,
//! and the key and project in Postgres prove it was allowed to.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use gamify_common::{
    Envelope, KeyType,
    envelope::{SIGNATURE_HEADER, Signer},
    events::requires_secret_key,
};
use gamify_db::{Db, sources::KeySource, trusted_lists::SupersededList};
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

/// API keys with their projects' trusted events, and the trusted-event lists projects replaced, as
/// the worker judges envelopes by them (moka caches). A key's facts are read again for an envelope
/// received after they were read (and at least every TTL), so an event is judged by the facts as
/// they stood when the gateway accepted it: a batch of 500 events from one key costs one lookup.
/// Absence is not cached, so a key created a moment ago is found on the next batch. Read through
/// `gamify_db::sources`, the same lookup the gateway uses.
pub struct Sources {
    /// Each key with when it was read (as a time of day).
    keys: moka::sync::Cache<Uuid, Arc<ReadKey>>,
    /// Replaced lists by (project, version). A replaced list never changes; its `superseded_at`
    /// only moves earlier, which a cached copy may miss: the worker then judges more leniently than
    /// it could, never refusing what a gateway accepted.
    superseded: moka::sync::Cache<(Uuid, i32), Arc<SupersededList>>,
}

/// A key as read from Postgres at `read_at`.
#[derive(Debug)]
pub struct ReadKey {
    read_at: DateTime<Utc>,
    source: KeySource,
}

/// The facts one batch is judged by, taken from the caches when it is loaded: what a cache evicts
/// afterwards cannot turn a known key into an unknown one halfway through the batch.
#[derive(Debug, Default)]
pub struct Facts {
    keys: HashMap<Uuid, Arc<ReadKey>>,
    superseded: HashMap<(Uuid, i32), Arc<SupersededList>>,
}

impl Facts {
    /// Facts as if read from Postgres at `read_at`, for judging without a database.
    #[cfg(test)]
    fn known(
        keys: impl IntoIterator<Item = KeySource>,
        superseded: impl IntoIterator<Item = SupersededList>,
        read_at: DateTime<Utc>,
    ) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|source| (source.key_id, Arc::new(ReadKey { read_at, source })))
                .collect(),
            superseded: superseded
                .into_iter()
                .map(|list| ((list.project_id, list.version), Arc::new(list)))
                .collect(),
        }
    }

    pub fn key(&self, id: Uuid) -> Option<&KeySource> {
        self.keys.get(&id).map(|read| &read.source)
    }

    fn superseded(&self, project_id: Uuid, version: i32) -> Option<&SupersededList> {
        self.superseded
            .get(&(project_id, version))
            .map(AsRef::as_ref)
    }
}

impl Sources {
    pub fn new(ttl: Duration) -> Self {
        Self {
            keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            superseded: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }

    /// The facts to judge `envelopes` by: every key that is not cached, or was read before one of
    /// its envelopes was received, is read (again); then the replaced lists those envelopes were
    /// judged by.
    pub async fn load<'a>(
        &self,
        db: &Db,
        envelopes: impl Iterator<Item = &'a Envelope> + Clone,
    ) -> Result<Facts, DbErr> {
        let read_at = Utc::now();
        let mut facts = Facts::default();
        let mut stale = HashSet::new();
        // A key is read (again) when any envelope of the batch was received after it was read.
        for envelope in envelopes.clone() {
            let id = envelope.key_id;
            let read = facts.keys.get(&id).cloned().or_else(|| self.keys.get(&id));
            match read {
                Some(read) if read.read_at > envelope.received_at => {
                    facts.keys.entry(id).or_insert(read);
                }
                _ => {
                    stale.insert(id);
                }
            }
        }
        if !stale.is_empty() {
            let ids: Vec<Uuid> = stale.into_iter().collect();
            for id in &ids {
                facts.keys.remove(id);
            }
            let sources = db
                .key_sources_by_id(&ids)
                .await
                .map_err(|gamify_db::Error::Db(err)| err)?;
            for source in sources {
                let read = Arc::new(ReadKey { read_at, source });
                self.keys.insert(read.source.key_id, read.clone());
                facts.keys.insert(read.source.key_id, read);
            }
        }

        let mut wanted = HashSet::new();
        for envelope in envelopes {
            let (Some(version), Some(key)) =
                (envelope.trusted_events_version, facts.key(envelope.key_id))
            else {
                continue;
            };
            if version >= key.trusted_events_version {
                continue;
            }
            let id = (envelope.project_id, version);
            match self.superseded.get(&id) {
                Some(list) => {
                    facts.superseded.insert(id, list);
                }
                None => {
                    wanted.insert(id);
                }
            }
        }
        if !wanted.is_empty() {
            let wanted: Vec<(Uuid, i32)> = wanted.into_iter().collect();
            let lists = db
                .superseded_trusted_events(&wanted)
                .await
                .map_err(|gamify_db::Error::Db(err)| err)?;
            for list in lists {
                let id = (list.project_id, list.version);
                let list = Arc::new(list);
                self.superseded.insert(id, list.clone());
                facts.superseded.insert(id, list);
            }
        }
        Ok(facts)
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
pub fn stored_key_type(envelope: &Envelope, facts: &Facts) -> KeyType {
    facts
        .key(envelope.key_id)
        .map_or(envelope.key_type, |key| key.key_type)
}

/// Judges an envelope by the facts the gateway applied when it accepted it: the key as it stood at
/// `receivedAt` (not revoked or expired before it) and the trusted-event list of the version the
/// gateway stamped, provided no gateway applied a newer one by then.
pub fn judge(envelope: &Envelope, facts: &Facts) -> Verdict {
    let Some(key) = facts.key(envelope.key_id) else {
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
    if key.key_type == KeyType::Secret {
        return Verdict::Processed;
    }
    let trusted_events = match envelope.trusted_events_version {
        Some(version) if version < key.trusted_events_version => {
            match facts.superseded(envelope.project_id, version) {
                Some(list) if list.superseded_at <= envelope.received_at => {
                    return Verdict::Failed(format!(
                        "the gateway applied version {version} of the project's trusted events, \
                         replaced before the event was received"
                    ));
                }
                Some(list) => &list.trusted_events,
                // Its history is gone (the project was recreated by hand?): the current list.
                None => &key.trusted_events,
            }
        }
        // The current version, or an envelope from before versions.
        _ => &key.trusted_events,
    };
    if requires_secret_key(&envelope.event, trusted_events) {
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

    const PROJECT: Uuid = Uuid::from_u128(1);
    const PUBLISHABLE: Uuid = Uuid::from_u128(2);

    fn key(version: i32, trusted: &[&str]) -> KeySource {
        KeySource {
            key_id: PUBLISHABLE,
            project_id: PROJECT,
            key_type: KeyType::Publishable,
            revoked_at: None,
            expires_at: None,
            trusted_events: gamify_common::events::NameList::listed(trusted),
            trusted_events_version: version,
            allowed_origins: gamify_common::events::NameList::default(),
            rate_limit: None,
        }
    }

    fn replaced(version: i32, trusted: &[&str], at: DateTime<Utc>) -> SupersededList {
        SupersededList {
            project_id: PROJECT,
            version,
            trusted_events: gamify_common::events::NameList::listed(trusted),
            superseded_at: at,
        }
    }

    fn envelope(event: &str, version: Option<i32>, received_at: DateTime<Utc>) -> Envelope {
        let mut envelope: Envelope = serde_json::from_value(serde_json::json!({
            "v": 1, "id": Uuid::now_v7(), "messageId": "m", "projectId": PROJECT,
            "keyId": PUBLISHABLE, "keyType": "publishable", "kind": "track", "event": event,
            "userId": "u", "anonymousId": null, "properties": {},
            "occurredAt": received_at, "receivedAt": received_at, "context": {}
        }))
        .unwrap();
        envelope.trusted_events_version = version;
        envelope
    }

    #[test]
    fn an_event_is_judged_by_the_list_version_the_gateway_applied() {
        let t0 = Utc::now();
        let later = t0 + chrono::Duration::seconds(5);
        // Version 1 trusted bonus.granted; version 2 (current) trusts nothing, and vice versa.
        let sources = Facts::known(
            [key(2, &[])],
            [replaced(1, &["bonus.granted"], later)],
            later,
        );
        let judged = |event, version, at| judge(&envelope(event, version, at), &sources);
        assert_eq!(judged("bonus.granted", Some(2), t0), Verdict::Processed);
        assert!(matches!(
            judged("bonus.granted", Some(1), t0),
            Verdict::Failed(_)
        ));
        // Version 1 was applied after every gateway had moved on: refused whatever it says.
        let failed = judged("page_view", Some(1), later);
        assert!(
            matches!(&failed, Verdict::Failed(d) if d.contains("replaced")),
            "{failed:?}"
        );
        // Envelopes from before versions: the current list.
        assert_eq!(judged("bonus.granted", None, t0), Verdict::Processed);

        let sources = Facts::known([key(2, &["vip.reward"])], [replaced(1, &[], later)], later);
        let judged = |event, version, at| judge(&envelope(event, version, at), &sources);
        // Accepted under version 1 before it was replaced: processed, though trusted now.
        assert_eq!(judged("vip.reward", Some(1), t0), Verdict::Processed);
        assert!(matches!(
            judged("vip.reward", Some(2), t0),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn revocation_and_expiry_count_from_the_instant_the_event_was_received() {
        let t0 = Utc::now();
        let at = t0 + chrono::Duration::milliseconds(1);
        let mut revoked = key(1, &[]);
        revoked.revoked_at = Some(at);
        let mut expired = key(1, &[]);
        expired.expires_at = Some(at);
        for source in [revoked, expired] {
            let sources = Facts::known([source], [], at);
            assert_eq!(
                judge(&envelope("click", Some(1), t0), &sources),
                Verdict::Processed
            );
            assert!(matches!(
                judge(&envelope("click", Some(1), at), &sources),
                Verdict::Failed(_)
            ));
        }
    }

    proptest! {
        /// Whatever a project's history of trusted lists, an event a gateway accepted from a
        /// publishable key under the version in force when it received it is processed.
        #[test]
        fn what_a_gateway_accepted_under_the_list_in_force_is_processed(
            lists in proptest::collection::vec(proptest::collection::vec("[a-c]", 0..3), 1..6),
            event in "[a-c]",
            received_ms in 0i64..10_000,
            step_ms in 1i64..3_000,
        ) {
            let t0 = Utc::now();
            let current = lists.len() as i32;
            fn as_refs(list: &[String]) -> Vec<&str> {
                list.iter().map(String::as_str).collect()
            }
            // Version v (1-based) is replaced at t0 + v × step.
            let history: Vec<SupersededList> = lists[..lists.len() - 1]
                .iter()
                .enumerate()
                .map(|(i, list)| replaced(i as i32 + 1, &as_refs(list), t0 + chrono::Duration::milliseconds((i as i64 + 1) * step_ms)))
                .collect();
            let received_at = t0 + chrono::Duration::milliseconds(received_ms);
            let in_force = history
                .iter()
                .find(|list| list.superseded_at > received_at)
                .map_or(current, |list| list.version);
            let applied = &lists[(in_force - 1) as usize];
            let sources = Facts::known([key(current, &as_refs(&lists[lists.len() - 1]))], history, received_at);
            let verdict = judge(&envelope(&event, Some(in_force), received_at), &sources);
            let gateway_accepts = !applied.contains(&event);
            prop_assert_eq!(verdict == Verdict::Processed, gateway_accepts, "{:?}", verdict);
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
