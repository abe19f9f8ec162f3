//! Command line: `run`, `compare`, `report`, and the hidden `worker` that `run` spawns.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Load harness for gatewayd: idle, connect storms, direct and group traffic, reconnect storms
/// and a day-shaped mix, with latency histograms, loss checks and server RSS/CPU.
#[derive(Parser, Debug)]
#[command(name = "chatbench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a scenario file and write `<out>/<scenario>-<timestamp>.json` plus SVG plots.
    Run(RunArgs),
    /// Compare two result files: the ratio b/a of every figure, as a Markdown table.
    Compare {
        /// Baseline result JSON.
        a: PathBuf,
        /// Candidate result JSON.
        b: PathBuf,
    },
    /// Write a capacity model (Markdown) computed from result files: idle, direct with
    /// rate = max, group, and optionally reconnect-storm and mixed (the first of each kind is used).
    Capacity(CapacityArgs),
    /// Print a result file as Markdown.
    Report {
        /// Result JSON.
        result: PathBuf,
    },
    /// Internal: one load-generating process, driven over stdin/stdout JSON lines.
    #[command(hide = true)]
    Worker,
}

/// `chatbench run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario file (benches/scenarios/*.toml).
    pub scenario: PathBuf,
    /// Address of a running gateway (repeatable; sessions are spread over them).
    #[arg(long)]
    pub target: Vec<SocketAddr>,
    /// Start this gatewayd binary with benchmark settings (repeatable: one process each).
    #[arg(long)]
    pub spawn: Vec<PathBuf>,
    /// PID of a running gateway to measure (repeatable, with --target).
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Admin address (`server.admin_listen`) of a --target gateway, for its RSS and CPU from
    /// /metrics when it runs on another machine (repeatable, in --target order; --pid wins).
    #[arg(long)]
    pub metrics: Vec<SocketAddr>,
    /// The gateways' HS256 secret (tokens are minted with it); random with --spawn.
    #[arg(long, env = "SWITCHBOARD_AUTH_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Where results and plots go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Override a scenario field: --set rate=max, --set 'gateway_set=["ws.rate_per_second=1000"]'.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run the scenario this many times, one after another (fresh gateways each time, 5 s
    /// apart), then print every figure's median, minimum and maximum: on a shared VM the same
    /// binary's figures move from run to run (the steal figure shows when).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
}

/// `chatbench capacity`.
#[derive(Args, Debug)]
pub struct CapacityArgs {
    /// Result JSON files (idle, direct with rate = max, group; reconnect-storm and mixed optional).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Write the Markdown here instead of stdout (e.g. benches/CAPACITY.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Change an assumption: --assume online_share=0.2 (the document lists every key).
    #[arg(long, value_name = "KEY=VALUE")]
    pub assume: Vec<String>,
    /// Sysctl file to compare the needed kernel settings with.
    #[arg(long, default_value = "systemd/99-switchboard-c10m.conf")]
    pub sysctl: PathBuf,
    /// The gateway's systemd unit (its LimitNOFILE).
    #[arg(long, default_value = "systemd/gatewayd@.service")]
    pub unit: PathBuf,
}
