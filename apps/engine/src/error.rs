//! The crate's one error type.

use gamify_common::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Consumer(#[from] gamify_worker::Error),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
