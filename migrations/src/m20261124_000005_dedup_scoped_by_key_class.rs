use crate::SqlMigration;

/// A messageId is unique per project *and key class*: an event sent with a publishable key (a
/// browser, anyone) must never claim the messageId of a trusted event sent with a secret key, in
/// either order. Existing rows take the key class of the event they deduplicated. Row-level
/// security is forced on both tables, so it is lifted for the backfill inside this transaction.
const UP: &str = r#"
ALTER TABLE event_message_ids ADD COLUMN key_type text;

ALTER TABLE events NO FORCE ROW LEVEL SECURITY;
ALTER TABLE event_message_ids NO FORCE ROW LEVEL SECURITY;
UPDATE event_message_ids m SET key_type = e.key_type
FROM events e
WHERE e.project_id = m.project_id AND e.id = m.event_id AND e.occurred_at = m.occurred_at;
-- A claim without its event cannot exist (both are written in one transaction); if one did, the
-- secret class keeps a retried trusted event from being stored twice.
UPDATE event_message_ids SET key_type = 'secret' WHERE key_type IS NULL;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE event_message_ids FORCE ROW LEVEL SECURITY;

ALTER TABLE event_message_ids
    ALTER COLUMN key_type SET NOT NULL,
    ADD CONSTRAINT event_message_ids_key_type_check CHECK (key_type IN ('publishable', 'secret')),
    DROP CONSTRAINT event_message_ids_pkey,
    ADD PRIMARY KEY (project_id, key_type, message_id);
"#;

const DOWN: &str = r#"
ALTER TABLE event_message_ids NO FORCE ROW LEVEL SECURITY;
DELETE FROM event_message_ids WHERE key_type = 'publishable'
    AND (project_id, message_id) IN
        (SELECT project_id, message_id FROM event_message_ids WHERE key_type = 'secret');
ALTER TABLE event_message_ids FORCE ROW LEVEL SECURITY;
ALTER TABLE event_message_ids
    DROP CONSTRAINT event_message_ids_pkey,
    ADD PRIMARY KEY (project_id, message_id),
    DROP CONSTRAINT event_message_ids_key_type_check,
    DROP COLUMN key_type;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261124_000005_dedup_scoped_by_key_class",
        up: UP,
        down: DOWN,
    }
}
