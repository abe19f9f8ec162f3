//! `router`: the cluster's routing process, [`router::cluster::run`] inside the shared worker
//! shell (`switchboard_core::service`: config, logging, admin listener, signals, exit codes).

use clap::Parser;
use std::process::ExitCode;
use switchboard_core::service::{self, ServiceArgs};

/// Where the router's /healthz, /readyz and /metrics listen unless `--admin-listen` says.
const DEFAULT_ADMIN: &str = "127.0.0.1:9100";

/// Switchboard router: consumes the inbound topic, stores, sequences and fans out messages.
/// Reads the same configuration as gatewayd (its `[cluster]` section).
///
/// Exit codes: 0 stopped, 1 admin listener unavailable, 69 a service unavailable or the
/// router failed, 78 bad configuration.
#[derive(Parser, Debug)]
#[command(name = "router", version)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    service::main("router", Cli::parse().service, DEFAULT_ADMIN, router::cluster::run)
}
