//! The text stored in Redis and the rules that judge it, free of I/O so they are unit-tested
//! without a server. Layouts are described in the parent module's docs.

use crate::ids::{ConnId, DeviceId, NodeId, UserId};
use crate::presence::{PresenceEntry, PresenceError};
use std::collections::HashMap;
use std::time::Instant;

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidConfig`] when the prefix holds `{` or `}`: Redis Cluster hashes
    /// only the first `{...}` of a key, so a braced prefix would put every key in one slot.
    pub fn new(prefix: &str) -> Result<Self, PresenceError> {
        if prefix.contains(['{', '}']) {
            return Err(PresenceError::InvalidConfig("presence key prefix must not contain '{' or '}'"));
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    /// The hash of one user's entries: `<prefix>{u:<user>}`.
    pub fn user(&self, user: UserId) -> String {
        format!("{}{{u:{user}}}", self.prefix)
    }

    /// The flag refusing one user's tokens cluster-wide: `<prefix>{u:<user>}:revoked` (in the
    /// slot of the user's entries).
    pub fn revoked(&self, user: UserId) -> String {
        format!("{}{{u:{user}}}:revoked", self.prefix)
    }

    /// The hash of every node's registration: `<prefix>{nodes}`.
    pub fn nodes(&self) -> String {
        format!("{}{{nodes}}", self.prefix)
    }

    /// The flag a node sets while it serves a cluster traffic tail: `<prefix>tap:wanted`.
    pub fn tap_wanted(&self) -> String {
        format!("{}tap:wanted", self.prefix)
    }

    /// The hash of every node's admin listener address: `<prefix>{nodes}:admin` (field node id).
    pub fn node_admins(&self) -> String {
        format!("{}{{nodes}}:admin", self.prefix)
    }
}

/// One field of a user hash, parsed: `<node>:<conn>` -> `<epoch>:<expires_ms>:<device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredEntry {
    /// Which node holds the connection.
    pub node: NodeId,
    /// The connection, unique within that node's epoch.
    pub conn: ConnId,
    /// The node incarnation that wrote it.
    pub epoch: u64,
    /// Unix ms after which it is dead unless refreshed.
    pub expires_ms: i64,
    /// Which device.
    pub device: DeviceId,
}

impl StoredEntry {
    /// Parses a field and its value; `None` for anything this module did not write.
    pub fn parse(field: &str, value: &str) -> Option<Self> {
        let (node, conn) = field.rsplit_once(':')?;
        if node.is_empty() {
            return None;
        }
        let mut parts = value.splitn(3, ':');
        Some(Self {
            node: NodeId(node.to_owned()),
            conn: ConnId(conn.parse().ok()?),
            epoch: parts.next()?.parse().ok()?,
            expires_ms: parts.next()?.parse().ok()?,
            device: DeviceId(parts.next()?.to_owned()),
        })
    }

    /// The hash field: `<node>:<conn>`. The conn id is last and numeric, so a node id may
    /// itself contain `:`.
    pub fn field(node: &NodeId, conn: ConnId) -> String {
        format!("{node}:{conn}")
    }

    /// The hash value: `<epoch>:<expires_ms>:<device>`; the device is last, so it may hold `:`.
    pub fn value(epoch: u64, expires_ms: i64, device: &DeviceId) -> String {
        format!("{epoch}:{expires_ms}:{device}")
    }

    /// This entry's field, as stored.
    pub fn own_field(&self) -> String {
        Self::field(&self.node, self.conn)
    }

    /// This entry's value, as stored (parse then render is the identity on what we write).
    pub fn own_value(&self) -> String {
        Self::value(self.epoch, self.expires_ms, &self.device)
    }

    /// The trait's view of it.
    pub fn into_entry(self, user: UserId) -> PresenceEntry {
        PresenceEntry { user, node: self.node, conn: self.conn, device: self.device }
    }
}

/// Parses a whole user hash, skipping fields that do not parse.
pub(super) fn parse_user_hash(raw: HashMap<String, String>) -> Vec<StoredEntry> {
    raw.iter().filter_map(|(f, v)| StoredEntry::parse(f, v)).collect()
}

/// A registered gateway node, as listed by `RedisPresence::list_nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id.
    pub node: NodeId,
    /// Its current incarnation; entries written under another epoch are dead.
    pub epoch: u64,
    /// Where other nodes reach it, as it advertised.
    pub addr: String,
    /// Unix ms after which it counts as dead unless it heartbeats again.
    pub expires_ms: i64,
}

impl NodeInfo {
    /// Parses a field (the node id) and its value `<epoch>:<expires_ms>:<addr>`.
    pub(super) fn parse(field: &str, value: &str) -> Option<Self> {
        let mut parts = value.splitn(3, ':');
        Some(Self {
            node: NodeId(field.to_owned()),
            epoch: parts.next()?.parse().ok()?,
            expires_ms: parts.next()?.parse().ok()?,
            addr: parts.next()?.to_owned(),
        })
    }

    /// The stored value for these fields.
    pub(super) fn value(epoch: u64, expires_ms: i64, addr: &str) -> String {
        format!("{epoch}:{expires_ms}:{addr}")
    }

    /// This record's value, as stored.
    pub(super) fn own_value(&self) -> String {
        Self::value(self.epoch, self.expires_ms, &self.addr)
    }
}

/// What a reader can conclude about one entry from a node table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Its node is registered under the entry's epoch, and neither has expired.
    Live,
    /// Dead for good: expired itself, or written by an older epoch of its node. Safe to purge.
    Dead,
    /// Not live by this table, but a newer table might say otherwise: the node is unknown, has a
    /// newer epoch than the table shows, or its registration looked expired. Offline, not purged.
    Unsure,
}

/// The node registrations as read at one moment.
#[derive(Debug)]
pub(super) struct NodeTable {
    /// By node id.
    pub nodes: HashMap<NodeId, NodeInfo>,
    /// When it was read, for the reader's cache.
    pub fetched: Instant,
}

impl NodeTable {
    /// Parses the nodes hash, skipping fields that do not parse.
    pub fn parse(raw: HashMap<String, String>, fetched: Instant) -> Self {
        let nodes = raw.iter().filter_map(|(f, v)| NodeInfo::parse(f, v)).map(|n| (n.node.clone(), n)).collect();
        Self { nodes, fetched }
    }

    /// Judges one entry at `now_ms`.
    pub fn judge(&self, e: &StoredEntry, now_ms: i64) -> Verdict {
        if e.expires_ms <= now_ms {
            return Verdict::Dead;
        }
        match self.nodes.get(&e.node) {
            Some(n) if n.epoch > e.epoch => Verdict::Dead,
            Some(n) if n.epoch == e.epoch && n.expires_ms > now_ms => Verdict::Live,
            _ => Verdict::Unsure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, epoch: u64, expires_ms: i64) -> StoredEntry {
        StoredEntry { node: NodeId(node.into()), conn: ConnId(7), epoch, expires_ms, device: DeviceId("d".into()) }
    }

    fn table(nodes: &[(&str, u64, i64)]) -> NodeTable {
        let raw = nodes.iter().map(|(n, e, x)| (n.to_string(), NodeInfo::value(*e, *x, "10.0.0.1:8080"))).collect();
        NodeTable::parse(raw, Instant::now())
    }

    #[test]
    fn keys_are_hash_tagged_per_user_and_reject_braced_prefixes() {
        let k = Keys::new("test:abc:").unwrap();
        assert_eq!(k.user(UserId(42)), "test:abc:{u:42}");
        assert_eq!(k.nodes(), "test:abc:{nodes}");
        assert!(matches!(Keys::new("test:{abc}:"), Err(PresenceError::InvalidConfig(_))));
    }

    #[test]
    fn entries_round_trip_with_colons_in_node_and_device() {
        let node = NodeId("gw:eu:1".into());
        let device = DeviceId("web:tab:3".into());
        let field = StoredEntry::field(&node, ConnId(99));
        let value = StoredEntry::value(5, 1_700_000_000_000, &device);
        let e = StoredEntry::parse(&field, &value).unwrap();
        assert_eq!(
            (e.node.clone(), e.conn, e.epoch, e.expires_ms, e.device.clone()),
            (node, ConnId(99), 5, 1_700_000_000_000, device)
        );
        assert_eq!((e.own_field(), e.own_value()), (field, value));
    }

    #[test]
    fn malformed_records_are_skipped() {
        for (f, v) in [("n:x", "1:2:d"), (":5", "1:2:d"), ("n:5", "x:2:d"), ("n:5", "1:2"), ("n5", "1:2:d")] {
            assert_eq!(StoredEntry::parse(f, v), None, "{f} {v}");
        }
        assert_eq!(NodeInfo::parse("n", "1:2"), None);
        let n = NodeInfo::parse("n", "3:4:[::1]:80").unwrap();
        assert_eq!((n.epoch, n.expires_ms, n.addr.as_str()), (3, 4, "[::1]:80"));
        assert_eq!(n.own_value(), "3:4:[::1]:80");
    }

    #[test]
    fn verdicts_follow_expiry_and_epoch() {
        let now = 1_000;
        let t = table(&[("a", 2, 2_000), ("gone", 1, 500)]);
        assert_eq!(t.judge(&entry("a", 2, 1_500), now), Verdict::Live);
        assert_eq!(t.judge(&entry("a", 2, 900), now), Verdict::Dead, "entry expired");
        assert_eq!(t.judge(&entry("a", 1, 1_500), now), Verdict::Dead, "older epoch");
        assert_eq!(t.judge(&entry("a", 3, 1_500), now), Verdict::Unsure, "newer epoch than the table knows");
        assert_eq!(t.judge(&entry("gone", 1, 1_500), now), Verdict::Unsure, "node registration expired");
        assert_eq!(t.judge(&entry("new", 1, 1_500), now), Verdict::Unsure, "node unknown");
    }
}
