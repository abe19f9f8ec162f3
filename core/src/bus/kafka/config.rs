//! `KafkaConfig`: where the brokers are and how the bus's clients behave.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Settings of the Kafka bus and of [`KafkaLog`](super::KafkaLog) clients.
///
/// Serde-ready in the style of core's `Config` sections (durations written like `"500ms"`),
/// so it can become one. Every client the module makes is idempotent (producer) and commits
/// only what was processed (consumers); these knobs tune latency, memory and timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`. Default: "127.0.0.1:9092".
    pub brokers: String,
    /// Prefix of every topic and consumer group the bus names. Default: "sb.".
    pub topic_prefix: String,
    /// Partitions of each node's delivery topic when the bus creates it. Default: 1.
    ///
    /// A node's topic has one reader (the node) and its deliveries must stay in publish
    /// order, so records are keyed by node and more partitions stay idle. `KafkaLog` callers
    /// name their own counts (the inbound topic wants many).
    pub partitions: i32,
    /// Replication factor of topics created here; -1 takes the broker's
    /// `default.replication.factor`. Default: -1.
    pub replication_factor: i32,
    /// Deliveries queued between Kafka and a subscribed node's delivery task; while the queue
    /// is full the node's consumer is paused. Default: 4096.
    pub subscriber_queue: usize,
    /// How long a publish may take, retries included, before it fails (librdkafka
    /// `message.timeout.ms`). Default: 30s.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How long the producer waits to batch records (`linger.ms`). Default: 1ms.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Longest a fetch waits at the broker for data (`fetch.wait.max.ms`). Default: 100ms.
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// A consumer silent this long is dropped from its group (`session.timeout.ms`).
    /// Default: 10s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Consumer heartbeat period (`heartbeat.interval.ms`); under a third of
    /// `session_timeout`. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often acknowledged offsets are committed (`auto.commit.interval.ms`); they are
    /// also committed on close and before a rebalance. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Records a consumer prefetches per partition, in KiB (`queued.max.messages.kbytes`).
    /// Default: 4096.
    pub prefetch_kbytes: u32,
    /// Extra librdkafka properties for every client (`security.protocol`, `sasl.*`,
    /// `compression.type`, ...), applied after everything above. Default: none.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "sb.".into(),
            partitions: 1,
            replication_factor: -1,
            subscriber_queue: 4096,
            delivery_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(1),
            fetch_wait: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            commit_interval: Duration::from_secs(1),
            prefetch_kbytes: 4096,
            client: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The Kafka settings of a node's `[cluster]` configuration (the rest at defaults).
    pub fn from_cluster(c: &crate::config::ClusterConfig) -> Self {
        Self {
            brokers: c.kafka_brokers.clone(),
            topic_prefix: c.topic_prefix.clone(),
            fetch_wait: c.kafka_fetch_wait,
            session_timeout: c.kafka_session_timeout,
            heartbeat_interval: c.kafka_heartbeat_interval,
            ..Self::default()
        }
    }

    /// Every problem with these settings, empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.brokers.trim().is_empty() {
            p.push("kafka brokers: empty".into());
        }
        if !self.topic_prefix.chars().all(is_topic_char) {
            p.push(format!("kafka topic_prefix {:?}: only [A-Za-z0-9._-] allowed", self.topic_prefix));
        }
        if self.partitions < 1 {
            p.push(format!("kafka partitions {}: must be at least 1", self.partitions));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            p.push(format!("kafka replication_factor {}: -1 or at least 1", self.replication_factor));
        }
        if self.subscriber_queue == 0 {
            p.push("kafka subscriber_queue: must be at least 1".into());
        }
        if self.heartbeat_interval * 3 > self.session_timeout {
            p.push("kafka heartbeat_interval: must be under a third of session_timeout".into());
        }
        for (name, d) in self.durations() {
            if millis(d) > i32::MAX as u128 || (name != "linger" && d.is_zero()) {
                p.push(format!("kafka {name} {d:?}: out of range"));
            }
        }
        p
    }

    /// The topic name for `name` under this config's prefix.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    fn durations(&self) -> [(&'static str, Duration); 6] {
        [
            ("delivery_timeout", self.delivery_timeout),
            ("linger", self.linger),
            ("fetch_wait", self.fetch_wait),
            ("session_timeout", self.session_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("commit_interval", self.commit_interval),
        ]
    }

    /// Settings for the admin client.
    pub(super) fn admin(&self) -> ClientConfig {
        self.with_overrides(self.base())
    }

    /// Settings for the idempotent, `acks=all` producer.
    pub(super) fn producer(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", millis(self.linger).to_string())
            .set("message.timeout.ms", millis(self.delivery_timeout).to_string());
        self.with_overrides(c)
    }

    /// Settings for a group member that commits only the offsets it stored (acknowledged),
    /// and starts from the beginning of partitions its group never committed.
    pub(super) fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", millis(self.commit_interval).to_string())
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", millis(self.session_timeout).to_string())
            .set("heartbeat.interval.ms", millis(self.heartbeat_interval).to_string())
            .set("fetch.wait.max.ms", millis(self.fetch_wait).to_string())
            .set("queued.max.messages.kbytes", self.prefetch_kbytes.to_string());
        self.with_overrides(c)
    }

    /// Settings for a client that only reads a group's committed offsets: it never
    /// subscribes, so it never joins the group (no rebalance) and never commits.
    pub(super) fn offsets_reader(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group).set("enable.auto.commit", "false");
        self.with_overrides(c)
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("client.id", "switchboard");
        c
    }

    fn with_overrides(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// Whether `c` may appear in a Kafka topic or group name built here.
pub(super) fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_are_all_listed() {
        assert_eq!(KafkaConfig::default().problems(), Vec::<String>::new());
        let bad = KafkaConfig {
            brokers: " ".into(),
            topic_prefix: "sb/".into(),
            partitions: 0,
            replication_factor: 0,
            subscriber_queue: 0,
            heartbeat_interval: Duration::from_secs(5),
            fetch_wait: Duration::ZERO,
            ..KafkaConfig::default()
        };
        assert_eq!(bad.problems().len(), 7, "{:?}", bad.problems());
    }

    #[test]
    fn parses_from_toml_with_durations() {
        let c: KafkaConfig =
            toml::from_str("brokers = \"k1:9092,k2:9092\"\nlinger = \"5ms\"\n[client]\n\"compression.type\" = \"lz4\"")
                .unwrap();
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.producer().get("compression.type"), Some("lz4"));
        assert_eq!(c.consumer("g").get("enable.auto.offset.store"), Some("false"));
        assert!(toml::from_str::<KafkaConfig>("nope = 1").is_err());
    }
}
