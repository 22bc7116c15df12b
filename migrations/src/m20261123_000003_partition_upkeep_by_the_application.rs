use crate::SqlMigration;

/// The application role may not create tables, yet the worker should keep monthly partitions
/// ahead of time without an operator. The function runs with its owner's rights instead, with a
/// fixed search_path so a caller cannot redirect what it creates; only roles granted EXECUTE (the
/// application role, by `gamify-api migrate`) may call it.
const UP: &str = r#"
ALTER FUNCTION gamify_ensure_event_partitions(integer) SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION gamify_ensure_event_partitions(integer) FROM PUBLIC;
"#;

const DOWN: &str = r#"
ALTER FUNCTION gamify_ensure_event_partitions(integer) SECURITY INVOKER RESET search_path;
GRANT EXECUTE ON FUNCTION gamify_ensure_event_partitions(integer) TO PUBLIC;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261123_000003_partition_upkeep_by_the_application",
        up: UP,
        down: DOWN,
    }
}
