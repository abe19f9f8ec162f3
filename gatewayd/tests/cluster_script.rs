//! `scripts/cluster.sh`, the README's way to run a local cluster, driven as a user would:
//! start (with this build's binaries, in its own namespace and ports), use both gateways,
//! status, stop.
#![cfg(feature = "cluster")]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use testkit::cluster::{free_port, Broker, Namespace};
use testkit::WsClient;

struct Script {
    path: PathBuf,
    env: Vec<(String, String)>,
}

impl Script {
    fn run(&self, verb: &str) -> Output {
        Command::new("bash").arg(&self.path).arg(verb).envs(self.env.iter().map(|(k, v)| (k, v))).output().expect("bash runs")
    }
}

/// Stops the cluster even when an assertion fails half way.
impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}

fn show(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn ws(addr: &str, token: &str) -> WsClient {
    let url = format!("ws://{addr}/ws?token={token}");
    let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("ws connects");
    let mut c = WsClient { stream, protocol: None };
    c.until_synced().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_script_starts_a_working_cluster_and_stops_it() {
    let broker = Broker::get();
    let ns = Namespace::new();
    let state = tempfile::tempdir().unwrap();
    let http: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let admin: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let bin_dir = testkit::cluster::bin("gatewayd").parent().unwrap().to_owned();
    let join = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(" ");
    let script = Script {
        path: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh"),
        env: vec![
            ("CLUSTER_STATE".into(), state.path().display().to_string()),
            ("CLUSTER_BIN_DIR".into(), bin_dir.display().to_string()),
            ("CLUSTER_HTTP_PORTS".into(), join(&http)),
            ("CLUSTER_ADMIN_PORTS".into(), join(&admin)),
            ("CLUSTER_SCHEMA".into(), ns.schema.clone()),
            ("CLUSTER_REDIS_PREFIX".into(), ns.redis_prefix.clone()),
            ("CLUSTER_TOPIC_PREFIX".into(), ns.topic_prefix.clone()),
            ("KAFKA_BROKERS".into(), broker.brokers.clone()),
            ("SWITCHBOARD_LOG".into(), "warn".into()),
        ],
    };
    let started = script.run("start");
    assert!(started.status.success(), "start failed:\n{}", show(&started));
    let status = script.run("status");
    assert!(status.status.success(), "{}", show(&status));
    for name in ["gw-1", "gw-2", "router", "storage-workers"] {
        assert!(String::from_utf8_lossy(&status.stdout).contains(&format!("{name}: running")), "{}", show(&status));
    }
    // Every process's admin listener answers.
    let client = reqwest::Client::new();
    for port in &admin {
        let res = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }

    // Register on gw-1, log in on gw-2: one user table, one signing key.
    let (gw1, gw2) = (format!("127.0.0.1:{}", http[0]), format!("127.0.0.1:{}", http[1]));
    let mut users = Vec::new();
    for name in ["ann", "bob"] {
        let n = uuid::Uuid::new_v4().as_u128();
        let email = format!("{name}.{n:x}@example.com");
        let body = json!({"userName": name, "email": email, "phoneNumber": format!("+1{:010}", n % 10_000_000_000), "password": "123456"});
        let res = client.post(format!("http://{gw1}/user/register")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let login: Value = client.post(format!("http://{gw2}/user/login")).json(&json!({"email": email, "password": "123456"})).send().await.unwrap().json().await.unwrap();
        users.push((login["userId"].as_i64().unwrap(), login["token"].as_str().unwrap().to_owned()));
    }
    // Ann on gw-1 writes to Bob on gw-2 through the router.
    let mut wa = ws(&gw1, &users[0].1).await;
    let mut wb = ws(&gw2, &users[1].1).await;
    wa.send(json!({"type": "send", "clientMsgId": "s1", "receiverId": users[1].0, "message": "via the script"})).await;
    let ack = wa.next_of_within("ack", Duration::from_secs(60)).await;
    let m = wb.next_of_within("message", Duration::from_secs(60)).await;
    assert_eq!((m["message"].clone(), m["messageId"].clone()), (json!("via the script"), ack["messageId"].clone()));
    drop((wa, wb));

    let pids: Vec<String> = ["gw-1", "gw-2", "router", "storage-workers"]
        .iter()
        .map(|n| std::fs::read_to_string(state.path().join(format!("{n}.pid"))).unwrap().trim().to_owned())
        .collect();
    let stopped = script.run("stop");
    assert!(stopped.status.success(), "{}", show(&stopped));
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still runs after stop");
    }
    assert_eq!(script.run("status").status.code(), Some(3));
}
