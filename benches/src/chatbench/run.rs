//! `chatbench run`: starts (or takes) the gateways, sets up users, spawns the workers, drives
//! the phases, samples the gateways once a second, and writes the results.

use crate::cli::RunArgs;
use crate::gateway::{Gateway, BENCH_SETTINGS};
use crate::measure::{self, Proc};
use crate::proto::{Cmd, Ev, Final, Opened, RecvAgg, SendAgg, StreamKey, Tick, Traffic};
use crate::report::{self, Row, RunResult, ServerReadings, ThreadCpu};
use crate::scenario::{Kind, Rate, Scenario};
use crate::setup;
use crate::stats::{self, instant_at, unix_ns, Percentiles};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

/// A progress bar on stderr.
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    let template = if len == 0 { "{prefix:>10} {msg} ({elapsed})" } else { "{prefix:>10} [{bar:25}] {pos}/{len} {msg} ({elapsed})" };
    b.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    b.set_prefix(prefix.to_owned());
    b
}

/// The worker processes.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
}

impl Workers {
    fn spawn(n: usize, tx: mpsc::Sender<Ev>) -> Result<Self> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for w in 0..n {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("spawning a worker")?;
            stdins.push(child.stdin.take().context("worker stdin")?);
            let out = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let ev = crate::worker::parse_event(&line)
                        .unwrap_or_else(|e| Ev::Error { worker: w as u32, message: format!("{e:#}") });
                    if tx.blocking_send(ev).is_err() {
                        return;
                    }
                }
                let _ = tx.blocking_send(Ev::Error { worker: w as u32, message: "worker exited".into() });
            });
            children.push(child);
        }
        Ok(Self { children, stdins })
    }

    fn send(&mut self, w: usize, cmd: &Cmd) -> Result<()> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        self.stdins[w].write_all(&line).context("writing to a worker")?;
        self.stdins[w].flush()?;
        Ok(())
    }

    fn send_all(&mut self, cmd: &Cmd) -> Result<()> {
        (0..self.stdins.len()).try_for_each(|w| self.send(w, cmd))
    }

    /// CPU seconds of the workers still running (None once they have exited).
    fn cpu_s(&self) -> Option<f64> {
        let v: Vec<f64> = self.children.iter().filter_map(|c| measure::proc(c.id())).map(|p| p.cpu_s).collect();
        (v.len() == self.children.len()).then(|| v.iter().sum())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// What the progress bar shows.
enum Mode {
    Open,
    Run { start_k: i64 },
    Hold,
}

/// Per-second accumulation.
#[derive(Default)]
struct Acc {
    row: Row,
    conns: BTreeMap<u32, u64>,
    hist: Option<Histogram<u64>>,
}

/// Receives worker events, samples the gateways every second, keeps the timeline.
struct Collector {
    rx: mpsc::Receiver<Ev>,
    t0_ns: u64,
    rows: BTreeMap<i64, Acc>,
    opened: BTreeMap<u32, u64>,
    sampler: tokio::time::Interval,
    last_cpu: Option<(f64, Instant)>,
    bar: ProgressBar,
    mode: Mode,
    workers: usize,
    /// Workers that sent their final report (their exit is expected).
    finished: Vec<u32>,
}

impl Collector {
    fn k_now(&self) -> i64 {
        ((unix_ns().saturating_sub(self.t0_ns) + 500_000_000) / 1_000_000_000) as i64
    }

    fn on_tick(&mut self, t: Tick) -> Result<()> {
        let acc = self.rows.entry(t.k).or_default();
        acc.row.t = t.k;
        acc.row.sent += t.sent;
        acc.row.acked += t.acked;
        acc.row.delivered += t.delivered;
        acc.row.errors += t.errors;
        acc.conns.insert(t.worker, t.conns);
        acc.row.conns = acc.conns.values().sum();
        if let Some(h) = &t.hist {
            stats::merge(acc.hist.get_or_insert_with(stats::hist), h)?;
        }
        self.opened.insert(t.worker, t.opened);
        let complete = acc.conns.len() == self.workers;
        let conns = acc.row.conns;
        if complete {
            self.finish_row(t.k);
            let r = &self.rows[&t.k].row;
            match self.mode {
                Mode::Open => {
                    self.bar.set_position(self.opened.values().sum());
                    self.bar.set_message(format!("{conns} open"));
                }
                Mode::Run { start_k } => {
                    self.bar.set_position((t.k - start_k).max(0) as u64);
                    self.bar.set_message(format!(
                        "s {} d {}/s p99 {}ms err {}",
                        r.sent,
                        r.delivered,
                        r.p99_ms.map_or("-".into(), report::num),
                        r.errors
                    ));
                }
                Mode::Hold => self.bar.set_message(format!("{conns} open")),
            }
        }
        Ok(())
    }

    fn finish_row(&mut self, k: i64) {
        let Some(acc) = self.rows.get_mut(&k) else { return };
        if let Some(h) = &acc.hist {
            let p = Percentiles::of(h);
            acc.row.p50_ms = Some(p.p50);
            acc.row.p90_ms = Some(p.p90);
            acc.row.p99_ms = Some(p.p99);
        }
    }

    async fn sample(&mut self, gws: &mut [Gateway]) -> Result<()> {
        for g in gws.iter_mut() {
            g.check_alive()?;
        }
        let k = self.k_now();
        let mut procs: Vec<Proc> = Vec::with_capacity(gws.len());
        for g in gws.iter() {
            procs.extend(g.reading().await);
        }
        if procs.is_empty() {
            return Ok(());
        }
        let rss: u64 = procs.iter().map(|p| p.rss_kib).sum();
        let cpu: f64 = procs.iter().map(|p| p.cpu_s).sum();
        let now = Instant::now();
        let acc = self.rows.entry(k).or_default();
        acc.row.t = k;
        acc.row.server_rss_mib = Some(rss as f64 / 1024.0);
        if let Some((c0, t0)) = self.last_cpu {
            acc.row.server_cpu_pct = Some((cpu - c0) / (now - t0).as_secs_f64() * 100.0);
        }
        self.last_cpu = Some((cpu, now));
        Ok(())
    }

    /// Processes events until `pick` has returned `Some` `n` times, or until `until` if n == 0.
    async fn wait<T>(&mut self, gws: &mut [Gateway], n: usize, until: Option<Instant>, mut pick: impl FnMut(Ev) -> Option<T>) -> Result<Vec<T>> {
        let mut got = Vec::new();
        loop {
            if n > 0 && got.len() >= n {
                return Ok(got);
            }
            let deadline = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    None => bail!("workers gone"),
                    Some(Ev::Tick(t)) => self.on_tick(t)?,
                    Some(Ev::Error { worker, .. }) if self.finished.contains(&worker) => {}
                    Some(Ev::Error { worker, message }) => bail!("worker {worker}: {message}"),
                    Some(ev) => {
                        if let Ev::Final(f) = &ev {
                            self.finished.push(f.worker);
                        }
                        if let Some(x) = pick(ev) {
                            got.push(x);
                        }
                    }
                },
                _ = self.sampler.tick() => self.sample(gws).await?,
                _ = tokio::time::sleep_until(deadline) => {
                    if n == 0 {
                        return Ok(got);
                    }
                    bail!("timed out waiting for the workers");
                }
            }
        }
    }

    /// Keeps collecting for `secs`.
    async fn pump(&mut self, gws: &mut [Gateway], secs: f64) -> Result<()> {
        let until = Instant::now() + Duration::from_secs_f64(secs.max(0.0));
        self.wait(gws, 0, Some(until), |_: Ev| None::<()>).await.map(|_| ())
    }

    fn set_bar(&mut self, len: u64, prefix: &str, mode: Mode) {
        self.bar.finish_and_clear();
        self.bar = bar(len, prefix);
        self.mode = mode;
    }
}

/// Readings of every measured gateway, the kernel and the workers at a phase boundary.
#[derive(Default)]
struct Marks {
    names: Vec<&'static str>,
    at: Vec<Instant>,
    procs: Vec<Vec<Option<Proc>>>,
    /// Per gateway, CPU seconds by kind of thread (`measure::threads`).
    threads: Vec<Vec<BTreeMap<String, f64>>>,
    kernel: Vec<measure::Kernel>,
    client_cpu: Vec<Option<f64>>,
}

impl Marks {
    async fn take(&mut self, name: &'static str, gws: &[Gateway], workers: &Workers) {
        self.names.push(name);
        self.at.push(Instant::now());
        let mut procs = Vec::with_capacity(gws.len());
        for g in gws {
            procs.push(g.reading().await);
        }
        self.procs.push(procs);
        self.threads.push(gws.iter().map(|g| g.pid.map(measure::threads).unwrap_or_default()).collect());
        self.kernel.push(measure::kernel());
        self.client_cpu.push(workers.cpu_s());
    }

    fn idx(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    /// Summed over gateways: (Δ RSS KiB, Δ CPU s) between two marks; None without readings.
    fn delta(&self, a: &str, b: &str) -> Option<(f64, f64)> {
        let (ia, ib) = (self.idx(a)?, self.idx(b)?);
        let mut any = false;
        let (mut rss, mut cpu) = (0.0, 0.0);
        for (pa, pb) in self.procs[ia].iter().zip(&self.procs[ib]) {
            if let (Some(pa), Some(pb)) = (pa, pb) {
                any = true;
                rss += pb.rss_kib as f64 - pa.rss_kib as f64;
                cpu += pb.cpu_s - pa.cpu_s;
            }
        }
        any.then_some((rss, cpu))
    }

    fn rss_mib(&self, name: &str) -> Option<f64> {
        let v = &self.procs[self.idx(name)?];
        v.iter().any(Option::is_some).then(|| v.iter().flatten().map(|p| p.rss_kib as f64 / 1024.0).sum())
    }

    fn tcp_mem_delta_bytes(&self, a: &str, b: &str) -> Option<f64> {
        let (ka, kb) = (&self.kernel[self.idx(a)?], &self.kernel[self.idx(b)?]);
        Some((kb.tcp_mem_pages as f64 - ka.tcp_mem_pages as f64) * 4096.0)
    }

    fn slab_delta_bytes(&self, a: &str, b: &str) -> Option<f64> {
        let (ka, kb) = (&self.kernel[self.idx(a)?], &self.kernel[self.idx(b)?]);
        if ka.slab_bytes.is_empty() {
            return None;
        }
        let sum = |k: &measure::Kernel| k.slab_bytes.values().sum::<u64>() as f64;
        Some(sum(kb) - sum(ka))
    }

    /// Growth of the file/epoll slabs (`filp`, `dentry`, `eventpoll_epi`) between two marks.
    fn fd_slab_delta_bytes(&self, a: &str, b: &str) -> Option<f64> {
        let (ka, kb) = (&self.kernel[self.idx(a)?], &self.kernel[self.idx(b)?]);
        if ka.fd_slab_bytes.is_empty() {
            return None;
        }
        let sum = |k: &measure::Kernel| k.fd_slab_bytes.values().sum::<u64>() as f64;
        Some(sum(kb) - sum(ka))
    }

    /// Growth of a TcpExt counter between two marks.
    fn tcp_ext_delta(&self, a: &str, b: &str, key: &str) -> Option<f64> {
        let (ka, kb) = (&self.kernel[self.idx(a)?], &self.kernel[self.idx(b)?]);
        Some(*kb.tcp_ext.get(key)? as f64 - *ka.tcp_ext.get(key)? as f64)
    }

    /// Server CPU by kind of thread between two marks, summed over gateways, most first,
    /// with the seconds between the marks. A kind that only ran in between is missing.
    fn threads_delta(&self, a: &str, b: &str) -> Option<(Vec<(String, f64)>, f64)> {
        let (ia, ib) = (self.idx(a)?, self.idx(b)?);
        let mut sum: BTreeMap<String, f64> = BTreeMap::new();
        for (ta, tb) in self.threads[ia].iter().zip(&self.threads[ib]) {
            for (name, cpu) in tb {
                *sum.entry(name.clone()).or_default() += cpu - ta.get(name).copied().unwrap_or(0.0);
            }
        }
        let mut v: Vec<(String, f64)> = sum.into_iter().filter(|(_, cpu)| *cpu > 0.0).collect();
        v.sort_by(|x, y| y.1.total_cmp(&x.1));
        (!v.is_empty()).then(|| (v, (self.at[ib] - self.at[ia]).as_secs_f64()))
    }

    /// Whole-machine CPU ticks between two marks.
    fn machine_cpu(&self, a: &str, b: &str) -> Option<measure::CpuTicks> {
        self.kernel[self.idx(b)?].cpu.since(self.kernel[self.idx(a)?].cpu)
    }

    fn client_cpu(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.client_cpu[self.idx(b)?]? - self.client_cpu[self.idx(a)?]?)
    }
}

/// `chatbench run`.
pub async fn run(a: RunArgs) -> Result<()> {
    let mut results = Vec::with_capacity(a.repeat as usize);
    for i in 0..a.repeat {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!("run {} of {}", i + 1, a.repeat);
        }
        results.push(run_once(&a).await?);
    }
    if results.len() > 1 {
        let _ = std::io::stdout().lock().write_all(report::spread(&results).as_bytes());
    }
    Ok(())
}

/// One run of the scenario: start the gateways (with `--spawn`), drive the load, stop them,
/// write the JSON and plots and print the table.
async fn run_once(a: &RunArgs) -> Result<RunResult> {
    let sc = Scenario::load(&a.scenario, &a.set)?;
    if a.spawn.is_empty() == a.target.is_empty() {
        bail!("give either --spawn PATH (repeatable) or --target ADDR (repeatable)");
    }
    let secret = a.secret.clone().or_else(|| {
        (!a.spawn.is_empty()).then(|| (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect::<String>())
    });
    let started = unix_ns();
    let mut gws = Vec::new();
    for (i, bin) in a.spawn.iter().enumerate() {
        let secret = secret.as_deref().context("secret")?;
        gws.push(Gateway::spawn(bin, i, secret, &sc.gateway_set).await?);
        eprintln!("gatewayd {} started on {} (pid {})", i, gws[i].addr, gws[i].pid.unwrap_or(0));
    }
    for (i, t) in a.target.iter().enumerate() {
        gws.push(Gateway::external(*t, a.pid.get(i).copied(), a.metrics.get(i).copied()));
    }
    // Ctrl-C or SIGTERM drops the run (and with it the workers), then the gateways are stopped.
    let r = tokio::select! {
        r = drive(&sc, a, &mut gws, secret.as_deref(), started) => r,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    for g in &mut gws {
        g.stop();
    }
    let r = r?;
    std::fs::create_dir_all(&a.out)?;
    let (_, stamp) = report::utc(started / 1_000_000_000);
    let base = a.out.join(format!("{}-{stamp}", sc.name));
    let json = base.with_extension("json");
    std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
    let lat = base.with_file_name(format!("{}-{stamp}-latency.svg", sc.name));
    let rss = base.with_file_name(format!("{}-{stamp}-rss.svg", sc.name));
    let mut written = vec![json.display().to_string()];
    if crate::plot::latency(&r.timeline, &lat, &format!("{}: delivery latency per second", sc.name))? {
        written.push(lat.display().to_string());
    }
    if crate::plot::rss(&r.timeline, &rss, &format!("{}: server RSS vs connections", sc.name))? {
        written.push(rss.display().to_string());
    }
    {
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(report::markdown(&r).as_bytes());
    }
    eprintln!("wrote {}", written.join(", "));
    Ok(r)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn drive(sc: &Scenario, a: &RunArgs, gws: &mut [Gateway], secret: Option<&str>, started: u64) -> Result<RunResult> {
    let addrs: Vec<_> = gws.iter().map(|g| g.addr).collect();
    let mut res = RunResult {
        scenario: sc.name.clone(),
        kind: serde_json::to_value(sc.kind)?.as_str().unwrap_or("").to_owned(),
        started: report::utc(started / 1_000_000_000).0,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        settings: serde_json::to_value(sc)?,
        gateways: gws
            .iter()
            .map(|g| format!("{}{}", g.addr, g.pid.map_or(String::new(), |p| format!(" (pid {p})"))))
            .collect(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        machine: measure::machine(),
        loadavg_before: measure::loadavg(),
        ..RunResult::default()
    };
    if !a.spawn.is_empty() {
        res.gateway_flags = BENCH_SETTINGS.iter().map(|s| s.to_string()).chain(sc.gateway_set.iter().cloned()).collect();
    } else if !sc.gateway_set.is_empty() {
        res.notes.push(format!("gateway_set {:?} applies only to --spawn; the external gateways run with their own settings", sc.gateway_set));
    }
    if !gws.iter().any(Gateway::measured) {
        res.notes.push("no gateway PID or --metrics address: server RSS and CPU not measured".into());
    } else if gws.iter().any(|g| g.pid.is_none() && g.metrics.is_some()) {
        res.notes.push("server RSS and CPU of gateways without a PID read from their /metrics (process_resident_memory_bytes, process_cpu_seconds_total)".into());
    }

    // Users, groups, tokens.
    let t_setup = Instant::now();
    let plan = setup::plan(sc, &addrs, secret).await?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    let total = plan.sessions.len();
    if plan.registered > 0 {
        res.fig("setup_users", "users registered (REST)", plan.registered as f64, "");
        if plan.groups > 0 {
            res.fig("setup_groups", "groups created / members added", plan.groups as f64, "");
            res.fig("setup_members", "group members added (REST)", plan.members_added as f64, "");
        }
        res.fig("setup_s", "setup time (register, groups)", setup_s, "s");
    }
    let traffic = Traffic {
        window: sc.window,
        payload_bytes: sc.payload_bytes,
        mixed_rate: sc.sends_per_user_per_min / 60.0,
        group_share: sc.group_share,
        typing_lead_secs: sc.typing_lead_secs,
        read_receipt_prob: if sc.kind == Kind::Mixed { sc.read_receipt_prob } else { 0.0 },
    };
    let shares = setup::distribute(plan.sessions, sc.workers, sc.sources);

    let (tx, rx) = mpsc::channel(4096);
    let mut workers = Workers::spawn(sc.workers, tx)?;
    let t0_ns = unix_ns();
    let mut sampler = interval_at(instant_at(t0_ns + 1_000_000_000), Duration::from_secs(1));
    sampler.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut c = Collector {
        rx,
        t0_ns,
        rows: BTreeMap::new(),
        opened: BTreeMap::new(),
        sampler,
        last_cpu: None,
        bar: ProgressBar::hidden(),
        mode: Mode::Hold,
        workers: sc.workers,
        finished: Vec::new(),
    };
    for (w, sessions) in shares.into_iter().enumerate() {
        workers.send(w, &Cmd::Setup { worker: w as u32, t0_ns, traffic: traffic.clone(), sessions })?;
    }
    let mut m = Marks::default();
    m.take("start", gws, &workers).await;

    // Connect.
    c.set_bar(total as u64, "connect", Mode::Open);
    workers.send_all(&Cmd::Open { rate: sc.ramp_rate / sc.workers as f64, concurrency: sc.connect_concurrency })?;
    let opened = c.wait(gws, sc.workers, None, |ev| if let Ev::Opened(o) = ev { Some(o) } else { None }).await?;
    let o = merge_opened(&opened);
    c.bar.finish_and_clear();
    eprintln!("connect: {} established, {} failed", o.ok, o.failed);
    m.take("connected", gws, &workers).await;
    res.open_errors = o.errors.clone();
    let connect_s = o.last_ns.saturating_sub(o.first_ns) as f64 / 1e9;
    res.fig("sessions", "sessions established", o.ok as f64, "");
    res.fig("sessions_failed", "sessions failed", o.failed as f64, "");
    res.fig("connect_s", "first connect to last synced", connect_s, "s");
    res.fig("sessions_per_s", "new sessions/s (established / that time)", o.ok as f64 / connect_s.max(1e-9), "/s");
    // CPU time comes in clock ticks (10 ms): below half a second the ratio is mostly rounding.
    if let Some((_, cpu)) = m.delta("start", "connected").filter(|(_, cpu)| *cpu >= 0.5) {
        res.fig("server_cpu_us_per_session", "server CPU per new session", cpu * 1e6 / (o.ok.max(1)) as f64, "µs");
    }
    if let Some(v) = m.tcp_ext_delta("start", "connected", "ListenOverflows") {
        res.fig("listen_overflows", "kernel accept-queue overflows while connecting (SYN retried after 1 s)", v, "");
    }
    c.set_bar(0, "settle", Mode::Hold);
    c.pump(gws, sc.settle_secs).await?;
    m.take("settled", gws, &workers).await;
    if let Some((rss, _)) = m.delta("start", "settled") {
        res.fig("server_rss_before_mib", "server RSS before connecting", m.rss_mib("start").unwrap_or(0.0), "MiB");
        res.fig("server_rss_connected_mib", "server RSS with the sessions open", m.rss_mib("settled").unwrap_or(0.0), "MiB");
        if plan.registered == 0 {
            res.fig("server_rss_per_session_b", "server RSS growth per session", rss * 1024.0 / (o.ok.max(1)) as f64, "B");
        } else {
            res.notes.push(
                "No RSS-per-session figure: registration (argon2) grew and freed the server's heap before the sessions \
                 opened, and the sessions reuse that memory. The idle scenario measures it."
                    .into(),
            );
        }
    }
    if let Some(b) = m.tcp_mem_delta_bytes("start", "settled") {
        res.fig("kernel_tcp_mem_per_session_b", "kernel TCP buffer memory per session (both ends)", b / (o.ok.max(1)) as f64, "B");
    }
    if let Some(b) = m.slab_delta_bytes("start", "settled") {
        res.fig("kernel_slab_per_session_b", "kernel socket slabs per session (both ends)", b / (o.ok.max(1)) as f64, "B");
    }
    if let Some(b) = m.fd_slab_delta_bytes("start", "settled") {
        res.fig(
            "kernel_fd_slab_per_session_b",
            "kernel file + epoll slabs per session (both ends; filp, dentry, eventpoll_epi)",
            b / (o.ok.max(1)) as f64,
            "B",
        );
    }

    match sc.kind {
        Kind::Idle => {
            c.set_bar(0, "hold", Mode::Hold);
            c.pump(gws, sc.hold_secs).await?;
            m.take("held", gws, &workers).await;
            if let Some((rss, cpu)) = m.delta("settled", "held") {
                res.fig("server_rss_held_mib", "server RSS after the hold", m.rss_mib("held").unwrap_or(0.0), "MiB");
                res.fig("server_rss_hold_growth_kib", "server RSS change during the hold", rss, "KiB");
                res.fig("server_cpu_hold_pct", "server CPU while holding (of one core)", cpu / sc.hold_secs.max(1e-9) * 100.0, "%");
            }
        }
        Kind::ConnectStorm => {}
        Kind::Direct | Kind::Group | Kind::Mixed => {
            let start_ns = unix_ns() + 500_000_000;
            let duration_ms = (sc.duration_secs * 1000.0) as u64;
            let start_k = ((start_ns - t0_ns) / 1_000_000_000) as i64;
            c.set_bar(sc.duration_secs.ceil() as u64, "traffic", Mode::Run { start_k });
            m.take("run_start", gws, &workers).await;
            workers.send_all(&Cmd::Run { start_ns, duration_ms })?;
            c.wait(gws, sc.workers, None, |ev| matches!(ev, Ev::RunDone { .. }).then_some(())).await?;
            eprintln!("traffic: done, waiting {} s for late deliveries", sc.grace_secs);
            m.take("run_end", gws, &workers).await;
            c.set_bar(0, "grace", Mode::Hold);
            c.pump(gws, sc.grace_secs).await?;
            m.take("grace_end", gws, &workers).await;
        }
        Kind::ReconnectStorm => {
            c.set_bar(0, "hold", Mode::Hold);
            c.pump(gws, sc.hold_secs).await?;
            let at_ns = unix_ns() + 500_000_000;
            let window_ms = (sc.reconnect_window_secs * 1000.0) as u64;
            let deadline_ns = at_ns + window_ms * 1_000_000 + 60_000_000_000;
            m.take("storm_start", gws, &workers).await;
            c.set_bar(o.ok, "reconnect", Mode::Open);
            workers.send_all(&Cmd::Reconnect { at_ns, window_ms, close_frame: sc.close_frame, deadline_ns })?;
            let re = c.wait(gws, sc.workers, None, |ev| if let Ev::Opened(o) = ev { Some(o) } else { None }).await?;
            c.bar.finish_and_clear();
            m.take("reconnected", gws, &workers).await;
            let r = merge_opened(&re);
            eprintln!("reconnect: {} back, {} failed", r.ok, r.failed);
            let recovery = r.last_ns.saturating_sub(at_ns) as f64 / 1e9;
            res.fig("reconnected", "sessions back to synced", r.ok as f64, "");
            res.fig("reconnect_failed", "sessions that did not come back", r.failed as f64, "");
            res.fig("reconnect_attempts", "connect attempts (retries included)", r.attempts as f64, "");
            res.fig("reconnect_recovery_s", "all closed → last synced again", recovery, "s");
            res.fig("reconnect_sessions_per_s", "sessions/s during the storm (first attempt → last synced)", r.ok as f64 / (r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9).max(1e-9), "/s");
            if let Some((_, cpu)) = m.delta("storm_start", "reconnected").filter(|(_, cpu)| *cpu >= 0.5) {
                res.fig("server_cpu_us_per_reconnect", "server CPU per reconnect", cpu * 1e6 / r.ok.max(1) as f64, "µs");
            }
            if let Some(v) = m.tcp_ext_delta("storm_start", "reconnected", "ListenOverflows") {
                res.fig("reconnect_listen_overflows", "kernel accept-queue overflows during the storm", v, "");
            }
            for (k, v) in r.errors {
                *res.open_errors.entry(format!("reconnect: {k}")).or_default() += v;
            }
            c.pump(gws, 1.0).await?;
        }
    }

    // Collect.
    workers.send_all(&Cmd::Finish)?;
    let finals = c.wait(gws, sc.workers, Some(Instant::now() + Duration::from_secs(60)), |ev| match ev {
        Ev::Final(f) => Some(*f),
        _ => None,
    })
    .await?;
    c.bar.finish_and_clear();
    m.take("end", gws, &workers).await;
    res.loadavg_after = measure::loadavg();
    let last_k = c.rows.keys().next_back().copied().unwrap_or(0);
    for k in c.rows.keys().copied().collect::<Vec<_>>() {
        c.finish_row(k);
    }
    res.timeline = c.rows.values().map(|a| a.row.clone()).filter(|r| r.t <= last_k).collect();
    summarize(sc, &finals, &m, &mut res)?;
    server_threads(&m, &mut res);
    for (i, g) in gws.iter().enumerate() {
        if !g.measured() {
            continue;
        }
        let mut s = ServerReadings { addr: g.addr.to_string(), pid: g.pid.unwrap_or(0), ..ServerReadings::default() };
        for (j, name) in m.names.iter().enumerate() {
            if let Some(p) = m.procs[j][i] {
                s.at.insert((*name).to_owned(), p);
            }
        }
        res.servers.push(s);
    }
    for (j, name) in m.names.iter().enumerate() {
        res.kernel.insert((*name).to_owned(), m.kernel[j].clone());
        if let Some(cpu) = m.client_cpu[j] {
            res.client_cpu_s.insert((*name).to_owned(), cpu);
        }
    }
    Ok(res)
}

/// Server CPU by kind of thread over the scenario's main phase: traffic, the reconnect storm,
/// or opening the sessions.
fn server_threads(m: &Marks, res: &mut RunResult) {
    let phases = [("run_start", "run_end"), ("storm_start", "reconnected"), ("start", "connected")];
    let Some(((a, b), (threads, secs))) = phases.iter().find_map(|&(a, b)| Some(((a, b), m.threads_delta(a, b)?))) else { return };
    let delivered = res.figures.iter().find(|f| f.name == "delivered").map(|f| f.value).filter(|_| a == "run_start");
    res.server_threads_phase = format!("{a} → {b}");
    res.server_threads_secs = secs;
    res.server_threads = threads
        .into_iter()
        .map(|(name, cpu_s)| ThreadCpu { name, cpu_s, us_per_delivery: delivered.filter(|d| *d > 0.0).map(|d| cpu_s * 1e6 / d) })
        .collect();
}

fn merge_opened(v: &[Opened]) -> Opened {
    let mut o = Opened { first_ns: u64::MAX, ..Opened::default() };
    for x in v {
        o.ok += x.ok;
        o.failed += x.failed;
        o.attempts += x.attempts;
        if x.first_ns > 0 {
            o.first_ns = o.first_ns.min(x.first_ns);
        }
        o.last_ns = o.last_ns.max(x.last_ns);
        for (k, n) in &x.errors {
            *o.errors.entry(k.clone()).or_default() += n;
        }
    }
    if o.first_ns == u64::MAX {
        o.first_ns = 0;
    }
    o
}

/// Loss accounting over every stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Loss {
    /// Acked sends × recipients that stayed connected.
    expected: u64,
    /// Expected deliveries that never arrived.
    lost: u64,
    /// Deliveries beyond the acked sends (acks still missing at the end).
    beyond: u64,
    /// Recipient streams not counted (their session failed or dropped).
    excluded: u64,
}

fn loss(send: &HashMap<StreamKey, SendAgg>, recv: &HashMap<StreamKey, RecvAgg>) -> Loss {
    let mut l = Loss::default();
    for (k, r) in recv {
        let exp = send.get(k).map_or(0, |s| s.acked) * r.recipients_ok;
        l.expected += exp;
        l.lost += exp.saturating_sub(r.distinct_ok);
        l.beyond += r.distinct_ok.saturating_sub(exp);
        l.excluded += r.recipients_excluded;
    }
    l
}

/// Figures from the workers' final reports.
fn summarize(sc: &Scenario, finals: &[Final], m: &Marks, res: &mut RunResult) -> Result<()> {
    let mut hd = stats::hist();
    let mut ha = stats::hist();
    let mut hc = stats::hist();
    let mut hr = stats::hist();
    let mut send: HashMap<StreamKey, SendAgg> = HashMap::new();
    let mut recv: HashMap<StreamKey, RecvAgg> = HashMap::new();
    let (mut dup, mut ooo, mut unexpected, mut backlog, mut held_back) = (0, 0, 0, 0, 0);
    let (mut typing_sent, mut typing_rx, mut receipts_sent, mut receipts_rx) = (0, 0, 0, 0);
    for f in finals {
        stats::merge(&mut hd, &f.hist_delivery)?;
        stats::merge(&mut ha, &f.hist_ack)?;
        stats::merge(&mut hc, &f.hist_connect)?;
        stats::merge(&mut hr, &f.hist_reconnect)?;
        for (k, s) in &f.send {
            let e = send.entry(*k).or_default();
            e.sent += s.sent;
            e.acked += s.acked;
            e.errors += s.errors;
        }
        for (k, r) in &f.recv {
            let e = recv.entry(*k).or_default();
            e.recipients_ok += r.recipients_ok;
            e.distinct_ok += r.distinct_ok;
            e.recipients_excluded += r.recipients_excluded;
        }
        dup += f.duplicates;
        held_back += f.held_back;
        ooo += f.out_of_order;
        unexpected += f.unexpected;
        backlog += f.backlog;
        typing_sent += f.typing_sent;
        typing_rx += f.typing_rx;
        receipts_sent += f.receipts_sent;
        receipts_rx += f.receipts_rx;
        for (k, v) in &f.errors {
            *res.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &f.drops {
            *res.drops.entry(k.clone()).or_default() += v;
        }
    }
    for (name, h) in [("delivery", &hd), ("send→ack", &ha), ("connect→synced", &hc), ("reconnect→synced", &hr)] {
        if !h.is_empty() {
            res.latency.insert(name.into(), Percentiles::of(h));
        }
    }
    if !sc.messaging() {
        return Ok(());
    }
    let d = sc.duration_secs.max(1e-9);
    let sent: u64 = send.values().map(|s| s.sent).sum();
    let acked: u64 = send.values().map(|s| s.acked).sum();
    let errors: u64 = send.values().map(|s| s.errors).sum();
    let delivered = hd.len();
    let Loss { expected, lost, beyond, excluded } = loss(&send, &recv);
    if let Rate::PerSecond(r) = sc.rate {
        if sc.kind != Kind::Mixed {
            res.fig("sends_offered", "sends scheduled (rate × duration)", (r * sc.duration_secs).floor(), "");
        }
    }
    res.fig("sends", "sends written", sent as f64, "");
    res.fig("acked", "sends acked", acked as f64, "");
    res.fig("send_errors", "sends answered with an error", errors as f64, "");
    if sc.rate != Rate::Max || sc.kind == Kind::Mixed {
        res.fig("held_back", "sends held back by a full window (latency from their schedule)", held_back as f64, "");
    }
    res.fig("acked_per_s", "acked sends/s (over the traffic duration)", acked as f64 / d, "/s");
    res.fig("delivered", "messages delivered (first copies)", delivered as f64, "");
    res.fig("delivered_per_s", "delivered msgs/s (over the traffic duration)", delivered as f64 / d, "/s");
    res.fig("expected", "deliveries expected (acked × connected recipients)", expected as f64, "");
    res.fig("lost", "lost (acked, never delivered to a connected recipient)", lost as f64, "");
    res.fig("duplicates", "duplicates (same sequence number twice)", dup as f64, "");
    res.fig("out_of_order", "out of order (after a later sequence number)", ooo as f64, "");
    if beyond > 0 {
        res.fig("delivered_unacked", "delivered but not acked by the end", beyond as f64, "");
    }
    if unexpected > 0 {
        res.fig("unexpected", "messages from unexpected streams", unexpected as f64, "");
    }
    if excluded > 0 {
        res.fig("recipients_excluded", "recipient streams not counted (session failed or dropped)", excluded as f64, "");
    }
    if backlog > 0 {
        res.fig("backlog", "backlog messages at connect", backlog as f64, "");
    }
    if sc.kind == Kind::Mixed {
        res.fig("typing_sent_per_s", "typing frames sent/s", typing_sent as f64 / d, "/s");
        res.fig("typing_rx_per_s", "typing frames received/s", typing_rx as f64 / d, "/s");
        res.fig("receipts_sent_per_s", "read receipts sent/s", receipts_sent as f64 / d, "/s");
        res.fig("receipts_rx_per_s", "receipt frames received/s", receipts_rx as f64 / d, "/s");
    }
    let p = Percentiles::of(&hd);
    for (name, v) in [("p50", p.p50), ("p90", p.p90), ("p99", p.p99), ("p999", p.p999), ("max", p.max)] {
        res.fig(&format!("delivery_{name}_ms"), &format!("delivery latency {}", name.replace("p999", "p99.9")), v, "ms");
    }
    if let Some((_, cpu)) = m.delta("run_start", "run_end") {
        res.fig("server_cpu_pct", "server CPU during traffic (% of one core)", cpu / d * 100.0, "%");
    }
    if let Some((rss, cpu)) = m.delta("run_start", "grace_end") {
        res.fig("server_cpu_run_s", "server CPU, traffic + grace", cpu, "s");
        let label = if sc.kind == Kind::Mixed {
            "server CPU per delivered message (typing and receipts included)"
        } else {
            "server CPU per delivered message"
        };
        res.fig("server_cpu_us_per_delivery", label, cpu * 1e6 / delivered.max(1) as f64, "µs");
        res.fig("server_rss_run_growth_mib", "server RSS change during traffic + grace", rss / 1024.0, "MiB");
    }
    if let Some(cpu) = m.client_cpu("run_start", "run_end") {
        res.fig("client_cpu_pct", "load generator CPU during traffic (% of one core, all workers)", cpu / d * 100.0, "%");
    }
    if let Some(t) = m.machine_cpu("run_start", "run_end") {
        let pct = |x: u64| x as f64 / t.total as f64 * 100.0;
        res.fig("machine_idle_pct", "machine CPU idle during traffic (% of all CPUs, iowait included)", pct(t.idle + t.iowait), "%");
        res.fig("machine_steal_pct", "machine CPU stolen by the hypervisor during traffic (% of all CPUs)", pct(t.steal), "%");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_per_stream() {
        let k = |gw, from| StreamKey { gw, from, to: 9, group: true };
        let send = HashMap::from([
            (k(0, 1), SendAgg { sent: 10, acked: 10, errors: 0 }),
            (k(1, 1), SendAgg { sent: 5, acked: 4, errors: 1 }),
        ]);
        let recv = HashMap::from([
            // Two recipients on gateway 0: one got 10, the other 7.
            (k(0, 1), RecvAgg { recipients_ok: 2, distinct_ok: 17, recipients_excluded: 1 }),
            // Same ids on gateway 1 are another stream: 5 arrived for 4 acks.
            (k(1, 1), RecvAgg { recipients_ok: 1, distinct_ok: 5, recipients_excluded: 0 }),
        ]);
        assert_eq!(loss(&send, &recv), Loss { expected: 24, lost: 3, beyond: 1, excluded: 1 });
    }
}
