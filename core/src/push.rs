//! Push notifications for offline recipients: what the router hands on, and where.
//!
//! For every committed message, each recipient with no connection anywhere gets one
//! [`PushNotice`]. In cluster mode the router produces them to the `<prefix>push` topic, keyed
//! by recipient (one user's notices stay in order), and acknowledges its inbound records only
//! once they are confirmed, so a notice is never lost (a replay may repeat one: `messageId`
//! identifies it). The push worker that turns them into FCM/APNs requests consumes that topic.
//! A notice carries no body: the device fetches the message when woken, so message text never
//! passes through a third-party push service.

use crate::bus::BusError;
use crate::ids::{GroupId, MessageId, UserId};
use crate::protocol::MessageView;
use serde::{Deserialize, Serialize};

/// One offline recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushNotice {
    /// Who to notify.
    pub user_id: UserId,
    /// The message (also the device's sync cursor).
    pub message_id: MessageId,
    /// Its author.
    pub sender_id: UserId,
    /// The group, for group messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Position in its conversation.
    pub conversation_seq: i64,
    /// Commit time, Unix ms.
    pub timestamp: i64,
    /// Whether media is attached (the notification can say "sent a photo").
    pub has_media: bool,
}

impl PushNotice {
    /// The notice for `user` about `m`.
    pub fn new(user: UserId, m: &MessageView) -> Self {
        Self {
            user_id: user,
            message_id: m.message_id,
            sender_id: m.sender_id,
            group_id: m.group_id,
            conversation_seq: m.conversation_seq,
            timestamp: m.timestamp,
            has_media: m.media.is_some(),
        }
    }
}

/// Where the router hands notices for offline recipients.
#[async_trait::async_trait]
pub trait PushSink: Send + Sync + 'static {
    /// Hands over `notices` (in order per user), returning once they are durable.
    ///
    /// # Errors
    /// [`BusError`] when they could not be made durable.
    async fn notify(&self, notices: Vec<PushNotice>) -> Result<(), BusError>;
}
