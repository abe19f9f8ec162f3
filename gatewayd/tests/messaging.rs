//! The WebSocket contract: sends, acks, delivery, resend dedupe, order, multi-device,
//! offline sync, receipts, typing, groups.

use serde_json::json;
use std::time::Duration;
use testkit::TestServer;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn seed_form_send_is_acked_and_delivered() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    wa.send(json!({"senderId": a.id, "receiverId": b.id, "message": "Hello!"})).await;
    let ack = wa.next_of("ack").await;
    assert!(ack["messageId"].as_i64().unwrap() > 0);
    assert_eq!(ack["conversationSeq"], 1);
    assert!(ack["timestamp"].as_i64().unwrap() > 0);
    assert!(ack.get("clientMsgId").is_none());
    let m = wb.next_of("message").await;
    assert_eq!(m["senderId"], a.id);
    assert_eq!(m["receiverId"], b.id);
    assert_eq!(m["message"], "Hello!");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["conversationSeq"], 1);
}

#[tokio::test]
async fn sender_id_must_be_the_token_user() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    wa.send(json!({"senderId": b.id, "receiverId": b.id, "message": "spoof", "clientMsgId": "c1"})).await;
    let e = wa.next_of("error").await;
    assert_eq!(e["code"], "sender_mismatch");
    assert_eq!(e["clientMsgId"], "c1");
    wb.assert_no("message", QUIET).await;
    // The socket stays usable.
    let ack = wa.send_msg("c2", json!({"receiverId": b.id}), "fine").await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn resend_with_same_client_id_is_deduplicated() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    let first = wa.send_msg("same", json!({"receiverId": b.id}), "once").await;
    let second = wa.send_msg("same", json!({"receiverId": b.id}), "once").await;
    assert_eq!(first["messageId"], second["messageId"]);
    assert_eq!(first["conversationSeq"], second["conversationSeq"]);
    assert_eq!(second["duplicate"], true);
    wb.next_of("message").await;
    wb.assert_no("message", QUIET).await;
    let (_, page) = s.get(&format!("/messages/{}/{}", a.id, b.id), &a.token).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn order_holds_per_conversation_under_a_burst() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    for i in 0..200 {
        wa.send(json!({"type": "send", "clientMsgId": format!("m{i}"), "receiverId": b.id, "message": format!("n{i}")})).await;
    }
    let mut acks = 0;
    while acks < 200 {
        if wa.next().await["type"] == "ack" {
            acks += 1;
        }
    }
    for i in 0..200 {
        let m = wb.next_of("message").await;
        assert_eq!(m["message"], format!("n{i}"));
        assert_eq!(m["conversationSeq"], i + 1);
    }
}

#[tokio::test]
async fn every_device_gets_the_message_and_the_sender_gets_a_copy_elsewhere() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let a2 = s.login(&a.email, "123456").await;
    let b2 = s.login(&b.email, "123456").await;
    let (mut wa, _) = s.ws(&a).await;
    let (mut wa2, _) = s.ws(&a2).await;
    let (mut wb, _) = s.ws(&b).await;
    let (mut wb2, _) = s.ws(&b2).await;
    let ack = wa.send_msg("x", json!({"receiverId": b.id}), "to all devices").await;
    for w in [&mut wb, &mut wb2, &mut wa2] {
        let m = w.next_of("message").await;
        assert_eq!(m["messageId"], ack["messageId"]);
    }
    wa.assert_no("message", QUIET).await;
}

#[tokio::test]
async fn offline_messages_arrive_in_order_on_reconnect_then_synced() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    for i in 0..5 {
        wa.send_msg(&format!("o{i}"), json!({"receiverId": b.id}), &format!("offline {i}")).await;
    }
    let (_, backlog) = s.ws(&b).await;
    let texts: Vec<_> = backlog.iter().map(|m| m["message"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, (0..5).map(|i| format!("offline {i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn device_cursor_decides_what_is_pushed_again() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    for i in 0..3 {
        wa.send_msg(&format!("c{i}"), json!({"receiverId": b.id}), &format!("m{i}")).await;
    }
    // Bob's device acknowledges the first message only.
    let (mut wb, backlog) = s.ws(&b).await;
    assert_eq!(backlog.len(), 3);
    wb.send(json!({"type": "receipt", "messageId": backlog[0]["messageId"], "status": "delivered"})).await;
    wa.next_of("receipt").await;
    drop(wb);
    // Same device again: everything after its cursor.
    let (_, again) = s.ws(&b).await;
    assert_eq!(again.iter().map(|m| m["message"].clone()).collect::<Vec<_>>(), vec![json!("m1"), json!("m2")]);
    // A never-seen device: only what no device of Bob's got (delivered marks m0 only).
    let b_new = s.login(&b.email, "123456").await;
    let (_, fresh) = s.ws(&b_new).await;
    assert_eq!(fresh.len(), 2);
    // An explicit sync replays after any cursor.
    let (mut wb3, _) = s.ws(&b_new).await;
    wb3.send(json!({"type": "sync", "after": 0})).await;
    let mut replay = Vec::new();
    loop {
        let v = wb3.next().await;
        if v["type"] == "synced" {
            break;
        }
        if v["type"] == "message" {
            replay.push(v["message"].clone());
        }
    }
    assert_eq!(replay, vec![json!("m0"), json!("m1"), json!("m2")]);
}

#[tokio::test]
async fn cursor_frame_advances_without_a_receipt() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let last = wa.send_msg("k1", json!({"receiverId": b.id}), "one").await;
    let (mut wb, backlog) = s.ws(&b).await;
    assert_eq!(backlog.len(), 1);
    wb.send(json!({"type": "cursor", "messageId": last["messageId"]})).await;
    // A ping round trip proves the cursor frame was handled before we disconnect.
    wb.send(json!({"type": "ping"})).await;
    wb.next_of("pong").await;
    drop(wb);
    // Poll: the cursor write is asynchronous to the pong.
    let deadline = tokio::time::Instant::now() + testkit::DEADLINE;
    loop {
        let (_, again) = s.ws(&b).await;
        if again.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "cursor never advanced");
    }
}

#[tokio::test]
async fn receipts_reach_every_sender_device_and_read_covers_earlier() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let a2 = s.login(&a.email, "123456").await;
    let (mut wa, _) = s.ws(&a).await;
    let (mut wa2, _) = s.ws(&a2).await;
    let (mut wb, _) = s.ws(&b).await;
    let m1 = wa.send_msg("r1", json!({"receiverId": b.id}), "first").await;
    let m2 = wa.send_msg("r2", json!({"receiverId": b.id}), "second").await;
    wb.send(json!({"type": "receipt", "messageId": m1["messageId"], "status": "delivered"})).await;
    for w in [&mut wa, &mut wa2] {
        let r = w.next_of("receipt").await;
        assert_eq!((r["messageId"].clone(), r["status"].clone(), r["userId"].clone()), (m1["messageId"].clone(), json!("delivered"), json!(b.id)));
    }
    // Read of the second covers the first: unread drops to zero.
    wb.send(json!({"type": "receipt", "messageId": m2["messageId"], "status": "read"})).await;
    let r = wa.next_of("receipt").await;
    assert_eq!((r["messageId"].clone(), r["status"].clone()), (m2["messageId"].clone(), json!("read")));
    let (_, chats) = s.get(&format!("/chat/{}", b.id), &b.token).await;
    assert_eq!(chats["chats"][0]["unreadCount"], 0);
    // "read" implies "delivered": a late delivered receipt tells nobody anything.
    wb.send(json!({"type": "receipt", "messageId": m1["messageId"], "status": "delivered"})).await;
    wa.assert_no("receipt", QUIET).await;
}

#[tokio::test]
async fn receipts_for_messages_not_received_are_refused() {
    let s = TestServer::start().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cid").await);
    let (mut wa, _) = s.ws(&a).await;
    let m = wa.send_msg("p", json!({"receiverId": b.id}), "private").await;
    let (mut wc, _) = s.ws(&c).await;
    wc.send(json!({"type": "receipt", "messageId": m["messageId"], "status": "read"})).await;
    assert_eq!(wc.next_of("error").await["code"], "forbidden");
    wc.send(json!({"type": "receipt", "messageId": 999999, "status": "read"})).await;
    assert_eq!(wc.next_of("error").await["code"], "not_found");
    wa.assert_no("receipt", QUIET).await;
}

#[tokio::test]
async fn typing_is_relayed_not_stored() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    wa.send(json!({"type": "typing", "receiverId": b.id})).await;
    let t = wb.next_of("typing").await;
    assert_eq!(t["userId"], a.id);
    let (_, page) = s.get(&format!("/messages/{}/{}", a.id, b.id), &a.token).await;
    assert!(page["messages"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn group_messages_fan_out_to_members_only() {
    let s = TestServer::start().await;
    let (a, b, c, d) = (s.user("ann").await, s.user("bob").await, s.user("cid").await, s.user("dan").await);
    let (_, g) = s.post("/groups/create", Some(&a.token), json!({"groupName": "team", "createdBy": a.id})).await;
    let gid = g["groupId"].as_i64().unwrap();
    for u in [&b, &c] {
        let (st, _) = s.post(&format!("/groups/{gid}/add"), Some(&a.token), json!({"userId": u.id})).await;
        assert_eq!(st, 200);
    }
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    let (mut wc, _) = s.ws(&c).await;
    let (mut wd, _) = s.ws(&d).await;
    let ack = wa.send_msg("g1", json!({"groupId": gid}), "hi team").await;
    assert_eq!(ack["type"], "ack");
    for w in [&mut wb, &mut wc] {
        let m = w.next_of("message").await;
        assert_eq!((m["groupId"].clone(), m["message"].clone()), (json!(gid), json!("hi team")));
    }
    wd.assert_no("message", QUIET).await;
    // Non-members cannot send or type into the group.
    let e = wd.send_msg("g2", json!({"groupId": gid}), "let me in").await;
    assert_eq!((e["type"].clone(), e["code"].clone()), (json!("error"), json!("forbidden")));
    wd.send(json!({"type": "typing", "groupId": gid})).await;
    assert_eq!(wd.next_of("error").await["code"], "forbidden");
    // Group typing reaches the others.
    wb.send(json!({"type": "typing", "groupId": gid})).await;
    assert_eq!(wc.next_of("typing").await["groupId"], gid);
    // Removed members stop receiving; removed members cannot send.
    let (st, _) = s.call(reqwest::Method::DELETE, &format!("/groups/{gid}/remove"), Some(&a.token), Some(json!({"userId": c.id}))).await;
    assert_eq!(st, 200);
    wa.send_msg("g3", json!({"groupId": gid}), "after removal").await;
    assert_eq!(wb.next_of("message").await["message"], "after removal");
    wc.assert_no("message", QUIET).await;
    let e = wc.send_msg("g4", json!({"groupId": gid}), "still here?").await;
    assert_eq!(e["code"], "forbidden");
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let cases = [
        ("not json", "malformed_frame"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"send","message":"no target"}"#, "invalid_frame"),
        (r#"{"type":"send","receiverId":1,"groupId":2,"message":"both"}"#, "invalid_frame"),
        (r#"{"type":"receipt","messageId":1,"status":"seen"}"#, "malformed_frame"),
    ];
    for (text, code) in cases {
        wa.send_text(text).await;
        assert_eq!(wa.next_of("error").await["code"], code, "{text}");
    }
    let e = wa.send_msg("nobody", json!({"receiverId": 987654}), "to nobody").await;
    assert_eq!(e["code"], "not_found");
    let long = "x".repeat(16385);
    let e = wa.send_msg("long", json!({"receiverId": b.id}), &long).await;
    assert_eq!(e["code"], "message_too_long");
    use futures_util::SinkExt;
    wa.stream.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(wa.next_of("error").await["code"], "unsupported_binary");
    wa.send(json!({"type": "ping"})).await;
    assert_eq!(wa.next_of("pong").await["type"], "pong");
    let ack = wa.send_msg("ok", json!({"receiverId": b.id}), "still works").await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let s = TestServer::start_with(|c| c.ws.max_frame_bytes = 1024).await;
    let a = s.user("ann").await;
    let (mut wa, _) = s.ws(&a).await;
    wa.send_text(&format!(r#"{{"type":"send","receiverId":1,"message":"{}"}}"#, "x".repeat(2000))).await;
    assert_eq!(wa.closed().await, testkit::Closed::Code(1009));
}

#[tokio::test]
async fn messages_survive_a_restart() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(wa.send_msg(&format!("p{i}"), json!({"receiverId": b.id}), &format!("durable {i}")).await["messageId"].clone());
    }
    drop(wa);
    let tmp = s.stop().await;
    let dir = tmp.as_ref().unwrap().path();
    let s2 = TestServer::start_in(dir, |_| {}).await;
    // Tokens stay valid (same secret), the backlog is intact and in order.
    let (_, backlog) = s2.ws(&b).await;
    assert_eq!(backlog.iter().map(|m| m["messageId"].clone()).collect::<Vec<_>>(), ids);
    // A resend after the restart is still deduplicated.
    let (mut wa, _) = s2.ws(&a).await;
    let again = wa.send_msg("p0", json!({"receiverId": b.id}), "durable 0").await;
    assert_eq!((again["messageId"].clone(), again["duplicate"].clone()), (ids[0].clone(), json!(true)));
    s2.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let (mut wa, _) = s.ws(&a).await;
    let stopping = tokio::spawn(s.stop());
    assert_eq!(wa.closed().await, testkit::Closed::Code(1001));
    stopping.await.unwrap();
}

#[tokio::test]
async fn silent_sockets_are_pinged_then_reaped_with_1001() {
    use switchboard_core::frame::Opcode;
    let s = TestServer::start_with(|c| {
        c.ws.ping_interval = Duration::from_millis(300);
        c.ws.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let a = s.user("ann").await;
    let mut raw = s.raw_ws(&a.token).await;
    assert_eq!(raw.next_json().await["type"], "synced");
    // A WebSocket ping from the client is answered with a pong carrying the same payload.
    raw.send_frame(Opcode::Ping, true, b"hi").await;
    let mut saw_server_ping = false;
    loop {
        let f = raw.next_frame().await.expect("pong");
        match f.opcode {
            Opcode::Pong => {
                assert_eq!(&f.payload[..], b"hi");
                break;
            }
            Opcode::Ping => saw_server_ping = true,
            _ => {}
        }
    }
    // Then stay silent (never pong): the server pings, then reaps.
    let mut code = None;
    while let Some(f) = raw.next_frame().await {
        match f.opcode {
            Opcode::Ping => saw_server_ping = true,
            Opcode::Close => {
                code = Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
                break;
            }
            _ => {}
        }
    }
    assert!(saw_server_ping, "server never pinged");
    assert_eq!(code, Some(1001));
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_and_violations_close_1002() {
    use switchboard_core::frame::Opcode;
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let mut raw = s.raw_ws(&a.token).await;
    assert_eq!(raw.next_json().await["type"], "synced");
    let text = format!(r#"{{"type":"send","clientMsgId":"f1","receiverId":{},"message":"in pieces"}}"#, b.id);
    let (x, y) = text.as_bytes().split_at(10);
    raw.send_frame(Opcode::Text, false, x).await;
    raw.send_frame(Opcode::Ping, true, b"").await; // control frames may interleave
    raw.send_frame(Opcode::Continuation, true, y).await;
    let ack = loop {
        let v = raw.next_json().await;
        if v["type"] == "ack" {
            break v;
        }
    };
    assert_eq!(ack["clientMsgId"], "f1");
    // An unmasked client frame is a protocol violation.
    let mut unmasked = Vec::new();
    switchboard_core::frame::encode(&mut unmasked, Opcode::Text, true, b"{}", None);
    raw.send_bytes(&unmasked).await;
    assert_eq!(raw.close_code().await, Some(1002));
}

#[tokio::test]
async fn invalid_utf8_text_closes_1007() {
    use switchboard_core::frame::Opcode;
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let mut raw = s.raw_ws(&a.token).await;
    assert_eq!(raw.next_json().await["type"], "synced");
    raw.send_frame(Opcode::Text, true, &[0xff, 0xfe]).await;
    assert_eq!(raw.close_code().await, Some(1007));
}

#[tokio::test]
async fn explicit_sync_pages_within_the_outbound_budget() {
    let s = TestServer::start_with(|c| {
        c.ws.max_frame_bytes = 1024;
        c.ws.outbound_queue_bytes = 4096;
    })
    .await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    for i in 0..40 {
        wa.send_msg(&format!("q{i}"), json!({"receiverId": b.id}), &format!("{i:03} {}", "y".repeat(150))).await;
    }
    let (mut wb, first) = s.ws(&b).await;
    assert_eq!(first.len(), 40, "the initial backlog is written directly, not through the queue");
    let mut got = Vec::new();
    let mut after = 0;
    let mut rounds = 0;
    loop {
        wb.send(json!({"type": "sync", "after": after})).await;
        let synced = loop {
            let v = wb.next().await;
            match v["type"].as_str() {
                Some("message") => got.push(v["message"].as_str().unwrap()[..3].to_owned()),
                Some("synced") => break v,
                _ => {}
            }
        };
        rounds += 1;
        if synced["more"] != true {
            break;
        }
        after = synced["cursor"].as_i64().unwrap();
    }
    assert!(rounds > 1, "a 4 KiB budget cannot hold 40 messages of 150+ bytes in one round");
    assert_eq!(got, (0..40).map(|i| format!("{i:03}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_under_traffic_loses_no_acked_message() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    for i in 0..100 {
        wa.send(json!({"type": "send", "clientMsgId": format!("s{i}"), "receiverId": b.id, "message": format!("m{i}")})).await;
    }
    let stopping = tokio::spawn(s.stop());
    let mut acked = Vec::new();
    let code = loop {
        match tokio::time::timeout(testkit::DEADLINE, wa.stream.next()).await.expect("closed before the deadline") {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "ack" {
                    acked.push(v["messageId"].as_i64().unwrap());
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(code, Some(1001));
    let tmp = stopping.await.unwrap();
    let s2 = TestServer::start_in(tmp.as_ref().unwrap().path(), |_| {}).await;
    let (_, backlog) = s2.ws(&b).await;
    let stored: Vec<i64> = backlog.iter().map(|m| m["messageId"].as_i64().unwrap()).collect();
    for id in &acked {
        assert!(stored.contains(id), "acked message {id} lost");
    }
    // Stored messages keep their order.
    let seqs: Vec<i64> = backlog.iter().map(|m| m["conversationSeq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    s2.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    if testkit::cluster_mode() {
        // The outbox limit is node-local and the same in both modes; through a cluster this
        // flood takes minutes on the test broker. Covered in standalone mode.
        return;
    }
    let s = TestServer::start_with(|c| {
        c.ws.max_frame_bytes = 2048;
        c.ws.outbound_queue_bytes = 16 * 1024;
        c.ws.write_timeout = Duration::from_secs(1);
        // This test floods on purpose; the per-connection limit is not what it checks.
        c.ws.rate_per_second = 1_000_000;
        c.ws.rate_burst = 1_000_000;
    })
    .await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let raw = s.raw_ws(&b.token).await; // never reads again
    let (mut wa, _) = s.ws(&a).await;
    let body = "z".repeat(1500);
    let metric = "switchboard_gateway_send_queue_dropped_total{reason=\"slow_consumer\"}";
    let deadline = tokio::time::Instant::now() + testkit::DEADLINE * 3;
    let mut i = 0;
    loop {
        // Enough traffic to fill the kernel's socket buffers, after which the outbox grows.
        for _ in 0..200 {
            wa.send(json!({"type": "send", "receiverId": b.id, "message": body})).await;
            i += 1;
        }
        let (_, ready) = s.admin_get("/readyz").await;
        let (_, metrics) = s.admin_get("/metrics").await;
        let conns = serde_json::from_str::<serde_json::Value>(&ready).unwrap()["connections"].as_i64().unwrap();
        if conns == 1 {
            // Only Ann is left: Bob was cut off, and it was for being slow.
            let dropped = metrics.lines().any(|l| l.starts_with(metric) || (l.contains("send_queue_dropped_total") && l.contains("slow_consumer")));
            let timed_out = metrics.lines().any(|l| l.contains("connections_closed_total") && l.contains("write_timeout"));
            assert!(dropped || timed_out, "closed for another reason:\n{metrics}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slow consumer never closed after {i} messages");
    }
    drop(raw);
    // Ann's socket is unaffected.
    let ack = wa.send_msg("after", json!({"receiverId": a.id}), "still here").await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn peers_hear_presence_changes() {
    let s = TestServer::start().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cid").await);
    let (mut wa, _) = s.ws(&a).await;
    wa.send_msg("hi", json!({"receiverId": b.id}), "we are peers now").await;
    let (mut wc, _) = s.ws(&c).await;
    let (wb, _) = s.ws(&b).await;
    let p = wa.next_of("presence").await;
    assert_eq!((p["userId"].clone(), p["online"].clone()), (json!(b.id), json!(true)));
    // A second device of an online user changes nothing.
    let b2 = s.login(&b.email, "123456").await;
    let (wb2, _) = s.ws(&b2).await;
    wa.assert_no("presence", QUIET).await;
    drop(wb);
    drop(wb2);
    let p = wa.next_of("presence").await;
    assert_eq!((p["userId"].clone(), p["online"].clone()), (json!(b.id), json!(false)));
    assert!(p["lastSeen"].as_i64().unwrap() > 0);
    // Not a peer: hears nothing.
    wc.assert_no("presence", QUIET).await;
}

#[tokio::test]
async fn floods_are_rate_limited_per_connection() {
    let s = TestServer::start_with(|c| {
        c.ws.rate_per_second = 1;
        c.ws.rate_burst = 5;
    })
    .await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    for i in 0..10 {
        wa.send(json!({"type": "send", "clientMsgId": format!("f{i}"), "receiverId": b.id, "message": "flood"})).await;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < 10 {
        let f = wa.next().await;
        match (f["type"].as_str(), f["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => {
                assert!(f["clientMsgId"].is_string());
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(acks >= 5 && limited >= 1, "acks {acks}, limited {limited}");
    // Pings are never limited, and the other user is unaffected.
    wa.send(json!({"type": "ping"})).await;
    wa.next_of("pong").await;
    assert_eq!(wb.send_msg("b1", json!({"receiverId": a.id}), "fine").await["type"], "ack");
}
