//! Draining a node (`chatctl node drain`): stop taking new WebSocket connections and move the
//! open ones elsewhere without a reconnect storm.
//!
//! While draining, new upgrades get 503 `draining` and `/readyz` answers 503 (a load balancer
//! stops sending clients here); open connections are closed with **1012** and a reason
//! `service restart; retry in Ns`, N drawn per connection from the requested window (the
//! jitter that spreads their reconnects), at most `rate` connections per second. A close
//! goes out after everything already queued for that connection, and a send the client made
//! before it is committed and acked by the router or, if the ack is lost with the socket,
//! answered as a duplicate when the client resends it with the same `clientMsgId`; messages
//! for the client arrive from the backlog on its next connection. So nothing is lost.
//!
//! The drain keeps watching until undrained: a connection that still gets in (for instance
//! through a path that admitted it just before the flag was set) is closed the same way.
//! `undrain` clears the flag and stops closing.

use super::nodes::local_view;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::state::AppState;
use crate::ws::outbox::ConnShared;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchboard_core::frame::close;
use switchboard_core::ids::ConnId;
use switchboard_core::time::now_ms;
use tokio_util::sync::CancellationToken;

/// Default closes per second.
pub const DEFAULT_RATE: u32 = 100;
/// Most closes per second one drain may ask for.
pub const MAX_RATE: u32 = 100_000;
/// Default retry-hint window, seconds.
pub const DEFAULT_RETRY: (u32, u32) = (1, 10);
/// Longest retry hint, seconds.
pub const MAX_RETRY_SECS: u32 = 120;
/// How often a drain that has closed everything looks for newcomers.
const WATCH: Duration = Duration::from_millis(250);

/// Admin API state of one gateway (a field of [`AppState`]).
#[derive(Default)]
pub struct AdminState {
    drain: Mutex<Option<DrainRun>>,
    /// Frames in and out per second, from the last sample (`None` before the second sample).
    pub(crate) rates: Mutex<(Option<f64>, Option<f64>)>,
    /// Cluster mode: the Redis and Kafka clients of the admin API, made on first use.
    #[cfg(feature = "cluster")]
    pub(crate) cluster: tokio::sync::OnceCell<super::cluster::AdminClients>,
    /// Open `GET /admin/v1/tail` streams.
    pub(crate) tails: std::sync::atomic::AtomicUsize,
    /// Cluster mode: the Kafka client whose consumers tail the inbound topic from its end,
    /// made on first use.
    #[cfg(feature = "cluster")]
    pub(crate) tail_log: Mutex<Option<switchboard_core::bus::KafkaLog>>,
}

struct DrainRun {
    stop: CancellationToken,
    rate: u32,
    retry: (u32, u32),
    started_ms: i64,
    at_start: usize,
    closed: Arc<AtomicU64>,
}

/// The running drain, as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainView {
    /// Closes per second.
    pub rate: u32,
    /// Retry-hint window, seconds.
    pub retry_min_secs: u32,
    /// Retry-hint window, seconds.
    pub retry_max_secs: u32,
    /// When the drain started, Unix ms.
    pub started_at: i64,
    /// Connections open when it started.
    pub connections_at_start: usize,
    /// Connections it has closed so far.
    pub closed: u64,
    /// Connections still open.
    pub remaining: usize,
}

impl AdminState {
    /// The running drain of `s`, if any.
    pub fn drain_view(&self, s: &AppState) -> Option<DrainView> {
        self.drain.lock().as_ref().map(|d| DrainView {
            rate: d.rate,
            retry_min_secs: d.retry.0,
            retry_max_secs: d.retry.1,
            started_at: d.started_ms,
            connections_at_start: d.at_start,
            closed: d.closed.load(Ordering::Relaxed),
            remaining: s.registry.len(),
        })
    }
}

/// `POST /admin/v1/nodes/{node}/drain` body; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainBody {
    /// Closes per second (default 100).
    rate: Option<u32>,
    /// Retry-hint window, seconds (default 1-10).
    retry_min_secs: Option<u32>,
    /// Retry-hint window, seconds.
    retry_max_secs: Option<u32>,
}

/// Checks that `node` is the node answering (drains and undrains act on one node's sockets;
/// in cluster mode, other nodes' are forwarded before this check).
pub(crate) fn this_node_only(s: &AppState, node: &str) -> Result<(), ApiError> {
    if node == s.node.0 {
        return Ok(());
    }
    Err(match s.cfg.mode {
        switchboard_core::config::Mode::Standalone => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("node {node:?} not found (this is {:?})", s.node.0))
        }
        switchboard_core::config::Mode::Cluster => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_node",
            format!("this is node {:?}; send the request to the admin listener of {node:?}", s.node.0),
        ),
    })
}

/// `POST /admin/v1/nodes/{node}/drain`: 202 with the node (state `draining`).
/// Cluster mode: a drain of another node is forwarded to it ([`super::peers`]).
pub async fn drain(State(s): State<Arc<AppState>>, ApiPath(node): ApiPath<String>, req: Request) -> Result<Response, ApiError> {
    let forward = elsewhere(&s, req.headers(), &node);
    let body = crate::http::extract::read_body(req, 4096).await?;
    if forward {
        #[cfg(feature = "cluster")]
        return super::peers::forward(&s, &node, axum::http::Method::POST, &format!("/nodes/{node}/drain"), Some(body)).await;
    }
    this_node_only(&s, &node)?;
    let b: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?
    };
    let rate = b.rate.unwrap_or(DEFAULT_RATE);
    if !(1..=MAX_RATE).contains(&rate) {
        return Err(ApiError::invalid(format!("rate must be 1-{MAX_RATE} connections per second")));
    }
    let retry = (b.retry_min_secs.unwrap_or(DEFAULT_RETRY.0), b.retry_max_secs.unwrap_or(DEFAULT_RETRY.1));
    if retry.0 > retry.1 || retry.1 > MAX_RETRY_SECS {
        return Err(ApiError::invalid(format!("retryMinSecs <= retryMaxSecs <= {MAX_RETRY_SECS} required")));
    }
    s.draining.store(true, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let closed = Arc::new(AtomicU64::new(0));
    let at_start = s.registry.len();
    let run = DrainRun { stop: stop.clone(), rate, retry, started_ms: now_ms(), at_start, closed: closed.clone() };
    if let Some(old) = s.admin.drain.lock().replace(run) {
        old.stop.cancel();
    }
    tracing::warn!(node = %s.node, rate, connections = at_start, "draining: refusing new connections, closing open ones with 1012");
    tokio::spawn(close_all(s.clone(), rate, retry, stop, closed));
    Ok((StatusCode::ACCEPTED, Json(local_view(&s))).into_response())
}

/// Whether `node` is another node that this request is to be forwarded to.
fn elsewhere(s: &AppState, headers: &HeaderMap, node: &str) -> bool {
    #[cfg(feature = "cluster")]
    if super::peers::fans_out(s, headers) && node != s.node.0 {
        return true;
    }
    let _ = (s, headers, node);
    false
}

/// `POST /admin/v1/nodes/{node}/undrain`: accept connections again.
pub async fn undrain(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiPath(node): ApiPath<String>) -> Result<Response, ApiError> {
    if elsewhere(&s, &headers, &node) {
        #[cfg(feature = "cluster")]
        return super::peers::forward(&s, &node, axum::http::Method::POST, &format!("/nodes/{node}/undrain"), None).await;
    }
    this_node_only(&s, &node)?;
    if let Some(run) = s.admin.drain.lock().take() {
        run.stop.cancel();
    }
    if s.draining.swap(false, Ordering::SeqCst) {
        tracing::warn!(node = %s.node, "undrained: accepting connections again");
    }
    Ok(Json(local_view(&s)).into_response())
}

/// Closes every connection at `rate` per second, then keeps closing newcomers until stopped.
async fn close_all(s: Arc<AppState>, rate: u32, retry: (u32, u32), stop: CancellationToken, closed: Arc<AtomicU64>) {
    // At most 100 wake-ups a second: higher rates close a batch per tick.
    let per_tick = rate.div_ceil(100).max(1) as usize;
    let period = Duration::from_secs_f64(per_tick as f64 / f64::from(rate));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done: HashSet<ConnId> = HashSet::new();
    loop {
        let mut pending: Vec<Arc<ConnShared>> = Vec::new();
        s.registry.for_each(|c| {
            if !done.contains(&c.id) {
                pending.push(c.clone());
            }
        });
        if pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(WATCH) => continue,
                _ = stop.cancelled() => return,
                _ = s.shutdown.cancelled() => return,
            }
        }
        for batch in pending.chunks(per_tick) {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
                _ = s.shutdown.cancelled() => return,
            }
            for c in batch {
                c.close(close::SERVICE_RESTART, retry_reason(retry));
                done.insert(c.id);
                closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Forget ids that are gone, so the set does not grow past the live connections.
        done.retain(|id| s.registry.conn(*id).is_some());
    }
}

/// `service restart; retry in Ns`, N uniform in the window.
fn retry_reason((min, max): (u32, u32)) -> &'static str {
    static REASONS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let reasons = REASONS.get_or_init(|| {
        (0..=MAX_RETRY_SECS).map(|n| &*Box::leak(format!("service restart; retry in {n}s").into_boxed_str())).collect()
    });
    let n = rand::thread_rng().gen_range(min..=max);
    reasons[n as usize]
}

#[cfg(test)]
mod tests {
    use super::retry_reason;

    #[test]
    fn retry_hints_stay_in_the_window() {
        for _ in 0..200 {
            let r = retry_reason((3, 7));
            let n: u32 = r.trim_start_matches("service restart; retry in ").trim_end_matches('s').parse().unwrap();
            assert!((3..=7).contains(&n), "{r}");
            assert!(r.len() <= 123, "close reasons fit a control frame");
        }
    }
}
