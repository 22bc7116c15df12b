//! An ingestion request as the handlers get it: its key checked on the headers (known, not revoked
//! or expired, allowed from the request's origin, within its rate limits) and again once the body
//! has arrived, at the instant the request is accepted.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequest, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use chrono::{DateTime, Utc};
use gamify_common::{ApiKey, ErrorCode, KeyHash, KeyType, events::NameList};

use crate::{
    http::{client_ip::client_ip, error::Error, extract::bearer_token},
    ingest::{
        body::read_json,
        keys::{KeyRecord, Resolved},
        rate_limit::Bucket,
    },
    state::AppState,
};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The API key a request carries in `x-api-key` or `Authorization: Bearer`.
fn header_key(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .or_else(|| bearer_token(parts))
}

/// The request's client address, read once per request (see `client_ip`).
fn request_client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    client_ip(&parts.headers, peer, state.proxy_hops())
}

/// Checks `raw` as the request's API key, sent from `client`: known, not revoked or expired,
/// allowed from the request's origin, within its rate limit.
async fn authenticate(
    parts: &Parts,
    client: Option<IpAddr>,
    raw: &str,
    state: &AppState,
) -> Result<Authenticated> {
    // Malformed keys never reach Redis or Postgres.
    let key = ApiKey::parse(raw).map_err(|_| Error::InvalidApiKey)?;
    let hash = key.hash();
    let checked = Instant::now();
    let record = resolve(state, client, &key, &hash).await?;
    if record.is_expired_at(state.now()) || record.key_type != key.key_type() {
        return Err(Error::InvalidApiKey);
    }
    check_origin(&record, &parts.headers)?;
    // One publishable key serves every visitor of a site: it is limited per client address.
    let ip = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let limits = state.limits();
    let (bucket, quota) = match record.key_type {
        KeyType::Publishable => (Bucket::Client(record.key_id, ip), limits.client),
        KeyType::Secret => (Bucket::SecretKey(record.key_id), limits.secret_key),
    };
    state
        .rate_limiter()
        .check(bucket, quota, 1)
        .map_err(|wait| bucket.refusal(wait))?;
    state.keys().mark_used(record.key_id);
    Ok(Authenticated {
        record,
        hash,
        checked,
    })
}

/// A key that passed the checks, with when they began.
struct Authenticated {
    record: Arc<KeyRecord>,
    hash: KeyHash,
    checked: Instant,
}

/// The key's record. A client that keeps presenting keys nobody knows spends a budget per address
/// (`Bucket::InvalidKeys`), charged only by lookups that reached Postgres and found nothing; once
/// it is spent, the address' keys are answered from the caches only. A key found in a cache never
/// consults the budget, nor does one this deployment issued (vouched for by its tag): a valid key
/// is never refused for what another client behind the same address did.
async fn resolve(
    state: &AppState,
    client: Option<IpAddr>,
    key: &ApiKey,
    hash: &KeyHash,
) -> Result<Arc<KeyRecord>> {
    let ip = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let budget = Bucket::InvalidKeys(ip);
    let quota = state.http_limits().invalid_keys;
    // Asked only when no cache knows the key; the tag is checked only when the budget is spent.
    let within_budget =
        || state.rate_limiter().peek(budget, quota).is_ok() || state.key_voucher().vouches_for(key);
    match state.keys().resolve(hash, within_budget).await? {
        Resolved::Found(record) => Ok(record),
        Resolved::Unknown { looked_up } => {
            if looked_up && !state.key_voucher().vouches_for(key) {
                let _ = state.rate_limiter().check(budget, quota, 1);
            }
            Err(Error::InvalidApiKey)
        }
        Resolved::NotLookedUp => {
            let wait = state
                .rate_limiter()
                .peek(budget, quota)
                .err()
                .unwrap_or(Duration::from_secs(1));
            Err(budget.refusal(wait))
        }
    }
}

/// The key's record again once the request's body has arrived, for the instant `received_at`
/// the event is accepted at: a revocation, expiry or trusted-list change that took effect while the
/// body was on its way applies to it. Usually nothing was invalidated on this gateway since the
/// headers were checked, and the record stands without a second lookup.
async fn confirm(
    state: &AppState,
    parts: &Parts,
    authenticated: Authenticated,
    received_at: DateTime<Utc>,
) -> Result<Arc<KeyRecord>> {
    let Authenticated {
        record: first,
        hash,
        checked,
    } = authenticated;
    let record = if state.keys().unchanged_since(checked) {
        first
    } else {
        let record = match state.keys().resolve(&hash, || true).await? {
            Resolved::Found(record) => record,
            Resolved::Unknown { .. } | Resolved::NotLookedUp => return Err(Error::InvalidApiKey),
        };
        if record.key_id != first.key_id || record.key_type != first.key_type {
            return Err(Error::InvalidApiKey);
        }
        check_origin(&record, &parts.headers)?;
        record
    };
    if record.is_expired_at(received_at) {
        return Err(Error::InvalidApiKey);
    }
    Ok(record)
}

/// A request authenticated with an API key (`x-api-key` or `Authorization: Bearer`), within its
/// key's rate limit and, for publishable keys with allowed origins, from one of them.
pub struct IngestKey(pub Arc<KeyRecord>);

impl FromRequestParts<AppState> for IngestKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let raw = header_key(parts).ok_or(Error::InvalidApiKey)?;
        let client = request_client_ip(parts, state);
        authenticate(parts, client, raw, state)
            .await
            .map(|authenticated| IngestKey(authenticated.record))
    }
}

/// An ingestion request: its authenticated key and its JSON body. The key comes from a header, or —
/// for browsers delivering on page unload with `navigator.sendBeacon`, which cannot set headers and
/// must avoid a CORS preflight — from a top-level `"apiKey"` field of a `text/plain` body. Either
/// way the same checks apply; the field is removed before the body is validated.
///
/// The request is accepted at `received_at`, once its whole body has arrived, and `key` is the
/// key as it stands then: a header-keyed request is refused before its body is read when the key
/// is, and checked again after.
pub struct IngestRequest {
    pub key: Arc<KeyRecord>,
    /// The client's address (`TRUSTED_PROXY_HOPS` applied), as limited and as recorded.
    pub client_ip: Option<IpAddr>,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

impl FromRequest<AppState> for IngestRequest {
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &AppState) -> Result<Self> {
        let (parts, body) = request.into_parts();
        let client = request_client_ip(&parts, state);
        let (authenticated, body) = match header_key(&parts) {
            // Authenticated before the body is read, as every header-keyed request.
            Some(raw) => {
                let authenticated = authenticate(&parts, client, raw, state).await?;
                let mut body = read_json(&parts.headers, body).await?;
                if let Some(object) = body.as_object_mut() {
                    object.remove("apiKey");
                }
                (authenticated, body)
            }
            None => {
                let mut body = read_json(&parts.headers, body).await?;
                let raw = match body.as_object_mut().and_then(|o| o.remove("apiKey")) {
                    Some(serde_json::Value::String(raw)) => raw,
                    _ => return Err(Error::InvalidApiKey),
                };
                (authenticate(&parts, client, &raw, state).await?, body)
            }
        };
        // Stamped before the key is confirmed: a change that reaches this gateway after the
        // confirmation took effect after this instant.
        let received_at = state.now();
        let key = confirm(state, &parts, authenticated, received_at).await?;
        Ok(Self {
            key,
            client_ip: client,
            headers: parts.headers,
            body,
            received_at,
        })
    }
}

/// A publishable key with allowed origins refuses browser requests from any other origin; one
/// whose list cannot be read refuses every browser origin.
fn check_origin(record: &KeyRecord, headers: &HeaderMap) -> Result<()> {
    if record.key_type != KeyType::Publishable
        || record.allowed_origins == NameList::Listed(Vec::new())
    {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        // Not a browser request; origins restrict browsers only.
        return Ok(());
    };
    let allowed = match &record.allowed_origins {
        NameList::Listed(origins) => origins.iter().any(|allowed| allowed == origin),
        NameList::Unreadable => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden {
            code: ErrorCode::OriginNotAllowed,
            message: "this key may not be used from this origin".to_owned(),
            details: None,
        })
    }
}
