//! Scenario files (`benches/scenarios/*.toml`): one flat table; each `kind` reads the fields it
//! needs. `--set key=value` overrides a field (the value is TOML, or a bare string).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use switchboard_core::config::literal;

/// What a scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Hold `connections` idle sessions opened at `ramp_rate`/s, for `hold_secs`.
    Idle,
    /// Open `connections` sessions as fast as possible; sessions/s = N / (first connect .. last synced).
    ConnectStorm,
    /// `pairs` sender→receiver pairs at a total `rate` (or "max"), at most `window` unacked sends each.
    Direct,
    /// `groups` groups of `group_size`, `senders_per_group` senders each, fan-out to every member.
    Group,
    /// Hold `connections`, all close at once and reconnect within `reconnect_window_secs`.
    ReconnectStorm,
    /// `users` mostly idle users sending, typing and reading at a low per-user rate.
    Mixed,
}

/// A send rate: messages per second in total, or as fast as the window allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages/s across all senders.
    PerSecond(f64),
    /// Saturation: every sender keeps `window` sends in flight.
    Max,
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::PerSecond(r) => s.serialize_f64(*r),
            Rate::Max => s.serialize_str("max"),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(r) if r > 0.0 => Ok(Rate::PerSecond(r)),
            Raw::Word(w) if w == "max" => Ok(Rate::Max),
            Raw::Word(w) => w
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .map(Rate::PerSecond)
                .ok_or_else(|| serde::de::Error::custom("rate must be a positive number or \"max\"")),
            Raw::Num(_) => Err(serde::de::Error::custom("rate must be positive")),
        }
    }
}

/// One scenario. Defaults suit a 2-core machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name used in result file names.
    pub name: String,
    /// What to do.
    pub kind: Kind,
    /// Load-generating worker processes.
    pub workers: usize,
    /// Source addresses 127.0.0.1..=127.0.0.N, split between the workers.
    pub sources: u8,
    /// WebSocket handshakes in flight per worker.
    pub connect_concurrency: usize,
    /// New sessions per second in total while connecting; 0: as fast as the concurrency allows.
    pub ramp_rate: f64,
    /// Seconds to wait after connecting before the "after" reading.
    pub settle_secs: f64,
    /// Seconds to hold the idle sessions (idle, reconnect-storm before the storm).
    pub hold_secs: f64,
    /// Sessions (idle, connect-storm, reconnect-storm).
    pub connections: usize,
    /// First (non-existent) user id for minted tokens (idle, connect-storm, reconnect-storm).
    pub first_user: i64,
    /// Direct pairs.
    pub pairs: usize,
    /// Groups.
    pub groups: usize,
    /// Members per group, senders included.
    pub group_size: usize,
    /// Senders per group.
    pub senders_per_group: usize,
    /// Total messages/s over all senders, or "max".
    pub rate: Rate,
    /// Most unacked sends per sender.
    pub window: usize,
    /// Seconds of traffic.
    pub duration_secs: f64,
    /// Bytes of message text (sequence, sender and send time, padded).
    pub payload_bytes: usize,
    /// Seconds to wait for late deliveries after the traffic stops.
    pub grace_secs: f64,
    /// Reconnect storm: each client reconnects after a random delay in 0..this.
    pub reconnect_window_secs: f64,
    /// Reconnect storm: close with a WebSocket close frame (false: just drop the TCP connection).
    pub close_frame: bool,
    /// Mixed: registered users, all connected.
    pub users: usize,
    /// Mixed: 1:1 contacts per user (a ring: the nearest users).
    pub contacts: usize,
    /// Mixed: users are split into groups of this size (0: no groups).
    pub mixed_group_size: usize,
    /// Mixed: messages each user sends per minute (Poisson).
    pub sends_per_user_per_min: f64,
    /// Mixed: share of sends that go to the user's group.
    pub group_share: f64,
    /// Mixed: send `typing` this long before each message (0: no typing).
    pub typing_lead_secs: f64,
    /// Mixed: probability that a received message is answered with a `read` receipt.
    pub read_receipt_prob: f64,
    /// REST calls (register, group create/add) in flight during setup.
    pub setup_concurrency: usize,
    /// Extra `--set KEY=VALUE` flags for gateways started with --spawn.
    pub gateway_set: Vec<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: Kind::Idle,
            workers: 2,
            sources: 8,
            connect_concurrency: 128,
            ramp_rate: 0.0,
            settle_secs: 3.0,
            hold_secs: 5.0,
            connections: 1000,
            first_user: 1_000_000,
            pairs: 50,
            groups: 1,
            group_size: 100,
            senders_per_group: 1,
            rate: Rate::PerSecond(1000.0),
            window: 16,
            duration_secs: 20.0,
            payload_bytes: 100,
            grace_secs: 5.0,
            reconnect_window_secs: 2.0,
            close_frame: true,
            users: 2000,
            contacts: 4,
            mixed_group_size: 20,
            sends_per_user_per_min: 2.0,
            group_share: 0.3,
            typing_lead_secs: 1.0,
            read_receipt_prob: 0.5,
            setup_concurrency: 16,
            gateway_set: Vec::new(),
        }
    }
}

impl Scenario {
    /// Reads `path`, applies `overrides` (`key=value`), checks the values.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut table: toml::Table = text.parse().with_context(|| format!("parsing {}", path.display()))?;
        for kv in overrides {
            let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            table.insert(k.trim().to_owned(), literal(v.trim()));
        }
        if !table.contains_key("name") {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("scenario");
            table.insert("name".into(), toml::Value::String(stem.into()));
        }
        let s: Scenario = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("scenario {}", path.display()))?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<()> {
        if self.workers == 0 || self.sources == 0 || self.connect_concurrency == 0 || self.setup_concurrency == 0 {
            bail!("workers, sources, connect_concurrency and setup_concurrency must be at least 1");
        }
        if self.window == 0 {
            bail!("window must be at least 1");
        }
        match self.kind {
            Kind::Group if self.group_size < 2 || self.senders_per_group == 0 || self.senders_per_group > self.group_size => {
                bail!("group: need group_size >= 2 and 1 <= senders_per_group <= group_size")
            }
            Kind::Mixed if self.users < 2 => bail!("mixed: need users >= 2"),
            Kind::Direct if self.pairs == 0 => bail!("direct: need pairs >= 1"),
            _ => Ok(()),
        }
    }

    /// Whether the scenario sends messages (needs registered users).
    pub fn messaging(&self) -> bool {
        matches!(self.kind, Kind::Direct | Kind::Group | Kind::Mixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let s = Scenario::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                assert_eq!(s.name, p.file_stem().unwrap().to_str().unwrap());
                n += 1;
            }
        }
        assert!(n >= 6, "{n} scenarios");
    }

    #[test]
    fn overrides_apply() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/direct.toml");
        let s = Scenario::load(&dir, &["rate=max".into(), "pairs=7".into(), "gateway_set=[\"a=1\"]".into()]).unwrap();
        assert_eq!(s.rate, Rate::Max);
        assert_eq!(s.pairs, 7);
        assert_eq!(s.gateway_set, vec!["a=1".to_owned()]);
        let s = Scenario::load(&dir, &["rate=2500".into()]).unwrap();
        assert_eq!(s.rate, Rate::PerSecond(2500.0));
        assert!(Scenario::load(&dir, &["rate=fast".into()]).is_err());
        assert!(Scenario::load(&dir, &["no_such_field=1".into()]).is_err());
    }
}
