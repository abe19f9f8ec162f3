//! What the parent and its worker processes say to each other: one JSON object per line, the
//! parent on the worker's stdin, the worker on its stdout.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

/// One message stream: a sender to a user or a group. Sequence numbers run per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    /// Index of the gateway both ends use: standalone gateways number their users
    /// independently, so ids alone can collide across gateways.
    pub gw: u16,
    /// Sending user.
    pub from: i64,
    /// Receiving user, or the group.
    pub to: i64,
    /// `to` is a group.
    pub group: bool,
}

/// What a session sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SendSpec {
    /// Fixed rate (messages/s; 0 = as fast as the window allows) to one user or group.
    Steady {
        /// Receiving user or group.
        to: i64,
        /// `to` is a group.
        group: bool,
        /// Messages/s; 0: saturate the window.
        rate: f64,
    },
    /// The mixed day: Poisson sends to contacts or the user's group, typing, read receipts.
    Mixed {
        /// 1:1 contacts.
        peers: Vec<i64>,
        /// The user's group, if any.
        group: Option<i64>,
    },
}

/// One WebSocket session to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSpec {
    /// Global index.
    pub id: u32,
    /// User id (in the token).
    pub user: i64,
    /// Access token.
    pub token: String,
    /// Gateway.
    pub target: SocketAddr,
    /// Index of that gateway.
    pub gw: u16,
    /// Source address to bind.
    pub source: Ipv4Addr,
    /// What it sends, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<SendSpec>,
    /// Streams it should receive every message of (for loss counting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<StreamKey>,
}

/// Settings shared by every session of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Traffic {
    /// Most unacked sends per sender.
    pub window: usize,
    /// Message text bytes.
    pub payload_bytes: usize,
    /// Mixed: sends per user per second.
    pub mixed_rate: f64,
    /// Mixed: share of sends to the group.
    pub group_share: f64,
    /// Mixed: typing lead, seconds (0: none).
    pub typing_lead_secs: f64,
    /// Mixed: probability of a read receipt per received message.
    pub read_receipt_prob: f64,
}

/// Parent → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Cmd {
    /// First command: the sessions this worker owns. Ticks are aligned to `t0_ns` (Unix ns).
    Setup { worker: u32, t0_ns: u64, traffic: Traffic, sessions: Vec<SessionSpec> },
    /// Open every session: `rate` per second (0: unpaced), at most `concurrency` handshakes in flight.
    Open { rate: f64, concurrency: usize },
    /// Send traffic from `start_ns` for `duration_ms` (Unix ns / ms).
    Run { start_ns: u64, duration_ms: u64 },
    /// At `at_ns` every session closes, then reconnects after a random delay in 0..`window_ms`,
    /// retrying until `deadline_ns`.
    Reconnect { at_ns: u64, window_ms: u64, close_frame: bool, deadline_ns: u64 },
    /// Stop, report [`Ev::Final`] and exit.
    Finish,
}

/// Worker → parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Ev {
    /// Once a second, for second `k` after t0.
    Tick(Tick),
    /// Every session of an `Open` (or a `Reconnect`) finished its attempt.
    Opened(Opened),
    /// The `Run` ended (traffic stopped; deliveries may still arrive).
    RunDone { worker: u32 },
    /// Everything, after `Finish`.
    Final(Box<Final>),
    /// The worker failed.
    Error { worker: u32, message: String },
}

/// Per-second counters of one worker (deltas, except `conns` and `opened`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Worker.
    pub worker: u32,
    /// Seconds after t0 at the end of the interval.
    pub k: i64,
    /// Sessions open now.
    pub conns: u64,
    /// Sessions that reached `synced` since the last Open/Reconnect began.
    pub opened: u64,
    /// Sends written.
    pub sent: u64,
    /// Acks received.
    pub acked: u64,
    /// Messages received (first copy of each).
    pub delivered: u64,
    /// Error frames received.
    pub errors: u64,
    /// Delivery latency histogram of this second (V2, base64), if any delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hist: Option<String>,
}

/// Outcome of an Open or Reconnect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Opened {
    /// Worker.
    pub worker: u32,
    /// Sessions that reached `synced`.
    pub ok: u64,
    /// Sessions that failed.
    pub failed: u64,
    /// Earliest connect start (Unix ns).
    pub first_ns: u64,
    /// Latest `synced` (Unix ns).
    pub last_ns: u64,
    /// Connect attempts (reconnect: retries included).
    pub attempts: u64,
    /// Failures by reason.
    pub errors: BTreeMap<String, u64>,
}

/// Sender-side counters of one stream.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SendAgg {
    /// Sends written.
    pub sent: u64,
    /// Acked.
    pub acked: u64,
    /// Answered with an error frame.
    pub errors: u64,
}

/// Receiver-side counters of one stream, summed over this worker's recipients.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct RecvAgg {
    /// Recipients that stayed connected the whole time.
    pub recipients_ok: u64,
    /// Distinct messages those received.
    pub distinct_ok: u64,
    /// Recipients that failed to connect or dropped (not counted for loss).
    pub recipients_excluded: u64,
}

/// Everything a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Final {
    /// Worker.
    pub worker: u32,
    /// Per stream, as sender.
    pub send: Vec<(StreamKey, SendAgg)>,
    /// Per stream, as recipients.
    pub recv: Vec<(StreamKey, RecvAgg)>,
    /// Copies of a sequence number already received.
    pub duplicates: u64,
    /// Messages that arrived after a higher sequence number of their stream.
    pub out_of_order: u64,
    /// Sends that came due while their sender's window was full (stamped with the schedule).
    pub held_back: u64,
    /// Messages from streams the session did not expect.
    pub unexpected: u64,
    /// Messages pushed as backlog before `synced`.
    pub backlog: u64,
    /// Typing frames sent / received.
    pub typing_sent: u64,
    /// Typing frames received.
    pub typing_rx: u64,
    /// Read receipts sent.
    pub receipts_sent: u64,
    /// Receipt frames received.
    pub receipts_rx: u64,
    /// Error frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Connections lost after `synced` (server close or EOF), by close code or "eof".
    pub drops: BTreeMap<String, u64>,
    /// Delivery latency, µs (V2 base64).
    pub hist_delivery: String,
    /// Send → ack, µs.
    pub hist_ack: String,
    /// Connect start → `synced`, µs (Open).
    pub hist_connect: String,
    /// Connect start → `synced`, µs (Reconnect).
    pub hist_reconnect: String,
}
