//! Everything a request or connection handler needs, built once at start.

use crate::auth::Revocations;
use crate::ws::registry::{LocalPresence, Registry};
use crate::GatewayError;
use router::{Router, RouterConfig, RouterCore, SendSink};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use storage_workers::media::MediaStore;
use storage_workers::sqlite::SqliteStore;
use switchboard_core::auth::{JwtKeys, PasswordHasher};
use switchboard_core::bus::{Bus, InProcBus};
use switchboard_core::config::{Config, Mode};
use switchboard_core::ids::NodeId;
use switchboard_core::presence::Presence;
use switchboard_core::store::MessageStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared state of one gateway.
pub struct AppState {
    /// Effective configuration.
    pub cfg: Config,
    /// This node.
    pub node: NodeId,
    /// Durable state.
    pub store: Arc<dyn MessageStore>,
    /// Media bytes.
    pub media: MediaStore,
    /// Who is connected where.
    pub presence: Arc<dyn Presence>,
    /// Carries routed frames to nodes.
    pub bus: Arc<dyn Bus>,
    /// Routing logic: receipts, typing and presence events go straight through it.
    pub router: Arc<RouterCore>,
    /// Where sends go: the in-process router queue (standalone) or Kafka (cluster).
    pub sends: Arc<dyn SendSink>,
    /// Cursor acks and last-seen times: the store (standalone) or the side topic (cluster).
    pub lagging: Arc<dyn crate::lagging::LaggingWrites>,
    /// Token signing.
    pub keys: JwtKeys,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// A hash of a random password, verified against when a login names an unknown email so
    /// that timing does not reveal which emails exist.
    pub dummy_hash: String,
    /// Failed-login counts per email.
    pub login_throttle: crate::http::throttle::LoginThrottle,
    /// Deleted users whose tokens are refused.
    pub revoked: Revocations,
    /// This node's live connections.
    pub registry: Arc<Registry>,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    /// Tracks connection and worker tasks for shutdown.
    pub tracker: TaskTracker,
    /// Tracks the router task alone, so shutdown can wait for it to drain first.
    pub router_tracker: TaskTracker,
    /// Set while an operator drains this node (`chatctl node drain`): new WebSocket upgrades
    /// get 503 `draining` and `/readyz` answers 503.
    pub draining: std::sync::atomic::AtomicBool,
    /// When this gateway started (uptime in the admin API).
    pub started_at: std::time::Instant,
    /// Admin API bookkeeping (the running drain).
    pub admin: crate::admin::AdminState,
}

impl AppState {
    /// Opens storage, loads the key and starts the in-process router.
    ///
    /// # Errors
    /// [`GatewayError`] when storage or the key cannot be set up.
    pub async fn build(cfg: Config, shutdown: CancellationToken, tracker: &TaskTracker) -> Result<Arc<Self>, GatewayError> {
        let data = cfg.server.data_dir.clone();
        let media = MediaStore::from_config(&cfg.media, &data)?;
        let node = NodeId(cfg.node_id.clone());
        let registry = Arc::new(Registry::default());
        let router_tracker = TaskTracker::new();
        let Seams {
            store,
            presence,
            bus,
            sends: cluster_sends,
            lagging,
            revocations,
            #[cfg(feature = "cluster")]
            tap,
        } = seams(&cfg, &registry, &node, &shutdown).await?;
        let secret = signing_secret(&cfg)?;
        let keys = JwtKeys::new(&secret, cfg.auth.access_ttl, cfg.auth.refresh_ttl);
        let hasher = PasswordHasher::new(cfg.auth.argon2_memory_kib, cfg.auth.argon2_iterations).map_err(GatewayError::Key)?;
        let dummy_hasher = hasher.clone();
        let dummy_hash = tokio::task::spawn_blocking(move || dummy_hasher.hash(&uuid::Uuid::new_v4().to_string()))
            .await
            .map_err(|e| GatewayError::Key(e.to_string()))?;
        let revoked = Revocations::load(store.as_ref(), revocations).await?;
        let router = Arc::new(RouterCore::new(store.clone(), presence.clone(), bus.clone()));
        #[cfg(feature = "cluster")]
        if let Some((redis, log)) = tap {
            // This node's receipts and typing, for cluster tails (sends are the router's).
            router::cluster::spawn_tap_publisher(router.clone(), redis, log, &cfg, shutdown.clone());
        }
        let sends: Arc<dyn SendSink> = match cluster_sends {
            Some(s) => s,
            None => {
                let router_cfg = RouterConfig { queue: cfg.ws.send_queue, batch_max: cfg.storage.batch_max };
                Arc::new(Router::spawn(router.clone(), router_cfg, shutdown.child_token(), &router_tracker))
            }
        };
        Ok(Arc::new(Self {
            node,
            cfg,
            store,
            media,
            presence,
            bus,
            router,
            sends,
            lagging,
            keys,
            hasher,
            dummy_hash,
            login_throttle: Default::default(),
            revoked,
            registry,
            next_conn: AtomicU64::new(1),
            shutdown,
            tracker: tracker.clone(),
            router_tracker,
            draining: Default::default(),
            started_at: std::time::Instant::now(),
            admin: Default::default(),
        }))
    }
}

/// The mode-dependent parts: storage, presence, bus, and (cluster) where sends go.
struct Seams {
    store: Arc<dyn MessageStore>,
    presence: Arc<dyn Presence>,
    bus: Arc<dyn Bus>,
    /// `None`: the in-process router takes sends.
    sends: Option<Arc<dyn SendSink>>,
    lagging: Arc<dyn crate::lagging::LaggingWrites>,
    /// Cluster: where revocations are shared between nodes.
    revocations: Option<Arc<dyn crate::auth::SharedRevocations>>,
    /// Cluster: Redis and Kafka for publishing this node's traffic events to tails.
    #[cfg(feature = "cluster")]
    tap: Option<(Arc<switchboard_core::presence::RedisPresence>, switchboard_core::bus::KafkaLog)>,
}

async fn seams(cfg: &Config, registry: &Arc<Registry>, node: &NodeId, shutdown: &CancellationToken) -> Result<Seams, GatewayError> {
    match cfg.mode {
        Mode::Standalone => {
            let store: Arc<dyn MessageStore> = Arc::new(SqliteStore::open(&cfg.server.data_dir, &cfg.storage)?);
            Ok(Seams {
                lagging: Arc::new(crate::lagging::DirectWrites(store.clone())),
                store,
                presence: Arc::new(LocalPresence::new(registry.clone(), node.clone())),
                bus: Arc::new(InProcBus::new()),
                sends: None,
                revocations: None,
                #[cfg(feature = "cluster")]
                tap: None,
            })
        }
        #[cfg(feature = "cluster")]
        Mode::Cluster => {
            let svc = crate::cluster::services(cfg).await?;
            let sends = crate::cluster::KafkaSends::spawn(svc.bus.log().clone(), cfg, registry.clone());
            crate::cluster::spawn_presence_refresh(svc.presence.clone(), registry.clone(), cfg, shutdown.clone());
            let side = storage_workers::side::SideProducer::new(svc.bus.log().clone(), cfg)
                .await
                .map_err(|e| GatewayError::Cluster(e.to_string()))?;
            let revocations: Arc<dyn crate::auth::SharedRevocations> =
                Arc::new(crate::cluster::RedisRevocations::new(svc.presence.clone(), cfg));
            Ok(Seams {
                tap: Some((svc.presence.clone(), svc.bus.log().clone())),
                revocations: Some(revocations),
                store: svc.store,
                presence: svc.presence,
                bus: svc.bus,
                sends: Some(Arc::new(sends)),
                lagging: Arc::new(crate::lagging::SideWrites(side)),
            })
        }
        #[cfg(not(feature = "cluster"))]
        Mode::Cluster => {
            let _ = shutdown;
            Err(GatewayError::Cluster("this gatewayd was built without the `cluster` feature".into()))
        }
    }
}

/// The HS256 secret: from config, else from the key file, else a new random development key
/// written to `<data_dir>/jwt.key` (mode 0600).
fn signing_secret(cfg: &Config) -> Result<Vec<u8>, GatewayError> {
    if let Some(s) = &cfg.auth.jwt_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = cfg.auth.jwt_secret_file.clone().unwrap_or_else(|| cfg.server.data_dir.join("jwt.key"));
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => Err(GatewayError::Key(format!("{} holds fewer than 32 bytes", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_dev_key(&path),
        Err(e) => Err(GatewayError::Key(format!("{}: {e}", path.display()))),
    }
}

fn create_dev_key(path: &Path) -> Result<Vec<u8>, GatewayError> {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let key: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| GatewayError::Key(e.to_string()))?;
    }
    write_private(path, &key).map_err(|e| GatewayError::Key(format!("{}: {e}", path.display())))?;
    tracing::warn!(path = %path.display(), "created a DEVELOPMENT signing key; set auth.jwt_secret_file in production");
    Ok(key.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
