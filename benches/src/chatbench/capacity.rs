//! `chatbench capacity`: a capacity model whose every number is computed from measured result
//! files plus a list of typed, labelled assumptions (each can be changed with `--assume`).
//!
//! The inputs come from the runs by role: the first `idle` result (memory per idle session,
//! kernel socket memory, CPU per new session), the first `direct` result with `rate = "max"`
//! (CPU per message at saturation), the first `group` result (CPU per fan-out delivery), the
//! first `reconnect-storm` result (CPU per reconnect) and the first `mixed` result (a
//! cross-check). [`Inputs`] holds them, [`Model::compute`] does the arithmetic, and
//! [`markdown`] prints both with the formulas.

use crate::report::{num, RunResult};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One measured figure and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The value.
    pub value: f64,
    /// Unit as the result file has it.
    pub unit: String,
    /// The result file.
    pub file: String,
    /// The figure's key in that file.
    pub figure: String,
    /// The figure's label.
    pub label: String,
}

/// The measured inputs of the model.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Server RSS growth per idle session, B (idle).
    pub rss_per_session: Measured,
    /// Kernel socket slabs per session, both ends of the loopback connection, B (idle).
    pub slab_both: Measured,
    /// Kernel file + epoll slabs per session, both ends, B (idle; newer result files only).
    pub fd_slab_both: Option<Measured>,
    /// Kernel TCP buffer memory per session, both ends, B (idle).
    pub tcp_mem_both: Measured,
    /// Server CPU per new session, µs (idle: a paced ramp).
    pub cpu_session: Measured,
    /// Server CPU per reconnect, µs (reconnect-storm).
    pub cpu_reconnect: Option<Measured>,
    /// Server CPU per delivered message at saturation, µs (direct, rate = max).
    pub cpu_direct: Measured,
    /// Delivered msgs/s at saturation (direct, rate = max).
    pub direct_rate: Measured,
    /// Server CPU during that traffic, % of one core (direct, rate = max).
    pub direct_cpu_pct: Measured,
    /// Server CPU per delivery of a group message, µs (group).
    pub cpu_group: Measured,
    /// Deliveries/s (group).
    pub group_rate: Measured,
    /// Server CPU during that traffic, % of one core (group).
    pub group_cpu_pct: Measured,
    /// Sessions held in the idle run.
    pub idle_sessions: Measured,
    /// CPUs of the machine the idle run ran on.
    pub cpus: usize,
    /// Server CPU per delivered message with typing and receipts (mixed), µs; with that run's
    /// delivered msgs/s and server CPU %.
    pub cpu_mixed: Option<(Measured, Measured, Measured)>,
    /// RSS per idle session of the other idle results given (a sensitivity line each).
    pub other_idle: Vec<Measured>,
    /// Result files given but not used (another file of the same role came first).
    pub unused: Vec<String>,
}

fn is_max(r: &RunResult) -> bool {
    r.settings.get("rate").and_then(|v| v.as_str()) == Some("max")
}

fn figure(r: &RunResult, file: &str, name: &str) -> Option<Measured> {
    r.figures.iter().find(|f| f.name == name).map(|f| Measured {
        value: f.value,
        unit: f.unit.clone(),
        file: file.to_owned(),
        figure: name.to_owned(),
        label: f.label.clone(),
    })
}

impl Inputs {
    /// Picks the inputs from loaded results (`(file name, result)`), by role, first one wins.
    pub fn pick(results: &[(String, RunResult)]) -> Result<Self> {
        let mut used: Vec<&str> = Vec::new();
        let mut role = |pred: &dyn Fn(&RunResult) -> bool| -> Option<(&str, &RunResult)> {
            let (f, r) = results.iter().find(|(_, r)| pred(r))?;
            used.push(f);
            Some((f.as_str(), r))
        };
        let idle = role(&|r| r.kind == "idle").context("no idle result among the files (chatbench run benches/scenarios/idle.toml)")?;
        let sat = role(&|r| r.kind == "direct" && is_max(r))
            .context("no direct result with rate = \"max\" among the files (chatbench run benches/scenarios/direct.toml --set rate=max)")?;
        let group = role(&|r| r.kind == "group").context("no group result among the files (benches/scenarios/group.toml)")?;
        let reconnect = role(&|r| r.kind == "reconnect-storm");
        let mixed = role(&|r| r.kind == "mixed");
        let need = |(file, r): (&str, &RunResult), name: &str| {
            figure(r, file, name).with_context(|| format!("{file} has no figure `{name}`"))
        };
        let other_idle: Vec<Measured> = results
            .iter()
            .filter(|(f, r)| r.kind == "idle" && f.as_str() != idle.0)
            .filter_map(|(f, r)| figure(r, f, "server_rss_per_session_b"))
            .collect();
        let unused = results
            .iter()
            .map(|(f, _)| f.clone())
            .filter(|f| !used.contains(&f.as_str()) && !other_idle.iter().any(|o| &o.file == f))
            .collect();
        Ok(Self {
            rss_per_session: need(idle, "server_rss_per_session_b")?,
            slab_both: need(idle, "kernel_slab_per_session_b")?,
            fd_slab_both: figure(idle.1, idle.0, "kernel_fd_slab_per_session_b"),
            tcp_mem_both: need(idle, "kernel_tcp_mem_per_session_b")?,
            cpu_session: need(idle, "server_cpu_us_per_session")?,
            cpu_reconnect: reconnect.and_then(|(f, r)| figure(r, f, "server_cpu_us_per_reconnect")),
            cpu_direct: need(sat, "server_cpu_us_per_delivery")?,
            direct_rate: need(sat, "delivered_per_s")?,
            direct_cpu_pct: need(sat, "server_cpu_pct")?,
            cpu_group: need(group, "server_cpu_us_per_delivery")?,
            group_rate: need(group, "delivered_per_s")?,
            group_cpu_pct: need(group, "server_cpu_pct")?,
            idle_sessions: need(idle, "sessions")?,
            cpus: idle.1.cpus,
            other_idle,
            cpu_mixed: mixed.and_then(|(f, r)| {
                Some((
                    figure(r, f, "server_cpu_us_per_delivery")?,
                    figure(r, f, "delivered_per_s")?,
                    figure(r, f, "server_cpu_pct")?,
                ))
            }),
            unused,
        })
    }
}

/// Where a typed value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A planning assumption: not measured, change it with `--assume`.
    Assumption,
    /// A default or format in the code (file named in the note).
    Code,
}

/// One typed value.
#[derive(Debug, Clone)]
pub struct Assumed {
    /// Key for `--assume key=value`.
    pub key: &'static str,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
    /// What it is.
    pub note: &'static str,
    /// Assumption or code default.
    pub source: Source,
}

/// The typed values, in the order printed.
#[derive(Debug, Clone)]
pub struct Assumptions(pub Vec<Assumed>);

impl Default for Assumptions {
    fn default() -> Self {
        use Source::{Assumption as A, Code as C};
        let v = |key, value, unit, note, source| Assumed { key, value, unit, note, source };
        Self(vec![
            v("users", 1e9, "users", "registered users (the seed's target)", A),
            v("msgs_per_user_day", 100.0, "sends", "sends per user per day (the seed's target)", A),
            v("peak_factor", 3.0, "×", "peak send rate ÷ daily average (the seed's target)", A),
            v("online_share", 0.3, "", "share of users connected at the peak", A),
            v("devices_per_user", 1.0, "", "open connections per connected user", A),
            v("group_share", 0.3, "", "share of sends that go to a group", A),
            v("group_recipients", 19.0, "", "other members a group message reaches (a group of 20)", A),
            v("typing_per_send", 1.0, "", "typing frames per send, each relayed to the recipients online", A),
            v("receipts_per_delivery", 0.5, "", "read receipts per delivered message (a notice back to the author)", A),
            v("cursor_per_delivery", 0.1, "", "`cursor` frames per delivered message (to sb.side)", A),
            v("session_mean_s", 1800.0, "s", "mean lifetime of a connection (steady-state new sessions and last-seen writes)", A),
            v("conns_per_box", 1e7, "", "target connections per gateway box (case a)", A),
            v("box_ram_gib", 64.0, "GiB", "RAM per gateway box (the sysctl file is written for a 64 GB box)", A),
            v("ram_usable_share", 0.75, "", "share of a box's RAM given to connections (the rest: OS, page cache, bursts)", A),
            v("box_cores", 32.0, "cores", "cores per gateway box", A),
            v("cpu_target", 0.5, "", "target CPU utilisation of the gateways at the peak (headroom for storms)", A),
            v("storm_share", 0.1, "", "share of connected users that reconnect in a storm (X)", A),
            v("storm_secs", 60.0, "s", "time over which they reconnect (Y)", A),
            v("kernel_server_share", 0.5, "", "share of the loopback (both-ends) kernel figures that is the server's end (the two ends hold the same objects)", A),
            v("fdtable_b", 8.0, "B", "fd table slot per open file (a pointer; not in the slab figures)", A),
            v("fd_headroom", 0.1, "", "fds beyond one per connection (listeners, outbound, spare), as a share", A),
            v("busy_share", 0.02, "", "share of connections with data in their TCP buffers at any moment", A),
            v("kafka_partition_rps", 10_000.0, "records/s", "planning throughput of one partition (not measured here: measure it on the target brokers)", A),
            v("redis_user_id_digits", 10.0, "chars", "user ids below 10^10", A),
            v("redis_node_id_len", 6.0, "chars", "node id length, e.g. `gw-123` (config allows 1-64)", A),
            v("redis_conn_id_digits", 8.0, "chars", "connection id digits (counts up per node incarnation)", A),
            v("redis_device_len", 32.0, "chars", "device id length (a login's device is a simple UUID, 32 hex; clients may choose others)", A),
            v("redis_key_overhead_b", 100.0, "B", "Redis memory per user hash beyond its key bytes: keyspace entry, object header, key sds, expiry entry, listpack header, allocator rounding", A),
            v("redis_field_overhead_b", 4.0, "B", "Redis memory per hash field+value pair beyond their bytes (listpack entry headers)", A),
            v("redis_replicas", 1.0, "", "replicas per Redis shard (memory × (1 + replicas))", A),
            v("redis_shard_ops", 100_000.0, "ops/s", "commands/s one Redis shard primary serves (EVALSHA/HGETALL mix)", A),
            v("redis_shard_gib", 25.0, "GiB", "data per Redis shard primary", A),
            v("pg_primary_rows", 50_000.0, "rows/s", "row writes/s one PostgreSQL primary sustains (indexes, WAL, fsync)", A),
            v("pg_msg_row_b", 400.0, "B", "disk per message row with its indexes (dedupe, conversation/seq, full-text)", A),
            v("pg_inbox_row_b", 60.0, "B", "disk per inbox row with its primary key", A),
            v("presence_ttl_s", 30.0, "s", "`cluster.presence_ttl` default (core/src/config.rs); entries are refreshed every ttl/3", C),
            v("presence_batch", 256.0, "", "keys in flight per multi-user Redis operation (DEFAULT_BATCH, core/src/presence/redis/config.rs)", C),
            v("redis_prefix_len", 3.0, "chars", "`cluster.redis_prefix` default `sb:` (core/src/config.rs)", C),
            v("epoch_digits", 13.0, "chars", "node epoch = start time in Unix ms (gatewayd/src/cluster.rs)", C),
            v("expires_digits", 13.0, "chars", "entry expiry in Unix ms (core/src/presence/redis/record.rs)", C),
            v("listen_backlog", 65_535.0, "", "gatewayd's listen backlog (capped by net.core.somaxconn)", C),
            v("inbound_partitions", 12.0, "", "`cluster.inbound_partitions` default (core/src/config.rs)", C),
            v("pg_rows_fixed_per_send", 4.0, "rows", "rows written per send besides inbox rows: the message, conversations.last_seq, conversations.last_message_id, the sender's members marks (storage-workers/src/postgres/messages.rs append)", C),
            v("pg_rows_per_receipt", 2.0, "rows", "rows a receipt writes: the reader's members marks and device cursor (one transaction, ARCHITECTURE.md)", C),
        ])
    }
}

impl Assumptions {
    /// The value of `key`.
    ///
    /// # Panics
    /// On a key not in the list (a bug in this module; the tests cover every key used).
    pub fn get(&self, key: &str) -> f64 {
        self.0.iter().find(|a| a.key == key).map(|a| a.value).unwrap_or_else(|| panic!("no assumption `{key}`"))
    }

    /// Applies `key=value` overrides.
    pub fn set(&mut self, overrides: &[String]) -> Result<()> {
        for o in overrides {
            let (k, v) = o.split_once('=').with_context(|| format!("--assume {o}: expected key=value"))?;
            let v: f64 = v.trim().replace('_', "").parse().with_context(|| format!("--assume {o}: not a number"))?;
            let Some(a) = self.0.iter_mut().find(|a| a.key == k.trim()) else {
                bail!("--assume {o}: unknown key (known: {})", self.0.iter().map(|a| a.key).collect::<Vec<_>>().join(", "));
            };
            a.value = v;
        }
        Ok(())
    }
}

/// Expected number of distinct nodes among `k` recipients placed uniformly over `g` nodes.
pub fn distinct_nodes(g: f64, k: f64) -> f64 {
    if g <= 1.0 {
        return k.min(1.0);
    }
    g * (1.0 - (1.0 - 1.0 / g).powf(k))
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Everything the model computes (units in the names; per second at the peak unless noted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    // Per connection.
    /// User-space bytes per idle connection.
    pub user_b: f64,
    /// Kernel socket slab bytes, server end.
    pub kernel_sock_b: f64,
    /// Kernel file/epoll slab bytes, server end.
    pub kernel_fd_b: f64,
    /// Kernel TCP buffer bytes of an idle connection, server end (negative readings count as 0).
    pub kernel_buf_b: f64,
    /// fd table bytes.
    pub fdtable_b: f64,
    /// Sum.
    pub conn_b: f64,
    // CPU per unit.
    /// µs per send excluding deliveries: direct − group.
    pub cpu_send_us: f64,
    /// µs per delivery (group fan-out).
    pub cpu_deliv_us: f64,
    /// µs per new session.
    pub cpu_session_us: f64,
    /// µs per reconnect in a storm.
    pub cpu_reconnect_us: f64,
    /// Direct messages/s per gateway core at saturation.
    pub direct_per_core: f64,
    /// Group deliveries/s per gateway core.
    pub group_per_core: f64,
    // (a) one box.
    /// RAM for `conns_per_box` connections, GiB.
    pub box_conn_gib: f64,
    /// Connections that fit in the usable RAM of one box.
    pub box_fit_conns: f64,
    /// Cores to reconnect one box's connections in `storm_secs`.
    pub box_storm_cores: f64,
    /// fds one gateway process needs.
    pub box_fds: f64,
    // (b) traffic.
    /// Average sends/s.
    pub sends_avg: f64,
    /// Peak sends/s.
    pub sends: f64,
    /// Recipients per send.
    pub recipients: f64,
    /// Deliveries/s (every recipient, online now or by sync later).
    pub deliveries: f64,
    /// Deliveries/s to recipients online now.
    pub deliveries_online: f64,
    /// Typing relays/s (to online recipients).
    pub typing_relays: f64,
    /// Receipts/s (each a notice to the author).
    pub receipts: f64,
    /// Connections at the peak.
    pub connections: f64,
    /// Connected users at the peak.
    pub online_users: f64,
    /// New sessions/s at steady state.
    pub new_sessions: f64,
    // (b) gateways.
    /// Gateway cores at the peak (100 % busy).
    pub gw_cores: f64,
    /// Boxes by memory.
    pub boxes_mem: f64,
    /// Boxes by CPU at `cpu_target`.
    pub boxes_cpu: f64,
    /// Gateway boxes: the larger.
    pub gateways: f64,
    /// Connections per gateway box.
    pub conns_per_gateway: f64,
    /// Peak CPU per gateway box, cores.
    pub cores_per_gateway: f64,
    /// Reconnect-storm sessions/s.
    pub storm_rate: f64,
    /// Cores for the storm.
    pub storm_cores: f64,
    /// The storm's share of the fleet's cores.
    pub storm_fleet_share: f64,
    /// Cores a 10M box needs for its share of the peak traffic.
    pub box_traffic_cores: f64,
    // Kafka.
    /// sb.inbound records/s.
    pub k_inbound: f64,
    /// Distinct recipient nodes per direct send.
    pub nodes_direct: f64,
    /// Distinct recipient nodes per group send.
    pub nodes_group: f64,
    /// sb.deliver.* records/s, all nodes.
    pub k_deliver: f64,
    /// Per node.
    pub k_deliver_node: f64,
    /// sb.push records/s.
    pub k_push: f64,
    /// sb.side records/s.
    pub k_side: f64,
    /// Partitions: inbound, deliver per node, push, side.
    pub p_inbound: f64,
    /// Per delivery topic.
    pub p_deliver_node: f64,
    /// Push.
    pub p_push: f64,
    /// Side.
    pub p_side: f64,
    // Redis.
    /// Key bytes.
    pub r_key_len: f64,
    /// Field bytes.
    pub r_field_len: f64,
    /// Value bytes.
    pub r_value_len: f64,
    /// Bytes per connected user.
    pub r_user_b: f64,
    /// Data, GiB (primaries).
    pub r_data_gib: f64,
    /// With replicas, GiB.
    pub r_total_gib: f64,
    /// Refresh EVALSHAs/s.
    pub r_refresh: f64,
    /// connected/disconnected/revocation-check ops/s.
    pub r_session_ops: f64,
    /// Router lookups (HGETALL)/s, upper bound.
    pub r_locate: f64,
    /// Total ops/s.
    pub r_ops: f64,
    /// Round trips per refresh per gateway.
    pub r_refresh_rtts: f64,
    /// Shards by ops and by memory.
    pub r_shards_ops: f64,
    /// By memory.
    pub r_shards_mem: f64,
    // PostgreSQL.
    /// Message rows/s (= sends).
    pub pg_messages: f64,
    /// Inbox rows/s.
    pub pg_inbox: f64,
    /// Other rows of the send transaction/s.
    pub pg_send_other: f64,
    /// Receipt rows/s.
    pub pg_receipts: f64,
    /// Side rows/s (cursors + last-seen), upper bound before coalescing.
    pub pg_side: f64,
    /// Total rows/s.
    pub pg_rows: f64,
    /// Conversation-sharded rows/s (messages, conversations, members, receipts).
    pub pg_conv_rows: f64,
    /// User-sharded rows/s (inbox, cursors, last-seen).
    pub pg_user_rows: f64,
    /// Primaries for each, and total.
    pub pg_conv_primaries: f64,
    /// User side.
    pub pg_user_primaries: f64,
    /// Disk per day, TiB (average day).
    pub pg_tib_day: f64,
}

impl Model {
    /// The arithmetic.
    pub fn compute(i: &Inputs, a: &Assumptions) -> Self {
        let g = |k| a.get(k);
        let mut m = Model::default();
        let ks = g("kernel_server_share");
        m.user_b = i.rss_per_session.value;
        m.kernel_sock_b = i.slab_both.value * ks;
        m.kernel_fd_b = i.fd_slab_both.as_ref().map_or(0.0, |x| x.value) * ks;
        m.kernel_buf_b = i.tcp_mem_both.value.max(0.0) * ks;
        m.fdtable_b = g("fdtable_b");
        m.conn_b = m.user_b + m.kernel_sock_b + m.kernel_fd_b + m.kernel_buf_b + m.fdtable_b;

        m.cpu_deliv_us = i.cpu_group.value;
        m.cpu_send_us = (i.cpu_direct.value - i.cpu_group.value).max(0.0);
        m.cpu_session_us = i.cpu_session.value;
        m.cpu_reconnect_us = i.cpu_reconnect.as_ref().map_or(i.cpu_session.value, |x| x.value);
        m.direct_per_core = i.direct_rate.value / (i.direct_cpu_pct.value / 100.0);
        m.group_per_core = i.group_rate.value / (i.group_cpu_pct.value / 100.0);

        let per_box = g("conns_per_box");
        m.box_conn_gib = per_box * m.conn_b / GIB;
        m.box_fit_conns = g("box_ram_gib") * g("ram_usable_share") * GIB / m.conn_b;
        m.box_storm_cores = per_box / g("storm_secs") * m.cpu_reconnect_us / 1e6;
        m.box_fds = per_box * (1.0 + g("fd_headroom"));

        let online = g("online_share");
        m.sends_avg = g("users") * g("msgs_per_user_day") / 86_400.0;
        m.sends = m.sends_avg * g("peak_factor");
        m.recipients = (1.0 - g("group_share")) + g("group_share") * g("group_recipients");
        m.deliveries = m.sends * m.recipients;
        m.deliveries_online = m.deliveries * online;
        m.typing_relays = m.sends * g("typing_per_send") * m.recipients * online;
        m.receipts = m.deliveries_online * g("receipts_per_delivery");
        m.online_users = g("users") * online;
        m.connections = m.online_users * g("devices_per_user");
        m.new_sessions = m.connections / g("session_mean_s");

        // Relayed typing frames and receipt notices are costed as deliveries.
        let us = m.sends * m.cpu_send_us
            + (m.deliveries + m.typing_relays + m.receipts) * m.cpu_deliv_us
            + m.new_sessions * m.cpu_session_us;
        m.gw_cores = us / 1e6;
        m.boxes_mem = (m.connections / per_box.min(m.box_fit_conns)).ceil();
        m.boxes_cpu = (m.gw_cores / (g("box_cores") * g("cpu_target"))).ceil();
        m.gateways = m.boxes_mem.max(m.boxes_cpu).max(1.0);
        m.conns_per_gateway = m.connections / m.gateways;
        m.cores_per_gateway = m.gw_cores / m.gateways;
        m.storm_rate = g("storm_share") * m.connections / g("storm_secs");
        m.storm_cores = m.storm_rate * m.cpu_reconnect_us / 1e6;
        m.storm_fleet_share = m.storm_cores / (m.gateways * g("box_cores"));
        m.box_traffic_cores = m.gw_cores * per_box / m.connections;

        let part = g("kafka_partition_rps");
        m.k_inbound = m.sends;
        m.nodes_direct = distinct_nodes(m.gateways, online);
        m.nodes_group = distinct_nodes(m.gateways, g("group_recipients") * online);
        let nodes_per_send = (1.0 - g("group_share")) * m.nodes_direct + g("group_share") * m.nodes_group;
        // Per send: the ack to the origin node and one record per node holding recipients;
        // typing the same per typing frame; a receipt one record to the author's node.
        m.k_deliver = m.sends * (1.0 + nodes_per_send) + m.sends * g("typing_per_send") * nodes_per_send + m.receipts;
        m.k_deliver_node = m.k_deliver / m.gateways;
        m.k_push = m.deliveries * (1.0 - online);
        m.k_side = m.deliveries_online * g("cursor_per_delivery") + m.new_sessions;
        m.p_inbound = (m.k_inbound / part).ceil();
        m.p_deliver_node = (m.k_deliver_node / part).ceil();
        m.p_push = (m.k_push / part).ceil();
        m.p_side = (m.k_side / part).ceil();

        m.r_key_len = g("redis_prefix_len") + 3.0 + g("redis_user_id_digits") + 1.0;
        m.r_field_len = g("redis_node_id_len") + 1.0 + g("redis_conn_id_digits");
        m.r_value_len = g("epoch_digits") + 1.0 + g("expires_digits") + 1.0 + g("redis_device_len");
        m.r_user_b = g("redis_key_overhead_b")
            + m.r_key_len
            + g("devices_per_user") * (m.r_field_len + m.r_value_len + g("redis_field_overhead_b"));
        m.r_data_gib = m.online_users * m.r_user_b / GIB;
        m.r_total_gib = m.r_data_gib * (1.0 + g("redis_replicas"));
        let refresh_every = g("presence_ttl_s") / 3.0;
        m.r_refresh = m.online_users / refresh_every;
        m.r_session_ops = m.new_sessions * 3.0;
        m.r_locate = m.deliveries + m.typing_relays / online.max(1e-9) + m.receipts;
        m.r_ops = m.r_refresh + m.r_session_ops + m.r_locate;
        m.r_refresh_rtts = (m.online_users / m.gateways / g("presence_batch")).ceil();
        m.r_shards_ops = (m.r_ops / g("redis_shard_ops")).ceil();
        m.r_shards_mem = (m.r_data_gib / g("redis_shard_gib")).ceil();

        m.pg_messages = m.sends;
        m.pg_inbox = m.sends * (m.recipients + 1.0);
        m.pg_send_other = m.sends * (g("pg_rows_fixed_per_send") - 1.0);
        m.pg_receipts = m.receipts * g("pg_rows_per_receipt");
        m.pg_side = m.deliveries_online * g("cursor_per_delivery") + m.new_sessions;
        m.pg_rows = m.pg_messages + m.pg_inbox + m.pg_send_other + m.pg_receipts + m.pg_side;
        m.pg_conv_rows = m.pg_messages + m.pg_send_other + m.pg_receipts;
        m.pg_user_rows = m.pg_inbox + m.pg_side;
        m.pg_conv_primaries = (m.pg_conv_rows / g("pg_primary_rows")).ceil();
        m.pg_user_primaries = (m.pg_user_rows / g("pg_primary_rows")).ceil();
        m.pg_tib_day = m.sends_avg * 86_400.0 * (g("pg_msg_row_b") + (m.recipients + 1.0) * g("pg_inbox_row_b")) / (GIB * 1024.0);
        m
    }
}

/// Kernel settings as written in the sysctl file and the gateway unit.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Sysctl file read, and its `key = values`.
    pub sysctl_file: Option<String>,
    /// Values.
    pub sysctl: BTreeMap<String, Vec<u64>>,
    /// Unit file read, and its `LimitNOFILE`.
    pub unit_file: Option<String>,
    /// `LimitNOFILE=`.
    pub limit_nofile: Option<u64>,
}

impl Tuning {
    /// Reads the files that exist.
    pub fn read(sysctl: &Path, unit: &Path) -> Self {
        let mut t = Tuning::default();
        if let Ok(s) = std::fs::read_to_string(sysctl) {
            t.sysctl_file = Some(sysctl.display().to_string());
            t.sysctl = parse_sysctl(&s);
        }
        if let Ok(s) = std::fs::read_to_string(unit) {
            t.unit_file = Some(unit.display().to_string());
            t.limit_nofile = s
                .lines()
                .filter_map(|l| l.trim().strip_prefix("LimitNOFILE="))
                .filter_map(|v| v.trim().parse().ok())
                .next_back();
        }
        t
    }
}

/// `key = v1 v2 ...` lines (comments and non-numeric values skipped).
pub fn parse_sysctl(s: &str) -> BTreeMap<String, Vec<u64>> {
    let mut m = BTreeMap::new();
    for line in s.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let vals: Option<Vec<u64>> = v.split_whitespace().map(|x| x.parse().ok()).collect();
        if let Some(vals) = vals.filter(|v| !v.is_empty()) {
            m.insert(k.trim().to_owned(), vals);
        }
    }
    m
}

/// A count rounded up, with separators.
fn int(v: f64) -> String {
    num(v.ceil())
}

/// Bytes as GiB / TiB.
fn gib(v: f64) -> String {
    if v >= 1024.0 {
        format!("{} TiB", num(v / 1024.0))
    } else {
        format!("{} GiB", num(v))
    }
}

/// The document.
pub fn markdown(i: &Inputs, a: &Assumptions, m: &Model, t: &Tuning, command: &str) -> String {
    let g = |k| a.get(k);
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Capacity model\n");
    let _ = writeln!(w, "Generated by `chatbench capacity`; do not edit by hand, run it again:\n\n```sh\n{command}\n```\n");
    let _ = writeln!(
        w,
        "Every number below is computed from two kinds of input, kept apart: **measured** figures \
         (read from the result files named next to each) and **assumptions** (typed planning values, \
         each with its `--assume` key, plus a few defaults and formats read off the code). Nothing \
         here was measured at the scale it talks about: the idle run held {} sessions on a {}-CPU \
         machine over loopback, and the model extrapolates linearly from it and the other runs.\n",
        num(i.idle_sessions.value),
        i.cpus
    );
    summary(w, a, m);

    let _ = writeln!(w, "## Measured inputs\n");
    let _ = writeln!(w, "| input | value | source file | figure |\n|---|---:|---|---|");
    let mut meas = |name: &str, x: &Measured| {
        let _ = writeln!(w, "| {name} | {} {} | `{}` | `{}` ({}) |", num(x.value), x.unit, x.file, x.figure, x.label);
    };
    meas("idle sessions held", &i.idle_sessions);
    meas("user-space RSS per idle session", &i.rss_per_session);
    for x in &i.other_idle {
        meas("user-space RSS per idle session, another idle run (sensitivity only)", x);
    }
    meas("kernel socket slabs per connection, both ends", &i.slab_both);
    if let Some(x) = &i.fd_slab_both {
        meas("kernel file + epoll slabs per connection, both ends", x);
    }
    meas("kernel TCP buffer memory per idle connection, both ends", &i.tcp_mem_both);
    meas("server CPU per new session (paced ramp)", &i.cpu_session);
    if let Some(x) = &i.cpu_reconnect {
        meas("server CPU per reconnect (storm)", x);
    }
    meas("server CPU per delivered direct message at saturation", &i.cpu_direct);
    meas("direct messages delivered/s at saturation", &i.direct_rate);
    meas("server CPU during that traffic", &i.direct_cpu_pct);
    meas("server CPU per group delivery", &i.cpu_group);
    meas("group deliveries/s", &i.group_rate);
    meas("server CPU during that traffic", &i.group_cpu_pct);
    if let Some((x, rate, pct)) = &i.cpu_mixed {
        meas("server CPU per delivered message, day-shaped mix (typing and receipts included)", x);
        meas("delivered msgs/s in that mix", rate);
        meas("server CPU during that traffic", pct);
    }
    let w = &mut s;
    if i.fd_slab_both.is_none() {
        let _ = writeln!(w, "\n_The idle result has no file + epoll slab figure (older harness): that part of the kernel memory is counted as 0._");
    }
    if i.cpu_reconnect.is_none() {
        let _ = writeln!(w, "\n_No reconnect-storm result: storms are costed at the CPU per new session of the idle ramp._");
    }
    if !i.unused.is_empty() {
        let _ = writeln!(w, "\nGiven but not used (an earlier file had the same role): {}.", i.unused.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "));
    }
    let _ = writeln!(
        w,
        "\nAll runs: standalone gatewayd (router and SQLite store in the same process, `durability = \"full\"`), \
         gateway and load generator on the same 2 cores, loopback. The kernel figures are machine-wide and \
         count both ends of each connection."
    );

    for (title, src) in [("## Assumptions (typed, not measured)", Source::Assumption), ("## Defaults and formats read off the code", Source::Code)] {
        let _ = writeln!(w, "\n{title}\n\n| key (`--assume key=value`) | value | unit | meaning |\n|---|---:|---|---|");
        for x in a.0.iter().filter(|x| x.source == src) {
            let _ = writeln!(w, "| `{}` | {} | {} | {} |", x.key, num(x.value), x.unit, x.note);
        }
    }

    let _ = writeln!(w, "\n## Per-unit costs\n");
    let _ = writeln!(w, "| quantity | value | from |\n|---|---:|---|");
    let ks = g("kernel_server_share");
    let row = |w: &mut String, q: &str, v: String, f: String| {
        let _ = writeln!(w, "| {q} | {v} | {f} |");
    };
    row(w, "user-space memory per connection", format!("{} B", num(m.user_b)), "measured RSS growth per idle session".into());
    row(w, "kernel socket objects, server end", format!("{} B", num(m.kernel_sock_b)), format!("{} B both ends × `kernel_server_share` {}", num(i.slab_both.value), num(ks)));
    row(
        w,
        "kernel file + epoll objects, server end",
        format!("{} B", num(m.kernel_fd_b)),
        i.fd_slab_both.as_ref().map_or("not measured (0)".into(), |x| format!("{} B both ends × {}", num(x.value), num(ks))),
    );
    row(w, "kernel TCP buffers of an idle connection, server end", format!("{} B", num(m.kernel_buf_b)), format!("max(0, {} B) × {}", num(i.tcp_mem_both.value), num(ks)));
    row(w, "fd table slot", format!("{} B", num(m.fdtable_b)), "`fdtable_b`".into());
    row(w, "**memory per idle connection**", format!("**{} B**", num(m.conn_b)), "sum of the five rows above".into());
    row(w, "gateway CPU per delivery (fan-out)", format!("{} µs", num(m.cpu_deliv_us)), "measured per group delivery".into());
    row(
        w,
        "gateway CPU per send, deliveries excluded",
        format!("{} µs", num(m.cpu_send_us)),
        format!("direct at saturation {} µs − group delivery {} µs (parse, store, ack)", num(i.cpu_direct.value), num(i.cpu_group.value)),
    );
    row(w, "gateway CPU per new session", format!("{} µs", num(m.cpu_session_us)), "measured (idle ramp)".into());
    row(
        w,
        "gateway CPU per reconnect in a storm",
        format!("{} µs", num(m.cpu_reconnect_us)),
        if i.cpu_reconnect.is_some() { "measured (reconnect storm)".into() } else { "idle ramp figure".into() },
    );
    row(
        w,
        "direct messages/s per gateway core",
        num(m.direct_per_core),
        format!("{} msgs/s ÷ {} % of a core", num(i.direct_rate.value), num(i.direct_cpu_pct.value)),
    );
    row(
        w,
        "group deliveries/s per gateway core",
        num(m.group_per_core),
        format!("{} deliveries/s ÷ {} % of a core (a linear extrapolation: that run did not saturate)", num(i.group_rate.value), num(i.group_cpu_pct.value)),
    );
    let _ = writeln!(
        w,
        "\nThe CPU figures are standalone gatewayd: they include the router and the SQLite store \
         (group commit with an fsync), which cluster mode moves to `router` and PostgreSQL. As a \
         gateway-only cost they are an upper bound; as the cost of the whole path they leave out \
         Kafka, Redis and PostgreSQL. Relayed typing frames and receipt notices are costed as \
         deliveries (not measured apart)."
    );

    let per_box = g("conns_per_box");
    let _ = writeln!(w, "\n## (a) {} connections on one box\n", int(per_box));
    let _ = writeln!(w, "| quantity | value | how |\n|---|---:|---|");
    row(w, "memory for the connections", gib(m.box_conn_gib), format!("{} × {} B", int(per_box), num(m.conn_b)));
    row(
        w,
        "connections that fit the box",
        int(m.box_fit_conns.floor()),
        format!("{} GiB × `ram_usable_share` {} ÷ {} B", num(g("box_ram_gib")), num(g("ram_usable_share")), num(m.conn_b)),
    );
    row(w, "fds for the gateway process", int(m.box_fds), format!("{} × (1 + `fd_headroom` {})", int(per_box), num(g("fd_headroom"))));
    row(
        w,
        "cores to take all of them back in a reconnect",
        format!("{} cores", num(m.box_storm_cores)),
        format!("{} ÷ `storm_secs` {} s × {} µs", int(per_box), num(g("storm_secs")), num(m.cpu_reconnect_us)),
    );
    row(
        w,
        "cores for this box's share of the (b) peak traffic",
        format!("{} cores", num(m.box_traffic_cores)),
        format!("{} gateway cores × {} ÷ {} connections", num(m.gw_cores), int(per_box), int(m.connections)),
    );
    let verdict = if m.box_fit_conns >= per_box { "fit" } else { "do **not** fit" };
    let _ = writeln!(
        w,
        "\n{} idle connections take {} of memory and {verdict} in {} GiB at {} usable. What the idle \
         figure leaves out: TCP buffers of busy connections (see the tuning table), the gateway's \
         pings (the runs pushed `ws.ping_interval` to 1 h), and any growth past the {} sessions measured.",
        int(per_box),
        gib(m.box_conn_gib),
        num(g("box_ram_gib")),
        num(g("ram_usable_share")),
        num(i.idle_sessions.value)
    );
    for x in &i.other_idle {
        let conn_b = m.conn_b - m.user_b + x.value;
        let _ = writeln!(
            w,
            "\nWith the RSS per session of `{}` ({} B) instead, a connection takes {} B, {} connections {}, \
             and {} fit the box.",
            x.file,
            num(x.value),
            num(conn_b),
            int(per_box),
            gib(per_box * conn_b / GIB),
            int((g("box_ram_gib") * g("ram_usable_share") * GIB / conn_b).floor())
        );
    }

    let _ = writeln!(w, "\n## (b) {} users × {} messages a day\n", int(g("users")), num(g("msgs_per_user_day")));
    let _ = writeln!(w, "### Traffic\n\n| quantity | value | how |\n|---|---:|---|");
    row(w, "sends/s, daily average", num(m.sends_avg), format!("{} × {} ÷ 86,400", int(g("users")), num(g("msgs_per_user_day"))));
    row(w, "sends/s at the peak", num(m.sends), format!("× `peak_factor` {}", num(g("peak_factor"))));
    row(
        w,
        "recipients per send",
        num(m.recipients),
        format!("(1 − {}) × 1 + {} × {}", num(g("group_share")), num(g("group_share")), num(g("group_recipients"))),
    );
    row(w, "deliveries/s (live or by sync later)", num(m.deliveries), "sends × recipients".into());
    row(w, "deliveries/s to recipients online", num(m.deliveries_online), format!("× `online_share` {}", num(g("online_share"))));
    row(
        w,
        "typing relays/s",
        num(m.typing_relays),
        format!("sends × `typing_per_send` {} × recipients × online share", num(g("typing_per_send"))),
    );
    row(w, "receipts/s", num(m.receipts), format!("online deliveries × `receipts_per_delivery` {}", num(g("receipts_per_delivery"))));
    row(
        w,
        "connections at the peak",
        int(m.connections),
        format!("users × {} online × {} devices", num(g("online_share")), num(g("devices_per_user"))),
    );
    row(w, "new sessions/s, steady state", num(m.new_sessions), format!("connections ÷ `session_mean_s` {} s", num(g("session_mean_s"))));

    let _ = writeln!(w, "\n### Gateways\n\n| quantity | value | how |\n|---|---:|---|");
    row(
        w,
        "gateway cores busy at the peak",
        num(m.gw_cores),
        format!(
            "(sends × {} µs + (deliveries + typing + receipts) × {} µs + new sessions × {} µs) ÷ 10^6",
            num(m.cpu_send_us),
            num(m.cpu_deliv_us),
            num(m.cpu_session_us)
        ),
    );
    row(
        w,
        "boxes for memory",
        int(m.boxes_mem),
        format!("connections ÷ min({} per box, {} that fit)", int(per_box), int(m.box_fit_conns.floor())),
    );
    row(
        w,
        "boxes for CPU",
        int(m.boxes_cpu),
        format!("cores ÷ ({} cores × `cpu_target` {})", num(g("box_cores")), num(g("cpu_target"))),
    );
    row(w, "**gateway boxes**", format!("**{}**", int(m.gateways)), "the larger".into());
    row(w, "connections per gateway", int(m.conns_per_gateway), "connections ÷ gateways".into());
    row(w, "cores busy per gateway at the peak", num(m.cores_per_gateway), format!("of {}", num(g("box_cores"))));
    row(
        w,
        &format!("reconnect storm: {} % of connections in {} s", num(g("storm_share") * 100.0), num(g("storm_secs"))),
        format!("{} sessions/s", num(m.storm_rate)),
        "`storm_share` × connections ÷ `storm_secs`".into(),
    );
    row(w, "cores for that storm", num(m.storm_cores), format!("× {} µs", num(m.cpu_reconnect_us)));
    row(w, "that storm's share of the fleet's cores", format!("{} %", num(m.storm_fleet_share * 100.0)), "storm cores ÷ (gateways × cores per box)".into());
    if let Some((x, rate, pct)) = &i.cpu_mixed {
        let _ = writeln!(
            w,
            "\nNot used: the mixed run's {} µs per delivered message (typing and receipts included) was \
             measured at {} deliveries/s with the gateway at {} % of a core, far from saturation, where \
             costs that do not grow with the message rate are spread over few messages. Costed that way, \
             the peak's {} deliveries/s would keep {} cores busy: the figure for a gateway that is mostly \
             idle, not for one sized to run at `cpu_target`.",
            num(x.value),
            num(rate.value),
            num(pct.value),
            num(m.deliveries),
            num(m.deliveries * x.value / 1e6)
        );
    }
    let bound = if m.boxes_mem >= m.boxes_cpu { "memory (connections per box)" } else { "CPU (message traffic)" };
    let _ = writeln!(w, "\nThe gateway fleet is bound by {bound} under these assumptions.");

    let _ = writeln!(w, "\n### Kafka\n\n| topic | records/s at the peak | how | partitions at {} records/s each |\n|---|---:|---|---:|", num(g("kafka_partition_rps")));
    let _ = writeln!(w, "| `sb.inbound` | {} | one per send | {} (default `inbound_partitions`: {}) |", num(m.k_inbound), int(m.p_inbound), num(g("inbound_partitions")));
    let _ = writeln!(
        w,
        "| `sb.deliver.<node>`, all nodes | {} | per send: 1 ack + distinct recipient nodes ({} direct, {} group, for recipients spread uniformly over {} gateways); per typing frame: the same nodes; per receipt: 1 | – |",
        num(m.k_deliver),
        num(m.nodes_direct),
        num(m.nodes_group),
        int(m.gateways)
    );
    let _ = writeln!(w, "| `sb.deliver.<node>`, one node | {} | ÷ gateways | {} per node topic |", num(m.k_deliver_node), int(m.p_deliver_node));
    let _ = writeln!(w, "| `sb.push` | {} | deliveries to offline recipients | {} |", num(m.k_push), int(m.p_push));
    let _ = writeln!(
        w,
        "| `sb.side` | {} | online deliveries × `cursor_per_delivery` {} + last-seen per closed session | {} |",
        num(m.k_side),
        num(g("cursor_per_delivery")),
        int(m.p_side)
    );
    let _ = writeln!(
        w,
        "\nThe per-partition throughput is an **assumption** (`kafka_partition_rps`), not a measurement: \
         nothing here has run against Kafka at load. The inbound topic also bounds the router group's \
         parallelism (one router per partition at most)."
    );

    let _ = writeln!(w, "\n### Redis (presence)\n\n| quantity | value | how |\n|---|---:|---|");
    row(
        w,
        "key `<prefix>{u:<id>}`",
        format!("{} B", num(m.r_key_len)),
        format!("prefix {} + `{{u:` 3 + id {} + `}}` 1", num(g("redis_prefix_len")), num(g("redis_user_id_digits"))),
    );
    row(
        w,
        "field `<node>:<conn>`",
        format!("{} B", num(m.r_field_len)),
        format!("node {} + 1 + conn {}", num(g("redis_node_id_len")), num(g("redis_conn_id_digits"))),
    );
    row(
        w,
        "value `<epoch>:<expires_ms>:<device>`",
        format!("{} B", num(m.r_value_len)),
        format!("{} + 1 + {} + 1 + device {}", num(g("epoch_digits")), num(g("expires_digits")), num(g("redis_device_len"))),
    );
    row(
        w,
        "memory per connected user",
        format!("{} B", num(m.r_user_b)),
        format!(
            "`redis_key_overhead_b` {} + key + {} × (field + value + `redis_field_overhead_b` {})",
            num(g("redis_key_overhead_b")),
            num(g("devices_per_user")),
            num(g("redis_field_overhead_b"))
        ),
    );
    row(w, "presence data", gib(m.r_data_gib), format!("{} connected users", int(m.online_users)));
    row(w, "with replicas", gib(m.r_total_gib), format!("× (1 + {})", num(g("redis_replicas"))));
    row(
        w,
        "refresh commands/s",
        num(m.r_refresh),
        format!("one `EVALSHA` per connected user every ttl/3 = {} s", num(g("presence_ttl_s") / 3.0)),
    );
    row(
        w,
        "round trips per refresh, per gateway",
        int(m.r_refresh_rtts),
        format!("users per gateway ÷ {} in flight", num(g("presence_batch"))),
    );
    row(w, "session commands/s", num(m.r_session_ops), "new sessions × 3 (connected, disconnected, revocation `EXISTS`)".into());
    row(w, "router lookups/s (upper bound)", num(m.r_locate), "one `HGETALL` per recipient of each send, typing frame and receipt (batches dedupe some)".into());
    row(w, "**commands/s**", format!("**{}**", num(m.r_ops)), "sum".into());
    row(
        w,
        "shards",
        format!("{} for commands, {} for memory", int(m.r_shards_ops), int(m.r_shards_mem)),
        format!("÷ `redis_shard_ops` {}; ÷ `redis_shard_gib` {} GiB", num(g("redis_shard_ops")), num(g("redis_shard_gib"))),
    );
    let refresh_share = m.r_refresh / m.r_ops.max(1e-9) * 100.0;
    let _ = writeln!(
        w,
        "\nThe per-entry refresh is {} % of the commands. It exists so an entry whose delete was \
         lost expires; a dead node's entries already die with its registration and epoch. A \
         longer `cluster.presence_ttl` divides it in proportion.",
        num(refresh_share)
    );

    let _ = writeln!(w, "\n### PostgreSQL\n\n| rows written/s at the peak | value | how |\n|---|---:|---|");
    row(w, "messages", num(m.pg_messages), "one per send".into());
    row(w, "inbox", num(m.pg_inbox), format!("sends × (recipients + sender) = × {}", num(m.recipients + 1.0)));
    row(
        w,
        "conversation and member rows of the send",
        num(m.pg_send_other),
        format!("sends × {} (last_seq, last_message_id, sender's marks)", num(g("pg_rows_fixed_per_send") - 1.0)),
    );
    row(w, "receipts", num(m.pg_receipts), format!("receipts × {}", num(g("pg_rows_per_receipt"))));
    row(w, "side (cursors, last-seen; before coalescing)", num(m.pg_side), "online deliveries × `cursor_per_delivery` + closed sessions".into());
    row(w, "**total**", format!("**{}**", num(m.pg_rows)), "sum".into());
    row(w, "transactions/s (one per send, one per receipt)", num(m.sends + m.receipts), "".into());
    row(
        w,
        "disk per average day",
        format!("{} TiB", num(m.pg_tib_day)),
        format!("sends/day × (`pg_msg_row_b` {} + {} × `pg_inbox_row_b` {})", num(g("pg_msg_row_b")), num(m.recipients + 1.0), num(g("pg_inbox_row_b"))),
    );
    let _ = writeln!(
        w,
        "\nFor the sharding plan in ARCHITECTURE.md (\"Sharding plan (on paper)\"): the rows that shard \
         by conversation (messages, conversation and member rows, receipts) come to {} rows/s, {} \
         primaries at `pg_primary_rows` {}; the rows that shard by user (inbox, cursors, last-seen: \
         the second step keyed by user) come to {} rows/s, {} primaries. Inbox rows are {} % of \
         all writes, so the by-user step carries the larger part; one primary (the plan's starting \
         point) covers {} % of the peak.",
        num(m.pg_conv_rows),
        int(m.pg_conv_primaries),
        num(g("pg_primary_rows")),
        num(m.pg_user_rows),
        int(m.pg_user_primaries),
        num(m.pg_inbox / m.pg_rows.max(1e-9) * 100.0),
        num(g("pg_primary_rows") / m.pg_rows.max(1e-9) * 100.0)
    );

    tuning(w, a, m, t);
    s
}

/// The headline conclusions, all computed.
fn summary(w: &mut String, a: &Assumptions, m: &Model) {
    let g = |k| a.get(k);
    let _ = writeln!(w, "## Summary\n");
    let kernel = m.kernel_sock_b + m.kernel_fd_b + m.kernel_buf_b + m.fdtable_b;
    let _ = writeln!(
        w,
        "- **Memory per idle connection: {} B**, of which {} B user space and {} B kernel. {} connections \
         take {}; {} fit a {} GiB box at {} usable.",
        num(m.conn_b),
        num(m.user_b),
        num(kernel),
        int(g("conns_per_box")),
        gib(m.box_conn_gib),
        int(m.box_fit_conns.floor()),
        num(g("box_ram_gib")),
        num(g("ram_usable_share"))
    );
    let bound = if m.boxes_mem >= m.boxes_cpu { "memory" } else { "CPU" };
    let _ = writeln!(
        w,
        "- **Gateways for {} users: {}** ({} for memory, {} for CPU at {} %: bound by {bound}); {} cores \
         busy at the peak of {} sends/s and {} deliveries/s.",
        int(g("users")),
        int(m.gateways),
        int(m.boxes_mem),
        int(m.boxes_cpu),
        num(g("cpu_target") * 100.0),
        num(m.gw_cores),
        num(m.sends),
        num(m.deliveries)
    );
    let _ = writeln!(
        w,
        "- **Reconnect storm** of {} % of connections in {} s: {} sessions/s, {} cores ({} % of the fleet). \
         One box's {} connections back in {} s: {} cores.",
        num(g("storm_share") * 100.0),
        num(g("storm_secs")),
        num(m.storm_rate),
        num(m.storm_cores),
        num(m.storm_fleet_share * 100.0),
        int(g("conns_per_box")),
        num(g("storm_secs")),
        num(m.box_storm_cores)
    );
    let _ = writeln!(
        w,
        "- **Kafka** at the peak: {} records/s in, {} out to the gateways, {} to push, {} side; {} inbound \
         partitions at the assumed {} records/s each (the default is {}).",
        num(m.k_inbound),
        num(m.k_deliver),
        num(m.k_push),
        num(m.k_side),
        int(m.p_inbound),
        num(g("kafka_partition_rps")),
        num(g("inbound_partitions"))
    );
    let _ = writeln!(
        w,
        "- **Redis presence**: {} B per connected user, {} of data ({} with replicas); {} commands/s, {} of \
         them refreshes: {} shards by commands, {} by memory.",
        num(m.r_user_b),
        gib(m.r_data_gib),
        gib(m.r_total_gib),
        num(m.r_ops),
        num(m.r_refresh),
        int(m.r_shards_ops),
        int(m.r_shards_mem)
    );
    let _ = writeln!(
        w,
        "- **PostgreSQL**: {} row writes/s at the peak ({} of them inbox rows), {} transactions/s: {} + {} \
         primaries (by conversation + by user) at the assumed {} rows/s each; {} TiB a day.\n",
        num(m.pg_rows),
        num(m.pg_inbox),
        num(m.sends + m.receipts),
        int(m.pg_conv_primaries),
        int(m.pg_user_primaries),
        num(g("pg_primary_rows")),
        num(m.pg_tib_day)
    );
}

fn tuning(w: &mut String, a: &Assumptions, m: &Model, t: &Tuning) {
    let g = |k| a.get(k);
    let per_box = g("conns_per_box");
    let _ = writeln!(w, "\n## Kernel and process limits for {} connections per box\n", int(per_box));
    let src = match (&t.sysctl_file, &t.unit_file) {
        (Some(s), Some(u)) => format!("Compared with `{s}` and `{u}`."),
        (Some(s), None) => format!("Compared with `{s}` (no unit file read)."),
        (None, Some(u)) => format!("Compared with `{u}` (no sysctl file read)."),
        (None, None) => "No sysctl or unit file was read.".into(),
    };
    let _ = writeln!(w, "{src}\n\n| setting | needed | set there | |\n|---|---:|---:|---|");
    let sys = |k: &str, i: usize| t.sysctl.get(k).and_then(|v| v.get(i).copied());
    let verdict = |have: Option<u64>, need: f64| match have {
        None => "**missing**".to_owned(),
        Some(h) if (h as f64) >= need => "ok".to_owned(),
        Some(_) => "**too small**".to_owned(),
    };
    let mut line = |name: &str, need: f64, have: Option<u64>, why: &str| {
        let _ = writeln!(w, "| {name} | {} | {} | {} — {why} |", int(need), have.map_or("–".into(), |h| num(h as f64)), verdict(have, need));
    };
    let fds = m.box_fds;
    line("`LimitNOFILE` (gatewayd@.service)", fds, t.limit_nofile, "one fd per connection plus `fd_headroom`");
    line("`fs.nr_open`", fds, sys("fs.nr_open", 0), "the ceiling for LimitNOFILE");
    line("`fs.file-max`", fds, sys("fs.file-max", 0), "system-wide open files (other processes need their share too)");
    line("`net.core.somaxconn`", g("listen_backlog"), sys("net.core.somaxconn", 0), "caps gatewayd's listen backlog of 65,535");
    line("`net.ipv4.tcp_max_syn_backlog`", g("listen_backlog"), sys("net.ipv4.tcp_max_syn_backlog", 0), "half-open handshakes in a storm");
    let rmem = sys("net.ipv4.tcp_rmem", 1).unwrap_or(0) as f64;
    let wmem = sys("net.ipv4.tcp_wmem", 1).unwrap_or(0) as f64;
    let busy_pages = per_box * g("busy_share") * (rmem + wmem) / 4096.0;
    let busy = format!(
        "{} busy connections (`busy_share` {}) × default rmem + wmem ({} B) in 4 KiB pages; idle ones hold none (measured)",
        int(per_box * g("busy_share")),
        num(g("busy_share")),
        num(rmem + wmem)
    );
    line("`net.ipv4.tcp_mem` pressure (pages)", busy_pages, sys("net.ipv4.tcp_mem", 1), &busy);
    let lo = sys("net.ipv4.ip_local_port_range", 0);
    let hi = sys("net.ipv4.ip_local_port_range", 1);
    let ports = match (lo, hi) {
        (Some(l), Some(h)) if h >= l => Some(h - l + 1),
        _ => None,
    };
    line("`net.netfilter.nf_conntrack_max` (if conntrack is loaded)", per_box, sys("net.netfilter.nf_conntrack_max", 0), "one entry per tracked connection");
    let _ = writeln!(w);
    if let Some(p) = ports {
        let _ = writeln!(
            w,
            "- **Ephemeral ports.** `ip_local_port_range` gives {} ports per (source address, destination \
             address, destination port). A proxy or load balancer that opens {} connections to one gateway \
             listener needs ⌈{} ÷ {}⌉ = {} source addresses (or that many gateway listen addresses/ports); \
             clients connecting directly do not use the box's ephemeral ports.",
            num(p as f64),
            int(per_box),
            int(per_box),
            num(p as f64),
            int(per_box / p as f64)
        );
    }
    let sock_gib = per_box * (m.kernel_sock_b + m.kernel_fd_b) / GIB;
    let _ = writeln!(
        w,
        "- **Socket objects are not in `tcp_mem`.** `tcp_mem` bounds buffer pages only; the {} of socket, \
         file and epoll objects ({} B × {}) are slab memory that no sysctl caps: size RAM for them.",
        gib(sock_gib),
        num(m.kernel_sock_b + m.kernel_fd_b),
        int(per_box)
    );
}

/// `chatbench capacity`.
pub fn capacity(files: &[PathBuf], out: Option<&Path>, assume: &[String], sysctl: &Path, unit: &Path) -> Result<()> {
    let mut results = Vec::new();
    for f in files {
        results.push((f.display().to_string(), RunResult::load(f)?));
    }
    let inputs = Inputs::pick(&results)?;
    let mut a = Assumptions::default();
    a.set(assume)?;
    let m = Model::compute(&inputs, &a);
    let t = Tuning::read(sysctl, unit);
    let mut cmd = String::from("chatbench capacity");
    for f in files {
        let _ = write!(cmd, " {}", f.display());
    }
    for x in assume {
        let _ = write!(cmd, " --assume {x}");
    }
    if let Some(o) = out {
        let _ = write!(cmd, " --out {}", o.display());
    }
    let doc = markdown(&inputs, &a, &m, &t, &cmd);
    match out {
        Some(o) => {
            std::fs::write(o, &doc).with_context(|| format!("writing {}", o.display()))?;
            eprintln!("wrote {}", o.display());
        }
        None => {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(doc.as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, json: &str) -> (String, RunResult) {
        (name.to_owned(), serde_json::from_str(json).expect("fixture parses"))
    }

    fn fixtures() -> Vec<(String, RunResult)> {
        vec![
            load("idle.json", include_str!("testdata/capacity-idle.json")),
            load("direct-max.json", include_str!("testdata/capacity-direct-max.json")),
            load("group.json", include_str!("testdata/capacity-group.json")),
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn picks_inputs_by_role() {
        let i = Inputs::pick(&fixtures()).unwrap();
        assert_eq!(i.rss_per_session.value, 500.0);
        assert_eq!(i.rss_per_session.file, "idle.json");
        assert_eq!(i.cpu_direct.file, "direct-max.json");
        assert_eq!(i.cpu_group.value, 10.0);
        assert!(i.cpu_reconnect.is_none() && i.cpu_mixed.is_none());
        assert!(Inputs::pick(&fixtures()[..2]).is_err(), "a group result is required");
        // A second idle result is a sensitivity line, a second saturation run is unused.
        let mut f = fixtures();
        let mut idle2 = f[0].clone();
        idle2.0 = "idle2.json".into();
        idle2.1.figures.iter_mut().filter(|x| x.name == "server_rss_per_session_b").for_each(|x| x.value = 700.0);
        let mut sat2 = f[1].clone();
        sat2.0 = "direct2.json".into();
        f.extend([idle2, sat2]);
        let i = Inputs::pick(&f).unwrap();
        assert_eq!(i.rss_per_session.value, 500.0);
        assert_eq!(i.other_idle.iter().map(|x| (x.file.as_str(), x.value)).collect::<Vec<_>>(), [("idle2.json", 700.0)]);
        assert_eq!(i.unused, ["direct2.json"]);
    }

    #[test]
    fn arithmetic() {
        let i = Inputs::pick(&fixtures()).unwrap();
        let mut a = Assumptions::default();
        // Round numbers, so every expected value can be checked by hand.
        a.set(&[
            "users=864000".into(),
            "msgs_per_user_day=100".into(),
            "peak_factor=2".into(),
            "online_share=0.5".into(),
            "devices_per_user=1".into(),
            "group_share=0.5".into(),
            "group_recipients=9".into(),
            "typing_per_send=0".into(),
            "receipts_per_delivery=0".into(),
            "cursor_per_delivery=0".into(),
            "session_mean_s=1000".into(),
            "conns_per_box=100000".into(),
            "box_cores=10".into(),
            "cpu_target=0.5".into(),
            "storm_share=0.1".into(),
            "storm_secs=10".into(),
            "kafka_partition_rps=1000".into(),
        ])
        .unwrap();
        let m = Model::compute(&i, &a);
        // Memory: 500 + 6,000/2 + 1,000/2 + max(0, -100)/2 + 8.
        assert!(close(m.conn_b, 4008.0), "{}", m.conn_b);
        assert!(close(m.box_conn_gib, 100_000.0 * 4008.0 / GIB));
        // CPU per unit: delivery 10 µs; send 30 − 10 = 20 µs; 30,000 msgs/s at 90 % of a core.
        assert!(close(m.cpu_send_us, 20.0) && close(m.cpu_deliv_us, 10.0));
        assert!(close(m.direct_per_core, 30_000.0 / 0.9));
        assert!(close(m.group_per_core, 30_000.0 / 0.3));
        // Traffic: 864,000 × 100 / 86,400 = 1,000/s average, 2,000/s at the peak; 5 recipients.
        assert!(close(m.sends_avg, 1000.0) && close(m.sends, 2000.0));
        assert!(close(m.recipients, 5.0) && close(m.deliveries, 10_000.0));
        assert!(close(m.connections, 432_000.0) && close(m.new_sessions, 432.0));
        // Cores: (2,000 × 20 + 10,000 × 10 + 432 × 100) µs/s = 183,200 µs/s.
        assert!(close(m.gw_cores, 0.1832), "{}", m.gw_cores);
        assert_eq!((m.boxes_mem, m.boxes_cpu, m.gateways), (5.0, 1.0, 5.0));
        // Storm: 10 % of 432,000 in 10 s = 4,320/s × 100 µs (no reconnect result: the idle figure).
        assert!(close(m.storm_rate, 4320.0) && close(m.storm_cores, 0.432));
        // Kafka: inbound 2,000/s → 2 partitions; push: half the deliveries.
        assert!(close(m.k_inbound, 2000.0) && m.p_inbound == 2.0);
        assert!(close(m.k_push, 5000.0));
        let direct = distinct_nodes(5.0, 0.5);
        let group = distinct_nodes(5.0, 4.5);
        assert!(close(m.k_deliver, 2000.0 * (1.0 + 0.5 * direct + 0.5 * group)));
        assert!(close(m.k_side, 432.0));
        // Redis: key "sb:{u:" + 10 digits + "}" = 17, field 6 + 1 + 8 = 15, value 13+1+13+1+32 = 60.
        assert_eq!((m.r_key_len, m.r_field_len, m.r_value_len), (17.0, 15.0, 60.0));
        assert!(close(m.r_user_b, 100.0 + 17.0 + 15.0 + 60.0 + 4.0));
        assert!(close(m.r_refresh, 432_000.0 / 10.0));
        // PostgreSQL: inbox rows = sends × 6; 3 more rows per send.
        assert!(close(m.pg_inbox, 12_000.0) && close(m.pg_send_other, 6000.0));
        assert!(close(m.pg_rows, 2000.0 + 12_000.0 + 6000.0 + 432.0));
    }

    #[test]
    fn distinct_nodes_limits() {
        assert!(close(distinct_nodes(1000.0, 1.0), 1.0));
        assert!(distinct_nodes(10.0, 1000.0) > 9.99);
        assert!(close(distinct_nodes(1.0, 5.0), 1.0));
    }

    #[test]
    fn assumptions_and_sysctl() {
        let mut a = Assumptions::default();
        assert!(a.set(&["nope=1".into()]).is_err());
        assert!(a.set(&["users=1_000".into()]).is_ok());
        assert_eq!(a.get("users"), 1000.0);
        let s = parse_sysctl("# c\nfs.nr_open = 12000000\nnet.ipv4.tcp_mem = 1 2 3\nx = abc\n");
        assert_eq!(s["fs.nr_open"], vec![12_000_000]);
        assert_eq!(s["net.ipv4.tcp_mem"], vec![1, 2, 3]);
        assert!(!s.contains_key("x"));
    }

    #[test]
    fn document_names_sources() {
        let i = Inputs::pick(&fixtures()).unwrap();
        let a = Assumptions::default();
        let m = Model::compute(&i, &a);
        let t = Tuning { limit_nofile: Some(2_097_152), ..Tuning::default() };
        let doc = markdown(&i, &a, &m, &t, "chatbench capacity idle.json direct-max.json group.json");
        assert!(doc.contains("`idle.json` | `server_rss_per_session_b`"));
        assert!(doc.contains("**too small**"), "LimitNOFILE 2,097,152 < 11,000,000");
        assert!(doc.contains("## Assumptions (typed, not measured)"));
        assert!(doc.contains("## Summary") && doc.contains("`idle.json` | `sessions`"));
    }
}
