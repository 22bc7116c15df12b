//! gamify-engine binary: configuration from the environment, logs to stdout, SIGTERM/Ctrl-C stop.

use std::process::ExitCode;

use gamify_engine::Config;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    gamify_common::logging::init();
    let result = async {
        let config = Config::from_env()?;
        let shutdown = CancellationToken::new();
        tokio::spawn(gamify_common::shutdown::cancel_on_signal(shutdown.clone()));
        gamify_engine::run(config, shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "gamify-engine stopped");
            eprintln!("gamify-engine: {err}");
            ExitCode::FAILURE
        }
    }
}
