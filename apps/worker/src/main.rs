//! gamify-worker binary: configuration from the environment, logs to stdout, SIGTERM/Ctrl-C stop.

use std::process::ExitCode;

use gamify_worker::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// glibc's malloc was a fifth of the CPU profile under load (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let result = async {
        let config = Config::from_env()?;
        let shutdown = CancellationToken::new();
        tokio::spawn(gamify_common::shutdown::cancel_on_signal(shutdown.clone()));
        gamify_worker::run(config, shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "gamify-worker stopped");
            eprintln!("gamify-worker: {err}");
            ExitCode::FAILURE
        }
    }
}
