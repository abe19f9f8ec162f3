//! Per-connection state shared between the connection's task and everyone who writes to it.
//!
//! It holds no buffer while idle: an empty `VecDeque` does not allocate. Frames are `Bytes`
//! shared with every other recipient. The queue is bounded in bytes: past the limit the
//! connection is closed as a slow consumer (1013) instead of buffering without end.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;
use switchboard_core::frame::close;
use switchboard_core::ids::{ConnId, DeviceId, MessageId, UserId};
use switchboard_core::metrics::names;

/// A frame waiting to be written.
#[derive(Debug, Clone)]
pub enum OutFrame {
    /// A JSON text frame; message frames carry their id so a copy the backlog already sent
    /// can be dropped.
    Text(Bytes, Option<MessageId>),
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong echoing a ping's payload.
    Pong(Bytes),
}

impl OutFrame {
    /// Bytes on the wire at most: the payload and the longest server frame header.
    pub fn wire_len(&self) -> usize {
        match self {
            Self::Text(b, _) | Self::Pong(b) => b.len() + 10,
            Self::Ping => 2,
        }
    }
}

/// Work for a session's task besides reading (see [`ConnShared::poll_work`]).
pub enum Work {
    /// Frames or a close are queued.
    Outbound,
    /// The keepalive sweep asked the idle session to park.
    Park,
}

/// What the connection task takes on each flush.
pub struct Drained {
    /// Frames in order.
    pub frames: VecDeque<OutFrame>,
    /// Set when the connection must close after these frames.
    pub close: Option<(u16, &'static str)>,
}

#[derive(Default)]
struct OutState {
    queue: VecDeque<OutFrame>,
    bytes: usize,
    close: Option<(u16, &'static str)>,
    /// The session is parked: whoever queues work resumes it.
    parked: bool,
    /// The keepalive sweep asks the idle task to park.
    park_requested: bool,
}

/// One connection as the rest of the node sees it.
pub struct ConnShared {
    /// Connection id.
    pub id: ConnId,
    /// Authenticated user.
    pub user: UserId,
    /// Device.
    pub device: DeviceId,
    limit: usize,
    state: Mutex<OutState>,
    waker: AtomicWaker,
    last_active: AtomicU32,
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Seconds since the process started: a coarse clock for idle tracking.
pub fn coarse_now() -> u32 {
    epoch().elapsed().as_secs() as u32
}

impl ConnShared {
    /// New state with an outbound limit of `limit` bytes.
    pub fn new(id: ConnId, user: UserId, device: DeviceId, limit: usize) -> Self {
        Self {
            id,
            user,
            device,
            limit,
            state: Mutex::default(),
            waker: AtomicWaker::new(),
            last_active: AtomicU32::new(coarse_now()),
        }
    }

    /// Queues a frame; false if the connection is closing (the frame is dropped).
    pub fn push(&self, frame: OutFrame) -> bool {
        let mut st = self.state.lock();
        if st.close.is_some() {
            return false;
        }
        let len = frame.wire_len();
        if st.bytes + len > self.limit {
            st.queue.clear();
            st.bytes = 0;
            st.close = Some((close::TRY_AGAIN_LATER, "slow consumer"));
            let parked = std::mem::take(&mut st.parked);
            drop(st);
            metrics::counter!(names::GATEWAY_SEND_QUEUE_DROPPED, "reason" => "slow_consumer").increment(1);
            tracing::warn!(conn_id = %self.id, "closing slow consumer");
            self.wake(parked);
            return false;
        }
        st.bytes += len;
        st.queue.push_back(frame);
        let parked = std::mem::take(&mut st.parked);
        drop(st);
        self.wake(parked);
        true
    }

    /// Wakes the task, or resumes the parked session.
    fn wake(&self, parked: bool) {
        if parked {
            super::park::unpark(self);
        } else {
            self.waker.wake();
        }
    }

    /// Asks the connection to close with `code` after what is queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut st = self.state.lock();
        if st.close.is_none() {
            st.close = Some((code, reason));
        }
        let parked = std::mem::take(&mut st.parked);
        drop(st);
        self.wake(parked);
    }

    /// Ends the initial sync: live message frames queued meanwhile that the backlog already
    /// sent (`sent`) are dropped, and `synced` goes ahead of the rest.
    pub fn finish_sync(&self, synced: Bytes, sent: &HashSet<MessageId>) {
        let mut st = self.state.lock();
        st.queue.retain(|f| !matches!(f, OutFrame::Text(_, Some(id)) if sent.contains(id)));
        st.bytes = st.queue.iter().map(OutFrame::wire_len).sum::<usize>() + synced.len();
        st.queue.push_front(OutFrame::Text(synced, None));
        let parked = std::mem::take(&mut st.parked);
        drop(st);
        self.wake(parked);
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// The outbound limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Drained {
        let mut st = self.state.lock();
        st.bytes = 0;
        Drained { frames: std::mem::take(&mut st.queue), close: st.close }
    }

    /// Ready when frames are queued or a close was asked for; registers the task's waker.
    pub fn poll_pending(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.poll_work(cx) {
            Poll::Ready(Work::Outbound) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    /// What the session's task has to do, under one lock: write (frames or a close are
    /// queued), or park (asked to, and taking the request); registers the task's waker.
    pub fn poll_work(&self, cx: &mut Context<'_>) -> Poll<Work> {
        self.waker.register(cx.waker());
        let mut st = self.state.lock();
        if !st.queue.is_empty() || st.close.is_some() {
            Poll::Ready(Work::Outbound)
        } else if std::mem::take(&mut st.park_requested) {
            Poll::Ready(Work::Park)
        } else {
            Poll::Pending
        }
    }

    /// Asks the task of an idle session to park (see `super::park`); no-op once parked.
    pub fn request_park(&self) {
        let mut st = self.state.lock();
        if st.parked || st.park_requested {
            return;
        }
        st.park_requested = true;
        drop(st);
        self.waker.wake();
    }

    /// Marks a parked session resumed (by its socket turning readable), so that the next
    /// [`Self::push`] wakes its new task instead of asking for a resume again.
    pub fn clear_parked(&self) {
        self.state.lock().parked = false;
    }

    /// Parks with `park` when nothing is queued, atomically with respect to [`Self::push`]
    /// and [`Self::close`]: they see the session parked and resume it. Gives `socket` back
    /// when something is queued or `park` fails.
    pub fn park_with<S>(&self, socket: S, park: impl FnOnce(S) -> Result<(), S>) -> Result<(), S> {
        let mut st = self.state.lock();
        if !st.queue.is_empty() || st.close.is_some() {
            return Err(socket);
        }
        park(socket)?;
        st.parked = true;
        // The finished task's waker holds the task's memory (~0.9 KB) alive: let it go.
        drop(self.waker.take());
        Ok(())
    }

    /// Records activity from the peer.
    pub fn touch(&self) {
        self.last_active.store(coarse_now(), Ordering::Relaxed);
    }

    /// Seconds since the peer was last heard from.
    pub fn idle_secs(&self) -> u32 {
        coarse_now().saturating_sub(self.last_active.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(limit: usize) -> ConnShared {
        ConnShared::new(ConnId(1), UserId(1), DeviceId("d".into()), limit)
    }

    #[test]
    fn slow_consumer_is_closed_not_buffered() {
        let c = conn(100);
        assert!(c.push(OutFrame::Text(Bytes::from(vec![b'x'; 50]), None)));
        assert!(!c.push(OutFrame::Text(Bytes::from(vec![b'x'; 50]), None)));
        let d = c.drain();
        assert!(d.frames.is_empty());
        assert_eq!(d.close, Some((close::TRY_AGAIN_LATER, "slow consumer")));
        assert!(!c.push(OutFrame::Ping), "nothing is queued after close");
    }

    #[test]
    fn synced_goes_ahead_of_live_frames() {
        let c = conn(1000);
        c.push(OutFrame::Text(Bytes::from_static(b"dup"), Some(MessageId(7))));
        c.push(OutFrame::Text(Bytes::from_static(b"live"), Some(MessageId(9))));
        c.push(OutFrame::Text(Bytes::from_static(b"older but not in backlog"), Some(MessageId(5))));
        c.finish_sync(Bytes::from_static(b"synced"), &HashSet::from([MessageId(7), MessageId(8)]));
        let d = c.drain();
        let texts: Vec<&[u8]> = d.frames.iter().map(|f| match f { OutFrame::Text(b, _) => &b[..], _ => &b""[..] }).collect();
        assert_eq!(texts, vec![&b"synced"[..], b"live", b"older but not in backlog"]);
    }
}
