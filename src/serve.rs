//! `zentrale serve`: starts the runtime, the listeners and the wiring between the crates, and
//! shuts them down gracefully on Ctrl-C / SIGTERM.

use std::path::Path;

use anyhow::Context as _;

use crate::config::{Config, LogFormat};

/// Loads the configuration, starts everything, and blocks until shutdown.
pub fn run(config_path: Option<&Path>, demo: bool) -> anyhow::Result<()> {
    let config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, demo))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    tracing::info!(demo, data_dir = %config.data_dir.display(), "zentrale starting");
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what systemd sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
