//! Cluster mode: the node list from Redis (each other node's figures from its own admin
//! listener), the Redis and Kafka probes of `cluster status`, and consumer lag read from Kafka
//! (committed offsets against high watermarks; the groups are never joined).

use super::nodes::{local_view, unavailable, GroupTopic, NodeView, ServiceView};
use super::peers;
use crate::http::error::ApiError;
use crate::state::AppState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::bus::{GroupLag, KafkaConfig, KafkaLog};
use switchboard_core::ids::NodeId;
use switchboard_core::presence::{RedisPresence, RedisPresenceConfig, RedisTarget};
use switchboard_core::time::now_ms;

/// Longest a probe may take.
const PROBE: Duration = Duration::from_secs(5);

/// The admin API's own Redis reader (it never registers a node).
pub struct AdminClients {
    pub(super) redis: RedisPresence,
}

pub(super) async fn clients(s: &AppState) -> Result<&AdminClients, ApiError> {
    s.admin
        .cluster
        .get_or_try_init(|| async {
            let c = &s.cfg.cluster;
            let target = match c.redis_urls.as_slice() {
                [one] => RedisTarget::Single(one.clone()),
                many => RedisTarget::Cluster(many.to_vec()),
            };
            let pc = RedisPresenceConfig::new(NodeId(format!("{}-admin", s.node.0)), 0, "")
                .with_prefix(c.redis_prefix.clone())
                .with_ttl(c.presence_ttl)
                .with_node_cache(Duration::ZERO);
            let redis = tokio::time::timeout(PROBE, RedisPresence::observer(&target, pc))
                .await
                .map_err(|_| unavailable("redis", "timed out"))?
                .map_err(|e| unavailable("redis", e))?;
            Ok(AdminClients { redis })
        })
        .await
}

/// Redis's node table, this node's live figures merged in, every other live node's from its
/// own admin listener (asked at once; `unreachable` with `null` figures when it does not
/// answer). A node whose heartbeat expired (less than an hour ago; older records are dropped)
/// is `dead`. The last heartbeat is the registration's expiry minus the presence TTL.
pub async fn nodes(s: &Arc<AppState>) -> Result<Vec<NodeView>, ApiError> {
    let (list, admins) = peers::node_table(s).await?;
    let ttl = s.cfg.cluster.presence_ttl.as_millis() as i64;
    let now = now_ms();
    let views = list.into_iter().map(|n| {
        let heartbeat = n.expires_ms - ttl;
        let admin = admins.get(&n.node).cloned();
        let dead = n.expires_ms <= now;
        async move {
            if n.node == s.node {
                let mut v = local_view(s);
                v.last_heartbeat = Some(heartbeat);
                return v;
            }
            let remote = match &admin {
                _ if dead => Err("heartbeat expired".to_owned()),
                Some(a) => remote_view(s, &peers::Peer { node: n.node.0.clone(), admin: a.clone() }).await,
                None => Err("no admin address advertised".to_owned()),
            };
            match remote {
                Ok(mut v) => {
                    v.local = false;
                    v.address = Some(n.addr);
                    v.admin_address = admin;
                    v.reachable = Some(true);
                    v.last_heartbeat = Some(heartbeat);
                    v
                }
                Err(error) => {
                    tracing::debug!(node = %n.node, %error, "node's admin listener did not answer");
                    NodeView {
                        node_id: n.node.0,
                        state: if dead { "dead".into() } else { "unreachable".into() },
                        local: false,
                        mode: "cluster".into(),
                        version: None,
                        address: Some(n.addr),
                        admin_address: admin,
                        reachable: (!dead).then_some(false),
                        uptime_secs: None,
                        connections: None,
                        users: None,
                        msgs_in_per_sec: None,
                        msgs_out_per_sec: None,
                        last_heartbeat: Some(heartbeat),
                        drain: None,
                        tails: None,
                    }
                }
            }
        }
    });
    let mut out: Vec<NodeView> = futures_util::future::join_all(views).await;
    if !out.iter().any(|n| n.local) {
        out.push(local_view(s));
    }
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
}

/// Another node's view of itself (`GET /admin/v1/node` on its admin listener).
async fn remote_view(s: &AppState, peer: &peers::Peer) -> Result<NodeView, String> {
    let (status, body) = peers::call(s, peer, axum::http::Method::GET, "/node", None).await?;
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Consumer lag of each group on its topic.
pub async fn lag(s: &AppState, groups: &[GroupTopic]) -> Result<Vec<GroupLag>, ApiError> {
    let log = super::tail::kafka::tail_log(s)?;
    let reads = groups.iter().map(|g| log.group_lag(&g.group, &g.topic));
    tokio::time::timeout(PROBE, futures_util::future::try_join_all(reads))
        .await
        .map_err(|_| unavailable("kafka", "timed out"))?
        .map_err(|e| unavailable("kafka", e))
}

/// Redis (the node table answers) and Kafka (a metadata round trip: the inbound topic is
/// ensured, which changes nothing when it exists).
pub async fn probes(s: &AppState) -> Vec<ServiceView> {
    let started = Instant::now();
    let redis = match clients(s).await {
        Ok(c) => match tokio::time::timeout(PROBE, c.redis.list_nodes()).await {
            Ok(Ok(n)) => ServiceView { name: "redis", ok: true, detail: format!("{} nodes listed in {} ms", n.len(), started.elapsed().as_millis()) },
            Ok(Err(e)) => ServiceView { name: "redis", ok: false, detail: e.to_string() },
            Err(_) => ServiceView { name: "redis", ok: false, detail: "timed out".into() },
        },
        Err(e) => ServiceView { name: "redis", ok: false, detail: e.message },
    };
    let started = Instant::now();
    let kafka = match KafkaLog::new(KafkaConfig::from_cluster(&s.cfg.cluster)) {
        Ok(log) => {
            let topic = router::cluster::inbound_topic(&s.cfg);
            match tokio::time::timeout(PROBE, log.ensure_topic(&topic, s.cfg.cluster.inbound_partitions)).await {
                Ok(Ok(())) => ServiceView { name: "kafka", ok: true, detail: format!("metadata in {} ms", started.elapsed().as_millis()) },
                Ok(Err(e)) => ServiceView { name: "kafka", ok: false, detail: e.to_string() },
                Err(_) => ServiceView { name: "kafka", ok: false, detail: "timed out".into() },
            }
        }
        Err(e) => ServiceView { name: "kafka", ok: false, detail: e.to_string() },
    };
    vec![redis, kafka]
}
