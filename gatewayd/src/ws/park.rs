//! Parked connections: an idle WebSocket session without a task or a tokio registration.
//!
//! A session with nothing to read or write for `ws.park_after` — no partial frame, no
//! fragments, an empty outbox — gives its socket back to this module and its task ends: the
//! task and tokio's per-socket registration are freed, and what remains of the session is
//! its [`ConnShared`] (in the registry, so deliveries still find it) plus one entry here. One
//! thread watches every parked socket in a single epoll set (`mio`). The session resumes, in
//! a fresh task, when its socket becomes readable (a frame, a pong, a close, EOF) or when
//! something is queued for it ([`ConnShared::push`] and [`ConnShared::close`] call
//! [`unpark`]), so nothing is delayed beyond a task spawn.
//!
//! Parking is what makes an idle session cost a few hundred bytes instead of a few KB (see
//! README "Measured"); it costs two `epoll_ctl` calls and a task spawn each time a parked
//! session wakes up.

use super::conn;
use super::outbox::ConnShared;
use crate::state::AppState;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock, Weak};
use switchboard_core::metrics::names;

/// `ws.park_after` at or beyond this never parks.
pub const NEVER: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Whether sessions park at all under `cfg`.
pub fn enabled(cfg: &switchboard_core::config::Config) -> bool {
    cfg.ws.park_after < NEVER
}

/// The token of the thread's own waker.
const WAKE: Token = Token(usize::MAX);

/// One parked session: 16 bytes (24 with its key), as there is one per idle connection. Its
/// gateway is an index into [`Lot::homes`] rather than its state and runtime handle, which
/// took 24 bytes more per entry: at 18,000 parked sessions the map's table (32,768 buckets)
/// shrank from 1.6 MB to 0.8 MB, ~44 B per session.
struct Parked {
    stream: std::net::TcpStream,
    shared: Arc<ConnShared>,
    home: u32,
}

/// A gateway with parked sessions. Weak: the lot must not keep a stopped gateway (a test's)
/// alive; its runtime handle is dropped with it. A gateway's sessions all run on the runtime
/// that served them first, so one handle per gateway is enough.
struct Home {
    state: Weak<AppState>,
    rt: Option<tokio::runtime::Handle>,
}

/// The process's parking lot: one epoll thread for every gateway in the process.
struct Lot {
    registry: mio::Registry,
    waker: mio::Waker,
    /// Parked sessions by token (the address of their `ConnShared`, unique while parked).
    parked: Mutex<HashMap<usize, Parked>>,
    /// Every gateway that ever parked a session, by [`Parked::home`]; never reordered (a few
    /// per process; one per test gateway in a test binary).
    homes: Mutex<Vec<Home>>,
    /// Tokens to resume, set by [`unpark`] from any thread.
    woken: Mutex<Vec<usize>>,
}

fn lot() -> Option<&'static Lot> {
    static LOT: OnceLock<Option<Lot>> = OnceLock::new();
    LOT.get_or_init(|| match start() {
        Ok(lot) => Some(lot),
        Err(error) => {
            tracing::error!(%error, "cannot start the parking thread; sessions stay unparked");
            None
        }
    })
    .as_ref()
}

fn start() -> std::io::Result<Lot> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = mio::Waker::new(poll.registry(), WAKE)?;
    std::thread::Builder::new().name("sb-parking".into()).spawn(move || watch(poll))?;
    Ok(Lot {
        registry,
        waker,
        parked: Mutex::new(HashMap::new()),
        homes: Mutex::new(Vec::new()),
        woken: Mutex::new(Vec::new()),
    })
}

fn token_of(shared: &ConnShared) -> usize {
    std::ptr::from_ref(shared) as usize
}

/// The thread: resumes every session whose socket turns readable or that was woken.
fn watch(mut poll: Poll) {
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(%error, "parking poll failed; the thread stops");
            return;
        }
        let Some(lot) = lot() else { return };
        for ev in events.iter() {
            if ev.token() == WAKE {
                let woken = std::mem::take(&mut *lot.woken.lock());
                woken.into_iter().for_each(|t| lot.resume(t));
            } else {
                lot.resume(ev.token().0);
            }
        }
    }
}

impl Lot {
    /// The index of `state`'s [`Home`], added on its first park (with the current runtime).
    /// A new gateway also lets go of the runtime handles of those that are gone (only tests
    /// start more than one, one after another).
    fn home_of(&self, state: &Arc<AppState>) -> u32 {
        let mut homes = self.homes.lock();
        if let Some(i) = find_home(&homes, state) {
            return i;
        }
        for h in homes.iter_mut().filter(|h| h.state.strong_count() == 0) {
            h.rt = None;
        }
        homes.push(Home { state: Arc::downgrade(state), rt: Some(tokio::runtime::Handle::current()) });
        (homes.len() - 1) as u32
    }

    /// The index of `state`'s [`Home`], if it ever parked a session.
    fn existing_home(&self, state: &Arc<AppState>) -> Option<u32> {
        find_home(&self.homes.lock(), state)
    }

    /// The gateway and runtime of a home, if the gateway still runs.
    fn home(&self, home: u32) -> Option<(Arc<AppState>, tokio::runtime::Handle)> {
        let homes = self.homes.lock();
        let h = homes.get(home as usize)?;
        Some((h.state.upgrade()?, h.rt.clone()?))
    }

    /// Takes a session out and starts its task again; nothing if it was already resumed.
    fn resume(&self, token: usize) {
        // The session leaves the map and joins its gateway's task tracker under one lock:
        // `resume_all` (shutdown) takes the same lock, so a session this thread is resuming
        // meanwhile is already tracked when shutdown waits for the tracker. Before, a session
        // woken by its close frame could be between the two while the tracker, empty, let the
        // gateway exit: the client lost its 1001 (seen once in CI, `binary.rs`
        // `sigterm_closes_sockets_with_1001_and_exits_cleanly`; an in-process test cannot see
        // it, as its runtime outlives the gateway and still runs the late task).
        let mut parked = self.parked.lock();
        let Some(p) = parked.remove(&token) else { return };
        let _ = self.registry.deregister(&mut SourceFd(&p.stream.as_raw_fd()));
        metrics::gauge!(names::GATEWAY_CONNECTIONS_PARKED).decrement(1.0);
        let Parked { stream, shared, home } = p;
        shared.clear_parked();
        // Its gateway is gone (a stopped test gateway): the socket closes as it drops.
        let Some((state, rt)) = self.home(home) else { return };
        let tracker = state.tracker.clone();
        let task = tracker.track_future(async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(io) => conn::resume(io, state, shared).await,
                Err(error) => {
                    tracing::warn!(%error, "cannot resume a parked session");
                    conn::gone(&state, &shared).await;
                }
            }
        });
        drop(parked);
        rt.spawn(task);
    }
}

/// Where `state` is in `homes`. A `Weak` keeps its allocation, so no later state can share a
/// listed one's address.
fn find_home(homes: &[Home], state: &Arc<AppState>) -> Option<u32> {
    homes.iter().position(|h| std::ptr::eq(h.state.as_ptr(), Arc::as_ptr(state))).map(|i| i as u32)
}

/// Parks a session: `stream` is watched here and `shared` resumes it when woken. Called by
/// the session's task with the outbox locked and found empty (see `ConnShared::park_with`),
/// so no frame can slip in unnoticed. On error the stream is handed back.
pub fn park(stream: std::net::TcpStream, shared: Arc<ConnShared>, state: Arc<AppState>) -> Result<(), std::net::TcpStream> {
    let Some(lot) = lot() else { return Err(stream) };
    let token = token_of(&shared);
    let home = lot.home_of(&state);
    // Registered and listed under one lock: the socket may turn readable at once, and the
    // parking thread must then find it (its `resume` takes this lock), or that edge is lost
    // and the frame waits for the next one.
    let mut parked = lot.parked.lock();
    if let Err(error) = lot.registry.register(&mut SourceFd(&stream.as_raw_fd()), Token(token), Interest::READABLE) {
        tracing::warn!(%error, "cannot park a session");
        return Err(stream);
    }
    parked.insert(token, Parked { stream, shared, home });
    drop(parked);
    metrics::gauge!(names::GATEWAY_CONNECTIONS_PARKED).increment(1.0);
    Ok(())
}

/// Resumes a parked session because something was queued for it (from any thread).
pub fn unpark(shared: &ConnShared) {
    let Some(lot) = lot() else { return };
    lot.woken.lock().push(token_of(shared));
    if let Err(error) = lot.waker.wake() {
        tracing::error!(%error, "cannot wake the parking thread");
    }
}

/// Resumes every session of `state` that is parked, now, from this (runtime) thread: at
/// shutdown, so each gets its close frame before the gateway stops.
pub fn resume_all(state: &Arc<AppState>) {
    let Some(lot) = lot() else { return };
    let Some(home) = lot.existing_home(state) else { return };
    let tokens: Vec<usize> = lot.parked.lock().iter().filter(|(_, p)| p.home == home).map(|(t, _)| *t).collect();
    tokens.into_iter().for_each(|t| lot.resume(t));
}
