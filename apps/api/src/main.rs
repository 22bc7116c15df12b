use std::process::ExitCode;

use gamify_api::{
    AppState,
    config::{Config, MigrateConfig},
};
use gamify_db::{Db, PoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// glibc's malloc was a fifth of the CPU profile under load (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: gamify-api [serve|migrate|openapi]

  serve    run the HTTP server (default)
  migrate  apply pending migrations as DATABASE_OWNER_URL, create the application role named in
           DATABASE_URL if missing, grant it DML, and create upcoming event partitions
  openapi  print the OpenAPI document (as served at /openapi.json and committed as
           docs/openapi.json) and exit; needs no configuration";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Config(#[from] gamify_common::ConfigError),
    #[error("migration failed: {0}")]
    Migrate(#[from] gamify_migrations::Error),
    #[error("cannot connect to Postgres (DATABASE_URL): {0}")]
    Database(#[from] gamify_db::Error),
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot render the OpenAPI document: {0}")]
    OpenApi(serde_json::Error),
    #[error("cannot start: {0}")]
    Start(#[from] gamify_api::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    gamify_common::logging::init();

    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        None | Some("serve") => serve().await,
        Some("migrate") => migrate().await,
        Some("openapi") => gamify_api::openapi::document_json()
            .map(|json| print!("{json}"))
            .map_err(Error::OpenApi),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "gamify-api stopped");
            eprintln!("gamify-api: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate() -> Result<(), Error> {
    let config = MigrateConfig::from_env()?;
    gamify_migrations::migrate(&config.database_owner_url, &config.application_role).await?;
    tracing::info!(application_role = %config.application_role.name, "migrations applied");
    Ok(())
}

async fn serve() -> Result<(), Error> {
    let config = Config::from_env()?;
    if config.settings.admin_token.generated {
        // Dev mode only: the operator needs the token to call the management API.
        println!(
            "GAMIFY_DEV_MODE: generated ADMIN_TOKEN={}",
            config.settings.admin_token.value
        );
    }
    let db = Db::connect(&config.database_url, PoolOptions::default()).await?;
    let listener = TcpListener::bind(("0.0.0.0", config.port))
        .await
        .map_err(|source| Error::Bind {
            port: config.port,
            source,
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(gamify_common::shutdown::cancel_on_signal(shutdown.clone()));
    let state = AppState::new(db.clone(), &config.settings, &shutdown)?;
    // Config's Debug redacts passwords and secrets.
    tracing::info!(port = config.port, config = ?config, "gamify-api listening");
    gamify_api::serve(listener, state, shutdown)
        .await
        .map_err(Error::Serve)?;
    db.close().await?;
    tracing::info!("gamify-api stopped cleanly");
    Ok(())
}
