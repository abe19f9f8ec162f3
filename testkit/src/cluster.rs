//! Cluster-test plumbing: a Kafka-protocol broker (shared from `KAFKA_BROKERS`, or a tansu
//! started through `scripts/kafka.sh` and stopped on drop) and a namespace of unique names
//! (Redis key prefix, topic prefix, PostgreSQL schema) that is removed on drop.

use std::process::Command;

pub use switchboard_core::bus::test_broker::Broker;

/// Unique names for one test; Redis keys and the PostgreSQL schema are removed on drop
/// (topics die with a broker the test started). Removing twice is harmless.
pub struct Namespace {
    /// The id the names are made from.
    pub id: String,
    /// `test:<id>:`
    pub redis_prefix: String,
    /// `test.<id>.`
    pub topic_prefix: String,
    /// `sbtest_<id>`
    pub schema: String,
}

impl Namespace {
    /// Fresh names.
    pub fn new() -> Self {
        Self::with_id(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The names of `id`.
    pub fn with_id(id: String) -> Self {
        Self {
            redis_prefix: format!("test:{id}:"),
            topic_prefix: format!("test.{id}."),
            schema: format!("sbtest_{id}"),
            id,
        }
    }
}

/// Points a config at the shared services under `ns`, as node `node`, with tansu-friendly
/// Kafka timings.
pub fn apply(c: &mut switchboard_core::config::Config, ns: &Namespace, brokers: &str, node: &str) {
    use std::time::Duration;
    c.mode = switchboard_core::config::Mode::Cluster;
    c.node_id = node.into();
    let k = &mut c.cluster;
    k.redis_prefix = ns.redis_prefix.clone();
    k.topic_prefix = ns.topic_prefix.clone();
    k.postgres_schema = ns.schema.clone();
    k.postgres_url = std::env::var("SWITCHBOARD_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    k.postgres_pool = 4;
    k.kafka_brokers = brokers.into();
    k.inbound_partitions = 3;
    k.presence_ttl = Duration::from_secs(3);
    k.kafka_fetch_wait = Duration::from_millis(20);
    k.kafka_session_timeout = Duration::from_secs(6);
    k.kafka_heartbeat_interval = Duration::from_millis(500);
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", &sql]).output();
        let pattern = format!("{}*", self.redis_prefix);
        if let Ok(out) = Command::new("redis-cli").args(["-h", "127.0.0.1", "--scan", "--pattern", &pattern]).output() {
            let keys: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
            for chunk in keys.chunks(500) {
                let _ = Command::new("redis-cli").args(["-h", "127.0.0.1", "del"]).args(chunk).output();
            }
        }
    }
}
