//! The contract across a cluster: two gateway nodes (in this process, so tests reach their
//! clients directly) and a router and a storage worker as separate processes, over real Redis,
//! a real Kafka-protocol broker and real PostgreSQL. Cross-node cases: sender on node A,
//! recipient on node B; a group spread over both; a recipient moving between nodes; offline
//! delivery on reconnect to the other node; resend dedupe through the inbound topic; a killed
//! gateway process; the router and the storage worker killed and restarted mid-stream.
#![cfg(feature = "cluster")]

use serde_json::{json, Value};
use std::time::Duration;
use switchboard_core::config::Config;
use testkit::cluster::{Broker, Namespace, Process};
use testkit::TestServer;

struct Cluster {
    a: TestServer,
    b: TestServer,
    router: Process,
    worker: Process,
    /// The config the processes are started from.
    cfg: Config,
    /// Their configs and logs.
    dir: tempfile::TempDir,
    _ns: Namespace,
    _broker: Broker,
}

/// Admin token of every node of these clusters.
const ADMIN_TOKEN: &str = "cluster-test-admin-token";

fn clustered(c: &mut Config, ns: &Namespace, broker: &Broker, node: &str) {
    testkit::cluster::apply(c, ns, &broker.brokers, node);
    c.server.admin_token = Some(ADMIN_TOKEN.into());
}

/// Node `id` as node `s`'s admin API lists it.
async fn node_as_listed(s: &TestServer, id: &str) -> Value {
    let url = format!("{}/admin/v1/nodes", s.admin);
    let v: Value = reqwest::Client::new().get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    v["nodes"].as_array().unwrap().iter().find(|n| n["nodeId"] == id).cloned().unwrap_or(Value::Null)
}

impl Cluster {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let broker = Broker::get();
        let ns = Namespace::new();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = testkit::test_config(dir.path());
        clustered(&mut cfg, &ns, &broker, "proc");
        let a = TestServer::node(|c| clustered(c, &ns, &broker, "gw-a")).await;
        let b = TestServer::node(|c| clustered(c, &ns, &broker, "gw-b")).await;
        let (router, worker) = tokio::join!(
            testkit::cluster::router(&cfg, dir.path(), "router-1"),
            testkit::cluster::storage_worker(&cfg, dir.path(), "storage-1"),
        );
        Self { a, b, router, worker, cfg, dir, _ns: ns, _broker: broker }
    }

    /// A gateway node as a separate `gatewayd` process, ready to serve; its client address.
    async fn spawn_node_process(&self, node: &str) -> (Process, String) {
        testkit::cluster::gateway(&self.cfg, self.dir.path(), node).await
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
        let (router, worker) = (self.router.name.clone(), self.worker.name.clone());
        assert!(self.router.terminate().await, "{router} did not stop cleanly");
        assert!(self.worker.terminate().await, "{worker} did not stop cleanly");
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
    // Node B refuses the token from the moment the deletion is answered (shared revocation set)...
    assert_eq!(c.b.get(&format!("/user/{}", ann.id), &bob.token).await.0, 401);
    assert_eq!(c.b.ws_connect("/ws", Some(&bob.token), &[]).await.err(), Some(401));
    // ...and closes the socket it holds within its revocation poll.
    assert_eq!(wb_on_b.closed().await, testkit::Closed::Code(1008));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_and_storage_worker_killed_mid_stream_lose_and_duplicate_nothing() {
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
            // Crash (SIGKILL): no graceful leave, no final commit; a new process takes over.
            c.router.kill();
            c.router = testkit::cluster::router(&c.cfg, c.dir.path(), "router-2").await;
        }
    }
    let mut acked = std::collections::HashMap::new();
    while acked.len() < N {
        let f = wa.next_of_within("ack", FIRST).await;
        if f["clientMsgId"] != "warm" {
            acked.insert(f["clientMsgId"].as_str().unwrap().to_owned(), f["messageId"].clone());
        }
    }
    // Bob gets every message (a replay may repeat one, which the messageId identifies) and
    // moves his device cursor along as he reads, while the storage worker is killed and
    // replaced half way.
    let mut seen = std::collections::HashSet::new();
    let mut last = serde_json::Value::Null;
    while seen.len() < N {
        let m = wb.next_of_within("message", FIRST).await;
        if m["message"] != "warm" {
            seen.insert(m["messageId"].clone());
        }
        wb.send(json!({"type": "cursor", "messageId": m["messageId"]})).await;
        last = m["messageId"].clone();
        if seen.len() == N / 2 {
            c.worker.kill();
            c.worker = testkit::cluster::storage_worker(&c.cfg, c.dir.path(), "storage-2").await;
        }
    }
    assert_eq!(seen, acked.values().cloned().collect());
    // Stored exactly once each, in one unbroken sequence.
    let (_, page) = c.a.get(&format!("/messages/{}/{}?limit=200", ann.id, bob.id), &ann.token).await;
    let seqs: Vec<i64> = page["messages"].as_array().unwrap().iter().map(|m| m["conversationSeq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=(N as i64 + 1)).collect::<Vec<_>>());
    // The cursor writes the killed worker had not committed were replayed to its successor:
    // Bob's device, back on node A, is pushed nothing again.
    wb.send(json!({"type": "ping"})).await;
    wb.next_of("pong").await;
    drop(wb);
    let deadline = tokio::time::Instant::now() + FIRST;
    loop {
        let (_, again) = c.a.ws(&bob).await;
        if again.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "cursor stuck before {last}: {} pushed again", again.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let (mut node_c, addr_c) = c.spawn_node_process("gw-c").await;
    let bob_ws_url = format!("ws://{addr_c}/ws");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(bob_ws_url).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", bob.token).parse().unwrap());
    let (ws_c, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while online(&c.a, &ann.token, bob.id).await != true {
        assert!(tokio::time::Instant::now() < deadline, "bob never showed online via node C");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Node A's admin API shows node C with its own figures, fetched from its admin listener.
    let listed = node_as_listed(&c.a, "gw-c").await;
    assert_eq!((listed["state"].as_str(), listed["connections"].as_u64()), (Some("serving"), Some(1)), "{listed}");
    node_c.kill();
    let killed = tokio::time::Instant::now();
    // Presence TTL is 3 s: gone within one TTL (plus a refresh period of slack).
    while online(&c.a, &ann.token, bob.id).await != false {
        assert!(killed.elapsed() < Duration::from_secs(5), "bob still online {:?} after node C died", killed.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ws_c);
    // Once its heartbeat has expired, operators see it as dead (not silently gone).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = node_as_listed(&c.a, "gw-c").await;
        if listed["state"] == "dead" {
            assert!(listed["lastHeartbeat"].is_i64() && listed["connections"].is_null(), "{listed}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node C not listed dead: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut wa, _) = c.a.ws(&ann).await;
    let ack = wa.send_msg("after-kill", json!({"receiverId": bob.id}), "are you there?").await;
    assert_eq!(ack["type"], "ack");
    let (_, backlog) = c.a.ws(&bob).await;
    assert!(backlog.iter().any(|m| m["messageId"] == ack["messageId"]), "{backlog:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_uploaded_through_one_node_is_served_by_the_other() {
    if std::env::var("SWITCHBOARD_TEST_S3_ENDPOINT").is_err() {
        eprintln!("skipped: media is node-local without SWITCHBOARD_TEST_S3_ENDPOINT (scripts/test.sh sets it)");
        return;
    }
    let c = Cluster::start().await;
    let ann = c.a.user("ann").await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let res = c.a.raw(reqwest::Method::POST, "/media").bearer_auth(&ann.token).header("content-type", "image/jpeg").body(bytes.clone()).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<serde_json::Value>().await.unwrap()["mediaId"].as_str().unwrap().to_owned();
    let got = c.b.raw(reqwest::Method::GET, &format!("/media/{id}")).bearer_auth(&ann.token).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/jpeg");
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipients_are_handed_to_the_push_topic() {
    use switchboard_core::bus::{KafkaConfig, KafkaLog};
    use switchboard_core::push::PushNotice;
    let c = Cluster::start().await;
    let (ann, bob, cid) = (c.a.user("ann").await, c.a.user("bob").await, c.a.user("cid").await);
    let (mut wa, _) = c.a.ws(&ann).await;
    let (mut wb, _) = c.b.ws(&bob).await;
    let (_, g) = c.a.post("/groups/create", Some(&ann.token), json!({"groupName": "g", "createdBy": ann.id})).await;
    let gid = g["groupId"].as_i64().unwrap();
    for u in [&bob, &cid] {
        c.a.post(&format!("/groups/{gid}/add"), Some(&ann.token), json!({"userId": u.id})).await;
    }
    // Cid has no connection: the 1:1 message and the group message each give him a notice;
    // Bob, online on node B, gets the group message live and no notice.
    wa.send(json!({"type": "send", "clientMsgId": "p1", "receiverId": cid.id, "message": "secret text"})).await;
    let direct = wa.next_of_within("ack", FIRST).await;
    let group = wa.send_msg("p2", json!({"groupId": gid}), "to all").await;
    assert_eq!(wb.next_of("message").await["messageId"], group["messageId"]);

    let log = KafkaLog::new(KafkaConfig::from_cluster(&c.cfg.cluster)).unwrap();
    let topic = router::cluster::push_topic(&c.cfg);
    let mut consumer = log.consumer(&[&topic], &format!("{}push-test", c.cfg.cluster.topic_prefix), 64).unwrap();
    let mut notices = Vec::new();
    while notices.len() < 2 {
        let r = tokio::time::timeout(FIRST, consumer.next()).await.expect("push notices before the deadline").unwrap();
        assert!(!String::from_utf8_lossy(&r.payload).contains("secret text"), "a notice carries no body");
        let n: PushNotice = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(r.key.as_ref(), n.user_id.0.to_string().as_bytes(), "keyed by recipient");
        notices.push(n);
        r.ack();
    }
    assert!(notices.iter().all(|n| n.user_id.0 == cid.id && n.sender_id.0 == ann.id), "{notices:?}");
    let ids: Vec<_> = notices.iter().map(|n| json!(n.message_id.0)).collect();
    assert_eq!(ids, vec![direct["messageId"].clone(), group["messageId"].clone()]);
    assert_eq!(notices[1].group_id.map(|g| g.0), Some(gid));
    // Nothing for Bob or Ann follows.
    if let Ok(extra) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        panic!("unexpected push notice: {:?}", extra.map(|r| String::from_utf8_lossy(&r.payload).into_owned()));
    }
    consumer.close().await;
    c.stop().await;
}
