use crate::SqlMigration;

/// Retention: whole months of events, and the dedup keys of those events, are dropped together, so
/// the dedup table never outgrows the events it protects. The function runs as the owner (SECURITY
/// DEFINER) and still goes through row-level security: it deletes dedup keys one tenant at a time,
/// in each tenant's scope, so no policy had to be loosened for it.
const UP: &str = r#"
-- Drops every monthly partition of events that ends on or before the start of cutoff's month,
-- deletes older rows of the default partition, and deletes the dedup keys of all those events.
-- Returns the number of partitions dropped. Idempotent.
CREATE FUNCTION gamify_drop_events_before(cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    month_cutoff timestamptz := date_trunc('month', cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    partition record;
    tenant record;
    partition_end timestamptz;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gamify_ensure_event_partitions'));
    -- Dropping a partition drops its foreign keys, which locks the referenced tables: take them
    -- first, in the order writers use, so writers wait instead of deadlocking (as in
    -- gamify_ensure_event_partitions).
    LOCK TABLE projects, api_keys, end_users IN SHARE ROW EXCLUSIVE MODE;
    FOR partition IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'
    LOOP
        partition_end := (to_date(substr(partition.relname, 8), 'YYYY_MM') + interval '1 month')
            ::timestamp AT TIME ZONE 'UTC';
        IF partition_end <= month_cutoff THEN
            -- Dropping a partition locks its parent exclusively; taking that lock up front keeps
            -- the order writers use (parent, then partition), so they wait, briefly, instead of
            -- deadlocking.
            LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
            EXECUTE format('DROP TABLE %I', partition.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    -- Partitions are not reached through the parent's policies: the default one is cleaned directly.
    DELETE FROM events_default WHERE occurred_at < month_cutoff;
    FOR tenant IN SELECT id FROM projects LOOP
        PERFORM set_config('app.project_id', tenant.id::text, true);
        DELETE FROM event_message_ids WHERE occurred_at < month_cutoff;
    END LOOP;
    PERFORM set_config('app.project_id', '', true);
    RETURN dropped;
END
$fn$;
REVOKE ALL ON FUNCTION gamify_drop_events_before(timestamptz) FROM PUBLIC;
"#;

const DOWN: &str = r#"
DROP FUNCTION IF EXISTS gamify_drop_events_before(timestamptz);
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261124_000007_event_retention",
        up: UP,
        down: DOWN,
    }
}
