//! gamify-worker. For now it loads its configuration, connects to Postgres as the application role,
//! reports ready and waits for SIGTERM or Ctrl-C; consuming events is the next step.

use std::process::ExitCode;

use gamify_common::config::{self, ConfigError};
use gamify_db::{Db, PoolOptions};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to Postgres (DATABASE_URL): {0}")]
    Database(#[from] gamify_db::Error),
}

struct Config {
    database_url: String,
}

impl Config {
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: config::postgres_url("DATABASE_URL")?,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "gamify-worker stopped");
            eprintln!("gamify-worker: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let config = Config::from_env()?;
    let db = Db::connect(&config.database_url, PoolOptions::default()).await?;
    db.ping().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(gamify_common::shutdown::cancel_on_signal(shutdown.clone()));
    tracing::info!("gamify-worker ready");
    shutdown.cancelled().await;
    db.close().await?;
    tracing::info!("gamify-worker stopped cleanly");
    Ok(())
}
