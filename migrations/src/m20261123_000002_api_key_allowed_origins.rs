use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_api_key_allowed_origins"
    }
}

/// Browser origins a publishable key may be used from; empty means any origin.
const UP: &str = r#"
ALTER TABLE api_keys ADD COLUMN allowed_origins jsonb NOT NULL DEFAULT '[]'::jsonb
    CHECK (jsonb_typeof(allowed_origins) = 'array');
"#;

const DOWN: &str = "ALTER TABLE api_keys DROP COLUMN IF EXISTS allowed_origins;";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
