//! `KafkaBus`: the cluster-mode [`Bus`], one Kafka topic per gateway node.
//!
//! **Layout.** Node `gw-3`'s deliveries go to topic `<prefix>deliver.gw-3`, read by consumer
//! group `<prefix>deliver.gw-3`. A topic per node rather than one topic keyed by node: a node
//! then fetches only its own records (with a shared topic every node would fetch every
//! partition holding its key, and nodes outnumbering partitions would read each other's
//! traffic), retention and lag are per node, and a decommissioned node's topic is simply
//! deleted ([`KafkaBus::remove_node`]). The cost is one topic per node, which Kafka handles
//! into the thousands. Topics are created explicitly on first publish or subscribe with
//! `KafkaConfig::partitions` partitions; records are keyed by node id, so a node's records
//! share one partition and keep publish order whatever the count.
//!
//! **Records.** Each [`Delivery`] is one [`codec`] record. The producer is idempotent with
//! `acks=all`: [`Bus::publish`] returns once the broker has the record, and retries never
//! duplicate or reorder it.
//!
//! **Subscribing.** [`Bus::subscribe`] joins the node's group (a new group starts at the
//! beginning of the topic, so nothing published before the first subscribe is lost) and
//! feeds a bounded channel of `subscriber_queue` deliveries. A record's offset is
//! acknowledged once the delivery is in the channel; while the channel is full the consumer
//! is paused. So a restarted subscriber resumes right after the last delivery its
//! predecessor handed over: nothing handed over is replayed, and deliveries still queued in a
//! dropped channel are gone (live pushes are best effort: a reconnecting client syncs from
//! the store). That holds for a clean stop ([`KafkaBus::close`], or dropping the receiver);
//! after a crash, up to `commit_interval` of handed-over deliveries come again (offsets are
//! committed on that interval; message ids let the gateway drop what its backlog sync already
//! sent). A channel left full for longer than librdkafka's `max.poll.interval.ms` (5 min)
//! makes the node drop out of its group; it rejoins at its committed offset once drained, so
//! nothing is lost. A record that does not decode is logged and skipped, never retried forever.
//! One live subscriber per node and bus; a second process subscribing as the same node joins
//! the same group and stands by (one partition: one reader).
//!
//! ```no_run
//! # async fn example() -> Result<(), switchboard_core::bus::BusError> {
//! use switchboard_core::bus::{Bus, KafkaBus, KafkaConfig};
//! use switchboard_core::ids::NodeId;
//! let bus = KafkaBus::new(KafkaConfig { brokers: "127.0.0.1:19092".into(), ..KafkaConfig::default() })?;
//! let mut deliveries = bus.subscribe(&NodeId("gw-1".into())).await?;
//! while let Some(delivery) = deliveries.recv().await {
//!     // push delivery.payload to the sockets delivery.route names
//! }
//! bus.close().await;
//! # Ok(()) }
//! ```

mod config;
mod log;

pub use self::config::KafkaConfig;
pub use self::log::{Acked, GroupLag, KafkaLog, LogConsumer, LogRecord, PartitionLag, Sent};

use super::{codec, Bus, BusError, Delivery};
use crate::ids::NodeId;
use async_trait::async_trait;
use rand::Rng;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

/// The [`Bus`] over Kafka; see the module docs for the layout and guarantees.
pub struct KafkaBus {
    log: KafkaLog,
    subscribers: tokio::sync::Mutex<HashMap<NodeId, Subscriber>>,
    /// Flipped by `close`; subscriber tasks also stop when the bus is dropped.
    stop: watch::Sender<bool>,
}

struct Subscriber {
    /// Tells whether the node's receiver is still held.
    alive: mpsc::WeakSender<Delivery>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

/// What one node's subscription has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Deliveries put into the node's channel (and so acknowledged).
    pub handed_over: u64,
    /// Records skipped because they did not decode.
    pub skipped: u64,
    /// Times consuming was paused because the channel was full.
    pub pauses: u64,
    /// Whether consuming is paused right now.
    pub paused: bool,
}

#[derive(Default)]
struct Stats {
    handed_over: AtomicU64,
    skipped: AtomicU64,
    pauses: AtomicU64,
    paused: AtomicBool,
}

impl KafkaBus {
    /// Creates the bus's producer and admin client; no connection is made yet.
    ///
    /// # Errors
    /// [`BusError::InvalidConfig`] listing every problem with `config`, or
    /// [`BusError::Kafka`] when librdkafka rejects a setting.
    pub fn new(config: KafkaConfig) -> Result<Self, BusError> {
        Ok(Self { log: KafkaLog::new(config)?, subscribers: Default::default(), stop: watch::Sender::new(false) })
    }

    /// The log the bus writes through (shares its producer and admin client).
    pub fn log(&self) -> &KafkaLog {
        &self.log
    }

    /// The topic (and consumer group) name of `node`.
    ///
    /// # Errors
    /// [`BusError::InvalidConfig`] when the node id has characters Kafka does not allow in
    /// names (only `[A-Za-z0-9._-]`) or is empty.
    pub fn topic(&self, node: &NodeId) -> Result<String, BusError> {
        if node.0.is_empty() || !node.0.chars().all(config::is_topic_char) {
            return Err(BusError::InvalidConfig(format!("node id {:?}: only [A-Za-z0-9._-] allowed", node.0)));
        }
        Ok(self.log.config().topic(&format!("deliver.{}", node.0)))
    }

    /// What `node`'s subscription in this bus has done, if it has one.
    pub async fn stats(&self, node: &NodeId) -> Option<SubscriberStats> {
        self.subscribers.lock().await.get(node).map(|s| s.stats.snapshot())
    }

    /// Deletes a decommissioned node's topic and consumer group. Nothing may be subscribed to
    /// the node, here or elsewhere.
    ///
    /// # Errors
    /// [`BusError::AlreadySubscribed`] when this bus still has a live subscriber for it,
    /// [`BusError::Kafka`] when the broker refuses.
    pub async fn remove_node(&self, node: &NodeId) -> Result<(), BusError> {
        let topic = self.topic(node)?;
        if let Some(sub) = self.subscribers.lock().await.remove(node) {
            if sub.is_live() {
                return Err(BusError::AlreadySubscribed(node.0.clone()));
            }
            let _ = sub.task.await;
        }
        self.log.delete_topics(&[&topic]).await?;
        self.log.delete_group(&topic).await
    }

    /// Stops every subscription (each commits what it handed over and leaves its group),
    /// waits for that, then waits for records still being published. Subscribing afterwards
    /// fails with [`BusError::Closed`].
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let subscribers = std::mem::take(&mut *self.subscribers.lock().await);
        for (node, sub) in subscribers {
            if sub.task.await.is_err() {
                warn!(%node, "bus subscriber task failed");
            }
        }
        if let Err(error) = self.log.flush().await {
            warn!(%error, "records still unacknowledged at bus close");
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, node: &NodeId, delivery: Delivery) -> Result<(), BusError> {
        let topic = self.topic(node)?;
        self.log.ensure_topic(&topic, self.log.config().partitions).await?;
        self.log.send(&topic, node.0.as_bytes(), &codec::encode(&delivery)).await?;
        Ok(())
    }

    async fn publish_all(&self, node: &NodeId, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        let topic = self.topic(node)?;
        self.log.ensure_topic(&topic, self.log.config().partitions).await?;
        let payloads: Vec<Vec<u8>> = deliveries.iter().map(codec::encode).collect();
        self.log.send_all(&topic, node.0.as_bytes(), &payloads).await
    }

    async fn subscribe(&self, node: &NodeId) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let topic = self.topic(node)?;
        let mut subscribers = self.subscribers.lock().await;
        if *self.stop.borrow() {
            return Err(BusError::Closed);
        }
        if let Some(previous) = subscribers.remove(node) {
            if previous.is_live() {
                subscribers.insert(node.clone(), previous);
                return Err(BusError::AlreadySubscribed(node.0.clone()));
            }
            // Let it commit and leave first, so this one starts where it stopped.
            let _ = previous.task.await;
        }
        self.log.ensure_topic(&topic, self.log.config().partitions).await?;
        // One record in flight: it is acknowledged as soon as it is in the channel.
        let consumer = self.log.consumer(&[&topic], &topic, 1)?;
        let (tx, rx) = mpsc::channel(self.log.config().subscriber_queue);
        let stats = Arc::new(Stats::default());
        let run = run_subscriber(consumer, tx.clone(), stats.clone(), self.stop.subscribe());
        let task = tokio::spawn(run.instrument(tracing::info_span!("bus_subscriber", %node)));
        subscribers.insert(node.clone(), Subscriber { alive: tx.downgrade(), stats, task });
        info!(%node, %topic, "subscribed to the bus");
        Ok(rx)
    }
}

impl Subscriber {
    fn is_live(&self) -> bool {
        self.alive.upgrade().is_some_and(|tx| !tx.is_closed())
    }
}

impl Stats {
    fn snapshot(&self) -> SubscriberStats {
        SubscriberStats {
            handed_over: self.handed_over.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            pauses: self.pauses.load(Ordering::Relaxed),
            paused: self.paused.load(Ordering::Relaxed),
        }
    }
}

/// Moves records from the node's consumer into its channel until the receiver is dropped or
/// the bus stops, then commits and leaves.
async fn run_subscriber(
    mut consumer: LogConsumer,
    tx: mpsc::Sender<Delivery>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        // A slot first: a record is taken from Kafka only when it can be handed over.
        let Some(slot) = reserve(&mut consumer, &tx, &stats, &mut stop).await else { break };
        let record = tokio::select! {
            record = consumer.next() => record,
            _ = tx.closed() => break,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        match record {
            Ok(record) => {
                failures = 0;
                match codec::decode(&record.payload) {
                    Ok(delivery) => {
                        // Counted first, so the count never lags what the receiver has seen.
                        stats.handed_over.fetch_add(1, Ordering::Relaxed);
                        slot.send(delivery);
                    }
                    Err(error) => {
                        warn!(%error, partition = record.partition, offset = record.offset, "skipping undecodable bus record");
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                record.ack();
            }
            Err(error) => {
                failures += 1;
                warn!(%error, failures, "bus consumer error");
                if backoff(failures, &tx, &mut stop).await.is_break() {
                    break;
                }
            }
        }
    }
    consumer.close().await;
}

/// A channel slot, pausing the consumer while the channel is full. `None` once the receiver
/// is gone or the bus stops.
async fn reserve<'a>(
    consumer: &mut LogConsumer,
    tx: &'a mpsc::Sender<Delivery>,
    stats: &Stats,
    stop: &mut watch::Receiver<bool>,
) -> Option<mpsc::Permit<'a, Delivery>> {
    match tx.try_reserve() {
        Ok(slot) => return Some(slot),
        Err(mpsc::error::TrySendError::Closed(())) => return None,
        Err(mpsc::error::TrySendError::Full(())) => {}
    }
    // Not fatal if refused: librdkafka's prefetch bound still caps memory.
    if let Err(error) = consumer.pause() {
        warn!(%error, "cannot pause the bus consumer");
    }
    stats.pauses.fetch_add(1, Ordering::Relaxed);
    stats.paused.store(true, Ordering::Relaxed);
    let slot = tokio::select! {
        slot = tx.reserve() => slot.ok(),
        _ = stop.wait_for(|stopped| *stopped) => None,
    };
    stats.paused.store(false, Ordering::Relaxed);
    if let Err(error) = consumer.resume() {
        warn!(%error, "cannot resume the bus consumer");
    }
    slot
}

/// Waits before retrying after the `failures`-th consecutive error: capped, jittered
/// exponential backoff, cut short when the subscription ends.
async fn backoff(failures: u32, tx: &mpsc::Sender<Delivery>, stop: &mut watch::Receiver<bool>) -> ControlFlow<()> {
    let ceiling = Duration::from_millis(50).saturating_mul(1 << failures.min(7)).min(Duration::from_secs(5));
    let wait = ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    tokio::select! {
        _ = tokio::time::sleep(wait) => ControlFlow::Continue(()),
        _ = tx.closed() => ControlFlow::Break(()),
        _ = stop.wait_for(|stopped| *stopped) => ControlFlow::Break(()),
    }
}

/// Whether retrying after `error` can help: not for refusals that will repeat (bad config,
/// authorization, a record too large, an illegal topic).
pub(super) fn is_retryable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match error {
        KafkaError::ClientConfig(..)
        | KafkaError::ClientCreation(_)
        | KafkaError::Nul(_)
        | KafkaError::Subscription(_) => false,
        _ => !matches!(
            error.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::TopicAuthorizationFailed
                    | C::GroupAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::InvalidTopic
                    | C::InvalidPartitions
                    | C::InvalidReplicationFactor
                    | C::InvalidConfig
                    | C::PolicyViolation
                    | C::UnsupportedVersion
                    | C::InvalidArgument
            )
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn node_topics_are_prefixed_and_checked() {
        let bus = KafkaBus::new(KafkaConfig { topic_prefix: "t1.".into(), ..KafkaConfig::default() }).unwrap();
        assert_eq!(bus.topic(&NodeId("gw-1".into())).unwrap(), "t1.deliver.gw-1");
        for bad in ["", "gw 1", "gw/1", "gw:1"] {
            assert!(matches!(bus.topic(&NodeId(bad.into())), Err(BusError::InvalidConfig(_))), "{bad:?}");
        }
    }

    #[test]
    fn invalid_config_is_refused_with_every_problem() {
        let Err(BusError::InvalidConfig(why)) =
            KafkaBus::new(KafkaConfig { partitions: 0, brokers: "".into(), ..KafkaConfig::default() })
        else {
            panic!("accepted a bad config");
        };
        assert!(why.contains("partitions") && why.contains("brokers"), "{why}");
    }

    #[test]
    fn retryability() {
        let timeout = BusError::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
        let too_large = BusError::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(timeout.is_retryable());
        assert!(!too_large.is_retryable());
        assert_eq!(timeout.code(), "bus_unavailable");
    }
}
