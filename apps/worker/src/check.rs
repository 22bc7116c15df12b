//! Re-checks every envelope instead of trusting the topic: the signature proves the gateway made it,
//! and the key and project in Postgres prove it was allowed to.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use gamify_common::{
    Envelope, KeyType,
    envelope::{SIGNATURE_HEADER, verify},
    events::requires_secret_key,
};
use gamify_db::Db;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
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
pub fn decode(secret: &[u8], record: &Record) -> Result<Envelope, String> {
    let Some(payload) = record.payload.as_deref() else {
        return Err("empty message".into());
    };
    let Some(signature) = record.header(SIGNATURE_HEADER) else {
        return Err(format!("missing {SIGNATURE_HEADER} header"));
    };
    if !verify(secret, payload, signature) {
        return Err("bad signature".into());
    }
    serde_json::from_slice(payload).map_err(|err| format!("unparseable envelope: {err}"))
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub project_id: Uuid,
    pub key_type: KeyType,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ProjectInfo {
    pub trusted_events: Vec<String>,
}

/// API keys and projects, cached briefly: a batch of 500 events from one key costs one lookup, and
/// a revoked key or changed trusted-event list takes effect within the TTL. Absence is not cached,
/// so a key created a moment ago is found on the next batch.
#[derive(Debug)]
pub struct Sources {
    ttl: Duration,
    keys: HashMap<Uuid, (Instant, KeyInfo)>,
    projects: HashMap<Uuid, (Instant, ProjectInfo)>,
}

impl Sources {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keys: HashMap::new(),
            projects: HashMap::new(),
        }
    }

    pub fn key(&self, id: Uuid) -> Option<&KeyInfo> {
        self.keys.get(&id).map(|(_, key)| key)
    }

    pub fn project(&self, id: Uuid) -> Option<&ProjectInfo> {
        self.projects.get(&id).map(|(_, project)| project)
    }

    /// Reads every key and project of `envelopes` that is not cached or has expired.
    pub async fn load<'a>(
        &mut self,
        db: &Db,
        envelopes: impl Iterator<Item = &'a Envelope>,
    ) -> Result<(), DbErr> {
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < self.ttl;
        let mut key_ids = HashSet::new();
        let mut project_ids = HashSet::new();
        for envelope in envelopes {
            if !self
                .keys
                .get(&envelope.key_id)
                .is_some_and(|(at, _)| fresh(at))
            {
                key_ids.insert(envelope.key_id);
            }
            if !self
                .projects
                .get(&envelope.project_id)
                .is_some_and(|(at, _)| fresh(at))
            {
                project_ids.insert(envelope.project_id);
            }
        }
        if !key_ids.is_empty() {
            self.keys.retain(|_, (at, _)| fresh(at));
            let rows = db
                .shared()
                .query_all(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT id, project_id, type, revoked_at, expires_at FROM api_keys
                     WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid)",
                    [ids_json(&key_ids).into()],
                ))
                .await?;
            for row in rows {
                let id: Uuid = row.try_get("", "id")?;
                let key_type: String = row.try_get("", "type")?;
                let Some(key_type) = KeyType::from_name(&key_type) else {
                    continue;
                };
                let info = KeyInfo {
                    project_id: row.try_get("", "project_id")?,
                    key_type,
                    revoked_at: row.try_get("", "revoked_at")?,
                    expires_at: row.try_get("", "expires_at")?,
                };
                self.keys.insert(id, (now, info));
            }
        }
        if !project_ids.is_empty() {
            self.projects.retain(|_, (at, _)| fresh(at));
            let rows = db
                .shared()
                .query_all(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT id, trusted_events FROM projects
                     WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid)",
                    [ids_json(&project_ids).into()],
                ))
                .await?;
            for row in rows {
                let id: Uuid = row.try_get("", "id")?;
                let trusted: serde_json::Value = row.try_get("", "trusted_events")?;
                let info = ProjectInfo {
                    trusted_events: serde_json::from_value(trusted).unwrap_or_default(),
                };
                self.projects.insert(id, (now, info));
            }
        }
        Ok(())
    }
}

fn ids_json(ids: &HashSet<Uuid>) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|id| serde_json::Value::String(id.to_string()))
            .collect(),
    )
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
    let Some(project) = sources.project(envelope.project_id) else {
        return Verdict::DeadLetter(format!("unknown project {}", envelope.project_id));
    };
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
    if key.key_type != KeyType::Secret
        && requires_secret_key(&envelope.event, &project.trusted_events)
    {
        return Verdict::Failed(format!(
            "trusted event {:?} requires a secret key, but was sent with a {} key",
            envelope.event, key.key_type
        ));
    }
    Verdict::Processed
}
