use crate::SqlMigration;

/// Analytics rollups, kept by gamify-worker in the transaction that stores the events they count:
/// per project, event name and UTC hour, the number of events and a HyperLogLog sketch of the
/// distinct users (the `hll` extension, which the superuser creates in the database beforehand:
/// it is not a trusted extension). `shard` spreads one hour's row over the worker's concurrent
/// transactions (the writing backend's pid modulo 16), so two chunks of one project never wait on
/// the same row; queries sum and union over it. `user_first_seen` holds each user's first event,
/// for cohorts. Neither is partitioned by month, so both outlive the retention that drops old
/// event partitions. Tenant data under the same policy as `events`; like the engine's tables, no
/// row foreign key to `projects` (a trigger there deletes their rows).
const UP: &str = r#"
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'hll') THEN
        RAISE EXCEPTION 'the hll extension is missing: as a superuser, run CREATE EXTENSION hll in this database (Debian: apt install postgresql-15-hll)';
    END IF;
END $$;

CREATE TABLE event_rollups (
    project_id uuid NOT NULL,
    event_type text NOT NULL,
    hour       timestamptz NOT NULL,
    shard      smallint NOT NULL,
    events     bigint NOT NULL,
    users      hll NOT NULL,
    PRIMARY KEY (project_id, event_type, hour, shard)
);
CREATE INDEX event_rollups_hour_idx ON event_rollups (project_id, hour);

CREATE TABLE user_first_seen (
    project_id    uuid NOT NULL,
    -- `u:<userId>` or `a:<anonymousId>`: who the distinct-user sketches count.
    who           text NOT NULL,
    first_seen_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, who)
);

ALTER TABLE event_rollups ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_rollups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON event_rollups
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE user_first_seen ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_first_seen FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_first_seen
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

CREATE FUNCTION gamify_delete_project_rollups() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    acting text := current_setting('app.project_id', true);
BEGIN
    PERFORM set_config('app.project_id', OLD.id::text, true);
    DELETE FROM event_rollups WHERE project_id = OLD.id;
    DELETE FROM user_first_seen WHERE project_id = OLD.id;
    PERFORM set_config('app.project_id', coalesce(acting, ''), true);
    RETURN OLD;
END
$fn$;
REVOKE ALL ON FUNCTION gamify_delete_project_rollups() FROM PUBLIC;
CREATE TRIGGER gamify_project_rollups_deleted AFTER DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION gamify_delete_project_rollups();
"#;

const DOWN: &str = r#"
DROP TRIGGER gamify_project_rollups_deleted ON projects;
DROP FUNCTION gamify_delete_project_rollups();
DROP TABLE user_first_seen;
DROP TABLE event_rollups;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261205_000013_event_rollups",
        up: UP,
        down: DOWN,
    }
}
