//! The `MessageStore` seam: everything durable (users, tokens, groups, messages, receipts,
//! device cursors, media metadata).
//!
//! Standalone mode implements it on embedded SQLite (`storage_workers::sqlite`); cluster mode
//! will implement it on PostgreSQL. Gateway and router only ever see this trait.
//!
//! **Invariant:** message ids grow in commit order, and within a conversation
//! `conversation_seq` grows with the id, so "all messages after id N" is a valid sync cursor
//! that keeps per-conversation order.

use crate::error::ErrorCode;
use crate::ids::{ConversationId, DeviceId, GroupId, MessageId, UserId};
use crate::protocol::{MessageView, ReceiptStatus, Target};
use async_trait::async_trait;
use serde::Serialize;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist (or the caller may not know it exists).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique field is taken.
    #[error("{0} already in use")]
    Conflict(&'static str),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A value the store refuses.
    #[error("{0}")]
    Invalid(&'static str),
    /// The store is overloaded or shutting down; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(&'static str),
    /// The backend failed.
    #[error("storage backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ErrorCode for StoreError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Forbidden(_) => "forbidden",
            Self::Invalid(_) => "invalid_request",
            Self::Unavailable(_) => "unavailable",
            Self::Backend(_) => "storage_error",
        }
    }
    fn http_status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::Forbidden(_) => 403,
            Self::Invalid(_) => 400,
            Self::Unavailable(_) => 503,
            Self::Backend(_) => 500,
        }
    }
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Backend(_))
    }
}

/// A registration.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Display name.
    pub user_name: String,
    /// Login email, unique (case-insensitive).
    pub email: String,
    /// Phone number, unique.
    pub phone_number: String,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A user as stored (never with the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Id.
    pub user_id: UserId,
    /// Display name.
    pub user_name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone_number: String,
    /// Last disconnect, Unix ms.
    pub last_seen: Option<i64>,
}

/// How an operator names a user (admin API): by id, or by email (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    /// By id.
    Id(UserId),
    /// By email, any case.
    Email(String),
}

/// A device session the store knows: one that has acknowledged (cursor, receipt) a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCursor {
    /// Device.
    pub device_id: DeviceId,
    /// Newest message it acknowledged.
    pub cursor: Option<MessageId>,
}

/// A live user as an operator sees it: disabled accounts included, with what only the admin
/// API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The profile.
    #[serde(flatten)]
    pub user: User,
    /// Disabled by an operator: cannot log in, every token refused.
    pub disabled: bool,
    /// Registration time, Unix ms.
    pub created_at: i64,
    /// Devices that acknowledged messages, by device id.
    pub devices: Vec<DeviceCursor>,
}

/// Fields `PUT /user/{id}` may change.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New display name.
    pub user_name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New phone.
    pub phone_number: Option<String>,
    /// New password hash; revokes every refresh token.
    pub password_hash: Option<String>,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// First use: it is now spent.
    Valid {
        /// Owner.
        user: UserId,
        /// Session.
        device: DeviceId,
    },
    /// Already used: the session has been revoked.
    Reused,
    /// Never issued, revoked or expired.
    Unknown,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Id.
    pub group_id: GroupId,
    /// Name.
    pub group_name: String,
    /// Creator and admin.
    pub created_by: UserId,
    /// Current members, creator included.
    pub members: Vec<UserId>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Author (already authenticated).
    pub sender: UserId,
    /// The author's device, so sync can skip echoing it back there.
    pub sender_device: DeviceId,
    /// Resend key.
    pub client_msg_id: Option<String>,
    /// Recipient.
    pub target: Target,
    /// Body.
    pub text: String,
    /// Attached media id.
    pub media_id: Option<String>,
}

impl NewMessage {
    /// How this message reads once stored as `id`, `seq`-th of its conversation, at `timestamp`.
    pub fn stored_view(&self, id: MessageId, seq: i64, timestamp: i64, media: Option<crate::protocol::MediaRef>) -> MessageView {
        let (receiver_id, group_id) = match self.target {
            Target::User(u) => (Some(u), None),
            Target::Group(g) => (None, Some(g)),
        };
        MessageView {
            message_id: id,
            sender_id: self.sender,
            receiver_id,
            group_id,
            message: self.text.clone(),
            media,
            conversation_seq: seq,
            timestamp,
            client_msg_id: self.client_msg_id.clone(),
        }
    }
}

/// A committed message and who must get it.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored message.
    pub view: MessageView,
    /// Its conversation.
    pub conversation: ConversationId,
    /// Every user who receives it, the sender excluded.
    pub recipients: Vec<UserId>,
    /// True when this was a resend of an already stored `clientMsgId`.
    pub duplicate: bool,
}

/// One page and the cursor of the next (older) page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Opaque cursor; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One row of the chat list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummary {
    /// `d:<a>:<b>` or `g:<id>`.
    pub chat_id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// For direct chats, the other user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<UserId>,
    /// For groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Peer's name or group name.
    pub title: String,
    /// Newest message.
    pub last_message: Option<MessageView>,
    /// Messages from others after the caller's read mark.
    pub unread_count: i64,
}

/// Stored metadata of an uploaded media object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// Id (also the object key).
    pub media_id: String,
    /// Uploader.
    #[serde(skip)]
    pub uploader: UserId,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
}

/// Where a backlog page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFrom {
    /// After the device's cursor; for a device never seen, every message not yet delivered to
    /// any of the user's devices.
    Device,
    /// Every message after this id (an explicit `sync`).
    After(MessageId),
    /// Messages after this id not yet delivered to any of the user's devices (next page of a
    /// new device's backlog).
    Undelivered(MessageId),
}

/// One backlog page.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// Messages, oldest first.
    pub messages: Vec<MessageView>,
    /// Where the next page starts, when this one was full.
    pub next: Option<SyncFrom>,
}

impl Backlog {
    /// A page read from `from` with at most `limit` messages: a full page continues after its
    /// last message, in the same kind of sync (an explicit one stays explicit, a device's goes
    /// on with what no device has had).
    pub fn page(messages: Vec<MessageView>, from: SyncFrom, limit: usize) -> Self {
        let next = match (messages.len() == limit, messages.last()) {
            (true, Some(last)) => Some(match from {
                SyncFrom::After(_) => SyncFrom::After(last.message_id),
                _ => SyncFrom::Undelivered(last.message_id),
            }),
            _ => None,
        };
        Self { messages, next }
    }
}

/// Who must hear about a receipt: each author whose messages it newly covered, with the newest
/// such message.
pub type ReceiptNotices = Vec<(UserId, MessageId)>;

/// Durable state. Every method is one atomic step.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Registers a user. `Conflict("email"|"phoneNumber")` when taken.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    /// A live (not deleted) user.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// A live, enabled user and their password hash, by email (case-insensitive).
    async fn credentials(&self, email: &str) -> Result<Option<(User, String)>, StoreError>;
    /// Updates a live user.
    async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User, StoreError>;
    /// Deletes a user: profile anonymised, email and phone freed, every token revoked.
    async fn delete_user(&self, id: UserId) -> Result<(), StoreError>;
    /// Ids of users whose tokens are refused, for the token revocation cache: deleted users
    /// and disabled ones (see [`MessageStore::set_disabled`]).
    async fn deleted_users(&self) -> Result<Vec<UserId>, StoreError>;
    /// A live user (disabled ones included) with operator details, by id or email.
    async fn account(&self, who: UserLookup) -> Result<Option<Account>, StoreError>;
    /// Disables or re-enables a live user (idempotent). While disabled, `credentials` does not
    /// find them (login fails) and `deleted_users` lists them (their tokens are refused);
    /// their profile, messages and groups stay. `NotFound` for an unknown or deleted user.
    async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<(), StoreError>;
    /// Everyone `user` has a 1:1 conversation with (for presence events).
    async fn direct_peers(&self, user: UserId) -> Result<Vec<UserId>, StoreError>;
    /// Records a disconnect time.
    async fn set_last_seen(&self, id: UserId, at_ms: i64) -> Result<(), StoreError>;

    /// Remembers an issued refresh token.
    async fn save_refresh(&self, jti: &str, user: UserId, device: &DeviceId, exp: i64) -> Result<(), StoreError>;
    /// Spends a refresh token; a second use revokes the device's session.
    async fn use_refresh(&self, jti: &str) -> Result<RefreshOutcome, StoreError>;

    /// Creates a group with its creator as admin and first member.
    async fn create_group(&self, name: &str, creator: UserId) -> Result<Group, StoreError>;
    /// A group and its members.
    async fn group(&self, id: GroupId) -> Result<Option<Group>, StoreError>;
    /// Adds a member (idempotent); they see messages from now on.
    async fn add_member(&self, id: GroupId, user: UserId) -> Result<Group, StoreError>;
    /// Removes a member (idempotent).
    async fn remove_member(&self, id: GroupId, user: UserId) -> Result<Group, StoreError>;

    /// Appends messages in one transaction (group commit), in order. Each result is independent:
    /// one refused message does not fail the others. Checks that the recipient exists or the
    /// sender is a group member, dedupes on (sender, clientMsgId), assigns the conversation
    /// sequence and records the message for each recipient's sync.
    async fn append(&self, batch: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>>;
    /// A message and its conversation.
    async fn message(&self, id: MessageId) -> Result<Option<(MessageView, ConversationId)>, StoreError>;
    /// A page of a conversation as `viewer` may see it, in conversation order, older than
    /// `before` (a sequence number).
    async fn history(
        &self,
        conv: ConversationId,
        viewer: UserId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page<MessageView>, StoreError>;
    /// The caller's chats, newest activity first.
    async fn chats(&self, user: UserId, cursor: Option<&str>, limit: usize) -> Result<Page<ChatSummary>, StoreError>;
    /// Full-text search over messages `user` received or sent.
    async fn search(&self, user: UserId, query: &str, limit: usize) -> Result<Vec<MessageView>, StoreError>;

    /// Applies a receipt: moves the device cursor and the user's delivered/read marks of the
    /// message's conversation up to it. `Forbidden` if the user did not receive the message.
    async fn receipt(
        &self,
        user: UserId,
        device: &DeviceId,
        message: MessageId,
        status: ReceiptStatus,
    ) -> Result<ReceiptNotices, StoreError>;
    /// Moves a device's sync cursor forward to `message`.
    async fn advance_cursor(&self, user: UserId, device: &DeviceId, message: MessageId) -> Result<(), StoreError>;
    /// One page of the messages a device has not acknowledged, oldest first (see [`SyncFrom`]).
    async fn backlog(&self, user: UserId, device: &DeviceId, from: SyncFrom, limit: usize) -> Result<Backlog, StoreError>;

    /// Records an uploaded object.
    async fn save_media(&self, media: Media) -> Result<(), StoreError>;
    /// Media metadata if `user` uploaded it or received it in a message.
    async fn media_for(&self, user: UserId, media_id: &str) -> Result<Option<Media>, StoreError>;
}
