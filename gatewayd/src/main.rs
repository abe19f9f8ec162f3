//! `gatewayd`: parses flags, loads config, sets up logging, runs the gateway until SIGTERM or
//! Ctrl-C, and maps the outcome to an exit code (78 for bad configuration).

mod alloc;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard_core::config::{Config, OsEnv};

/// Exit code for a bad configuration (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// Switchboard gateway. With no configuration it runs the whole messenger (standalone mode)
/// on 127.0.0.1:8080, admin on 127.0.0.1:9090, data in ./data.
///
/// Precedence: defaults < --config file < SWITCHBOARD_* env < flags.
#[derive(Parser, Debug)]
#[command(name = "gatewayd", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print the effective one, and exit (78 if invalid).
    #[arg(long)]
    check_config: bool,
    /// Client listener (REST + WebSocket), e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener (/healthz, /readyz, /metrics).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Data directory (database, media, development key).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Any config key: --set ws.ping_interval=10s (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

impl Cli {
    fn overrides(&self) -> Result<Vec<(String, String)>, String> {
        let mut o = Vec::new();
        if let Some(v) = &self.listen {
            o.push(("server.listen".into(), format!("\"{v}\"")));
        }
        if let Some(v) = &self.admin_listen {
            o.push(("server.admin_listen".into(), format!("\"{v}\"")));
        }
        if let Some(v) = &self.data_dir {
            o.push(("server.data_dir".into(), format!("{:?}", v.display().to_string())));
        }
        o.extend(switchboard_core::config::parse_overrides(&self.set).map_err(|e| e.to_string())?);
        Ok(o)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let cfg = match cli.overrides().map_err(|e| e.to_string()).and_then(|o| {
        Config::load(cli.config.as_deref(), &OsEnv, &o).map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        match toml::to_string(&cfg) {
            Ok(t) => println!("{t}"),
            Err(e) => eprintln!("gatewayd: {e}"),
        }
        eprintln!("gatewayd: configuration OK");
        return ExitCode::SUCCESS;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatewayd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> ExitCode {
    let gw = match gatewayd::start(cfg).await {
        Ok(gw) => gw,
        Err(e) => {
            tracing::error!(error = %e, "gatewayd failed to start");
            return ExitCode::FAILURE;
        }
    };
    let token = gw.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
    gw.wait().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
