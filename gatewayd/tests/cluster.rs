//! The contract across a cluster: two gateway nodes and a router, in this process, over real
//! Redis, a real Kafka-protocol broker and real PostgreSQL. Cross-node cases: sender on node A,
//! recipient on node B; a group spread over both; a recipient moving between nodes; offline
//! delivery on reconnect to the other node; resend dedupe through the inbound topic.
#![cfg(feature = "cluster")]

use serde_json::json;
use std::time::Duration;
use switchboard_core::config::Config;
use testkit::cluster::{Broker, Namespace};
use testkit::TestServer;
use tokio_util::sync::CancellationToken;

struct Cluster {
    a: TestServer,
    b: TestServer,
    router_stop: CancellationToken,
    router: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
    ns: Namespace,
    broker: Broker,
}

/// A gateway running as its own process.
struct NodeProcess {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn clustered(c: &mut Config, ns: &Namespace, broker: &Broker, node: &str) {
    testkit::cluster::apply(c, ns, &broker.brokers, node);
}

impl Cluster {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let broker = Broker::get();
        let ns = Namespace::new();
        let a = TestServer::start_with(|c| clustered(c, &ns, &broker, "gw-a")).await;
        let b = TestServer::start_with(|c| clustered(c, &ns, &broker, "gw-b")).await;
        let router_stop = CancellationToken::new();
        let mut c = Self { a, b, router_stop, router: tokio::spawn(async {}), worker: tokio::spawn(async {}), ns, broker };
        c.router = c.spawn_router();
        c.worker = c.spawn_storage_worker();
        c
    }

    /// A router task in this process (abort it to simulate a crash).
    fn spawn_router(&self) -> tokio::task::JoinHandle<()> {
        let mut rcfg = testkit::test_config(std::path::Path::new("/nonexistent"));
        clustered(&mut rcfg, &self.ns, &self.broker, "router-1");
        let stop = self.router_stop.clone();
        tokio::spawn(async move {
            router::cluster::run(rcfg, stop).await.expect("router runs");
        })
    }

    /// A storage worker task in this process.
    fn spawn_storage_worker(&self) -> tokio::task::JoinHandle<()> {
        let mut wcfg = testkit::test_config(std::path::Path::new("/nonexistent"));
        clustered(&mut wcfg, &self.ns, &self.broker, "storage-1");
        let stop = self.router_stop.clone();
        tokio::spawn(async move {
            storage_workers::worker::run(wcfg, stop).await.expect("storage worker runs");
        })
    }

    /// A gateway node as a separate `gatewayd` process, ready to serve.
    async fn spawn_node_process(&self, node: &str) -> NodeProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = testkit::test_config(dir.path());
        clustered(&mut cfg, &self.ns, &self.broker, node);
        let (port, admin) = (free_port(), free_port());
        cfg.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
        cfg.server.admin_listen = format!("127.0.0.1:{admin}").parse().unwrap();
        let file = dir.path().join("gatewayd.toml");
        std::fs::write(&file, toml::to_string(&cfg).unwrap()).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatewayd"))
            .arg("--config")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let node = NodeProcess { child, addr: format!("127.0.0.1:{port}"), _dir: dir };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while http.get(format!("http://127.0.0.1:{admin}/readyz")).send().await.ok().map(|r| r.status().as_u16()) != Some(200) {
            assert!(tokio::time::Instant::now() < deadline, "node {node:?} never became ready", node = node.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    async fn stop(self) {
        self.router_stop.cancel();
        let _ = self.router.await;
        let _ = self.worker.await;
        self.a.stop().await;
        self.b.stop().await;
    }
}

/// Group joins on this broker take seconds: the first message waits for them.
const FIRST: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_messaging_groups_moves_and_offline() {
    let c = Cluster::start().await;
    let (ann, bob, cid) = (c.a.user("ann").await, c.a.user("bob").await, c.b.user("cid").await);
    let (mut wa, _) = c.a.ws(&ann).await;
    let (mut wb, _) = c.b.ws(&bob).await;

    // Sender on A, recipient on B; the ack is the router's, after the PostgreSQL commit.
    wa.send(json!({"type": "send", "clientMsgId": "x1", "receiverId": bob.id, "message": "across"})).await;
    let ack = wa.next_of_within("ack", FIRST).await;
    assert_eq!((ack["clientMsgId"].clone(), ack["conversationSeq"].clone()), (json!("x1"), json!(1)));
    let m = wb.next_of_within("message", FIRST).await;
    assert_eq!((m["message"].clone(), m["messageId"].clone()), (json!("across"), ack["messageId"].clone()));

    // The seed's form works across nodes too (the gateway adds a resend key; the ack does not show it).
    wb.send(json!({"senderId": bob.id, "receiverId": ann.id, "message": "back"})).await;
    let ack2 = wb.next_of("ack").await;
    assert!(ack2.get("clientMsgId").is_none());
    assert_eq!(wa.next_of("message").await["message"], "back");

    // A resend through the inbound topic is answered from the dedupe index.
    let again = wa.send_msg("x1", json!({"receiverId": bob.id}), "across").await;
    assert_eq!((again["messageId"].clone(), again["duplicate"].clone()), (ack["messageId"].clone(), json!(true)));

    // A group spread over both nodes.
    let (_, g) = c.a.post("/groups/create", Some(&ann.token), json!({"groupName": "both", "createdBy": ann.id})).await;
    let gid = g["groupId"].as_i64().unwrap();
    for u in [&bob, &cid] {
        c.b.post(&format!("/groups/{gid}/add"), Some(&ann.token), json!({"userId": u.id})).await;
    }
    let (mut wc, _) = c.b.ws(&cid).await;
    wa.send_msg("g1", json!({"groupId": gid}), "hello group").await;
    assert_eq!(wb.next_of("message").await["groupId"], gid);
    assert_eq!(wc.next_of("message").await["message"], "hello group");

    // Order holds across the cluster.
    for i in 0..20 {
        wa.send(json!({"type": "send", "clientMsgId": format!("o{i}"), "receiverId": bob.id, "message": format!("o{i}")})).await;
    }
    for i in 0..20 {
        assert_eq!(wb.next_of("message").await["message"], format!("o{i}"));
    }

    // Bob moves from B to A between messages.
    drop(wb);
    let (mut wb_on_a, _) = c.a.ws(&bob).await;
    wa.send_msg("mv", json!({"receiverId": bob.id}), "found you").await;
    let m = loop {
        let m = wb_on_a.next_of("message").await;
        if m["message"] == "found you" {
            break m;
        }
    };
    assert_eq!(m["senderId"], ann.id);

    // Offline on one node, back on the other: the backlog comes from PostgreSQL.
    drop(wc);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.a.get(&format!("/user/{}", cid.id), &ann.token).await.1["online"] == true {
        assert!(tokio::time::Instant::now() < deadline, "cid never went offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wa.send_msg("off1", json!({"receiverId": cid.id}), "while you were away").await;
    let cid2 = c.a.login(&cid.email, "123456").await;
    let (_, backlog) = c.a.ws(&cid2).await;
    assert!(backlog.iter().any(|m| m["message"] == "while you were away"), "{backlog:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_on_one_node_revokes_it_on_the_other() {
    let c = Cluster::start().await;
    let (ann, bob) = (c.a.user("ann").await, c.a.user("bob").await);
    let (mut wb_on_b, _) = c.b.ws(&bob).await;
    let (st, _) = c.a.call(reqwest::Method::DELETE, &format!("/user/{}", bob.id), Some(&bob.token), None).await;
    assert_eq!(st, 204);
    // Node B learns within its revocation poll: the socket is closed and the token refused.
    assert_eq!(wb_on_b.closed().await, testkit::Closed::Code(1008));
    assert_eq!(c.b.get(&format!("/user/{}", ann.id), &bob.token).await.0, 401);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_crash_mid_stream_loses_and_stores_twice_nothing() {
    let mut c = Cluster::start().await;
    let (ann, bob) = (c.a.user("ann").await, c.a.user("bob").await);
    let (mut wa, _) = c.a.ws(&ann).await;
    let (mut wb, _) = c.b.ws(&bob).await;
    // Warm up: the router's group has joined once the first ack comes back.
    wa.send(json!({"type": "send", "clientMsgId": "warm", "receiverId": bob.id, "message": "warm"})).await;
    wa.next_of_within("ack", FIRST).await;
    const N: usize = 60;
    for i in 0..N {
        wa.send(json!({"type": "send", "clientMsgId": format!("r{i}"), "receiverId": bob.id, "message": format!("r{i}")})).await;
        if i == N / 3 {
            // Crash: no graceful leave, no final commit.
            c.router.abort();
            let _ = (&mut c.router).await;
            c.router = c.spawn_router();
        }
    }
    let mut acked = std::collections::HashMap::new();
    while acked.len() < N {
        let f = wa.next_of_within("ack", FIRST).await;
        if f["clientMsgId"] != "warm" {
            acked.insert(f["clientMsgId"].as_str().unwrap().to_owned(), f["messageId"].clone());
        }
    }
    // Bob gets every message; a replay may repeat one, which the messageId identifies.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N {
        let m = wb.next_of_within("message", FIRST).await;
        if m["message"] != "warm" {
            seen.insert(m["messageId"].clone());
        }
    }
    assert_eq!(seen, acked.values().cloned().collect());
    // Stored exactly once each, in one unbroken sequence.
    let (_, page) = c.a.get(&format!("/messages/{}/{}?limit=200", ann.id, bob.id), &ann.token).await;
    let seqs: Vec<i64> = page["messages"].as_array().unwrap().iter().map(|m| m["conversationSeq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=(N as i64 + 1)).collect::<Vec<_>>());
    c.stop().await;
}

async fn online(s: &TestServer, token: &str, id: i64) -> serde_json::Value {
    s.get(&format!("/user/{id}"), token).await.1["online"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_drops_out_of_presence_and_its_users_catch_up_elsewhere() {
    let c = Cluster::start().await;
    let (ann, bob) = (c.a.user("ann").await, c.a.user("bob").await);
    // Node C is a real process, so it can be killed.
    let mut node_c = c.spawn_node_process("gw-c").await;
    let bob_ws_url = format!("ws://{}/ws", node_c.addr);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(bob_ws_url).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", bob.token).parse().unwrap());
    let (ws_c, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while online(&c.a, &ann.token, bob.id).await != true {
        assert!(tokio::time::Instant::now() < deadline, "bob never showed online via node C");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node_c.child.kill().unwrap();
    let _ = node_c.child.wait();
    let killed = tokio::time::Instant::now();
    // Presence TTL is 3 s: gone within one TTL (plus a refresh period of slack).
    while online(&c.a, &ann.token, bob.id).await != false {
        assert!(killed.elapsed() < Duration::from_secs(5), "bob still online {:?} after node C died", killed.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ws_c);
    let (mut wa, _) = c.a.ws(&ann).await;
    let ack = wa.send_msg("after-kill", json!({"receiverId": bob.id}), "are you there?").await;
    assert_eq!(ack["type"], "ack");
    let (_, backlog) = c.a.ws(&bob).await;
    assert!(backlog.iter().any(|m| m["messageId"] == ack["messageId"]), "{backlog:?}");
    c.stop().await;
}
