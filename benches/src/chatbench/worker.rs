//! `chatbench worker`: owns a share of the sessions, on one thread. Commands arrive on stdin,
//! events leave on stdout (JSON lines); a tick goes out every second aligned to the parent's t0.

use crate::proto::{Cmd, Ev, Final, Opened, RecvAgg, SendAgg, SessionSpec, StreamKey, Tick, Traffic};
use crate::session::{self, RecvState};
use crate::stats::{self, instant_at, unix_ns};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, Instant};

/// What every session should be doing.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Connected, quiet.
    Hold,
    /// Send from `start` until `end` (`start_ns` is `start` as Unix ns).
    Run { start: Instant, end: Instant, start_ns: u64 },
    /// Close at `at`, reconnect after a random delay within `window`, give up at `deadline`.
    Reconnect { at: Instant, window: Duration, close_frame: bool, deadline: Instant },
    /// Stop.
    Finish,
}

/// Per-session status.
#[derive(Default, Clone, Copy)]
pub struct SessStatus {
    /// Reached `synced` in the Open phase.
    pub connected: bool,
    /// Times the connection was lost.
    pub drops: u32,
}

/// Mutable worker state, shared by the sessions (one thread: `RefCell`).
pub struct State {
    pub tick: Tick,
    pub tick_hist: Histogram<u64>,
    pub conns: u64,
    pub opened: u64,
    pub pending: u64,
    pub open_ok: u64,
    pub open_failed: u64,
    pub attempts: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub open_errors: BTreeMap<String, u64>,
    pub hist_delivery: Histogram<u64>,
    pub hist_ack: Histogram<u64>,
    pub hist_connect: Histogram<u64>,
    pub hist_reconnect: Histogram<u64>,
    pub send: HashMap<StreamKey, SendAgg>,
    pub recv: HashMap<(u32, StreamKey), RecvState>,
    pub sess: Vec<SessStatus>,
    pub duplicates: u64,
    pub held_back: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub backlog: u64,
    pub typing_sent: u64,
    pub typing_rx: u64,
    pub receipts_sent: u64,
    pub receipts_rx: u64,
    pub errors: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
}

/// Everything the sessions of this worker share.
pub struct Shared {
    pub worker: u32,
    pub traffic: Traffic,
    pub sessions: Vec<SessionSpec>,
    pub phase: watch::Sender<Phase>,
    pub st: RefCell<State>,
}

/// Writes one event line to stdout.
fn emit(ev: &Ev) {
    let mut line = serde_json::to_string(ev).expect("events serialize");
    line.push('\n');
    let mut out = std::io::stdout().lock();
    // A closed stdout means the parent is gone; the stdin EOF will end us.
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
}

/// Entry point of `chatbench worker`.
pub fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, run());
    if let Err(e) = &r {
        emit(&Ev::Error { worker: u32::MAX, message: format!("{e:#}") });
    }
    r
}

async fn run() -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Cmd>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Cmd>(&line) {
                Ok(cmd) => {
                    if tx.blocking_send(cmd).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    emit(&Ev::Error { worker: u32::MAX, message: format!("bad command: {e}") });
                    break;
                }
            }
        }
    });
    let Some(Cmd::Setup { worker, t0_ns, traffic, sessions }) = rx.recv().await else {
        bail!("expected setup as the first command");
    };
    let n = sessions.len();
    let (phase, _) = watch::channel(Phase::Hold);
    let sh = Rc::new(Shared {
        worker,
        traffic,
        sessions,
        phase,
        st: RefCell::new(State {
            tick: Tick { worker, ..Tick::default() },
            tick_hist: stats::hist(),
            conns: 0,
            opened: 0,
            pending: 0,
            open_ok: 0,
            open_failed: 0,
            attempts: 0,
            first_ns: u64::MAX,
            last_ns: 0,
            open_errors: BTreeMap::new(),
            hist_delivery: stats::hist(),
            hist_ack: stats::hist(),
            hist_connect: stats::hist(),
            hist_reconnect: stats::hist(),
            send: HashMap::new(),
            recv: HashMap::new(),
            sess: vec![SessStatus::default(); n],
            duplicates: 0,
            held_back: 0,
            out_of_order: 0,
            unexpected: 0,
            backlog: 0,
            typing_sent: 0,
            typing_rx: 0,
            receipts_sent: 0,
            receipts_rx: 0,
            errors: BTreeMap::new(),
            drops: BTreeMap::new(),
        }),
    });
    tokio::task::spawn_local(ticker(sh.clone(), t0_ns));
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Setup { .. } => bail!("setup sent twice"),
            Cmd::Open { rate, concurrency } => {
                reset_open(&sh, n as u64, u64::MAX);
                tokio::task::spawn_local(open_all(sh.clone(), rate, concurrency));
                tokio::task::spawn_local(report_opened(sh.clone()));
            }
            Cmd::Run { start_ns, duration_ms } => {
                let start = instant_at(start_ns);
                let end = start + Duration::from_millis(duration_ms);
                sh.phase.send_replace(Phase::Run { start, end, start_ns });
                tokio::task::spawn_local(async move {
                    sleep_until(end).await;
                    emit(&Ev::RunDone { worker });
                });
            }
            Cmd::Reconnect { at_ns, window_ms, close_frame, deadline_ns } => {
                let connected = sh.st.borrow().conns;
                reset_open(&sh, connected, at_ns);
                sh.phase.send_replace(Phase::Reconnect {
                    at: instant_at(at_ns),
                    window: Duration::from_millis(window_ms),
                    close_frame,
                    deadline: instant_at(deadline_ns),
                });
                tokio::task::spawn_local(report_opened(sh.clone()));
            }
            Cmd::Finish => {
                sh.phase.send_replace(Phase::Finish);
                emit(&Ev::Final(Box::new(final_report(&sh))));
                return Ok(());
            }
        }
    }
    Ok(())
}

fn reset_open(sh: &Shared, pending: u64, first_ns: u64) {
    let mut st = sh.st.borrow_mut();
    st.pending = pending;
    st.open_ok = 0;
    st.open_failed = 0;
    st.attempts = 0;
    st.opened = 0;
    st.first_ns = first_ns;
    st.last_ns = 0;
    st.open_errors.clear();
}

/// Starts every session, paced at `rate`/s, at most `concurrency` handshakes at once.
async fn open_all(sh: Rc<Shared>, rate: f64, concurrency: usize) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let begin = Instant::now();
    for idx in 0..sh.sessions.len() {
        if rate > 0.0 {
            sleep_until(begin + Duration::from_secs_f64(idx as f64 / rate)).await;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else { return };
        tokio::task::spawn_local(session::session(sh.clone(), idx, permit));
    }
}

/// Reports [`Ev::Opened`] once no attempt is pending.
async fn report_opened(sh: Rc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let st = sh.st.borrow();
        if st.pending == 0 {
            emit(&Ev::Opened(Opened {
                worker: sh.worker,
                ok: st.open_ok,
                failed: st.open_failed,
                first_ns: if st.first_ns == u64::MAX { 0 } else { st.first_ns },
                last_ns: st.last_ns,
                attempts: st.attempts,
                errors: st.open_errors.clone(),
            }));
            return;
        }
    }
}

/// Emits a [`Tick`] at t0 + k seconds, k = 1, 2, ...
async fn ticker(sh: Rc<Shared>, t0_ns: u64) {
    let mut k: i64 = ((unix_ns().saturating_sub(t0_ns)) / 1_000_000_000) as i64 + 1;
    loop {
        sleep_until(instant_at(t0_ns + k as u64 * 1_000_000_000)).await;
        let tick = {
            let mut st = sh.st.borrow_mut();
            let hist = (!st.tick_hist.is_empty()).then(|| stats::encode(&st.tick_hist));
            st.tick_hist.reset();
            let t = Tick { worker: sh.worker, k, conns: st.conns, opened: st.opened, hist, ..st.tick.clone() };
            st.tick = Tick { worker: sh.worker, ..Tick::default() };
            t
        };
        emit(&Ev::Tick(tick));
        k += 1;
    }
}

fn final_report(sh: &Shared) -> Final {
    let st = sh.st.borrow();
    let mut recv: BTreeMap<StreamKey, RecvAgg> = BTreeMap::new();
    for (idx, spec) in sh.sessions.iter().enumerate() {
        let s = st.sess[idx];
        let ok = s.connected && s.drops == 0;
        for key in &spec.expect {
            let agg = recv.entry(*key).or_default();
            if ok {
                agg.recipients_ok += 1;
                agg.distinct_ok += st.recv.get(&(idx as u32, *key)).map_or(0, |r| r.distinct);
            } else {
                agg.recipients_excluded += 1;
            }
        }
    }
    let mut send: Vec<_> = st.send.iter().map(|(k, v)| (*k, *v)).collect();
    send.sort_by_key(|(k, _)| *k);
    Final {
        worker: sh.worker,
        send,
        recv: recv.into_iter().collect(),
        duplicates: st.duplicates,
        held_back: st.held_back,
        out_of_order: st.out_of_order,
        unexpected: st.unexpected,
        backlog: st.backlog,
        typing_sent: st.typing_sent,
        typing_rx: st.typing_rx,
        receipts_sent: st.receipts_sent,
        receipts_rx: st.receipts_rx,
        errors: st.errors.clone(),
        drops: st.drops.clone(),
        hist_delivery: stats::encode(&st.hist_delivery),
        hist_ack: stats::encode(&st.hist_ack),
        hist_connect: stats::encode(&st.hist_connect),
        hist_reconnect: stats::encode(&st.hist_reconnect),
    }
}

/// Parses one worker event line (parent side).
pub fn parse_event(line: &str) -> Result<Ev> {
    serde_json::from_str(line).with_context(|| format!("worker said: {}", line.chars().take(200).collect::<String>()))
}
