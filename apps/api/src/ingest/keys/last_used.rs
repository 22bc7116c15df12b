//! `last_used_at`: recorded off the request path, at most once a minute per key and instance.

use std::{collections::HashSet, sync::Arc};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{KeyResolver, KeyStore};

impl KeyResolver {
    /// Records that a key was used; written to Postgres off the request path, at most once a
    /// minute per key.
    pub fn mark_used(&self, key_id: Uuid) {
        if self.recently_used.contains_key(&key_id) {
            return;
        }
        self.recently_used.insert(key_id, ());
        // A full queue only delays last_used_at until the next minute; never block a request.
        let _ = self.used.try_send(key_id);
    }
}

pub(super) async fn write_last_used(
    store: Arc<dyn KeyStore>,
    mut used: mpsc::Receiver<Uuid>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            key = used.recv() => match key { Some(key) => key, None => return },
        };
        let mut keys = HashSet::from([first]);
        while let Ok(key) = used.try_recv() {
            keys.insert(key);
        }
        let keys: Vec<Uuid> = keys.into_iter().collect();
        if let Err(err) = store.record_use(&keys).await {
            tracing::warn!(error = %err, "cannot record api key use");
        }
    }
}
