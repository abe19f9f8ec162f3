//! `msg tail`: follow `GET /admin/v1/tail`, an NDJSON stream of traffic metadata.
//!
//! Stdout: one line per event, text (fitting 100 columns) or, with `-o json`, the event as one
//! JSON object per line (NDJSON). The stream's own notices go elsewhere: `start` becomes a
//! note on stderr, `heartbeat` is only a sign of life, `error` a warning on stderr, `end` (the
//! gateway shut down) exit 69. A `lagged` line (events dropped for a slow tail) is printed
//! like an event but not counted.
//!
//! Ends with exit 0 on Ctrl-C, after `--count` events, after `--for`, or when stdout is
//! closed (`| head`); with 69 when the stream breaks or stays silent past three heartbeats.

use crate::cli::{EventKind, Output};
use crate::client::{transport, Api};
use crate::exit::{Exit, Failure};
use crate::table::{fit, WIDTH};
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// The server sends a line at least every 15 s; this long without one means the stream is dead.
const SILENCE: Duration = Duration::from_secs(45);

/// What `msg tail` was asked for.
pub struct Opts {
    /// `--user`.
    pub user: Option<i64>,
    /// `--group`.
    pub group: Option<i64>,
    /// `--type`.
    pub types: Vec<EventKind>,
    /// `--bodies`.
    pub bodies: bool,
    /// `--count`.
    pub count: Option<u64>,
    /// `--for`.
    pub duration: Option<Duration>,
}

/// The query string of `GET /admin/v1/tail`.
fn path(o: &Opts) -> String {
    let mut q = Vec::new();
    if let Some(u) = o.user {
        q.push(format!("user={u}"));
    }
    if let Some(g) = o.group {
        q.push(format!("group={g}"));
    }
    if !o.types.is_empty() {
        q.push(format!("types={}", o.types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",")));
    }
    if o.bodies {
        q.push("bodies=true".into());
    }
    if q.is_empty() {
        "/tail".into()
    } else {
        format!("/tail?{}", q.join("&"))
    }
}

/// Follows the stream until Ctrl-C, `--count`, `--for`, or a failure.
///
/// # Errors
/// The server's refusal (bad token 77, unknown user or group 3, `--bodies` in cluster mode 1),
/// exit 69 when it cannot be reached or the stream breaks.
pub async fn run(api: &Api, out: Output, o: Opts) -> Result<(), Failure> {
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let deadline = o.duration.map(|d| tokio::time::Instant::now() + d);
    let path = path(&o);
    // Connecting is bounded by --timeout, not --for: a tail that never started is a failure.
    let (endpoint, mut res) = tokio::select! {
        biased;
        _ = &mut stop => return Ok(()),
        r = api.stream(&path) => r?,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut shown = 0u64;
    loop {
        let chunk = tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            _ = until(deadline) => return Ok(()),
            c = tokio::time::timeout(SILENCE, res.chunk()) => c,
        };
        let bytes = match chunk {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return Err(Failure::new(Exit::Unavailable, "stream_ended", format!("{endpoint} closed the stream"))),
            Ok(Err(e)) => return Err(transport(&endpoint, &e)),
            Err(_) => {
                let msg = format!("nothing from {endpoint} for {}s (not even a heartbeat)", SILENCE.as_secs());
                return Err(Failure::new(Exit::Unavailable, "timeout", msg));
            }
        };
        buf.extend_from_slice(&bytes);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&raw) else {
                eprintln!("chatctl: warning: not a JSON line from {endpoint}: {}", String::from_utf8_lossy(&raw).trim_end());
                continue;
            };
            match v["type"].as_str().unwrap_or_default() {
                "start" => eprintln!("chatctl: {}", start_note(&v)),
                "heartbeat" => {}
                "error" => eprintln!("chatctl: warning: {}: {}", s(&v["code"]), s(&v["message"])),
                "end" => {
                    let msg = format!("{endpoint} ended the stream: {}", s(&v["reason"]));
                    return Err(Failure::new(Exit::Unavailable, "stream_ended", msg));
                }
                kind => {
                    let line = match out {
                        // As the server wrote it (compact, one line, its key order).
                        Output::Json => String::from_utf8_lossy(&raw).trim_end().to_owned(),
                        Output::Text => fit(&text_line(&v), WIDTH),
                    };
                    if !print(&line) {
                        return Ok(());
                    }
                    if kind != "lagged" {
                        shown += 1;
                        if o.count.is_some_and(|n| shown >= n) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// Resolves at `deadline`, never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Writes one line to stdout; false once stdout is closed (`chatctl msg tail | head`).
fn print(line: &str) -> bool {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("chatctl: cannot write to stdout: {e}");
            false
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The stderr note for the `start` line.
fn start_note(v: &Value) -> String {
    let mut t = format!("tailing node {} ({})", s(&v["node"]), s(&v["mode"]));
    if !v["user"].is_null() {
        let _ = write!(t, ", user {}", s(&v["user"]));
    }
    if !v["group"].is_null() {
        let _ = write!(t, ", group {}", s(&v["group"]));
    }
    if v["bodies"] == true {
        t.push_str(", with bodies");
    }
    if v["mode"] == "cluster" {
        t.push_str("; sends of every node (Kafka), receipts and typing of this node");
    }
    t.push_str("; Ctrl-C to stop");
    t
}

/// `12:00:01.123` (UTC) for Unix ms.
fn clock(ms: i64) -> String {
    let ms_of_day = ms.rem_euclid(86_400_000);
    let (h, m, sec, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{h:02}:{m:02}:{sec:02}.{milli:03}")
}

/// `202` for a user, `g:7` for a group.
fn target(v: &Value) -> String {
    match (v.get("receiverId"), v.get("groupId")) {
        (Some(u), _) if !u.is_null() => s(u),
        (_, Some(g)) if !g.is_null() => format!("g:{}", s(g)),
        _ => "?".into(),
    }
}

/// One event as a text line (before fitting to 100 columns).
fn text_line(v: &Value) -> String {
    let at = v["timestamp"].as_i64().unwrap_or_else(switchboard_core::time::now_ms);
    let mut t = clock(at);
    t.push_str("  ");
    match v["type"].as_str().unwrap_or_default() {
        "message" => {
            let _ = write!(t, "msg {}  {} -> {}  {} B", s(&v["messageId"]), s(&v["senderId"]), target(v), s(&v["bodyBytes"]));
            if v["duplicate"] == true {
                t.push_str("  duplicate");
            } else {
                let _ = write!(t, "  online {}/{}", s(&v["online"]), s(&v["recipients"]));
            }
            if v["media"] == true {
                t.push_str("  +media");
            }
            if let Some(body) = v["body"].as_str() {
                let _ = write!(t, "  {:?}", body);
            }
        }
        "refused" => {
            let _ = write!(t, "refused  {} -> {}  {}", s(&v["senderId"]), target(v), s(&v["code"]));
        }
        "receipt" => {
            let _ = write!(t, "{} {}  by {}", s(&v["status"]), s(&v["messageId"]), s(&v["userId"]));
        }
        "typing" => {
            let _ = write!(t, "typing  {} -> {}", s(&v["senderId"]), target(v));
        }
        "lagged" => {
            let _ = write!(t, "lagged: {} event(s) skipped, the tail fell behind", s(&v["skipped"]));
        }
        other => {
            let _ = write!(t, "{other}  {v}");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_strings() {
        let o = Opts { user: None, group: None, types: vec![], bodies: false, count: None, duration: None };
        assert_eq!(path(&o), "/tail");
        let o = Opts { user: Some(4), group: Some(7), types: vec![EventKind::Message, EventKind::Typing], bodies: true, count: None, duration: None };
        assert_eq!(path(&o), "/tail?user=4&group=7&types=message,typing&bodies=true");
    }

    #[test]
    fn text_lines() {
        assert_eq!(clock(1_700_000_001_123), "22:13:21.123");
        let m = json!({"type": "message", "messageId": 4711, "senderId": 101, "receiverId": 202, "bodyBytes": 42,
            "online": 1, "recipients": 1, "duplicate": false, "media": false, "timestamp": 1_700_000_001_123_i64});
        assert_eq!(text_line(&m), "22:13:21.123  msg 4711  101 -> 202  42 B  online 1/1");
        let g = json!({"type": "message", "messageId": 5, "senderId": 1, "groupId": 7, "bodyBytes": 3, "online": 0,
            "recipients": 2, "duplicate": true, "media": true, "timestamp": 0, "body": "x".repeat(300)});
        let line = fit(&text_line(&g), WIDTH);
        assert!(line.starts_with("00:00:00.000  msg 5  1 -> g:7  3 B  duplicate  +media  \"xxx"), "{line}");
        assert_eq!(line.chars().count(), WIDTH);
        let r = json!({"type": "receipt", "userId": 2, "messageId": 9, "status": "read", "timestamp": 0});
        assert_eq!(text_line(&r), "00:00:00.000  read 9  by 2");
        let f = json!({"type": "refused", "senderId": 3, "groupId": 7, "code": "forbidden", "timestamp": 0});
        assert_eq!(text_line(&f), "00:00:00.000  refused  3 -> g:7  forbidden");
    }
}
