//! Passwords: the rules a new one must meet, and Argon2id hashing and verification run on the
//! blocking pool behind a semaphore, so sign-ins can never occupy the async workers that serve
//! ingestion, and a burst of them queues instead of exhausting memory (each hash holds
//! `memory_kib` while it runs).

use std::{collections::HashSet, io::Read, sync::Arc, sync::OnceLock};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::http::error::{Error, Result};

pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longer inputs are refused before hashing: bounds the work one request can ask for.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Argon2id's cost, from `PASSWORD_HASH_MEMORY_KIB`, `PASSWORD_HASH_ITERATIONS`; the defaults are
/// OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    /// Hashes computed at once, at most.
    pub concurrency: usize,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the same cost: verified against when no account matches,
    /// so an unknown email costs the same time as a wrong password.
    decoy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new(cost: HashCost) -> Result<Self, argon2::Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let decoy = argon2
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes(), &salt)
            .map_err(|_| argon2::Error::AlgorithmInvalid)?
            .to_string();
        Ok(Self {
            argon2: Arc::new(argon2),
            permits: Arc::new(Semaphore::new(cost.concurrency.max(1))),
            decoy: Arc::new(decoy),
        })
    }

    /// The PHC string of `password` under a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.blocking(move |argon2| {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| {
                    tracing::error!(%error, "password hashing failed");
                    Error::unavailable("password hashing failed", None)
                })
        })
        .await
    }

    /// Whether `password` matches `stored` (a PHC string); `None` verifies against the decoy and
    /// answers false, in the same time. Argon2's comparison is constant-time.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy.as_ref().clone());
        let password = password.to_owned();
        let matched = self
            .blocking(move |argon2| {
                Ok(PasswordHash::new(&stored)
                    .map(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false))
            })
            .await?;
        Ok(known && matched)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unavailable("shutting down", None))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || work(&argon2))
            .await
            .map_err(|_| Error::unavailable("password hashing failed", None))?
    }
}

/// Checks a new password: long enough, not too long, and not one of the 20,000 most common.
pub fn validate_new_password(field: &str, password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid_field(
            field,
            format_args!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_field(
            field,
            format_args!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    if common_passwords().contains(&password.to_lowercase()) {
        return Err(Error::invalid_field(
            field,
            "is one of the most common passwords; choose another",
        ));
    }
    Ok(())
}

/// Django's list of 20,000 common passwords (BSD-3-Clause, from Royce Williams' compilation),
/// lower-cased, read once.
fn common_passwords() -> &'static HashSet<String> {
    static LIST: OnceLock<HashSet<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut text = String::new();
        let decoded = flate2::read::GzDecoder::new(&include_bytes!("common-passwords.txt.gz")[..])
            .read_to_string(&mut text);
        if decoded.is_err() {
            tracing::error!("the common password list could not be read");
        }
        text.lines()
            .map(|line| line.trim().to_lowercase())
            .filter(|line| !line.is_empty())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(HashCost {
            memory_kib: 256,
            iterations: 1,
            concurrency: 2,
        })
        .unwrap()
    }

    #[test]
    fn short_long_and_common_passwords_are_refused() {
        assert!(validate_new_password("password", "short").is_err());
        assert!(validate_new_password("password", &"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(validate_new_password("password", "password123").is_err());
        assert!(validate_new_password("password", "Qwertyuiop").is_err());
        assert!(common_passwords().len() > 19_000);
        validate_new_password("password", "correct horse battery staple").unwrap();
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = cheap();
        let hash = passwords.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse battery", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horse batterY", Some(hash))
                .await
                .unwrap()
        );
        // No account: the decoy is verified, and the answer is always no.
        assert!(!passwords.verify("anything at all", None).await.unwrap());
        assert!(
            !passwords
                .verify("x", Some("not a phc string".into()))
                .await
                .unwrap()
        );
    }

    proptest! {
        #[test]
        fn validation_never_panics_and_accepts_only_bounded_lengths(password in ".{0,300}") {
            if validate_new_password("password", &password).is_ok() {
                prop_assert!(password.chars().count() >= MIN_PASSWORD_CHARS);
                prop_assert!(password.len() <= MAX_PASSWORD_BYTES);
            }
        }
    }
}
