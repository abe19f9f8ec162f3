//! The command line: global flags, then noun and verb.

use crate::exit::EXIT_CODES;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Switchboard admin CLI: operate a live Switchboard (standalone or cluster) through
/// gatewayd's admin API.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// gatewayd admin listener(s), comma-separated: the first that answers is asked (in
    /// cluster mode any node answers for the whole cluster).
    #[arg(long, global = true, env = "CHATCTL_ENDPOINT", default_value = "http://127.0.0.1:9090", value_delimiter = ',')]
    pub endpoint: Vec<String>,
    /// Admin token (gatewayd's server.admin_token); prefer the env var.
    #[arg(long, global = true, env = "CHATCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Result format on stdout.
    #[arg(long, short = 'o', global = true, env = "CHATCTL_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Per-request timeout, e.g. 10s, 500ms, 2m (a bare number is seconds); for `msg tail`,
    /// the time to connect and get the stream's headers.
    #[arg(long, global = true, env = "CHATCTL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and lines for people (at most 100 columns).
    Text,
    /// Exactly one JSON document (`msg tail`: one JSON object per line, NDJSON).
    Json,
}

/// Nouns.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The cluster as a whole: nodes, Redis/Kafka reachability, consumer lag.
    Cluster {
        #[command(subcommand)]
        verb: ClusterVerb,
    },
    /// Gateway nodes: list, drain, undrain.
    Node {
        #[command(subcommand)]
        verb: NodeVerb,
    },
    /// Live WebSocket connections: list, kick.
    Conn {
        #[command(subcommand)]
        verb: ConnVerb,
    },
    /// Accounts: show, create, disable, enable, delete.
    User {
        #[command(subcommand)]
        verb: UserVerb,
    },
    /// Groups: show.
    Group {
        #[command(subcommand)]
        verb: GroupVerb,
    },
    /// Messages: send a smoke-test message through the real path, follow live traffic.
    Msg {
        #[command(subcommand)]
        verb: MsgVerb,
    },
    /// Kafka topics: consumer lag.
    Topic {
        #[command(subcommand)]
        verb: TopicVerb,
    },
    /// Configuration files: check one, list every key with its env var and default.
    Config {
        #[command(subcommand)]
        verb: ConfigVerb,
    },
    /// chatctl's version and, when reachable, the server's.
    Version,
    /// Shell completion script on stdout (bash, zsh, fish).
    Completions {
        /// Shell.
        shell: Shell,
    },
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// `cluster` verbs.
#[derive(Debug, Subcommand)]
pub enum ClusterVerb {
    /// Nodes (state, connections, rates, heartbeat), store/Redis/Kafka reachability, lag.
    Status,
}

/// Flags of destructive verbs.
#[derive(Debug, Args)]
pub struct Confirm {
    /// Really do it (destructive verbs refuse to run without it).
    #[arg(long)]
    pub yes: bool,
    /// Show what would happen and change nothing.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
}

/// `node` verbs.
#[derive(Debug, Subcommand)]
pub enum NodeVerb {
    /// Every node: id, address, version, uptime, connections, msgs/s, heartbeat, state.
    List,
    /// Stop accepting connections and close the open ones with 1012 at a bounded rate.
    Drain {
        /// Node id (as in `node list`); in cluster mode any node's admin listener forwards it.
        id: String,
        /// Connections closed per second.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// Shortest retry hint sent in the close reason, seconds.
        #[arg(long, default_value_t = 1)]
        retry_min: u32,
        /// Longest retry hint sent in the close reason, seconds (hints are jittered between).
        #[arg(long, default_value_t = 10)]
        retry_max: u32,
        /// Wait until every connection is closed (progress on stderr).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Accept connections again.
    Undrain {
        /// Node id.
        id: String,
    },
}

/// `conn` verbs.
#[derive(Debug, Subcommand)]
pub enum ConnVerb {
    /// Live connections (cluster mode: every node's, merged by the node asked).
    List {
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
        /// Only this user's (id).
        #[arg(long)]
        user: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Close a connection (code 4000 "kicked by an operator"; the client may reconnect).
    Kick {
        /// Connection id (as in `conn list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        conn: Option<u64>,
        /// The node holding it (cluster mode; needed only when the id is open on several
        /// nodes: ids are per node).
        #[arg(long, conflicts_with = "user")]
        node: Option<String>,
        /// Every connection of this user (id or email), on every node, instead.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `user` verbs.
#[derive(Debug, Subcommand)]
pub enum UserVerb {
    /// Profile, devices, presence (which nodes), last seen, undelivered count.
    Show {
        /// User id or email.
        user: String,
    },
    /// Register a user.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Login email.
        #[arg(long)]
        email: String,
        /// Phone number (6-15 digits, optional leading +).
        #[arg(long)]
        phone: String,
        /// Password; prefer --password-stdin (flags show in `ps`).
        #[arg(long, env = "CHATCTL_USER_PASSWORD", hide_env_values = true, required_unless_present = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Refuse login and every token at once and close the user's sockets (1008).
    Disable {
        /// User id or email.
        user: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Allow login again.
    Enable {
        /// User id or email.
        user: String,
    },
    /// Delete the account (profile anonymised, tokens refused, sockets closed).
    Delete {
        /// User id or email.
        user: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `group` verbs.
#[derive(Debug, Subcommand)]
pub enum GroupVerb {
    /// Name, creator, members, message count.
    Show {
        /// Group id.
        id: i64,
    },
}

/// `msg` verbs.
#[derive(Debug, Subcommand)]
pub enum MsgVerb {
    /// Send a message as a user through the router (smoke test); prints the ack.
    Send {
        /// Sender's user id.
        #[arg(long)]
        from: i64,
        /// Recipient user id.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        to: Option<i64>,
        /// Recipient group id.
        #[arg(long)]
        group: Option<i64>,
        /// Body.
        #[arg(long)]
        text: String,
    },
    /// Follow live traffic metadata (never bodies unless --bodies, standalone only) until
    /// Ctrl-C (exit 0), --count or --for.
    ///
    /// One line per event: committed messages (`msg`: id, sender -> recipient or g:group,
    /// body bytes, recipients online/total), refused sends, receipts, typing; in cluster mode
    /// sends from every node as the router's inbound topic carries them (`send`: no id yet,
    /// never a body) and this node's receipts and typing. Times are UTC. With -o json: one
    /// JSON object per line (NDJSON), each with a `type`; a `lagged` line means events were
    /// dropped because the tail fell behind. The first endpoint that answers is followed.
    Tail {
        /// Only what this user (id) sent, received (their groups included), read or typed.
        #[arg(long)]
        user: Option<i64>,
        /// Only this group's traffic.
        #[arg(long)]
        group: Option<i64>,
        /// Only these kinds, comma-separated.
        #[arg(long = "type", value_enum, value_delimiter = ',')]
        types: Vec<EventKind>,
        /// Show message bodies too (standalone mode only; the gateway logs that you asked).
        #[arg(long)]
        bodies: bool,
        /// Exit 0 after this many events.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Exit 0 after this long, e.g. 30s, 5m.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
}

/// Kinds of traffic events `msg tail` can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventKind {
    /// Committed messages (cluster: sends read from Kafka).
    Message,
    /// Sends the server refused.
    Refused,
    /// Delivered and read receipts.
    Receipt,
    /// Typing indicators.
    Typing,
}

impl EventKind {
    /// The admin API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Refused => "refused",
            Self::Receipt => "receipt",
            Self::Typing => "typing",
        }
    }
}

/// `topic` verbs.
#[derive(Debug, Subcommand)]
pub enum TopicVerb {
    /// Consumer lag of the router and storage groups, per partition.
    ///
    /// The node asked reads each group's committed offsets and the high watermarks from
    /// Kafka (without joining the groups).
    Lag,
}

/// `config` verbs.
#[derive(Debug, Subcommand)]
pub enum ConfigVerb {
    /// Load a gatewayd config file as gatewayd would (file, then SWITCHBOARD_* env) and
    /// report every problem (exit 78).
    Check {
        /// TOML file.
        file: PathBuf,
        /// Ignore SWITCHBOARD_* variables of this environment.
        #[arg(long)]
        ignore_env: bool,
    },
    /// Every key with its env var name and default.
    Defaults,
}

/// `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h)")),
    };
    if !(0.001..=86_400.0).contains(&secs) {
        return Err("timeout must be between 1ms and 24h".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("0").is_err());
    }
}
