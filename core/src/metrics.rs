//! Metric names (`switchboard_<subsystem>_<name>_<unit>`), described once at startup.
//! Labels come from bounded sets only: opcode, code, reason, kind.

/// Metric name constants.
pub mod names {
    /// Gauge: open client WebSocket connections.
    pub const GATEWAY_CONNECTIONS_ACTIVE: &str = "switchboard_gateway_connections_active";
    /// Counter: accepted WebSocket upgrades.
    pub const GATEWAY_CONNECTIONS_TOTAL: &str = "switchboard_gateway_connections_total";
    /// Counter, label `path`: client connections by how their first request was served —
    /// `fast` (WebSocket upgraded on the bare socket) or `http` (hyper and axum).
    pub const GATEWAY_CONNECTIONS_PARKED: &str = "switchboard_gateway_connections_parked";
    /// Counter, label `path`: client connections by how their first request was served —
    /// see `GATEWAY_UPGRADES`.
    pub const GATEWAY_UPGRADES: &str = "switchboard_gateway_accepted_total";
    /// Counter{opcode}: frames read from clients.
    pub const GATEWAY_FRAMES_RECEIVED: &str = "switchboard_gateway_frames_received_total";
    /// Counter: frames written to clients.
    pub const GATEWAY_FRAMES_SENT: &str = "switchboard_gateway_frames_sent_total";
    /// Counter{reason}: connections closed by the server.
    pub const GATEWAY_CLOSED: &str = "switchboard_gateway_connections_closed_total";
    /// Counter{reason}: frames dropped from an outbound queue.
    pub const GATEWAY_SEND_QUEUE_DROPPED: &str = "switchboard_gateway_send_queue_dropped_total";
    /// Counter{code}: error frames and HTTP errors sent.
    pub const GATEWAY_ERRORS: &str = "switchboard_gateway_errors_total";
    /// Histogram: HTTP request duration.
    pub const HTTP_REQUEST_DURATION: &str = "switchboard_http_request_duration_seconds";
    /// Counter: messages committed by the router.
    pub const ROUTER_MESSAGES: &str = "switchboard_router_messages_total";
    /// Counter: resends answered from the dedupe index.
    pub const ROUTER_DUPLICATES: &str = "switchboard_router_duplicates_total";
    /// Histogram: messages per group-commit batch.
    pub const ROUTER_BATCH_SIZE: &str = "switchboard_router_batch_size";
    /// Histogram: time from batch start to commit + fan-out.
    pub const ROUTER_DELIVER_DURATION: &str = "switchboard_router_deliver_duration_seconds";
    /// Counter: recipients with no live connection when a message was routed.
    pub const ROUTER_OFFLINE_RECIPIENTS: &str = "switchboard_router_offline_recipients_total";
    /// Counter, label `outcome` (`published`/`failed`): push notices for offline recipients.
    pub const ROUTER_PUSH_NOTICES: &str = "switchboard_router_push_notices_total";
    /// Histogram: store transaction duration.
    pub const STORE_COMMIT_DURATION: &str = "switchboard_store_commit_duration_seconds";
    /// Histogram, seconds: one background WAL checkpoint (standalone store).
    pub const STORE_CHECKPOINT_DURATION: &str = "switchboard_store_checkpoint_duration_seconds";
    /// Histogram: write jobs per store transaction.
    pub const STORE_COMMIT_BATCH: &str = "switchboard_store_commit_batch_size";
    /// Histogram, seconds: one transaction of the standalone store's search indexer.
    pub const SEARCH_INDEX_DURATION: &str = "switchboard_search_index_duration_seconds";
    /// Counter: messages added to the standalone store's full-text index.
    pub const SEARCH_INDEXED: &str = "switchboard_search_indexed_total";
}

/// Registers descriptions for every metric (call once after installing a recorder).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_gauge!(GATEWAY_CONNECTIONS_ACTIVE, "Open client WebSocket connections");
    describe_counter!(GATEWAY_CONNECTIONS_TOTAL, "Accepted WebSocket upgrades");
    describe_gauge!(GATEWAY_CONNECTIONS_PARKED, "Idle WebSocket sessions parked (no task, watched by the parking thread)");
    describe_counter!(GATEWAY_UPGRADES, "Client connections by path: fast WebSocket upgrade or hyper");
    describe_counter!(GATEWAY_FRAMES_RECEIVED, "Frames read from clients, by opcode");
    describe_counter!(GATEWAY_FRAMES_SENT, "Frames written to clients");
    describe_counter!(GATEWAY_CLOSED, "Connections closed by the server, by reason");
    describe_counter!(GATEWAY_SEND_QUEUE_DROPPED, "Frames dropped from outbound queues, by reason");
    describe_counter!(GATEWAY_ERRORS, "Errors returned to clients, by code");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "HTTP request duration");
    describe_counter!(ROUTER_MESSAGES, "Messages committed");
    describe_counter!(ROUTER_DUPLICATES, "Resends answered from the dedupe index");
    describe_histogram!(ROUTER_BATCH_SIZE, "Messages per group-commit batch");
    describe_histogram!(ROUTER_DELIVER_DURATION, Unit::Seconds, "Commit plus fan-out time per batch");
    describe_counter!(ROUTER_OFFLINE_RECIPIENTS, "Recipients offline when a message was routed");
    describe_counter!(ROUTER_PUSH_NOTICES, "Push notices for offline recipients, by outcome");
    describe_histogram!(STORE_COMMIT_DURATION, Unit::Seconds, "Store transaction duration");
    describe_histogram!(STORE_CHECKPOINT_DURATION, Unit::Seconds, "One background WAL checkpoint");
    describe_histogram!(STORE_COMMIT_BATCH, "Write jobs per store transaction");
    describe_histogram!(SEARCH_INDEX_DURATION, Unit::Seconds, "One transaction of the search indexer");
    describe_counter!(SEARCH_INDEXED, "Messages added to the full-text index");
}

/// The process's own figures in the Prometheus client's standard names and types
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_threads`, `process_start_time_seconds`, ...), read from
/// `/proc/self` now, as exposition text to append to `/metrics`: dashboards and `chatbench`
/// (for a gateway on another machine) see memory and CPU without access to the host. Written
/// here rather than through the `metrics` crate, whose counters are whole numbers: CPU seconds
/// keep their fraction.
pub fn process_text() -> String {
    use std::fmt::Write as _;
    let m = metrics_process::collector::collect();
    let mut s = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    };
    let f = |v: Option<u64>| v.map(|v| v as f64);
    put("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", m.cpu_seconds_total);
    put("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", f(m.resident_memory_bytes));
    put("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", f(m.virtual_memory_bytes));
    put("process_open_fds", "gauge", "Number of open file descriptors.", f(m.open_fds));
    put("process_max_fds", "gauge", "Maximum number of open file descriptors (0: unlimited).", f(m.max_fds));
    put("process_threads", "gauge", "Number of OS threads in the process.", f(m.threads));
    put("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.", f(m.start_time_seconds));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_text_has_this_process_figures() {
        let text = super::process_text();
        let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
        assert!(value("process_resident_memory_bytes").is_some_and(|v| v > 0.0), "{text}");
        assert!(value("process_open_fds").is_some_and(|v| v >= 1.0), "{text}");
        assert!(value("process_cpu_seconds_total").is_some_and(|v| v >= 0.0), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
    }
}
