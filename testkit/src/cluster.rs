//! Cluster-test plumbing: a Kafka-protocol broker (shared from `KAFKA_BROKERS`, or a tansu
//! started through `scripts/kafka.sh` and stopped on drop); a namespace of unique names
//! (Redis key prefix, topic prefix, PostgreSQL schema, and with `SWITCHBOARD_TEST_S3_ENDPOINT`
//! an S3 bucket) whose keys and schema are removed on drop; and the cluster's binaries run as
//! child processes ([`Process`]: [`gateway`], [`router`], [`storage_worker`]).

use std::process::Command;

pub use switchboard_core::bus::test_broker::Broker;

/// Unique names for one test; Redis keys and the PostgreSQL schema are removed on drop
/// (topics die with a broker the test started). Removing twice is harmless.
pub struct Namespace {
    /// The id the names are made from.
    pub id: String,
    /// `test:<id>:`
    pub redis_prefix: String,
    /// `test.<id>.`
    pub topic_prefix: String,
    /// `sbtest_<id>`
    pub schema: String,
}

impl Namespace {
    /// Fresh names.
    pub fn new() -> Self {
        Self::with_id(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The names of `id`.
    pub fn with_id(id: String) -> Self {
        Self {
            redis_prefix: format!("test:{id}:"),
            topic_prefix: format!("test.{id}."),
            schema: format!("sbtest_{id}"),
            id,
        }
    }
}

/// Points a config at the shared services under `ns`, as node `node`, with tansu-friendly
/// Kafka timings.
pub fn apply(c: &mut switchboard_core::config::Config, ns: &Namespace, brokers: &str, node: &str) {
    use std::time::Duration;
    c.mode = switchboard_core::config::Mode::Cluster;
    c.node_id = node.into();
    let k = &mut c.cluster;
    k.redis_prefix = ns.redis_prefix.clone();
    k.topic_prefix = ns.topic_prefix.clone();
    k.postgres_schema = ns.schema.clone();
    k.postgres_url = std::env::var("SWITCHBOARD_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    k.postgres_pool = 4;
    k.kafka_brokers = brokers.into();
    k.inbound_partitions = 3;
    k.presence_ttl = Duration::from_secs(3);
    k.kafka_fetch_wait = Duration::from_millis(20);
    k.kafka_session_timeout = Duration::from_secs(6);
    k.kafka_heartbeat_interval = Duration::from_millis(500);
    if let Ok(endpoint) = std::env::var("SWITCHBOARD_TEST_S3_ENDPOINT") {
        use switchboard_core::config::MediaBackend;
        let m = &mut c.media;
        m.backend = MediaBackend::S3;
        m.s3_bucket = Some(ns.bucket(&endpoint));
        m.s3_endpoint = Some(endpoint);
        m.s3_allow_http = true;
        m.s3_access_key_id = Some("test".into());
        m.s3_secret_access_key = Some("test".into());
    }
}

impl Namespace {
    /// This namespace's media bucket on the S3 server at `endpoint` (moto, started by
    /// `scripts/s3.sh`), created on first use: `sbtest-<id>`.
    pub fn bucket(&self, endpoint: &str) -> String {
        let bucket = format!("sbtest-{}", self.id);
        let url = format!("{endpoint}/{bucket}");
        // 200 created, 409 already there (another node of this namespace made it).
        let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", &url]).output();
        let code = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        assert!(code == "200" || code == "409", "cannot create bucket {url}: HTTP {code}");
        bucket
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", &sql]).output();
        let pattern = format!("{}*", self.redis_prefix);
        if let Ok(out) = Command::new("redis-cli").args(["-h", "127.0.0.1", "--scan", "--pattern", &pattern]).output() {
            let keys: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
            for chunk in keys.chunks(500) {
                let _ = Command::new("redis-cli").args(["-h", "127.0.0.1", "del"]).args(chunk).output();
            }
        }
    }
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The path of a workspace binary (`gatewayd`, `router`, `storage-workers`): in
/// `SWITCHBOARD_BIN_DIR` when set, else beside the running test's `deps/` directory
/// (`target/debug/`). The router and storage-workers binaries need `--features cluster`:
/// `cargo build -p router -p storage-workers --features router/cluster,storage-workers/cluster`
/// (scripts/test.sh does).
pub fn bin(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("SWITCHBOARD_BIN_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            let deps = exe.parent().expect("deps dir");
            deps.parent().expect("profile dir").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: build it with `cargo build -p {name} --features {name}/cluster` (or set SWITCHBOARD_BIN_DIR)",
        path.display()
    );
    path
}

/// Writes `cfg` as a TOML file the binaries read with `--config`.
pub fn write_config(cfg: &switchboard_core::config::Config, path: &std::path::Path) {
    let text = toml::to_string(cfg).expect("a config serializes");
    std::fs::write(path, text).expect("write config");
}

/// A child process of a test (gateway node, router or storage worker) with its admin
/// listener; killed on drop, stopped gracefully by [`Process::terminate`].
pub struct Process {
    child: std::process::Child,
    /// Its name in messages (`router`, `gw-b`, ...).
    pub name: String,
    /// `http://127.0.0.1:<admin port>`.
    pub admin: String,
    log: std::path::PathBuf,
}

impl Process {
    /// Starts `bin args...` with stdout and stderr appended to `log` (logging at
    /// `SWITCHBOARD_LOG`, default `warn`).
    pub fn spawn(name: &str, bin: &std::path::Path, args: &[String], admin_port: u16, log: &std::path::Path) -> Self {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(bin)
            .args(args)
            .env("SWITCHBOARD_LOG", std::env::var("SWITCHBOARD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Self { child, name: name.into(), admin: format!("http://127.0.0.1:{admin_port}"), log: log.to_owned() }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200; panics with the log's tail if the process exits or
    /// is not ready within 60 s (broker group joins can take seconds).
    pub async fn ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before it was ready:\n{}", self.name, self.log_tail());
            }
            let ok = http.get(format!("{}/readyz", self.admin)).send().await.map(|r| r.status().is_success());
            if ok.unwrap_or(false) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} not ready within 60 s:\n{}", self.name, self.log_tail());
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then waits up to 30 s for a graceful exit (then SIGKILL). Returns whether it
    /// exited successfully on its own.
    pub async fn terminate(mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if tokio::time::Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return false;
                }
            }
        }
    }

    /// SIGKILL: a crash, with no chance to flush or commit anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A router process for `cfg` (its cluster section), ready to route.
pub async fn router(cfg: &switchboard_core::config::Config, dir: &std::path::Path, name: &str) -> Process {
    worker_process("router", cfg, dir, name).await
}

/// A storage-workers process for `cfg`, ready to consume.
pub async fn storage_worker(cfg: &switchboard_core::config::Config, dir: &std::path::Path, name: &str) -> Process {
    worker_process("storage-workers", cfg, dir, name).await
}

async fn worker_process(bin_name: &str, cfg: &switchboard_core::config::Config, dir: &std::path::Path, name: &str) -> Process {
    let mut c = cfg.clone();
    c.node_id = name.into();
    let file = dir.join(format!("{name}.toml"));
    write_config(&c, &file);
    let port = free_port();
    let args = vec!["--config".into(), file.display().to_string(), "--admin-listen".into(), format!("127.0.0.1:{port}")];
    let mut p = Process::spawn(name, &bin(bin_name), &args, port, &dir.join(format!("{name}.log")));
    p.ready().await;
    p
}

/// A gateway node process for `cfg` as node `name`, on fresh ports, its data under
/// `dir/<name>`; returns it ready, with its client address (`127.0.0.1:port`).
pub async fn gateway(cfg: &switchboard_core::config::Config, dir: &std::path::Path, name: &str) -> (Process, String) {
    let mut c = cfg.clone();
    c.node_id = name.into();
    let (port, admin) = (free_port(), free_port());
    c.server.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    c.server.admin_listen = format!("127.0.0.1:{admin}").parse().expect("addr");
    c.server.data_dir = dir.join(name);
    let file = dir.join(format!("{name}.toml"));
    write_config(&c, &file);
    let args = vec!["--config".into(), file.display().to_string()];
    let mut p = Process::spawn(name, &bin("gatewayd"), &args, admin, &dir.join(format!("{name}.log")));
    p.ready().await;
    (p, format!("127.0.0.1:{port}"))
}
