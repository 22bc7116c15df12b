//! What a consumer loop does with the events it has checked. The storage worker stores them; the
//! gamification engine evaluates them. Both share the loop (batches, re-checks, retries while
//! Postgres fails, offset commits after the work is durable), so an event is judged the same way on
//! both paths and only the last step differs.

use futures::future::BoxFuture;
use gamify_db::Db;
use sea_orm::DbErr;
use uuid::Uuid;

use crate::persist::{self, Item, Outcome};

pub trait Stage: Send + Sync + 'static {
    /// The consumer group's purpose, for logs.
    fn name(&self) -> &'static str;

    /// A project with more than its share of a batch is spread over several transactions by a
    /// hash of this key: items that must be handled in order, or deduplicated against each
    /// other, share it.
    fn shard_key<'a>(&self, item: &'a Item) -> &'a str;

    /// Whether this is the storage stage, which alone dead-letters what it cannot store (or every
    /// dead letter would be kept twice) and keeps the event partitions. Other stages get a refused
    /// message as [`persist::Status::Failed`] and move on.
    fn stores_events(&self) -> bool;

    /// Handles one project's share of a batch in one transaction. Handling the same items again
    /// (a redelivery) must change nothing.
    fn apply<'a>(
        &'a self,
        db: &'a Db,
        project_id: Uuid,
        items: &'a [&'a Item],
    ) -> BoxFuture<'a, Result<Outcome, DbErr>>;
}

/// The storage worker's stage: each event stored once per messageId and key class, with the
/// analytics rollups unless `rollups` is off.
pub struct Store {
    pub rollups: persist::Rollups,
}

impl Stage for Store {
    fn name(&self) -> &'static str {
        "store"
    }

    fn shard_key<'a>(&self, item: &'a Item) -> &'a str {
        &item.envelope.message_id
    }

    fn stores_events(&self) -> bool {
        true
    }

    fn apply<'a>(
        &'a self,
        db: &'a Db,
        project_id: Uuid,
        items: &'a [&'a Item],
    ) -> BoxFuture<'a, Result<Outcome, DbErr>> {
        Box::pin(persist::persist_events(db, project_id, items, self.rollups))
    }
}
