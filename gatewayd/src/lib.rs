//! `gatewayd`: Switchboard's front door.
//!
//! It serves the REST API and the WebSocket protocol on one listener and the admin endpoints
//! (`/healthz`, `/readyz`, `/metrics`) on another. In standalone mode it also runs the router
//! and the embedded store in-process, so one process is the whole messenger.
//!
//! ```no_run
//! # async fn f() -> Result<(), gatewayd::GatewayError> {
//! let gw = gatewayd::start(switchboard_core::config::Config::default()).await?;
//! println!("serving on {}", gw.http_addr);
//! gw.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod http;
pub mod lagging;
pub mod state;
pub mod ws;

use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::config::Config;
use switchboard_core::store::StoreError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open storage: {0}")]
    Store(#[from] StoreError),
    /// The signing key could not be read or created.
    #[error("signing key: {0}")]
    Key(String),
    /// A cluster service (PostgreSQL, Redis, Kafka) could not be reached, or cluster mode is
    /// not compiled in.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A running gateway.
pub struct Gateway {
    /// Bound client address (REST + WebSocket).
    pub http_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    state: Arc<AppState>,
    /// The bus → sockets task; stopped only after the router has drained.
    delivery: tokio::task::JoinHandle<()>,
    delivery_stop: CancellationToken,
}

/// Binds the listeners, opens storage and starts serving.
///
/// # Errors
/// [`GatewayError`] when a listener cannot bind, the store cannot open or the key is unusable.
pub async fn start(cfg: Config) -> Result<Gateway, GatewayError> {
    admin::install_metrics();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut cfg = cfg;
    let listener = bind(cfg.server.listen).await?;
    let admin_listener = bind(cfg.server.admin_listen).await?;
    let http_addr = listener.local_addr().map_err(|source| GatewayError::Bind { addr: cfg.server.listen, source })?;
    let admin_addr =
        admin_listener.local_addr().map_err(|source| GatewayError::Bind { addr: cfg.server.admin_listen, source })?;
    // Other nodes' admin APIs forward to this one at the address it advertises.
    cfg.cluster.admin_advertise.get_or_insert_with(|| admin_addr.to_string());
    let state = AppState::build(cfg, shutdown.clone(), &tracker).await?;

    let delivery_stop = CancellationToken::new();
    let delivery = ws::delivery::spawn(state.clone(), delivery_stop.clone()).await;
    ws::keepalive::spawn(state.clone(), &tracker);
    #[cfg(feature = "cluster")]
    if state.cfg.mode == switchboard_core::config::Mode::Cluster {
        cluster::spawn_revocation_poll(state.clone());
    }
    let app = http::routes(state.clone());
    tracker.spawn(ws::accept::serve(listener, app, state.clone(), shutdown.clone()));
    let stop = shutdown.clone();
    let admin_app = admin::routes(state.clone());
    tracker.spawn(async move {
        let serve = axum::serve(admin_listener, admin_app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(error) = serve.await {
            tracing::error!(%error, "admin listener failed");
        }
    });
    tracing::info!(%http_addr, %admin_addr, node = %state.node, mode = ?state.cfg.mode, "gatewayd serving");
    let grace = state.cfg.shutdown.grace_period;
    Ok(Gateway { http_addr, admin_addr, shutdown, tracker, grace, state, delivery, delivery_stop })
}

/// Pending connections the kernel queues per listener (capped by `net.core.somaxconn`):
/// tokio's default of 1024 was seen as 128 here, and a connect storm then loses handshakes to a
/// full queue, each retried by the client's TCP a second later (chatbench, benches/RESULTS.md).
const LISTEN_BACKLOG: u32 = 65_535;

async fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    let err = |source| GatewayError::Bind { addr, source };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

impl Gateway {
    /// A token that, once cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Graceful shutdown: stop accepting, close every socket with 1001, route what was
    /// accepted, flush, and return once done or after the grace period.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the gateway has stopped (after its token is cancelled).
    ///
    /// Order matters: the listeners stop and the router refuses new sends; the router commits
    /// and routes every send it had accepted; the delivery task hands those acks and messages
    /// to the sockets; only then does every socket get 1001, after its queued frames.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + self.grace;
        self.state.router_tracker.close();
        if tokio::time::timeout_at(deadline, self.state.router_tracker.wait()).await.is_err() {
            tracing::warn!("grace period over while the router was draining");
        }
        self.delivery_stop.cancel();
        let _ = tokio::time::timeout_at(deadline, self.delivery).await;
        self.state.registry.close_all(switchboard_core::frame::close::GOING_AWAY, "server shutting down");
        // Parked sessions get their close frame from a task of their own.
        ws::park::resume_all(&self.state);
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_err() {
            tracing::warn!(open_connections = self.state.registry.len(), "grace period over; dropping the rest");
        }
        tracing::info!("gatewayd stopped");
    }
}
