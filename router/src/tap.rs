//! The router's traffic tap: what it did, as events for live tails (`GET /admin/v1/tail`,
//! `chatctl msg tail`). A `tokio::sync::broadcast` channel; nothing is built while nobody
//! listens, and a slow listener loses the oldest events, never slows routing.

use crate::SendJob;
use serde::Serialize;
use std::sync::Arc;
use switchboard_core::ids::{GroupId, MessageId, NodeId, UserId};
use switchboard_core::protocol::{ReceiptStatus, Target};
use switchboard_core::store::Appended;

/// Traffic events a tap subscriber may fall behind by before it loses the oldest ones.
pub const TAP_CAPACITY: usize = 1024;

/// One record of the cluster's tap topic (`router::cluster::spawn_tap_publisher`): the event,
/// without a body, and everyone it concerns, so tails filter by user without a lookup. Written
/// with `E = &TrafficEvent`, read back as `E = serde_json::Value` (lines pass through as sent).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapRecord<E> {
    /// The [`TrafficEvent`], serialized (`type` tag, camelCase).
    pub event: E,
    /// Recipients of a message or typing indicator; authors told about a receipt.
    #[serde(default)]
    pub recipient_ids: Vec<UserId>,
}

/// What the router did, for live tails (`GET /admin/v1/tail`, `chatctl msg tail`). Serialized
/// with a `type` tag: `message`, `refused`, `receipt`, `typing`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TrafficEvent {
    /// A committed send, after its ack and deliveries were published.
    Message(MessageEvent),
    /// A send the store refused (its sender got an error frame).
    Refused(RefusedEvent),
    /// A receipt applied to the store.
    Receipt(ReceiptEvent),
    /// A typing indicator relayed.
    Typing(TypingEvent),
}

/// A committed message: metadata, and the body only in-process (a tail strips it unless asked).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    /// Its id.
    pub message_id: MessageId,
    /// Its conversation, `d:<a>:<b>` or `g:<group>`.
    pub conversation: String,
    /// Position in the conversation.
    pub conversation_seq: i64,
    /// Author.
    pub sender_id: UserId,
    /// For 1:1 messages, the recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<UserId>,
    /// For group messages, the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// The sender's resend key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// Node of the sending connection.
    pub node: NodeId,
    /// Recipients, the sender excluded.
    pub recipients: usize,
    /// Recipients connected somewhere when it was routed (0 for a duplicate: nothing is sent).
    pub online: usize,
    /// Recipients not connected (push notices).
    pub offline: usize,
    /// A resend of an already stored `clientMsgId`: acked again, not delivered again.
    pub duplicate: bool,
    /// Body length in bytes (UTF-8).
    pub body_bytes: usize,
    /// Whether media is attached.
    pub media: bool,
    /// Commit time, Unix ms.
    pub timestamp: i64,
    /// The body. Always set in-process; serialized only when present, so a tail that must not
    /// show bodies sets it to `None`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "some_str")]
    pub body: Option<Arc<str>>,
    /// Every recipient (for filtering by user; not serialized).
    #[serde(skip)]
    pub recipient_ids: Arc<[UserId]>,
}

/// A refused send.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedEvent {
    /// The error code the sender got (`forbidden`, `not_found`, ...).
    pub code: &'static str,
    /// Who sent it.
    pub sender_id: UserId,
    /// Addressed user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<UserId>,
    /// Addressed group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// The sender's resend key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// Node of the sending connection.
    pub node: NodeId,
    /// Unix ms.
    pub timestamp: i64,
}

/// An applied receipt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptEvent {
    /// The reader.
    pub user_id: UserId,
    /// The message the receipt named.
    pub message_id: MessageId,
    /// `delivered` or `read`.
    pub status: ReceiptStatus,
    /// Authors told about it.
    pub notified: Vec<UserId>,
    /// Node of the reader's connection.
    pub node: NodeId,
    /// Unix ms.
    pub timestamp: i64,
}

/// A relayed typing indicator.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingEvent {
    /// Who types.
    pub sender_id: UserId,
    /// To this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<UserId>,
    /// In this group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Users it was relayed to.
    pub recipients: usize,
    /// Node of the typing connection.
    pub node: NodeId,
    /// Unix ms.
    pub timestamp: i64,
    /// Who it was relayed to (for filtering by user; not serialized).
    #[serde(skip)]
    pub recipient_ids: Arc<[UserId]>,
}

fn some_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_some(&**b),
        None => s.serialize_none(),
    }
}

pub(crate) fn split(target: Target) -> (Option<UserId>, Option<GroupId>) {
    match target {
        Target::User(u) => (Some(u), None),
        Target::Group(g) => (None, Some(g)),
    }
}

/// The tap's view of a committed send (fan-out counts filled in by the caller).
pub(crate) fn message_event(job: &SendJob, a: &Appended) -> MessageEvent {
    let v = &a.view;
    MessageEvent {
        message_id: v.message_id,
        conversation: a.conversation.to_string(),
        conversation_seq: v.conversation_seq,
        sender_id: v.sender_id,
        receiver_id: v.receiver_id,
        group_id: v.group_id,
        client_msg_id: job.frame.client_msg_id.clone(),
        node: job.origin.node.clone(),
        recipients: a.recipients.len(),
        online: 0,
        offline: 0,
        duplicate: a.duplicate,
        body_bytes: v.message.len(),
        media: v.media.is_some(),
        timestamp: v.timestamp,
        body: Some(v.message.as_str().into()),
        recipient_ids: a.recipients.as_slice().into(),
    }
}

