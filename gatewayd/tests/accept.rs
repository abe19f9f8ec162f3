//! The accept loop's two paths: canonical WebSocket upgrades taken on the bare socket, and
//! everything else handed to hyper with the bytes already read replayed, which must behave
//! exactly as before (the other test files cover the API through both).

use std::time::Duration;
use switchboard_core::frame::{self, Opcode};
use testkit::{TestServer, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn upgrade_head(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// Reads an HTTP response head; returns it and whatever followed it.
async fn response_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await.expect("a response").unwrap();
        assert!(n > 0, "closed before a response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return (String::from_utf8_lossy(&buf[..p + 4]).into_owned(), buf[p + 4..].to_vec());
        }
    }
}

/// Reads a whole HTTP response with a Content-Length body; returns the head and the body.
async fn response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let (head, mut body) = response_head(stream).await;
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .expect("content-length");
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await.expect("a body").unwrap();
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), len, "more than the body arrived");
    (head, body)
}

/// The next text frame's JSON, reading more as needed.
async fn next_json(stream: &mut TcpStream, buf: &mut Vec<u8>) -> serde_json::Value {
    loop {
        match frame::parse(buf, 1 << 20, false) {
            Ok((f, used)) => {
                buf.drain(..used);
                if f.opcode == Opcode::Text {
                    return serde_json::from_slice(&f.payload).unwrap();
                }
            }
            Err(frame::FrameError::Incomplete) => {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await.expect("a frame").unwrap();
                assert!(n > 0, "closed");
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => panic!("bad frame: {e}"),
        }
    }
}

fn masked_text(payload: &str) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(&mut out, Opcode::Text, true, payload.as_bytes(), Some([1, 2, 3, 4]));
    out
}

async fn fast_upgrades(s: &TestServer) -> u64 {
    let (_, text) = s.admin_get("/metrics").await;
    text.lines()
        .find(|l| l.starts_with("switchboard_gateway_accepted_total{") && l.contains("path=\"fast\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test]
async fn a_canonical_upgrade_takes_the_fast_path_and_serves_the_protocol() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let before = fast_upgrades(&s).await;
    let mut stream = TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(upgrade_head("/ws?deviceId=phone-1", &a.token).as_bytes()).await.unwrap();
    let (head, mut rest) = response_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert_eq!(next_json(&mut stream, &mut rest).await["type"], "synced");
    assert!(fast_upgrades(&s).await > before, "the upgrade did not take the fast path");
    // A send over it is acked and delivered.
    let (mut wb, _) = s.ws(&b).await;
    let send = format!(r#"{{"type":"send","clientMsgId":"f1","receiverId":{},"message":"fast"}}"#, b.id);
    stream.write_all(&masked_text(&send)).await.unwrap();
    // The message makes ann and bob 1:1 peers, so bob's "online" may reach ann around the ack.
    let mut reply = next_json(&mut stream, &mut rest).await;
    while reply["type"] == "presence" {
        reply = next_json(&mut stream, &mut rest).await;
    }
    assert_eq!(reply["type"], "ack");
    assert_eq!(wb.next_of("message").await["message"], "fast");
}

#[tokio::test]
async fn a_head_split_over_several_segments_is_still_upgraded() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let head = upgrade_head("/ws", &a.token);
    let mut stream = TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for part in [&head[..10], &head[10..70], &head[70..]] {
        stream.write_all(part.as_bytes()).await.unwrap();
        // Not waiting for anything: only to make separate segments likely.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (resp, mut rest) = response_head(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    assert_eq!(next_json(&mut stream, &mut rest).await["type"], "synced");
}

#[tokio::test]
async fn bytes_sent_right_after_the_head_are_not_lost() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let mut stream = TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    let mut bytes = upgrade_head("/ws", &a.token).into_bytes();
    bytes.extend(masked_text(r#"{"type":"ping"}"#));
    stream.write_all(&bytes).await.unwrap();
    let (resp, mut rest) = response_head(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    let mut kinds = vec![next_json(&mut stream, &mut rest).await["type"].clone(), next_json(&mut stream, &mut rest).await["type"].clone()];
    kinds.sort_by_key(|k| k.to_string());
    assert_eq!(kinds, vec![serde_json::json!("pong"), serde_json::json!("synced")]);
}

#[tokio::test]
async fn rest_then_an_upgrade_on_one_kept_alive_connection() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let mut stream = TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    let get = format!("GET /user/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", a.id, a.token);
    stream.write_all(get.as_bytes()).await.unwrap();
    let (resp, body) = response(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["userId"], a.id);
    // The second request on the same connection is hyper's, and upgrades there.
    stream.write_all(upgrade_head("/ws", &a.token).as_bytes()).await.unwrap();
    let (resp, mut rest) = response_head(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    assert_eq!(next_json(&mut stream, &mut rest).await["type"], "synced");
}

#[tokio::test]
async fn refused_upgrades_get_the_rest_api_errors() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    for (head, status, code) in [
        (upgrade_head("/ws", "not-a-token"), "401", "invalid_token"),
        (upgrade_head("/ws?deviceId=bad%20id", &a.token), "400", "invalid_request"),
        (upgrade_head("/ws", "").replace("Authorization: Bearer \r\n", ""), "401", "unauthenticated"),
    ] {
        let mut stream = TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let (resp, body) = response(&mut stream).await;
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(code), "{code} not in {text}");
    }
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let s = TestServer::start_with(|c| c.server.head_timeout = Duration::from_millis(300)).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // Silent from the start.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // Half a head, then silence.
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for stream in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await.expect("closed before the deadline");
        assert!(matches!(n, Ok(0) | Err(_)), "expected the server to close, got {n:?}");
    }
    // A REST connection kept alive goes quiet after its first request: hyper closes it too.
    let a = s.user("ann").await;
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    let get = format!("GET /user/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", a.id, a.token);
    kept.write_all(get.as_bytes()).await.unwrap();
    let (resp, _) = response(&mut kept).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    kept.write_all(b"GET /user/1 HTTP/1.1\r\n").await.unwrap();
    // The connection ends (with or without a 408 first) well before the deadline.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, kept.read_to_end(&mut rest)).await.expect("closed before the deadline");
}

#[tokio::test]
async fn a_browser_style_bearer_subprotocol_is_upgraded_on_the_fast_path_and_echoed() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let before = fast_upgrades(&s).await;
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: bearer.{}\r\n\r\n",
        a.token
    );
    let mut stream = TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (resp, mut rest) = response_head(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    assert!(resp.contains(&format!("sec-websocket-protocol: bearer.{}\r\n", a.token)), "{resp}");
    assert_eq!(next_json(&mut stream, &mut rest).await["type"], "synced");
    assert!(fast_upgrades(&s).await > before, "the upgrade did not take the fast path");
}
