//! The JSON frames of the WebSocket contract (see `docs/PROTOCOL.md`).
//!
//! Client frames are parsed leniently into [`ClientFrame`]: the seed's form
//! `{"senderId":101,"receiverId":202,"message":"Hello!"}` (no `type`) is a send.
//! Server frames are built by the `*_frame` functions, serialized once into `Bytes`
//! and shared across every recipient.

use crate::error::ErrorCode;
use crate::ids::{ConversationId, GroupId, MessageId, UserId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest accepted `clientMsgId`, in bytes.
pub const MAX_CLIENT_MSG_ID: usize = 128;

/// Why a client frame was refused. Sent back as `{"type":"error","code",...}`; the socket stays open.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed frame: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A `type` the server does not know.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A required field is missing or invalid.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
    /// `senderId` is not the authenticated user.
    #[error("senderId does not match the authenticated user")]
    SenderMismatch,
    /// Binary frames are not part of the protocol.
    #[error("binary frames are not supported; send JSON text frames")]
    Binary,
}

impl ErrorCode for ProtocolError {
    fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_frame",
            Self::UnknownType(_) => "unknown_type",
            Self::Invalid(_) => "invalid_frame",
            Self::SenderMismatch => "sender_mismatch",
            Self::Binary => "unsupported_binary",
        }
    }
    fn http_status(&self) -> u16 {
        match self {
            Self::SenderMismatch => 403,
            _ => 400,
        }
    }
}

/// Where a send or typing frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// A 1:1 chat with this user.
    User(UserId),
    /// A group.
    Group(GroupId),
}

impl Target {
    /// The conversation `sender` and this target share.
    pub fn conversation(self, sender: UserId) -> ConversationId {
        match self {
            Self::User(u) => ConversationId::direct(sender, u),
            Self::Group(g) => ConversationId::Group(g),
        }
    }
}

/// A media reference carried by a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaRef {
    /// Id returned by `POST /media`.
    pub media_id: String,
    /// MIME type, filled in by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size in bytes, filled in by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// A send, in either of its forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFrame {
    /// Client-chosen id that makes resends safe; absent in the seed's form.
    pub client_msg_id: Option<String>,
    /// Recipient.
    pub target: Target,
    /// Text body (may be empty when media is attached).
    pub text: String,
    /// Attached media.
    pub media: Option<MediaRef>,
    /// The `senderId` the client claimed, if any; must be the authenticated user.
    pub claimed_sender: Option<UserId>,
}

/// Receipt status, ordered: read implies delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// Reached a device.
    Delivered,
    /// Seen by the user.
    Read,
}

impl ReceiptStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
}

/// A frame from a client, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Send a message.
    Send(SendFrame),
    /// Delivered/read receipt for a message (covers earlier messages of its conversation).
    Receipt { message_id: MessageId, status: ReceiptStatus },
    /// Advance this device's sync cursor without a receipt.
    Cursor { message_id: MessageId },
    /// Push again every message after `after` (or after the device cursor).
    Sync { after: Option<MessageId> },
    /// Typing indicator, relayed and never stored.
    Typing { target: Target },
    /// Application-level keepalive; answered with `{"type":"pong"}`.
    Ping,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_msg_id: Option<serde_json::Value>,
    sender_id: Option<i64>,
    receiver_id: Option<i64>,
    group_id: Option<i64>,
    message: Option<String>,
    media: Option<MediaRef>,
    message_id: Option<i64>,
    status: Option<ReceiptStatus>,
    after: Option<i64>,
}

impl ClientFrame {
    /// Parses a text frame's payload.
    ///
    /// # Errors
    /// [`ProtocolError`] for bad JSON, unknown types and missing or contradictory fields.
    pub fn parse(payload: &[u8]) -> Result<Self, ProtocolError> {
        let raw: RawFrame = serde_json::from_slice(payload).map_err(ProtocolError::Malformed)?;
        match raw.kind.as_deref() {
            None | Some("send") | Some("message") => raw.into_send().map(Self::Send),
            Some("receipt") => Ok(Self::Receipt {
                message_id: MessageId(raw.message_id.ok_or(ProtocolError::Invalid("messageId is required"))?),
                status: raw.status.ok_or(ProtocolError::Invalid("status must be \"delivered\" or \"read\""))?,
            }),
            Some("cursor") => Ok(Self::Cursor {
                message_id: MessageId(raw.message_id.ok_or(ProtocolError::Invalid("messageId is required"))?),
            }),
            Some("sync") => Ok(Self::Sync { after: raw.after.map(MessageId) }),
            Some("typing") => Ok(Self::Typing { target: raw.target()? }),
            Some("ping") => Ok(Self::Ping),
            Some(other) => Err(ProtocolError::UnknownType(other.chars().take(32).collect())),
        }
    }
}

impl RawFrame {
    fn target(&self) -> Result<Target, ProtocolError> {
        match (self.receiver_id, self.group_id) {
            (Some(u), None) => Ok(Target::User(UserId(u))),
            (None, Some(g)) => Ok(Target::Group(GroupId(g))),
            (Some(_), Some(_)) => Err(ProtocolError::Invalid("give receiverId or groupId, not both")),
            (None, None) => Err(ProtocolError::Invalid("receiverId or groupId is required")),
        }
    }

    fn into_send(self) -> Result<SendFrame, ProtocolError> {
        let target = self.target()?;
        let client_msg_id = match self.client_msg_id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(ProtocolError::Invalid("clientMsgId must be a string")),
        };
        if client_msg_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > MAX_CLIENT_MSG_ID) {
            return Err(ProtocolError::Invalid("clientMsgId must be 1-128 bytes"));
        }
        let text = self.message.unwrap_or_default();
        if text.is_empty() && self.media.is_none() {
            return Err(ProtocolError::Invalid("message or media is required"));
        }
        Ok(SendFrame { client_msg_id, target, text, media: self.media, claimed_sender: self.sender_id.map(UserId) })
    }
}

/// A stored message as clients see it, in delivery frames and history pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// Global id; also the sync cursor.
    pub message_id: MessageId,
    /// Author.
    pub sender_id: UserId,
    /// For 1:1 messages, the recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<UserId>,
    /// For group messages, the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Text body.
    pub message: String,
    /// Attached media.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRef>,
    /// Position in its conversation, from 1.
    pub conversation_seq: i64,
    /// Server time of commit, Unix ms.
    pub timestamp: i64,
    /// The sender's resend key, shown to every reader so the sender's other devices can
    /// match it to their outbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

/// `{"type":"<kind>", <body's fields>}`. `body` is a struct (a JSON object) and `kind` a fixed
/// word that needs no escaping. Written as the tag followed by the body's own object with its
/// `{` turned into `,`: serde's `#[serde(flatten)]` goes through a map serializer
/// (`protocol/serialize/message_frame` bench: 254.8 ns with it, 213.2 ns without).
fn to_bytes<T: Serialize>(kind: &str, body: T) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    let at = out.len();
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_writer(&mut out, &body).expect("frame serializes");
    if out.len() - at <= 2 {
        // An empty body, `{}`.
        out.truncate(at);
        out.push(b'}');
    } else {
        out[at] = b',';
    }
    Bytes::from(out)
}

/// `{"type":"message", ...}`.
pub fn message_frame(m: &MessageView) -> Bytes {
    to_bytes("message", m)
}

/// `{"type":"ack","clientMsgId"?,"messageId","conversationSeq","timestamp"}`.
pub fn ack_frame(client_msg_id: Option<&str>, m: &MessageView, duplicate: bool) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Ack<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<&'a str>,
        message_id: MessageId,
        conversation_seq: i64,
        timestamp: i64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    }
    to_bytes(
        "ack",
        Ack { client_msg_id, message_id: m.message_id, conversation_seq: m.conversation_seq, timestamp: m.timestamp, duplicate },
    )
}

/// `{"type":"receipt","messageId","status","userId"}` sent to the author's devices.
pub fn receipt_frame(message_id: MessageId, status: ReceiptStatus, user_id: UserId) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct R {
        message_id: MessageId,
        status: ReceiptStatus,
        user_id: UserId,
    }
    to_bytes("receipt", R { message_id, status, user_id })
}

/// `{"type":"typing","userId","receiverId"|"groupId"}`.
pub fn typing_frame(from: UserId, target: Target) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct T {
        user_id: UserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        receiver_id: Option<UserId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group_id: Option<GroupId>,
    }
    let (receiver_id, group_id) = match target {
        Target::User(u) => (Some(u), None),
        Target::Group(g) => (None, Some(g)),
    };
    to_bytes("typing", T { user_id: from, receiver_id, group_id })
}

/// `{"type":"presence","userId","online","lastSeen"?}` sent to 1:1 peers.
pub fn presence_frame(user_id: UserId, online: bool, last_seen: Option<i64>) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct P {
        user_id: UserId,
        online: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen: Option<i64>,
    }
    to_bytes("presence", P { user_id, online, last_seen })
}

/// `{"type":"synced","cursor"?,"more"?}`: the backlog is done (or, with `more`, this part of
/// it: ask again with `{"type":"sync","after":cursor}`).
pub fn synced_frame(cursor: Option<MessageId>, more: bool) -> Bytes {
    #[derive(Serialize)]
    struct S {
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<MessageId>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    }
    to_bytes("synced", S { cursor, more })
}

/// `{"type":"pong"}`.
pub fn pong_frame() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}

/// `{"type":"error","code","message","clientMsgId"?}`.
pub fn error_frame(code: &str, message: &str, client_msg_id: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct E<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<&'a str>,
    }
    to_bytes("error", E { code, message, client_msg_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_tag_then_the_fields() {
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        assert_eq!(text(synced_frame(None, false)), r#"{"type":"synced"}"#);
        assert_eq!(text(synced_frame(Some(MessageId(7)), true)), r#"{"type":"synced","cursor":7,"more":true}"#);
        assert_eq!(
            text(error_frame("bad_request", "say \"hi\"", Some("c-1"))),
            r#"{"type":"error","code":"bad_request","message":"say \"hi\"","clientMsgId":"c-1"}"#
        );
        assert_eq!(text(receipt_frame(MessageId(3), ReceiptStatus::Read, UserId(9))), r#"{"type":"receipt","messageId":3,"status":"read","userId":9}"#);
    }
    use proptest::prelude::*;

    #[test]
    fn seed_form_is_a_send() {
        let f = ClientFrame::parse(br#"{"senderId":101,"receiverId":202,"message":"Hello!"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Send(SendFrame {
                client_msg_id: None,
                target: Target::User(UserId(202)),
                text: "Hello!".into(),
                media: None,
                claimed_sender: Some(UserId(101)),
            })
        );
    }

    #[test]
    fn errors_have_codes() {
        let cases: [(&[u8], &str); 6] = [
            (b"nope", "malformed_frame"),
            (br#"{"type":"dance"}"#, "unknown_type"),
            (br#"{"type":"send","message":"x"}"#, "invalid_frame"),
            (br#"{"type":"send","receiverId":1,"groupId":2,"message":"x"}"#, "invalid_frame"),
            (br#"{"type":"send","receiverId":1}"#, "invalid_frame"),
            (br#"{"type":"receipt","messageId":1,"status":"seen"}"#, "malformed_frame"),
        ];
        for (input, code) in cases {
            assert_eq!(ClientFrame::parse(input).unwrap_err().code(), code, "{}", String::from_utf8_lossy(input));
        }
    }

    fn any_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            (1i64..1 << 50).prop_map(|u| Target::User(UserId(u))),
            (1i64..1 << 50).prop_map(|g| Target::Group(GroupId(g)))
        ]
    }

    proptest! {
        #[test]
        fn send_round_trips(cid in proptest::option::of("[a-zA-Z0-9-]{1,40}"), target in any_target(), text in ".{1,200}") {
            let mut v = serde_json::json!({"type": "send", "message": text});
            if let Some(c) = &cid { v["clientMsgId"] = c.clone().into(); }
            match target {
                Target::User(u) => v["receiverId"] = u.0.into(),
                Target::Group(g) => v["groupId"] = g.0.into(),
            }
            let f = ClientFrame::parse(v.to_string().as_bytes()).unwrap();
            prop_assert_eq!(f, ClientFrame::Send(SendFrame { client_msg_id: cid, target, text, media: None, claimed_sender: None }));
        }

        #[test]
        fn message_frame_round_trips(id in 1i64..1 << 52, seq in 1i64..1 << 40, text in ".{0,100}", group in any::<bool>()) {
            let m = MessageView {
                message_id: MessageId(id), sender_id: UserId(7),
                receiver_id: (!group).then_some(UserId(8)), group_id: group.then_some(GroupId(3)),
                message: text, media: None, conversation_seq: seq, timestamp: 1, client_msg_id: None,
            };
            let v: serde_json::Value = serde_json::from_slice(&message_frame(&m)).unwrap();
            prop_assert_eq!(&v["type"], "message");
            let back: MessageView = serde_json::from_value(v).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn arbitrary_json_never_panics(s in ".{0,200}") {
            let _ = ClientFrame::parse(s.as_bytes());
        }
    }
}
