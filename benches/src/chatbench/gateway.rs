//! Gateways under test: started by the harness (`--spawn`: temp data dir, free loopback ports,
//! cheap argon2, long keepalive, the run's secret; stopped with SIGTERM by PID) or given
//! (`--target`, optionally `--pid` to measure it here or `--metrics` to read its /metrics).

use crate::http::Http;
use crate::measure::{self, Proc};
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings every spawned gateway gets (benchmarks, not production).
pub const BENCH_SETTINGS: &[&str] = &[
    "auth.argon2_memory_kib=1024",
    "auth.argon2_iterations=1",
    "ws.idle_timeout=\"2h\"",
    "ws.ping_interval=\"1h\"",
];

/// One gateway under test.
pub struct Gateway {
    /// Client listener.
    pub addr: SocketAddr,
    /// PID to measure, if local.
    pub pid: Option<u32>,
    /// Admin listener whose /metrics gives RSS and CPU when there is no PID (another machine).
    pub metrics: Option<SocketAddr>,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Gateway {
    /// A gateway the harness did not start.
    pub fn external(addr: SocketAddr, pid: Option<u32>, metrics: Option<SocketAddr>) -> Self {
        Self { addr, pid, metrics, child: None, dir: None }
    }

    /// Whether its RSS and CPU can be read: a PID here, or a /metrics address.
    pub fn measured(&self) -> bool {
        self.pid.is_some() || self.metrics.is_some()
    }

    /// Its RSS and CPU now: from `/proc/<pid>` when local, else from its /metrics; None if
    /// neither answers.
    pub async fn reading(&self) -> Option<Proc> {
        if let Some(pid) = self.pid {
            return measure::proc(pid);
        }
        let (status, text) = Http::get_text(self.metrics?, "/metrics").await.ok()?;
        (status == 200).then(|| measure::from_prometheus(&text)).flatten()
    }

    /// Starts `bin` and waits for its `/readyz`.
    pub async fn spawn(bin: &Path, index: usize, secret: &str, extra: &[String]) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("chatbench-{}-gw{index}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = std::fs::File::create(dir.join("gatewayd.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("SWITCHBOARD_AUTH_JWT_SECRET", secret)
            .env("SWITCHBOARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for s in BENCH_SETTINGS.iter().map(|s| s.to_string()).chain(extra.iter().cloned()) {
            cmd.arg("--set").arg(s);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut gw = Self { addr, pid: Some(child.id()), metrics: Some(admin), child: Some(child), dir: Some(dir) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = gw.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("gatewayd exited at start ({status}):\n{}", gw.log_tail());
            }
            if Http::status(admin, "/readyz").await.ok() == Some(200) {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                bail!("gatewayd not ready after 30 s:\n{}", gw.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if a spawned gateway has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("gatewayd {} exited during the run ({status}):\n{}", self.addr, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of a spawned gateway's log.
    pub fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else { return String::new() };
        let s = std::fs::read_to_string(dir.join("gatewayd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM (by PID), wait up to 15 s, then SIGKILL; removes the temp dir.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
