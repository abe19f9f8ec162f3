//! The `Presence` seam: which node holds which user's connections.
//!
//! Standalone mode uses [`InProcPresence`]; cluster mode keeps the same map in Redis with
//! `RedisPresence` (feature `redis`, module `redis`, whose docs give the key layout and costs).
//! Both pass the same contract suite, `contract::presence_contract` (feature `testing`).
//!
//! The trait methods return plain values: they sit on the connection and routing paths, where
//! the only sensible reaction to a presence failure is to carry on. An implementation that can
//! fail (Redis) degrades safely (an unreadable user counts as offline, a failed write is
//! retried at the next [`Presence::refresh`]) and logs; its own management calls return
//! [`PresenceError`].

use crate::error::ErrorCode;
use crate::ids::{ConnId, DeviceId, NodeId, UserId};
use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::HashMap;

#[cfg(any(test, feature = "testing"))]
pub mod contract;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{Keys, NodeInfo, RedisPresence, RedisPresenceConfig, RedisTarget, Registration};

/// A presence failure, from the calls that can report one (registration, refresh, listing).
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The presence backend could not be reached or answered with an error.
    #[cfg(feature = "redis")]
    #[error("presence backend error")]
    Redis(#[from] ::redis::RedisError),
    /// A newer incarnation of this node has registered: this process is a zombie and its
    /// entries are already ignored by every reader.
    #[error("node {node} runs with epoch {current}, newer than ours ({ours})")]
    StaleEpoch {
        /// The node id both incarnations share.
        node: String,
        /// This process's epoch.
        ours: u64,
        /// The epoch registered in the backend.
        current: u64,
    },
    /// This node's registration had expired before the heartbeat that renewed it: meanwhile
    /// every other node counted its users as offline, and readers may have purged its entries.
    /// The registration is renewed; the node must announce its connections again (call
    /// [`Presence::connected`] for each) or close them so their clients reconnect.
    #[error("presence registration of node {node} had lapsed")]
    Lapsed {
        /// This node.
        node: String,
    },
    /// A presence setting is unusable (reason given).
    #[error("invalid presence config: {0}")]
    InvalidConfig(&'static str),
}

impl ErrorCode for PresenceError {
    fn code(&self) -> &'static str {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => "presence_unavailable",
            Self::StaleEpoch { .. } => "presence_stale_epoch",
            Self::Lapsed { .. } => "presence_lapsed",
            Self::InvalidConfig(_) => "presence_invalid_config",
        }
    }
    fn http_status(&self) -> u16 {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => 503,
            Self::StaleEpoch { .. } => 409,
            Self::Lapsed { .. } => 503,
            Self::InvalidConfig(_) => 500,
        }
    }
    fn is_retryable(&self) -> bool {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => true,
            Self::Lapsed { .. } => true,
            Self::StaleEpoch { .. } | Self::InvalidConfig(_) => false,
        }
    }
}

/// One live connection of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// Whose.
    pub user: UserId,
    /// Where.
    pub node: NodeId,
    /// Which socket.
    pub conn: ConnId,
    /// Which device.
    pub device: DeviceId,
}

/// Who is connected where.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records a connection.
    async fn connected(&self, entry: PresenceEntry);
    /// Forgets a connection; returns true when it was the user's last.
    async fn disconnected(&self, user: UserId, conn: ConnId) -> bool;
    /// The nodes holding any of `users`, with the users each holds. Offline users are absent.
    async fn locate(&self, users: &[UserId]) -> HashMap<NodeId, Vec<UserId>>;
    /// Whether the user has any live connection.
    async fn is_online(&self, user: UserId) -> bool;
    /// Every live connection of a user.
    async fn connections(&self, user: UserId) -> Vec<PresenceEntry>;
    /// Keeps this node's entries for `users` (the users it holds connections of) alive, and the
    /// node itself: an implementation with TTLs forgets what is not refreshed within one TTL.
    /// A gateway calls it every `ttl / 3` with all its users. In-process presence has no TTLs,
    /// so the default does nothing.
    ///
    /// # Errors
    ///
    /// The backend's failure; the caller logs it and tries again at the next tick. Two need
    /// more: [`PresenceError::Lapsed`] (announce every local connection again) and
    /// [`PresenceError::StaleEpoch`] (stop serving: a newer incarnation owns the node id).
    async fn refresh(&self, users: &[UserId]) -> Result<(), PresenceError> {
        let _ = users;
        Ok(())
    }
}

/// In-process presence: a concurrent map user -> connections.
#[derive(Default)]
pub struct InProcPresence {
    map: DashMap<UserId, Vec<(ConnId, NodeId, DeviceId)>>,
}

impl InProcPresence {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Presence for InProcPresence {
    async fn connected(&self, e: PresenceEntry) {
        self.map.entry(e.user).or_default().push((e.conn, e.node, e.device));
    }

    async fn disconnected(&self, user: UserId, conn: ConnId) -> bool {
        let mut last = false;
        self.map.remove_if_mut(&user, |_, v| {
            v.retain(|(c, _, _)| *c != conn);
            last = v.is_empty();
            last
        });
        last
    }

    async fn locate(&self, users: &[UserId]) -> HashMap<NodeId, Vec<UserId>> {
        let mut out: HashMap<NodeId, Vec<UserId>> = HashMap::new();
        for u in users {
            if let Some(conns) = self.map.get(u) {
                let mut nodes: Vec<&NodeId> = conns.iter().map(|(_, n, _)| n).collect();
                nodes.dedup();
                for n in nodes {
                    let list = out.entry(n.clone()).or_default();
                    if list.last() != Some(u) {
                        list.push(*u);
                    }
                }
            }
        }
        out
    }

    async fn is_online(&self, user: UserId) -> bool {
        self.map.get(&user).is_some_and(|v| !v.is_empty())
    }

    async fn connections(&self, user: UserId) -> Vec<PresenceEntry> {
        self.map
            .get(&user)
            .map(|v| {
                v.iter().map(|(c, n, d)| PresenceEntry { user, node: n.clone(), conn: *c, device: d.clone() }).collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracks_connections_per_user() {
        let p = InProcPresence::new();
        let e = |u, c| PresenceEntry {
            user: UserId(u),
            node: NodeId("n".into()),
            conn: ConnId(c),
            device: DeviceId("d".into()),
        };
        p.connected(e(1, 10)).await;
        p.connected(e(1, 11)).await;
        p.connected(e(2, 12)).await;
        let located = p.locate(&[UserId(1), UserId(2), UserId(3)]).await;
        assert_eq!(located[&NodeId("n".into())], vec![UserId(1), UserId(2)]);
        assert!(!p.disconnected(UserId(1), ConnId(10)).await);
        assert!(p.is_online(UserId(1)).await);
        assert!(p.disconnected(UserId(1), ConnId(11)).await);
        assert!(!p.is_online(UserId(1)).await);
        assert_eq!(p.connections(UserId(2)).await.len(), 1);
    }

    #[tokio::test]
    async fn in_process_presence_passes_the_contract() {
        let p = InProcPresence::new();
        let (a, b) = (NodeId("gw-a".into()), NodeId("gw-b".into()));
        contract::presence_contract(&p, &a, &p, &b).await;
        assert!(p.refresh(&[UserId(1)]).await.is_ok(), "in-process refresh is a no-op");
    }
}
