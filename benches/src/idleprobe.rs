//! `idleprobe`: holds N idle authenticated WebSocket sessions against a running `gatewayd`
//! and reports the server's resident memory growth per session (from `/proc/<pid>/status`)
//! plus the kernel's socket memory (from `/proc/net/sockstat`).
//!
//! Tokens are minted with the server's signing secret (pass the same secret to both), so no
//! registration or argon2 work skews the ramp. Connections are spread over source addresses
//! 127.0.0.1-127.0.0.N so one process can exceed a single address's ephemeral ports.
//!
//! ```text
//! SWITCHBOARD_AUTH_JWT_SECRET=$SECRET gatewayd --set ws.idle_timeout='"2h"' --set ws.ping_interval='"1h"' &
//! idleprobe --pid $! --secret $SECRET --connections 15000
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::auth::JwtKeys;
use switchboard_core::ids::{DeviceId, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Idle-connection memory probe for gatewayd.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// PID of the gateway process (for /proc/<pid>/status).
    #[arg(long)]
    pid: u32,
    /// The gateway's HS256 secret.
    #[arg(long, env = "SWITCHBOARD_AUTH_JWT_SECRET")]
    secret: String,
    /// Sessions to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Source addresses 127.0.0.1..=127.0.0.N to spread over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// First user id to mint tokens for.
    #[arg(long, default_value_t = 1_000_000)]
    first_user: i64,
    /// Seconds to let the server settle before the final reading.
    #[arg(long, default_value_t = 3)]
    settle: u64,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn sockstat_tcp_mem_pages() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = tcp.split_whitespace();
    while let Some(k) = it.next() {
        if k == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

async fn open(target: SocketAddr, source: Ipv4Addr, token: &str) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut s = sock.connect(target).await?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    // Read the 101 and the `synced` frame that follows it.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed during handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf.starts_with(b"HTTP/1.1 101") && buf.len() >= 12 {
            bail!("refused: {}", String::from_utf8_lossy(&buf[..buf.len().min(80)]));
        }
        if buf.windows(6).any(|w| w == b"synced") {
            return Ok(s);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let keys = JwtKeys::new(a.secret.as_bytes(), Duration::from_secs(6 * 3600), Duration::from_secs(7 * 3600));
    // Warm up: a few sessions so one-time allocations (thread-local scratch, maps) are paid.
    let mut held = Vec::with_capacity(a.connections);
    for i in 0..16 {
        let t = keys.issue(UserId(a.first_user - 100 + i), &DeviceId("warm".into())).access;
        held.push(open(a.target, Ipv4Addr::LOCALHOST, &t).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_kib(a.pid)?;
    let tcp0 = sockstat_tcp_mem_pages();
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.connections {
        let token = keys.issue(UserId(a.first_user + i as i64), &DeviceId("probe".into())).access;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % a.sources.max(1) as usize) as u8);
        let permit = sem.clone().acquire_owned().await?;
        let target = a.target;
        tasks.spawn(async move {
            let r = open(target, source, &token).await;
            drop(permit);
            r
        });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(s) => held.push(s),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connect failed: {e:#}");
                }
            }
        }
    }
    let ramp = started.elapsed();
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    let rss1 = rss_kib(a.pid)?;
    let tcp1 = sockstat_tcp_mem_pages();
    let n = held.len() - 16;
    let per = (rss1.saturating_sub(rss0) * 1024) as f64 / n.max(1) as f64;
    println!("sessions_established {n}");
    println!("sessions_failed {failed}");
    println!("ramp_seconds {:.2}", ramp.as_secs_f64());
    println!("sessions_per_second {:.0}", n as f64 / ramp.as_secs_f64());
    println!("server_rss_before_kib {rss0}");
    println!("server_rss_after_kib {rss1}");
    println!("server_rss_bytes_per_session {per:.0}");
    if let (Some(t0), Some(t1)) = (tcp0, tcp1) {
        // Both ends of every loopback connection live in this kernel.
        let page = 4096.0;
        println!("kernel_tcp_mem_bytes_per_connection_pair {:.0}", (t1.saturating_sub(t0)) as f64 * page / n.max(1) as f64);
    }
    Ok(())
}
