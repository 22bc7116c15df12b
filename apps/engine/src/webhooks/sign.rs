//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the receiver gets
//! `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC>`, the
//! HMAC-SHA256 of `"{id}.{timestamp}.{body}"` under the endpoint's key, which is the base64 after
//! `whsec_` in the secret shown when the endpoint was created.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// What an endpoint's secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing key. Its `Debug` form never shows it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

/// A stored secret that is not `whsec_` + base64. The message never contains the secret.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint's secret is not whsec_ followed by base64")]
pub struct BadSecret;

impl Key {
    /// The key of a `whsec_…` secret (the prefix is optional, as in the reference libraries).
    pub fn from_secret(secret: &str) -> Result<Self, BadSecret> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        match STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(Self(key)),
            _ => Err(BadSecret),
        }
    }

    /// `v1,<base64 of HMAC-SHA256("{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The three headers of one attempt.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            (ID_HEADER, id.to_owned()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, self.sign(id, timestamp, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification (and its reference
    /// libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_test_vector() {
        let key = Key::from_secret(SECRET).unwrap();
        assert_eq!(key.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        // Without the prefix the key is the same.
        let bare = Key::from_secret(&SECRET[SECRET_PREFIX.len()..]).unwrap();
        assert_eq!(bare.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn every_signed_part_matters() {
        let key = Key::from_secret(SECRET).unwrap();
        assert_ne!(key.sign("msg_other", TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        assert_ne!(key.sign(ID, TIMESTAMP + 1, BODY.as_bytes()), SIGNATURE);
        assert_ne!(
            key.sign(ID, TIMESTAMP, br#"{"test": 2432232315}"#),
            SIGNATURE
        );
        let other = Key::from_secret("whsec_c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQ=").unwrap();
        assert_ne!(other.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature() {
        let key = Key::from_secret(SECRET).unwrap();
        let headers = key.headers(ID, TIMESTAMP, BODY.as_bytes());
        assert_eq!(
            headers,
            [
                (ID_HEADER, ID.to_owned()),
                (TIMESTAMP_HEADER, "1614265330".to_owned()),
                (SIGNATURE_HEADER, SIGNATURE.to_owned()),
            ]
        );
    }

    #[test]
    fn a_malformed_secret_is_refused_without_showing_it() {
        for secret in ["whsec_", "whsec_not base64!", ""] {
            let err = Key::from_secret(secret).unwrap_err();
            assert!(!err.to_string().contains("not base64!"));
        }
        let key = Key::from_secret(SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "Key(…)");
    }
}
