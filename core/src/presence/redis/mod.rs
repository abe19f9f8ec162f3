//! [`RedisPresence`]: the presence map in Redis or Redis Cluster, for cluster mode.
//!
//! Every gateway node holds one `RedisPresence` for itself: it writes only its own node's
//! entries (an entry naming another node is ignored with a warning; `disconnected` removes this
//! node's connection) and reads everyone's.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard_core::presence::PresenceError> {
//! use switchboard_core::ids::{NodeId, UserId};
//! use switchboard_core::presence::{Presence, RedisPresence, RedisPresenceConfig, RedisTarget};
//!
//! let target = RedisTarget::Cluster(vec!["redis://10.0.0.5:7000".into()]);
//! let epoch = switchboard_core::time::now_ms() as u64; // grows across restarts
//! let cfg = RedisPresenceConfig::new(NodeId("gw-1".into()), epoch, "10.0.0.7:8080");
//! let presence = RedisPresence::connect(&target, cfg).await?; // registers gw-1
//! // every ttl / 3, with every user this node holds connections of:
//! presence.refresh(&[UserId(101), UserId(202)]).await?;
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! With `P` the configured prefix (default `switchboard:presence:`):
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P{u:<user>}` | hash | field `<node>:<conn>` → `<epoch>:<expires_ms>:<device>`, one per connection |
//! | `P{nodes}` | hash | field `<node>` → `<epoch>:<expires_ms>:<advertised addr>`, one per node |
//! | `Ptap:wanted` | string | set (with a TTL) while some node serves a traffic tail: processes publish their traffic events to the tap topic only then |
//! | `P{nodes}:admin` | hash | field `<node>` → its admin listener address (`host:port`), rewritten with each heartbeat |
//!
//! `expires_ms` is a Unix time in ms. A user key carries a Redis TTL of at least `ttl`, raised
//! by every write and refresh, so a user whose nodes all died leaves no key behind.
//!
//! # TTLs and epochs
//!
//! An entry counts as live when all of these hold:
//! - its own `expires_ms` is in the future: the node re-arms it every refresh (`ttl / 3`), so
//!   an entry whose node died, or whose delete was lost, is gone within one `ttl`;
//! - its node is registered and that registration's `expires_ms` is in the future: the node
//!   heartbeats with each refresh, so a dead node's users all drop out at once, within one `ttl`
//!   of its last heartbeat, without anyone touching their keys;
//! - its `epoch` equals the node's registered epoch. A restarted node registers a new (larger)
//!   epoch, which at once makes every entry of its previous life dead, even those whose own
//!   expiry has not come yet, and those that reuse a conn id. Registration refuses an epoch
//!   older than the registered one ([`PresenceError::StaleEpoch`]), so a zombie process cannot
//!   bring its old entries back.
//!
//! Readers filter, then purge lazily: entries that are dead for good (expired, or from an older
//! epoch) are deleted with a compare-and-delete script, so a purge never removes an entry
//! rewritten since it was read. A node record stays one hour ([`NODE_FORGET`]) after it
//! expired, still guarding its epoch, and is then dropped by [`RedisPresence::list_nodes`].
//!
//! Expiry times come from the writer's clock and are compared on the reader's: keep the nodes'
//! clocks in sync (NTP) to well under `ttl`, which skew only shifts.
//!
//! Readers cache the node table for `node_cache` (1 s). The cache cannot keep a dead node alive
//! (its expiry is in the table); an entry the cached table cannot confirm (unknown node, newer
//! epoch, expired registration) triggers one re-read before it is called offline. The one
//! effect of the cache: a restarted node's old entries may be seen for up to `node_cache` by a
//! reader that has not yet seen the new epoch.
//!
//! # Why it is cluster-safe
//!
//! Every command and every script touches exactly one key, and a user's entries share one key,
//! so everything a single operation must see atomically lives in one slot: `{u:<id>}` is the
//! hash tag, which is why the prefix may not hold braces. Operations over many users (locate,
//! refresh, purge) send one request per key, concurrently over the multiplexed connection (at
//! most `batch` in flight), instead of one cross-slot pipeline, which Redis Cluster refuses.
//! The node table is one key, read whole; no `KEYS`/`SCAN` is ever needed.
//!
//! # Cost per operation
//!
//! `N` users, `B` = `batch`. "+nodes" is one `HGETALL P{nodes}` sent alongside when the cached
//! node table is older than `node_cache`; "+recheck" one more round trip only when an entry's
//! node is unknown to the cache; "+purge" one `EVALSHA` per user with dead entries.
//!
//! | operation | commands | round trips |
//! | --- | --- | --- |
//! | `connected` | 1 `EVALSHA` (HSET + arm TTL) | 1 |
//! | `disconnected` | `MULTI HDEL HGETALL EXEC` on the user key, +nodes | 1 (+recheck, +purge) |
//! | `is_online`, `connections` | 1 `HGETALL`, +nodes | 1 (+recheck, +purge) |
//! | `locate` | `N` `HGETALL`, +nodes | ⌈N/B⌉ (+recheck, +purge) |
//! | `refresh` | 1 `EVALSHA` register + `N` `EVALSHA` refresh (+ queued retries) | 1 + ⌈N/B⌉ |
//! | `list_nodes` | 1 `HGETALL` (+1 `EVALSHA` to drop long-dead nodes) | 1 (+1) |
//!
//! # Failures
//!
//! Redis errors never reach the trait methods' callers, which sit on the connection and
//! routing paths. They degrade to the safe side and log at WARN: a failed read counts the
//! users as offline (an empty `locate`), a failed `connected`/`disconnected` write is queued
//! (up to [`MAX_PENDING`]) and retried by the next `refresh`, and a failed `disconnected`
//! reports "not the last connection", so no offline event is announced on a guess. The node's
//! own calls ([`RedisPresence::connect`], [`RedisPresence::register_node`], `refresh`,
//! [`RedisPresence::list_nodes`]) return [`PresenceError`]. Tested on Redis 7.0, single and
//! cluster.

mod config;
mod conn;
mod record;
mod scripts;

pub use self::config::{
    RedisPresenceConfig, DEFAULT_BATCH, DEFAULT_NODE_CACHE, DEFAULT_PREFIX, DEFAULT_TIMEOUT, DEFAULT_TTL, MAX_PENDING,
    NODE_FORGET,
};
pub use self::conn::RedisTarget;
pub use self::record::{Keys, NodeInfo};

use self::conn::Conn;
use self::record::{parse_user_hash, NodeTable, StoredEntry, Verdict};
use self::scripts::Scripts;
use crate::ids::{ConnId, DeviceId, NodeId, UserId};
use crate::presence::{Presence, PresenceEntry, PresenceError};
use crate::time::now_ms;
use ::redis::{AsyncCommands, RedisError};
use async_trait::async_trait;
use futures_util::future::join_all;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{debug, warn};

/// What a registration found before it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// First registration of this epoch.
    New,
    /// Renewed in time.
    Renewed,
    /// Our registration had expired (or vanished) before this renewal: see
    /// [`PresenceError::Lapsed`].
    Lapsed,
}

/// A write that failed and is retried at the next refresh.
#[derive(Debug, Clone)]
enum Pending {
    /// Write the entry with this device.
    Upsert(DeviceId),
    /// Delete the entry.
    Delete,
}

/// Users with their stored entries.
type Rows = Vec<(UserId, Vec<StoredEntry>)>;

/// Presence in Redis: see the module docs.
pub struct RedisPresence {
    conn: Conn,
    keys: Keys,
    cfg: RedisPresenceConfig,
    scripts: Scripts,
    /// The last node table read, reused for `cfg.node_cache`.
    nodes: Mutex<Option<Arc<NodeTable>>>,
    /// Failed writes of this node, by entry; the newest intent per entry wins.
    pending: Mutex<HashMap<(UserId, ConnId), Pending>>,
    /// Whether this process has registered its node, to tell a vanished record from a new one.
    registered: AtomicBool,
}

impl RedisPresence {
    /// Connects, loads the scripts and registers this node (see [`Self::register_node`]).
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidConfig`] for unusable settings, [`PresenceError::StaleEpoch`]
    /// when a newer incarnation of the node is registered, [`PresenceError::Redis`] when Redis
    /// cannot be reached.
    pub async fn connect(target: &RedisTarget, cfg: RedisPresenceConfig) -> Result<Self, PresenceError> {
        let presence = Self::observer(target, cfg).await?;
        presence.register_node().await?;
        Ok(presence)
    }

    /// Connects and loads the scripts without registering a node: for processes that only
    /// read presence (the router looks recipients up; it holds no connections).
    ///
    /// # Errors
    ///
    /// [`PresenceError::InvalidConfig`] for unusable settings, [`PresenceError::Redis`] when
    /// Redis cannot be reached.
    pub async fn observer(target: &RedisTarget, cfg: RedisPresenceConfig) -> Result<Self, PresenceError> {
        cfg.validate()?;
        let keys = Keys::new(&cfg.prefix)?;
        let conn = Conn::open(target, cfg.timeout).await?;
        let presence = Self {
            conn,
            keys,
            cfg,
            scripts: Scripts::new(),
            nodes: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            registered: AtomicBool::new(false),
        };
        for script in presence.scripts.all() {
            script.load_async(&mut presence.conn.clone()).await?;
        }
        Ok(presence)
    }

    /// The key names in use, for tools and tests.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.cfg.node
    }

    /// Registers this node (id, epoch, advertised address) for one `ttl`, or renews it. The
    /// trait's `refresh` calls it; call it directly only outside that cadence.
    ///
    /// # Errors
    ///
    /// [`PresenceError::StaleEpoch`] when a newer epoch holds the node id (nothing is written),
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn register_node(&self) -> Result<Registration, PresenceError> {
        let now = now_ms();
        let (status, current): (i64, String) = self
            .scripts
            .register
            .key(self.keys.nodes())
            .arg(&self.cfg.node.0)
            .arg(self.cfg.epoch)
            .arg(now.saturating_add(self.ttl_ms()))
            .arg(&self.cfg.advertised_addr)
            .arg(now)
            .invoke_async(&mut self.conn.clone())
            .await?;
        *self.lock_nodes() = None;
        if let (Some(admin), true) = (&self.cfg.admin_addr, status != 3) {
            ::redis::cmd("HSET")
                .arg(self.keys.node_admins())
                .arg(&self.cfg.node.0)
                .arg(admin)
                .query_async::<()>(&mut self.conn.clone())
                .await?;
        }
        if status == 3 {
            let current = current.parse().unwrap_or(u64::MAX);
            return Err(PresenceError::StaleEpoch { node: self.cfg.node.0.clone(), ours: self.cfg.epoch, current });
        }
        let was_registered = self.registered.swap(true, Ordering::Relaxed);
        Ok(match status {
            1 => Registration::Renewed,
            0 if !was_registered => Registration::New,
            _ => Registration::Lapsed,
        })
    }

    /// Refuses `user`'s tokens on every node for `ttl` (the access-token lifetime: tokens issued
    /// before now have expired by then, and refresh tokens are revoked in the store).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn revoke_user(&self, user: UserId, ttl: Duration) -> Result<(), PresenceError> {
        let secs = ttl.as_secs().max(1);
        ::redis::cmd("SET").arg(self.keys.revoked(user)).arg(now_ms()).arg("EX").arg(secs).query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Lifts [`Self::revoke_user`].
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn unrevoke_user(&self, user: UserId) -> Result<(), PresenceError> {
        ::redis::cmd("DEL").arg(self.keys.revoked(user)).query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Whether `user`'s tokens are refused cluster-wide (see [`Self::revoke_user`]).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn is_user_revoked(&self, user: UserId) -> Result<bool, PresenceError> {
        let n: i64 = ::redis::cmd("EXISTS").arg(self.keys.revoked(user)).query_async(&mut self.conn.clone()).await?;
        Ok(n > 0)
    }

    /// Asks every process to publish its traffic events to the tap topic for `ttl` (renew it
    /// while a tail is open).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn want_tap(&self, ttl: Duration) -> Result<(), PresenceError> {
        let ms = ttl.as_millis().max(1) as u64;
        ::redis::cmd("SET").arg(self.keys.tap_wanted()).arg(now_ms()).arg("PX").arg(ms).query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Whether some node serves a traffic tail (see [`Self::want_tap`]).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn tap_wanted(&self) -> Result<bool, PresenceError> {
        let n: i64 = ::redis::cmd("EXISTS").arg(self.keys.tap_wanted()).query_async(&mut self.conn.clone()).await?;
        Ok(n > 0)
    }

    /// Each node's advertised admin listener address, by node id (nodes that advertised one;
    /// filter by [`Self::list_nodes`] for the live ones).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn node_admins(&self) -> Result<HashMap<NodeId, String>, PresenceError> {
        let raw: HashMap<String, String> =
            ::redis::cmd("HGETALL").arg(self.keys.node_admins()).query_async(&mut self.conn.clone()).await?;
        Ok(raw.into_iter().map(|(k, v)| (NodeId(k), v)).collect())
    }

    /// The live nodes, by id. Also drops records expired for longer than [`NODE_FORGET`].
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, PresenceError> {
        let now = now_ms();
        Ok(self.node_records().await?.into_iter().filter(|n| n.expires_ms > now).collect())
    }

    /// Every node record, by id: the live ones and those expired less than [`NODE_FORGET`]
    /// ago (dead nodes, for operators). Drops the older ones.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Redis`] when Redis fails.
    pub async fn node_records(&self) -> Result<Vec<NodeInfo>, PresenceError> {
        let table = self.fetch_table().await?;
        let now = now_ms();
        let forget_ms = i64::try_from(NODE_FORGET.as_millis()).unwrap_or(i64::MAX);
        let forgotten: Vec<&NodeInfo> =
            table.nodes.values().filter(|n| n.expires_ms.saturating_add(forget_ms) < now).collect();
        if !forgotten.is_empty() {
            let mut purge = self.scripts.purge.key(self.keys.nodes());
            let mut admins = ::redis::cmd("HDEL");
            admins.arg(self.keys.node_admins());
            for n in forgotten {
                purge.arg(&n.node.0).arg(n.own_value());
                admins.arg(&n.node.0);
            }
            if let Err(error) = purge.invoke_async::<i64>(&mut self.conn.clone()).await {
                debug!(%error, "long-dead node records not dropped; retried by the next listing");
            } else if let Err(error) = admins.query_async::<i64>(&mut self.conn.clone()).await {
                debug!(%error, "long-dead nodes' admin addresses not dropped; retried by the next listing");
            }
        }
        let mut kept: Vec<NodeInfo> = table.nodes.values().filter(|n| n.expires_ms.saturating_add(forget_ms) >= now).cloned().collect();
        kept.sort_by(|a, b| a.node.0.cmp(&b.node.0));
        Ok(kept)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.cfg.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    fn lock_nodes(&self) -> MutexGuard<'_, Option<Arc<NodeTable>>> {
        self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashMap<(UserId, ConnId), Pending>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached node table, if young enough.
    fn cached_table(&self) -> Option<Arc<NodeTable>> {
        self.lock_nodes().as_ref().filter(|t| t.fetched.elapsed() < self.cfg.node_cache).cloned()
    }

    /// Reads the node table and caches it.
    async fn fetch_table(&self) -> Result<Arc<NodeTable>, RedisError> {
        let raw: HashMap<String, String> = self.conn.clone().hgetall(self.keys.nodes()).await?;
        let table = Arc::new(NodeTable::parse(raw, std::time::Instant::now()));
        *self.lock_nodes() = Some(table.clone());
        Ok(table)
    }

    /// Runs `read` (alongside a node-table read if the cache is stale), keeps only the live
    /// entries of its rows and purges the dead ones.
    async fn judged<R>(
        &self,
        read: impl Future<Output = Result<(R, Rows), RedisError>>,
    ) -> Result<(R, Rows), RedisError> {
        let (out, rows, mut table, fresh) = match self.cached_table() {
            Some(table) => {
                let (out, rows) = read.await?;
                (out, rows, table, false)
            }
            None => {
                let (read, table) = tokio::join!(read, self.fetch_table());
                let (out, rows) = read?;
                (out, rows, table?, true)
            }
        };
        let now = now_ms();
        if !fresh && rows.iter().flat_map(|(_, es)| es).any(|e| table.judge(e, now) == Verdict::Unsure) {
            table = self.fetch_table().await?;
        }
        let mut dead = Vec::new();
        let live = rows
            .into_iter()
            .map(|(user, entries)| {
                let (mut keep, mut gone) = (Vec::with_capacity(entries.len()), Vec::new());
                for e in entries {
                    match table.judge(&e, now) {
                        Verdict::Live => keep.push(e),
                        Verdict::Dead => gone.push(e),
                        Verdict::Unsure => {}
                    }
                }
                if !gone.is_empty() {
                    dead.push((user, gone));
                }
                (user, keep)
            })
            .collect();
        self.purge(&dead).await;
        Ok((out, live))
    }

    /// The live entries of `users` (deduplicated, in first-seen order).
    async fn live(&self, users: &[UserId]) -> Result<Rows, RedisError> {
        let mut seen = HashSet::with_capacity(users.len());
        let users: Vec<UserId> = users.iter().copied().filter(|u| seen.insert(*u)).collect();
        Ok(self.judged(self.read_users(&users)).await?.1)
    }

    /// `HGETALL` of each user key, `batch` at a time.
    async fn read_users(&self, users: &[UserId]) -> Result<((), Rows), RedisError> {
        let mut rows = Vec::with_capacity(users.len());
        for chunk in users.chunks(self.cfg.batch) {
            let reads = chunk.iter().map(|&user| {
                let (mut conn, key) = (self.conn.clone(), self.keys.user(user));
                async move {
                    let raw: HashMap<String, String> = conn.hgetall(key).await?;
                    Ok::<_, RedisError>((user, parse_user_hash(raw)))
                }
            });
            for row in join_all(reads).await {
                rows.push(row?);
            }
        }
        Ok(((), rows))
    }

    /// Compare-and-deletes dead entries, `batch` users at a time. Failures only delay a purge.
    async fn purge(&self, dead: &[(UserId, Vec<StoredEntry>)]) {
        for chunk in dead.chunks(self.cfg.batch) {
            let calls = chunk.iter().map(|(user, entries)| {
                let mut purge = self.scripts.purge.key(self.keys.user(*user));
                for e in entries {
                    purge.arg(e.own_field()).arg(e.own_value());
                }
                let mut conn = self.conn.clone();
                async move { purge.invoke_async::<i64>(&mut conn).await }
            });
            let failed = join_all(calls).await.into_iter().filter_map(Result::err).last();
            if let Some(error) = failed {
                debug!(%error, "dead presence entries not purged; retried by a later read");
            }
        }
    }

    /// Writes this node's entry for `(user, conn)`.
    async fn upsert(&self, user: UserId, conn: ConnId, device: &DeviceId) -> Result<(), RedisError> {
        let value = StoredEntry::value(self.cfg.epoch, now_ms().saturating_add(self.ttl_ms()), device);
        self.scripts
            .upsert
            .key(self.keys.user(user))
            .arg(StoredEntry::field(&self.cfg.node, conn))
            .arg(value)
            .arg(self.ttl_ms())
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
    }

    /// Deletes this node's entry for `(user, conn)` and reads what is left, judged; the flag
    /// says whether the entry was there.
    async fn remove(&self, user: UserId, conn: ConnId) -> Result<(bool, Vec<StoredEntry>), RedisError> {
        let key = self.keys.user(user);
        let field = StoredEntry::field(&self.cfg.node, conn);
        let read = async {
            let (removed, rest): (i64, HashMap<String, String>) =
                ::redis::pipe().atomic().hdel(&key, &field).hgetall(&key).query_async(&mut self.conn.clone()).await?;
            Ok((removed > 0, vec![(user, parse_user_hash(rest))]))
        };
        let (removed, mut rows) = self.judged(read).await?;
        Ok((removed, rows.pop().map(|(_, entries)| entries).unwrap_or_default()))
    }

    /// Queues a failed write for the next refresh.
    fn pend(&self, user: UserId, conn: ConnId, op: Pending) {
        let mut pending = self.lock_pending();
        if pending.len() >= MAX_PENDING && !pending.contains_key(&(user, conn)) {
            warn!(%user, %conn, "presence retry queue full; failed write dropped");
            return;
        }
        pending.insert((user, conn), op);
    }

    /// Retries queued writes; those failing again stay queued unless a newer intent replaced them.
    async fn retry_pending(&self) {
        let work: Vec<((UserId, ConnId), Pending)> = std::mem::take(&mut *self.lock_pending()).into_iter().collect();
        for chunk in work.chunks(self.cfg.batch) {
            let calls = chunk.iter().map(|((user, conn), op)| async move {
                match op {
                    Pending::Upsert(device) => self.upsert(*user, *conn, device).await,
                    Pending::Delete => {
                        let field = StoredEntry::field(&self.cfg.node, *conn);
                        self.conn.clone().hdel::<_, _, i64>(self.keys.user(*user), field).await.map(drop)
                    }
                }
            });
            let results = join_all(calls).await;
            let mut failed = 0;
            for ((entry, op), result) in chunk.iter().zip(results) {
                if result.is_err() {
                    failed += 1;
                    self.lock_pending().entry(*entry).or_insert_with(|| op.clone());
                }
            }
            if failed > 0 {
                warn!(failed, "queued presence writes failed again; kept for the next refresh");
            }
        }
    }

    /// Re-arms this node's entries of `users`, `batch` keys at a time; returns how many.
    async fn refresh_entries(&self, users: &[UserId]) -> Result<usize, PresenceError> {
        let (mut kept, mut first_error) = (0, None);
        for chunk in users.chunks(self.cfg.batch) {
            let expires_ms = now_ms().saturating_add(self.ttl_ms());
            let calls = chunk.iter().map(|&user| {
                let mut refresh = self.scripts.refresh.key(self.keys.user(user));
                refresh.arg(&self.cfg.node.0).arg(self.cfg.epoch).arg(expires_ms).arg(self.ttl_ms());
                let mut conn = self.conn.clone();
                async move { refresh.invoke_async::<i64>(&mut conn).await }
            });
            for result in join_all(calls).await {
                match result {
                    Ok(n) => kept += usize::try_from(n).unwrap_or(0),
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        first_error.map_or(Ok(kept), |error| Err(error.into()))
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connected(&self, e: PresenceEntry) {
        if e.node != self.cfg.node {
            warn!(node = %e.node, own = %self.cfg.node, "presence entry for another node ignored");
            return;
        }
        if let Err(error) = self.upsert(e.user, e.conn, &e.device).await {
            warn!(%error, user = %e.user, conn = %e.conn, "presence write failed; retried at the next refresh");
            self.pend(e.user, e.conn, Pending::Upsert(e.device));
        }
    }

    async fn disconnected(&self, user: UserId, conn: ConnId) -> bool {
        // An entry whose write is still queued was never seen as removed by Redis.
        let unwritten = matches!(self.lock_pending().remove(&(user, conn)), Some(Pending::Upsert(_)));
        match self.remove(user, conn).await {
            Ok((removed, live)) => (removed || unwritten) && live.is_empty(),
            Err(error) => {
                warn!(%error, %user, %conn, "presence delete failed; retried at the next refresh");
                self.pend(user, conn, Pending::Delete);
                false
            }
        }
    }

    async fn locate(&self, users: &[UserId]) -> HashMap<NodeId, Vec<UserId>> {
        let rows = match self.live(users).await {
            Ok(rows) => rows,
            Err(error) => {
                warn!(%error, users = users.len(), "presence read failed; users treated as offline");
                return HashMap::new();
            }
        };
        let mut out: HashMap<NodeId, Vec<UserId>> = HashMap::new();
        for (user, entries) in rows {
            let nodes: HashSet<NodeId> = entries.into_iter().map(|e| e.node).collect();
            for node in nodes {
                out.entry(node).or_default().push(user);
            }
        }
        out
    }

    async fn is_online(&self, user: UserId) -> bool {
        !self.connections(user).await.is_empty()
    }

    async fn connections(&self, user: UserId) -> Vec<PresenceEntry> {
        match self.live(&[user]).await {
            Ok(rows) => rows.into_iter().flat_map(|(u, es)| es.into_iter().map(move |e| e.into_entry(u))).collect(),
            Err(error) => {
                warn!(%error, %user, "presence read failed; user treated as offline");
                Vec::new()
            }
        }
    }

    /// Renews this node's registration, retries queued writes, then re-arms this node's
    /// entries of `users`. Call it every `ttl / 3` with every user the node holds.
    async fn refresh(&self, users: &[UserId]) -> Result<(), PresenceError> {
        let registration = self.register_node().await?;
        self.retry_pending().await;
        self.refresh_entries(users).await?;
        match registration {
            Registration::Lapsed => Err(PresenceError::Lapsed { node: self.cfg.node.0.clone() }),
            Registration::New | Registration::Renewed => Ok(()),
        }
    }
}
