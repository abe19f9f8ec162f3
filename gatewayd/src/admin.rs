//! The admin listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text format).

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use switchboard_core::ids::UserId;

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

/// Admin routes.
pub fn routes(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when not shutting down and the store answers a read.
async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "shutting_down" })));
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
    let body = PROMETHEUS.get().and_then(|h| h.as_ref()).map(|h| h.render()).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
