//! The `Presence` seam: which node holds which user's connections.
//!
//! Standalone mode uses [`InProcPresence`]; cluster mode will keep the same map in Redis.

use crate::ids::{ConnId, DeviceId, NodeId, UserId};
use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::HashMap;

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
                v.iter()
                    .map(|(c, n, d)| PresenceEntry { user, node: n.clone(), conn: *c, device: d.clone() })
                    .collect()
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
        let e = |u, c| PresenceEntry { user: UserId(u), node: NodeId("n".into()), conn: ConnId(c), device: DeviceId("d".into()) };
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
}
