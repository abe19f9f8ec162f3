//! The client listener's accept loop, with a fast path for WebSocket upgrades.
//!
//! A connection whose first request is a canonical WebSocket upgrade of `/ws` or
//! `/messages/send` with a valid token is upgraded right here, on the `TcpStream` itself: the
//! request head is read into the thread's scratch buffer and parsed in place (`httparse`), the
//! token is verified, the 101 is written from the stack, and [`conn::run`] takes the bare
//! socket. No hyper connection, header map, body or `Upgraded` box is ever allocated for it,
//! which is what keeps connection setup cheap (CPU per session) and the heap unfragmented
//! (memory per idle session).
//!
//! Everything else — REST, a second request on a kept-alive connection, an upgrade with a bad
//! or missing token, unusual headers or query parameters, a node that is shutting down or full
//! — goes to hyper and axum with the bytes already read replayed first, so every answer other
//! than a successful upgrade is exactly the REST API's (`handshake::upgrade` upgrades there too).

use super::conn::{self, SCRATCH};
use super::handshake::{choose_protocol, valid_device, BEARER_PREFIX, SUBPROTOCOL};
use super::outbox::ConnShared;
use crate::state::AppState;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use switchboard_core::auth::TokenKind;
use switchboard_core::frame::accept_key;
use switchboard_core::ids::{ConnId, DeviceId, UserId};
use switchboard_core::metrics::names;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A request head longer than this goes to hyper (which answers 431 beyond its own limit).
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed on the fast path; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// The 101 response is written from a stack buffer of this size.
const RESPONSE_BYTES: usize = 1024;
/// Longest `bearer.<token>` subprotocol token echoed from that buffer (the fixed part of the
/// response takes under 200 bytes).
const MAX_ECHOED_TOKEN: usize = 768;


type HttpService = TowerToHyperService<axum::Router>;

/// Accepts client connections until `stop`, each in its own task on `s.tracker`.
pub async fn serve(listener: TcpListener, app: axum::Router, s: Arc<AppState>, stop: CancellationToken) {
    let http = TowerToHyperService::new(app);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays open.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        s.tracker.spawn(handle(stream, s.clone(), http.clone(), stop.clone()));
    }
}

/// What the first request of a connection turned out to be.
enum Opening {
    /// An admitted WebSocket session, its 101 already written.
    Upgraded(Arc<ConnShared>),
    /// Anything else: hyper serves it after these bytes.
    Http(Vec<u8>),
    /// The peer went away.
    Closed,
}

async fn handle(mut stream: TcpStream, s: Arc<AppState>, http: HttpService, stop: CancellationToken) {
    // Both openings are boxed so that the task of an idle session holds `conn::run` alone.
    // `server.head_timeout` bounds the first request head here, and every later one in hyper.
    // A shutdown ends the wait too: a connection that had sent nothing yet held the graceful
    // shutdown for the whole grace period (a chatctl test, `msg_tail_ends_with_the_gateway_…`,
    // failed 3 runs in 60 under load; 0 in 80 after).
    let opening = tokio::select! {
        o = tokio::time::timeout(s.cfg.server.head_timeout, Box::pin(open(&mut stream, &s))) => o.unwrap_or(Opening::Closed),
        () = stop.cancelled() => Opening::Closed,
    };
    match opening {
        Opening::Upgraded(shared) => {
            metrics::counter!(names::GATEWAY_UPGRADES, "path" => "fast").increment(1);
            conn::run(stream, s, shared).await;
        }
        Opening::Http(head) => {
            let timeout = s.cfg.server.head_timeout;
            Box::pin(serve_http(Replay { head, at: 0, inner: stream }, http, timeout, stop)).await;
        }
        Opening::Closed => {}
    }
}

/// Reads the first request head and, when it is a canonical upgrade with a good token, admits
/// the session and writes the 101.
async fn open(stream: &mut TcpStream, s: &Arc<AppState>) -> Opening {
    let mut held: Vec<u8> = Vec::new();
    let admitted = loop {
        if stream.readable().await.is_err() {
            return Opening::Closed;
        }
        let step = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match stream.try_read(&mut scratch[..]) {
                Ok(0) => return Step::Closed,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Again,
                Err(_) => return Step::Closed,
            };
            if held.is_empty() {
                decide(s, &scratch[..n], &mut held)
            } else {
                held.extend_from_slice(&scratch[..n]);
                let bytes = std::mem::take(&mut held);
                decide(s, &bytes, &mut held)
            }
        });
        match step {
            Step::Again => continue,
            Step::Closed => return Opening::Closed,
            Step::Http(head) => return Opening::Http(head),
            Step::Admit(a) => break a,
        }
    };
    // Cluster mode: another node may have revoked the user; that check needs Redis.
    if admitted.recheck.is_some() && s.revoked.is_revoked(admitted.user).await {
        return Opening::Http(admitted.recheck.unwrap_or_default());
    }
    let mut out = [0u8; RESPONSE_BYTES];
    let len = {
        let mut w = &mut out[..];
        let _ = write!(
            w,
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: {}\r\n",
            accept_key(&admitted.key)
        );
        if let Some(p) = admitted.protocol {
            let _ = write!(w, "sec-websocket-protocol: {p}\r\n");
        }
        let _ = w.write_all(b"\r\n");
        RESPONSE_BYTES - w.len()
    };
    if stream.write_all(&out[..len]).await.is_err() {
        return Opening::Closed;
    }
    let id = ConnId(s.next_conn.fetch_add(1, Ordering::Relaxed));
    Opening::Upgraded(Arc::new(ConnShared::new(id, admitted.user, admitted.device, s.cfg.ws.outbound_queue_bytes)))
}

enum Step {
    Again,
    Closed,
    Http(Vec<u8>),
    Admit(Admitted),
}

/// A session the fast path admits.
struct Admitted {
    user: UserId,
    device: DeviceId,
    key: [u8; 24],
    /// The subprotocol to echo.
    protocol: Option<String>,
    /// Cluster mode: the head, kept for hyper in case the shared revocation check refuses.
    recheck: Option<Vec<u8>>,
}

/// Decides on the bytes read so far: more needed (kept in `held`), hyper's, or admitted.
fn decide(s: &AppState, buf: &[u8], held: &mut Vec<u8>) -> Step {
    match fast_upgrade(s, buf) {
        Fast::Partial if buf.len() < MAX_HEAD => {
            held.extend_from_slice(buf);
            Step::Again
        }
        Fast::Partial | Fast::No => Step::Http(buf.to_vec()),
        Fast::Yes(mut a) => {
            if s.revoked.is_shared() {
                a.recheck = Some(buf.to_vec());
            }
            Step::Admit(a)
        }
    }
}

enum Fast {
    Partial,
    No,
    Yes(Admitted),
}

/// The fast path's whole judgement, on a borrowed buffer: a complete `GET /ws` (or
/// `/messages/send`) head and nothing after it, the upgrade headers, a token that verifies
/// and is not revoked here, no other query parameter, a node that is serving and not full.
fn fast_upgrade(s: &AppState, buf: &[u8]) -> Fast {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Fast::Partial,
        Err(_) => return Fast::No,
    };
    if len != buf.len() || req.method != Some("GET") || req.version != Some(1) {
        return Fast::No;
    }
    let (path, query) = match req.path.map(|p| p.split_once('?').unwrap_or((p, ""))) {
        Some(pq) => pq,
        None => return Fast::No,
    };
    if path != "/ws" && path != "/messages/send" {
        return Fast::No;
    }
    let (mut q_token, mut q_device) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            // Percent-encoded values are rare here; hyper's path decodes them.
            Some((_, v)) if v.contains(['%', '+']) => return Fast::No,
            Some(("token", v)) => q_token = Some(v),
            Some(("deviceId", v)) => q_device = Some(v),
            _ => return Fast::No,
        }
    }
    let (mut auth, mut key, mut version_ok, mut upgrade, mut connection) = (None, None, false, false, false);
    let mut offered_ours = false;
    let mut offered_bearer: Option<&str> = None;
    for h in req.headers.iter() {
        let Ok(v) = std::str::from_utf8(h.value) else { return Fast::No };
        let has = |token: &str| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
        match h.name {
            n if n.eq_ignore_ascii_case("authorization") => auth = crate::auth::bearer(v),
            n if n.eq_ignore_ascii_case("sec-websocket-key") => key = Some(v),
            n if n.eq_ignore_ascii_case("sec-websocket-version") => version_ok = v == "13",
            n if n.eq_ignore_ascii_case("upgrade") => upgrade |= has("websocket"),
            n if n.eq_ignore_ascii_case("connection") => connection |= has("upgrade"),
            n if n.eq_ignore_ascii_case("sec-websocket-protocol") => {
                for p in v.split(',').map(str::trim) {
                    if p == SUBPROTOCOL {
                        offered_ours = true;
                    } else if let Some(t) = p.strip_prefix(BEARER_PREFIX) {
                        offered_bearer = offered_bearer.or(Some(t));
                    } else if !p.is_empty() {
                        return Fast::No;
                    }
                }
            }
            n if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") => return Fast::No,
            _ => {}
        }
    }
    let key: [u8; 24] = match key.map(str::as_bytes).and_then(|k| k.try_into().ok()) {
        Some(k) => k,
        None => return Fast::No,
    };
    if !(version_ok && upgrade && connection) {
        return Fast::No;
    }
    // Same precedence as the HTTP path: header, then query, then subprotocol.
    let Some(token) = auth.or(q_token).or(offered_bearer) else { return Fast::No };
    let Ok(claims) = s.keys.verify(token, TokenKind::Access) else { return Fast::No };
    let draining = s.draining.load(Ordering::Relaxed);
    if s.revoked.is_revoked_here(claims.user()) || draining || s.shutdown.is_cancelled() || s.registry.len() >= s.cfg.server.max_connections {
        return Fast::No;
    }
    let device = match q_device {
        Some(d) if valid_device(d) => DeviceId(d.to_owned()),
        Some(_) => return Fast::No,
        None => claims.device(),
    };
    // A bearer value too long to echo from the response buffer goes to hyper.
    if !offered_ours && offered_bearer.is_some_and(|t| t.len() > MAX_ECHOED_TOKEN) {
        return Fast::No;
    }
    let protocol = choose_protocol(offered_ours, offered_bearer);
    Fast::Yes(Admitted { user: claims.user(), device, key, protocol, recheck: None })
}

/// Serves a connection with hyper and axum, stopping gracefully with the listener.
async fn serve_http(io: Replay, http: HttpService, head_timeout: std::time::Duration, stop: CancellationToken) {
    metrics::counter!(names::GATEWAY_UPGRADES, "path" => "http").increment(1);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout)
        .serve_connection(TokioIo::new(io), http)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// A socket whose first bytes were already read: they are read again first.
struct Replay {
    head: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = (self.head.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
