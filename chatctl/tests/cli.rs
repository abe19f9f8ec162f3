//! The real `chatctl` binary against a live gatewayd (standalone, in this process): every
//! command, the JSON shapes, the exit code of each failure class, and a drain under traffic
//! that loses no message.
//!
//! With `SWITCHBOARD_TEST_MODE=cluster` (and a gatewayd built with `--features cluster`),
//! the `cluster_*` tests also run against a two-node cluster.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use testkit::{TestServer, TestUser, WsClient};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "admin-token-for-tests-0123456789";

/// One chatctl run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

/// Runs chatctl with `args` against `endpoint` with `token` (off the runtime's threads).
async fn chatctl_with(endpoint: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chatctl"));
    cmd.args(args).env("CHATCTL_ENDPOINT", endpoint).env_remove("CHATCTL_TOKEN").env_remove("CHATCTL_OUTPUT");
    if let Some(t) = token {
        cmd.env("CHATCTL_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("chatctl runs")).await.expect("join");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8"),
        stderr: String::from_utf8(out.stderr).expect("utf-8"),
    }
}

async fn chatctl(s: &TestServer, args: &[&str]) -> Run {
    chatctl_with(&s.admin, Some(TOKEN), args).await
}

/// A standalone gateway with the admin token, whatever SWITCHBOARD_TEST_MODE says.
async fn server() -> TestServer {
    TestServer::node(|c| c.server.admin_token = Some(TOKEN.into())).await
}

#[track_caller]
fn fits_100_columns(text: &str) {
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "line over 100 columns: {line:?}");
    }
}

/// Waits for the server's close frame; returns code and reason.
async fn close_of(c: &mut WsClient) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, c.stream.next()).await.expect("close before the deadline") {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("stream ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_exit_codes_and_bad_usage_exits_2() {
    let s = server().await;
    let help = chatctl(&s, &["--help"]).await.ok();
    for needle in ["Exit codes", "69", "77", "78", "cluster", "node", "conn", "user", "group", "msg", "topic", "config"] {
        assert!(help.stdout.contains(needle), "--help lacks {needle}: {}", help.stdout);
    }
    assert_eq!(chatctl(&s, &["frobnicate"]).await.code, 2);
    assert_eq!(chatctl(&s, &["user", "show"]).await.code, 2);
    assert_eq!(chatctl(&s, &["--output", "yaml", "node", "list"]).await.code, 2);
    // Destructive verbs refuse to run without --yes, and say so on stderr with nothing on stdout.
    let r = chatctl(&s, &["node", "drain", "gw-1"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.is_empty() && r.stderr.contains("--yes"), "{r:?}");
    assert_eq!(chatctl(&s, &["user", "delete", "1"]).await.code, 2);
    assert_eq!(chatctl(&s, &["user", "disable", "1"]).await.code, 2);
    assert_eq!(chatctl(&s, &["conn", "kick", "1"]).await.code, 2);
    assert_eq!(chatctl(&s, &["--version"]).await.ok().stdout.trim(), format!("chatctl {}", env!("CARGO_PKG_VERSION")));
    for shell in ["bash", "zsh", "fish"] {
        let r = chatctl(&s, &["completions", shell]).await.ok();
        assert!(r.stdout.contains("chatctl") && r.stdout.len() > 500, "{shell}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_classes_have_their_exit_codes() {
    let s = server().await;
    // Bad or missing token: 77, and the server's error code on stderr (JSON with -o json).
    let r = chatctl_with(&s.admin, Some("wrong-token-wrong-token-0000"), &["node", "list"]).await;
    assert_eq!(r.code, 77, "{r:?}");
    assert!(r.stdout.is_empty() && r.stderr.contains("unauthorized"), "{r:?}");
    let r = chatctl_with(&s.admin, None, &["-o", "json", "node", "list"]).await;
    assert_eq!(r.code, 77, "{r:?}");
    let err: Value = serde_json::from_str(r.stderr.trim()).expect("JSON error on stderr");
    assert_eq!(err["error"]["code"], "unauthorized");
    assert_eq!(err["error"]["exitCode"], 77);
    // Unknown user, group, connection: 3.
    assert_eq!(chatctl(&s, &["user", "show", "424242"]).await.code, 3);
    assert_eq!(chatctl(&s, &["user", "show", "nobody@example.com"]).await.code, 3);
    assert_eq!(chatctl(&s, &["group", "show", "424242"]).await.code, 3);
    assert_eq!(chatctl(&s, &["conn", "kick", "424242", "--yes"]).await.code, 3);
    assert_eq!(chatctl(&s, &["node", "drain", "gw-9", "--yes"]).await.code, 3);
    // A refused request (duplicate email): 1.
    let u = s.user("dup").await;
    let r = chatctl(&s, &["user", "create", "--name", "x", "--email", &u.email, "--phone", "+15550001111", "--password", "secret1"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("conflict"), "{r:?}");
    // Server down: 69.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = chatctl_with(&format!("http://127.0.0.1:{port}"), Some(TOKEN), &["node", "list"]).await;
    assert_eq!(r.code, 69, "{r:?}");
    assert!(r.stderr.contains("cannot reach"), "{r:?}");
    // A gateway without an admin token refuses the admin API (401 admin_disabled: 77), while
    // the probes stay open.
    let off = TestServer::node(|_| {}).await;
    let r = chatctl_with(&off.admin, Some(TOKEN), &["node", "list"]).await;
    assert_eq!(r.code, 77, "{r:?}");
    assert!(r.stderr.contains("admin_disabled"), "{r:?}");
    assert_eq!(off.admin_get("/healthz").await.0, 200);
    // The API's errors have the REST shape.
    let res = reqwest::Client::new().get(format!("{}/admin/v1/nope", s.admin)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // A bad config file: 78.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nadmin_token = \"short\"\n[ws]\nmax_frame_bytes = 1\n").unwrap();
    let r = chatctl(&s, &["config", "check", bad.to_str().unwrap(), "--ignore-env"]).await;
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("server.admin_token") && r.stderr.contains("ws.max_frame_bytes"), "{r:?}");
    let r = chatctl(&s, &["config", "check", dir.path().join("missing.toml").to_str().unwrap()]).await;
    assert_eq!(r.code, 78, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cluster_topic_config_and_version() {
    let s = server().await;
    let a = s.user("ann").await;
    let (_ws, _) = s.ws(&a).await;

    let nodes = chatctl(&s, &["-o", "json", "node", "list"]).await.ok().json();
    let n = &nodes["nodes"][0];
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1);
    assert_eq!((n["nodeId"].as_str(), n["state"].as_str(), n["mode"].as_str()), (Some("gw-1"), Some("serving"), Some("standalone")));
    assert_eq!(n["connections"], 1);
    assert_eq!(n["users"], 1);
    assert_eq!(n["local"], true);
    assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    assert!(n["uptimeSecs"].is_u64() && n.get("msgsInPerSec").is_some() && n.get("lastHeartbeat").is_some(), "{n}");
    let text = chatctl(&s, &["node", "list"]).await.ok().stdout;
    assert!(text.starts_with("NODE") && text.contains("gw-1") && text.contains("serving"), "{text}");
    fits_100_columns(&text);

    let st = chatctl(&s, &["-o", "json", "cluster", "status"]).await.ok().json();
    assert_eq!(st["mode"], "standalone");
    assert_eq!(st["nodes"][0]["nodeId"], "gw-1");
    assert_eq!(st["services"][0]["name"], "store");
    assert_eq!(st["services"][0]["ok"], true);
    assert_eq!(st["lag"], json!([]));
    assert_eq!(st["kafka"], Value::Null);
    fits_100_columns(&chatctl(&s, &["cluster", "status"]).await.ok().stdout);

    let lag = chatctl(&s, &["-o", "json", "topic", "lag"]).await.ok().json();
    assert_eq!(lag, json!({"mode": "standalone", "groups": []}));
    assert!(chatctl(&s, &["topic", "lag"]).await.ok().stdout.contains("no Kafka"));

    let v = chatctl(&s, &["-o", "json", "version"]).await.ok().json();
    assert_eq!(v["chatctl"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["server"]["nodeId"], "gw-1");
    assert_eq!(v["server"]["version"], env!("CARGO_PKG_VERSION"));

    let d = chatctl(&s, &["-o", "json", "config", "defaults"]).await.ok().json();
    let keys = d["keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["key"] == "server.admin_token" && k["env"] == "SWITCHBOARD_SERVER_ADMIN_TOKEN" && k["default"] == "(unset)"));
    assert!(keys.iter().any(|k| k["key"] == "server.listen" && k["default"] == "\"127.0.0.1:8080\""));
    let text = chatctl(&s, &["config", "defaults"]).await.ok().stdout;
    fits_100_columns(&text);
    assert!(text.contains("SWITCHBOARD_WS_PING_INTERVAL"));

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("gw.toml");
    std::fs::write(&good, "node_id = \"edge-7\"\n[server]\nadmin_token = \"0123456789abcdef-token\"\n").unwrap();
    let c = chatctl(&s, &["-o", "json", "config", "check", good.to_str().unwrap(), "--ignore-env"]).await.ok().json();
    assert_eq!((c["ok"].as_bool(), c["nodeId"].as_str(), c["adminApi"].as_bool()), (Some(true), Some("edge-7"), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_lifecycle_create_show_disable_enable_delete() {
    let s = server().await;
    let created = chatctl(
        &s,
        &["-o", "json", "user", "create", "--name", "Ops Ann", "--email", "ops.ann@example.com", "--phone", "+1 555 010 2030", "--password", "s3cret-pw"],
    )
    .await
    .ok()
    .json();
    let id = created["userId"].as_i64().expect("userId");
    assert_eq!(created["email"], "ops.ann@example.com");
    assert_eq!(created["phoneNumber"], "+15550102030");
    assert_eq!(created["disabled"], false);
    let ann = s.login("ops.ann@example.com", "s3cret-pw").await;
    let bob = s.user("bob").await;
    let (mut ws, _) = s.ws(&ann).await;
    let mut bob_ws = s.ws(&bob).await.0;
    // Two messages for Ann: one she reads live, both undelivered (she sends no receipt).
    bob_ws.send_msg("b-1", json!({"receiverId": id}), "hello").await;
    bob_ws.send_msg("b-2", json!({"receiverId": id}), "again").await;
    ws.next_of("message").await;

    let shown = chatctl(&s, &["-o", "json", "user", "show", &id.to_string()]).await.ok().json();
    for key in ["userId", "userName", "email", "phoneNumber", "lastSeen", "disabled", "createdAt", "devices", "presence", "undelivered", "undeliveredCapped"] {
        assert!(shown.get(key).is_some(), "user show lacks {key}: {shown}");
    }
    assert_eq!(shown["presence"]["online"], true);
    assert_eq!(shown["presence"]["nodes"], json!(["gw-1"]));
    assert_eq!(shown["presence"]["connections"][0]["deviceId"], ann.device.as_str());
    assert_eq!(shown["undelivered"], 2);
    let by_email = chatctl(&s, &["-o", "json", "user", "show", "OPS.ANN@example.com"]).await.ok().json();
    assert_eq!(by_email["userId"], id);
    let text = chatctl(&s, &["user", "show", "ops.ann@example.com"]).await.ok().stdout;
    assert!(text.contains("Ops Ann") && text.contains("online       yes") && text.contains("undelivered  2"), "{text}");
    fits_100_columns(&text);

    // Dry run changes nothing.
    let plan = chatctl(&s, &["-o", "json", "user", "disable", &id.to_string(), "--dry-run"]).await.ok().json();
    assert_eq!((plan["dryRun"].as_bool(), plan["connections"].as_u64()), (Some(true), Some(1)));
    assert_eq!(s.get(&format!("/user/{id}"), &ann.token).await.0, 200);

    // Disable: socket closed with 1008, token refused, login refused, at once.
    let r = chatctl(&s, &["-o", "json", "user", "disable", &id.to_string(), "--yes"]).await.ok().json();
    assert_eq!((r["disabled"].as_bool(), r["closedConnections"].as_u64()), (Some(true), Some(1)));
    assert_eq!(close_of(&mut ws).await, (1008, "account disabled".to_owned()));
    assert_eq!(s.get(&format!("/user/{id}"), &ann.token).await.0, 401);
    assert_eq!(s.ws_connect("/ws", Some(&ann.token), &[]).await.err(), Some(401));
    let (st, _) = s.post("/user/login", None, json!({"email": "ops.ann@example.com", "password": "s3cret-pw"})).await;
    assert_eq!(st, 401);
    assert_eq!(chatctl(&s, &["-o", "json", "user", "show", &id.to_string()]).await.ok().json()["disabled"], true);

    // Enable: login works again, and so do tokens issued before the account was disabled.
    let r = chatctl(&s, &["-o", "json", "user", "enable", "ops.ann@example.com"]).await.ok().json();
    assert_eq!(r["disabled"], false);
    let (st, body) = s.post("/user/login", None, json!({"email": "ops.ann@example.com", "password": "s3cret-pw"})).await;
    assert_eq!(st, 200);
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(s.get(&format!("/user/{id}"), &token).await.0, 200);
    assert_eq!(s.get(&format!("/user/{id}"), &ann.token).await.0, 200);

    // Delete: gone for good.
    let plan = chatctl(&s, &["user", "delete", &id.to_string(), "--dry-run"]).await.ok();
    assert!(plan.stdout.contains("would"), "{plan:?}");
    let r = chatctl(&s, &["-o", "json", "user", "delete", &id.to_string(), "--yes"]).await.ok().json();
    assert_eq!(r["deleted"], true);
    assert_eq!(chatctl(&s, &["user", "show", &id.to_string()]).await.code, 3);
    assert_eq!(chatctl(&s, &["user", "delete", &id.to_string(), "--yes"]).await.code, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conns_are_listed_and_kicked() {
    let s = server().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb1, _) = s.ws(&b).await;
    let (mut wb2, _) = s.ws(&b).await;

    let list = chatctl(&s, &["-o", "json", "conn", "list"]).await.ok().json();
    assert_eq!(list["total"], 3);
    let conns = list["conns"].as_array().unwrap();
    let c = &conns[0];
    for key in ["connId", "nodeId", "userId", "deviceId", "idleSecs", "queuedBytes"] {
        assert!(c.get(key).is_some(), "conn lacks {key}: {c}");
    }
    let mine = chatctl(&s, &["-o", "json", "conn", "list", "--user", &b.id.to_string(), "--node", "gw-1"]).await.ok().json();
    assert_eq!(mine["total"], 2);
    assert!(mine["conns"].as_array().unwrap().iter().all(|c| c["userId"] == b.id));
    let text = chatctl(&s, &["conn", "list"]).await.ok().stdout;
    assert!(text.starts_with("CONN") && text.lines().count() == 4, "{text}");
    assert_eq!(chatctl(&s, &["conn", "list", "--node", "gw-2"]).await.code, 3);

    // Kick one connection: code 4000; dry run first changes nothing.
    let ann_conn = conns.iter().find(|c| c["userId"] == a.id).unwrap()["connId"].as_u64().unwrap().to_string();
    let plan = chatctl(&s, &["-o", "json", "conn", "kick", &ann_conn, "--dry-run"]).await.ok().json();
    assert_eq!(plan["wouldKick"].as_array().unwrap().len(), 1);
    let r = chatctl(&s, &["-o", "json", "conn", "kick", &ann_conn, "--yes"]).await.ok().json();
    assert_eq!((r["code"].as_u64(), r["kicked"].as_array().unwrap().len()), (Some(4000), 1));
    assert_eq!(close_of(&mut wa).await, (4000, "kicked by an operator".to_owned()));

    // Kick a user (by email): both of Bob's sockets.
    let r = chatctl(&s, &["-o", "json", "conn", "kick", "--user", &b.email, "--yes"]).await.ok().json();
    assert_eq!(r["kicked"].as_array().unwrap().len(), 2);
    assert_eq!(close_of(&mut wb1).await.0, 4000);
    assert_eq!(close_of(&mut wb2).await.0, 4000);
    // Kicked clients may come back at once.
    let (_again, _) = s.ws(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_show_and_msg_send_through_the_router() {
    let s = server().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cat").await);
    let (st, g) = s.post("/groups/create", Some(&a.token), json!({"groupName": "ops", "createdBy": a.id})).await;
    assert_eq!(st, 201, "{g}");
    let gid = g["groupId"].as_i64().unwrap();
    let (st, _) = s.post(&format!("/groups/{gid}/add"), Some(&a.token), json!({"userId": b.id})).await;
    assert_eq!(st, 200);
    let (mut wb, _) = s.ws(&b).await;
    let (mut wa, _) = s.ws(&a).await;

    let sent = chatctl(&s, &["-o", "json", "msg", "send", "--from", &a.id.to_string(), "--group", &gid.to_string(), "--text", "smoke test"])
        .await
        .ok()
        .json();
    let mid = sent["messageId"].as_i64().expect("messageId");
    assert_eq!(sent["conversationSeq"], 1);
    assert!(sent["clientMsgId"].as_str().unwrap().starts_with("chatctl-"));
    let m = wb.next_of("message").await;
    assert_eq!((m["messageId"].as_i64(), m["message"].as_str(), m["groupId"].as_i64()), (Some(mid), Some("smoke test"), Some(gid)));
    // The sender's own devices get it too: it came from the `chatctl` device.
    assert_eq!(wa.next_of("message").await["messageId"], mid);

    let direct = chatctl(&s, &["msg", "send", "--from", &b.id.to_string(), "--to", &a.id.to_string(), "--text", "direct"]).await.ok();
    assert!(direct.stdout.starts_with("sent message"), "{direct:?}");
    assert_eq!(wa.next_of("message").await["message"], "direct");

    let shown = chatctl(&s, &["-o", "json", "group", "show", &gid.to_string()]).await.ok().json();
    assert_eq!(shown["groupName"], "ops");
    assert_eq!(shown["members"], json!([a.id, b.id]));
    assert_eq!(shown["memberCount"], 2);
    assert_eq!(shown["messageCount"], 1);
    assert!(chatctl(&s, &["group", "show", &gid.to_string()]).await.ok().stdout.contains("messages      1"));

    // Refusals: not a member (1), unknown sender (3), unknown recipient (3), bad usage (2).
    let r = chatctl(&s, &["msg", "send", "--from", &c.id.to_string(), "--group", &gid.to_string(), "--text", "x"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("forbidden"), "{r:?}");
    assert_eq!(chatctl(&s, &["msg", "send", "--from", "424242", "--to", &a.id.to_string(), "--text", "x"]).await.code, 3);
    assert_eq!(chatctl(&s, &["msg", "send", "--from", &a.id.to_string(), "--to", "424242", "--text", "x"]).await.code, 3);
    assert_eq!(chatctl(&s, &["msg", "send", "--from", &a.id.to_string(), "--text", "x"]).await.code, 2);
    // The transient sending connection is gone.
    assert_eq!(chatctl(&s, &["-o", "json", "conn", "list"]).await.ok().json()["total"], 2);
}

/// Sends to `to` until the server closes the socket; returns acks (clientMsgId → messageId),
/// the clientMsgIds sent without an ack, and the close.
async fn send_until_closed(mut c: WsClient, to: i64, prefix: &str) -> (BTreeMap<String, i64>, Vec<String>, (u16, String)) {
    let mut acked = BTreeMap::new();
    let mut unacked = Vec::new();
    let mut i = 0;
    loop {
        let cid = format!("{prefix}-{i}");
        i += 1;
        let frame = json!({"type": "send", "clientMsgId": cid, "receiverId": to, "message": format!("m {cid}")});
        if c.stream.send(Message::Text(frame.to_string().into())).await.is_err() {
            // The socket is already closing: this one never reached the server.
            unacked.push(cid);
            let close = close_of(&mut c).await;
            return (acked, unacked, close);
        }
        unacked.push(cid);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), c.stream.next()).await.expect("a frame") {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "ack" {
                        let id = v["clientMsgId"].as_str().unwrap().to_owned();
                        unacked.retain(|x| *x != id);
                        acked.insert(id, v["messageId"].as_i64().unwrap());
                        break;
                    }
                    assert_ne!(v["type"], "error", "{v}");
                }
                Some(Ok(Message::Close(Some(f)))) => return (acked, unacked, (u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => {}
                other => panic!("stream ended without a close frame: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Message frames until the server closes; returns messageId → clientMsgId and the close.
async fn receive_until_closed(mut c: WsClient) -> (BTreeMap<i64, String>, (u16, String)) {
    let mut got = BTreeMap::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), c.stream.next()).await.expect("a frame") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "message" {
                    got.insert(v["messageId"].as_i64().unwrap(), v["clientMsgId"].as_str().unwrap_or_default().to_owned());
                }
            }
            Some(Ok(Message::Close(Some(f)))) => return (got, (u16::from(f.code), f.reason.to_string())),
            Some(Ok(_)) => {}
            other => panic!("stream ended without a close frame: {other:?}"),
        }
    }
}

fn assert_retry_hint(close: &(u16, String), window: (u32, u32)) {
    assert_eq!(close.0, 1012, "{close:?}");
    let n: u32 = close
        .1
        .strip_prefix("service restart; retry in ")
        .and_then(|r| r.strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry hint in {close:?}"));
    assert!((window.0..=window.1).contains(&n), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_traffic_loses_nothing() {
    let s = server().await;
    let (ann, bob) = (s.user("ann").await, s.user("bob").await);
    let (ann_ws, _) = s.ws(&ann).await;
    let (bob_ws, _) = s.ws(&bob).await;
    let (bob_ws2, _) = s.ws(&bob).await;
    let sender = tokio::spawn(send_until_closed(ann_ws, bob.id, "d"));
    let receiver = tokio::spawn(receive_until_closed(bob_ws));
    let receiver2 = tokio::spawn(receive_until_closed(bob_ws2));
    // Let traffic flow, then drain at 4 connections a second.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let plan = chatctl(&s, &["-o", "json", "node", "drain", "gw-1", "--rate", "4", "--dry-run"]).await.ok().json();
    assert_eq!((plan["connections"].as_u64(), plan["etaSecs"].as_u64()), (Some(3), Some(1)));
    let started = tokio::time::Instant::now();
    let r = chatctl(&s, &["-o", "json", "node", "drain", "gw-1", "--rate", "4", "--retry-min", "3", "--retry-max", "7", "--wait", "--yes"]).await;
    let drained = r.ok().json();
    assert_eq!(drained["state"], "draining");
    assert_eq!(drained["drain"]["remaining"], 0);
    assert_eq!(drained["drain"]["closed"], 3);
    // Bounded rate: three closes at 4/s take at least half a second.
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());

    let (acked, unacked, close) = sender.await.unwrap();
    assert_retry_hint(&close, (3, 7));
    let (live, close) = receiver.await.unwrap();
    assert_retry_hint(&close, (3, 7));
    let (live2, close) = receiver2.await.unwrap();
    assert_retry_hint(&close, (3, 7));
    assert!(acked.len() >= 5, "traffic flowed before the drain: {acked:?}");

    // While draining: not ready, and new upgrades are refused with 503.
    assert_eq!(s.admin_get("/readyz").await.0, 503);
    let proto = format!("bearer.{}", bob.token);
    assert_eq!(s.ws_connect("/ws", None, &[("sec-websocket-protocol", proto.as_str())]).await.err(), Some(503));
    let nodes = chatctl(&s, &["node", "list"]).await.ok().stdout;
    assert!(nodes.contains("draining"), "{nodes}");
    assert_eq!(chatctl(&s, &["-o", "json", "conn", "list"]).await.ok().json()["total"], 0);

    // Undrain; the clients reconnect, Ann resends what was not acked (same clientMsgId).
    let r = chatctl(&s, &["-o", "json", "node", "undrain", "gw-1"]).await.ok().json();
    assert_eq!(r["state"], "serving");
    assert_eq!(s.admin_get("/readyz").await.0, 200);
    let (mut ann_ws, _) = s.ws(&ann).await;
    let mut all_acked = acked.clone();
    for cid in &unacked {
        let ack = ann_ws.send_msg(cid, json!({"receiverId": bob.id}), &format!("m {cid}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        all_acked.insert(cid.clone(), ack["messageId"].as_i64().unwrap());
    }
    // Bob's backlog on reconnect plus what he read live holds every acked message, once.
    let (_bob_ws, backlog) = s.ws(&bob).await;
    let mut got: BTreeMap<i64, String> = live.into_iter().chain(live2).collect();
    for m in backlog {
        got.insert(m["messageId"].as_i64().unwrap(), m["clientMsgId"].as_str().unwrap_or_default().to_owned());
    }
    let want: BTreeSet<i64> = all_acked.values().copied().collect();
    let have: BTreeSet<i64> = got.keys().copied().collect();
    assert_eq!(want.difference(&have).count(), 0, "lost: {:?}", want.difference(&have).collect::<Vec<_>>());
    assert_eq!(want.len(), all_acked.len(), "one message per clientMsgId");
    let cids: BTreeSet<&String> = got.values().collect();
    assert_eq!(cids.len(), got.len(), "no clientMsgId stored twice");
}

/// A `chatctl msg tail` child: its stdout and stderr lines as they come.
struct Tail {
    child: std::process::Child,
    stdout: tokio::sync::mpsc::Receiver<String>,
    stderr: tokio::sync::mpsc::Receiver<String>,
    err_seen: Vec<String>,
}

/// Lines of `from` sent to a channel by a thread of their own.
fn lines_of(from: impl std::io::Read + Send + 'static) -> tokio::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tail {
    /// Starts `chatctl msg tail <args>` and waits until it is subscribed (its stderr note).
    async fn start(endpoint: &str, args: &[&str]) -> Self {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chatctl"));
        cmd.args(["msg", "tail"])
            .args(args)
            .env("CHATCTL_ENDPOINT", endpoint)
            .env("CHATCTL_TOKEN", TOKEN)
            .env_remove("CHATCTL_OUTPUT")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("chatctl runs");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut t = Self { child, stdout, stderr, err_seen: Vec::new() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, t.stderr.recv()).await {
                Ok(Some(l)) => {
                    let ready = l.contains("tailing node");
                    t.err_seen.push(l);
                    if ready {
                        return t;
                    }
                }
                other => panic!("chatctl msg tail did not start ({other:?}): {:?}", t.err_seen),
            }
        }
    }

    /// The next stdout line within `wait`.
    async fn line(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.stdout.recv()).await.ok().flatten()
    }

    /// Waits for the exit (at most 20 s); everything printed.
    async fn finish(mut self) -> Run {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            assert!(std::time::Instant::now() < deadline, "chatctl msg tail did not exit: {:?}", self.err_seen);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut stdout = String::new();
        while let Some(l) = self.stdout.recv().await {
            stdout.push_str(&l);
            stdout.push('\n');
        }
        while let Some(l) = self.stderr.recv().await {
            self.err_seen.push(l);
        }
        Run { code: status.code().unwrap_or(-1), stdout, stderr: self.err_seen.join("\n") }
    }

    /// Ctrl-C.
    fn interrupt(&self) {
        let ok = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(ok.success());
    }
}

fn ndjson(r: &Run) -> Vec<Value> {
    r.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))).collect()
}

/// Open tails of the node, once the server has noticed the clients are gone.
async fn tails_drop_to_zero(s: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = chatctl(s, &["-o", "json", "node", "list"]).await.ok().json()["nodes"][0]["tails"].clone();
        if n == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "tails still open: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_tail_follows_traffic_metadata() {
    let s = server().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cat").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;

    // Two messages, as NDJSON: ids as acked, metadata, and no body.
    let tail = Tail::start(&s.admin, &["-o", "json", "--count", "2"]).await;
    let ack1 = wa.send_msg("t-1", json!({"receiverId": b.id}), "hello bob").await;
    let ack2 = wb.send_msg("t-2", json!({"receiverId": a.id}), "hi ann").await;
    let r = tail.finish().await;
    assert_eq!(r.code, 0, "{r:?}");
    let events = ndjson(&r);
    assert_eq!(events.len(), 2, "{r:?}");
    for (e, ack, from, to, bytes) in [(&events[0], &ack1, a.id, b.id, 9), (&events[1], &ack2, b.id, a.id, 6)] {
        assert_eq!(e["type"], "message", "{e}");
        assert_eq!(e["messageId"], ack["messageId"], "{e}");
        assert_eq!(e["conversationSeq"], ack["conversationSeq"], "{e}");
        assert_eq!((e["senderId"].as_i64(), e["receiverId"].as_i64()), (Some(from), Some(to)), "{e}");
        assert_eq!(e["bodyBytes"], bytes, "{e}");
        assert_eq!((e["recipients"].as_u64(), e["online"].as_u64(), e["offline"].as_u64()), (Some(1), Some(1), Some(0)), "{e}");
        assert_eq!(e["duplicate"], false);
        assert_eq!(e["node"], "gw-1");
        assert!(e.get("body").is_none(), "a body without --bodies: {e}");
        assert!(e["timestamp"].is_i64());
    }
    assert_eq!(events[0]["clientMsgId"], "t-1");
    // The stream's notes are on stderr, not stdout.
    assert!(r.stderr.contains("tailing node gw-1 (standalone)"), "{r:?}");

    // --bodies (standalone): the body is there.
    let tail = Tail::start(&s.admin, &["-o", "json", "--count", "1", "--bodies"]).await;
    let ack = wa.send_msg("t-3", json!({"receiverId": b.id}), "secret plans").await;
    let r = tail.finish().await;
    let e = &ndjson(&r)[0];
    assert_eq!((e["messageId"].clone(), e["body"].as_str()), (ack["messageId"].clone(), Some("secret plans")), "{r:?}");

    // A user filter for a third user sees none of it: zero lines, exit 0 after --for.
    let tail = Tail::start(&s.admin, &["-o", "json", "--user", &c.id.to_string(), "--for", "2s"]).await;
    wa.send_msg("t-4", json!({"receiverId": b.id}), "not for cat").await;
    wb.send_msg("t-5", json!({"receiverId": a.id}), "nor this").await;
    let r = tail.finish().await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");

    // Group filter, text output: one line per event, within 100 columns; a duplicate is shown
    // as such, a direct message is not.
    let (st, g) = s.post("/groups/create", Some(&a.token), json!({"groupName": "ops", "createdBy": a.id})).await;
    assert_eq!(st, 201, "{g}");
    let gid = g["groupId"].as_i64().unwrap();
    assert_eq!(s.post(&format!("/groups/{gid}/add"), Some(&a.token), json!({"userId": b.id})).await.0, 200);
    let tail = Tail::start(&s.admin, &["--group", &gid.to_string(), "--count", "2", "--bodies"]).await;
    let direct = wa.send_msg("t-6", json!({"receiverId": b.id}), "direct").await;
    let g1 = wa.send_msg("t-7", json!({"groupId": gid}), &"long group text ".repeat(20)).await;
    let again = wa.send_msg("t-7", json!({"groupId": gid}), &"long group text ".repeat(20)).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let r = tail.finish().await;
    assert_eq!(r.code, 0, "{r:?}");
    fits_100_columns(&r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    let head = format!("msg {}  {} -> g:{gid}  320 B  online 1/1  \"long group text", g1["messageId"], a.id);
    assert!(lines[0].contains(&head) && lines[0].ends_with('…'), "{lines:?}");
    assert!(lines[1].contains(&format!("msg {}", g1["messageId"])) && lines[1].contains("duplicate"), "{lines:?}");

    // Refusals, receipts and typing, by type.
    let (mut wc, _) = s.ws(&c).await;
    let tail = Tail::start(&s.admin, &["-o", "json", "--type", "refused,receipt,typing", "--count", "3"]).await;
    let refused = wc.send_msg("t-8", json!({"groupId": gid}), "let me in").await;
    assert_eq!(refused["type"], "error");
    wb.send(json!({"type": "typing", "receiverId": a.id})).await;
    wa.next_of("typing").await;
    wb.send(json!({"type": "receipt", "messageId": direct["messageId"], "status": "read"})).await;
    wa.next_of("receipt").await;
    let r = tail.finish().await;
    let mut events = ndjson(&r);
    events.sort_by_key(|e| e["type"].as_str().unwrap().to_owned());
    assert_eq!(events.len(), 3, "{r:?}");
    assert_eq!((events[0]["type"].as_str(), events[0]["userId"].as_i64(), events[0]["status"].as_str()), (Some("receipt"), Some(b.id), Some("read")));
    assert_eq!(events[0]["messageId"], direct["messageId"]);
    assert_eq!(events[0]["notified"], json!([a.id]));
    assert_eq!((events[1]["type"].as_str(), events[1]["code"].as_str(), events[1]["senderId"].as_i64()), (Some("refused"), Some("forbidden"), Some(c.id)));
    assert_eq!((events[2]["type"].as_str(), events[2]["senderId"].as_i64(), events[2]["receiverId"].as_i64()), (Some("typing"), Some(b.id), Some(a.id)));

    // Ctrl-C ends a tail with 0. While it runs, the node counts it.
    let tail = Tail::start(&s.admin, &[]).await;
    let nodes = chatctl(&s, &["-o", "json", "node", "list"]).await.ok().json();
    assert!(nodes["nodes"][0]["tails"].as_u64() >= Some(1), "{nodes}");
    tail.interrupt();
    let r = tail.finish().await;
    assert_eq!(r.code, 0, "{r:?}");

    // Every tail above is gone on the server too: nothing is left subscribed.
    tails_drop_to_zero(&s).await;

    // Refusals: bad token 77, unknown user 3, bad type 2, bad count 2.
    let r = chatctl_with(&s.admin, Some("wrong-token-wrong-token-0000"), &["msg", "tail", "--count", "1"]).await;
    assert_eq!(r.code, 77, "{r:?}");
    assert!(r.stdout.is_empty() && r.stderr.contains("unauthorized"), "{r:?}");
    assert_eq!(chatctl(&s, &["msg", "tail", "--user", "424242", "--count", "1"]).await.code, 3);
    assert_eq!(chatctl(&s, &["msg", "tail", "--group", "424242", "--count", "1"]).await.code, 3);
    assert_eq!(chatctl(&s, &["msg", "tail", "--type", "gossip"]).await.code, 2);
    assert_eq!(chatctl(&s, &["msg", "tail", "--count", "0"]).await.code, 2);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = chatctl_with(&format!("http://127.0.0.1:{port}"), Some(TOKEN), &["msg", "tail", "--count", "1"]).await;
    assert_eq!(r.code, 69, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_tail_ends_with_the_gateway_without_holding_it_up() {
    let s = server().await;
    let a = s.user("ann").await;
    let (mut wa, _) = s.ws(&a).await;
    let mut tail = Tail::start(&s.admin, &["-o", "json"]).await;
    let ack = wa.send_msg("s-1", json!({"receiverId": a.id}), "note to self").await;
    let first: Value = serde_json::from_str(&tail.line(Duration::from_secs(10)).await.expect("an event")).unwrap();
    assert_eq!(first["messageId"], ack["messageId"]);
    // The raw stream: NDJSON, a `start` line first.
    let res = reqwest::Client::new().get(format!("{}/admin/v1/tail?types=typing", s.admin)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut res = res;
    let chunk = res.chunk().await.unwrap().expect("the start line");
    let start: Value = serde_json::from_slice(&chunk).unwrap();
    assert_eq!((start["type"].as_str(), start["types"].clone()), (Some("start"), json!(["typing"])), "{start}");
    drop(wa);
    // Graceful shutdown does not wait for the open streams: each is ended with an `end` line.
    let started = std::time::Instant::now();
    s.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    let rest = res.chunk().await.unwrap().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    assert!(rest.contains(r#""type":"end""#), "{rest:?}");
    let r = tail.finish().await;
    assert_eq!(r.code, 69, "{r:?}");
    assert!(r.stderr.contains("ended the stream: shutdown"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_endpoint_in_the_list_is_skipped() {
    let s = server().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoints = format!("127.0.0.1:{port},{}", s.admin);
    let r = chatctl_with(&endpoints, Some(TOKEN), &["-o", "json", "node", "list"]).await.ok();
    assert_eq!(r.json()["nodes"][0]["nodeId"], "gw-1");
    assert!(r.stderr.contains("warning"), "{r:?}");
    let r = chatctl_with(&endpoints, Some(TOKEN), &["-o", "json", "user", "show", "1"]).await;
    assert_eq!(r.code, 3, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_lists_both_nodes() {
    if !testkit::cluster_mode() {
        eprintln!("skipped: set SWITCHBOARD_TEST_MODE=cluster (and KAFKA_BROKERS) to run against a cluster");
        return;
    }
    let s = TestServer::start_with(|c| c.server.admin_token = Some(TOKEN.into())).await;
    let (a, b): (TestUser, TestUser) = (s.user("ann").await, s.user("bob").await);
    let (_wa, _) = s.ws(&a).await; // node A
    let (mut wb, _) = s.ws(&b).await; // node B
    let nodes = chatctl(&s, &["-o", "json", "node", "list"]).await.ok().json();
    let ids: Vec<&str> = nodes["nodes"].as_array().unwrap().iter().filter_map(|n| n["nodeId"].as_str()).collect();
    assert!(ids.contains(&"gw-test") && ids.contains(&"gw-test-b"), "{nodes}");
    assert!(nodes["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "serving"), "{nodes}");
    let st = chatctl(&s, &["-o", "json", "cluster", "status"]).await.ok().json();
    assert_eq!(st["mode"], "cluster");
    for svc in st["services"].as_array().unwrap() {
        assert_eq!(svc["ok"], true, "{svc}");
    }
    assert!(st["kafka"]["groups"].as_array().unwrap().iter().any(|g| g["group"].as_str().unwrap().ends_with("router")), "{st}");
    fits_100_columns(&chatctl(&s, &["cluster", "status"]).await.ok().stdout);
    // Lag is read from Kafka by the node asked.
    let groups = chatctl(&s, &["-o", "json", "topic", "lag"]).await.ok().json()["groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    assert!(groups[0]["partitions"].as_array().is_some_and(|p| !p.is_empty()), "{groups}");
    assert_eq!(st["lag"].as_array().map(Vec::len), Some(2), "{st}");
    // Presence comes from Redis: Bob is on node B.
    let u = chatctl(&s, &["-o", "json", "user", "show", &b.id.to_string()]).await.ok().json();
    assert_eq!(u["presence"]["nodes"], json!(["gw-test-b"]));
    // A send through Kafka and the router process reaches node B.
    let sent = chatctl(&s, &["-o", "json", "msg", "send", "--from", &a.id.to_string(), "--to", &b.id.to_string(), "--text", "via kafka"])
        .await
        .ok()
        .json();
    let m = wb.next_of_within("message", Duration::from_secs(30)).await;
    assert_eq!(m["messageId"], sent["messageId"]);
}

/// Node A's admin API answers for node B too: its figures, its connections, kicks and drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_any_node_answers_for_the_others() {
    if !testkit::cluster_mode() {
        eprintln!("skipped: set SWITCHBOARD_TEST_MODE=cluster (and KAFKA_BROKERS) to run against a cluster");
        return;
    }
    let s = TestServer::start_with(|c| c.server.admin_token = Some(TOKEN.into())).await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cat").await);
    let (_wa, _) = s.ws(&a).await; // node A
    let (mut wb, _) = s.ws(&b).await; // node B
    let (_wc1, _) = s.ws(&c).await; // node A
    let (mut wc2, _) = s.ws(&c).await; // node B

    // Node B's own figures, fetched from its admin listener by node A.
    let nodes = chatctl(&s, &["-o", "json", "node", "list"]).await.ok().json();
    let node_b = nodes["nodes"].as_array().unwrap().iter().find(|n| n["nodeId"] == "gw-test-b").unwrap().clone();
    assert_eq!((node_b["local"].as_bool(), node_b["reachable"].as_bool()), (Some(false), Some(true)), "{node_b}");
    assert_eq!(node_b["connections"], 2, "{node_b}");
    assert!(node_b["version"].is_string() && node_b["uptimeSecs"].is_u64() && node_b["adminAddress"].is_string(), "{node_b}");

    // Connections of both nodes in one listing, by node then id.
    let list = chatctl(&s, &["-o", "json", "conn", "list"]).await.ok().json();
    assert_eq!(list["total"], 4, "{list}");
    let on = |node: &str| list["conns"].as_array().unwrap().iter().filter(|c| c["nodeId"] == node).count();
    assert_eq!((on("gw-test"), on("gw-test-b")), (2, 2), "{list}");
    let only_b = chatctl(&s, &["-o", "json", "conn", "list", "--node", "gw-test-b", "--user", &b.id.to_string()]).await.ok().json();
    assert_eq!(only_b["total"], 1, "{only_b}");
    assert_eq!(only_b["nodeId"], "gw-test-b", "answered by node B itself: {only_b}");
    assert_eq!(chatctl(&s, &["conn", "list", "--node", "gw-nope"]).await.code, 3);

    // Kick Bob's connection on node B through node A.
    let bob_conn = only_b["conns"][0]["connId"].as_u64().unwrap().to_string();
    let r = chatctl(&s, &["-o", "json", "conn", "kick", &bob_conn, "--node", "gw-test-b", "--yes"]).await.ok().json();
    assert_eq!((r["nodeId"].as_str(), r["kicked"].as_array().map(Vec::len)), (Some("gw-test-b"), Some(1)), "{r}");
    assert_eq!(close_of(&mut wb).await, (4000, "kicked by an operator".to_owned()));

    // A user's kick closes their sockets on both nodes.
    let r = chatctl(&s, &["-o", "json", "conn", "kick", "--user", &c.id.to_string(), "--yes"]).await.ok().json();
    let mut kicked: Vec<String> = r["kicked"].as_array().unwrap().iter().map(|k| k["nodeId"].as_str().unwrap().to_owned()).collect();
    kicked.sort();
    assert_eq!(kicked, ["gw-test", "gw-test-b"], "{r}");
    assert_eq!(close_of(&mut wc2).await.0, 4000);

    // Drain node B through node A, see it draining, undrain it.
    let d = chatctl(&s, &["-o", "json", "node", "drain", "gw-test-b", "--rate", "1000", "--yes"]).await.ok().json();
    assert_eq!((d["nodeId"].as_str(), d["state"].as_str()), (Some("gw-test-b"), Some("draining")), "{d}");
    let nodes = chatctl(&s, &["-o", "json", "node", "list"]).await.ok().json();
    let node_b = nodes["nodes"].as_array().unwrap().iter().find(|n| n["nodeId"] == "gw-test-b").unwrap().clone();
    assert_eq!(node_b["state"], "draining", "{node_b}");
    let u = chatctl(&s, &["-o", "json", "node", "undrain", "gw-test-b"]).await.ok().json();
    assert_eq!(u["state"], "serving", "{u}");
    assert_eq!(chatctl(&s, &["node", "drain", "gw-nope", "--yes"]).await.code, 3);

    // Disabling a user through node A closes their socket on node B at once (node B says so).
    let d = s.user("dan").await;
    let (_wa2, _) = s.ws(&a).await; // node A
    let (mut wd, _) = s.ws(&d).await; // node B
    let r = chatctl(&s, &["-o", "json", "user", "disable", &d.id.to_string(), "--yes"]).await.ok().json();
    assert_eq!(r["closedConnections"], 1, "{r}");
    assert_eq!(close_of(&mut wd).await, (1008, "account disabled".to_owned()));
    let r = chatctl(&s, &["-o", "json", "user", "enable", &d.id.to_string()]).await.ok().json();
    assert_eq!(r["disabled"], false, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_msg_tail_follows_every_node_through_kafka() {
    if !testkit::cluster_mode() {
        eprintln!("skipped: set SWITCHBOARD_TEST_MODE=cluster (and KAFKA_BROKERS) to run against a cluster");
        return;
    }
    let s = TestServer::start_with(|c| c.server.admin_token = Some(TOKEN.into())).await;
    let (a, b): (TestUser, TestUser) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await; // node A
    let (mut wb, _) = s.ws(&b).await; // node B
    // Bodies never leave a cluster through the tail.
    let r = chatctl(&s, &["msg", "tail", "--bodies", "--count", "1"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("standalone"), "{r:?}");

    let mut tail = Tail::start(&s.admin, &["-o", "json", "--user", &b.id.to_string()]).await;
    assert!(tail.err_seen.iter().any(|l| l.contains("(cluster)")), "{:?}", tail.err_seen);
    // The router starts publishing within a second of the tail's flag, and the tail's own
    // consumer group reads from the end once Kafka has assigned it the partition: send until
    // one committed message shows up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    'warm: loop {
        assert!(tokio::time::Instant::now() < deadline, "no message event within 60 s");
        i += 1;
        wa.send_msg(&format!("warm-{i}"), json!({"receiverId": b.id}), "warming up").await;
        while let Some(l) = tail.line(Duration::from_millis(1000)).await {
            let e: Value = serde_json::from_str(&l).unwrap();
            if e["type"] == "message" {
                break 'warm;
            }
        }
    }
    // A send on node B and one on node A, committed by the router process; a receipt routed
    // by node B itself. All reach node A's tail through Kafka, metadata only.
    let ack1 = wb.send_msg("k-1", json!({"receiverId": a.id}), "from node b").await;
    let ack2 = wa.send_msg("k-2", json!({"receiverId": b.id}), "from node a").await;
    wb.send(json!({"type": "receipt", "messageId": ack2["messageId"], "status": "read"})).await;
    let mut seen = BTreeMap::new();
    while seen.len() < 3 {
        let l = tail.line(Duration::from_secs(30)).await.expect("both messages and the receipt within 30 s");
        let e: Value = serde_json::from_str(&l).unwrap();
        match (e["type"].as_str(), e["clientMsgId"].as_str()) {
            (Some("message"), Some(cid @ ("k-1" | "k-2"))) => seen.insert(cid.to_owned(), e),
            (Some("receipt"), _) if e["messageId"] == ack2["messageId"] => seen.insert("receipt".to_owned(), e),
            _ => None,
        };
    }
    let (k1, k2, rc) = (&seen["k-1"], &seen["k-2"], &seen["receipt"]);
    assert_eq!((k1["messageId"].as_i64(), k1["senderId"].as_i64(), k1["receiverId"].as_i64()), (ack1["messageId"].as_i64(), Some(b.id), Some(a.id)), "{k1}");
    assert_eq!((k1["node"].as_str(), k1["bodyBytes"].as_u64(), k1["online"].as_u64()), (Some("gw-test-b"), Some(11), Some(1)), "{k1}");
    assert_eq!((k2["messageId"].as_i64(), k2["node"].as_str()), (ack2["messageId"].as_i64(), Some("gw-test")), "{k2}");
    assert_eq!((rc["userId"].as_i64(), rc["node"].as_str(), rc["status"].as_str()), (Some(b.id), Some("gw-test-b"), Some("read")), "{rc}");
    for e in [k1, k2] {
        assert!(e.get("body").is_none() && e.get("recipientIds").is_none(), "{e}");
    }
    tail.interrupt();
    let r = tail.finish().await;
    assert_eq!(r.code, 0, "{r:?}");
    tails_drop_to_zero(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_admin_api() {
    let s = server().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", s.base)).await.unwrap().json().await.unwrap();
    let routes = [
        ("/admin/v1/node", "get"),
        ("/admin/v1/nodes", "get"),
        ("/admin/v1/cluster", "get"),
        ("/admin/v1/lag", "get"),
        ("/admin/v1/nodes/{node}/drain", "post"),
        ("/admin/v1/nodes/{node}/undrain", "post"),
        ("/admin/v1/conns", "get"),
        ("/admin/v1/conns/{conn}/kick", "post"),
        ("/admin/v1/users", "post"),
        ("/admin/v1/users/{user}", "get"),
        ("/admin/v1/users/{user}", "delete"),
        ("/admin/v1/users/{user}/disable", "post"),
        ("/admin/v1/users/{user}/enable", "post"),
        ("/admin/v1/users/{user}/kick", "post"),
        ("/admin/v1/groups/{group}", "get"),
        ("/admin/v1/messages", "post"),
        ("/admin/v1/tail", "get"),
    ];
    for (path, method) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing from openapi.json");
        assert_eq!(op["security"], json!([{"adminToken": []}]), "{path}");
        assert!(op["responses"]["401"].is_object(), "{path}");
    }
    assert!(doc["components"]["securitySchemes"]["adminToken"].is_object());
    // Every documented admin route is served: 401 without the token, and with it an answer
    // from the route itself (not the "no such admin route" fallback, not 405).
    let http = reqwest::Client::new();
    for (path, method) in routes {
        let url = format!("{}{}", s.admin, path.replace("{node}", "gw-9").replace("{conn}", "1").replace("{user}", "1").replace("{group}", "1"));
        let method: reqwest::Method = method.to_uppercase().parse().unwrap();
        assert_eq!(http.request(method.clone(), &url).send().await.unwrap().status(), 401, "{method} {path}");
        let res = http.request(method.clone(), &url).bearer_auth(TOKEN).json(&json!({})).send().await.unwrap();
        let status = res.status();
        // The tail is a stream that does not end: its headers are the answer.
        let body: Value = if path.ends_with("/tail") { Value::Null } else { res.json().await.unwrap_or(Value::Null) };
        assert_ne!(status, 405, "{method} {path}");
        assert_ne!(body["error"]["message"], "no such admin route", "{method} {path}");
    }
}
