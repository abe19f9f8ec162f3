//! This node's live connections, by user (for fan-out) and by id (for replies).

use super::outbox::ConnShared;
use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use switchboard_core::ids::{ConnId, NodeId, UserId};
use switchboard_core::presence::{Presence, PresenceEntry};

/// Live connections of one node.
#[derive(Default)]
pub struct Registry {
    by_user: DashMap<UserId, Vec<Arc<ConnShared>>>,
    by_conn: DashMap<ConnId, Arc<ConnShared>>,
}

impl Registry {
    /// Adds a connection.
    pub fn insert(&self, c: Arc<ConnShared>) {
        self.by_conn.insert(c.id, c.clone());
        self.by_user.entry(c.user).or_default().push(c);
    }

    /// Removes a connection.
    pub fn remove(&self, c: &ConnShared) {
        self.by_conn.remove(&c.id);
        self.by_user.remove_if_mut(&c.user, |_, v| {
            v.retain(|x| x.id != c.id);
            v.is_empty()
        });
    }

    /// Calls `f` for each connection of `user`.
    pub fn for_user(&self, user: UserId, mut f: impl FnMut(&Arc<ConnShared>)) {
        if let Some(v) = self.by_user.get(&user) {
            v.iter().for_each(&mut f);
        }
    }

    /// One connection.
    pub fn conn(&self, id: ConnId) -> Option<Arc<ConnShared>> {
        self.by_conn.get(&id).map(|c| c.clone())
    }

    /// Calls `f` for every connection.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<ConnShared>)) {
        self.by_conn.iter().for_each(|e| f(e.value()));
    }

    /// Closes every connection of `user`.
    pub fn close_user(&self, user: UserId, code: u16, reason: &'static str) {
        self.for_user(user, |c| c.close(code, reason));
    }

    /// Closes every connection.
    pub fn close_all(&self, code: u16, reason: &'static str) {
        self.for_each(|c| c.close(code, reason));
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    /// Every user with a connection here.
    pub fn users(&self) -> Vec<UserId> {
        self.by_user.iter().map(|e| *e.key()).collect()
    }

    /// Whether `user` has a connection here.
    pub fn has_user(&self, user: UserId) -> bool {
        self.by_user.contains_key(&user)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}

/// Standalone presence: the node's own registry *is* the presence map, so no second copy of
/// every connection (with its node and device strings) is kept. `connected` and
/// `disconnected` only report; the connection task inserts and removes registry entries
/// itself (insert before `connected`, remove before `disconnected`).
pub struct LocalPresence {
    registry: Arc<Registry>,
    node: NodeId,
}

impl LocalPresence {
    /// Presence over `registry` for `node`.
    pub fn new(registry: Arc<Registry>, node: NodeId) -> Self {
        Self { registry, node }
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn connected(&self, _entry: PresenceEntry) {}

    async fn disconnected(&self, user: UserId, _conn: ConnId) -> bool {
        !self.registry.has_user(user)
    }

    async fn locate(&self, users: &[UserId]) -> HashMap<NodeId, Vec<UserId>> {
        let here: Vec<UserId> = users.iter().copied().filter(|u| self.registry.has_user(*u)).collect();
        if here.is_empty() {
            HashMap::new()
        } else {
            HashMap::from([(self.node.clone(), here)])
        }
    }

    async fn is_online(&self, user: UserId) -> bool {
        self.registry.has_user(user)
    }

    async fn connections(&self, user: UserId) -> Vec<PresenceEntry> {
        let mut out = Vec::new();
        self.registry.for_user(user, |c| {
            out.push(PresenceEntry { user, node: self.node.clone(), conn: c.id, device: c.device.clone() })
        });
        out
    }
}
