use crate::SqlMigration;

/// Every event row paid for three foreign-key checks (project, end user, API key) and every dedup
/// key for one (project): each an internal trigger and an index probe per row, plus a row lock
/// on the referenced user, which made concurrent writers of one project wait on each other
/// (docs/BENCHMARKS.md measures the cost). The worker writes only ids it has just checked or
/// created in the same transaction, so the checks bought nothing on the hot path; the one thing
/// they did besides, cascading deletes, moves to triggers on the referenced tables, which are
/// deleted from rarely and by operators only (no API deletes projects, users or keys).
///
/// Two indexes go too, each maintained for every row: `events (project_id, message_id)`, which
/// nothing reads (the dedup key lives in `event_message_ids`), and
/// `events (project_id, occurred_at DESC, id DESC)`, whose work the primary key now does: the key
/// becomes `(project_id, occurred_at, id)` (the same columns, so the same uniqueness), and the
/// listing's `ORDER BY occurred_at DESC, id DESC` reads it backwards.
///
/// Referential actions bypassed row-level security; the triggers do not, so they act with the
/// deleted row's project as the tenant and restore the caller's setting afterwards.
const UP: &str = r#"
ALTER TABLE events
    DROP CONSTRAINT IF EXISTS events_project_id_fkey,
    DROP CONSTRAINT IF EXISTS events_user_id_fkey,
    DROP CONSTRAINT IF EXISTS events_key_id_fkey;
ALTER TABLE event_message_ids DROP CONSTRAINT IF EXISTS event_message_ids_project_id_fkey;
DROP INDEX IF EXISTS events_project_id_message_id_idx;
DROP INDEX IF EXISTS events_project_id_occurred_at_idx;
ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (project_id, occurred_at, id);

CREATE FUNCTION gamify_delete_project_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    acting text := current_setting('app.project_id', true);
BEGIN
    PERFORM set_config('app.project_id', OLD.id::text, true);
    DELETE FROM events WHERE project_id = OLD.id;
    DELETE FROM event_message_ids WHERE project_id = OLD.id;
    PERFORM set_config('app.project_id', coalesce(acting, ''), true);
    RETURN OLD;
END
$fn$;
REVOKE ALL ON FUNCTION gamify_delete_project_events() FROM PUBLIC;
CREATE TRIGGER gamify_project_deleted AFTER DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION gamify_delete_project_events();

CREATE FUNCTION gamify_unlink_end_user_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    acting text := current_setting('app.project_id', true);
BEGIN
    PERFORM set_config('app.project_id', OLD.project_id::text, true);
    UPDATE events SET user_id = NULL WHERE project_id = OLD.project_id AND user_id = OLD.id;
    PERFORM set_config('app.project_id', coalesce(acting, ''), true);
    RETURN OLD;
END
$fn$;
REVOKE ALL ON FUNCTION gamify_unlink_end_user_events() FROM PUBLIC;
CREATE TRIGGER gamify_end_user_deleted AFTER DELETE ON end_users
    FOR EACH ROW EXECUTE FUNCTION gamify_unlink_end_user_events();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS gamify_end_user_deleted ON end_users;
DROP FUNCTION IF EXISTS gamify_unlink_end_user_events();
DROP TRIGGER IF EXISTS gamify_project_deleted ON projects;
DROP FUNCTION IF EXISTS gamify_delete_project_events();
ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (project_id, id, occurred_at);
CREATE INDEX IF NOT EXISTS events_project_id_occurred_at_idx
    ON events (project_id, occurred_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_project_id_message_id_idx ON events (project_id, message_id);
ALTER TABLE event_message_ids
    ADD CONSTRAINT event_message_ids_project_id_fkey
    FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE;
ALTER TABLE events
    ADD CONSTRAINT events_project_id_fkey
        FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    ADD CONSTRAINT events_user_id_fkey
        FOREIGN KEY (user_id) REFERENCES end_users (id) ON DELETE SET NULL,
    ADD CONSTRAINT events_key_id_fkey FOREIGN KEY (key_id) REFERENCES api_keys (id);
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261124_000009_events_without_row_foreign_keys",
        up: UP,
        down: DOWN,
    }
}
