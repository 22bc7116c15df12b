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

const USAGE: &str =
    "usage: gamify-api [serve|migrate|openapi|users create --email E --organization O [--role R]]

  serve    run the HTTP server (default)
  migrate  apply pending migrations as DATABASE_OWNER_URL, create the application role named in
           DATABASE_URL if missing, grant it DML, and create upcoming event partitions
  openapi  print the OpenAPI document (as served at /openapi.json and committed as
           docs/openapi.json) and exit; needs no configuration
  users create --email E --organization O [--role owner|admin|developer|viewer]
           invite E into organization O (an organization's id, or the name of a new one) as R
           (default owner) and print the single-use link that sets the password and signs in;
           the server's configuration (DATABASE_URL, PUBLIC_URL, …)";

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
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    gamify_common::logging::init();

    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        None | Some("serve") => serve().await,
        Some("migrate") => migrate().await,
        Some("users") => create_user(std::env::args().skip(2).collect()).await,
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

async fn create_user(args: Vec<String>) -> Result<(), Error> {
    let (mut email, mut organization, mut role) =
        (None, None, gamify_api::accounts::roles::Role::Owner);
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("create") {
        return Err(Error::Usage("expected `users create`".into()));
    }
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--email" => email = Some(value),
            "--organization" => organization = Some(value),
            "--role" => {
                role = gamify_api::accounts::roles::Role::parse(&value)
                    .ok_or_else(|| Error::Usage(format!("unknown role {value:?}")))?
            }
            other => return Err(Error::Usage(format!("unknown option {other:?}"))),
        }
    }
    let (Some(email), Some(organization)) = (email, organization) else {
        return Err(Error::Usage(
            "--email and --organization are required".into(),
        ));
    };
    let config = Config::from_env()?;
    let db = Db::connect(&config.database_url, PoolOptions::default()).await?;
    let invited = gamify_api::accounts::bootstrap::invite(
        &db,
        &config.settings.accounts,
        &email,
        &organization,
        role,
    )
    .await?;
    db.close().await?;
    if invited.organization_created {
        println!("created organization {}", invited.organization_id);
    }
    println!(
        "{email} is invited to organization {} as {role}. Open this link once, before {}, to set a password and sign in:\n{}",
        invited.organization_id, invited.expires_at, invited.url
    );
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
