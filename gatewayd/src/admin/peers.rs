//! Cluster mode: any node's admin API answers for the whole cluster by asking the other nodes'
//! admin listeners.
//!
//! Each gateway advertises its admin listener in Redis beside its registration
//! (`cluster.admin_advertise`, default the bound `server.admin_listen`). A request about
//! another node (a drain, a kick with `node=`) is forwarded to that node and its answer relayed
//! as it came; a listing (connections, a user's kick, the node figures) asks every live node at
//! once and merges what they answer, naming the nodes that did not. Peers are called with the
//! same admin token (every node of a cluster shares `server.admin_token`) and the header
//! [`FORWARDED`], which makes the receiving node answer for itself alone, so a request never
//! travels further than one hop.

use super::nodes::unavailable;
use crate::http::error::ApiError;
use crate::state::AppState;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use switchboard_core::config::Mode;
use switchboard_core::ids::NodeId;
use switchboard_core::presence::NodeInfo;

/// Header of a request one node's admin API sends another's: answer for yourself only. Its
/// value is the sending node's id.
pub const FORWARDED: &str = "x-switchboard-forwarded";
/// Longest a peer may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Another live node and where its admin listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node id.
    pub node: String,
    /// Its admin listener, `host:port`.
    pub admin: String,
}

/// Whether this request is to be answered for the cluster (cluster mode, and not itself
/// forwarded by a peer).
pub fn fans_out(s: &AppState, headers: &HeaderMap) -> bool {
    s.cfg.mode == Mode::Cluster && !headers.contains_key(FORWARDED)
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder().timeout(TIMEOUT).no_proxy().build().expect("a plain HTTP client builds")
    })
}

/// Redis's node records (live, and dead for less than an hour) and each node's advertised
/// admin listener, read together.
///
/// # Errors
/// 503 when Redis does not answer.
pub async fn node_table(s: &AppState) -> Result<(Vec<NodeInfo>, HashMap<NodeId, String>), ApiError> {
    let redis = &super::cluster::clients(s).await?.redis;
    tokio::time::timeout(TIMEOUT, async { tokio::try_join!(redis.node_records(), redis.node_admins()) })
        .await
        .map_err(|_| unavailable("redis", "timed out"))?
        .map_err(|e| unavailable("redis", e))
}

/// The other live nodes that advertise an admin listener, by node id.
///
/// # Errors
/// 503 when Redis does not answer.
pub async fn others(s: &AppState) -> Result<Vec<Peer>, ApiError> {
    let (nodes, admins) = node_table(s).await?;
    let now = switchboard_core::time::now_ms();
    Ok(nodes
        .into_iter()
        .filter(|n| n.node != s.node && n.expires_ms > now)
        .filter_map(|n| admins.get(&n.node).map(|a| Peer { node: n.node.0.clone(), admin: a.clone() }))
        .collect())
}

/// One request to `peer`'s admin API (`path` below `/admin/v1`, query included): its status
/// and body, or why it did not answer.
pub async fn call(s: &AppState, peer: &Peer, method: Method, path: &str, body: Option<Bytes>) -> Result<(StatusCode, Bytes), String> {
    let url = format!("http://{}/admin/v1{path}", peer.admin);
    let mut req = http().request(method, url).header(FORWARDED, s.node.0.as_str());
    if let Some(token) = &s.cfg.server.admin_token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.header(header::CONTENT_TYPE, "application/json").body(body);
    }
    let resp = req.send().await.map_err(|e| format!("admin listener {} unreachable: {e}", peer.admin))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("admin listener {}: {e}", peer.admin))?;
    Ok((status, body))
}

/// Sends the request to `node` and relays its answer (status and JSON body) as it came.
///
/// # Errors
/// 404 when no live node `node` advertises an admin listener, 502 when it does not answer,
/// 503 when Redis does not.
pub async fn forward(s: &AppState, node: &str, method: Method, path: &str, body: Option<Bytes>) -> Result<Response, ApiError> {
    let Some(peer) = others(s).await?.into_iter().find(|p| p.node == node) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("node {node:?} is not a live node of this cluster")));
    };
    let (status, body) = call(s, &peer, method, path, body)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", format!("node {node:?}: {e}")))?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The same request to every other live node at once: each one's JSON answer, or why there is
/// none (unreachable, or an error status with the error's message).
///
/// # Errors
/// 503 when Redis does not answer.
pub async fn gather(s: &AppState, method: Method, path: &str) -> Result<Vec<(Peer, Result<Value, String>)>, ApiError> {
    let peers = others(s).await?;
    let calls = peers.iter().map(|p| {
        let method = method.clone();
        async move {
            let (status, body) = call(s, p, method, path, None).await?;
            let v: Value = serde_json::from_slice(&body).map_err(|e| format!("HTTP {status}: not JSON ({e})"))?;
            if status.is_success() {
                Ok(v)
            } else {
                Err(format!("HTTP {}: {}", status.as_u16(), v["error"]["message"].as_str().unwrap_or("error")))
            }
        }
    });
    let answers = join_all(calls).await;
    Ok(peers.into_iter().zip(answers).collect())
}
