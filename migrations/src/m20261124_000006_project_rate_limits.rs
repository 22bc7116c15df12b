use crate::SqlMigration;

/// A project's own ceiling on accepted events (events per second with a burst); NULL means the
/// gateway's default (`PROJECT_RATE_LIMIT_PER_SECOND`, `PROJECT_RATE_LIMIT_BURST`).
const UP: &str = r#"
ALTER TABLE projects
    ADD COLUMN rate_limit_events_per_second integer CHECK (rate_limit_events_per_second > 0),
    ADD COLUMN rate_limit_burst integer CHECK (rate_limit_burst > 0),
    ADD CONSTRAINT projects_rate_limit_complete
        CHECK ((rate_limit_events_per_second IS NULL) = (rate_limit_burst IS NULL));
"#;

const DOWN: &str = r#"
ALTER TABLE projects
    DROP CONSTRAINT IF EXISTS projects_rate_limit_complete,
    DROP COLUMN IF EXISTS rate_limit_events_per_second,
    DROP COLUMN IF EXISTS rate_limit_burst;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261124_000006_project_rate_limits",
        up: UP,
        down: DOWN,
    }
}
