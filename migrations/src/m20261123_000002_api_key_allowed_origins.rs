use crate::SqlMigration;

/// Browser origins a publishable key may be used from; empty means any origin.
const UP: &str = r#"
ALTER TABLE api_keys ADD COLUMN allowed_origins jsonb NOT NULL DEFAULT '[]'::jsonb
    CHECK (jsonb_typeof(allowed_origins) = 'array');
"#;

const DOWN: &str = "ALTER TABLE api_keys DROP COLUMN IF EXISTS allowed_origins;";

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261123_000002_api_key_allowed_origins",
        up: UP,
        down: DOWN,
    }
}
