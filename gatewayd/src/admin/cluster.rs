//! Cluster mode: the node list from Redis and the Redis and Kafka probes of `cluster status`.
//!
//! Consumer lag is not computed here: gatewayd links librdkafka only through the bus, which
//! has no offset queries. `GET /admin/v1/cluster` names the brokers and groups instead, and
//! `chatctl topic lag` (built with its `kafka` feature) reads the offsets from Kafka itself.

use super::nodes::{local_view, unavailable, NodeView, ServiceView};
use crate::http::error::ApiError;
use crate::state::AppState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::bus::{KafkaConfig, KafkaLog};
use switchboard_core::ids::NodeId;
use switchboard_core::presence::{RedisPresence, RedisPresenceConfig, RedisTarget};
use switchboard_core::time::now_ms;

/// Longest a probe may take.
const PROBE: Duration = Duration::from_secs(5);

/// The admin API's own Redis reader (it never registers a node).
pub struct AdminClients {
    redis: RedisPresence,
}

async fn clients(s: &AppState) -> Result<&AdminClients, ApiError> {
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

/// Redis's node table, this node's live figures merged in. A node whose heartbeat expired
/// is `dead`; its last heartbeat is its expiry minus the presence TTL.
pub async fn nodes(s: &Arc<AppState>) -> Result<Vec<NodeView>, ApiError> {
    let c = clients(s).await?;
    let list = tokio::time::timeout(PROBE, c.redis.list_nodes())
        .await
        .map_err(|_| unavailable("redis", "timed out"))?
        .map_err(|e| unavailable("redis", e))?;
    let ttl = s.cfg.cluster.presence_ttl.as_millis() as i64;
    let now = now_ms();
    let mut out: Vec<NodeView> = list
        .into_iter()
        .map(|n| {
            let heartbeat = n.expires_ms - ttl;
            if n.node == s.node {
                let mut v = local_view(s);
                v.last_heartbeat = Some(heartbeat);
                return v;
            }
            NodeView {
                node_id: n.node.0,
                state: if n.expires_ms < now { "dead" } else { "serving" },
                local: false,
                mode: "cluster",
                version: None,
                address: Some(n.addr),
                uptime_secs: None,
                connections: None,
                users: None,
                msgs_in_per_sec: None,
                msgs_out_per_sec: None,
                last_heartbeat: Some(heartbeat),
                drain: None,
                tails: None,
            }
        })
        .collect();
    if !out.iter().any(|n| n.local) {
        out.push(local_view(s));
    }
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
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
