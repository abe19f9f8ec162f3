//! `chatbench`: the capacity planner's load harness for `gatewayd`.
//!
//! `chatbench run benches/scenarios/direct.toml --spawn target/release/gatewayd` starts a
//! gateway with benchmark settings, registers the users the scenario needs, spawns worker
//! processes of itself (each holding a share of the WebSocket sessions from its own source
//! addresses), runs the load, and writes `<out>/<scenario>-<timestamp>.json`, SVG plots and a
//! Markdown table. See benches/README.md.

mod capacity;
mod cli;
mod client;
mod gateway;
mod http;
mod measure;
mod plot;
mod proto;
mod report;
mod run;
mod scenario;
mod session;
mod setup;
mod stats;
mod worker;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Command::Run(a) => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run::run(a)),
        Command::Compare { a, b } => report::compare(&a, &b),
        Command::Capacity(c) => capacity::capacity(&c.results, c.out.as_deref(), &c.assume, &c.sysctl, &c.unit),
        Command::Report { result } => report::report(&result),
        Command::Worker => worker::main(),
    }
}
