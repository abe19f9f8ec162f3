//! This node, the node list and cluster status.
//!
//! Standalone: the node list is this node. Cluster: the list comes from Redis (every node
//! registered with its advertised address and heartbeat), the node answering adds its own live
//! figures, and every other node's (version, uptime, connections, rates, drain state) come from
//! its own admin listener, asked at once ([`super::peers`]); a node that does not answer keeps
//! `null` figures and `reachable: false`.

use super::drain::DrainView;
use crate::http::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::config::Mode;
use switchboard_core::ids::UserId;
use switchboard_core::metrics::names;

/// How often the frame rates are sampled.
const RATE_SAMPLE: Duration = Duration::from_secs(5);

/// One node as the admin API shows it. Figures a node could not be asked for are `null`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Node id.
    pub node_id: String,
    /// `serving`, `draining`, `shutting_down`, or (cluster) `unreachable` when registered
    /// and heartbeating but its admin listener did not answer.
    pub state: Cow<'static, str>,
    /// Whether this is the node that answered.
    pub local: bool,
    /// `standalone` or `cluster`.
    pub mode: Cow<'static, str>,
    /// gatewayd version.
    pub version: Option<String>,
    /// Client address: `cluster.advertise`, else `server.listen` (remote nodes: as advertised).
    pub address: Option<String>,
    /// Cluster: the admin listener other nodes reach it at (`cluster.admin_advertise`).
    #[serde(default)]
    pub admin_address: Option<String>,
    /// Cluster: whether its admin listener answered (always true for the local node).
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Seconds since start.
    pub uptime_secs: Option<u64>,
    /// Open WebSocket connections.
    pub connections: Option<usize>,
    /// Distinct users connected.
    pub users: Option<usize>,
    /// WebSocket text frames received per second over the last sample (this process).
    pub msgs_in_per_sec: Option<f64>,
    /// WebSocket frames written per second over the last sample (this process).
    pub msgs_out_per_sec: Option<f64>,
    /// Cluster: the node's last heartbeat in Redis, Unix ms.
    pub last_heartbeat: Option<i64>,
    /// The running drain, if any.
    pub drain: Option<DrainView>,
    /// Open `msg tail` streams.
    pub tails: Option<usize>,
}

/// The answering node's view of itself.
pub fn local_view(s: &AppState) -> NodeView {
    let state = if s.shutdown.is_cancelled() {
        "shutting_down"
    } else if s.draining.load(Ordering::Relaxed) {
        "draining"
    } else {
        "serving"
    };
    let (rate_in, rate_out) = *s.admin.rates.lock();
    let cluster = s.cfg.mode == Mode::Cluster;
    NodeView {
        node_id: s.node.0.clone(),
        state: Cow::Borrowed(state),
        local: true,
        mode: Cow::Borrowed(mode_name(s)),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        address: Some(s.cfg.cluster.advertise.clone().unwrap_or_else(|| s.cfg.server.listen.to_string())),
        admin_address: s.cfg.cluster.admin_advertise.clone().filter(|_| cluster),
        reachable: cluster.then_some(true),
        uptime_secs: Some(s.started_at.elapsed().as_secs()),
        connections: Some(s.registry.len()),
        users: Some(s.registry.users().len()),
        msgs_in_per_sec: rate_in,
        msgs_out_per_sec: rate_out,
        last_heartbeat: None,
        drain: s.admin.drain_view(s),
        tails: Some(super::tail::open_tails(s)),
    }
}

pub(crate) fn mode_name(s: &AppState) -> &'static str {
    match s.cfg.mode {
        Mode::Standalone => "standalone",
        Mode::Cluster => "cluster",
    }
}

/// `GET /admin/v1/node`: the node that answers.
pub async fn this_node(State(s): State<Arc<AppState>>) -> Json<NodeView> {
    Json(local_view(&s))
}

/// `{"nodes":[...]}`
#[derive(Serialize)]
pub struct NodeList {
    nodes: Vec<NodeView>,
}

/// Every node: standalone, this one; cluster, Redis's node table merged with this node.
pub async fn all_nodes(s: &Arc<AppState>) -> Result<Vec<NodeView>, ApiError> {
    #[cfg(feature = "cluster")]
    if s.cfg.mode == Mode::Cluster {
        return super::cluster::nodes(s).await;
    }
    Ok(vec![local_view(s)])
}

/// `GET /admin/v1/nodes`
pub async fn list(State(s): State<Arc<AppState>>) -> Result<Json<NodeList>, ApiError> {
    Ok(Json(NodeList { nodes: all_nodes(&s).await? }))
}

/// One backing service's reachability.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// `store`, `redis` or `kafka`.
    pub name: &'static str,
    /// Answered a probe.
    pub ok: bool,
    /// What was probed, or the error.
    pub detail: String,
}

/// Where the cluster's Kafka is and which consumer groups matter.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaInfo {
    /// `cluster.kafka_brokers`.
    pub brokers: String,
    /// `cluster.topic_prefix`.
    pub topic_prefix: String,
    /// The consumer groups that matter and their topics.
    pub groups: Vec<GroupTopic>,
}

/// A consumer group and the topic it consumes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupTopic {
    /// Group id.
    pub group: String,
    /// Topic.
    pub topic: String,
}

/// `GET /admin/v1/cluster`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    mode: &'static str,
    nodes: Vec<NodeView>,
    services: Vec<ServiceView>,
    /// Consumer lag per group and partition (cluster mode; empty when Kafka did not answer,
    /// which `services` then shows).
    lag: Vec<GroupLagView>,
    /// Cluster mode: the brokers and groups (`null` in standalone mode).
    kafka: Option<KafkaInfo>,
}

/// `GET /admin/v1/cluster`: nodes, service reachability and consumer lag.
pub async fn cluster_status(State(s): State<Arc<AppState>>) -> Result<Json<ClusterStatus>, ApiError> {
    let mut services = vec![store_probe(&s).await];
    services.extend(cluster_probes(&s).await);
    // A dead Redis must not hide the rest: fall back to this node alone.
    let nodes = match all_nodes(&s).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e.message, "node list unavailable; showing this node only");
            vec![local_view(&s)]
        }
    };
    let kafka = kafka_info(&s);
    let lag = match group_lags(&s).await {
        Ok(lag) => lag,
        Err(e) => {
            tracing::warn!(error = %e.message, "consumer lag unavailable");
            Vec::new()
        }
    };
    Ok(Json(ClusterStatus { mode: mode_name(&s), nodes, services, lag, kafka }))
}

/// Cluster mode: the brokers and the groups that matter.
fn kafka_info(s: &AppState) -> Option<KafkaInfo> {
    (s.cfg.mode == Mode::Cluster).then(|| {
        let p = &s.cfg.cluster.topic_prefix;
        KafkaInfo {
            brokers: s.cfg.cluster.kafka_brokers.clone(),
            topic_prefix: p.clone(),
            groups: vec![
                GroupTopic { group: format!("{p}router"), topic: format!("{p}inbound") },
                GroupTopic { group: format!("{p}storage"), topic: format!("{p}side") },
            ],
        }
    })
}

/// One consumer group's lag: `core::bus::GroupLag` in cluster builds.
#[cfg(feature = "cluster")]
pub type GroupLagView = switchboard_core::bus::GroupLag;
/// One consumer group's lag (a standalone build has none).
#[cfg(not(feature = "cluster"))]
pub type GroupLagView = serde_json::Value;

/// The lag of each group of [`kafka_info`] (standalone: none).
async fn group_lags(s: &Arc<AppState>) -> Result<Vec<GroupLagView>, ApiError> {
    #[cfg(feature = "cluster")]
    if let Some(k) = kafka_info(s) {
        return super::cluster::lag(s, &k.groups).await;
    }
    let _ = s;
    Ok(Vec::new())
}

/// `GET /admin/v1/lag` answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagView {
    mode: &'static str,
    /// Per consumer group (router on the inbound topic, storage on the side topic); empty in
    /// standalone mode.
    groups: Vec<GroupLagView>,
}

/// `GET /admin/v1/lag`: consumer lag of the router and storage groups, per partition.
pub async fn lag(State(s): State<Arc<AppState>>) -> Result<Json<LagView>, ApiError> {
    Ok(Json(LagView { mode: mode_name(&s), groups: group_lags(&s).await? }))
}

/// Cluster: the Redis and Kafka probes.
async fn cluster_probes(s: &Arc<AppState>) -> Vec<ServiceView> {
    #[cfg(feature = "cluster")]
    if s.cfg.mode == Mode::Cluster {
        return super::cluster::probes(s).await;
    }
    let _ = s;
    Vec::new()
}

async fn store_probe(s: &AppState) -> ServiceView {
    let started = Instant::now();
    let kind = match s.cfg.mode {
        Mode::Standalone => "sqlite",
        Mode::Cluster => "postgresql",
    };
    match s.store.user(UserId(0)).await {
        Ok(_) => ServiceView { name: "store", ok: true, detail: format!("{kind}: read in {} ms", started.elapsed().as_millis()) },
        Err(e) => ServiceView { name: "store", ok: false, detail: format!("{kind}: {e}") },
    }
}

/// 503 for a backing service that did not answer.
#[cfg(feature = "cluster")]
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{what}: {e}"))
}

/// Samples this process's frame counters every [`RATE_SAMPLE`] into per-second rates.
pub fn spawn_rate_sampler(s: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(Instant, f64, f64)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = s.shutdown.cancelled() => break,
            }
            let text = super::render_metrics();
            let now = Instant::now();
            let (fin, fout) = (counter(&text, names::GATEWAY_FRAMES_RECEIVED, Some("opcode=\"text\"")), counter(&text, names::GATEWAY_FRAMES_SENT, None));
            if let Some((then, pin, pout)) = last {
                let secs = now.duration_since(then).as_secs_f64().max(0.001);
                let round = |v: f64| (v * 10.0).round() / 10.0;
                *s.admin.rates.lock() = (Some(round((fin - pin).max(0.0) / secs)), Some(round((fout - pout).max(0.0) / secs)));
            }
            last = Some((now, fin, fout));
        }
    });
}

/// The sum of a counter's series in Prometheus text, optionally only those with `label`.
fn counter(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter(|l| label.is_none_or(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_summed_from_prometheus_text() {
        let text = "# TYPE x_total counter\nx_total{opcode=\"text\"} 5\nx_total{opcode=\"ping\"} 7\nx_total_other 100\ny_total 3\n";
        assert_eq!(super::counter(text, "x_total", None), 12.0);
        assert_eq!(super::counter(text, "x_total", Some("opcode=\"text\"")), 5.0);
        assert_eq!(super::counter(text, "y_total", None), 3.0);
    }
}
