//! The one configuration struct, loaded as defaults < TOML file < `SWITCHBOARD_*` env < flags.
//!
//! Env vars are named `SWITCHBOARD_<SECTION>_<KEY>` (`SWITCHBOARD_SERVER_LISTEN`), or
//! `SWITCHBOARD_<KEY>` for top-level keys. Values are parsed as TOML literals when they parse
//! (`10`, `true`) and as strings otherwise (`127.0.0.1:8080`, `"500ms"`). Env is read through
//! [`Env`], so tests pass a map and never touch the process environment.

use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of every env var.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Shortest accepted `server.admin_token`.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// A bad configuration. Exit code 78 (EX_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type.
    #[error("{0}")]
    Parse(String),
    /// Values that parse but make no sense; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl ErrorCode for ConfigError {
    fn code(&self) -> &'static str {
        "bad_config"
    }
    fn http_status(&self) -> u16 {
        500
    }
}

/// Which deployment shape a node runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One process, embedded storage, in-process bus and presence.
    Standalone,
    /// Many gateways with Redis, Kafka and PostgreSQL (not yet implemented).
    Cluster,
}

/// SQLite durability level for commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every (group) commit: an ack survives power loss.
    Full,
    /// WAL fsync at checkpoints only: an ack survives a process crash, not power loss.
    Normal,
}

/// Everything a Switchboard node reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Deployment shape. Default: standalone.
    pub mode: Mode,
    /// This node's id in presence and delivery routing. Default: "gw-1".
    pub node_id: String,
    /// Listeners and data location.
    pub server: ServerConfig,
    /// Tokens and passwords.
    pub auth: AuthConfig,
    /// WebSocket keepalive and limits.
    pub ws: WsConfig,
    /// Embedded storage.
    pub storage: StorageConfig,
    /// Where uploaded media bytes live.
    pub media: MediaConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Services of cluster mode (ignored in standalone mode).
    pub cluster: ClusterConfig,
}

/// Where media bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    /// Files under `<server.data_dir>/media` on this node: fine for one node, not shared.
    Local,
    /// An S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...): shared by every node.
    S3,
}

/// `[media]`: where uploaded media bytes live. The upload limit stays `server.media_max_bytes`.
///
/// Secrets are best passed through the environment, not the file:
/// `SWITCHBOARD_MEDIA_S3_ACCESS_KEY_ID` and `SWITCHBOARD_MEDIA_S3_SECRET_ACCESS_KEY`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// `local` (files under `<server.data_dir>/media`) or `s3`. Default: local. Cluster mode
    /// needs `s3` for media uploaded through one gateway to be readable through another.
    pub backend: MediaBackend,
    /// S3 bucket (must exist; it is not created). Required when `backend = "s3"`. Default: unset.
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL for S3-compatible servers, e.g. "http://127.0.0.1:9000"; path-style
    /// requests are used. Default: unset, meaning AWS S3 of `s3_region`.
    pub s3_endpoint: Option<String>,
    /// S3 region (request signing; with AWS, also the endpoint). Default: "us-east-1".
    pub s3_region: String,
    /// S3 access key id; set together with `s3_secret_access_key`. Default: unset: with both
    /// unset, credentials come from the instance metadata service (EC2/ECS roles).
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key. Pass it as env `SWITCHBOARD_MEDIA_S3_SECRET_ACCESS_KEY` rather than
    /// writing it into the config file. Default: unset.
    pub s3_secret_access_key: Option<String>,
    /// Prefix of every object key, e.g. "switchboard/media"; lets several deployments share a
    /// bucket. Default: "" (keys at the bucket root).
    pub s3_prefix: String,
    /// Allow plain `http://` endpoints (local test servers); without it only https is used.
    /// Default: false.
    pub s3_allow_http: bool,
}

impl std::fmt::Debug for MediaConfig {
    // By hand so that the secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaConfig")
            .field("backend", &self.backend)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &self.s3_secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("s3_prefix", &self.s3_prefix)
            .field("s3_allow_http", &self.s3_allow_http)
            .finish()
    }
}

/// `[cluster]`: where the shared services are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis for presence: one URL, or several seed nodes of a Redis Cluster.
    /// Default: ["redis://127.0.0.1:6379"].
    pub redis_urls: Vec<String>,
    /// Prefix of every Redis key. Default: "sb:".
    pub redis_prefix: String,
    /// How long a node's presence entries outlive its last heartbeat. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    /// Kafka bootstrap servers, comma-separated. Default: "127.0.0.1:9092".
    pub kafka_brokers: String,
    /// Prefix of every topic name. Default: "sb.".
    pub topic_prefix: String,
    /// Partitions of the inbound topic (the router group's parallelism). Default: 12.
    pub inbound_partitions: i32,
    /// Longest a Kafka fetch waits for data. Default: 100ms.
    #[serde(with = "humantime_serde")]
    pub kafka_fetch_wait: Duration,
    /// Kafka consumer group session timeout. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub kafka_session_timeout: Duration,
    /// Kafka consumer group heartbeat interval. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub kafka_heartbeat_interval: Duration,
    /// PostgreSQL for users, groups and messages. Default: postgres://postgres@127.0.0.1:5432/switchboard.
    pub postgres_url: String,
    /// Schema holding Switchboard's tables. Default: "switchboard".
    pub postgres_schema: String,
    /// PostgreSQL connections per process. Default: 16.
    pub postgres_pool: usize,
    /// Address other nodes and tools use for this node; default: `server.listen`.
    pub advertise: Option<String>,
    /// Address other nodes reach this node's admin listener at (`host:port`), so that any
    /// node's admin API answers for the cluster; default: the bound `server.admin_listen`
    /// (set it when that is a wildcard address such as 0.0.0.0).
    pub admin_advertise: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            redis_prefix: "sb:".into(),
            presence_ttl: Duration::from_secs(30),
            kafka_brokers: "127.0.0.1:9092".into(),
            topic_prefix: "sb.".into(),
            inbound_partitions: 12,
            kafka_fetch_wait: Duration::from_millis(100),
            kafka_session_timeout: Duration::from_secs(10),
            kafka_heartbeat_interval: Duration::from_secs(1),
            postgres_url: "postgres://postgres@127.0.0.1:5432/switchboard".into(),
            postgres_schema: "switchboard".into(),
            postgres_pool: 16,
            advertise: None,
            admin_advertise: None,
        }
    }
}

/// `[server]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Client listener (REST + WebSocket). Default: 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Admin listener (/healthz, /readyz, /metrics). Default: 127.0.0.1:9090.
    pub admin_listen: SocketAddr,
    /// Where the database, media and the development signing key live. Default: ./data.
    pub data_dir: PathBuf,
    /// Largest accepted media upload, bytes. Default: 16 MiB.
    pub media_max_bytes: usize,
    /// Largest accepted JSON request body, bytes. Default: 64 KiB.
    pub json_max_bytes: usize,
    /// Most client connections held at once; more are refused with 503. Default: 1,000,000.
    pub max_connections: usize,
    /// Bearer token of the admin API (`/admin/v1/...` on `admin_listen`, what `chatctl` talks
    /// to); at least 16 characters, compared in constant time. Pass it as env
    /// `SWITCHBOARD_SERVER_ADMIN_TOKEN` rather than writing it into the config file. Default:
    /// unset, and then every admin API request is refused with 401 `admin_disabled`
    /// (`/healthz`, `/readyz` and `/metrics` stay open either way).
    pub admin_token: Option<String>,
    /// A client connection that has not sent a whole request head within this is closed, so
    /// silent sockets cannot pile up before authentication. Default: 15s.
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
}

impl std::fmt::Debug for ServerConfig {
    // By hand so that the admin token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("data_dir", &self.data_dir)
            .field("media_max_bytes", &self.media_max_bytes)
            .field("json_max_bytes", &self.json_max_bytes)
            .field("max_connections", &self.max_connections)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("head_timeout", &self.head_timeout)
            .finish()
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 signing secret (>= 32 bytes). Default: unset, then `jwt_secret_file` is used.
    pub jwt_secret: Option<String>,
    /// File holding the secret; created with a random development key if missing.
    /// Default: `<data_dir>/jwt.key`.
    pub jwt_secret_file: Option<PathBuf>,
    /// Access token lifetime. Default: 15m.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Refresh token lifetime. Default: 30 days.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// Shortest accepted password, characters. Default: 6.
    pub password_min_len: usize,
    /// argon2id memory cost, KiB. Default: 19456 (OWASP's minimum).
    pub argon2_memory_kib: u32,
    /// argon2id passes. Default: 2.
    pub argon2_iterations: u32,
}

/// `[ws]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Largest frame or reassembled message, bytes; larger closes with 1009. Default: 128 KiB
    /// (room for `max_message_chars` of 4-byte characters plus the JSON around them).
    pub max_frame_bytes: usize,
    /// Longest message body, characters. Default: 16384.
    pub max_message_chars: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer (1013).
    /// Default: 1 MiB.
    pub outbound_queue_bytes: usize,
    /// How often the server pings every connection. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection silent for this long (no frame, no pong) is closed. Default: 75s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long closes the connection. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Sends waiting for the router at once; past this a send gets `overloaded`. Default: 65536.
    pub send_queue: usize,
    /// Frames that cost work (send, receipt, cursor, sync, typing) allowed per second per
    /// connection; past the burst they get `rate_limited`. Default: 100.
    pub rate_per_second: u32,
    /// Such frames allowed at once before the rate applies. Default: 200.
    pub rate_burst: u32,
    /// Tell a user's 1:1 peers when they come online or go offline (`{"type":"presence"}`).
    /// Costs one store read and one fan-out per first connect / last disconnect. Default: true.
    pub presence_events: bool,
    /// A session quiet for this long (no frame from the client) is parked: its task and socket
    /// registration are freed and one epoll thread watches it until it has work again (a few
    /// hundred bytes per idle session instead of a few KB; a wake-up costs a task spawn). A
    /// session also parks right after its initial sync. `"1y"` or more never parks. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub park_after: Duration,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Commit durability. Default: full.
    pub durability: Durability,
    /// Most writes grouped into one transaction (group commit). Default: 2048 (at saturation
    /// a 2,048 batch delivered 66k msgs/s against 54k with 512; benches/RESULTS.md).
    pub batch_max: usize,
    /// Read connections. Default: 4.
    pub readers: usize,
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest a graceful shutdown may take before the rest is dropped. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Standalone,
            node_id: "gw-1".into(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            ws: WsConfig::default(),
            storage: StorageConfig::default(),
            media: MediaConfig::default(),
            shutdown: ShutdownConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9090).into(),
            data_dir: PathBuf::from("./data"),
            media_max_bytes: 16 << 20,
            json_max_bytes: 64 << 10,
            max_connections: 1_000_000,
            admin_token: None,
            head_timeout: Duration::from_secs(15),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_secret_file: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            password_min_len: 6,
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 128 << 10,
            max_message_chars: 16384,
            outbound_queue_bytes: 1 << 20,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            write_timeout: Duration::from_secs(10),
            send_queue: 65536,
            rate_per_second: 100,
            rate_burst: 200,
            presence_events: true,
            park_after: Duration::from_secs(10),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { durability: Durability::Full, batch_max: 2048, readers: 4 }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            backend: MediaBackend::Local,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_prefix: String::new(),
            s3_allow_http: false,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_period: Duration::from_secs(10) }
    }
}

/// Where env vars come from: the process, or a map in tests.
pub trait Env {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct OsEnv;

impl Env for OsEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// One settable key: its dotted path, env var and default, for `config defaults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// `section.key` or `key`.
    pub key: String,
    /// `SWITCHBOARD_SECTION_KEY`.
    pub env: String,
    /// The default, as TOML.
    pub default: String,
}

impl Config {
    /// Loads defaults, then `file` (if any), then env, then `overrides` (`section.key=value`).
    ///
    /// # Errors
    /// [`ConfigError`] for unreadable files, bad syntax, unknown keys, wrong types or invalid values.
    pub fn load(file: Option<&Path>, env: &dyn Env, overrides: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for info in Self::keys() {
            if let Some(v) = env.get(&info.env) {
                set_path(&mut tree, &info.key, literal(&v));
            }
        }
        for (k, v) in overrides {
            set_path(&mut tree, k, literal(v));
        }
        let cfg: Config = toml::Value::Table(tree).try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every settable key with its env var and default.
    pub fn keys() -> Vec<KeyInfo> {
        let defaults = toml::Value::try_from(Config::default()).expect("default config serializes");
        let mut out = Vec::new();
        if let toml::Value::Table(t) = defaults {
            for (k, v) in t {
                match v {
                    toml::Value::Table(section) => {
                        for (sk, sv) in section {
                            out.push(KeyInfo {
                                env: format!("{ENV_PREFIX}{}_{}", k.to_uppercase(), sk.to_uppercase()),
                                key: format!("{k}.{sk}"),
                                default: sv.to_string(),
                            });
                        }
                    }
                    other => out.push(KeyInfo {
                        env: format!("{ENV_PREFIX}{}", k.to_uppercase()),
                        key: k,
                        default: other.to_string(),
                    }),
                }
            }
        }
        // Optional keys have no default and so do not serialize; list them anyway.
        for key in [
            "auth.jwt_secret",
            "auth.jwt_secret_file",
            "cluster.advertise",
            "cluster.admin_advertise",
            "server.admin_token",
            "media.s3_bucket",
            "media.s3_endpoint",
            "media.s3_access_key_id",
            "media.s3_secret_access_key",
        ] {
            out.push(KeyInfo {
                env: format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase()),
                key: key.into(),
                default: "(unset)".into(),
            });
        }
        out
    }

    /// Checks values that parse but cannot work, reporting every problem at once.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing each problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            errs.push("node_id must be 1-64 characters".into());
        }
        if self.mode == Mode::Cluster {
            let c = &self.cluster;
            if c.redis_urls.is_empty() || c.kafka_brokers.is_empty() || c.postgres_url.is_empty() {
                errs.push("cluster.redis_urls, cluster.kafka_brokers and cluster.postgres_url must be set".into());
            }
            if c.inbound_partitions < 1 || c.postgres_pool == 0 || c.presence_ttl < Duration::from_secs(1) {
                errs.push("cluster.inbound_partitions and cluster.postgres_pool must be >= 1, cluster.presence_ttl >= 1s".into());
            }
        }
        if self.auth.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            errs.push("auth.jwt_secret must be at least 32 bytes".into());
        }
        if self.auth.password_min_len == 0 {
            errs.push("auth.password_min_len must be at least 1".into());
        }
        if crate::auth::PasswordHasher::new(self.auth.argon2_memory_kib, self.auth.argon2_iterations).is_err() {
            errs.push("auth.argon2_memory_kib/argon2_iterations are outside argon2's limits".into());
        }
        if self.auth.access_ttl.is_zero() || self.auth.refresh_ttl <= self.auth.access_ttl {
            errs.push("auth.access_ttl must be > 0 and below auth.refresh_ttl".into());
        }
        if !(128..=16 << 20).contains(&self.ws.max_frame_bytes) {
            errs.push("ws.max_frame_bytes must be between 128 B and 16 MiB".into());
        }
        if self.ws.outbound_queue_bytes < self.ws.max_frame_bytes {
            errs.push("ws.outbound_queue_bytes must be at least ws.max_frame_bytes".into());
        }
        if self.ws.ping_interval < Duration::from_millis(100) || self.ws.write_timeout.is_zero() {
            errs.push("ws.ping_interval must be at least 100ms and ws.write_timeout above 0".into());
        }
        if self.ws.idle_timeout <= self.ws.ping_interval {
            errs.push("ws.idle_timeout must be longer than ws.ping_interval".into());
        }
        if self.ws.rate_per_second == 0 || self.ws.rate_burst == 0 {
            errs.push("ws.rate_per_second and ws.rate_burst must be at least 1".into());
        }
        if self.ws.send_queue == 0 || self.storage.batch_max == 0 || self.storage.readers == 0 {
            errs.push("ws.send_queue, storage.batch_max and storage.readers must be at least 1".into());
        }
        if self.server.admin_token.as_ref().is_some_and(|t| t.chars().count() < MIN_ADMIN_TOKEN_CHARS) {
            errs.push(format!("server.admin_token must be at least {MIN_ADMIN_TOKEN_CHARS} characters"));
        }
        if self.server.head_timeout.is_zero() {
            errs.push("server.head_timeout must be above 0".into());
        }
        if self.server.media_max_bytes == 0 {
            errs.push("server.media_max_bytes must be at least 1".into());
        }
        if self.media.backend == MediaBackend::S3 {
            self.media.validate_s3(&mut errs);
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }
}

impl MediaConfig {
    /// The checks that apply when `backend = "s3"`.
    fn validate_s3(&self, errs: &mut Vec<String>) {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !set(&self.s3_bucket) {
            errs.push("media.s3_bucket must be set when media.backend = \"s3\"".into());
        }
        if self.s3_region.trim().is_empty() {
            errs.push("media.s3_region must not be empty when media.backend = \"s3\"".into());
        }
        if set(&self.s3_access_key_id) != set(&self.s3_secret_access_key) {
            errs.push(
                "media.s3_access_key_id and media.s3_secret_access_key must be set together \
                 (the secret preferably as env SWITCHBOARD_MEDIA_S3_SECRET_ACCESS_KEY)"
                    .into(),
            );
        }
        if let Some(endpoint) = &self.s3_endpoint {
            if endpoint.starts_with("http://") {
                if !self.s3_allow_http {
                    errs.push(format!("media.s3_endpoint {endpoint:?} is plain http: set media.s3_allow_http = true to allow it"));
                }
            } else if !endpoint.starts_with("https://") {
                errs.push(format!("media.s3_endpoint {endpoint:?} must be an http:// or https:// URL"));
            }
        }
    }
}

/// Parses `--set KEY=VALUE` flags into overrides for [`Config::load`].
///
/// # Errors
/// [`ConfigError::Parse`] naming the first flag without `=`.
pub fn parse_overrides(flags: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    flags
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ConfigError::Parse(format!("--set {kv}: expected KEY=VALUE")))
        })
        .collect()
}

/// A `--set KEY=VALUE` value: TOML if it parses as one (`2048`, `"1y"`, `[...]`), else the bare
/// string.
pub fn literal(v: &str) -> toml::Value {
    format!("x = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_owned()))
}

fn set_path(tree: &mut toml::Table, path: &str, value: toml::Value) {
    match path.split_once('.') {
        Some((section, key)) => {
            let entry = tree.entry(section).or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::Table(t) = entry {
                t.insert(key.to_owned(), value);
            }
        }
        None => {
            tree.insert(path.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &env(&[]), &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn precedence_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("sb-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "node_id = \"from-file\"\n[ws]\nping_interval = \"5s\"\nidle_timeout = \"20s\"\n").unwrap();
        let e = env(&[("SWITCHBOARD_NODE_ID", "from-env"), ("SWITCHBOARD_WS_PING_INTERVAL", "7s")]);
        let c = Config::load(Some(&file), &e, &[("node_id".into(), "from-flag".into())]).unwrap();
        assert_eq!(c.node_id, "from-flag");
        assert_eq!(c.ws.ping_interval, Duration::from_secs(7));
        assert_eq!(c.ws.idle_timeout, Duration::from_secs(20));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let e = env(&[]);
        let err = Config::load(None, &e, &[("server.lisen".into(), "x".into())]).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::load(
            None,
            &e,
            &[("auth.password_min_len".into(), "0".into()), ("ws.max_frame_bytes".into(), "1".into())],
        )
        .unwrap_err();
        let ConfigError::Invalid(list) = err else { panic!("expected Invalid") };
        assert!(list.len() >= 2, "{list:?}");
    }

    #[test]
    fn media_section_from_file_and_env() {
        let dir = std::env::temp_dir().join(format!("sb-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[media]\nbackend = \"s3\"\ns3_bucket = \"sb-media\"\ns3_endpoint = \"http://127.0.0.1:9000\"\n\
             s3_allow_http = true\ns3_access_key_id = \"AKIDEXAMPLE\"\ns3_prefix = \"from-file\"\n",
        )
        .unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let e = env(&[
            ("SWITCHBOARD_MEDIA_S3_SECRET_ACCESS_KEY", secret),
            ("SWITCHBOARD_MEDIA_S3_PREFIX", "tenant-a/media"),
            ("SWITCHBOARD_MEDIA_S3_REGION", "eu-central-1"),
        ]);
        let c = Config::load(Some(&file), &e, &[]).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        let m = &c.media;
        assert_eq!(m.backend, MediaBackend::S3);
        assert_eq!(m.s3_bucket.as_deref(), Some("sb-media"));
        assert_eq!(m.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(m.s3_region, "eu-central-1");
        assert_eq!(m.s3_access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(m.s3_secret_access_key.as_deref(), Some(secret));
        assert_eq!(m.s3_prefix, "tenant-a/media");
        assert!(m.s3_allow_http);
        assert!(!format!("{c:?}").contains(secret), "Debug must not show the secret");
        // Tests write configs with toml::to_string: the new section must round-trip.
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let back: Config = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        assert_eq!(back, Config::default());
        assert_eq!(Config::default().media.backend, MediaBackend::Local);
    }

    #[test]
    fn media_s3_is_validated() {
        let e = env(&[]);
        let set = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let err = Config::load(None, &e, &set(&[("media.backend", "s3")])).unwrap_err();
        let ConfigError::Invalid(list) = err else { panic!("expected Invalid") };
        assert!(list.iter().any(|m| m.contains("media.s3_bucket must be set")), "{list:?}");
        let err = Config::load(
            None,
            &e,
            &set(&[
                ("media.backend", "s3"),
                ("media.s3_bucket", "b"),
                ("media.s3_endpoint", "http://127.0.0.1:9000"),
                ("media.s3_access_key_id", "AKIDEXAMPLE"),
            ]),
        )
        .unwrap_err();
        let ConfigError::Invalid(list) = err else { panic!("expected Invalid") };
        assert!(list.iter().any(|m| m.contains("s3_allow_http")), "{list:?}");
        assert!(list.iter().any(|m| m.contains("set together")), "{list:?}");
        let err = Config::load(None, &e, &set(&[("media.backend", "s3"), ("media.s3_bucket", "b"), ("media.s3_endpoint", "127.0.0.1:9000")]))
            .unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");
        let err = Config::load(None, &e, &set(&[("media.backend", "gcs")])).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)), "{err}");
        let err = Config::load(None, &e, &set(&[("media.s3_bucket_name", "b")])).unwrap_err();
        assert!(err.to_string().contains("s3_bucket_name"), "{err}");
        // The s3 fields are not checked while the backend is local.
        Config::load(None, &e, &set(&[("media.s3_endpoint", "http://127.0.0.1:9000")])).unwrap();
        // AWS: no endpoint, credentials from the instance.
        let c = Config::load(None, &e, &set(&[("media.backend", "s3"), ("media.s3_bucket", "b")])).unwrap();
        assert_eq!(c.media.s3_endpoint, None);
    }

    #[test]
    fn keys_list_env_names() {
        let keys = Config::keys();
        assert!(keys.iter().any(|k| k.key == "server.listen" && k.env == "SWITCHBOARD_SERVER_LISTEN"));
        assert!(keys.iter().any(|k| k.key == "auth.jwt_secret"));
        assert!(keys.iter().any(|k| k.key == "media.backend" && k.env == "SWITCHBOARD_MEDIA_BACKEND"));
        assert!(keys
            .iter()
            .any(|k| k.key == "media.s3_secret_access_key" && k.env == "SWITCHBOARD_MEDIA_S3_SECRET_ACCESS_KEY"));
        assert!(keys.iter().any(|k| k.key == "server.admin_token" && k.env == "SWITCHBOARD_SERVER_ADMIN_TOKEN"));
    }

    #[test]
    fn admin_token_from_env_is_checked_and_redacted() {
        let token = "admin-token-admin-token-0123";
        let c = Config::load(None, &env(&[("SWITCHBOARD_SERVER_ADMIN_TOKEN", token)]), &[]).unwrap();
        assert_eq!(c.server.admin_token.as_deref(), Some(token));
        assert!(!format!("{c:?}").contains(token), "Debug must not show the admin token");
        let back: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let err = Config::load(None, &env(&[("SWITCHBOARD_SERVER_ADMIN_TOKEN", "short")]), &[]).unwrap_err();
        assert!(err.to_string().contains("server.admin_token"), "{err}");
    }
}
