//! User tokens (`ut_…`): short-lived, signed, good for one user's progress, ledger and outcomes
//! and the project's leaderboards, so a browser can show a user their own progress without any
//! secret. Stateless: a token is its claims and an HMAC over them, under a key derived from the
//! envelope secret; nothing is stored, so a token cannot be revoked before it expires (hence the
//! short lifetime).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

pub const PREFIX: &str = "ut_";
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
pub const MAX_TTL_SECONDS: i64 = 24 * 3600;
pub const MIN_TTL_SECONDS: i64 = 60;
/// Longer tokens are refused unread: claims are a project id, a userId (≤ 255) and a time.
const MAX_TOKEN_CHARS: usize = 1024;

#[derive(Clone)]
pub struct UserTokens(Hmac<Sha256>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "p")]
    pub project_id: Uuid,
    #[serde(rename = "u")]
    pub user_id: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
}

impl UserTokens {
    /// Keyed by a derivation of `secret` (the envelope secret), so a user token can never pass
    /// for an envelope signature or the reverse.
    pub fn new(secret: &[u8]) -> Self {
        let mut derive =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
        derive.update(b"gamify user tokens v1");
        let key = derive.finalize().into_bytes();
        Self(<Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable_hmac()))
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // Claims are plain data: serializing them cannot fail.
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(self.tag(&body));
        format!("{PREFIX}{body}.{tag}")
    }

    /// The token's claims, when it is well formed, signed by this deployment and not expired at
    /// `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let (body, tag) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.0.clone();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.expires > now.timestamp()).then_some(claims)
    }

    fn tag(&self, body: &str) -> Vec<u8> {
        let mut mac = self.0.clone();
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// HMAC takes keys of any length.
fn unreachable_hmac() -> Hmac<Sha256> {
    unreachable!("HMAC-SHA256 accepts keys of every length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims(expires: i64) -> Claims {
        Claims {
            project_id: Uuid::from_u128(7),
            user_id: "user_1".into(),
            expires,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let tokens = UserTokens::new(b"an envelope secret of at least thirty-two bytes");
        let now = Utc::now();
        let token = tokens.mint(&claims(now.timestamp() + 60));
        assert!(token.starts_with("ut_"));
        assert_eq!(
            tokens.verify(&token, now),
            Some(claims(now.timestamp() + 60))
        );
        assert_eq!(
            tokens.verify(&token, now + chrono::Duration::seconds(60)),
            None
        );
    }

    #[test]
    fn another_deployments_token_is_refused() {
        let ours = UserTokens::new(b"an envelope secret of at least thirty-two bytes");
        let theirs = UserTokens::new(b"another envelope secret, also long enough......");
        let now = Utc::now();
        let token = theirs.mint(&claims(now.timestamp() + 60));
        assert_eq!(ours.verify(&token, now), None);
    }

    proptest! {
        /// Changing any one character of a token makes it invalid (or, at worst, leaves the
        /// same claims: base64's unused trailing bits).
        #[test]
        fn a_tampered_token_never_gives_other_claims(index in 0usize..200, replacement in "[A-Za-z0-9_.-]") {
            let tokens = UserTokens::new(b"an envelope secret of at least thirty-two bytes");
            let now = Utc::now();
            let original = claims(now.timestamp() + 600);
            let token = tokens.mint(&original);
            let index = index % token.len();
            let mut tampered = token.clone();
            tampered.replace_range(index..index + 1, &replacement);
            if let Some(found) = tokens.verify(&tampered, now) {
                prop_assert_eq!(found, original);
            }
        }
    }
}
