use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000003_partition_upkeep_by_the_application"
    }
}

/// The application role may not create tables, yet the worker should keep monthly partitions
/// ahead of time without an operator. The function runs with its owner's rights instead, with a
/// fixed search_path so a caller cannot redirect what it creates; only roles granted EXECUTE (the
/// application role, by `gamify-api migrate`) may call it.
const UP: &str = r#"
ALTER FUNCTION gamify_ensure_event_partitions(integer) SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION gamify_ensure_event_partitions(integer) FROM PUBLIC;
"#;

const DOWN: &str = r#"
ALTER FUNCTION gamify_ensure_event_partitions(integer) SECURITY INVOKER RESET search_path;
GRANT EXECUTE ON FUNCTION gamify_ensure_event_partitions(integer) TO PUBLIC;
"#;

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
