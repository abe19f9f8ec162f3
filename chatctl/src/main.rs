//! `chatctl`: the SRE's command line for a live Switchboard, standalone or cluster.
//!
//! It talks to gatewayd's admin API (`/admin/v1/...` on the admin listener, bearer token
//! `server.admin_token`); `config check|defaults`, `version` and `completions` work offline.
//! Commands are noun then verb (`chatctl user show 42`). Stdout carries only the result: a
//! table that fits 100 columns, or with `--output json` exactly one JSON document (a stream,
//! `msg tail`: one JSON object per line, NDJSON); logs, warnings and errors go to stderr.
//! Exit codes: see [`exit::Exit`] and `chatctl --help`.

mod cli;
mod client;
mod commands;
mod exit;
mod table;
mod tail;

use clap::Parser;
use exit::{Exit, Failure};

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    let json = cli.global.output == cli::Output::Json;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return report(&Failure::new(Exit::Failed, "runtime", e.to_string()), json),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => report(&f, json),
    }
}

/// Writes the failure to stderr (as JSON with `--output json`) and returns its exit code.
fn report(f: &Failure, json: bool) -> std::process::ExitCode {
    if json {
        let doc = serde_json::json!({"error": {"code": f.code, "message": f.message, "exitCode": f.exit as u8}});
        eprintln!("{doc}");
    } else {
        eprintln!("chatctl: {} ({})", f.message, f.code);
    }
    std::process::ExitCode::from(f.exit as u8)
}
