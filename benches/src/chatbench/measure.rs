//! Readings from /proc: a process's resident memory and CPU time, the kernel's TCP socket
//! memory (`/proc/net/sockstat`) and the socket-related slab caches (`/proc/slabinfo`, root).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// Slab caches reported (both ends of loopback connections live in this kernel).
const SLABS: &[&str] = &["TCP", "request_sock_TCP", "tw_sock_TCP", "skbuff_head_cache", "sock_inode_cache"];

/// Slab caches of what an open socket holds besides the socket: its `struct file`, its pseudo
/// dentry, and its epoll registration. Kept apart from [`SLABS`]: `filp` and `dentry` also move
/// with any other file activity on the machine, so this figure is noisier.
const FD_SLABS: &[&str] = &["filp", "dentry", "eventpoll_epi"];

/// One process at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Proc {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; None if the process is gone.
pub fn proc(pid: u32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, ticks) = stat_cpu_ticks(&stat)?;
    Some(Proc { rss_kib, cpu_s: ticks as f64 / clk_tck() })
}

/// The command name and utime + stime (ticks) of a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<(&str, u64)> {
    // The name is in parentheses and may hold spaces and parentheses itself; after it come the
    // state (field 3), ..., utime (14) and stime (15).
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((stat.get(open + 1..close)?, ticks))
}

/// A thread's name without a trailing instance number: the threads of one pool are summed
/// (`sqlite-reader-3` → `sqlite-reader`).
fn thread_kind(name: &str) -> &str {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() < name.len() {
        trimmed.trim_end_matches(['-', '_', ' ', '#'])
    } else {
        name
    }
}

/// CPU seconds (utime + stime) of a process's live threads, summed by [`thread_kind`]; empty
/// if the process is gone. A thread that has exited no longer counts here (its time stays in
/// the process's total).
pub fn threads(pid: u32) -> BTreeMap<String, f64> {
    let mut by_kind = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_kind };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        if let Some((name, ticks)) = stat_cpu_ticks(&stat) {
            *by_kind.entry(thread_kind(name).to_owned()).or_insert(0.0) += ticks as f64 / clk_tck();
        }
    }
    by_kind
}

/// This machine, for the record: CPU model and clock (`/proc/cpuinfo`), CPU count, kernel
/// release. Results from two machines of the same nominal size can differ by half.
pub fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = format!("{} × {}", cpus, field("model name").unwrap_or_else(|| "unknown CPU".into()));
    if let Some(mhz) = field("cpu MHz").and_then(|v| v.parse::<f64>().ok()) {
        let _ = write!(s, " at {mhz:.0} MHz");
    }
    if let Ok(rel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        let _ = write!(s, ", Linux {}", rel.trim());
    }
    s
}

/// A process's reading from its Prometheus text (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, as every Switchboard service's /metrics has them); None
/// without both.
pub fn from_prometheus(text: &str) -> Option<Proc> {
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    let rss = value("process_resident_memory_bytes")?;
    let cpu_s = value("process_cpu_seconds_total")?;
    Some(Proc { rss_kib: (rss / 1024.0) as u64, cpu_s })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Kernel socket figures at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Kernel {
    /// `/proc/net/sockstat` TCP `inuse`.
    pub tcp_inuse: u64,
    /// TCP `tw` (TIME_WAIT).
    pub tcp_tw: u64,
    /// TCP `mem`, pages (4 KiB): buffers of every TCP socket.
    pub tcp_mem_pages: u64,
    /// Slab caches: name → bytes (active objects × object size); empty if unreadable.
    pub slab_bytes: BTreeMap<String, u64>,
    /// The file/epoll slab caches ([`FD_SLABS`]), the same way; absent in older result files.
    #[serde(default)]
    pub fd_slab_bytes: BTreeMap<String, u64>,
    /// `/proc/net/netstat` TcpExt counters (cumulative, whole machine): ListenOverflows,
    /// ListenDrops, SyncookiesSent, TCPTimeouts.
    #[serde(default)]
    pub tcp_ext: BTreeMap<String, u64>,
    /// `/proc/stat`'s all-CPU line, in ticks; absent in older result files.
    #[serde(default)]
    pub cpu: CpuTicks,
}

/// Whole-machine CPU time by kind, in clock ticks (`/proc/stat`, first line).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CpuTicks {
    /// Every kind summed.
    pub total: u64,
    /// Idle, iowait excluded.
    pub idle: u64,
    /// Idle while I/O was outstanding.
    pub iowait: u64,
    /// Taken by the hypervisor for other guests while this one wanted to run: on a shared
    /// VM, the noise behind run-to-run differences.
    pub steal: u64,
}

impl CpuTicks {
    /// Parses `/proc/stat`'s `cpu  user nice system idle iowait irq softirq steal ...` line.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
        // guest and guest_nice (fields 9 and 10) are already counted in user and nice.
        let total = v.iter().take(8).sum();
        Some(Self { total, idle: *v.get(3)?, iowait: *v.get(4)?, steal: v.get(7).copied().unwrap_or(0) })
    }

    /// The ticks spent since `earlier`; `None` if none passed (or it was not read).
    pub fn since(self, earlier: Self) -> Option<Self> {
        (self.total > earlier.total).then(|| Self {
            total: self.total - earlier.total,
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            steal: self.steal.saturating_sub(earlier.steal),
        })
    }
}

/// TcpExt counters kept (a full accept queue drops handshakes; clients retry SYN after 1 s).
const TCP_EXT: &[&str] = &["ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPTimeouts"];

/// Reads sockstat and slabinfo.
pub fn kernel() -> Kernel {
    let cpu = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(CpuTicks::parse).unwrap_or_default();
    let mut k = Kernel { cpu, ..Kernel::default() };
    if let Ok(s) = std::fs::read_to_string("/proc/net/sockstat") {
        if let Some(tcp) = s.lines().find(|l| l.starts_with("TCP:")) {
            let f: Vec<&str> = tcp.split_whitespace().collect();
            for pair in f[1..].chunks(2) {
                if let [key, val] = pair {
                    let v = val.parse().unwrap_or(0);
                    match *key {
                        "inuse" => k.tcp_inuse = v,
                        "tw" => k.tcp_tw = v,
                        "mem" => k.tcp_mem_pages = v,
                        _ => {}
                    }
                }
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/net/netstat") {
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        if let [names, values] = lines[..] {
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()).skip(1) {
                if TCP_EXT.contains(&n) {
                    k.tcp_ext.insert(n.to_owned(), v.parse().unwrap_or(0));
                }
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/slabinfo") {
        for line in s.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // name <active_objs> <num_objs> <objsize> ...
            if f.len() > 3 && (SLABS.contains(&f[0]) || FD_SLABS.contains(&f[0])) {
                let active: u64 = f[1].parse().unwrap_or(0);
                let size: u64 = f[3].parse().unwrap_or(0);
                let into = if SLABS.contains(&f[0]) { &mut k.slab_bytes } else { &mut k.fd_slab_bytes };
                into.insert(f[0].to_owned(), active * size);
            }
        }
    }
    k
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_thread_cpu_and_groups_numbered_threads() {
        let line = "4711 (sqlite-reader-3) S 1 4711 4711 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu_ticks(line), Some(("sqlite-reader-3", 300)));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0";
        assert_eq!(stat_cpu_ticks(odd), Some(("a (b) c", 3)), "a name with spaces and parentheses");
        assert_eq!(stat_cpu_ticks("7 (x) R 1"), None, "truncated");
        assert_eq!(thread_kind("sqlite-reader-3"), "sqlite-reader");
        assert_eq!(thread_kind("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_kind("worker12"), "worker");
        let own = threads(std::process::id());
        assert!(!own.is_empty(), "this test's own threads");
        assert!(own.values().all(|s| *s >= 0.0));
    }

    #[test]
    fn reads_a_process_from_its_metrics_text() {
        let text = "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.34\n\
                    process_resident_memory_bytes_max 1\n\
                    process_resident_memory_bytes 20971520\n";
        let p = from_prometheus(text).expect("both figures");
        assert_eq!(p.rss_kib, 20_480);
        assert!((p.cpu_s - 12.34).abs() < 1e-9);
        assert!(from_prometheus("process_cpu_seconds_total 1\n").is_none(), "no memory figure");
    }

    #[test]
    fn names_the_machine() {
        let m = machine();
        assert!(m.contains(" × "), "{m}");
        assert!(m.contains("Linux "), "{m}");
    }

    #[test]
    fn parses_the_all_cpu_line() {
        let stat = "cpu  100 5 50 800 20 1 4 30 7 0\ncpu0 50 2 25 400 10 0 2 15 0 0\n";
        let t = CpuTicks::parse(stat).expect("parsed");
        assert_eq!((t.total, t.idle, t.iowait, t.steal), (1010, 800, 20, 30));
        assert!(CpuTicks::parse("intr 1 2 3").is_none());
        let later = CpuTicks { total: 1110, idle: 850, iowait: 20, steal: 40 };
        let d = later.since(t).expect("ticks passed");
        assert_eq!((d.total, d.idle, d.iowait, d.steal), (100, 50, 0, 10));
        assert!(t.since(t).is_none());
    }

    #[test]
    fn reads_own_process() {
        let p = proc(std::process::id()).expect("own /proc entry");
        assert!(p.rss_kib > 0);
        assert!(p.cpu_s >= 0.0);
        let k = kernel();
        assert!(k.tcp_inuse < 10_000_000);
    }
}
