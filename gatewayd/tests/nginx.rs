//! `deploy/nginx-switchboard.conf` in front of a cluster, with a real nginx (Debian's package:
//! `scripts/nginx.sh install`, which scripts/test.sh runs). Both gateway nodes, the router and
//! the storage worker run as separate processes over Redis, Kafka and PostgreSQL (and S3 media
//! with `SWITCHBOARD_TEST_S3_ENDPOINT`). nginx runs the deploy file itself: only its upstream
//! ports and its listen port are swapped for the test's. Cases: REST and errors through nginx,
//! balanced over both nodes; WebSocket upgrades (header, subprotocol and query tokens) spread
//! over both nodes by least_conn, with messages crossing them; a killed node's client
//! reconnecting through nginx to the survivor and missing nothing; the upload size limit.
#![cfg(feature = "cluster")]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::cluster::{Broker, Namespace, Process};
use testkit::{TestUser, WsClient, DEADLINE};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Group joins on this broker take seconds: the first message waits for them.
const FIRST: Duration = Duration::from_secs(60);

/// The production example this test runs.
fn deploy_conf_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx-switchboard.conf")
}

/// The nginx binary: `NGINX_BIN`, else `nginx` on `PATH`, else `/usr/sbin/nginx`; panics with
/// how to install it when there is none.
fn nginx_bin() -> PathBuf {
    let hint = "run `scripts/nginx.sh install` (scripts/test.sh does)";
    if let Some(bin) = std::env::var_os("NGINX_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "NGINX_BIN={} is no file: {hint}", bin.display());
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("nginx not found (on PATH or in /usr/sbin): {hint}"))
}

/// The deploy config with its listen port and its two upstream servers replaced; panics when
/// the file no longer has exactly one of each line this replaces.
fn switchboard_conf(listen: u16, upstreams: &[String; 2]) -> String {
    let path = deploy_conf_path();
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let swaps = [
        ("listen 8080;".to_owned(), format!("listen 127.0.0.1:{listen};")),
        ("server 127.0.0.1:8081 ".to_owned(), format!("server {} ", upstreams[0])),
        ("server 127.0.0.1:8082 ".to_owned(), format!("server {} ", upstreams[1])),
    ];
    for (from, to) in swaps {
        let n = text.matches(&from).count();
        assert_eq!(n, 1, "{} has {n} `{from}` (expected one): update gatewayd/tests/nginx.rs with it", path.display());
        text = text.replace(&from, &to);
    }
    text
}

/// nginx in the foreground (one process: `master_process off`) with the deploy config under a
/// minimal main config, everything in its own temporary directory; killed on drop.
struct Nginx {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`
    base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(bin: &Path, upstreams: &[String; 2]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let port = testkit::cluster::free_port();
        std::fs::write(dir.path().join("switchboard.conf"), switchboard_conf(port, upstreams)).expect("write switchboard.conf");
        // One process (`master_process off`): nothing left behind when it is killed, and no
        // workers switching to an unprivileged user who could not write to the temporary
        // directory (nginx does that when started as root).
        let main = [
            "daemon off;".to_owned(),
            "master_process off;".into(),
            format!("pid {d}/nginx.pid;"),
            format!("error_log {d}/error.log warn;"),
            "events {}".into(),
            "http {".into(),
            "    access_log off;".into(),
            format!("    client_body_temp_path {d}/client_body;"),
            format!("    proxy_temp_path {d}/proxy;"),
            format!("    fastcgi_temp_path {d}/fastcgi;"),
            format!("    uwsgi_temp_path {d}/uwsgi;"),
            format!("    scgi_temp_path {d}/scgi;"),
            format!("    include {d}/switchboard.conf;"),
            "}\n".into(),
        ]
        .join("\n");
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write nginx.conf");
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("nginx log");
        let err = out.try_clone().expect("clone log handle");
        let child = std::process::Command::new(bin)
            .args(["-p", &format!("{d}/"), "-c", &format!("{d}/nginx.conf"), "-e", &format!("{d}/error.log")])
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run `scripts/nginx.sh install`)", bin.display()));
        let mut n = Self { child, base: format!("http://127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", n.log());
            }
            assert!(Instant::now() < deadline, "nginx not listening on {port} within {DEADLINE:?}:\n{}", n.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    }

    /// Its error log and stdout/stderr.
    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// REST and WebSocket clients for one base URL (nginx's).
struct Api {
    http: reqwest::Client,
    /// `http://host:port`
    base: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
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

    /// Registers and logs in a new user with a unique email and phone.
    async fn user(&self, name: &str) -> TestUser {
        let n = uuid::Uuid::new_v4().as_u128();
        let email = format!("{name}.{n:x}@example.com");
        let phone = format!("+1{:010}", n % 10_000_000_000);
        let body = json!({"userName": name, "email": email, "phoneNumber": phone, "password": "123456"});
        let (st, reg) = self.call(Method::POST, "/user/register", None, Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "register: {reg}");
        let u = self.login(&email).await;
        assert_eq!(u.id, reg["userId"].as_i64().expect("userId"));
        u
    }

    async fn login(&self, email: &str) -> TestUser {
        let (st, body) = self.call(Method::POST, "/user/login", None, Some(json!({"email": email, "password": "123456"}))).await;
        assert_eq!(st, StatusCode::OK, "login: {body}");
        TestUser {
            id: body["userId"].as_i64().expect("userId"),
            email: email.to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
            refresh: body["refreshToken"].as_str().expect("refreshToken").to_owned(),
            device: body["deviceId"].as_str().expect("deviceId").to_owned(),
        }
    }

    /// `POST /media` with `body` as an image/png.
    async fn upload(&self, token: &str, body: Vec<u8>) -> reqwest::Response {
        let req = self.http.post(format!("{}/media", self.base)).bearer_auth(token).header("content-type", "image/png");
        req.body(body).send().await.expect("upload sent")
    }

    /// Opens a WebSocket at `path_and_query`, with the token as `Authorization: Bearer` when
    /// given and `protocols` offered as `Sec-WebSocket-Protocol` when given.
    async fn ws(&self, path_and_query: &str, token: Option<&str>, protocols: Option<&str>) -> Result<WsClient, u16> {
        let url = format!("{}{path_and_query}", self.base.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request().expect("ws request");
        if let Some(t) = token {
            req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).expect("header"));
        }
        if let Some(p) = protocols {
            req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(p).expect("header"));
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, res)) => {
                assert_eq!(res.status(), 101);
                let protocol = res.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
                Ok(WsClient { stream, protocol })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("ws connect through nginx failed: {e}"),
        }
    }
}

/// Two gateway processes (`gw-1`, `gw-2`), a router and a storage worker, and nginx in front.
/// Fields drop in order: nginx, the processes, then the namespace's keys and schema.
struct Cluster {
    nginx: Nginx,
    /// The live gateway nodes, in upstream order.
    nodes: Vec<Process>,
    router: Process,
    worker: Process,
    /// Through nginx.
    api: Api,
    _ns: Namespace,
    _broker: Broker,
    /// Configs and logs of the processes.
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        // Before anything starts: a missing nginx fails at once.
        let nginx_bin = nginx_bin();
        let broker = Broker::get();
        let ns = Namespace::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = testkit::test_config(dir.path());
        testkit::cluster::apply(&mut cfg, &ns, &broker.brokers, "proc");
        let ((gw1, addr1), (gw2, addr2), router, worker) = tokio::join!(
            testkit::cluster::gateway(&cfg, dir.path(), "gw-1"),
            testkit::cluster::gateway(&cfg, dir.path(), "gw-2"),
            testkit::cluster::router(&cfg, dir.path(), "router-1"),
            testkit::cluster::storage_worker(&cfg, dir.path(), "storage-1"),
        );
        let nginx = Nginx::start(&nginx_bin, &[addr1, addr2]).await;
        let api = Api { http: reqwest::Client::new(), base: nginx.base.clone() };
        Self { nginx, nodes: vec![gw1, gw2], router, worker, api, _ns: ns, _broker: broker, _dir: dir }
    }

    /// Open WebSocket connections per live node, from each node's admin `/readyz`.
    async fn connections(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let res = self.api.http.get(format!("{}/readyz", node.admin)).send().await.expect("readyz");
            let body: Value = res.json().await.expect("readyz JSON");
            assert_eq!(body["node"], node.name.as_str(), "{body}");
            out.push(body["connections"].as_u64().unwrap_or_else(|| panic!("no connections in {body}")));
        }
        out
    }

    /// HTTP requests each live node has answered so far (its request-duration histogram).
    async fn http_requests(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let res = self.api.http.get(format!("{}/metrics", node.admin)).send().await.expect("metrics");
            let text = res.text().await.expect("metrics text");
            let n = text
                .lines()
                .filter(|l| l.starts_with("switchboard_http_request_duration_seconds_count"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            out.push(n as u64);
        }
        out
    }

    /// Connects `user` through nginx with a bearer header, waits for `synced`, and finds the
    /// node that took the connection; returns the client, that node's index and the backlog.
    async fn connect(&self, user: &TestUser) -> (WsClient, usize, Vec<Value>) {
        self.connect_at("/ws", Some(&user.token), None).await
    }

    /// [`Self::connect`] at `path_and_query`, with an optional bearer header and offered
    /// subprotocols.
    async fn connect_at(&self, path_and_query: &str, token: Option<&str>, protocols: Option<&str>) -> (WsClient, usize, Vec<Value>) {
        let before = self.connections().await;
        let mut ws = self.api.ws(path_and_query, token, protocols).await.unwrap_or_else(|st| panic!("upgrade through nginx: HTTP {st}"));
        let backlog = ws.until_synced().await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let now = self.connections().await;
            let grown: Vec<usize> = (0..now.len()).filter(|&i| now[i] > before[i]).collect();
            if grown.len() == 1 && now.iter().sum::<u64>() == before.iter().sum::<u64>() + 1 {
                return (ws, grown[0], backlog);
            }
            assert!(Instant::now() < deadline, "no single node took the new connection: {before:?} -> {now:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Graceful stop: nginx first (its upstream sockets close), then every process, each of
    /// which must exit cleanly.
    async fn stop(self) {
        let Self { nginx, nodes, router, worker, api: _, _ns, _broker, _dir } = self;
        drop(nginx);
        for p in nodes.into_iter().chain([router, worker]) {
            let name = p.name.clone();
            assert!(p.terminate().await, "{name} did not stop cleanly");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_through_nginx_is_balanced_over_both_nodes_and_uploads_stop_at_the_limit() {
    let c = Cluster::start().await;
    // Register and log in through nginx; the token works whichever node answers.
    let ann = c.api.user("ann").await;
    for _ in 0..6 {
        let (st, me) = c.api.call(Method::GET, &format!("/user/{}", ann.id), Some(&ann.token), None).await;
        assert_eq!((st, me["userId"].clone(), me["email"].clone()), (StatusCode::OK, json!(ann.id), json!(ann.email)), "{me}");
    }
    let served = c.http_requests().await;
    assert!(served.iter().all(|&n| n > 0), "least_conn sent every REST request to one node: {served:?}");
    // The gateway's errors pass through unchanged, in either location.
    let (st, err) = c.api.call(Method::GET, &format!("/user/{}", ann.id), Some("not-a-token"), None).await;
    assert_eq!((st, err["error"]["code"].is_string()), (StatusCode::UNAUTHORIZED, true), "{err}");
    let (st, err) = c.api.call(Method::GET, "/ws", Some(&ann.token), None).await;
    assert_eq!((st, err["error"]["code"].clone()), (StatusCode::UPGRADE_REQUIRED, json!("upgrade_required")), "{err}");

    // nginx's upload limit is the gateways' (server.media_max_bytes), and nginx refuses a larger
    // body from its Content-Length alone, before any of it is sent.
    let limit = switchboard_core::config::Config::default().server.media_max_bytes;
    let conf = std::fs::read_to_string(deploy_conf_path()).expect("deploy config");
    let nginx_limit = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("client_max_body_size ")?.strip_suffix("m;")?.parse::<usize>().ok())
        .expect("deploy config sets client_max_body_size <n>m");
    assert_eq!(nginx_limit << 20, limit, "client_max_body_size is not server.media_max_bytes");
    let status = raw_post_headers(&c.nginx.base, "/media", &ann.token, limit + 1).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}\n{}", c.nginx.log());

    if std::env::var("SWITCHBOARD_TEST_S3_ENDPOINT").is_err() {
        eprintln!("media part skipped: media is node-local without SWITCHBOARD_TEST_S3_ENDPOINT (scripts/test.sh sets it)");
    } else {
        let png: Vec<u8> = b"\x89PNG\r\n\x1a\n".iter().copied().chain((0..=255u8).cycle().take(40_000)).collect();
        let res = c.api.upload(&ann.token, png.clone()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let id = res.json::<Value>().await.expect("media JSON")["mediaId"].as_str().expect("mediaId").to_owned();
        // Fetched back through nginx again and again: both nodes answer some of these.
        let before = c.http_requests().await;
        for _ in 0..4 {
            let got = c.api.http.get(format!("{}/media/{id}", c.api.base)).bearer_auth(&ann.token).send().await.expect("download");
            assert_eq!(got.status(), StatusCode::OK);
            assert_eq!(got.headers()["content-type"], "image/png");
            assert_eq!(got.bytes().await.expect("body").as_ref(), png.as_slice());
        }
        let after = c.http_requests().await;
        assert!(after.iter().zip(&before).all(|(a, b)| a > b), "downloads not spread over both nodes: {before:?} -> {after:?}");
        // A body of exactly the limit passes nginx and is stored.
        let res = c.api.upload(&ann.token, vec![7u8; limit]).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap_or_default());
    }
    c.stop().await;
}

/// Sends only the head of a `POST path` announcing `length` body bytes; returns the status line
/// of the answer (which must come without the body ever being sent).
async fn raw_post_headers(base: &str, path: &str, token: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to nginx");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await.expect("an answer before any body byte").expect("read");
        assert!(n > 0, "nginx closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_through_nginx_spread_over_both_nodes_and_messages_cross_them() {
    let c = Cluster::start().await;
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(c.api.user(&format!("u{i}")).await);
    }
    let mut clients: Vec<(WsClient, usize)> = Vec::new();
    // The token in the Authorization header, with our subprotocol offered and selected.
    let (ws, node, _) = c.connect_at("/ws", Some(&users[0].token), Some("switchboard.v1")).await;
    assert_eq!(ws.protocol.as_deref(), Some("switchboard.v1"));
    clients.push((ws, node));
    // The token as a subprotocol only (browsers), on the /messages/send alias.
    let offered = format!("switchboard.v1, bearer.{}", users[1].token);
    let (ws, node, _) = c.connect_at("/messages/send", None, Some(&offered)).await;
    assert_eq!(ws.protocol.as_deref(), Some("switchboard.v1"));
    clients.push((ws, node));
    // The token in the query.
    let (ws, node, _) = c.connect_at(&format!("/ws?token={}", users[2].token), None, None).await;
    clients.push((ws, node));
    for u in &users[3..] {
        let (ws, node, _) = c.connect(u).await;
        clients.push((ws, node));
    }
    // Without a token nginx passes the gateway's refusal.
    assert_eq!(c.api.ws("/ws", None, None).await.err(), Some(401));
    // least_conn: WebSockets stay open, so each new one goes to the node holding fewer.
    let per_node = c.connections().await;
    assert_eq!(per_node.iter().sum::<u64>(), 6, "{per_node:?}");
    assert!(per_node.iter().all(|&n| n > 0), "every WebSocket went to one node: {per_node:?}");
    for (i, n) in per_node.iter().enumerate() {
        assert_eq!(*n, clients.iter().filter(|(_, node)| *node == i).count() as u64, "{per_node:?}");
    }

    // From a client on one node to a client on the other, and back.
    let s = clients.iter().position(|(_, n)| *n == 0).expect("a client on gw-1");
    let r = clients.iter().position(|(_, n)| *n == 1).expect("a client on gw-2");
    let (sender, receiver) = (users[s].clone(), users[r].clone());
    clients[s].0.send(json!({"type": "send", "clientMsgId": "x", "receiverId": receiver.id, "message": "hi"})).await;
    let ack = clients[s].0.next_of_within("ack", FIRST).await;
    assert_eq!(ack["clientMsgId"], "x");
    let m = clients[r].0.next_of_within("message", FIRST).await;
    assert_eq!(
        (m["message"].clone(), m["messageId"].clone(), m["senderId"].clone()),
        (json!("hi"), ack["messageId"].clone(), json!(sender.id))
    );
    clients[r].0.send(json!({"type": "send", "clientMsgId": "y", "receiverId": sender.id, "message": "hello"})).await;
    let back = clients[s].0.next_of_within("message", FIRST).await;
    assert_eq!((back["message"].clone(), back["senderId"].clone()), (json!("hello"), json!(receiver.id)));
    drop(clients);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_node_reconnects_through_nginx_and_misses_nothing() {
    let mut c = Cluster::start().await;
    let (ann, bob) = (c.api.user("ann").await, c.api.user("bob").await);
    let (mut wa, node_a, _) = c.connect(&ann).await;
    let (mut wb, node_b, _) = c.connect(&bob).await;
    assert_ne!(node_a, node_b, "least_conn put both WebSockets on one node");
    // Warm up: the consumer groups have joined once a message has crossed.
    wb.send(json!({"type": "send", "clientMsgId": "warm", "receiverId": ann.id, "message": "warm"})).await;
    wb.next_of_within("ack", FIRST).await;
    assert_eq!(wa.next_of_within("message", FIRST).await["message"], "warm");

    // Ann's node crashes: nginx closes her socket.
    let mut dead = c.nodes.remove(node_a);
    dead.kill();
    wa.closed().await;
    // Sent while she is away (her presence may still name the dead node).
    wb.send(json!({"type": "send", "clientMsgId": "away", "receiverId": ann.id, "message": "while you were away"})).await;
    let ack = wb.next_of_within("ack", FIRST).await;
    assert_eq!(ack["clientMsgId"], "away");

    // She reconnects through nginx as before: the dead node refuses the connection, nginx
    // passes the upgrade to the survivor, and the backlog has what she missed.
    let (mut wa, _, backlog) = c.connect(&ann).await;
    assert!(backlog.iter().any(|m| m["messageId"] == ack["messageId"]), "{backlog:?}");
    assert_eq!(c.connections().await, vec![2]);
    assert!(c.nginx.log().contains("Connection refused"), "nginx never tried the dead node:\n{}", c.nginx.log());
    wa.send(json!({"type": "send", "clientMsgId": "back", "receiverId": bob.id, "message": "back"})).await;
    wa.next_of_within("ack", FIRST).await;
    assert_eq!(wb.next_of_within("message", FIRST).await["message"], "back");
    // REST too keeps working with one node down, logins (POSTs) included.
    for _ in 0..4 {
        let again = c.api.login(&ann.email).await;
        assert_eq!(again.id, ann.id);
    }
    drop(dead);
    drop((wa, wb));
    c.stop().await;
}
