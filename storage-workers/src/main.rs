//! `storage-workers`: the cluster's storage-worker process. Parses flags, loads the shared
//! configuration, runs [`storage_workers::worker::run`] until SIGTERM or Ctrl-C (bounded by
//! `shutdown.grace_period` once signalled), and maps the result to an exit code:
//! 0 stopped, 69 a service unavailable or the worker failed, 78 bad configuration.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard_core::config::{Config, OsEnv};
use switchboard_core::error::ErrorCode;
use tokio_util::sync::CancellationToken;

/// Exit code when PostgreSQL or Kafka is unavailable or the worker failed (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a bad configuration (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// Switchboard storage workers: persist the side topic's writes (device cursors, last seen)
/// to PostgreSQL. Reads the same configuration as gatewayd (its `[cluster]` section).
///
/// Exit codes: 0 stopped, 69 unavailable or failed, 78 bad configuration.
#[derive(Parser, Debug)]
#[command(name = "storage-workers", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (78 if invalid).
    #[arg(long)]
    check_config: bool,
    /// Any config key: --set cluster.postgres_pool=8 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storage-workers: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        eprintln!("storage-workers: configuration OK");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("storage-workers: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(cfg))
}

/// The configuration: defaults < `--config` < `SWITCHBOARD_*` env < `--set`, validated.
fn load(cli: &Cli) -> Result<Config, String> {
    let overrides = switchboard_core::config::parse_overrides(&cli.set).map_err(|e| e.to_string())?;
    Config::load(cli.config.as_deref(), &OsEnv, &overrides).map_err(|e| e.to_string())
}

/// Runs the worker until it fails or a signal stops it.
async fn serve(cfg: Config) -> ExitCode {
    let grace = cfg.shutdown.grace_period;
    let stop = CancellationToken::new();
    let mut worker = tokio::spawn(storage_workers::worker::run(cfg, stop.clone()));
    let outcome = tokio::select! {
        r = &mut worker => r,
        () = signalled() => {
            tracing::info!("shutting down");
            stop.cancel();
            match tokio::time::timeout(grace, &mut worker).await {
                Ok(r) => r,
                Err(_) => {
                    // Unacknowledged side records are replayed by the next member: nothing is lost.
                    tracing::warn!(?grace, "grace period over; exiting before the worker finished");
                    worker.abort();
                    return ExitCode::SUCCESS;
                }
            }
        }
    };
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e, code = e.code(), "storage worker failed");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(e) => {
            tracing::error!(error = %e, "storage worker task panicked");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C. A signal that cannot be listened for is logged and
/// ignored, never taken as a request to stop.
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                () = ctrl_c => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            ctrl_c.await;
        }
    }
}
