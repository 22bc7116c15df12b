use crate::SqlMigration;

/// Room on each page for the engine's per-transaction updates of a user's state and of the count
/// of users per leaderboard score, so they are heap-only (HOT) updates: the new row version goes
/// on the same page and no index entry is written. Neither update changes an indexed column; at
/// the default fillfactor of 100 a page has no room, and 70 % of the state updates in the drain
/// benchmark wrote a new index entry (pg_stat_user_tables); at 50, 31 %. Existing pages keep
/// their layout until the table is rewritten; new ones follow the setting.
const UP: &str = r#"
ALTER TABLE engine_user_states SET (fillfactor = 50);
ALTER TABLE leaderboard_score_counts SET (fillfactor = 70);
"#;

const DOWN: &str = r#"
ALTER TABLE leaderboard_score_counts RESET (fillfactor);
ALTER TABLE engine_user_states RESET (fillfactor);
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261206_000014_engine_hot_updates",
        up: UP,
        down: DOWN,
    }
}
