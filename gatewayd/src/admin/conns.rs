//! Live WebSocket connections of the answering node: list and kick.

use super::drain::this_node_only;
use super::users::{lookup, Who};
use super::CLOSE_KICKED;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use crate::ws::outbox::ConnShared;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_core::ids::{ConnId, UserId};

/// Reason of a kicked connection's close frame (code [`CLOSE_KICKED`]).
pub const KICK_REASON: &str = "kicked by an operator";
/// Default and largest page of `GET /admin/v1/conns`.
const LIMIT: (usize, usize) = (1000, 100_000);

/// One connection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnView {
    /// Id, unique within the node's lifetime.
    pub conn_id: ConnId,
    /// Node holding it.
    pub node_id: String,
    /// Authenticated user.
    pub user_id: UserId,
    /// Device (login session).
    pub device_id: String,
    /// Seconds since the client was last heard from (frame or pong).
    pub idle_secs: u32,
    /// Bytes queued for it.
    pub queued_bytes: usize,
}

fn view(s: &AppState, c: &ConnShared) -> ConnView {
    ConnView {
        conn_id: c.id,
        node_id: s.node.0.clone(),
        user_id: c.user,
        device_id: c.device.0.clone(),
        idle_secs: c.idle_secs(),
        queued_bytes: c.queued_bytes(),
    }
}

/// `GET /admin/v1/conns` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnQuery {
    node: Option<String>,
    user: Option<i64>,
    limit: Option<usize>,
}

/// `GET /admin/v1/conns` answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnList {
    node_id: String,
    /// Matching connections on this node (may exceed the listed ones).
    total: usize,
    truncated: bool,
    conns: Vec<ConnView>,
}

/// `GET /admin/v1/conns?node=&user=&limit=`: this node's connections, by id.
pub async fn list(State(s): State<Arc<AppState>>, ApiQuery(q): ApiQuery<ConnQuery>) -> Result<Json<ConnList>, ApiError> {
    if let Some(node) = &q.node {
        this_node_only(&s, node)?;
    }
    let limit = q.limit.unwrap_or(LIMIT.0).clamp(1, LIMIT.1);
    let mut all = Vec::new();
    match q.user {
        Some(u) => s.registry.for_user(UserId(u), |c| all.push(c.clone())),
        None => s.registry.for_each(|c| all.push(c.clone())),
    }
    all.sort_unstable_by_key(|c| c.id);
    let total = all.len();
    let conns = all.iter().take(limit).map(|c| view(&s, c)).collect();
    Ok(Json(ConnList { node_id: s.node.0.clone(), total, truncated: total > limit, conns }))
}

/// What a kick closed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kicked {
    node_id: String,
    /// Close code sent.
    code: u16,
    kicked: Vec<ConnView>,
}

/// `POST /admin/v1/conns/{conn}/kick`: closes one connection with 4000.
pub async fn kick(State(s): State<Arc<AppState>>, ApiPath(conn): ApiPath<u64>) -> Result<Json<Kicked>, ApiError> {
    let c = s.registry.conn(ConnId(conn)).ok_or_else(|| ApiError::not_found("connection"))?;
    c.close(CLOSE_KICKED, KICK_REASON);
    tracing::warn!(conn_id = %c.id, user_id = %c.user, "connection kicked by an operator");
    Ok(Json(Kicked { node_id: s.node.0.clone(), code: CLOSE_KICKED, kicked: vec![view(&s, &c)] }))
}

/// `POST /admin/v1/users/{user}/kick`: closes every connection of the user on this node
/// (an empty list when they have none here; 404 for an unknown user).
pub async fn kick_user(State(s): State<Arc<AppState>>, ApiPath(who): ApiPath<String>) -> Result<Json<Kicked>, ApiError> {
    let user = lookup(&s, Who::parse(&who)?).await?.user.user_id;
    let mut kicked = Vec::new();
    s.registry.for_user(user, |c| {
        c.close(CLOSE_KICKED, KICK_REASON);
        kicked.push(view(&s, c));
    });
    tracing::warn!(user_id = %user, connections = kicked.len(), "user's connections kicked by an operator");
    Ok(Json(Kicked { node_id: s.node.0.clone(), code: CLOSE_KICKED, kicked }))
}
