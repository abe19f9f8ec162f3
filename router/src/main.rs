//! `router`: the cluster's routing process. Parses flags, loads the shared configuration,
//! runs [`router::cluster::run`] until SIGTERM, maps the result to an exit code.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard_core::config::{parse_overrides, Config, OsEnv};

/// Switchboard router: consumes the inbound topic, stores, sequences and fans out messages.
/// Reads the same configuration as gatewayd (its `[cluster]` section).
#[derive(Parser, Debug)]
#[command(name = "router", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (78 if invalid).
    #[arg(long)]
    check_config: bool,
    /// Any config key: --set cluster.kafka_brokers='"host:9092"' (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cfg = match parse_overrides(&cli.set).and_then(|o| Config::load(cli.config.as_deref(), &OsEnv, &o)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("router: {e}");
            return ExitCode::from(78);
        }
    };
    if cli.check_config {
        eprintln!("router: configuration OK");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("router: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            s.cancel();
        });
        match router::cluster::run(cfg, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "router failed");
                ExitCode::from(69)
            }
        }
    })
}
