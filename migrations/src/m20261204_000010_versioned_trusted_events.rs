use crate::SqlMigration;

/// A project's trusted-event list gets a version, bumped on every change, and the lists it replaced
/// are kept with the instant from which no gateway applies them any more. The gateway stamps the
/// version it applied into each envelope, so the worker judges an event by the very list the
/// gateway judged it by, however late it reads it.
const UP: &str = r#"
ALTER TABLE projects ADD COLUMN trusted_events_version integer NOT NULL DEFAULT 1;

CREATE TABLE superseded_trusted_events (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version integer NOT NULL,
    trusted_events jsonb NOT NULL,
    -- From this instant on every gateway applies a newer version.
    superseded_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, version)
);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS superseded_trusted_events;
ALTER TABLE projects DROP COLUMN IF EXISTS trusted_events_version;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261204_000010_versioned_trusted_events",
        up: UP,
        down: DOWN,
    }
}
