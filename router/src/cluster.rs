//! Cluster mode: connecting to the shared services, and the Kafka-fed routing loop.
//!
//! Gateways produce each send to the inbound topic (`<prefix>inbound`), keyed by conversation
//! id so a conversation stays in one partition and so with one router at a time. [`run`] is a
//! member of the `<prefix>router` consumer group: it routes what it reads through
//! [`RouterCore::route_batch`] (PostgreSQL append, then acks and deliveries through the Kafka
//! bus, each confirmed by the broker) and only then acknowledges the records, so their offsets
//! are committed after the outputs are durable. A crash replays the unacknowledged records;
//! the store answers replayed sends as duplicates with their original ids.

use crate::{RouterCore, SendJob};
use std::sync::Arc;
use std::time::Duration;
use storage_workers::postgres::PgStore;
use switchboard_core::bus::{BusError, KafkaBus, KafkaConfig, KafkaLog};
use switchboard_core::push::{PushNotice, PushSink};
use switchboard_core::config::Config;
use switchboard_core::error::ErrorCode;
use switchboard_core::ids::NodeId;
use switchboard_core::presence::{PresenceError, RedisPresence, RedisPresenceConfig, RedisTarget};
use switchboard_core::store::{MessageStore, StoreError};
use tokio_util::sync::CancellationToken;

/// Why cluster services could not be reached or the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Store(#[from] StoreError),
    /// Redis.
    #[error("redis: {0}")]
    Presence(#[from] PresenceError),
    /// Kafka.
    #[error("kafka: {0}")]
    Bus(#[from] BusError),
}

impl ErrorCode for ClusterError {
    fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => e.code(),
            Self::Presence(e) => e.code(),
            Self::Bus(e) => e.code(),
        }
    }
    fn http_status(&self) -> u16 {
        503
    }
    fn is_retryable(&self) -> bool {
        true
    }
}

/// Who is connecting: a gateway registers itself as a presence node; a router only reads.
#[derive(Debug, Clone)]
pub enum Role {
    /// A gateway node with its epoch (grows with each start) and advertised address (its
    /// admin listener's comes from `cluster.admin_advertise`).
    Gateway {
        /// Epoch.
        epoch: u64,
        /// Address others reach it at.
        advertise: String,
    },
    /// A router: reads presence, registers nothing.
    Router,
}

/// The shared services of one process.
pub struct Services {
    /// PostgreSQL.
    pub store: Arc<PgStore>,
    /// Redis presence.
    pub presence: Arc<RedisPresence>,
    /// Kafka bus (and its producer for the inbound topic).
    pub bus: Arc<KafkaBus>,
}

/// The Kafka settings of a configuration.
pub fn kafka_config(cfg: &Config) -> KafkaConfig {
    KafkaConfig::from_cluster(&cfg.cluster)
}

/// The inbound topic's name.
pub fn inbound_topic(cfg: &Config) -> String {
    format!("{}inbound", cfg.cluster.topic_prefix)
}

/// The push topic's name: notices for offline recipients, keyed by user (see
/// [`switchboard_core::push`]).
pub fn push_topic(cfg: &Config) -> String {
    format!("{}push", cfg.cluster.topic_prefix)
}

/// The tap topic's name: traffic events of every process while some node serves a tail
/// (`chatctl msg tail` in cluster mode); one partition, so events keep their order.
pub fn tap_topic(cfg: &Config) -> String {
    format!("{}tap", cfg.cluster.topic_prefix)
}

/// How long a tail's wish for tap events lasts in Redis unless renewed (tails renew it every
/// third of this).
pub const TAP_WANTED_TTL: Duration = Duration::from_secs(30);
/// How often a process looks whether a tail wants its events.
const TAP_POLL: Duration = Duration::from_secs(1);

pub use crate::tap::TapRecord;

/// Publishes `core`'s traffic events to the tap topic while Redis says some node serves a
/// tail ([`RedisPresence::tap_wanted`], polled every second), never otherwise. Bodies are
/// dropped; a full producer queue drops events rather than slow routing (a tail may miss
/// events, never delay a message).
pub fn spawn_tap_publisher(core: Arc<RouterCore>, presence: Arc<RedisPresence>, log: KafkaLog, cfg: &Config, shutdown: CancellationToken) {
    use crate::TrafficEvent;
    use tokio::sync::broadcast::error::RecvError;
    let topic = tap_topic(cfg);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(TAP_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events: Option<tokio::sync::broadcast::Receiver<TrafficEvent>> = None;
        loop {
            let next = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = poll.tick() => match presence.tap_wanted().await {
                    Ok(true) if events.is_none() => match log.ensure_topic(&topic, 1).await {
                        Ok(()) => {
                            tracing::info!(%topic, "a tail is open: publishing traffic events");
                            events = Some(core.tap());
                        }
                        Err(error) => tracing::warn!(%error, %topic, "tap topic unavailable"),
                    },
                    Ok(false) if events.is_some() => {
                        tracing::info!("no tail open: traffic events no longer published");
                        events = None;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "tap flag not read; keeping the current state"),
                },
                r = next => match r {
                    Ok(mut e) => {
                        let recipient_ids = match &mut e {
                            TrafficEvent::Message(m) => {
                                m.body = None;
                                m.recipient_ids.to_vec()
                            }
                            TrafficEvent::Typing(t) => t.recipient_ids.to_vec(),
                            TrafficEvent::Receipt(r) => r.notified.clone(),
                            TrafficEvent::Refused(_) => Vec::new(),
                        };
                        let payload = serde_json::to_vec(&TapRecord { event: &e, recipient_ids }).expect("tap records serialize");
                        if !matches!(log.enqueue(&topic, b"", &payload), Ok(Some(_))) {
                            tracing::debug!("tap event dropped: producer queue full or record refused");
                        }
                    }
                    Err(RecvError::Lagged(skipped)) => {
                        let lagged = TapRecord { event: serde_json::json!({"type": "lagged", "skipped": skipped}), recipient_ids: Vec::new() };
                        let payload = serde_json::to_vec(&lagged).expect("tap records serialize");
                        let _ = log.enqueue(&topic, b"", &payload);
                    }
                    Err(RecvError::Closed) => events = None,
                },
            }
        }
    });
}

/// Push notices produced to the push topic, keyed by recipient.
pub struct KafkaPush {
    log: KafkaLog,
    topic: String,
}

impl KafkaPush {
    /// Produces to `cfg`'s push topic through `log`.
    pub fn new(log: KafkaLog, cfg: &Config) -> Self {
        Self { log, topic: push_topic(cfg) }
    }
}

#[async_trait::async_trait]
impl PushSink for KafkaPush {
    async fn notify(&self, notices: Vec<PushNotice>) -> Result<(), BusError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> = notices
            .iter()
            .map(|n| (n.user_id.0.to_string().into_bytes(), serde_json::to_vec(n).expect("a PushNotice serializes")))
            .collect();
        let records: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        self.log.send_records(&self.topic, &records).await
    }
}

/// Connects to PostgreSQL, Redis and Kafka.
///
/// # Errors
/// [`ClusterError`] naming the service that failed.
pub async fn connect(cfg: &Config, role: Role) -> Result<Services, ClusterError> {
    let c = &cfg.cluster;
    let store = Arc::new(PgStore::connect(&c.postgres_url, &c.postgres_schema, c.postgres_pool).await?);
    let target = match c.redis_urls.as_slice() {
        [one] => RedisTarget::Single(one.clone()),
        many => RedisTarget::Cluster(many.to_vec()),
    };
    let node = NodeId(cfg.node_id.clone());
    let presence = match role {
        Role::Gateway { epoch, advertise } => {
            let mut pc = RedisPresenceConfig::new(node, epoch, advertise).with_prefix(c.redis_prefix.clone()).with_ttl(c.presence_ttl);
            if let Some(admin) = &c.admin_advertise {
                pc = pc.with_admin_addr(admin.clone());
            }
            RedisPresence::connect(&target, pc).await?
        }
        Role::Router => {
            let pc = RedisPresenceConfig::new(node, 0, "").with_prefix(c.redis_prefix.clone()).with_ttl(c.presence_ttl);
            RedisPresence::observer(&target, pc).await?
        }
    };
    let bus = Arc::new(KafkaBus::new(kafka_config(cfg))?);
    bus.log().ensure_topic(&inbound_topic(cfg), c.inbound_partitions).await?;
    Ok(Services { store, presence: Arc::new(presence), bus })
}

/// Records routed per batch at most.
const BATCH: usize = 256;

/// The router process: consume the inbound topic and route until `shutdown`.
///
/// # Errors
/// [`ClusterError`] when a service cannot be reached at start or the consumer fails.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), ClusterError> {
    let svc = connect(&cfg, Role::Router).await?;
    svc.bus.log().ensure_topic(&push_topic(&cfg), cfg.cluster.inbound_partitions).await?;
    let store: Arc<dyn MessageStore> = svc.store.clone();
    let push = Arc::new(KafkaPush::new(svc.bus.log().clone(), &cfg));
    let core = Arc::new(RouterCore::new(store, svc.presence.clone(), svc.bus.clone()).with_push(push));
    let topic = inbound_topic(&cfg);
    let group = format!("{}router", cfg.cluster.topic_prefix);
    let mut consumer = svc.bus.log().consumer(&[&topic], &group, BATCH * 4)?;
    spawn_tap_publisher(core.clone(), svc.presence.clone(), svc.bus.log().clone(), &cfg, shutdown.clone());
    tracing::info!(%topic, %group, "router consuming");
    switchboard_core::health::set_ready(true);
    loop {
        let first = tokio::select! {
            r = consumer.next() => r?,
            _ = shutdown.cancelled() => break,
        };
        // Take whatever else is already here, without waiting (next() is cancel-safe).
        let mut records = vec![first];
        while records.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.next()).await {
                Ok(r) => records.push(r?),
                Err(_) => break,
            }
        }
        let mut jobs = Vec::with_capacity(records.len());
        for r in &records {
            match serde_json::from_slice::<SendJob>(&r.payload) {
                Ok(job) => jobs.push(job),
                Err(error) => tracing::error!(%error, partition = r.partition, offset = r.offset, "undecodable inbound record skipped"),
            }
        }
        tracing::debug!(records = records.len(), jobs = jobs.len(), "routing inbound batch");
        core.route_batch(jobs).await;
        tracing::debug!("inbound batch routed");
        records.into_iter().for_each(|r| r.ack());
    }
    consumer.close().await;
    svc.bus.close().await;
    tracing::info!("router stopped");
    Ok(())
}
