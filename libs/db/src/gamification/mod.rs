//! What the gamification engine keeps per project, written by the engine, its replays and the
//! management and runtime API alike: the rule versions in use, users' engine states, outcomes,
//! the points ledger, leaderboard scores and the webhook outbox.

pub mod changes;
pub mod outbox;
pub mod rule_sets;
pub mod stored;

use sea_orm::{DbErr, RuntimeErr, sqlx};
use uuid::Uuid;

pub(crate) fn db_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err))
}

/// Taken shared by everything that evaluates or adjusts a project's users under its active rule
/// version, and exclusively by a replay switching that version, so nothing is applied under a
/// version that is being replaced.
pub fn project_lock(project_id: Uuid) -> i64 {
    let bytes = project_id.as_bytes();
    i64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]) ^ 0x6761_6d69_6679 // "gamify": keeps clear of other advisory locks keyed by id
}
