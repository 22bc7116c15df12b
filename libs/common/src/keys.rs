//! API key format: `pk_live_` or `sk_live_` followed by 64 lowercase hex characters. Only SHA-256
//! of the full key is ever stored.
//!
//! Keys made by [`ApiKey::generate_vouched`] are 24 bytes from the OS CSPRNG followed by an 8-byte
//! tag, an HMAC of the rest under a secret only the gateways know ([`KeyVoucher`]). The format is
//! unchanged, but a gateway can tell such a key from a made-up one without any lookup: a flood of
//! random keys is refused from the budget for unknown keys, while a real key never is.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::{RngCore, rngs::OsRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const SECRET_BYTES: usize = 32;
/// Of a vouched key's 32 bytes, the last ones are the tag.
const TAG_BYTES: usize = 8;
const RANDOM_BYTES: usize = SECRET_BYTES - TAG_BYTES;
const SECRET_HEX_LEN: usize = SECRET_BYTES * 2;
const PREFIX_LEN: usize = 8; // "pk_live_" and "sk_live_" have the same length
/// How many characters of the full key are shown back to the user after creation.
const DISPLAY_CHARS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// Browsers and mobile apps: behavioural events only.
    Publishable,
    /// Servers: every event.
    Secret,
}

impl KeyType {
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyType::Publishable => "pk_live_",
            KeyType::Secret => "sk_live_",
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            KeyType::Publishable => "publishable",
            KeyType::Secret => "secret",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "publishable" => Some(KeyType::Publishable),
            "secret" => Some(KeyType::Secret),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key does not start with pk_live_ or sk_live_")]
    UnknownPrefix,
    #[error("key has the wrong length")]
    WrongLength,
    #[error("key secret is not lowercase hex")]
    NotHex,
}

/// A well-formed API key. The full value is a secret: `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    key_type: KeyType,
    full: String,
}

impl ApiKey {
    /// A new key with 32 bytes from the operating system's CSPRNG.
    pub fn generate(key_type: KeyType) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut secret);
        Self {
            key_type,
            full: format!("{}{}", key_type.prefix(), hex::encode(secret)),
        }
    }

    /// A new key whose last bytes vouch for it under `voucher`'s secret (see [`KeyVoucher`]).
    pub fn generate_vouched(key_type: KeyType, voucher: &KeyVoucher) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut secret[..RANDOM_BYTES]);
        let tag = voucher.tag(key_type, &secret[..RANDOM_BYTES]);
        secret[RANDOM_BYTES..].copy_from_slice(&tag);
        Self {
            key_type,
            full: format!("{}{}", key_type.prefix(), hex::encode(secret)),
        }
    }

    /// Checks the format only; says nothing about whether the key exists.
    pub fn parse(raw: &str) -> Result<Self, KeyFormatError> {
        let key_type = if raw.starts_with(KeyType::Publishable.prefix()) {
            KeyType::Publishable
        } else if raw.starts_with(KeyType::Secret.prefix()) {
            KeyType::Secret
        } else {
            return Err(KeyFormatError::UnknownPrefix);
        };
        let secret = &raw[PREFIX_LEN..];
        if secret.len() != SECRET_HEX_LEN {
            return Err(KeyFormatError::WrongLength);
        }
        if !secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(KeyFormatError::NotHex);
        }
        Ok(Self {
            key_type,
            full: raw.to_owned(),
        })
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.full)
    }

    /// What may be shown after creation, e.g. `pk_live_3f2a…`.
    pub fn display_prefix(&self) -> String {
        format!("{}…", &self.full[..DISPLAY_CHARS])
    }

    /// The full key, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.full
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("type", &self.key_type)
            .field("prefix", &self.display_prefix())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a full key as 64 lowercase hex characters: the only form in which keys are stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(full_key: &str) -> Self {
        // Into a buffer first: `hex::encode` builds its String a char at a time, on every request.
        let mut hex = [0u8; 64];
        let digest = Sha256::digest(full_key.as_bytes());
        hex::encode_to_slice(digest, &mut hex)
            .unwrap_or_else(|_| unreachable!("32 bytes are 64 hex digits"));
        Self(
            std::str::from_utf8(&hex)
                .unwrap_or_else(|_| unreachable!("hex digits are ASCII"))
                .to_owned(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tells keys this deployment issued (with [`ApiKey::generate_vouched`]) from made-up ones, without
/// a lookup. A vouched key may still be unknown (revoked and forgotten); an unvouched one may still
/// be real (issued before keys were vouched, or under another secret): the voucher only decides
/// whether a lookup is charged to the budget for unknown keys.
#[derive(Clone)]
pub struct KeyVoucher(Hmac<Sha256>);

impl KeyVoucher {
    /// Keyed by `secret`; the gateway derives it from its envelope secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        derive.update(b"gamify api key voucher v1");
        let derived = derive.finalize().into_bytes();
        Self(
            <Hmac<Sha256> as Mac>::new_from_slice(&derived)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }

    fn tag(&self, key_type: KeyType, random: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.0.clone();
        mac.update(key_type.prefix().as_bytes());
        mac.update(random);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Whether `key` carries this voucher's tag (compared in constant time).
    pub fn vouches_for(&self, key: &ApiKey) -> bool {
        use subtle::ConstantTimeEq;
        let mut secret = [0u8; SECRET_BYTES];
        if hex::decode_to_slice(&key.full[PREFIX_LEN..], &mut secret).is_err() {
            return false;
        }
        let expected = self.tag(key.key_type, &secret[..RANDOM_BYTES]);
        bool::from(expected.ct_eq(&secret[RANDOM_BYTES..]))
    }
}

impl fmt::Debug for KeyVoucher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyVoucher(…)")
    }
}

/// Compares two secrets without leaking, through timing, where they first differ or how long they
/// are: both sides are hashed to a fixed length first.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_format() {
        for key_type in [KeyType::Publishable, KeyType::Secret] {
            let key = ApiKey::generate(key_type);
            let full = key.expose();
            assert!(full.starts_with(key_type.prefix()));
            assert_eq!(full.len(), 8 + 64);
            assert!(
                full[8..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(ApiKey::parse(full), Ok(key.clone()));
            assert_eq!(ApiKey::parse(full).map(|k| k.key_type()), Ok(key_type));
        }
    }

    #[test]
    fn a_voucher_vouches_for_its_own_keys_only() {
        let voucher = KeyVoucher::new(b"one secret");
        let other = KeyVoucher::new(b"another secret");
        for key_type in [KeyType::Publishable, KeyType::Secret] {
            let key = ApiKey::generate_vouched(key_type, &voucher);
            assert_eq!(ApiKey::parse(key.expose()).unwrap(), key);
            assert!(voucher.vouches_for(&key));
            assert!(!other.vouches_for(&key));
            assert!(!voucher.vouches_for(&ApiKey::generate(key_type)));
            // The tag covers the key type: the same bytes under the other prefix are not vouched.
            let other_type = match key_type {
                KeyType::Publishable => KeyType::Secret,
                KeyType::Secret => KeyType::Publishable,
            };
            let swapped = format!("{}{}", other_type.prefix(), &key.expose()[PREFIX_LEN..]);
            assert!(!voucher.vouches_for(&ApiKey::parse(&swapped).unwrap()));
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = ApiKey::generate(KeyType::Secret);
        let b = ApiKey::generate(KeyType::Secret);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn parse_rejects_malformed_keys() {
        let hex64 = "a".repeat(64);
        assert_eq!(
            ApiKey::parse(&format!("rk_live_{hex64}")),
            Err(KeyFormatError::UnknownPrefix)
        );
        assert_eq!(
            ApiKey::parse(&format!("pk_test_{hex64}")),
            Err(KeyFormatError::UnknownPrefix)
        );
        assert_eq!(ApiKey::parse(""), Err(KeyFormatError::UnknownPrefix));
        assert_eq!(ApiKey::parse("pk_live_"), Err(KeyFormatError::WrongLength));
        assert_eq!(
            ApiKey::parse(&format!("pk_live_{}", "a".repeat(63))),
            Err(KeyFormatError::WrongLength)
        );
        assert_eq!(
            ApiKey::parse(&format!("sk_live_{}", "a".repeat(65))),
            Err(KeyFormatError::WrongLength)
        );
        assert_eq!(
            ApiKey::parse(&format!("sk_live_{}", "A".repeat(64))),
            Err(KeyFormatError::NotHex)
        );
        assert_eq!(
            ApiKey::parse(&format!("sk_live_{}g", "a".repeat(63))),
            Err(KeyFormatError::NotHex)
        );
        // A multi-byte character must not panic on slicing.
        assert_eq!(
            ApiKey::parse(&format!("sk_live_{}é", "a".repeat(62))),
            Err(KeyFormatError::NotHex)
        );
    }

    #[test]
    fn hash_is_sha256_hex_of_the_full_key() {
        // sha256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            KeyHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let key = ApiKey::generate(KeyType::Publishable);
        assert_eq!(key.hash(), KeyHash::of(key.expose()));
        assert_eq!(key.hash().as_str().len(), 64);
    }

    #[test]
    fn display_prefix_and_debug_do_not_reveal_the_secret() {
        let key = ApiKey::generate(KeyType::Secret);
        let prefix = key.display_prefix();
        assert_eq!(prefix.chars().count(), 13);
        assert!(prefix.ends_with('…'));
        let debug = format!("{key:?}");
        assert!(!debug.contains(&key.expose()[12..]));
    }

    #[test]
    fn constant_time_eq_compares_values() {
        assert!(constant_time_eq("token", "token"));
        assert!(!constant_time_eq("token", "token2"));
        assert!(!constant_time_eq("", "token"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a client sends as a key, parsing never panics and accepts exactly the
            /// documented form: a known prefix and 64 lowercase hex characters.
            #[test]
            fn parsing_accepts_exactly_the_key_format(raw in prop_oneof![
                ".{0,80}",
                "(pk|sk)_live_[0-9a-f]{60,68}",
                "(pk|sk)_live_[0-9a-fA-F]{64}",
                "(pk|sk)_live_[0-9a-f]{63}.",
            ]) {
                let well_formed = (raw.starts_with("pk_live_") || raw.starts_with("sk_live_"))
                    && raw.len() == PREFIX_LEN + SECRET_HEX_LEN
                    && raw[PREFIX_LEN..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                match ApiKey::parse(&raw) {
                    Ok(key) => {
                        prop_assert!(well_formed, "{raw:?} accepted");
                        prop_assert_eq!(key.expose(), raw.as_str());
                        prop_assert_eq!(KeyHash::of(key.expose()).as_str().len(), 64);
                    }
                    Err(_) => prop_assert!(!well_formed, "{raw:?} refused"),
                }
            }

            #[test]
            fn altered_vouched_keys_are_not_vouched(at in 0..SECRET_HEX_LEN, by in 1u8..16) {
                let voucher = KeyVoucher::new(b"a secret");
                let key = ApiKey::generate_vouched(KeyType::Secret, &voucher);
                let mut altered = key.expose().as_bytes().to_vec();
                let digit = (altered[PREFIX_LEN + at] as char).to_digit(16).unwrap() as u8;
                altered[PREFIX_LEN + at] = char::from_digit(u32::from((digit + by) % 16), 16).unwrap() as u8;
                let altered = ApiKey::parse(std::str::from_utf8(&altered).unwrap()).unwrap();
                prop_assert!(!voucher.vouches_for(&altered));
            }

            #[test]
            fn generated_keys_parse_back(secret in any::<bool>()) {
                let key_type = if secret { KeyType::Secret } else { KeyType::Publishable };
                let key = ApiKey::generate(key_type);
                let parsed = ApiKey::parse(key.expose()).unwrap();
                prop_assert_eq!(parsed.key_type(), key_type);
            }
        }
    }
}
