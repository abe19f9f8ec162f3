//! Test helpers: a `gatewayd` started in-process on `127.0.0.1:0` with its own temporary data
//! directory, an HTTP client that speaks the REST API, and a WebSocket client that speaks the
//! JSON protocol. Tests wait for events against a deadline; they never sleep.
//!
//! With `SWITCHBOARD_TEST_MODE=cluster` the same tests run against a cluster: this gateway
//! (node A) plus node B, a router and a storage worker as separate processes
//! ([`cluster::Process`]), over real Redis, Kafka and PostgreSQL; WebSocket connections
//! alternate between A and B, so most conversations cross nodes.

pub mod cluster;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard_core::config::{Config, Durability};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an expected event.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The signing secret test servers use, so tests can forge and expire tokens.
pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// A gateway under test.
pub struct TestServer {
    gw: Option<gatewayd::Gateway>,
    /// `http://127.0.0.1:port`
    pub base: String,
    /// `ws://127.0.0.1:port`
    pub ws_base: String,
    /// `http://127.0.0.1:adminport`
    pub admin: String,
    /// Data directory (kept for restarts).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    http: reqwest::Client,
    /// Cluster mode: the other processes and the namespace of shared-service names.
    cluster: Option<InCluster>,
    /// Connections opened so far (cluster mode alternates them between the two nodes).
    opened: std::sync::atomic::AtomicUsize,
}

/// Cluster mode: this server is node A (in the test process); node B, the router and the
/// storage worker run as separate processes over the same Redis, Kafka and PostgreSQL names.
struct InCluster {
    node_b: cluster::Process,
    /// `127.0.0.1:port` of node B.
    b_addr: String,
    router: cluster::Process,
    worker: cluster::Process,
    ns: cluster::Namespace,
}

/// Whether the contract tests run against cluster mode (`SWITCHBOARD_TEST_MODE=cluster`, with
/// a gatewayd built with `--features cluster` and a broker in `KAFKA_BROKERS`).
pub fn cluster_mode() -> bool {
    std::env::var("SWITCHBOARD_TEST_MODE").as_deref() == Ok("cluster")
}

/// File in a data directory naming the cluster namespace a restarted server adopts.
const NS_FILE: &str = "cluster-namespace";

/// A stopped server's data: its directory and, in cluster mode, its namespace in the shared
/// services. Both are removed when this is dropped.
pub struct DataDir {
    tmp: tempfile::TempDir,
    _ns: Option<cluster::Namespace>,
}

impl DataDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: i64,
    /// Email.
    pub email: String,
    /// Access token.
    pub token: String,
    /// Refresh token.
    pub refresh: String,
    /// Device of this login.
    pub device: String,
}

/// A config for tests: port 0, cheap argon2, fixed secret.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.server.admin_listen = "127.0.0.1:0".parse().expect("addr");
    c.server.data_dir = dir.to_owned();
    c.auth.jwt_secret = Some(TEST_SECRET.into());
    c.auth.argon2_memory_kib = 1024;
    c.auth.argon2_iterations = 1;
    c.storage.durability = Durability::Normal;
    // Sessions park as soon as they go quiet, so every test also runs through parking and
    // resuming (`ws::park`); production waits `ws.park_after` (10 s).
    c.ws.park_after = Duration::ZERO;
    c
}

impl TestServer {
    /// Starts a gateway on a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a gateway on a fresh directory with a tweaked config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(tmp.path(), tweak).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts one gateway with exactly the config `tweak` makes, whatever
    /// `SWITCHBOARD_TEST_MODE` says: for tests that assemble a cluster themselves.
    pub async fn node(tweak: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = test_config(tmp.path());
        tweak(&mut cfg);
        let mut s = Self::serve(cfg, tmp.path(), None).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a gateway on an existing data directory (for restart tests).
    pub async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = test_config(dir);
        let ns = cluster_mode().then(|| {
            let id = std::fs::read_to_string(dir.join(NS_FILE)).ok();
            id.map(cluster::Namespace::with_id).unwrap_or_default()
        });
        let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_default();
        if let Some(ns) = &ns {
            assert!(!brokers.is_empty(), "SWITCHBOARD_TEST_MODE=cluster needs KAFKA_BROKERS");
            cluster::apply(&mut cfg, ns, &brokers, "gw-test");
        }
        tweak(&mut cfg);
        let cluster = match ns {
            Some(ns) => {
                let procs = dir.join("cluster");
                std::fs::create_dir_all(&procs).expect("cluster dir");
                let (router, worker, (node_b, b_addr)) = tokio::join!(
                    cluster::router(&cfg, &procs, "router-test"),
                    cluster::storage_worker(&cfg, &procs, "storage-test"),
                    cluster::gateway(&cfg, &procs, "gw-test-b"),
                );
                Some(InCluster { node_b, b_addr, router, worker, ns })
            }
            None => None,
        };
        Self::serve(cfg, dir, cluster).await
    }

    async fn serve(cfg: Config, dir: &Path, cluster: Option<InCluster>) -> Self {
        let gw = gatewayd::start(cfg).await.expect("gateway starts");
        Self {
            base: format!("http://{}", gw.http_addr),
            ws_base: format!("ws://{}", gw.http_addr),
            admin: format!("http://{}", gw.admin_addr),
            gw: Some(gw),
            dir: dir.to_owned(),
            _tmp: None,
            http: reqwest::Client::new(),
            cluster,
            opened: Default::default(),
        }
    }

    /// Where the next WebSocket connects: in cluster mode, nodes A and B in turn (so a test's
    /// first two users sit on different nodes); else this server.
    fn next_ws_addr(&self) -> String {
        let n = self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.cluster {
            Some(c) if n % 2 == 1 => c.b_addr.clone(),
            _ => self.base.trim_start_matches("http://").to_owned(),
        }
    }

    /// Graceful shutdown; returns the temporary data directory (and, in cluster mode, the
    /// shared-service namespace) so a restart can reuse them. Dropping it removes both.
    pub async fn stop(mut self) -> Option<DataDir> {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
        let mut ns = None;
        if let Some(c) = self.cluster.take() {
            let (b, router, worker) = (c.node_b.name.clone(), c.router.name.clone(), c.worker.name.clone());
            assert!(c.node_b.terminate().await, "{b} did not stop cleanly");
            assert!(c.router.terminate().await, "{router} did not stop cleanly");
            assert!(c.worker.terminate().await, "{worker} did not stop cleanly");
            // A restart on the same directory adopts the namespace (dropping it twice is harmless).
            let _ = std::fs::write(self.dir.join(NS_FILE), &c.ns.id);
            ns = Some(c.ns);
        }
        self._tmp.take().map(|tmp| DataDir { tmp, _ns: ns })
    }

    /// Any HTTP request; returns the status and the JSON body (Null when not JSON).
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with an optional token.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A raw request builder for cases the helpers do not cover.
    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Registers and logs in a new user with a unique email and phone.
    pub async fn user(&self, name: &str) -> TestUser {
        let n = uuid::Uuid::new_v4().as_u128();
        let email = format!("{name}.{n:x}@example.com");
        let phone = format!("+1{:010}", n % 10_000_000_000);
        let (st, body) = self
            .post("/user/register", None, json!({"userName": name, "email": email, "phoneNumber": phone, "password": "123456"}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "register: {body}");
        let mut u = self.login(&email, "123456").await;
        assert_eq!(u.id, body["userId"].as_i64().expect("userId"));
        u.email = email;
        u
    }

    /// Logs in (a new device session).
    pub async fn login(&self, email: &str, password: &str) -> TestUser {
        let (st, body) = self.post("/user/login", None, json!({"email": email, "password": password})).await;
        assert_eq!(st, StatusCode::OK, "login: {body}");
        TestUser {
            id: body["userId"].as_i64().expect("userId"),
            email: email.to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
            refresh: body["refreshToken"].as_str().expect("refreshToken").to_owned(),
            device: body["deviceId"].as_str().expect("deviceId").to_owned(),
        }
    }

    /// Opens `/ws` with the token in the Authorization header and waits for `synced`.
    /// Returns the client and the backlog messages pushed before `synced`.
    pub async fn ws(&self, user: &TestUser) -> (WsClient, Vec<Value>) {
        let mut c = self.ws_connect("/ws", Some(&user.token), &[]).await.expect("ws connects");
        let backlog = c.until_synced().await;
        (c, backlog)
    }

    /// Opens a WebSocket at `path_and_query` with optional bearer header and extra headers.
    ///
    /// # Errors
    /// The HTTP status when the server refuses the upgrade.
    pub async fn ws_connect(&self, path_and_query: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Result<WsClient, u16> {
        let mut req = format!("ws://{}{path_and_query}", self.next_ws_addr()).into_client_request().expect("ws request");
        if let Some(t) = token {
            req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).expect("header"));
        }
        for (k, v) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
            req.headers_mut().insert(name, HeaderValue::from_str(v).expect("header"));
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, res)) => Ok(WsClient { stream, protocol: res.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned) }),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("ws connect failed: {e}"),
        }
    }

    /// GET on the router process's admin listener (cluster mode), else `None` (standalone:
    /// the router runs inside this gateway, see [`Self::admin_get`]).
    pub async fn router_admin_get(&self, path: &str) -> Option<(StatusCode, String)> {
        let c = self.cluster.as_ref()?;
        let res = self.http.get(format!("{}{path}", c.router.admin)).send().await.expect("router admin request");
        Some((res.status(), res.text().await.unwrap_or_default()))
    }

    /// GET on the admin listener; returns status and body text.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let res = self.http.get(format!("{}{path}", self.admin)).send().await.expect("admin request");
        (res.status(), res.text().await.unwrap_or_default())
    }
}

/// A WebSocket test client speaking JSON text frames.
pub struct WsClient {
    /// The underlying stream, for raw frames.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The stream ended without a close frame.
    NoFrame,
}

impl WsClient {
    /// Sends a JSON text frame.
    pub async fn send(&mut self, v: Value) {
        self.stream.send(Message::Text(v.to_string().into())).await.expect("ws send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, s: &str) {
        self.stream.send(Message::Text(s.to_owned().into())).await.expect("ws send");
    }

    /// The next JSON frame (pings are skipped), or panics at the deadline.
    pub async fn next(&mut self) -> Value {
        self.try_next(DEADLINE).await.expect("a frame before the deadline")
    }

    /// The next JSON frame within `wait`, or None.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??;
            match msg.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("server sends JSON")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next frame of `kind`, skipping other kinds (returned in `skipped` order is lost).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// The next frame of `kind` within `wait` (for first messages through a cluster whose
    /// consumer groups are still joining), or panics.
    pub async fn next_of_within(&mut self, kind: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.try_next(left).await.unwrap_or_else(|| panic!("no {kind} frame within {wait:?}"));
            if v["type"] == kind {
                return v;
            }
            eprintln!("(skipped while waiting for {kind}: {v})");
        }
    }

    /// Frames until `synced`, returning the message frames before it.
    pub async fn until_synced(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.next().await;
            match v["type"].as_str() {
                Some("synced") => return out,
                Some("message") => out.push(v),
                _ => {}
            }
        }
    }

    /// Asserts no frame of `kind` arrives within `wait` (other frames are ignored).
    pub async fn assert_no(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(v) = self.try_next(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            assert_ne!(v["type"], kind, "unexpected {kind} frame: {v}");
        }
    }

    /// Sends a full-form send and returns the ack (or the error frame).
    pub async fn send_msg(&mut self, cid: &str, to: Value, text: &str) -> Value {
        let mut v = json!({"type": "send", "clientMsgId": cid, "message": text});
        for (k, val) in to.as_object().expect("target object") {
            v[k] = val.clone();
        }
        self.send(v).await;
        loop {
            let f = self.next().await;
            if (f["type"] == "ack" || f["type"] == "error") && f["clientMsgId"] == cid {
                return f;
            }
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await.expect("close before the deadline") {
                Some(Ok(Message::Close(Some(f)))) => return Closed::Code(u16::from(f.code)),
                Some(Ok(Message::Close(None))) => return Closed::Code(u16::from(CloseCode::Status)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Closed::NoFrame,
            }
        }
    }
}

/// Signs arbitrary claims with the test secret (to forge expired or odd tokens).
pub fn sign_claims(claims: &Value) -> String {
    sign_claims_with(TEST_SECRET.as_bytes(), claims)
}

/// Signs claims (HS256) with any secret, e.g. to forge a token the server must refuse.
pub fn sign_claims_with(secret: &[u8], claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("sign")
}

/// A token with `alg: none` for `user` (must be refused).
pub fn alg_none_token(user: i64) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = switchboard_core::time::now_secs() + 600;
    let body = json!({"sub": user, "dev": "d", "typ": "access", "jti": "x", "iat": 0, "exp": exp});
    format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(body.to_string()))
}

/// A bare-bones WebSocket client over a raw TCP stream: it never answers pings by itself,
/// so tests can play a silent or misbehaving peer.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TestServer {
    /// Opens `/ws` with a hand-written handshake; panics unless the server answers 101.
    pub async fn raw_ws(&self, token: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.next_ws_addr();
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = stream.read(&mut chunk).await.expect("read handshake");
            assert!(n > 0, "server closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
        RawWs { stream, buf: buf[end..].to_vec() }
    }
}

impl RawWs {
    /// Sends one masked frame.
    pub async fn send_frame(&mut self, op: switchboard_core::frame::Opcode, fin: bool, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        switchboard_core::frame::encode(&mut out, op, fin, payload, Some([0x12, 0x34, 0x56, 0x78]));
        self.stream.write_all(&out).await.expect("write frame");
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write bytes");
    }

    /// The next server frame, or None when the stream ends before the deadline.
    pub async fn next_frame(&mut self) -> Option<switchboard_core::frame::Frame> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match switchboard_core::frame::parse(&self.buf, 1 << 24, false) {
                Ok((f, used)) => {
                    self.buf.drain(..used);
                    return Some(f);
                }
                Err(switchboard_core::frame::FrameError::Incomplete) => {}
                Err(e) => panic!("server sent a bad frame: {e}"),
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame parsed as JSON (control frames are skipped).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let f = self.next_frame().await.expect("a frame before the deadline");
            if f.opcode == switchboard_core::frame::Opcode::Text {
                return serde_json::from_slice(&f.payload).expect("JSON");
            }
        }
    }

    /// Reads until a close frame; returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(f) = self.next_frame().await {
            if f.opcode == switchboard_core::frame::Opcode::Close {
                return f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
        None
    }
}
