//! `topic lag` and the lag of `cluster status`: read from Kafka itself (feature `kafka`).
//!
//! For the router group (`<prefix>router` on `<prefix>inbound`) and the storage group
//! (`<prefix>storage` on `<prefix>side`): each partition's committed offset against its high
//! watermark. Only offsets are read: chatctl never joins the groups, so no rebalance.

use crate::exit::{Exit, Failure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::time::Duration;

/// `{"mode":"cluster","groups":[{group,topic,totalLag,partitions:[{partition,committed,high,lag}]}]}`
///
/// # Errors
/// Exit 69 when the brokers do not answer.
pub async fn read(brokers: &str, pairs: Vec<(String, String)>, timeout: Duration) -> Result<Value, Failure> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let groups = pairs.iter().map(|(g, t)| group_lag(&brokers, g, t, timeout)).collect::<Result<Vec<_>, _>>()?;
        Ok(json!({"mode": "cluster", "groups": groups}))
    })
    .await
    .map_err(|e| Failure::new(Exit::Failed, "internal", e.to_string()))?
}

fn kafka_err(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(Exit::Unavailable, "unavailable", format!("kafka {what}: {e}"))
}

fn group_lag(brokers: &str, group: &str, topic: &str, timeout: Duration) -> Result<Value, Failure> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| kafka_err("client", e))?;
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| kafka_err("metadata", e))?;
    let parts: Vec<i32> = md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = if parts.is_empty() { tpl.clone() } else { consumer.committed_offsets(tpl, timeout).map_err(|e| kafka_err("offsets", e))? };
    let mut rows = Vec::new();
    let mut total = 0i64;
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).map_err(|e| kafka_err("watermarks", e))?;
        let off = committed.find_partition(topic, p).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        let lag = (high - off.unwrap_or(low)).max(0);
        total += lag;
        rows.push(json!({"partition": p, "committed": off, "high": high, "lag": lag}));
    }
    Ok(json!({"group": group, "topic": topic, "totalLag": total, "partitions": rows}))
}
