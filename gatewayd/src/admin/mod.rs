//! The admin listener (`server.admin_listen`, default 127.0.0.1:9090).
//!
//! - `/healthz`, `/readyz`, `/metrics` (Prometheus text format): open, for probes and scrapers.
//!   `/readyz` answers 503 while the node shuts down or drains, so load balancers stop sending
//!   new clients here.
//! - `/admin/v1/...`: the admin API that `chatctl` drives, behind the bearer token
//!   `server.admin_token` ([`auth`]). Errors have the REST API's shape,
//!   `{"error":{"code","message"}}`. Documented in `docs/openapi.json` (tag `admin`).
//!
//! What it covers: this node and the cluster's nodes ([`nodes`]), draining ([`drain`]),
//! live connections ([`conns`]), accounts ([`users`]), groups ([`groups`]), a smoke-test send
//! through the real routing path ([`messages`]), a live NDJSON stream of traffic metadata
//! ([`tail`], `chatctl msg tail`) and, in cluster mode, Redis/Kafka health and where Kafka is,
//! for `chatctl topic lag` ([`cluster`]).
//!
//! Scope in cluster mode: any node answers for the cluster. Anything stored (users, groups,
//! sends, disabling) and the node list (Redis) are shared; connections, kicks, drains and each
//! node's live figures are asked of the node concerned, or of every node at once, through
//! their admin listeners ([`peers`]); consumer lag is read from Kafka ([`cluster`]).

pub mod auth;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod conns;
pub mod drain;
pub mod groups;
pub mod messages;
pub mod nodes;
#[cfg(feature = "cluster")]
pub mod peers;
pub mod tail;
pub mod users;

use crate::http::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use switchboard_core::ids::UserId;

pub use drain::AdminState;

/// Close code of a connection kicked by an operator (`chatctl conn kick`): the client may
/// reconnect at once (its tokens still work); 1008 is kept for accounts that may not.
pub const CLOSE_KICKED: u16 = 4000;

/// A node that did not answer a cluster-wide request, as merged answers name it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Missing {
    /// Node id.
    pub node_id: String,
    /// Why.
    pub error: String,
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once (later gateways in the same process,
/// as in tests, share it).
pub fn install_metrics() {
    PROMETHEUS.get_or_init(|| {
        let handle = PrometheusBuilder::new().install_recorder().ok();
        switchboard_core::metrics::describe();
        handle
    });
}

/// The Prometheus text of this process's metrics.
pub(crate) fn render_metrics() -> String {
    let mut text = PROMETHEUS.get().and_then(|h| h.as_ref()).map(|h| h.render()).unwrap_or_default();
    text.push_str(&switchboard_core::metrics::process_text());
    text
}

/// Admin routes: the open probes and the token-protected `/admin/v1` API.
pub fn routes(state: Arc<AppState>) -> axum::Router {
    nodes::spawn_rate_sampler(state.clone());
    let api = axum::Router::new()
        .route("/node", get(nodes::this_node))
        .route("/nodes", get(nodes::list))
        .route("/cluster", get(nodes::cluster_status))
        .route("/lag", get(nodes::lag))
        .route("/nodes/{node}/drain", post(drain::drain))
        .route("/nodes/{node}/undrain", post(drain::undrain))
        .route("/conns", get(conns::list))
        .route("/conns/{conn}/kick", post(conns::kick))
        .route("/users", post(users::create))
        .route("/users/{user}", get(users::show).delete(users::delete))
        .route("/users/{user}/disable", post(users::disable))
        .route("/users/{user}/enable", post(users::enable))
        .route("/users/{user}/kick", post(conns::kick_user))
        .route("/groups/{group}", get(groups::show))
        .route("/messages", post(messages::send))
        .route("/tail", get(tail::tail))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .nest("/admin/v1", api)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when not shutting down or draining and the store answers a read.
async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "shutting_down" })));
    }
    if s.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining", "node": s.node, "connections": s.registry.len() })),
        );
    }
    match s.store.user(UserId(0)).await {
        Ok(_) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "node": s.node, "connections": s.registry.len() })),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "store_unavailable", "error": e.to_string() }))),
    }
}

async fn metrics_text() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics())
}
