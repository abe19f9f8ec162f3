//! `storage-workers`: the cluster's storage-worker process, [`storage_workers::worker::run`]
//! inside the shared worker shell (`switchboard_core::service`: config, logging, admin
//! listener, signals, exit codes).

use clap::Parser;
use std::process::ExitCode;
use switchboard_core::service::{self, ServiceArgs};

/// Where the worker's /healthz, /readyz and /metrics listen unless `--admin-listen` says.
const DEFAULT_ADMIN: &str = "127.0.0.1:9110";

/// Switchboard storage workers: persist the side topic's writes (device cursors, last seen)
/// to PostgreSQL. Reads the same configuration as gatewayd (its `[cluster]` section).
///
/// Exit codes: 0 stopped, 1 admin listener unavailable, 69 unavailable or failed, 78 bad
/// configuration.
#[derive(Parser, Debug)]
#[command(name = "storage-workers", version)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    service::main("storage-workers", Cli::parse().service, DEFAULT_ADMIN, storage_workers::worker::run)
}
