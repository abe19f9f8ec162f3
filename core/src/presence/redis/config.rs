//! [`RedisPresenceConfig`] and the defaults.

use crate::ids::NodeId;
use crate::presence::PresenceError;
use std::time::Duration;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "switchboard:presence:";
/// Default lifetime of a registration or entry that is not refreshed: 30 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Default number of keys in flight at once in multi-user operations.
pub const DEFAULT_BATCH: usize = 256;
/// Default time a reader reuses the node table: 1 s.
pub const DEFAULT_NODE_CACHE: Duration = Duration::from_secs(1);
/// Default wait for one Redis answer: 1 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an expired node record is kept (guarding its epoch) before `list_nodes` drops it.
pub const NODE_FORGET: Duration = Duration::from_secs(3600);
/// Most failed writes queued for retry; past it, new failures are only logged.
pub const MAX_PENDING: usize = 65_536;

/// Settings of one node's [`RedisPresence`](super::RedisPresence).
#[derive(Debug, Clone)]
pub struct RedisPresenceConfig {
    /// Prepended to every key; must not contain `{` or `}`. Default: [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// This node's id.
    pub node: NodeId,
    /// This incarnation of the node; must grow across restarts (the start time in Unix ms does).
    pub epoch: u64,
    /// Where other nodes reach this one, as shown by `list_nodes`.
    pub advertised_addr: String,
    /// Where other nodes reach this one's admin listener, written beside each registration
    /// (see `RedisPresence::node_admins`). Default: none.
    pub admin_addr: Option<String>,
    /// How long the registration and each entry live unless refreshed. Default: 30 s.
    pub ttl: Duration,
    /// Keys in flight at once in multi-user operations. Default: 256.
    pub batch: usize,
    /// How long a reader reuses the node table; zero reads it with every call. Default: 1 s.
    pub node_cache: Duration,
    /// Longest wait for one Redis answer (and to connect). Default: 1 s.
    pub timeout: Duration,
}

impl RedisPresenceConfig {
    /// Defaults for the node `node`, incarnation `epoch`, reachable at `advertised_addr`.
    pub fn new(node: NodeId, epoch: u64, advertised_addr: impl Into<String>) -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            node,
            epoch,
            advertised_addr: advertised_addr.into(),
            admin_addr: None,
            ttl: DEFAULT_TTL,
            batch: DEFAULT_BATCH,
            node_cache: DEFAULT_NODE_CACHE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// With another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// With an admin listener address to advertise.
    pub fn with_admin_addr(mut self, addr: impl Into<String>) -> Self {
        self.admin_addr = Some(addr.into());
        self
    }

    /// With another TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// With another node cache age.
    pub fn with_node_cache(mut self, node_cache: Duration) -> Self {
        self.node_cache = node_cache;
        self
    }

    /// The first unusable setting, if any.
    pub(super) fn validate(&self) -> Result<(), PresenceError> {
        let problem = if self.node.0.is_empty() {
            "node id must not be empty"
        } else if self.ttl < Duration::from_millis(10) {
            "ttl must be at least 10ms"
        } else if self.batch == 0 {
            "batch must be at least 1"
        } else if self.timeout.is_zero() {
            "timeout must be above zero"
        } else {
            return Ok(());
        };
        Err(PresenceError::InvalidConfig(problem))
    }
}
