//! Handles of the counters bumped for every frame, looked up once per process.
//!
//! `metrics::counter!` finds its counter in the recorder's registry on every call (hash the
//! name and labels, take a shard lock): per frame that was ~2 % of the server's CPU at 1:1
//! saturation. The handles are made after the Prometheus recorder is installed
//! ([`crate::admin::install_metrics`]), so they are never the no-op ones.

use metrics::Counter;
use std::sync::OnceLock;
use switchboard_core::frame::Opcode;
use switchboard_core::metrics::names;

/// The per-frame counters.
pub struct WsCounters {
    received: [Counter; 6],
    /// Frames written to clients.
    pub sent: Counter,
}

const OPCODES: [Opcode; 6] = [Opcode::Continuation, Opcode::Text, Opcode::Binary, Opcode::Close, Opcode::Ping, Opcode::Pong];

impl WsCounters {
    /// Frames read from clients with this opcode.
    pub fn received(&self, op: Opcode) -> &Counter {
        &self.received[OPCODES.iter().position(|o| *o == op).unwrap_or(0)]
    }
}

/// The process's counters.
pub fn counters() -> &'static WsCounters {
    static COUNTERS: OnceLock<WsCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        crate::admin::install_metrics();
        WsCounters {
            received: OPCODES.map(|op| metrics::counter!(names::GATEWAY_FRAMES_RECEIVED, "opcode" => op.as_str())),
            sent: metrics::counter!(names::GATEWAY_FRAMES_SENT),
        }
    })
}
