//! `RedisPresence` against real Redis: the shared presence contract plus what only a TTL-based
//! map has (dead nodes drop out, refresh keeps entries alive, a restart's new epoch buries the
//! old entries), on the single Redis at 127.0.0.1:6379 (`SWITCHBOARD_TEST_REDIS_URL` overrides)
//! and on a 3-primary Redis Cluster this file starts on free ports and stops again.
//!
//! Each scenario uses its own `test:<uuid>:` prefix, deletes its keys at the end and checks that
//! no key under its prefix is left on any server. Run: `cargo test -p switchboard-core --features redis`.
#![cfg(feature = "redis")]

use redis::aio::ConnectionLike;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_core::ids::{ConnId, DeviceId, NodeId, UserId};
use switchboard_core::presence::contract::{presence_contract, CONTRACT_USERS};
use switchboard_core::presence::{
    Presence, PresenceEntry, PresenceError, RedisPresence, RedisPresenceConfig, RedisTarget,
};
use switchboard_core::ErrorCode;

/// TTL of the scenarios that wait for expiry: short, so they finish in seconds.
const SHORT_TTL: Duration = Duration::from_millis(1000);
/// Room for polling and a busy 2-core machine on top of the expected moment.
const SLACK: Duration = Duration::from_millis(700);
/// Between two polls.
const POLL: Duration = Duration::from_millis(20);

// ---------- single Redis ----------

fn single() -> Backend {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    Backend { target: RedisTarget::Single(url.clone()), servers: vec![url] }
}

#[tokio::test]
async fn single_redis_passes_the_presence_contract() {
    contract(&single()).await;
}

#[tokio::test]
async fn single_redis_drops_a_dead_nodes_users_within_one_ttl() {
    dead_node_drops_out(&single()).await;
}

#[tokio::test]
async fn single_redis_refresh_keeps_entries_alive_past_the_ttl() {
    refresh_keeps_alive(&single()).await;
}

#[tokio::test]
async fn single_redis_restart_with_new_epoch_buries_old_entries() {
    restart_buries_old_entries(&single()).await;
}

#[tokio::test]
async fn single_redis_reports_a_lapsed_registration() {
    lapsed_registration_is_reported(&single()).await;
}

#[tokio::test]
async fn a_braced_prefix_is_refused() {
    let cfg = RedisPresenceConfig::new(NodeId("n".into()), 1, "addr").with_prefix("test:{x}:");
    let err = RedisPresence::connect(&single().target, cfg).await.err().expect("refused");
    assert_eq!(err.code(), "presence_invalid_config");
}

// ---------- Redis Cluster ----------

#[test]
fn redis_cluster_passes_the_contract_and_the_ttl_scenarios() {
    let cluster = LocalCluster::start();
    let backend = Backend { target: RedisTarget::Cluster(cluster.urls()), servers: cluster.urls() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        spreads_users_over_primaries(&backend).await;
        tokio::join!(
            contract(&backend),
            dead_node_drops_out(&backend),
            refresh_keeps_alive(&backend),
            restart_buries_old_entries(&backend),
            lapsed_registration_is_reported(&backend),
        );
    });
    drop(cluster);
}

// ---------- scenarios ----------

/// The shared contract, through one handle per node.
async fn contract(backend: &Backend) {
    let ns = Namespace::new(backend);
    let a = ns.node("gw-a", 1, Duration::from_secs(30)).await;
    let b = ns.node("gw-b", 1, Duration::from_secs(30)).await;
    presence_contract(&a, a.node(), &b, b.node()).await;
    let nodes = b.list_nodes().await.expect("list");
    let listed: Vec<(&str, u64, &str)> = nodes.iter().map(|n| (n.node.0.as_str(), n.epoch, n.addr.as_str())).collect();
    assert_eq!(listed, vec![("gw-a", 1, "addr-of-gw-a"), ("gw-b", 1, "addr-of-gw-b")]);
    ns.cleanup(&CONTRACT_USERS).await;
}

/// Node a stops heartbeating; node b keeps going. Within one TTL of a's last write, a's users
/// are offline everywhere and b's are not; a's entries are purged soon after.
async fn dead_node_drops_out(backend: &Backend) {
    let ns = Namespace::new(backend);
    let (only_a, only_b, both) = (UserId(11), UserId(12), UserId(13));
    let a = ns.node("gw-a", 1, SHORT_TTL).await;
    let b = ns.node("gw-b", 1, SHORT_TTL).await;
    b.connected(ns.entry(only_b, &b, 2, "phone")).await;
    b.connected(ns.entry(both, &b, 3, "laptop")).await;
    a.connected(ns.entry(only_a, &a, 1, "phone")).await;
    a.connected(ns.entry(both, &a, 4, "phone")).await;
    let a_last_write = Instant::now();
    assert!(b.is_online(only_a).await);
    drop(a); // a dies: no more heartbeats, no disconnects

    let mut last_refresh = Instant::now();
    let gone_at = loop {
        if last_refresh.elapsed() >= SHORT_TTL / 3 {
            b.refresh(&[only_b, both]).await.expect("b refreshes");
            last_refresh = Instant::now();
        }
        assert!(b.is_online(only_b).await, "a live node's user stays online");
        let located = b.locate(&[only_a, only_b, both]).await;
        if !b.is_online(only_a).await {
            assert_eq!(located, [(b.node().clone(), vec![only_b, both])].into(), "only b's users are located, on b");
            assert_eq!(b.connections(both).await.len(), 1, "only the connection on the live node is left");
            break Instant::now();
        }
        assert!(a_last_write.elapsed() < SHORT_TTL + SLACK, "a dead node's users must be offline within one TTL");
        tokio::time::sleep(POLL).await;
    };
    assert!(gone_at.duration_since(a_last_write) >= SHORT_TTL - SLACK.min(SHORT_TTL / 2), "not before the TTL");
    assert_eq!(node_ids(&b).await, vec!["gw-b"], "the dead node is no longer listed");
    let deadline = Instant::now() + SHORT_TTL + SLACK;
    eventually(deadline, "a dead node's entries are purged", || async {
        let _ = b.is_online(only_a).await; // a read purges what has expired
        ns.hlen(only_a).await == 0
    })
    .await;
    ns.cleanup(&[only_a, only_b, both]).await;
}

/// Entries survive several TTLs while their node refreshes them; an entry the node no longer
/// refreshes (its delete was lost) expires although the node lives.
async fn refresh_keeps_alive(backend: &Backend) {
    let ns = Namespace::new(backend);
    let (kept, leaked) = (UserId(21), UserId(22));
    let a = ns.node("gw-a", 1, SHORT_TTL).await;
    let observer = ns.node("gw-b", 1, Duration::from_secs(30)).await;
    a.connected(ns.entry(kept, &a, 1, "phone")).await;
    a.connected(ns.entry(leaked, &a, 2, "phone")).await;
    let leaked_written = Instant::now();
    let until = Instant::now() + SHORT_TTL * 3;
    let mut leaked_gone = None;
    while Instant::now() < until {
        a.refresh(&[kept]).await.expect("refresh");
        assert!(observer.is_online(kept).await, "a refreshed entry outlives its TTL");
        if leaked_gone.is_none() && !observer.is_online(leaked).await {
            leaked_gone = Some(leaked_written.elapsed());
        }
        tokio::time::sleep(SHORT_TTL / 4).await;
    }
    let leaked_gone = leaked_gone.expect("an entry nobody refreshes expires although its node lives");
    assert!(leaked_gone < SHORT_TTL + SLACK, "within one TTL, took {leaked_gone:?}");
    assert!(ns.ttl_ms(kept).await > 0, "the user key carries a TTL");
    ns.cleanup(&[kept, leaked]).await;
}

/// A node restarts (new epoch) while its old entries have not expired: they are offline at
/// once, are not brought back by anything, and the zombie old process is refused.
async fn restart_buries_old_entries(backend: &Backend) {
    let ns = Namespace::new(backend);
    let (u, v, w) = (UserId(31), UserId(32), UserId(33));
    let long = Duration::from_secs(30);
    let old = ns.node("gw-a", 1, long).await;
    let observer = ns.node("gw-b", 1, long).await;
    old.connected(ns.entry(u, &old, 1, "old-phone")).await;
    old.connected(ns.entry(v, &old, 2, "old-phone")).await;
    assert!(observer.is_online(u).await, "seen before the restart (and the observer caches epoch 1)");

    let new = ns.node("gw-a", 2, long).await;
    assert!(!new.is_online(u).await && !new.is_online(v).await, "the old life's entries are dead at once");
    let deadline = Instant::now() + Duration::from_secs(1) + SLACK; // the observer's node cache
    eventually(deadline, "the observer sees the new epoch", || async { !observer.is_online(v).await }).await;

    let fresh = ns.entry(u, &new, 1, "new-phone"); // conn ids restart with the process
    new.connected(fresh.clone()).await;
    assert_eq!(observer.connections(u).await, vec![fresh.clone()], "a reused conn id holds only the new entry");
    new.refresh(&[u, v]).await.expect("refresh");
    assert_eq!(ns.hlen(v).await, 0, "refresh drops the node's older-epoch entries");

    let zombie = old.register_node().await.expect_err("the old incarnation is refused");
    assert!(matches!(zombie, PresenceError::StaleEpoch { ours: 1, current: 2, .. }), "{zombie:?}");
    assert!(matches!(old.refresh(&[u, v]).await, Err(PresenceError::StaleEpoch { .. })));
    old.connected(ns.entry(w, &old, 3, "zombie")).await;
    assert!(!observer.is_online(w).await, "a zombie's writes are not believed");
    let cfg = RedisPresenceConfig::new(NodeId("gw-a".into()), 1, "addr").with_prefix(&ns.prefix);
    assert!(matches!(RedisPresence::connect(&backend.target, cfg).await, Err(PresenceError::StaleEpoch { .. })));
    assert_eq!(observer.connections(u).await, vec![fresh], "nothing resurrected");
    ns.cleanup(&[u, v, w]).await;
}

/// A node that missed its heartbeat for a TTL is told so when it renews.
async fn lapsed_registration_is_reported(backend: &Backend) {
    let ns = Namespace::new(backend);
    let a = ns.node("gw-a", 1, Duration::from_millis(300)).await;
    let observer = ns.node("gw-b", 1, Duration::from_secs(30)).await;
    a.refresh(&[]).await.expect("renewed in time");
    let deadline = Instant::now() + Duration::from_millis(300) + SLACK;
    eventually(deadline, "the registration expires", || async { node_ids(&observer).await == ["gw-b"] }).await;
    let err = a.refresh(&[]).await.expect_err("lapsed");
    assert_eq!(err.code(), "presence_lapsed");
    assert_eq!(node_ids(&observer).await, vec!["gw-a", "gw-b"], "and registered again");
    ns.cleanup(&[]).await;
}

/// On the cluster, different users' keys live on different primaries.
async fn spreads_users_over_primaries(backend: &Backend) {
    let ns = Namespace::new(backend);
    let a = ns.node("gw-a", 1, Duration::from_secs(30)).await;
    let users: Vec<UserId> = (100..110).map(UserId).collect();
    for (i, &u) in users.iter().enumerate() {
        a.connected(ns.entry(u, &a, i as u64, "phone")).await;
    }
    let holding = ns.keys_per_server().await.into_iter().filter(|&n| n > 0).count();
    assert!(holding >= 2, "user keys should spread over the primaries, found keys on {holding}");
    assert_eq!(a.locate(&users).await, [(a.node().clone(), users.clone())].into(), "locate across slots");
    ns.cleanup(&users).await;
}

// ---------- helpers ----------

/// A Redis to test against: how the presence connects, and each server to inspect directly.
struct Backend {
    target: RedisTarget,
    /// Single server, or every primary of the cluster.
    servers: Vec<String>,
}

/// One scenario's key space. A scenario ends with [`Namespace::cleanup`]; one that panics
/// before it has its keys swept on drop, found by its unique prefix.
struct Namespace<'a> {
    backend: &'a Backend,
    prefix: String,
    /// Any handle, for key names.
    keys: std::sync::OnceLock<switchboard_core::presence::Keys>,
    /// Set by `cleanup`.
    clean: bool,
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        if self.clean {
            return;
        }
        // Only on a failed scenario: sweep every server (each primary holds its own keys).
        for url in &self.backend.servers {
            let Ok(mut conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) else { continue };
            let keys: Vec<String> = match redis::Commands::scan_match(&mut conn, format!("{}*", self.prefix)) {
                Ok(iter) => iter.filter_map(Result::ok).collect(),
                Err(_) => continue,
            };
            for key in keys {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(key).query(&mut conn);
            }
        }
    }
}

impl<'a> Namespace<'a> {
    fn new(backend: &'a Backend) -> Self {
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        Self { backend, prefix, keys: std::sync::OnceLock::new(), clean: false }
    }

    async fn node(&self, name: &str, epoch: u64, ttl: Duration) -> RedisPresence {
        let cfg = RedisPresenceConfig::new(NodeId(name.into()), epoch, format!("addr-of-{name}"))
            .with_prefix(&self.prefix)
            .with_ttl(ttl);
        let p = RedisPresence::connect(&self.backend.target, cfg).await.expect("connect to Redis (is it running?)");
        let _ = self.keys.set(p.keys().clone());
        p
    }

    fn entry(&self, user: UserId, p: &RedisPresence, conn: u64, device: &str) -> PresenceEntry {
        PresenceEntry { user, node: p.node().clone(), conn: ConnId(conn), device: DeviceId(device.into()) }
    }

    fn user_key(&self, user: UserId) -> String {
        self.keys.get().expect("a node was made").user(user)
    }

    async fn hlen(&self, user: UserId) -> i64 {
        self.query(redis::cmd("HLEN").arg(self.user_key(user))).await
    }

    async fn ttl_ms(&self, user: UserId) -> i64 {
        self.query(redis::cmd("PTTL").arg(self.user_key(user))).await
    }

    /// One keyed command through a connection of the backend's kind.
    async fn query(&self, cmd: &redis::Cmd) -> i64 {
        match &self.backend.target {
            RedisTarget::Single(url) => run(cmd, &mut single_conn(url).await).await,
            RedisTarget::Cluster(seeds) => {
                let client = redis::cluster::ClusterClient::new(seeds.clone()).expect("cluster client");
                run(cmd, &mut client.get_async_connection().await.expect("cluster connection")).await
            }
        }
    }

    /// How many keys under this prefix each server holds.
    async fn keys_per_server(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for url in &self.backend.servers {
            let mut conn = single_conn(url).await;
            let (mut cursor, mut found) = (0u64, 0);
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("scan");
                found += keys.len();
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            counts.push(found);
        }
        counts
    }

    /// Deletes this scenario's keys (one `DEL` per key, so it works on a cluster) and checks
    /// that nothing under the prefix is left on any server.
    async fn cleanup(mut self, users: &[UserId]) {
        let keys = self.keys.get().expect("a node was made");
        for key in users.iter().map(|&u| keys.user(u)).chain([keys.nodes()]) {
            self.query(redis::cmd("DEL").arg(key)).await;
        }
        let left = self.keys_per_server().await;
        self.clean = left.iter().all(|&n| n == 0);
        assert!(self.clean, "keys left under {}: {left:?}", self.prefix);
    }
}

async fn single_conn(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    client.get_multiplexed_async_connection().await.expect("connect to Redis (is it running?)")
}

async fn run(cmd: &redis::Cmd, conn: &mut impl ConnectionLike) -> i64 {
    cmd.query_async(conn).await.expect("redis command")
}

async fn node_ids(p: &RedisPresence) -> Vec<String> {
    p.list_nodes().await.expect("list").into_iter().map(|n| n.node.0).collect()
}

/// Polls `check` until it holds; panics at `deadline`.
async fn eventually<F, Fut>(deadline: Instant, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not by the deadline");
        tokio::time::sleep(POLL).await;
    }
}

/// Three `redis-server` primaries on free ports, joined into a cluster; stopped (by their own
/// pids) and their directory removed on drop.
struct LocalCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl LocalCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cluster = Self { ports: free_ports(3), children: Vec::new(), dir };
        for &port in &cluster.ports {
            let conf = cluster.dir.join(format!("nodes-{port}.conf"));
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(&conf)
                .arg("--dir")
                .arg(&cluster.dir)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &cluster.ports {
            wait_until(deadline, "redis-server answers", || cli(port, &["ping"]).is_some_and(|o| o.contains("PONG")));
        }
        let addrs: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(create.status.success(), "cluster create: {}", String::from_utf8_lossy(&create.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &cluster.ports {
            wait_until(deadline, "cluster_state:ok", || {
                cli(port, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok"))
            });
        }
        cluster
    }

    fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ports free now whose cluster bus port (+10000) is free too.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port > 55_535 {
            continue;
        }
        if let Ok(bus) = TcpListener::bind(("127.0.0.1", port + 10_000)) {
            held.push((port, l, bus));
        }
    }
    held.into_iter().map(|(port, _, _)| port).collect()
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_until(deadline: Instant, what: &str, mut check: impl FnMut() -> bool) {
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not by the deadline");
        std::thread::sleep(POLL);
    }
}
