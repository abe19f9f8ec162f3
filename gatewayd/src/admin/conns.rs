//! Live WebSocket connections: list and kick.
//!
//! Standalone, and on a node that a peer forwarded the request to, the answering node's own
//! registry. Cluster mode: every live node's ([`super::peers`]): a listing merges all nodes'
//! connections (or asks the one named by `node`); a kick goes to the node holding the
//! connection (`node`, or the one node whose registry has that id: ids are per node, so two
//! nodes holding the same id answer 409 until `node` says which); a user's kick closes their
//! connections on every node.

use super::drain::this_node_only;
use super::users::{lookup, Who};
use super::CLOSE_KICKED;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use crate::ws::outbox::ConnShared;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_core::ids::{ConnId, UserId};

/// Reason of a kicked connection's close frame (code [`CLOSE_KICKED`]).
pub const KICK_REASON: &str = "kicked by an operator";
/// Default and largest page of `GET /admin/v1/conns`.
const LIMIT: (usize, usize) = (1000, 100_000);

/// One connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Only this connection id.
    conn: Option<u64>,
    limit: Option<usize>,
}

/// `GET /admin/v1/conns` answer.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnList {
    /// The node that answered.
    node_id: String,
    /// Matching connections (may exceed the listed ones).
    total: usize,
    truncated: bool,
    /// By node id, then connection id.
    conns: Vec<ConnView>,
    /// Cluster listing: the nodes that did not answer (their connections are missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unreachable: Vec<super::Missing>,
}

/// `GET /admin/v1/conns?node=&user=&conn=&limit=`: connections by node and id; cluster mode,
/// every node's unless `node` names one.
pub async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ApiQuery(q): ApiQuery<ConnQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(LIMIT.0).clamp(1, LIMIT.1);
    #[cfg(feature = "cluster")]
    if super::peers::fans_out(&s, &headers) {
        let path = format!("/conns?{}", raw.as_deref().unwrap_or_default());
        match q.node.as_deref() {
            Some(node) if node != s.node.0 => return super::peers::forward(&s, node, axum::http::Method::GET, &path, None).await,
            Some(_) => {}
            None => return Ok(Json(cluster_list(&s, &q, &path, limit).await?).into_response()),
        }
    }
    let _ = (&headers, &raw);
    if let Some(node) = &q.node {
        this_node_only(&s, node)?;
    }
    Ok(Json(local_list(&s, &q, limit)).into_response())
}

fn local_list(s: &AppState, q: &ConnQuery, limit: usize) -> ConnList {
    let mut all = Vec::new();
    match (q.conn, q.user) {
        (Some(id), _) => all.extend(s.registry.conn(ConnId(id)).filter(|c| q.user.is_none_or(|u| c.user == UserId(u)))),
        (None, Some(u)) => s.registry.for_user(UserId(u), |c| all.push(c.clone())),
        (None, None) => s.registry.for_each(|c| all.push(c.clone())),
    }
    all.sort_unstable_by_key(|c| c.id);
    let total = all.len();
    let conns = all.iter().take(limit).map(|c| view(s, c)).collect();
    ConnList { node_id: s.node.0.clone(), total, truncated: total > limit, conns, unreachable: Vec::new() }
}

/// This node's listing merged with every other live node's answer to the same query.
#[cfg(feature = "cluster")]
async fn cluster_list(s: &AppState, q: &ConnQuery, path: &str, limit: usize) -> Result<ConnList, ApiError> {
    let mut merged = local_list(s, q, limit);
    for (peer, answer) in super::peers::gather(s, axum::http::Method::GET, path).await? {
        match answer.and_then(|v| serde_json::from_value::<ConnList>(v).map_err(|e| e.to_string())) {
            Ok(l) => {
                merged.total += l.total;
                merged.conns.extend(l.conns);
            }
            Err(error) => merged.unreachable.push(super::Missing { node_id: peer.node, error }),
        }
    }
    merged.conns.sort_by(|a, b| (&a.node_id, a.conn_id).cmp(&(&b.node_id, b.conn_id)));
    merged.conns.truncate(limit);
    merged.truncated = merged.total > merged.conns.len();
    Ok(merged)
}

/// What a kick closed.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kicked {
    /// The node that answered.
    node_id: String,
    /// Close code sent.
    code: u16,
    kicked: Vec<ConnView>,
    /// Cluster: the nodes that did not answer (a user's connections there are still open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unreachable: Vec<super::Missing>,
}

/// `POST /admin/v1/conns/{conn}/kick` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KickQuery {
    node: Option<String>,
}

/// `POST /admin/v1/conns/{conn}/kick?node=`: closes one connection with 4000.
pub async fn kick(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(conn): ApiPath<u64>,
    ApiQuery(q): ApiQuery<KickQuery>,
) -> Result<Response, ApiError> {
    #[cfg(feature = "cluster")]
    if super::peers::fans_out(&s, &headers) {
        let path = format!("/conns/{conn}/kick");
        let here = s.registry.conn(ConnId(conn)).is_some();
        match q.node.as_deref() {
            Some(node) if node != s.node.0 => return super::peers::forward(&s, node, axum::http::Method::POST, &path, None).await,
            None if !here => return kick_elsewhere(&s, conn, &path).await,
            _ => {}
        }
    }
    let _ = &headers;
    if let Some(node) = &q.node {
        this_node_only(&s, node)?;
    }
    let c = s.registry.conn(ConnId(conn)).ok_or_else(|| ApiError::not_found("connection"))?;
    c.close(CLOSE_KICKED, KICK_REASON);
    tracing::warn!(conn_id = %c.id, user_id = %c.user, "connection kicked by an operator");
    let kicked = Kicked { node_id: s.node.0.clone(), code: CLOSE_KICKED, kicked: vec![view(&s, &c)], unreachable: Vec::new() };
    Ok(Json(kicked).into_response())
}

/// Cluster: a connection id this node does not hold goes to the one node that does.
#[cfg(feature = "cluster")]
async fn kick_elsewhere(s: &AppState, conn: u64, path: &str) -> Result<Response, ApiError> {
    use axum::http::{Method, StatusCode};
    let mut holders = Vec::new();
    let mut silent = Vec::new();
    for (peer, answer) in super::peers::gather(s, Method::GET, &format!("/conns?conn={conn}")).await? {
        match answer.and_then(|v| serde_json::from_value::<ConnList>(v).map_err(|e| e.to_string())) {
            Ok(l) if l.total > 0 => holders.push(peer.node),
            Ok(_) => {}
            Err(_) => silent.push(peer.node),
        }
    }
    match holders.as_slice() {
        [one] => super::peers::forward(s, one, Method::POST, path, None).await,
        [] if silent.is_empty() => Err(ApiError::not_found("connection")),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("connection not found on the nodes that answered; not asked: {}", silent.join(", ")),
        )),
        many => Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous",
            format!("connection id {conn} is open on nodes {}: say which with node=", many.join(", ")),
        )),
    }
}

/// `POST /admin/v1/users/{user}/kick`: closes every connection of the user (cluster: on every
/// node; an empty list when they have none; 404 for an unknown user).
pub async fn kick_user(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiPath(who): ApiPath<String>) -> Result<Json<Kicked>, ApiError> {
    let user = lookup(&s, Who::parse(&who)?).await?.user.user_id;
    let mut out = Kicked { node_id: s.node.0.clone(), code: CLOSE_KICKED, kicked: Vec::new(), unreachable: Vec::new() };
    s.registry.for_user(user, |c| {
        c.close(CLOSE_KICKED, KICK_REASON);
        out.kicked.push(view(&s, c));
    });
    tracing::warn!(user_id = %user, connections = out.kicked.len(), "user's connections kicked by an operator");
    #[cfg(feature = "cluster")]
    if super::peers::fans_out(&s, &headers) {
        for (peer, answer) in super::peers::gather(&s, axum::http::Method::POST, &format!("/users/{}/kick", user.0)).await? {
            match answer.and_then(|v| serde_json::from_value::<Kicked>(v).map_err(|e| e.to_string())) {
                Ok(k) => out.kicked.extend(k.kicked),
                Err(error) => out.unreachable.push(super::Missing { node_id: peer.node, error }),
            }
        }
    }
    let _ = &headers;
    Ok(Json(out))
}
