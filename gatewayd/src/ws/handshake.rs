//! Authenticates and upgrades a WebSocket request.
//!
//! The token comes as `Authorization: Bearer`, `?token=`, or a `Sec-WebSocket-Protocol` value
//! `bearer.<token>`. A bad token is answered with HTTP 401 before any upgrade. The upgrade
//! itself is plain hyper (no WebSocket library): after the 101, [`super::conn::run`] owns the
//! socket with Switchboard's own frame codec.

use super::conn;
use super::outbox::ConnShared;
use crate::auth::{bearer, verify_access};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use switchboard_core::auth::AuthError;
use switchboard_core::frame::accept_key;
use switchboard_core::ids::{ConnId, DeviceId};

/// The subprotocol a client may offer alongside its bearer token; echoed when offered.
pub const SUBPROTOCOL: &str = "switchboard.v1";
/// Prefix of the bearer-token subprotocol value.
pub const BEARER_PREFIX: &str = "bearer.";

/// `?token=&deviceId=`
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsQuery {
    token: Option<String>,
    device_id: Option<String>,
}

/// `GET /ws` and `GET /messages/send`.
pub async fn upgrade(State(s): State<Arc<AppState>>, ApiQuery(q): ApiQuery<WsQuery>, mut req: Request) -> Result<Response, ApiError> {
    let headers = req.headers();
    let offered = offered_protocols(headers);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_owned)
        .or(q.token)
        .or_else(|| offered.iter().find_map(|p| p.strip_prefix(BEARER_PREFIX)).map(str::to_owned))
        .ok_or(AuthError::Missing)?;
    let auth = verify_access(&s, &token).await?;
    let key = check_upgrade(headers)?;
    let device = match q.device_id {
        Some(d) if valid_device(&d) => DeviceId(d),
        Some(_) => return Err(ApiError::invalid("deviceId must be 1-64 of [A-Za-z0-9._:-]")),
        None => auth.device,
    };
    if s.shutdown.is_cancelled() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "server is shutting down"));
    }
    if s.draining.load(Ordering::Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "this node is draining; connect to another node"));
    }
    if s.registry.len() >= s.cfg.server.max_connections {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", "connection limit reached"));
    }
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::invalid("connection cannot be upgraded"))?;
    let bearer_offered = offered.iter().find_map(|p| p.strip_prefix(BEARER_PREFIX));
    let chosen = choose_protocol(offered.iter().any(|p| p == SUBPROTOCOL), bearer_offered);
    let id = ConnId(s.next_conn.fetch_add(1, Ordering::Relaxed));
    let shared = Arc::new(ConnShared::new(id, auth.user, device, s.cfg.ws.outbound_queue_bytes));
    let state = s.clone();
    s.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => conn::run(TokioIo::new(upgraded), state, shared).await,
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key(key.as_bytes())).expect("base64 is a valid header"));
    if let Some(p) = chosen.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(res)
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The subprotocol to answer with: ours when offered, else the bearer value (browsers fail the
/// handshake when they offered protocols and none is selected). Shared with `accept`'s fast path.
pub(crate) fn choose_protocol(offered_ours: bool, bearer_token: Option<&str>) -> Option<String> {
    match (offered_ours, bearer_token) {
        (true, _) => Some(SUBPROTOCOL.to_owned()),
        (false, Some(t)) => Some(format!("{BEARER_PREFIX}{t}")),
        (false, None) => None,
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn check_upgrade(headers: &HeaderMap) -> Result<String, ApiError> {
    if !header_has(headers, header::CONNECTION, "upgrade") || !header_has(headers, header::UPGRADE, "websocket") {
        return Err(ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", "this endpoint speaks WebSocket only"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err(ApiError::new(StatusCode::UPGRADE_REQUIRED, "unsupported_version", "Sec-WebSocket-Version must be 13"));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| k.len() == 24)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid("missing or invalid Sec-WebSocket-Key"))
}

/// A `deviceId` parameter's allowed form.
pub(crate) fn valid_device(d: &str) -> bool {
    (1..=64).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}
