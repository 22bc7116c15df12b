use sea_orm::entity::prelude::*;

/// Row-level security: visible only inside [`crate::Db::tenant`]. Partitioned monthly by
/// `occurred_at`, which is therefore part of the primary key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub occurred_at: DateTimeUtc,
    pub message_id: String,
    pub event_type: String,
    pub user_id: Option<Uuid>,
    pub anonymous_id: Option<String>,
    pub payload: Json,
    pub context: Json,
    pub key_id: Uuid,
    pub key_type: String,
    /// `pending`, `processed` or `failed`.
    pub status: String,
    pub error_details: Option<String>,
    pub received_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub processed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
