//! Parked sessions (`ws::park`): idle sessions give up their task and socket registration and
//! are resumed by traffic in either direction, by the peer leaving, by pings, by closes and
//! by shutdown. Tests here run one at a time: they read the process-wide parked gauge.

use serde_json::json;
use std::time::Duration;
use testkit::{Closed, TestServer, DEADLINE};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn parked(s: &TestServer) -> i64 {
    let (_, text) = s.admin_get("/metrics").await;
    text.lines()
        .find(|l| l.starts_with("switchboard_gateway_connections_parked "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as i64
}

/// Waits until `n` sessions are parked.
async fn until_parked(s: &TestServer, n: i64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = parked(s).await;
        if now == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} sessions parked, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn parking_server() -> TestServer {
    TestServer::start_with(|c| c.ws.park_after = Duration::ZERO).await
}

#[tokio::test]
async fn idle_sessions_park_and_wake_for_traffic_both_ways() {
    let _one = SERIAL.lock().await;
    let s = parking_server().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    until_parked(&s, 2).await;
    for round in 0..3 {
        // Ann's frame wakes Ann's session; the delivery wakes Bob's.
        let ack = wa.send_msg(&format!("p{round}"), json!({"receiverId": b.id}), "wake up").await;
        let m = wb.next_of("message").await;
        assert_eq!(m["messageId"], ack["messageId"]);
        // Bob's receipt goes the other way.
        wb.send(json!({"type": "receipt", "messageId": m["messageId"], "status": "read"})).await;
        assert_eq!(wa.next_of("receipt").await["messageId"], m["messageId"]);
        until_parked(&s, 2).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn a_parked_session_notices_its_client_leaving() {
    let _one = SERIAL.lock().await;
    let s = parking_server().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (_wa, _) = s.ws(&a).await;
    let (wb, _) = s.ws(&b).await;
    until_parked(&s, 2).await;
    assert_eq!(s.get(&format!("/user/{}", b.id), &a.token).await.1["online"], true);
    drop(wb);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while s.get(&format!("/user/{}", b.id), &a.token).await.1["online"] != false {
        assert!(tokio::time::Instant::now() < deadline, "bob still online after leaving while parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_parked(&s, 1).await;
    s.stop().await;
}

#[tokio::test]
async fn parked_sessions_get_pings_and_closes() {
    let _one = SERIAL.lock().await;
    let s = TestServer::start_with(|c| {
        c.ws.park_after = Duration::ZERO;
        c.ws.ping_interval = Duration::from_millis(200);
        c.ws.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let mut raw = s.raw_ws(&a.token).await;
    let (mut wb, _) = s.ws(&b).await;
    until_parked(&s, 2).await;
    // A ping reaches the parked raw session.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let f = raw.next_frame().await.expect("a frame");
        if f.opcode == switchboard_core::frame::Opcode::Ping {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no ping");
    }
    // Deleting Bob's account closes his parked session with 1008.
    until_parked(&s, 2).await;
    let (st, _) = s.call(reqwest::Method::DELETE, &format!("/user/{}", b.id), Some(&b.token), None).await;
    assert_eq!(st, 204);
    assert_eq!(wb.closed().await, Closed::Code(1008));
    // Shutdown closes the other parked session with 1001.
    until_parked(&s, 1).await;
    let stop = tokio::spawn(s.stop());
    assert_eq!(raw.close_code().await, Some(1001));
    stop.await.unwrap();
}
