//! The `Bus` seam: how routed frames reach the gateway node holding the recipient.
//!
//! One [`Delivery`] per node and message: the payload is serialized once and the node fans it
//! out to its own sockets. Standalone mode uses [`InProcBus`], a bounded channel per node;
//! cluster mode uses `KafkaBus` (feature `kafka`): a topic per node carrying each delivery as
//! a [`codec`] record, plus `KafkaLog`, the keyed-log helper the router's inbound topic uses.
//! Both buses pass the same contract suite, `contract::bus_contract` (feature `testing`).

use crate::error::ErrorCode;
use crate::ids::{ConnId, MessageId, NodeId, UserId};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

pub mod codec;
#[cfg(feature = "testing")]
pub mod test_broker;
#[cfg(any(test, feature = "testing"))]
pub mod contract;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
pub use self::kafka::{Acked, GroupLag, KafkaBus, KafkaConfig, KafkaLog, LogConsumer, LogRecord, PartitionLag, Sent, SubscriberStats};

/// A bus failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No subscriber for the node (it is gone).
    #[error("node {0} is not subscribed")]
    UnknownNode(String),
    /// The node already has a subscriber.
    #[error("node {0} is already subscribed")]
    AlreadySubscribed(String),
    /// The subscriber went away mid-publish.
    #[error("bus closed")]
    Closed,
    /// The Kafka client or broker failed (the cause says which).
    #[cfg(feature = "kafka")]
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A bus setting or a node id is unusable (reason given).
    #[cfg(feature = "kafka")]
    #[error("invalid bus config: {0}")]
    InvalidConfig(String),
}

impl ErrorCode for BusError {
    fn code(&self) -> &'static str {
        match self {
            Self::UnknownNode(_) => "unknown_node",
            Self::AlreadySubscribed(_) => "already_subscribed",
            Self::Closed => "bus_closed",
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => "bus_unavailable",
            #[cfg(feature = "kafka")]
            Self::InvalidConfig(_) => "bus_invalid_config",
        }
    }
    fn http_status(&self) -> u16 {
        match self {
            #[cfg(feature = "kafka")]
            Self::InvalidConfig(_) => 500,
            _ => 503,
        }
    }
    fn is_retryable(&self) -> bool {
        match self {
            Self::AlreadySubscribed(_) => false,
            #[cfg(feature = "kafka")]
            Self::Kafka(e) => kafka::is_retryable(e),
            #[cfg(feature = "kafka")]
            Self::InvalidConfig(_) => false,
            _ => true,
        }
    }
}

/// Which sockets of a node a delivery is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every connection of these users, except `skip` (the sending connection).
    Users {
        /// Recipients on this node.
        users: Vec<UserId>,
        /// A connection to leave out.
        skip: Option<ConnId>,
    },
    /// Exactly one connection (acks and errors).
    Conn(ConnId),
}

/// A frame on its way to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Target sockets.
    pub route: Route,
    /// The serialized JSON frame, shared by every recipient.
    pub payload: Bytes,
    /// For message frames: the id, used to drop a live copy of what the backlog already sent.
    pub message_id: Option<MessageId>,
}

/// Depth of each node's in-process queue.
pub const INPROC_QUEUE: usize = 65536;

/// Carries deliveries to gateway nodes.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends a delivery to a node, waiting while its queue is full.
    async fn publish(&self, node: &NodeId, delivery: Delivery) -> Result<(), BusError>;
    /// Sends deliveries to one node in this order, returning once all are confirmed.
    /// Implementations pipeline them; the default sends one after another.
    async fn publish_all(&self, node: &NodeId, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        for d in deliveries {
            self.publish(node, d).await?;
        }
        Ok(())
    }
    /// The stream of deliveries addressed to `node`.
    async fn subscribe(&self, node: &NodeId) -> Result<mpsc::Receiver<Delivery>, BusError>;
}

/// In-process bus: a bounded channel per node.
#[derive(Default)]
pub struct InProcBus {
    nodes: DashMap<NodeId, mpsc::Sender<Delivery>>,
}

impl InProcBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for InProcBus {
    async fn publish(&self, node: &NodeId, delivery: Delivery) -> Result<(), BusError> {
        let tx = self.nodes.get(node).map(|t| t.clone()).ok_or_else(|| BusError::UnknownNode(node.0.clone()))?;
        tx.send(delivery).await.map_err(|_| BusError::Closed)
    }

    async fn subscribe(&self, node: &NodeId) -> Result<mpsc::Receiver<Delivery>, BusError> {
        use dashmap::mapref::entry::Entry;
        let (tx, rx) = mpsc::channel(INPROC_QUEUE);
        match self.nodes.entry(node.clone()) {
            Entry::Occupied(mut e) if e.get().is_closed() => {
                e.insert(tx);
            }
            Entry::Occupied(_) => return Err(BusError::AlreadySubscribed(node.0.clone())),
            Entry::Vacant(v) => {
                v.insert(tx);
            }
        }
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_in_order_to_the_subscribed_node() {
        let bus = InProcBus::new();
        let n = NodeId("a".into());
        assert!(matches!(bus.publish(&n, d(0)).await, Err(BusError::UnknownNode(_))));
        let mut rx = bus.subscribe(&n).await.unwrap();
        assert!(matches!(bus.subscribe(&n).await, Err(BusError::AlreadySubscribed(_))));
        for i in 0..3 {
            bus.publish(&n, d(i)).await.unwrap();
        }
        for i in 0..3 {
            assert_eq!(rx.recv().await.unwrap().message_id, Some(MessageId(i)));
        }
        drop(rx);
        assert!(bus.subscribe(&n).await.is_ok(), "a dead subscriber can be replaced");
    }

    fn d(i: i64) -> Delivery {
        Delivery { route: Route::Conn(ConnId(1)), payload: Bytes::new(), message_id: Some(MessageId(i)) }
    }
}
