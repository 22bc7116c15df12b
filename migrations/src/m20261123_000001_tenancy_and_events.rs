use crate::SqlMigration;

/// Tenancy tables, monthly-partitioned events with their dedup keys, and row-level security.
const UP: &str = r#"
CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    description      text,
    -- extra server-only event names on top of the built-in trusted list
    trusted_events   jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(trusted_events) = 'array'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_organization_id_name_key UNIQUE (organization_id, name)
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    key_hash      char(64) NOT NULL,
    prefix        text NOT NULL,
    type          text NOT NULL CHECK (type IN ('publishable', 'secret')),
    scopes        jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    expires_at    timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_project_id_idx ON api_keys (project_id, created_at);

CREATE TABLE end_users (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    external_id  text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT end_users_project_id_external_id_key UNIQUE (project_id, external_id)
);

-- Events are range-partitioned by month on occurred_at. Postgres requires every unique constraint
-- of a partitioned table to contain the partition key, so (project_id, message_id) cannot be unique
-- on events itself: the dedup key lives in event_message_ids, which the worker inserts into first.
CREATE TABLE events (
    id             uuid NOT NULL,
    project_id     uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    message_id     text NOT NULL CHECK (char_length(message_id) BETWEEN 1 AND 100),
    event_type     text NOT NULL,
    user_id        uuid REFERENCES end_users (id) ON DELETE SET NULL,
    anonymous_id   text,
    payload        jsonb NOT NULL DEFAULT '{}'::jsonb,
    context        jsonb NOT NULL DEFAULT '{}'::jsonb,
    key_id         uuid NOT NULL REFERENCES api_keys (id),
    key_type       text NOT NULL CHECK (key_type IN ('publishable', 'secret')),
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
    error_details  text,
    occurred_at    timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    processed_at   timestamptz,
    PRIMARY KEY (project_id, id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX events_project_id_occurred_at_idx ON events (project_id, occurred_at DESC, id DESC);
CREATE INDEX events_project_id_user_id_idx ON events (project_id, user_id, occurred_at DESC);
CREATE INDEX events_project_id_message_id_idx ON events (project_id, message_id);

-- Rows outside every monthly partition (very old client timestamps) land here instead of failing.
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE TABLE event_message_ids (
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    message_id   text NOT NULL,
    event_id     uuid NOT NULL,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, message_id)
);

-- Creates the monthly partitions of events from the current month to months_ahead after it. Run by
-- `gamify-api migrate` and periodically by gamify-worker; idempotent and safe to run concurrently.
CREATE FUNCTION gamify_ensure_event_partitions(months_ahead integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    month_end date;
    partition_name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gamify_ensure_event_partitions'));
    FOR i IN 0..months_ahead LOOP
        month_end := (month_start + interval '1 month')::date;
        partition_name := format('events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                partition_name,
                month_start::timestamp AT TIME ZONE 'UTC',
                month_end::timestamp AT TIME ZONE 'UTC'
            );
        END IF;
        month_start := month_end;
    END LOOP;
END
$fn$;

-- Tenant isolation enforced by Postgres: rows are visible and writable only for the project set
-- with set_config('app.project_id', …, true) in the current transaction. FORCE applies the
-- policies to the table owner as well.
ALTER TABLE end_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE end_users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON end_users
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE event_message_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_message_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON event_message_ids
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS event_message_ids;
DROP TABLE IF EXISTS events;
DROP FUNCTION IF EXISTS gamify_ensure_event_partitions(integer);
DROP TABLE IF EXISTS end_users;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS projects;
DROP TABLE IF EXISTS organizations;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261123_000001_tenancy_and_events",
        up: UP,
        down: DOWN,
    }
}
