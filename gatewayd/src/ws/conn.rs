//! One WebSocket connection: sync the backlog, then serve frames until it closes.
//!
//! Memory while idle is the point: socket bytes are read into a per-thread scratch buffer
//! and parsed there; only an incomplete frame's tail is copied into the connection's own
//! `partial` buffer, which is freed as soon as the frame completes. Outbound frames wait in
//! the [`ConnShared`] queue, which is empty (unallocated) while idle.

use super::outbox::{ConnShared, Drained, OutFrame, Work};
use super::ratelimit::TokenBucket;
use crate::state::AppState;
use router::{Origin, SendJob};
use std::cell::RefCell;
use std::collections::HashSet;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use switchboard_core::error::ErrorCode;
use switchboard_core::frame::{self, close, FrameError, Opcode};
use switchboard_core::metrics::names;
use switchboard_core::protocol::{self, ClientFrame};
use switchboard_core::store::{StoreError, SyncFrom};
use switchboard_core::time::now_ms;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::Instrument;

/// Bytes read from a socket per wake-up, into the thread's scratch buffer.
const SCRATCH_BYTES: usize = 16 * 1024;
/// Messages per backlog page on connect.
const BACKLOG_PAGE: usize = 500;
/// Longest wait for the client's side of the close after ours (see `flush`).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Messages per page of an explicit `sync`.
const RESYNC_PAGE: usize = 100;

thread_local! {
    /// The thread's read buffer: sockets are read into it and parsed in place.
    pub(crate) static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

enum Event {
    Outbound,
    /// The sweep asked an idle session to park (see [`super::park`]).
    Park,
    Frames(Vec<frame::Frame>),
    Violation(FrameError),
    Gone,
}

/// How [`Conn::serve`] ended.
#[derive(PartialEq, Eq)]
enum Served {
    /// The connection is finished.
    Closed,
    /// Idle with nothing pending: the socket may be parked.
    Idle,
}

/// What parking did with the socket.
pub enum Parking<IO> {
    /// Parked: the task may end; the session lives on in the registry and the parking lot.
    Parked,
    /// Not parked (work arrived meanwhile, or this socket cannot be parked): serve on.
    Kept(IO),
    /// The socket was lost while being handed over: the session is finished.
    Lost,
}

/// A socket a session runs on: the bare `TcpStream` of the fast upgrade path, which can be
/// parked, or hyper's upgraded connection, which cannot.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static + Sized {
    /// Parks the session on this socket when its outbox is still empty.
    fn park(self, shared: &Arc<ConnShared>, state: &Arc<AppState>) -> Parking<Self>;
}

impl Socket for tokio::net::TcpStream {
    fn park(self, shared: &Arc<ConnShared>, state: &Arc<AppState>) -> Parking<Self> {
        let std = match self.into_std() {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "cannot take the socket off the runtime");
                return Parking::Lost;
            }
        };
        match shared.park_with(std, |std| super::park::park(std, shared.clone(), state.clone())) {
            Ok(()) => Parking::Parked,
            Err(std) => match tokio::net::TcpStream::from_std(std) {
                Ok(io) => Parking::Kept(io),
                Err(error) => {
                    tracing::warn!(%error, "cannot put the socket back on the runtime");
                    Parking::Lost
                }
            },
        }
    }
}

impl Socket for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    fn park(self, _: &Arc<ConnShared>, _: &Arc<AppState>) -> Parking<Self> {
        Parking::Kept(self)
    }
}

/// What handling a frame asks of the connection.
enum Next {
    Continue,
    Close(u16, &'static str),
}

struct Conn<IO> {
    io: IO,
    s: Arc<AppState>,
    shared: Arc<ConnShared>,
    /// Tail of an incomplete frame; empty (unallocated) almost always.
    partial: Vec<u8>,
    /// A fragmented message being reassembled.
    fragments: Option<(Opcode, Vec<u8>)>,
    /// Budget for frames that cost the server work.
    budget: TokenBucket,
}

/// Serves one upgraded connection until it closes (or parks; see [`resume`]).
pub async fn run<IO: Socket>(io: IO, s: Arc<AppState>, shared: Arc<ConnShared>) {
    let came_online = !s.presence.is_online(shared.user).await;
    s.registry.insert(shared.clone());
    s.presence
        .connected(switchboard_core::presence::PresenceEntry {
            user: shared.user,
            node: s.node.clone(),
            conn: shared.id,
            device: shared.device.clone(),
        })
        .await;
    metrics::gauge!(names::GATEWAY_CONNECTIONS_ACTIVE).increment(1.0);
    metrics::counter!(names::GATEWAY_CONNECTIONS_TOTAL).increment(1);
    if came_online {
        announce(&s, shared.user, true, None);
    }
    let mut conn = Conn::new(io, &s, &shared);
    // Boxed so the task's idle state does not reserve room for the sync's future.
    if let Err(error) = Box::pin(conn.initial_sync()).await {
        tracing::warn!(%error, "initial sync failed");
        shared.close(close::INTERNAL, "sync failed");
    }
    if super::park::enabled(&s.cfg) {
        // A session that connects and then waits (most of them) parks once `synced` is
        // written, unless the client has spoken by then: a connect storm never holds more
        // tasks than sessions in flight. After activity, `ws.park_after` applies.
        shared.request_park();
    }
    serve_until_parked_or_closed(conn, s, shared).await;
}

/// Serves a session that was parked, in a new task, from where it left off (nothing was
/// pending when it parked).
pub async fn resume(io: tokio::net::TcpStream, s: Arc<AppState>, shared: Arc<ConnShared>) {
    let conn = Conn::new(io, &s, &shared);
    serve_until_parked_or_closed(conn, s, shared).await;
}

async fn serve_until_parked_or_closed<IO: Socket>(mut conn: Conn<IO>, s: Arc<AppState>, shared: Arc<ConnShared>) {
    let span = tracing::debug_span!("conn", conn_id = %shared.id, user_id = %shared.user);
    loop {
        if conn.serve().instrument(span.clone()).await == Served::Closed {
            break;
        }
        let Conn { io, s: cs, shared: csh, partial, fragments, budget } = conn;
        match io.park(&shared, &s) {
            Parking::Parked => return,
            Parking::Kept(io) => conn = Conn { io, s: cs, shared: csh, partial, fragments, budget },
            Parking::Lost => break,
        }
    }
    gone(&s, &shared).await;
}

/// A finished session: out of the registry and presence, last seen recorded, peers told.
pub async fn gone(s: &Arc<AppState>, shared: &Arc<ConnShared>) {
    s.registry.remove(shared);
    metrics::gauge!(names::GATEWAY_CONNECTIONS_ACTIVE).decrement(1.0);
    if s.presence.disconnected(shared.user, shared.id).await {
        let at = now_ms();
        if let Err(error) = s.lagging.last_seen(shared.user, at).await {
            tracing::warn!(%error, "last seen not recorded");
        }
        announce(s, shared.user, false, Some(at));
    }
}

/// Tells the user's 1:1 peers that they came online or went offline, off the connection's path.
fn announce(s: &Arc<AppState>, user: switchboard_core::ids::UserId, online: bool, last_seen: Option<i64>) {
    if !s.cfg.ws.presence_events {
        return;
    }
    let s2 = s.clone();
    s.tracker.spawn(async move {
        match s2.store.direct_peers(user).await {
            Ok(peers) if !peers.is_empty() => s2.router.presence_changed(user, &peers, online, last_seen).await,
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "presence not announced"),
        }
    });
}

impl<IO: Socket> Conn<IO> {
    fn new(io: IO, s: &Arc<AppState>, shared: &Arc<ConnShared>) -> Self {
        let budget = TokenBucket::full(s.cfg.ws.rate_burst);
        Conn { io, s: s.clone(), shared: shared.clone(), partial: Vec::new(), fragments: None, budget }
    }

    /// Where this connection's frames come from, for the router.
    fn origin(&self) -> Origin {
        Origin { node: self.s.node.clone(), conn: self.shared.id, user: self.shared.user, device: self.shared.device.clone() }
    }

    /// Serves frames both ways until the connection closes or is asked to park while idle.
    async fn serve(&mut self) -> Served {
        loop {
            let event = poll_fn(|cx| self.poll_event(cx)).await;
            let next = match event {
                Event::Outbound => {
                    // Boxed: a write in progress needs its buffer and timer, an idle task not.
                    if Box::pin(self.flush()).await {
                        continue;
                    }
                    return Served::Closed;
                }
                Event::Park if self.partial.is_empty() && self.fragments.is_none() => return Served::Idle,
                Event::Park => Next::Continue,
                Event::Gone => return Served::Closed,
                Event::Violation(e) => {
                    metrics::counter!(names::GATEWAY_CLOSED, "reason" => "protocol").increment(1);
                    Next::Close(e.close_code(), if e == FrameError::TooLarge { "frame too large" } else { "protocol error" })
                }
                Event::Frames(frames) => self.on_frames(frames),
            };
            if let Next::Close(code, reason) = next {
                self.shared.close(code, reason);
            }
        }
    }

    /// Pushes every message this device has not acknowledged, then `synced`.
    async fn initial_sync(&mut self) -> Result<(), StoreError> {
        let (user, device) = (self.shared.user, self.shared.device.clone());
        let mut from = SyncFrom::Device;
        let mut sent = HashSet::new();
        let mut last = None;
        loop {
            let page = self.s.store.backlog(user, &device, from, BACKLOG_PAGE).await?;
            let mut buf = Vec::new();
            for m in &page.messages {
                frame::encode(&mut buf, Opcode::Text, true, &protocol::message_frame(m), None);
                sent.insert(m.message_id);
                last = Some(m.message_id);
            }
            if !buf.is_empty() && !self.write(&buf).await {
                return Ok(());
            }
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
        self.shared.finish_sync(protocol::synced_frame(last, false), &sent);
        Ok(())
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        match self.shared.poll_work(cx) {
            Poll::Ready(Work::Outbound) => return Poll::Ready(Event::Outbound),
            Poll::Ready(Work::Park) => return Poll::Ready(Event::Park),
            Poll::Pending => {}
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(_)) => Poll::Ready(Event::Gone),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Event::Gone),
                Poll::Ready(Ok(())) => Poll::Ready(match self.parse(rb.filled()) {
                    Ok(frames) => Event::Frames(frames),
                    Err(e) => Event::Violation(e),
                }),
            }
        })
    }

    /// Splits bytes into frames; keeps only an incomplete tail.
    fn parse(&mut self, data: &[u8]) -> Result<Vec<frame::Frame>, FrameError> {
        let joined;
        let buf: &[u8] = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(data);
            joined = std::mem::take(&mut self.partial);
            &joined
        };
        let max = self.s.cfg.ws.max_frame_bytes;
        let mut frames = Vec::new();
        let mut pos = 0;
        loop {
            match frame::parse(&buf[pos..], max, true) {
                Ok((f, used)) => {
                    frames.push(f);
                    pos += used;
                }
                Err(FrameError::Incomplete) => break,
                Err(e) => return Err(e),
            }
        }
        if pos < buf.len() {
            self.partial = buf[pos..].to_vec();
        }
        Ok(frames)
    }

    fn on_frames(&mut self, frames: Vec<frame::Frame>) -> Next {
        self.shared.touch();
        let counters = super::counters::counters();
        for f in frames {
            counters.received(f.opcode).increment(1);
            if let Next::Close(code, reason) = self.on_frame(f) {
                return Next::Close(code, reason);
            }
        }
        Next::Continue
    }

    fn on_frame(&mut self, f: frame::Frame) -> Next {
        match f.opcode {
            Opcode::Ping => {
                self.shared.push(OutFrame::Pong(f.payload));
                Next::Continue
            }
            Opcode::Pong => Next::Continue,
            Opcode::Close => Next::Close(close::NORMAL, "bye"),
            Opcode::Text | Opcode::Binary if self.fragments.is_some() => Next::Close(close::PROTOCOL, "expected continuation"),
            Opcode::Text | Opcode::Binary if !f.fin => {
                self.fragments = Some((f.opcode, f.payload.to_vec()));
                Next::Continue
            }
            Opcode::Text | Opcode::Binary => self.on_message(f.opcode, &f.payload),
            Opcode::Continuation => {
                let Some((op, mut buf)) = self.fragments.take() else {
                    return Next::Close(close::PROTOCOL, "unexpected continuation");
                };
                if buf.len() + f.payload.len() > self.s.cfg.ws.max_frame_bytes {
                    return Next::Close(close::TOO_BIG, "message too large");
                }
                buf.extend_from_slice(&f.payload);
                if f.fin {
                    self.on_message(op, &buf)
                } else {
                    self.fragments = Some((op, buf));
                    Next::Continue
                }
            }
        }
    }

    fn on_message(&mut self, op: Opcode, payload: &[u8]) -> Next {
        if op == Opcode::Binary {
            let e = protocol::ProtocolError::Binary;
            self.error(e.code(), &e.to_string(), None);
            return Next::Continue;
        }
        if std::str::from_utf8(payload).is_err() {
            return Next::Close(close::INVALID_PAYLOAD, "text frame is not UTF-8");
        }
        match ClientFrame::parse(payload) {
            Ok(frame) => self.on_client_frame(frame),
            Err(e) => self.error(e.code(), &e.to_string(), None),
        }
        Next::Continue
    }

    fn on_client_frame(&mut self, frame: ClientFrame) {
        let costly = !matches!(frame, ClientFrame::Ping);
        if costly && !self.budget.take(self.s.cfg.ws.rate_per_second, self.s.cfg.ws.rate_burst) {
            let cid = match &frame {
                ClientFrame::Send(f) => f.client_msg_id.clone(),
                _ => None,
            };
            return self.error("rate_limited", "too many frames; slow down and retry", cid.as_deref());
        }
        match frame {
            ClientFrame::Send(send) => self.on_send(send),
            ClientFrame::Ping => {
                self.shared.push(OutFrame::Text(protocol::pong_frame(), None));
            }
            ClientFrame::Receipt { message_id, status } => {
                self.spawn_reply(move |s, o| async move { s.router.receipt(&o, message_id, status).await });
            }
            ClientFrame::Cursor { message_id } => {
                self.spawn_reply(move |s, o| async move { s.lagging.cursor(o.user, &o.device, message_id).await });
            }
            ClientFrame::Typing { target } => {
                self.spawn_reply(move |s, o| async move { s.router.typing(&o, target).await });
            }
            ClientFrame::Sync { after } => {
                let shared = self.shared.clone();
                self.spawn_reply(move |s, o| async move { resync(&s, &o, &shared, after).await });
            }
        }
    }

    fn on_send(&mut self, send: protocol::SendFrame) {
        let cid = send.client_msg_id.clone();
        if send.claimed_sender.is_some_and(|u| u != self.shared.user) {
            let e = protocol::ProtocolError::SenderMismatch;
            return self.error(e.code(), &e.to_string(), cid.as_deref());
        }
        if send.text.chars().count() > self.s.cfg.ws.max_message_chars {
            let msg = format!("message longer than {} characters", self.s.cfg.ws.max_message_chars);
            return self.error("message_too_long", &msg, cid.as_deref());
        }
        if let Err(e) = self.s.sends.submit(SendJob::new(self.origin(), send)) {
            self.error(e.code(), &e.to_string(), cid.as_deref());
        }
    }

    /// Runs a store-backed handler off the read path; its error becomes an error frame.
    fn spawn_reply<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<AppState>, Origin) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let fut = f(self.s.clone(), self.origin());
        self.s.tracker.spawn(async move {
            if let Err(e) = fut.await {
                metrics::counter!(names::GATEWAY_ERRORS, "code" => e.code()).increment(1);
                shared.push(OutFrame::Text(protocol::error_frame(e.code(), &e.to_string(), None), None));
            }
        });
    }

    fn error(&self, code: &'static str, message: &str, client_msg_id: Option<&str>) {
        metrics::counter!(names::GATEWAY_ERRORS, "code" => code).increment(1);
        self.shared.push(OutFrame::Text(protocol::error_frame(code, message, client_msg_id), None));
    }

    /// Writes everything queued; false once the connection is finished.
    async fn flush(&mut self) -> bool {
        let Drained { frames, close } = self.shared.drain();
        tracing::trace!(frames = frames.len(), close = ?close, "flush");
        // Sized once rather than grown frame by frame (benches/MICRO.md, `frame/flush_64x250B`:
        // 1.32 -> 0.92 us for a 64-frame flush; small next to a message's cost, but free).
        let close_len = if close.is_some() { 2 + 125 + 10 } else { 0 };
        let mut buf = Vec::with_capacity(frames.iter().map(OutFrame::wire_len).sum::<usize>() + close_len);
        let mut sent = 0u64;
        for f in frames {
            match f {
                OutFrame::Text(b, _) => frame::encode(&mut buf, Opcode::Text, true, &b, None),
                OutFrame::Ping => frame::encode(&mut buf, Opcode::Ping, true, b"", None),
                OutFrame::Pong(b) => frame::encode(&mut buf, Opcode::Pong, true, &b, None),
            }
            sent += 1;
        }
        super::counters::counters().sent.increment(sent);
        if let Some((code, reason)) = close {
            frame::encode(&mut buf, Opcode::Close, true, &frame::close_payload(code, reason), None);
        }
        if !buf.is_empty() && !self.write(&buf).await {
            return false;
        }
        if close.is_some() {
            let _ = tokio::time::timeout(self.s.cfg.ws.write_timeout, self.io.shutdown()).await;
            // Lingering close: read (and drop) what the client still sends until it closes
            // too, for at most `LINGER`. Closing a socket with unread bytes in it (a pong, the
            // client's close reply) makes the kernel send a reset, and a client that has not
            // read our close frame yet loses it.
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(tokio::io::AsyncReadExt::read(&mut self.io, &mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return false;
        }
        true
    }

    async fn write(&mut self, buf: &[u8]) -> bool {
        match tokio::time::timeout(self.s.cfg.ws.write_timeout, self.io.write_all(buf)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                metrics::counter!(names::GATEWAY_CLOSED, "reason" => "write_timeout").increment(1);
                false
            }
        }
    }
}

/// `{"type":"sync"}`: pushes the backlog again through the outbox, then `synced`.
///
/// It stops at half the outbound limit so a large backlog never trips the slow-consumer
/// close; `synced` then says `"more": true` and the client asks again after `cursor`.
async fn resync(s: &AppState, o: &Origin, shared: &ConnShared, after: Option<switchboard_core::ids::MessageId>) -> Result<(), StoreError> {
    let budget = shared.limit() / 2;
    let mut from = after.map_or(SyncFrom::Device, SyncFrom::After);
    let mut last = after;
    loop {
        let page = s.store.backlog(o.user, &o.device, from, RESYNC_PAGE).await?;
        for m in &page.messages {
            let frame = protocol::message_frame(m);
            if shared.queued_bytes() + frame.len() > budget {
                shared.push(OutFrame::Text(protocol::synced_frame(last, true), None));
                return Ok(());
            }
            if !shared.push(OutFrame::Text(frame, Some(m.message_id))) {
                return Ok(());
            }
            last = Some(m.message_id);
        }
        match page.next {
            Some(n) => from = n,
            None => break,
        }
    }
    shared.push(OutFrame::Text(protocol::synced_frame(last, false), None));
    Ok(())
}

