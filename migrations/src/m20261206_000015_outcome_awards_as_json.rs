use crate::SqlMigration;

/// An outcome's awards as `json` (the text, checked to be JSON), not `jsonb`: they are written
/// once per event and only ever read back whole, so building the binary form was work for
/// nothing. The drain benchmark measured inserting 200,000 outcomes at 1.23 s with `jsonb`
/// and 0.93 s with `json`, in 15 % less space (docs/BENCHMARKS.md).
const UP: &str = r#"
ALTER TABLE engine_outcomes ALTER COLUMN awards DROP DEFAULT;
ALTER TABLE engine_outcomes ALTER COLUMN awards TYPE json USING awards::json;
ALTER TABLE engine_outcomes ALTER COLUMN awards SET DEFAULT '[]'::json;
"#;

const DOWN: &str = r#"
ALTER TABLE engine_outcomes ALTER COLUMN awards DROP DEFAULT;
ALTER TABLE engine_outcomes ALTER COLUMN awards TYPE jsonb USING awards::jsonb;
ALTER TABLE engine_outcomes ALTER COLUMN awards SET DEFAULT '[]'::jsonb;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261206_000015_outcome_awards_as_json",
        up: UP,
        down: DOWN,
    }
}
