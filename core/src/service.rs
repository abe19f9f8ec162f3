//! The shell shared by the cluster's worker processes (`router`, `storage-workers`): flags,
//! configuration, logging, an admin listener (`/healthz`, `/readyz`, `/metrics`), signals and
//! exit codes. Each binary's `main` is a [`ServiceArgs`] and one call to [`main`].
//!
//! Exit codes: 0 stopped, 1 the admin listener could not bind, 69 a service unavailable or
//! the worker failed (EX_UNAVAILABLE), 78 bad configuration (EX_CONFIG).

use crate::config::{parse_overrides, Config, OsEnv};
use crate::error::ErrorCode;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

/// Exit code when a service is unavailable or the worker failed (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a bad configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

static PROMETHEUS: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();

/// The flags every worker process takes.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// TOML configuration file (the same file gatewayd reads; its `[cluster]` section).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit (78 if invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Any config key: --set cluster.postgres_pool=8 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Admin listener for /healthz, /readyz and /metrics (`off` disables it).
    #[arg(long, value_name = "ADDR|off")]
    pub admin_listen: Option<String>,
}

/// Runs a worker process: loads the configuration (defaults < `--config` < `SWITCHBOARD_*`
/// env < `--set`), serves the admin listener (on `--admin-listen`, else `default_admin`),
/// runs `run` until it returns or SIGTERM/Ctrl-C cancels its token (then waits at most
/// `shutdown.grace_period`), and maps the outcome to an exit code.
pub fn main<F, Fut, E>(name: &'static str, args: ServiceArgs, default_admin: &str, run: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + ErrorCode + Send + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cfg = match parse_overrides(&args.set).and_then(|o| Config::load(args.config.as_deref(), &OsEnv, &o)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let admin = match args.admin_listen.as_deref().unwrap_or(default_admin) {
        "off" => None,
        a => match a.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("{name}: --admin-listen {a:?}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    if args.check_config {
        eprintln!("{name}: configuration OK");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(name, cfg, admin, run))
}

async fn serve<F, Fut, E>(name: &'static str, cfg: Config, admin: Option<SocketAddr>, run: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + ErrorCode + Send + 'static,
{
    PROMETHEUS.get_or_init(|| {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok();
        crate::metrics::describe();
        handle
    });
    let stop = CancellationToken::new();
    if let Some(addr) = admin {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind the admin listener");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(%addr, "{name} admin listener");
        let s = stop.clone();
        tokio::spawn(async move {
            let app = admin_routes(s.clone());
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await {
                tracing::error!(%error, "admin listener failed");
            }
        });
    }
    let grace = cfg.shutdown.grace_period;
    let mut worker = tokio::spawn(run(cfg, stop.clone()));
    let outcome = tokio::select! {
        r = &mut worker => r,
        () = signalled() => {
            tracing::info!("shutting down");
            crate::health::set_ready(false);
            stop.cancel();
            match tokio::time::timeout(grace, &mut worker).await {
                Ok(r) => r,
                Err(_) => {
                    // What was not acknowledged is replayed by the next group member.
                    tracing::warn!(?grace, "grace period over; exiting before the worker finished");
                    worker.abort();
                    return ExitCode::SUCCESS;
                }
            }
        }
    };
    stop.cancel();
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e, code = e.code(), "{name} failed");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(e) => {
            tracing::error!(error = %e, "{name} task panicked");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn admin_routes(stop: CancellationToken) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Json;
    use serde_json::json;
    axum::Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route(
            "/readyz",
            get(move || async move {
                if stop.is_cancelled() {
                    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "shutting_down" })))
                } else if crate::health::is_ready() {
                    (StatusCode::OK, Json(json!({ "status": "ready" })))
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "starting" })))
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                let mut body = PROMETHEUS.get().and_then(|h| h.as_ref()).map(|h| h.render()).unwrap_or_default();
                body.push_str(&crate::metrics::process_text());
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
            }),
        )
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
