//! One simulated client: opens its WebSocket, then reads, sends on its schedule, checks what
//! arrives (latency from the send time in the text, per-stream sequence), and follows the
//! worker's phases (run, reconnect storm, finish).

use crate::client::{self, Incoming, Ws};
use crate::proto::{SendSpec, StreamKey};
use crate::stats::{self, unix_ns};
use crate::worker::{Phase, Shared};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, timeout, Instant};

/// Longest a connect + upgrade + initial sync may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields of a server frame the harness looks at.
#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(rename = "messageId")]
    message_id: Option<i64>,
    #[serde(rename = "senderId")]
    sender_id: Option<i64>,
    #[serde(rename = "receiverId")]
    receiver_id: Option<i64>,
    #[serde(rename = "groupId")]
    group_id: Option<i64>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "clientMsgId", borrow)]
    client_msg_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

/// Sequence bookkeeping of one stream at one recipient.
#[derive(Default)]
pub struct RecvState {
    seen: Vec<u64>,
    max: Option<u64>,
    /// Distinct sequence numbers received.
    pub distinct: u64,
}

/// How a sequence number compares with what a recipient had.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// New and above every earlier one (gaps allowed: a refused send leaves one).
    InOrder,
    /// New, but a higher one arrived before it.
    Late,
    /// Already received.
    Duplicate,
}

impl RecvState {
    /// Records `seq`.
    pub fn observe(&mut self, seq: u64) -> Seen {
        let word = (seq / 64) as usize;
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            return Seen::Duplicate;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        let late = self.max.is_some_and(|m| seq < m);
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        if late {
            Seen::Late
        } else {
            Seen::InOrder
        }
    }
}

/// Tiny xorshift64* generator (no need for a cryptographic one).
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }
    /// Uniform index below `n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.f64() * n as f64) as usize).min(n - 1)
    }
}

/// Why [`drive`] returned.
enum Outcome {
    Finish,
    Dropped(String),
    Reconnect { at: Instant, window: Duration, close_frame: bool, deadline: Instant },
}

/// Per-session sending state.
struct Sender {
    spec: SendSpec,
    /// The sending user.
    user: i64,
    /// Its gateway's index.
    gw: u16,
    /// Sends of this session so far (its `clientMsgId`s are `c0`, `c1`, ...).
    n: u64,
    /// Next sequence number per stream.
    seq: HashMap<StreamKey, u64>,
    /// clientMsgId number → (write time, stream).
    inflight: HashMap<u64, (Instant, StreamKey)>,
    /// Steady: sends scheduled so far this run.
    steady_i: u64,
    /// Steady: this sender's offset within one period, in periods (uniform in [0, 1)): without
    /// it every sender fires at the same instants and "2,000 msg/s" arrives as bursts.
    phase: f64,
    /// Mixed: when the next typing frame or message is due.
    next_at: Option<Instant>,
    /// Mixed: a typing frame went out for this stream; the message follows at `next_at`.
    pending: Option<StreamKey>,
    /// A send came due while the window was full.
    blocked: bool,
    rng: Rng,
    text: String,
    frame: String,
}

/// Runs session `idx` of the worker: open (holding `permit` until `synced`), then drive it.
pub async fn session(sh: Rc<Shared>, idx: usize, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let start_ns = unix_ns();
    let opened = timeout(OPEN_TIMEOUT, open(&sh, idx)).await;
    drop(permit);
    let mut ws = {
        let mut st = sh.st.borrow_mut();
        st.attempts += 1;
        st.first_ns = st.first_ns.min(start_ns);
        st.pending = st.pending.saturating_sub(1);
        match opened {
            Ok(Ok(ws)) => {
                st.open_ok += 1;
                st.opened += 1;
                st.conns += 1;
                st.last_ns = st.last_ns.max(unix_ns());
                st.sess[idx].connected = true;
                stats::record(&mut st.hist_connect, started.elapsed().as_micros() as i64);
                ws
            }
            Ok(Err(e)) => {
                st.open_failed += 1;
                *st.open_errors.entry(reason(&e)).or_default() += 1;
                return;
            }
            Err(_) => {
                st.open_failed += 1;
                *st.open_errors.entry("timeout".into()).or_default() += 1;
                return;
            }
        }
    };
    let spec = &sh.sessions[idx];
    let mut sender = spec.send.clone().map(|send| Sender {
        spec: send,
        user: spec.user,
        gw: spec.gw,
        n: 0,
        seq: HashMap::new(),
        inflight: HashMap::new(),
        steady_i: 0,
        phase: Rng::new(u64::from(spec_seed(idx, &sh)) ^ 0x5EED).f64(),
        next_at: None,
        pending: None,
        blocked: false,
        rng: Rng::new(u64::from(spec_seed(idx, &sh))),
        text: String::with_capacity(256),
        frame: String::with_capacity(512),
    });
    let mut rng = Rng::new(u64::from(spec_seed(idx, &sh)) ^ 0xABCD);
    // The reconnect storm this session already went through (the phase stays set until the next).
    let mut done_storm: Option<Instant> = None;
    loop {
        match drive(&sh, idx, &mut ws, &mut sender, &mut rng, done_storm).await {
            Outcome::Finish => return,
            Outcome::Dropped(why) => {
                let mut st = sh.st.borrow_mut();
                st.conns = st.conns.saturating_sub(1);
                st.sess[idx].connected = false;
                st.sess[idx].drops += 1;
                *st.drops.entry(why).or_default() += 1;
                return;
            }
            Outcome::Reconnect { at, window, close_frame, deadline } => {
                done_storm = Some(at);
                sleep_until(at).await;
                if close_frame {
                    ws.close().await;
                } else {
                    drop(ws);
                }
                {
                    let mut st = sh.st.borrow_mut();
                    st.conns = st.conns.saturating_sub(1);
                }
                let delay = window.mul_f64(rng.f64());
                sleep_until(at + delay).await;
                match reconnect(&sh, idx, deadline).await {
                    Some(w) => ws = w,
                    None => {
                        sh.st.borrow_mut().sess[idx].connected = false;
                        return;
                    }
                }
            }
        }
    }
}

fn spec_seed(idx: usize, sh: &Shared) -> u32 {
    (idx as u32).wrapping_mul(2_654_435_761) ^ sh.worker.wrapping_mul(40_503) ^ 0x5bd1_e995
}

/// Retries until `deadline`; records the outcome in the reconnect counters.
async fn reconnect(sh: &Rc<Shared>, idx: usize, deadline: Instant) -> Option<Ws> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt_ns = unix_ns();
        let left = deadline.saturating_duration_since(Instant::now());
        let r = timeout(left.min(OPEN_TIMEOUT), open(sh, idx)).await;
        let give_up = {
            let mut st = sh.st.borrow_mut();
            st.attempts += 1;
            st.first_ns = st.first_ns.min(attempt_ns);
            let err = match r {
                Ok(Ok(ws)) => {
                    st.pending = st.pending.saturating_sub(1);
                    st.open_ok += 1;
                    st.opened += 1;
                    st.conns += 1;
                    st.last_ns = st.last_ns.max(unix_ns());
                    stats::record(&mut st.hist_reconnect, started.elapsed().as_micros() as i64);
                    return Some(ws);
                }
                Ok(Err(e)) => reason(&e),
                Err(_) => "timeout".to_owned(),
            };
            *st.open_errors.entry(err).or_default() += 1;
            let give_up = Instant::now() + backoff >= deadline;
            if give_up {
                st.pending = st.pending.saturating_sub(1);
                st.open_failed += 1;
            }
            give_up
        };
        if give_up {
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// A short, countable form of an error.
fn reason(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(80).collect()
}

/// Connects and reads until `synced`, counting backlog messages.
async fn open(sh: &Shared, idx: usize) -> Result<Ws> {
    let spec = &sh.sessions[idx];
    let seed = spec.id.wrapping_mul(2_246_822_519) ^ (unix_ns() as u32);
    let mut ws = client::connect(spec.target, spec.source, &spec.token, seed).await?;
    loop {
        while let Some(m) = ws.next()? {
            match m {
                Incoming::Closed(code) => bail!("closed before synced ({code:?})"),
                Incoming::Text(t) => {
                    let f: In<'_> = serde_json::from_slice(&t).context("frame before synced")?;
                    match &*f.ty {
                        "synced" => {
                            ws.flush().await?;
                            return Ok(ws);
                        }
                        "message" => sh.st.borrow_mut().backlog += 1,
                        _ => {}
                    }
                }
            }
        }
        if ws.pending() {
            ws.flush().await?;
        }
        if ws.fill().await? == 0 {
            bail!("eof before synced");
        }
    }
}

/// The connected life of a session, until the phase changes it or the connection ends.
async fn drive(sh: &Rc<Shared>, idx: usize, ws: &mut Ws, sender: &mut Option<Sender>, rng: &mut Rng, done_storm: Option<Instant>) -> Outcome {
    let mut phase_rx = sh.phase.subscribe();
    loop {
        let phase = phase_rx.borrow_and_update().clone();
        let due = match (&phase, sender.as_mut()) {
            (Phase::Finish, _) => return Outcome::Finish,
            (Phase::Reconnect { at, window, close_frame, deadline }, _) if done_storm != Some(*at) => {
                return Outcome::Reconnect { at: *at, window: *window, close_frame: *close_frame, deadline: *deadline }
            }
            (Phase::Run { start, end, .. }, Some(s)) => s.due(sh, *start, *end),
            _ => None,
        };
        tokio::select! {
            r = ws.fill() => match r {
                Ok(0) => return Outcome::Dropped("eof".into()),
                Err(e) => return Outcome::Dropped(reason(&e)),
                Ok(_) => {
                    if let Err(why) = handle_incoming(sh, idx, ws, sender, rng) {
                        return Outcome::Dropped(why);
                    }
                }
            },
            _ = phase_rx.changed() => {}
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let (Phase::Run { start, end, start_ns }, Some(s)) = (&phase, sender.as_mut()) {
                    s.fire(sh, ws, *start, *end, *start_ns);
                }
            }
        }
        if ws.pending() {
            if let Err(e) = ws.flush().await {
                return Outcome::Dropped(reason(&e));
            }
        }
    }
}

/// Handles every complete frame buffered; `Err` with a reason if the server closed.
fn handle_incoming(sh: &Shared, idx: usize, ws: &mut Ws, sender: &mut Option<Sender>, rng: &mut Rng) -> Result<(), String> {
    loop {
        let text = match ws.next() {
            Ok(Some(Incoming::Text(t))) => t,
            Ok(Some(Incoming::Closed(code))) => return Err(code.map_or("close".into(), |c| format!("close {c}"))),
            Ok(None) => return Ok(()),
            Err(e) => return Err(reason(&e)),
        };
        let Ok(f) = serde_json::from_slice::<In<'_>>(&text) else {
            *sh.st.borrow_mut().errors.entry("unparsable frame".into()).or_default() += 1;
            continue;
        };
        match &*f.ty {
            "message" => on_message(sh, idx, ws, &f, rng),
            "ack" => {
                let Some(s) = sender.as_mut() else { continue };
                if let Some((at, key)) = f.client_msg_id.as_deref().and_then(cmid).and_then(|n| s.inflight.remove(&n)) {
                    let mut st = sh.st.borrow_mut();
                    st.tick.acked += 1;
                    st.send.entry(key).or_default().acked += 1;
                    stats::record(&mut st.hist_ack, at.elapsed().as_micros() as i64);
                }
            }
            "error" => {
                let mut st = sh.st.borrow_mut();
                st.tick.errors += 1;
                *st.errors.entry(f.code.as_deref().unwrap_or("?").to_owned()).or_default() += 1;
                if let Some(s) = sender.as_mut() {
                    if let Some((_, key)) = f.client_msg_id.as_deref().and_then(cmid).and_then(|n| s.inflight.remove(&n)) {
                        st.send.entry(key).or_default().errors += 1;
                    }
                }
            }
            "typing" => sh.st.borrow_mut().typing_rx += 1,
            "receipt" => sh.st.borrow_mut().receipts_rx += 1,
            _ => {}
        }
    }
}

fn cmid(s: &str) -> Option<u64> {
    s.strip_prefix('c')?.parse().ok()
}

/// A `message` frame: latency from the text's send time, sequence checks, maybe a read receipt.
fn on_message(sh: &Shared, idx: usize, ws: &mut Ws, f: &In<'_>, rng: &mut Rng) {
    let now = unix_ns();
    let mut st = sh.st.borrow_mut();
    let parsed = (|| {
        let from = f.sender_id?;
        let (to, group) = match (f.group_id, f.receiver_id) {
            (Some(g), _) => (g, true),
            (None, Some(r)) => (r, false),
            _ => return None,
        };
        let mut parts = f.message.as_deref()?.splitn(4, ':');
        let seq: u64 = parts.next()?.parse().ok()?;
        let _sender: i64 = parts.next()?.parse().ok()?;
        let sent_ns: u64 = parts.next()?.parse().ok()?;
        Some((StreamKey { gw: sh.sessions[idx].gw, from, to, group }, seq, sent_ns))
    })();
    let Some((key, seq, sent_ns)) = parsed else {
        st.unexpected += 1;
        return;
    };
    if !sh.sessions[idx].expect.contains(&key) {
        st.unexpected += 1;
    }
    match st.recv.entry((idx as u32, key)).or_default().observe(seq) {
        Seen::Duplicate => {
            st.duplicates += 1;
            return;
        }
        Seen::Late => st.out_of_order += 1,
        Seen::InOrder => {}
    }
    let us = (now as i64 - sent_ns as i64) / 1000;
    stats::record(&mut st.hist_delivery, us);
    stats::record(&mut st.tick_hist, us);
    st.tick.delivered += 1;
    if sh.traffic.read_receipt_prob > 0.0 && rng.f64() < sh.traffic.read_receipt_prob {
        if let Some(id) = f.message_id {
            ws.text(format!("{{\"type\":\"receipt\",\"messageId\":{id},\"status\":\"read\"}}").as_bytes());
            st.receipts_sent += 1;
        }
    }
}

impl Sender {
    /// The scheduled time of the next send (or typing); None at "max" or before the first.
    fn next_intended(&mut self, sh: &Shared, start: Instant) -> Option<Instant> {
        match &self.spec {
            SendSpec::Steady { rate, .. } if *rate <= 0.0 => None,
            SendSpec::Steady { rate, .. } => Some(start + Duration::from_secs_f64((self.steady_i as f64 + self.phase) / rate)),
            SendSpec::Mixed { .. } => Some(*self.next_at.get_or_insert_with(|| {
                let mean = 1.0 / sh.traffic.mixed_rate.max(1e-9);
                start + Duration::from_secs_f64(self.rng.exp(mean))
            })),
        }
    }

    /// When the next send (or typing) is due, or None if not now (window full, run over).
    fn due(&mut self, sh: &Shared, start: Instant, end: Instant) -> Option<Instant> {
        let intended = self.next_intended(sh, start);
        if self.inflight.len() >= sh.traffic.window {
            // A send that is due but cannot go: it will be stamped with its scheduled time.
            if intended.is_some_and(|at| at <= Instant::now()) {
                self.blocked = true;
            }
            return None;
        }
        let at = intended.unwrap_or_else(|| Instant::now().max(start));
        (at < end).then_some(at)
    }

    /// The send time written into a message: the write time, or the scheduled time if a full
    /// window held the message back (so backpressure shows as latency: no coordinated omission).
    fn stamp(&self, intended: Option<Instant>, start: Instant, start_ns: u64) -> u64 {
        match intended {
            Some(at) if self.blocked => start_ns + at.saturating_duration_since(start).as_nanos() as u64,
            _ => unix_ns(),
        }
    }

    /// Sends whatever is due now (several if the schedule is behind), within the window.
    fn fire(&mut self, sh: &Shared, ws: &mut Ws, start: Instant, end: Instant, start_ns: u64) {
        let now = Instant::now();
        let was_blocked = self.blocked;
        let n0 = self.n;
        match self.spec.clone() {
            SendSpec::Steady { to, group, rate } => {
                let key = StreamKey { gw: self.gw, from: self.user, to, group };
                while self.inflight.len() < sh.traffic.window {
                    let intended = if rate <= 0.0 {
                        if now >= end {
                            break;
                        }
                        None
                    } else {
                        let at = start + Duration::from_secs_f64((self.steady_i as f64 + self.phase) / rate);
                        if at > now || at >= end {
                            break;
                        }
                        Some(at)
                    };
                    let sent_ns = self.stamp(intended, start, start_ns);
                    self.steady_i += 1;
                    self.send(sh, ws, key, sent_ns);
                }
            }
            SendSpec::Mixed { peers, group } => {
                let from = self.user;
                let intended = self.next_at;
                if let Some(key) = self.pending.take() {
                    let sent_ns = self.stamp(intended, start, start_ns);
                    self.send(sh, ws, key, sent_ns);
                } else {
                    let to_group = group.filter(|_| peers.is_empty() || self.rng.f64() < sh.traffic.group_share);
                    let key = match to_group {
                        Some(g) => StreamKey { gw: self.gw, from, to: g, group: true },
                        None if !peers.is_empty() => StreamKey { gw: self.gw, from, to: peers[self.rng.below(peers.len())], group: false },
                        None => return,
                    };
                    if sh.traffic.typing_lead_secs > 0.0 {
                        let target = if key.group { "groupId" } else { "receiverId" };
                        ws.text(format!("{{\"type\":\"typing\",\"{target}\":{}}}", key.to).as_bytes());
                        sh.st.borrow_mut().typing_sent += 1;
                        self.pending = Some(key);
                        self.next_at = Some(now + Duration::from_secs_f64(sh.traffic.typing_lead_secs));
                        return;
                    }
                    let sent_ns = self.stamp(intended, start, start_ns);
                    self.send(sh, ws, key, sent_ns);
                }
                let mean = 1.0 / sh.traffic.mixed_rate.max(1e-9);
                self.next_at = Some(now + Duration::from_secs_f64(self.rng.exp(mean)));
            }
        }
        if was_blocked {
            sh.st.borrow_mut().held_back += self.n - n0;
        }
        self.blocked = false;
    }

    /// Queues one send of `key`'s next sequence number, stamped `sent_ns`.
    fn send(&mut self, sh: &Shared, ws: &mut Ws, key: StreamKey, sent_ns: u64) {
        let seq = self.seq.entry(key).or_default();
        let s = *seq;
        *seq += 1;
        self.text.clear();
        let _ = write!(self.text, "{s}:{}:{sent_ns}:", key.from);
        while self.text.len() < sh.traffic.payload_bytes {
            self.text.push('x');
        }
        let target = if key.group { "groupId" } else { "receiverId" };
        self.frame.clear();
        let _ = write!(
            self.frame,
            "{{\"type\":\"send\",\"clientMsgId\":\"c{}\",\"{target}\":{},\"message\":\"{}\"}}",
            self.n, key.to, self.text
        );
        ws.text(self.frame.as_bytes());
        self.inflight.insert(self.n, (Instant::now(), key));
        self.n += 1;
        let mut st = sh.st.borrow_mut();
        st.tick.sent += 1;
        st.send.entry(key).or_default().sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_checks() {
        let mut r = RecvState::default();
        assert_eq!(r.observe(0), Seen::InOrder);
        assert_eq!(r.observe(2), Seen::InOrder);
        assert_eq!(r.observe(1), Seen::Late);
        assert_eq!(r.observe(2), Seen::Duplicate);
        assert_eq!(r.observe(200), Seen::InOrder);
        assert_eq!(r.observe(0), Seen::Duplicate);
        assert_eq!(r.distinct, 4);
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut g = Rng::new(7);
        let v: Vec<f64> = (0..10_000).map(|_| g.f64()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let e: f64 = (0..10_000).map(|_| g.exp(2.0)).sum::<f64>() / 10_000.0;
        assert!((e - 2.0).abs() < 0.1, "{e}");
    }
}
