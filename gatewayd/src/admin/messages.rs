//! `POST /admin/v1/messages`: a smoke-test send through the real path.
//!
//! The send is submitted exactly as a client's (`AppState::sends`: the in-process router
//! queue, or Kafka's inbound topic in cluster mode) from a transient connection of the sender
//! on this node, device `chatctl`; the router commits it and its ack comes back through the
//! bus to that connection, which this handler waits for. Recipients get it like any message,
//! the sender's devices too (it came from another device).

use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::state::AppState;
use crate::ws::outbox::{ConnShared, OutFrame};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use router::{Origin, SendJob};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::ids::{ConnId, DeviceId, GroupId, MessageId, UserId};
use switchboard_core::protocol::{SendFrame, Target};
use switchboard_core::store::UserLookup;

/// Device id of admin sends.
pub const ADMIN_DEVICE: &str = "chatctl";
/// Longest wait for the router's ack.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// `POST /admin/v1/messages` body: `to` or `group`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendBody {
    from: i64,
    to: Option<i64>,
    group: Option<i64>,
    text: String,
    /// Resend key; default a fresh `chatctl-<uuid>`.
    client_msg_id: Option<String>,
}

/// The router's ack.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    message_id: MessageId,
    conversation_seq: i64,
    timestamp: i64,
    client_msg_id: String,
    duplicate: bool,
    /// Round trip through the router, milliseconds.
    latency_ms: u64,
}

/// Removes the transient connection when the handler ends, however it ends.
struct Transient<'a>(&'a AppState, Arc<ConnShared>);

impl Drop for Transient<'_> {
    fn drop(&mut self) {
        self.0.registry.remove(&self.1);
    }
}

/// `POST /admin/v1/messages`: 201 with the ack once the message is committed.
pub async fn send(State(s): State<Arc<AppState>>, ApiJson(b): ApiJson<SendBody>) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let target = match (b.to, b.group) {
        (Some(u), None) => Target::User(UserId(u)),
        (None, Some(g)) => Target::Group(GroupId(g)),
        _ => return Err(ApiError::invalid("give exactly one of to and group")),
    };
    if b.text.trim().is_empty() || b.text.chars().count() > s.cfg.ws.max_message_chars {
        return Err(ApiError::invalid(format!("text must be 1-{} characters", s.cfg.ws.max_message_chars)));
    }
    let from = s.store.account(UserLookup::Id(UserId(b.from))).await?.ok_or_else(|| ApiError::not_found("sender"))?;
    if from.disabled {
        return Err(ApiError::new(StatusCode::CONFLICT, "user_disabled", "the sender is disabled"));
    }
    let cid = b.client_msg_id.unwrap_or_else(|| format!("chatctl-{}", uuid::Uuid::new_v4().simple()));
    let device = DeviceId(ADMIN_DEVICE.into());
    let id = ConnId(s.next_conn.fetch_add(1, Ordering::Relaxed));
    let shared = Arc::new(ConnShared::new(id, from.user.user_id, device.clone(), s.cfg.ws.outbound_queue_bytes));
    s.registry.insert(shared.clone());
    let _guard = Transient(&s, shared.clone());
    let origin = Origin { node: s.node.clone(), conn: id, user: from.user.user_id, device };
    let frame = SendFrame { client_msg_id: Some(cid.clone()), target, text: b.text, media: None, claimed_sender: None };
    let started = std::time::Instant::now();
    s.sends.submit(SendJob::new(origin, frame))?;
    let reply = tokio::time::timeout(ACK_WAIT, reply_for(&shared, &cid))
        .await
        .map_err(|_| ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", format!("no ack within {ACK_WAIT:?}")))?;
    let v = reply.ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the connection closed before the ack"))?;
    if v["type"] == "error" {
        let code = v["code"].as_str().unwrap_or("error").to_owned();
        let message = v["message"].as_str().unwrap_or_default().to_owned();
        return Err(ApiError::new(status_of(&code), leak_code(&code), message));
    }
    tracing::info!(message_id = %v["messageId"], "admin send acked");
    Ok((
        StatusCode::CREATED,
        Json(Sent {
            message_id: MessageId(v["messageId"].as_i64().unwrap_or_default()),
            conversation_seq: v["conversationSeq"].as_i64().unwrap_or_default(),
            timestamp: v["timestamp"].as_i64().unwrap_or_default(),
            client_msg_id: cid,
            duplicate: v["duplicate"].as_bool().unwrap_or(false),
            latency_ms: started.elapsed().as_millis() as u64,
        }),
    ))
}

/// The ack or error frame for `cid`; `None` if the connection was closed (e.g. by a drain).
async fn reply_for(shared: &ConnShared, cid: &str) -> Option<serde_json::Value> {
    loop {
        std::future::poll_fn(|cx| shared.poll_pending(cx)).await;
        let drained = shared.drain();
        for f in drained.frames {
            let OutFrame::Text(bytes, _) = f else { continue };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            if (v["type"] == "ack" || v["type"] == "error") && v["clientMsgId"] == cid {
                return Some(v);
            }
        }
        drained.close?;
    }
}

/// The router's error codes as HTTP statuses.
fn status_of(code: &str) -> StatusCode {
    match code {
        "not_found" => StatusCode::NOT_FOUND,
        // 401/403 stay reserved for the admin token: a send the store refuses is 422.
        "forbidden" => StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request" | "message_too_long" => StatusCode::BAD_REQUEST,
        "overloaded" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// `ApiError` codes are static; the router's come from a known set.
fn leak_code(code: &str) -> &'static str {
    for known in ["not_found", "forbidden", "invalid_request", "message_too_long", "overloaded", "unavailable", "conflict", "storage_error"] {
        if code == known {
            return known;
        }
    }
    "send_failed"
}
