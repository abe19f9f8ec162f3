//! Results: the JSON written per run, its Markdown form, and `compare`.

use crate::measure::{Kernel, Proc};
use crate::stats::Percentiles;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One headline number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key (`compare` matches on it).
    pub name: String,
    /// What it is, for people.
    pub label: String,
    /// Value.
    pub value: f64,
    /// Unit ("" for counts).
    pub unit: String,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// Seconds since the workers started.
    pub t: i64,
    /// Sessions open (sum over workers).
    pub conns: u64,
    /// Sends written in this second.
    pub sent: u64,
    /// Acks received.
    pub acked: u64,
    /// Messages delivered (first copies).
    pub delivered: u64,
    /// Error frames.
    pub errors: u64,
    /// Delivery latency percentiles of this second, ms.
    pub p50_ms: Option<f64>,
    /// 90th.
    pub p90_ms: Option<f64>,
    /// 99th.
    pub p99_ms: Option<f64>,
    /// Server RSS, MiB (sum over measured gateways).
    pub server_rss_mib: Option<f64>,
    /// Server CPU in this second, % of one core (sum).
    pub server_cpu_pct: Option<f64>,
}

/// A gateway's readings at the phase boundaries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReadings {
    /// Client address.
    pub addr: String,
    /// PID measured; 0 when read from its /metrics instead.
    pub pid: u32,
    /// Phase name → reading.
    pub at: BTreeMap<String, Proc>,
}

/// Server CPU of one kind of thread (summed over gateways) over the scenario's main phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadCpu {
    /// Thread name without its instance number (`sqlite-reader`, `tokio-rt-worker`).
    pub name: String,
    /// utime + stime over the phase, seconds.
    pub cpu_s: f64,
    /// Per delivered message, µs (traffic scenarios).
    pub us_per_delivery: Option<f64>,
}

/// Everything about one run. Missing fields read as empty (small hand-written fixtures).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Scenario kind.
    pub kind: String,
    /// Start, UTC.
    pub started: String,
    /// The command line.
    pub command: String,
    /// The effective scenario (file + --set).
    pub settings: serde_json::Value,
    /// Gateways: addresses, whether spawned, the flags they got.
    pub gateways: Vec<String>,
    /// Flags given to spawned gateways.
    pub gateway_flags: Vec<String>,
    /// CPUs of this machine.
    pub cpus: usize,
    /// CPU model, clock and kernel (`measure::machine`).
    pub machine: String,
    /// /proc/loadavg before and after.
    pub loadavg_before: String,
    /// After.
    pub loadavg_after: String,
    /// Headline figures.
    pub figures: Vec<Figure>,
    /// Latency distributions: delivery, ack, connect, reconnect.
    pub latency: BTreeMap<String, Percentiles>,
    /// Error frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Connect failures by reason.
    pub open_errors: BTreeMap<String, u64>,
    /// Connections lost mid-run by reason.
    pub drops: BTreeMap<String, u64>,
    /// Kernel readings at the phase boundaries.
    pub kernel: BTreeMap<String, Kernel>,
    /// Gateway readings at the phase boundaries.
    pub servers: Vec<ServerReadings>,
    /// Which phase [`Self::server_threads`] covers ("run_start → run_end").
    pub server_threads_phase: String,
    /// Length of that phase, seconds.
    pub server_threads_secs: f64,
    /// Server CPU by kind of thread over that phase, most first.
    pub server_threads: Vec<ThreadCpu>,
    /// Load-generator processes' CPU seconds (all workers) per phase.
    pub client_cpu_s: BTreeMap<String, f64>,
    /// Once a second.
    pub timeline: Vec<Row>,
    /// Caveats.
    pub notes: Vec<String>,
}

impl RunResult {
    /// Adds a figure.
    pub fn fig(&mut self, name: &str, label: &str, value: f64, unit: &str) {
        self.figures.push(Figure { name: name.into(), label: label.into(), value, unit: unit.into() });
    }

    /// Reads a result file.
    pub fn load(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display()))
    }
}

/// A number for a table: integers with thousands separators, others with 3 significant digits.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let s = format!("{}", v.abs() as u64);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    let a = v.abs();
    if a >= 1000.0 {
        num(v.round())
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// The Markdown form of a run.
pub fn markdown(r: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {} ({}), {}\n", r.scenario, r.kind, r.started);
    let _ = writeln!(s, "`{}`\n", r.command);
    let _ = writeln!(
        s,
        "{} gateway(s): {}; {} CPUs; load average before {}, after {}.\n",
        r.gateways.len(),
        r.gateways.join(", "),
        r.cpus,
        r.loadavg_before,
        r.loadavg_after
    );
    if !r.machine.is_empty() {
        let _ = writeln!(s, "Machine: {}.\n", r.machine);
    }
    let _ = writeln!(s, "| figure | value | unit |\n|---|---:|---|");
    for f in &r.figures {
        let _ = writeln!(s, "| {} | {} | {} |", f.label, num(f.value), f.unit);
    }
    let lat: Vec<_> = r.latency.iter().filter(|(_, p)| p.count > 0).collect();
    if !lat.is_empty() {
        let _ = writeln!(s, "\n| latency (ms) | count | mean | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|");
        for (k, p) in lat {
            let _ = writeln!(
                s,
                "| {k} | {} | {} | {} | {} | {} | {} | {} |",
                num(p.count as f64),
                num(p.mean),
                num(p.p50),
                num(p.p90),
                num(p.p99),
                num(p.p999),
                num(p.max)
            );
        }
    }
    if !r.server_threads.is_empty() {
        let d = r.server_threads_secs.max(1e-9);
        let _ = writeln!(
            s,
            "\n| server thread ({}, {} s) | CPU s | % of one core | µs per delivered message |\n|---|---:|---:|---:|",
            r.server_threads_phase,
            num(r.server_threads_secs)
        );
        for t in &r.server_threads {
            let per = t.us_per_delivery.map_or_else(|| "–".to_owned(), num);
            let _ = writeln!(s, "| {} | {} | {} | {per} |", t.name, num(t.cpu_s), num(t.cpu_s / d * 100.0));
        }
    }
    for (title, m) in [("error frames", &r.errors), ("connect failures", &r.open_errors), ("connections lost", &r.drops)] {
        if !m.is_empty() {
            let list: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "\n{title}: {}", list.join("; "));
        }
    }
    for n in &r.notes {
        let _ = writeln!(s, "\n_{n}_");
    }
    s
}

/// Writes to stdout, ignoring a closed pipe (`chatbench report x | head`).
fn out(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

/// `chatbench report`.
pub fn report(path: &Path) -> Result<()> {
    out(&markdown(&RunResult::load(path)?));
    Ok(())
}

/// The `compare` table: b/a per figure.
pub fn comparison(ra: &RunResult, rb: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| figure | a: {} {} | b: {} {} | b/a |", ra.scenario, ra.started, rb.scenario, rb.started);
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let label = |f: &Figure| if f.unit.is_empty() { f.label.clone() } else { format!("{} ({})", f.label, f.unit) };
    for fa in &ra.figures {
        let Some(fb) = rb.figures.iter().find(|f| f.name == fa.name) else {
            let _ = writeln!(s, "| {} (only in a) | {} | – | – |", label(fa), num(fa.value));
            continue;
        };
        let ratio = if fa.value != 0.0 { num(fb.value / fa.value) } else { "–".into() };
        let _ = writeln!(s, "| {} | {} | {} | {} |", label(fa), num(fa.value), num(fb.value), ratio);
    }
    for fb in rb.figures.iter().filter(|f| !ra.figures.iter().any(|a| a.name == f.name)) {
        let _ = writeln!(s, "| {} (only in b) | – | {} | – |", label(fb), num(fb.value));
    }
    s
}

/// `chatbench compare`.
pub fn compare(a: &Path, b: &Path) -> Result<()> {
    out(&comparison(&RunResult::load(a)?, &RunResult::load(b)?));
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` and `YYYYMMDD-HHMMSS` for Unix seconds.
pub fn utc(secs: u64) -> (String, String) {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let (y, mo, d, h, m, s) = switchboard_core::time::utc_civil(secs);
    (switchboard_core::time::iso_utc(secs), format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}"))
}

/// A Markdown table of every figure that all `runs` report: median, minimum and maximum, in
/// the first run's order (`chatbench run --repeat N`).
pub fn spread(runs: &[RunResult]) -> String {
    let mut out = format!(
        "\n### {} runs of {}: median (min-max)\n\n| figure | median | min | max | unit |\n|---|---:|---:|---:|---|\n",
        runs.len(),
        runs.first().map_or("", |r| r.scenario.as_str())
    );
    for f in runs.first().map_or(&[][..], |r| &r.figures[..]) {
        let mut values: Vec<f64> =
            runs.iter().filter_map(|r| r.figures.iter().find(|g| g.name == f.name)).map(|g| g.value).collect();
        if values.len() < runs.len() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        out += &format!("| {} | {} | {} | {} | {} |\n", f.label, num(median), num(values[0]), num(values[n - 1]), f.unit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_of_figures_every_run_has() {
        let run = |figs: &[(&str, f64)]| {
            let mut r = RunResult { scenario: "direct".into(), ..RunResult::default() };
            for (name, v) in figs {
                r.fig(name, name, *v, "x");
            }
            r
        };
        let runs = [run(&[("a", 3.0), ("b", 1.0)]), run(&[("a", 1.0)]), run(&[("a", 2.0), ("b", 5.0)]), run(&[("a", 10.0)])];
        let t = spread(&runs);
        assert!(t.contains("| a | 2.500 | 1 | 10 | x |"), "{t}");
        assert!(!t.contains("| b |"), "b is missing from two runs: {t}");
        let t = spread(&runs[..3]);
        assert!(t.contains("| a | 2 | 1 | 3 | x |"), "{t}");
    }

    #[test]
    fn formats() {
        assert_eq!(num(18000.0), "18,000");
        assert_eq!(num(1234.5), "1,235");
        assert_eq!(num(2.5), "2.500");
        assert_eq!(utc(0).0, "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_718_000_000).1, "20240610-061320");
    }
}
