//! `chatctl`: the SRE's command line for Switchboard. For now it only reports its version;
//! the admin commands arrive with their own issue.

use clap::Parser;

/// Switchboard admin CLI.
#[derive(Parser)]
#[command(name = "chatctl", version, about = "Switchboard admin CLI (only `--version` for now)")]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("chatctl {}: no commands yet; see `chatctl --help`", env!("CARGO_PKG_VERSION"));
}
