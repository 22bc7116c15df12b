//! Where the resolver reads a key it has in no cache (Postgres, through `libs/db`), and where it
//! records that keys were used; a map in the unit tests.

use futures::future::BoxFuture;
use gamify_db::{Db, sources::KeySource};
use uuid::Uuid;

use crate::http::error::Error;

pub trait KeyStore: Send + Sync + 'static {
    /// The key whose SHA-256 is `hash`, revoked or not.
    fn key_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<KeySource>, Error>>;

    /// Records that the keys `ids` were used just now.
    fn record_use<'a>(&'a self, ids: &'a [Uuid]) -> BoxFuture<'a, Result<(), Error>>;
}

impl KeyStore for Db {
    fn key_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<KeySource>, Error>> {
        Box::pin(async move { Ok(self.key_source_by_hash(hash).await?) })
    }

    fn record_use<'a>(&'a self, ids: &'a [Uuid]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { Ok(self.record_key_use(ids).await?) })
    }
}
