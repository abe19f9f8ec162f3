//! The `MessageStore` contract: what every store must do, driven only through the trait.
//!
//! Each case is a `pub async fn` taking a fresh, empty store (and, for
//! [`everything_survives_a_reopen`], a way to open the same storage again).
//! [`message_store_contract!`](crate::message_store_contract) stamps out one `#[tokio::test]`
//! per case for a backend, so SQLite (`sqlite::tests`) and PostgreSQL (`tests/postgres.rs`)
//! run exactly the same suite. Add a case here and list it in the macro; both backends pick
//! it up.
//!
//! Helpers at the top build users, devices and messages; the cases are grouped by area
//! (users, refresh tokens, groups, append, membership, history, chats, search, receipts,
//! backlog, durability, concurrent writes).
//!
//! # Panics
//! Every case panics (fails its test) when the store breaks the contract.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use switchboard_core::ids::{ConversationId, DeviceId, GroupId, MessageId, UserId};
use switchboard_core::protocol::{MessageView, ReceiptStatus, Target};
use switchboard_core::store::{
    Appended, Backlog, DeviceCursor, Media, MessageStore, NewMessage, NewUser, RefreshOutcome, StoreError, SyncFrom,
    UserLookup, UserPatch,
};
use switchboard_core::time::now_secs;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts that a result is `Err` matching a `StoreError` pattern.
macro_rules! assert_err {
    ($result:expr, $pat:pat) => {
        match $result {
            Err($pat) => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pat), other),
        }
    };
}

/// A registration whose email and phone are derived from `name`.
fn new_user(name: &str) -> NewUser {
    NewUser {
        user_name: name.to_owned(),
        email: format!("{name}@example.com"),
        phone_number: format!("+1-555-{name}"),
        password_hash: format!("hash-of-{name}"),
    }
}

/// Registers `name` and returns its id.
async fn user(s: &Arc<dyn MessageStore>, name: &str) -> UserId {
    s.create_user(new_user(name)).await.expect("create user").user_id
}

fn dev(name: &str) -> DeviceId {
    DeviceId(name.to_owned())
}

/// The device every helper-built message is sent from unless overridden with [`on`].
const MAIN_DEVICE: &str = "main";

/// A direct message.
fn dm(from: UserId, to: UserId, text: &str) -> NewMessage {
    NewMessage {
        sender: from,
        sender_device: dev(MAIN_DEVICE),
        client_msg_id: None,
        target: Target::User(to),
        text: text.to_owned(),
        media_id: None,
    }
}

/// A group message.
fn gm(from: UserId, group: GroupId, text: &str) -> NewMessage {
    NewMessage { target: Target::Group(group), ..dm(from, from, text) }
}

/// The same message with a `clientMsgId`.
fn cid(m: NewMessage, id: &str) -> NewMessage {
    NewMessage { client_msg_id: Some(id.to_owned()), ..m }
}

/// The same message sent from another device.
fn on(m: NewMessage, device: &str) -> NewMessage {
    NewMessage { sender_device: dev(device), ..m }
}

/// The same message with media attached.
fn with_media(m: NewMessage, media_id: &str) -> NewMessage {
    NewMessage { media_id: Some(media_id.to_owned()), ..m }
}

/// Appends one message as a batch of one.
async fn try_send(s: &Arc<dyn MessageStore>, m: NewMessage) -> Result<Appended, StoreError> {
    let mut out = s.append(vec![m]).await;
    assert_eq!(out.len(), 1, "append returns one result per message");
    out.pop().expect("one result")
}

/// Appends one message that must succeed.
async fn send(s: &Arc<dyn MessageStore>, m: NewMessage) -> Appended {
    try_send(s, m).await.expect("append")
}

/// Appends one message that must succeed and returns its id.
async fn send_id(s: &Arc<dyn MessageStore>, m: NewMessage) -> MessageId {
    send(s, m).await.view.message_id
}

/// Every message of a conversation visible to `viewer`, oldest first (one big page).
async fn all_history(s: &Arc<dyn MessageStore>, conv: ConversationId, viewer: UserId) -> Vec<MessageView> {
    let page = s.history(conv, viewer, None, 10_000).await.expect("history");
    assert!(page.next_cursor.is_none(), "one page holds everything");
    page.items
}

fn ids(views: &[MessageView]) -> Vec<MessageId> {
    views.iter().map(|v| v.message_id).collect()
}

fn texts(views: &[MessageView]) -> Vec<&str> {
    views.iter().map(|v| v.message.as_str()).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Follows `next` from `from` until the backlog ends; returns every page.
async fn drain_backlog(s: &Arc<dyn MessageStore>, u: UserId, device: &DeviceId, from: SyncFrom, limit: usize) -> Vec<Backlog> {
    let mut pages = Vec::new();
    let mut from = Some(from);
    while let Some(f) = from {
        let page = s.backlog(u, device, f, limit).await.expect("backlog");
        assert!(page.messages.len() <= limit, "backlog page exceeds its limit");
        from = page.next;
        pages.push(page);
        assert!(pages.len() < 100, "backlog paging does not terminate");
    }
    pages
}

/// Unread count of `chat_id` in `u`'s chat list.
async fn unread(s: &Arc<dyn MessageStore>, u: UserId, chat_id: &str) -> i64 {
    let page = s.chats(u, None, 1000).await.expect("chats");
    page.items.iter().find(|c| c.chat_id == chat_id).unwrap_or_else(|| panic!("{chat_id} not in chat list")).unread_count
}

fn media(id: &str, uploader: UserId) -> Media {
    Media { media_id: id.to_owned(), uploader, content_type: "image/png".into(), size: 1234 }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/// Contract case: create user returns and stores the user.
pub async fn create_user_returns_and_stores_the_user(s: Arc<dyn MessageStore>) {
    let alice = s.create_user(new_user("alice")).await.unwrap();
    assert_eq!(alice.user_name, "alice");
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.phone_number, "+1-555-alice");
    assert_eq!(alice.last_seen, None);
    assert_eq!(s.user(alice.user_id).await.unwrap(), Some(alice.clone()));

    let bob = s.create_user(new_user("bob")).await.unwrap();
    assert_ne!(bob.user_id, alice.user_id);
    assert_eq!(s.user(UserId(987_654)).await.unwrap(), None);
}

/// Contract case: duplicate email is a conflict case insensitively.
pub async fn duplicate_email_is_a_conflict_case_insensitively(s: Arc<dyn MessageStore>) {
    user(&s, "alice").await;
    let again = NewUser { email: "ALICE@Example.COM".into(), phone_number: "+1-other".into(), ..new_user("alice2") };
    assert_err!(s.create_user(again).await, StoreError::Conflict("email"));
    // Nothing was stored by the refused registration: its phone is still free.
    let ok = NewUser { email: "carol@example.com".into(), phone_number: "+1-other".into(), ..new_user("carol") };
    s.create_user(ok).await.expect("phone of the refused registration is free");
}

/// Contract case: duplicate phone is a conflict.
pub async fn duplicate_phone_is_a_conflict(s: Arc<dyn MessageStore>) {
    user(&s, "alice").await;
    let again = NewUser { phone_number: "+1-555-alice".into(), ..new_user("bob") };
    assert_err!(s.create_user(again).await, StoreError::Conflict("phoneNumber"));
    assert!(s.credentials("bob@example.com").await.unwrap().is_none());
}

/// Contract case: credentials by email are case insensitive.
pub async fn credentials_by_email_are_case_insensitive(s: Arc<dyn MessageStore>) {
    let alice = s.create_user(new_user("alice")).await.unwrap();
    user(&s, "bob").await;
    let (u, hash) = s.credentials("alice@example.com").await.unwrap().expect("found");
    assert_eq!(u, alice);
    assert_eq!(hash, "hash-of-alice");
    let (u, _) = s.credentials("ALICE@EXAMPLE.com").await.unwrap().expect("found regardless of case");
    assert_eq!(u.user_id, alice.user_id);
    assert!(s.credentials("nobody@example.com").await.unwrap().is_none());
}

/// Contract case: update user changes only given fields.
pub async fn update_user_changes_only_given_fields(s: Arc<dyn MessageStore>) {
    let alice = s.create_user(new_user("alice")).await.unwrap();
    let patched = s
        .update_user(alice.user_id, UserPatch { user_name: Some("Alice A.".into()), ..UserPatch::default() })
        .await
        .unwrap();
    assert_eq!(patched.user_name, "Alice A.");
    assert_eq!(patched.email, alice.email);
    assert_eq!(patched.phone_number, alice.phone_number);
    assert_eq!(s.user(alice.user_id).await.unwrap(), Some(patched));

    let patched = s
        .update_user(
            alice.user_id,
            UserPatch { email: Some("new@example.com".into()), phone_number: Some("+1-999".into()), ..UserPatch::default() },
        )
        .await
        .unwrap();
    assert_eq!((patched.email.as_str(), patched.phone_number.as_str()), ("new@example.com", "+1-999"));
    assert!(s.credentials("alice@example.com").await.unwrap().is_none(), "old email no longer logs in");
    assert_eq!(s.credentials("NEW@example.com").await.unwrap().unwrap().0.user_id, alice.user_id);
}

/// Contract case: update user conflicts and leaves the user unchanged.
pub async fn update_user_conflicts_and_leaves_the_user_unchanged(s: Arc<dyn MessageStore>) {
    let alice = s.create_user(new_user("alice")).await.unwrap();
    user(&s, "bob").await;
    let taken_email = UserPatch { user_name: Some("renamed".into()), email: Some("BOB@example.com".into()), ..UserPatch::default() };
    assert_err!(s.update_user(alice.user_id, taken_email).await, StoreError::Conflict("email"));
    let taken_phone = UserPatch { phone_number: Some("+1-555-bob".into()), ..UserPatch::default() };
    assert_err!(s.update_user(alice.user_id, taken_phone).await, StoreError::Conflict("phoneNumber"));
    // The refused update changed nothing, not even the name it also carried.
    assert_eq!(s.user(alice.user_id).await.unwrap(), Some(alice));
    assert_err!(s.update_user(UserId(424_242), UserPatch::default()).await, StoreError::NotFound(_));
}

/// Contract case: password change revokes refresh tokens.
pub async fn password_change_revokes_refresh_tokens(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let exp = now_secs() + 3600;
    s.save_refresh("before", alice, &dev("d1"), exp).await.unwrap();
    let new_hash = UserPatch { password_hash: Some("new-hash".into()), ..UserPatch::default() };
    s.update_user(alice, new_hash).await.unwrap();
    assert_eq!(s.credentials("alice@example.com").await.unwrap().unwrap().1, "new-hash");
    assert_eq!(s.use_refresh("before").await.unwrap(), RefreshOutcome::Unknown);
}

/// Contract case: delete user frees identity and revokes tokens.
pub async fn delete_user_frees_identity_and_revokes_tokens(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    s.save_refresh("alice-t", alice, &dev("d1"), now_secs() + 3600).await.unwrap();
    s.save_refresh("bob-t", bob, &dev("d1"), now_secs() + 3600).await.unwrap();
    assert!(s.deleted_users().await.unwrap().is_empty());

    s.delete_user(alice).await.unwrap();
    assert_eq!(s.user(alice).await.unwrap(), None);
    assert!(s.credentials("alice@example.com").await.unwrap().is_none());
    assert_eq!(s.deleted_users().await.unwrap(), vec![alice]);
    assert_eq!(s.use_refresh("alice-t").await.unwrap(), RefreshOutcome::Unknown);
    // Other users' tokens are untouched.
    assert_eq!(s.use_refresh("bob-t").await.unwrap(), RefreshOutcome::Valid { user: bob, device: dev("d1") });

    // Email (any case) and phone can be registered again, as a new user.
    let again = NewUser { email: "Alice@Example.com".into(), ..new_user("alice") };
    let alice2 = s.create_user(again).await.expect("email and phone are reusable");
    assert_ne!(alice2.user_id, alice);
    assert_eq!(s.credentials("alice@example.com").await.unwrap().unwrap().0.user_id, alice2.user_id);

    assert_err!(s.delete_user(alice).await, StoreError::NotFound(_));
    assert_err!(s.update_user(alice, UserPatch::default()).await, StoreError::NotFound(_));
    assert_err!(try_send(&s, dm(bob, alice, "hi")).await, StoreError::NotFound(_));
}

/// Contract case: an operator disables and re-enables an account; `account` shows it by id
/// or email, with its devices.
pub async fn disabled_user_cannot_log_in_and_is_listed_for_revocation(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let a = s.account(UserLookup::Id(alice)).await.unwrap().expect("account by id");
    assert_eq!((a.user.user_id, a.disabled, a.devices.len()), (alice, false, 0));
    assert!(a.created_at > 0);
    let by_email = s.account(UserLookup::Email("ALICE@example.com".into())).await.unwrap().expect("account by email");
    assert_eq!(by_email.user.user_id, alice);
    assert_eq!(s.account(UserLookup::Email("nobody@example.com".into())).await.unwrap(), None);
    let m = send_id(&s, dm(bob, alice, "hi")).await;
    s.advance_cursor(alice, &dev("phone"), m).await.unwrap();
    let a = s.account(UserLookup::Id(alice)).await.unwrap().unwrap();
    assert_eq!(a.devices, vec![DeviceCursor { device_id: dev("phone"), cursor: Some(m) }]);

    s.set_disabled(alice, true).await.unwrap();
    s.set_disabled(alice, true).await.expect("idempotent");
    assert!(s.credentials("alice@example.com").await.unwrap().is_none(), "a disabled user cannot log in");
    assert_eq!(s.deleted_users().await.unwrap(), vec![alice]);
    assert!(s.user(alice).await.unwrap().is_some(), "the profile stays");
    assert!(s.account(UserLookup::Email("alice@example.com".into())).await.unwrap().unwrap().disabled);

    s.set_disabled(alice, false).await.unwrap();
    assert!(s.credentials("alice@example.com").await.unwrap().is_some());
    assert!(s.deleted_users().await.unwrap().is_empty());
    assert!(!s.account(UserLookup::Id(alice)).await.unwrap().unwrap().disabled);

    assert_err!(s.set_disabled(UserId(alice.0 + 1000), true).await, StoreError::NotFound(_));
    s.delete_user(bob).await.unwrap();
    assert_eq!(s.account(UserLookup::Id(bob)).await.unwrap(), None);
    assert_err!(s.set_disabled(bob, true).await, StoreError::NotFound(_));
}

/// Contract case: delete user leaves their groups.
pub async fn delete_user_leaves_their_groups(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let g = s.create_group("g", alice).await.unwrap().group_id;
    s.add_member(g, bob).await.unwrap();
    s.delete_user(bob).await.unwrap();
    assert_eq!(s.group(g).await.unwrap().unwrap().members, vec![alice]);
    assert!(send(&s, gm(alice, g, "hi")).await.recipients.is_empty());
}

/// Contract case: set last seen is stored.
pub async fn set_last_seen_is_stored(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    s.set_last_seen(alice, 1_700_000_000_000).await.unwrap();
    assert_eq!(s.user(alice).await.unwrap().unwrap().last_seen, Some(1_700_000_000_000));
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens
// ---------------------------------------------------------------------------------------------

/// Contract case: refresh token is single use and reuse revokes the device.
pub async fn refresh_token_is_single_use_and_reuse_revokes_the_device(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let exp = now_secs() + 3600;
    s.save_refresh("t1", alice, &dev("phone"), exp).await.unwrap();
    s.save_refresh("t2", alice, &dev("phone"), exp).await.unwrap();
    s.save_refresh("t3", alice, &dev("laptop"), exp).await.unwrap();

    assert_eq!(s.use_refresh("t1").await.unwrap(), RefreshOutcome::Valid { user: alice, device: dev("phone") });
    assert_eq!(s.use_refresh("t1").await.unwrap(), RefreshOutcome::Reused);
    // The reuse ended the phone's session: its other token is gone.
    assert_eq!(s.use_refresh("t2").await.unwrap(), RefreshOutcome::Unknown);
    // ...and so is the reused one itself.
    assert_eq!(s.use_refresh("t1").await.unwrap(), RefreshOutcome::Unknown);
    // Another device's session survives.
    assert_eq!(s.use_refresh("t3").await.unwrap(), RefreshOutcome::Valid { user: alice, device: dev("laptop") });
}

/// Contract case: unknown and expired refresh tokens are unknown.
pub async fn unknown_and_expired_refresh_tokens_are_unknown(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    assert_eq!(s.use_refresh("never-issued").await.unwrap(), RefreshOutcome::Unknown);
    s.save_refresh("old", alice, &dev("d"), now_secs() - 10).await.unwrap();
    assert_eq!(s.use_refresh("old").await.unwrap(), RefreshOutcome::Unknown);
    assert_eq!(s.use_refresh("old").await.unwrap(), RefreshOutcome::Unknown, "an expired token is never spent");
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

/// Contract case: create group makes the creator a member.
pub async fn create_group_makes_the_creator_a_member(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let g = s.create_group("friends", alice).await.unwrap();
    assert_eq!(g.group_name, "friends");
    assert_eq!(g.created_by, alice);
    assert_eq!(g.members, vec![alice]);
    assert_eq!(s.group(g.group_id).await.unwrap(), Some(g.clone()));

    let g2 = s.create_group("friends", alice).await.unwrap();
    assert_ne!(g2.group_id, g.group_id);
    assert_eq!(s.group(GroupId(999_999)).await.unwrap(), None);
    assert_err!(s.create_group("ghost's", UserId(999_999)).await, StoreError::NotFound(_));
}

/// Contract case: members are added and removed idempotently and listed sorted.
pub async fn members_are_added_and_removed_idempotently_and_listed_sorted(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let c = user(&s, "c").await;
    // Created by the highest id, members added out of order: the list is still sorted.
    let g = s.create_group("g", c).await.unwrap().group_id;
    assert_eq!(s.add_member(g, b).await.unwrap().members, vec![b, c]);
    assert_eq!(s.add_member(g, a).await.unwrap().members, vec![a, b, c]);
    assert_eq!(s.add_member(g, a).await.unwrap().members, vec![a, b, c], "adding twice is a no-op");
    assert_eq!(s.group(g).await.unwrap().unwrap().members, vec![a, b, c]);

    assert_eq!(s.remove_member(g, b).await.unwrap().members, vec![a, c]);
    assert_eq!(s.remove_member(g, b).await.unwrap().members, vec![a, c], "removing twice is a no-op");
    assert_eq!(s.group(g).await.unwrap().unwrap().members, vec![a, c]);

    assert_err!(s.add_member(GroupId(999_999), a).await, StoreError::NotFound(_));
    assert_err!(s.add_member(g, UserId(999_999)).await, StoreError::NotFound(_));
    assert_err!(s.remove_member(GroupId(999_999), a).await, StoreError::NotFound(_));
}

/// Contract case: removed member can no longer send.
pub async fn removed_member_can_no_longer_send(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let g = s.create_group("g", a).await.unwrap().group_id;
    s.add_member(g, b).await.unwrap();
    send(&s, gm(b, g, "in")).await;
    s.remove_member(g, b).await.unwrap();
    assert_err!(try_send(&s, gm(b, g, "out")).await, StoreError::Forbidden(_));
    assert!(send(&s, gm(a, g, "alone")).await.recipients.is_empty(), "removed member no longer receives");
}

// ---------------------------------------------------------------------------------------------
// Append
// ---------------------------------------------------------------------------------------------

/// Contract case: direct messages get per conversation seqs and growing ids.
pub async fn direct_messages_get_per_conversation_seqs_and_growing_ids(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let carol = user(&s, "carol").await;
    let ab = ConversationId::direct(alice, bob);

    let m1 = send(&s, dm(alice, bob, "one")).await;
    let m2 = send(&s, dm(bob, alice, "two")).await;
    let other = send(&s, dm(alice, carol, "elsewhere")).await;
    let m3 = send(&s, dm(alice, bob, "three")).await;

    assert_eq!([m1.view.conversation_seq, m2.view.conversation_seq, m3.view.conversation_seq], [1, 2, 3]);
    assert_eq!(other.view.conversation_seq, 1, "each conversation counts from 1");
    assert!(m1.view.message_id < m2.view.message_id);
    assert!(m2.view.message_id < other.view.message_id);
    assert!(other.view.message_id < m3.view.message_id);

    assert_eq!(m1.conversation, ab);
    assert_eq!(m2.conversation, ab, "both directions share one conversation");
    assert_eq!(other.conversation, ConversationId::direct(alice, carol));
    assert_eq!(m1.recipients, vec![bob], "recipients exclude the sender");
    assert_eq!(m2.recipients, vec![alice]);
    assert!(!m1.duplicate);

    assert_eq!(m1.view.sender_id, alice);
    assert_eq!(m1.view.receiver_id, Some(bob));
    assert_eq!(m1.view.group_id, None);
    assert_eq!(m1.view.message, "one");
    assert!(m1.view.timestamp > 0);

    let (stored, conv) = s.message(m2.view.message_id).await.unwrap().expect("stored");
    assert_eq!(conv, ab);
    assert_eq!(stored, m2.view);
    assert_eq!(s.message(MessageId(999_999)).await.unwrap(), None);

    assert_eq!(texts(&all_history(&s, ab, bob).await), ["one", "two", "three"]);
}

/// Contract case: resend with same client msg id is deduplicated.
pub async fn resend_with_same_client_msg_id_is_deduplicated(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let ab = ConversationId::direct(alice, bob);

    let first = send(&s, cid(dm(alice, bob, "hello"), "c-1")).await;
    assert!(!first.duplicate);
    let again = send(&s, cid(dm(alice, bob, "hello"), "c-1")).await;
    assert!(again.duplicate);
    assert_eq!(again.view.message_id, first.view.message_id);
    assert_eq!(again.view.conversation_seq, first.view.conversation_seq);
    assert_eq!(again.view.client_msg_id.as_deref(), Some("c-1"));
    assert_eq!(again.conversation, ab);
    assert_eq!(all_history(&s, ab, alice).await.len(), 1, "no second message stored");

    // Same id from another sender, or another id from the same sender: new messages.
    let bobs = send(&s, cid(dm(bob, alice, "hello"), "c-1")).await;
    assert!(!bobs.duplicate);
    let next = send(&s, cid(dm(alice, bob, "hello"), "c-2")).await;
    assert!(!next.duplicate);
    assert_eq!(next.view.conversation_seq, 3, "the duplicate consumed no sequence number");

    // Duplicates inside one batch are caught too.
    let batch = s.append(vec![cid(dm(alice, bob, "x"), "c-3"), cid(dm(alice, bob, "x"), "c-3")]).await;
    let (a, b) = (batch[0].as_ref().unwrap(), batch[1].as_ref().unwrap());
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(a.view.message_id, b.view.message_id);
    assert_eq!(all_history(&s, ab, alice).await.len(), 4);
}

/// Contract case: message to unknown user is not found.
pub async fn message_to_unknown_user_is_not_found(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    assert_err!(try_send(&s, dm(alice, UserId(999_999), "hi")).await, StoreError::NotFound(_));
    assert!(s.chats(alice, None, 10).await.unwrap().items.is_empty(), "no conversation was created");
}

/// Contract case: group send checks membership.
pub async fn group_send_checks_membership(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let c = user(&s, "c").await;
    let outsider = user(&s, "outsider").await;
    let g = s.create_group("g", a).await.unwrap().group_id;
    s.add_member(g, b).await.unwrap();
    s.add_member(g, c).await.unwrap();

    let m = send(&s, gm(b, g, "hi all")).await;
    assert_eq!(sorted(m.recipients), vec![a, c]);
    assert_eq!(m.conversation, ConversationId::Group(g));
    assert_eq!(m.view.group_id, Some(g));
    assert_eq!(m.view.receiver_id, None);
    assert_eq!(m.view.conversation_seq, 1);

    assert_err!(try_send(&s, gm(outsider, g, "let me in")).await, StoreError::Forbidden(_));
    assert_err!(try_send(&s, gm(a, GroupId(999_999), "void")).await, StoreError::NotFound(_));
    assert_eq!(all_history(&s, ConversationId::Group(g), a).await.len(), 1);
}

/// Contract case: one refused message does not fail its batch.
pub async fn one_refused_message_does_not_fail_its_batch(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let outsider = user(&s, "outsider").await;
    let g = s.create_group("g", a).await.unwrap().group_id;
    let ab = ConversationId::direct(a, b);

    let out = s
        .append(vec![
            dm(a, b, "first"),
            dm(a, UserId(999_999), "nobody"),
            gm(outsider, g, "not a member"),
            with_media(dm(a, b, "bad media"), "no-such-media"),
            dm(a, b, "second"),
            gm(a, g, "group ok"),
        ])
        .await;
    assert_eq!(out.len(), 6);
    assert_eq!(out[0].as_ref().unwrap().view.conversation_seq, 1);
    assert_err!(&out[1], StoreError::NotFound(_));
    assert_err!(&out[2], StoreError::Forbidden(_));
    assert_err!(&out[3], StoreError::NotFound(_));
    assert_eq!(out[4].as_ref().unwrap().view.conversation_seq, 2, "refused messages take no seq");
    assert_eq!(out[5].as_ref().unwrap().view.conversation_seq, 1);
    assert!(out[0].as_ref().unwrap().view.message_id < out[4].as_ref().unwrap().view.message_id);

    assert_eq!(texts(&all_history(&s, ab, b).await), ["first", "second"]);
    assert_eq!(texts(&all_history(&s, ConversationId::Group(g), a).await), ["group ok"]);
}

/// Contract case: media must be the senders and is shared with recipients.
pub async fn media_must_be_the_senders_and_is_shared_with_recipients(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let stranger = user(&s, "stranger").await;
    s.save_media(media("m-alice", alice)).await.unwrap();

    assert_eq!(s.media_for(alice, "m-alice").await.unwrap(), Some(media("m-alice", alice)), "uploader sees it");
    assert_eq!(s.media_for(bob, "m-alice").await.unwrap(), None, "nobody else before it is sent");
    assert_eq!(s.media_for(alice, "nope").await.unwrap(), None);

    assert_err!(try_send(&s, with_media(dm(bob, alice, "stolen"), "m-alice")).await, StoreError::NotFound(_));
    assert_err!(try_send(&s, with_media(dm(alice, bob, "missing"), "nope")).await, StoreError::NotFound(_));

    let sent = send(&s, with_media(dm(alice, bob, "look"), "m-alice")).await;
    let m = sent.view.media.as_ref().expect("media on the view");
    assert_eq!(m.media_id, "m-alice");
    assert_eq!(m.content_type.as_deref(), Some("image/png"));
    assert_eq!(m.size, Some(1234));
    // Read paths carry the same metadata.
    let (stored, _) = s.message(sent.view.message_id).await.unwrap().unwrap();
    assert_eq!(stored.media, sent.view.media);
    assert_eq!(all_history(&s, sent.conversation, bob).await[0].media, sent.view.media);

    assert_eq!(s.media_for(bob, "m-alice").await.unwrap(), Some(media("m-alice", alice)), "recipient sees it");
    assert_eq!(s.media_for(stranger, "m-alice").await.unwrap(), None, "a stranger does not");
    assert_eq!(s.media_for(alice, "m-alice").await.unwrap(), Some(media("m-alice", alice)));
}

// ---------------------------------------------------------------------------------------------
// Group membership over time
// ---------------------------------------------------------------------------------------------

/// Contract case: late member sees only messages after joining.
pub async fn late_member_sees_only_messages_after_joining(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let late = user(&s, "late").await;
    let g = s.create_group("g", a).await.unwrap().group_id;
    let conv = ConversationId::Group(g);
    s.add_member(g, b).await.unwrap();
    for t in ["m1", "m2", "m3"] {
        send(&s, gm(a, g, t)).await;
    }

    s.add_member(g, late).await.unwrap();
    let page = s.history(conv, late, None, 50).await.unwrap();
    assert!(page.items.is_empty(), "earlier messages are hidden: {:?}", texts(&page.items));
    assert!(page.next_cursor.is_none());
    assert_eq!(unread(&s, late, &conv.to_string()).await, 0);
    assert_eq!(unread(&s, b, &conv.to_string()).await, 3, "existing members are unaffected");
    assert!(s.backlog(late, &dev("new"), SyncFrom::Device, 50).await.unwrap().messages.is_empty());
    assert!(s.search(late, "m1", 10).await.unwrap().is_empty());

    let m4 = send(&s, gm(b, g, "m4")).await;
    assert_eq!(sorted(m4.recipients), vec![a, late]);
    assert_eq!(m4.view.conversation_seq, 4);
    assert_eq!(texts(&all_history(&s, conv, late).await), ["m4"]);
    assert_eq!(texts(&all_history(&s, conv, a).await), ["m1", "m2", "m3", "m4"]);
    assert_eq!(unread(&s, late, &conv.to_string()).await, 1);
    let backlog = s.backlog(late, &dev("new"), SyncFrom::Device, 50).await.unwrap();
    assert_eq!(ids(&backlog.messages), vec![m4.view.message_id]);
}

/// Contract case: late member chat list does not reveal messages before joining.
pub async fn late_member_chat_list_does_not_reveal_messages_before_joining(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let late = user(&s, "late").await;
    let g = s.create_group("g", a).await.unwrap().group_id;
    send(&s, gm(a, g, "secret from before you joined")).await;
    s.add_member(g, late).await.unwrap();

    let chats = s.chats(late, None, 10).await.unwrap();
    assert_eq!(chats.items.len(), 1);
    let row = &chats.items[0];
    assert_eq!(row.group_id, Some(g));
    assert_eq!(row.unread_count, 0);
    assert!(
        row.last_message.as_ref().is_none_or(|m| m.message != "secret from before you joined"),
        "chat list shows a message history hides: {:?}",
        row.last_message
    );
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

/// Contract case: history pages backwards in conversation order.
pub async fn history_pages_backwards_in_conversation_order(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let conv = ConversationId::direct(a, b);
    for i in 1..=7 {
        let m = if i % 2 == 0 { dm(b, a, &format!("m{i}")) } else { dm(a, b, &format!("m{i}")) };
        send(&s, m).await;
    }

    let p1 = s.history(conv, a, None, 3).await.unwrap();
    assert_eq!(texts(&p1.items), ["m5", "m6", "m7"], "newest page first, oldest-first inside");
    let c1 = p1.next_cursor.clone().expect("more pages");
    let p2 = s.history(conv, a, Some(c1.parse().expect("numeric cursor")), 3).await.unwrap();
    assert_eq!(texts(&p2.items), ["m2", "m3", "m4"]);
    let c2 = p2.next_cursor.clone().expect("more pages");
    let p3 = s.history(conv, a, Some(c2.parse().unwrap()), 3).await.unwrap();
    assert_eq!(texts(&p3.items), ["m1"]);
    assert_eq!(p3.next_cursor, None, "last page has no cursor");

    let seqs: Vec<i64> = p3.items.iter().chain(&p2.items).chain(&p1.items).map(|m| m.conversation_seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());

    // A page that exactly reaches the start has no cursor either.
    let exact = s.history(conv, b, Some(4), 3).await.unwrap();
    assert_eq!(texts(&exact.items), ["m1", "m2", "m3"]);
    assert_eq!(exact.next_cursor, None);
    // Limit is respected and everything fits in a big page.
    assert_eq!(s.history(conv, a, None, 1).await.unwrap().items.len(), 1);
    assert_eq!(all_history(&s, conv, b).await.len(), 7);
    // An unknown conversation is simply empty.
    let none = s.history(ConversationId::direct(a, UserId(999_999)), a, None, 10).await.unwrap();
    assert!(none.items.is_empty() && none.next_cursor.is_none());
}

// ---------------------------------------------------------------------------------------------
// Chats
// ---------------------------------------------------------------------------------------------

/// Contract case: chats are newest first with unread counts.
pub async fn chats_are_newest_first_with_unread_counts(s: Arc<dyn MessageStore>) {
    let me = user(&s, "me").await;
    let bob = user(&s, "bob").await;
    let carol = user(&s, "carol").await;
    let g = s.create_group("team", me).await.unwrap().group_id;
    s.add_member(g, bob).await.unwrap();
    let with_bob = ConversationId::direct(me, bob).to_string();
    let with_carol = ConversationId::direct(me, carol).to_string();
    let team = ConversationId::Group(g).to_string();

    send(&s, dm(bob, me, "b1")).await;
    send(&s, dm(bob, me, "b2")).await;
    send(&s, dm(carol, me, "c1")).await;
    send(&s, gm(bob, g, "g1")).await;
    send(&s, dm(me, carol, "my reply")).await;
    let b3 = send(&s, dm(bob, me, "b3")).await;

    let page = s.chats(me, None, 10).await.unwrap();
    let order: Vec<&str> = page.items.iter().map(|c| c.chat_id.as_str()).collect();
    assert_eq!(order, [with_bob.as_str(), with_carol.as_str(), team.as_str()], "newest activity first");
    assert_eq!(page.next_cursor, None);

    let bob_row = &page.items[0];
    assert_eq!((bob_row.kind, bob_row.peer_id, bob_row.group_id), ("direct", Some(bob), None));
    assert_eq!(bob_row.title, "bob");
    assert_eq!(bob_row.last_message.as_ref().unwrap().message_id, b3.view.message_id);
    assert_eq!(bob_row.unread_count, 3);
    let carol_row = &page.items[1];
    assert_eq!(carol_row.last_message.as_ref().unwrap().message, "my reply");
    assert_eq!(carol_row.unread_count, 0, "own messages are not unread (and replying reads the chat)");
    let team_row = &page.items[2];
    assert_eq!((team_row.kind, team_row.group_id, team_row.peer_id), ("group", Some(g), None));
    assert_eq!(team_row.title, "team");
    assert_eq!(team_row.unread_count, 1);

    // The other side sees the same conversation with its own counts.
    assert_eq!(unread(&s, bob, &with_bob).await, 0);
    assert_eq!(unread(&s, carol, &with_carol).await, 1);
    assert_eq!(unread(&s, bob, &team).await, 0);

    // A read receipt on the newest message zeroes the count; a delivered one does not.
    s.receipt(me, &dev("phone"), b3.view.message_id, ReceiptStatus::Delivered).await.unwrap();
    assert_eq!(unread(&s, me, &with_bob).await, 3);
    s.receipt(me, &dev("phone"), b3.view.message_id, ReceiptStatus::Read).await.unwrap();
    assert_eq!(unread(&s, me, &with_bob).await, 0);
    send(&s, dm(bob, me, "b4")).await;
    assert_eq!(unread(&s, me, &with_bob).await, 1);
}

/// Contract case: chats paginate without duplicates or gaps.
pub async fn chats_paginate_without_duplicates_or_gaps(s: Arc<dyn MessageStore>) {
    let me = user(&s, "me").await;
    let mut peers = Vec::new();
    for i in 0..5 {
        peers.push(user(&s, &format!("peer{i}")).await);
    }
    // Two groups without messages tie on "no activity"; the cursor must still split them.
    s.create_group("empty1", me).await.unwrap();
    s.create_group("empty2", me).await.unwrap();
    let g = s.create_group("busy", me).await.unwrap().group_id;
    for (i, p) in peers.iter().enumerate() {
        send(&s, dm(*p, me, &format!("hi {i}"))).await;
        if i == 2 {
            send(&s, gm(me, g, "group")).await;
        }
    }
    send(&s, dm(peers[1], me, "again")).await; // peer1 moves to the top

    let all = s.chats(me, None, 100).await.unwrap();
    assert_eq!(all.items.len(), 8);
    assert_eq!(all.items[0].peer_id, Some(peers[1]));
    let all_ids: Vec<String> = all.items.iter().map(|c| c.chat_id.clone()).collect();

    for limit in [1, 2, 3, 5, 7, 8] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.chats(me, cursor.as_deref(), limit).await.unwrap();
            assert!(page.items.len() <= limit);
            seen.extend(page.items.iter().map(|c| c.chat_id.clone()));
            pages += 1;
            assert!(pages < 50, "pagination does not terminate");
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, all_ids, "limit {limit}: pages concatenate to the full list");
        assert_eq!(pages, all_ids.len().div_ceil(limit), "limit {limit}: no trailing empty page");
    }
    assert_err!(s.chats(me, Some("garbage"), 10).await, StoreError::Invalid(_));
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

/// Contract case: search finds words in the callers conversations only.
pub async fn search_finds_words_in_the_callers_conversations_only(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let carol = user(&s, "carol").await;
    let dave = user(&s, "dave").await;
    let g = s.create_group("g", alice).await.unwrap().group_id;
    s.add_member(g, carol).await.unwrap();

    let fox = send(&s, dm(alice, bob, "The quick brown fox")).await.view.message_id;
    let dog = send(&s, dm(bob, alice, "a lazy dog, sleeping")).await.view.message_id;
    let other = send(&s, dm(carol, dave, "quick fox elsewhere")).await.view.message_id;
    let grp = send(&s, gm(carol, g, "quick group note")).await.view.message_id;

    assert_eq!(ids(&s.search(alice, "quick", 10).await.unwrap()), vec![grp, fox], "newest first, own conversations");
    assert_eq!(ids(&s.search(bob, "FOX", 10).await.unwrap()), vec![fox], "case-insensitive, received");
    assert_eq!(ids(&s.search(alice, "lazy", 10).await.unwrap()), vec![dog]);
    assert_eq!(ids(&s.search(alice, "quick fox", 10).await.unwrap()), vec![fox], "all words must match");
    assert_eq!(ids(&s.search(dave, "quick", 10).await.unwrap()), vec![other]);
    assert_eq!(s.search(alice, "quick", 1).await.unwrap().len(), 1, "limit respected");
    assert!(s.search(alice, "elephant", 10).await.unwrap().is_empty());

    let stranger = user(&s, "stranger").await;
    assert!(s.search(stranger, "quick", 10).await.unwrap().is_empty(), "a third user finds nothing");
    assert!(s.search(stranger, "fox", 10).await.unwrap().is_empty());
}

/// Contract case: search tolerates fts syntax and refuses empty queries.
pub async fn search_tolerates_fts_syntax_and_refuses_empty_queries(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let fox = send(&s, dm(alice, bob, "quick brown fox")).await.view.message_id;

    for q in [
        "\"quick",
        "quick\"",
        "quick OR",
        "AND quick",
        "NOT",
        "fox*",
        "^quick",
        "body:quick",
        "NEAR(quick fox)",
        "quick) (",
        "-fox",
        "'; DROP TABLE messages; --",
        "{quick}",
        "quick + fox",
    ] {
        let r = s.search(alice, q, 10).await;
        assert!(r.is_ok(), "query {q:?} errored: {r:?}");
    }
    assert_eq!(ids(&s.search(alice, "\"quick\" OR", 10).await.unwrap()), Vec::<MessageId>::new(), "OR is a word here");
    assert_eq!(ids(&s.search(alice, "fox*", 10).await.unwrap()), vec![fox]);
    assert_eq!(ids(&s.search(alice, "NEAR(quick fox)", 10).await.unwrap()), Vec::<MessageId>::new());

    assert_err!(s.search(alice, "", 10).await, StoreError::Invalid(_));
    assert_err!(s.search(alice, "   ", 10).await, StoreError::Invalid(_));
    assert_err!(s.search(alice, "\"*()", 10).await, StoreError::Invalid(_));
    // The store still works after all that.
    assert_eq!(ids(&s.search(bob, "brown", 10).await.unwrap()), vec![fox]);
}

// ---------------------------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------------------------

/// Contract case: receipt requires a received message.
pub async fn receipt_requires_a_received_message(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let eve = user(&s, "eve").await;
    let m = send_id(&s, dm(alice, bob, "private")).await;

    assert_err!(s.receipt(eve, &dev("e"), m, ReceiptStatus::Read).await, StoreError::Forbidden(_));
    assert_err!(s.receipt(eve, &dev("e"), m, ReceiptStatus::Delivered).await, StoreError::Forbidden(_));
    assert_err!(s.receipt(bob, &dev("b"), MessageId(999_999), ReceiptStatus::Read).await, StoreError::NotFound(_));

    assert_eq!(s.receipt(bob, &dev("b"), m, ReceiptStatus::Read).await.unwrap(), vec![(alice, m)]);
    assert!(s.receipt(alice, &dev("a"), m, ReceiptStatus::Read).await.unwrap().is_empty(), "own message: no notice");
}

/// Contract case: group read receipt notifies each author once.
pub async fn group_read_receipt_notifies_each_author_once(s: Arc<dyn MessageStore>) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let reader = user(&s, "reader").await;
    let g = s.create_group("g", a).await.unwrap().group_id;
    s.add_member(g, b).await.unwrap();
    s.add_member(g, reader).await.unwrap();

    send(&s, gm(a, g, "a1")).await;
    let b1 = send_id(&s, gm(b, g, "b1")).await;
    let a2 = send_id(&s, gm(a, g, "a2")).await;
    let b2 = send_id(&s, gm(b, g, "b2")).await;
    let b3 = send_id(&s, gm(b, g, "b3")).await;

    let notices = s.receipt(reader, &dev("r"), b2, ReceiptStatus::Read).await.unwrap();
    assert_eq!(sorted(notices), sorted(vec![(a, a2), (b, b2)]), "one notice per author, newest covered message");
    assert!(s.receipt(reader, &dev("r"), b2, ReceiptStatus::Read).await.unwrap().is_empty(), "repeat: nothing new");
    assert!(s.receipt(reader, &dev("r"), b1, ReceiptStatus::Read).await.unwrap().is_empty(), "older: nothing new");
    assert!(
        s.receipt(reader, &dev("r"), b2, ReceiptStatus::Delivered).await.unwrap().is_empty(),
        "read implies delivered"
    );
    assert_eq!(s.receipt(reader, &dev("r"), b3, ReceiptStatus::Read).await.unwrap(), vec![(b, b3)]);

    // An author's own receipt covers only the other author's messages.
    let notices = s.receipt(a, &dev("a"), b3, ReceiptStatus::Delivered).await.unwrap();
    assert_eq!(notices, vec![(b, b3)]);
}

/// Contract case: read implies delivered and marks only move forward.
pub async fn read_implies_delivered_and_marks_only_move_forward(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let m1 = send_id(&s, dm(alice, bob, "1")).await;
    let m2 = send_id(&s, dm(alice, bob, "2")).await;
    let m3 = send_id(&s, dm(alice, bob, "3")).await;

    assert_eq!(s.receipt(bob, &dev("b"), m1, ReceiptStatus::Delivered).await.unwrap(), vec![(alice, m1)]);
    assert_eq!(s.receipt(bob, &dev("b"), m2, ReceiptStatus::Read).await.unwrap(), vec![(alice, m2)]);
    assert!(s.receipt(bob, &dev("b"), m1, ReceiptStatus::Delivered).await.unwrap().is_empty());
    assert!(s.receipt(bob, &dev("b"), m2, ReceiptStatus::Delivered).await.unwrap().is_empty(), "read implied delivered");
    assert!(s.receipt(bob, &dev("b"), m1, ReceiptStatus::Read).await.unwrap().is_empty());
    assert_eq!(s.receipt(bob, &dev("b"), m3, ReceiptStatus::Delivered).await.unwrap(), vec![(alice, m3)]);
    assert_eq!(
        s.receipt(bob, &dev("b"), m3, ReceiptStatus::Read).await.unwrap(),
        vec![(alice, m3)],
        "delivered does not imply read"
    );
    assert!(s.receipt(bob, &dev("other"), m3, ReceiptStatus::Read).await.unwrap().is_empty(), "marks are per user");
}

// ---------------------------------------------------------------------------------------------
// Backlog
// ---------------------------------------------------------------------------------------------

/// Contract case: new device gets only undelivered messages.
pub async fn new_device_gets_only_undelivered_messages(s: Arc<dyn MessageStore>) {
    let me = user(&s, "me").await;
    let bob = user(&s, "bob").await;
    let carol = user(&s, "carol").await;

    send(&s, on(dm(me, carol, "mine"), "A")).await; // own sends are never backlog of a new device
    let b1 = send_id(&s, dm(bob, me, "b1")).await;
    let b2 = send_id(&s, dm(bob, me, "b2")).await;
    let c1 = send_id(&s, dm(carol, me, "c1")).await;
    let b3 = send_id(&s, dm(bob, me, "b3")).await;

    // Before any receipt, a new device gets everything others sent.
    let all = s.backlog(me, &dev("fresh"), SyncFrom::Device, 50).await.unwrap();
    assert_eq!(ids(&all.messages), vec![b1, b2, c1, b3]);
    assert_eq!(all.next, None);

    // Device A acknowledges b2: b1 and b2 count as delivered to the user.
    s.receipt(me, &dev("A"), b2, ReceiptStatus::Delivered).await.unwrap();
    let page = s.backlog(me, &dev("B"), SyncFrom::Device, 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![c1, b3], "only what no device got yet, other conversations included");
    assert_eq!(page.next, None);
    // The explicit form is the same.
    let page = s.backlog(me, &dev("B"), SyncFrom::Undelivered(MessageId(0)), 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![c1, b3]);
}

/// Contract case: device with cursor gets everything after it except its own sends.
pub async fn device_with_cursor_gets_everything_after_it_except_its_own_sends(s: Arc<dyn MessageStore>) {
    let me = user(&s, "me").await;
    let bob = user(&s, "bob").await;
    let old = send_id(&s, dm(bob, me, "old")).await;
    s.advance_cursor(me, &dev("A"), old).await.unwrap();

    let from_bob = send_id(&s, dm(bob, me, "from bob")).await;
    let from_b = send_id(&s, on(dm(me, bob, "from my other device"), "B")).await;
    let from_a = send_id(&s, on(dm(me, bob, "from this device"), "A")).await;
    // Another device acknowledging delivery does not shrink this device's backlog.
    s.receipt(me, &dev("B"), from_bob, ReceiptStatus::Read).await.unwrap();

    let page = s.backlog(me, &dev("A"), SyncFrom::Device, 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![from_bob, from_b]);
    assert_eq!(page.next, None);

    // An explicit sync after an id ignores the cursor but still skips this device's sends.
    let page = s.backlog(me, &dev("A"), SyncFrom::After(MessageId(0)), 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![old, from_bob, from_b]);
    let page = s.backlog(me, &dev("A"), SyncFrom::After(from_bob), 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![from_b]);
    let page = s.backlog(me, &dev("C"), SyncFrom::After(old), 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![from_bob, from_b, from_a], "a third device gets both devices' sends");

    // Moving the cursor on shortens the backlog; it never moves back.
    s.advance_cursor(me, &dev("A"), from_bob).await.unwrap();
    s.advance_cursor(me, &dev("A"), old).await.unwrap();
    assert_eq!(ids(&s.backlog(me, &dev("A"), SyncFrom::Device, 50).await.unwrap().messages), vec![from_b]);

    // Bob's view: messages from me on any device.
    let bobs = s.backlog(bob, &dev(MAIN_DEVICE), SyncFrom::After(MessageId(0)), 50).await.unwrap();
    assert_eq!(ids(&bobs.messages), vec![from_b, from_a], "own sends from the same device are skipped");
}

/// Contract case: bogus cursor cannot hide future messages.
pub async fn bogus_cursor_cannot_hide_future_messages(s: Arc<dyn MessageStore>) {
    let me = user(&s, "me").await;
    let bob = user(&s, "bob").await;
    let seen = send_id(&s, dm(bob, me, "seen")).await;
    s.advance_cursor(me, &dev("A"), MessageId(1_000_000_000)).await.unwrap();
    let next = send_id(&s, dm(bob, me, "new")).await;
    let page = s.backlog(me, &dev("A"), SyncFrom::Device, 50).await.unwrap();
    assert_eq!(ids(&page.messages), vec![next]);
    assert!(next > seen);
}

async fn five_pending(s: &Arc<dyn MessageStore>) -> (UserId, Vec<MessageId>) {
    let me = user(s, "me").await;
    let bob = user(s, "bob").await;
    let carol = user(s, "carol").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let from = if i % 2 == 0 { bob } else { carol };
        sent.push(send_id(s, dm(from, me, &format!("p{i}"))).await);
    }
    (me, sent)
}

fn concat(pages: &[Backlog]) -> Vec<MessageId> {
    pages.iter().flat_map(|p| ids(&p.messages)).collect()
}

/// Contract case: backlog pages follow next after a cursor.
pub async fn backlog_pages_follow_next_after_a_cursor(s: Arc<dyn MessageStore>) {
    let (me, sent) = five_pending(&s).await;
    s.advance_cursor(me, &dev("A"), MessageId(0)).await.unwrap();

    let pages = drain_backlog(&s, me, &dev("A"), SyncFrom::Device, 2).await;
    assert_eq!(pages.iter().map(|p| p.messages.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
    assert_eq!(concat(&pages), sent, "all five exactly once, in order");
    assert!(matches!(pages[0].next, Some(SyncFrom::After(_))), "a cursor device pages with After: {:?}", pages[0].next);
    assert_eq!(pages.last().unwrap().next, None);

    let pages = drain_backlog(&s, me, &dev("Z"), SyncFrom::After(MessageId(0)), 2).await;
    assert_eq!(concat(&pages), sent);
    assert_eq!(pages.last().unwrap().next, None);
}

/// Contract case: backlog pages follow next for a new device.
pub async fn backlog_pages_follow_next_for_a_new_device(s: Arc<dyn MessageStore>) {
    let (me, sent) = five_pending(&s).await;

    let pages = drain_backlog(&s, me, &dev("new"), SyncFrom::Device, 2).await;
    assert_eq!(pages.iter().map(|p| p.messages.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
    assert_eq!(concat(&pages), sent, "all five exactly once, in order");
    assert!(
        matches!(pages[0].next, Some(SyncFrom::Undelivered(_))),
        "a new device keeps paging undelivered messages: {:?}",
        pages[0].next
    );
    assert_eq!(pages.last().unwrap().next, None);
}

/// Contract case: backlog paging with exactly full pages ends.
pub async fn backlog_paging_with_exactly_full_pages_ends(s: Arc<dyn MessageStore>) {
    let (me, sent) = five_pending(&s).await;
    for from in [SyncFrom::Device, SyncFrom::After(MessageId(0))] {
        let pages = drain_backlog(&s, me, &dev("new"), from, 5).await;
        assert_eq!(concat(&pages), sent);
        assert!(pages.last().unwrap().messages.is_empty(), "a full last page is followed by an empty one");
    }
}

// ---------------------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------------------

/// Contract case: everything survives a reopen. `reopen` opens the same storage again (the
/// same directory, the same schema); the first store is dropped before it is called.
pub async fn everything_survives_a_reopen<F, Fut>(s: Arc<dyn MessageStore>, reopen: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn MessageStore>>,
{
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let gone = user(&s, "gone").await;
    s.delete_user(gone).await.unwrap();
    s.set_last_seen(bob, 42).await.unwrap();
    s.save_refresh("tok", alice, &dev("A"), now_secs() + 3600).await.unwrap();
    s.save_media(media("pic", alice)).await.unwrap();
    let g = s.create_group("g", alice).await.unwrap().group_id;
    s.add_member(g, bob).await.unwrap();
    let m1 = send(&s, cid(with_media(dm(alice, bob, "durable hello"), "pic"), "k1")).await;
    let m2 = send_id(&s, dm(alice, bob, "second")).await;
    let g1 = send_id(&s, gm(bob, g, "group durable")).await;
    s.receipt(bob, &dev("B"), m1.view.message_id, ReceiptStatus::Read).await.unwrap();
    drop(s);

    let s = reopen().await;
    assert_eq!(s.user(bob).await.unwrap().unwrap().last_seen, Some(42));
    assert_eq!(s.credentials("alice@example.com").await.unwrap().unwrap().0.user_id, alice);
    assert_eq!(s.deleted_users().await.unwrap(), vec![gone]);
    assert_eq!(s.group(g).await.unwrap().unwrap().members, vec![alice, bob]);
    assert_eq!(s.media_for(bob, "pic").await.unwrap(), Some(media("pic", alice)));
    let (stored, _) = s.message(m1.view.message_id).await.unwrap().unwrap();
    assert_eq!(stored, m1.view);
    let ab = ConversationId::direct(alice, bob);
    assert_eq!(ids(&all_history(&s, ab, bob).await), vec![m1.view.message_id, m2]);
    assert_eq!(ids(&all_history(&s, ConversationId::Group(g), alice).await), vec![g1]);
    assert_eq!(unread(&s, bob, &ab.to_string()).await, 1, "read mark survived");
    assert_eq!(ids(&s.search(bob, "durable", 10).await.unwrap()), vec![g1, m1.view.message_id]);
    assert_eq!(ids(&s.backlog(bob, &dev("B"), SyncFrom::Device, 10).await.unwrap().messages), vec![m2, g1], "cursor survived");
    assert_eq!(s.use_refresh("tok").await.unwrap(), RefreshOutcome::Valid { user: alice, device: dev("A") });

    // Dedupe and sequences continue where they left off.
    let dup = send(&s, cid(dm(alice, bob, "durable hello"), "k1")).await;
    assert!(dup.duplicate);
    assert_eq!(dup.view.message_id, m1.view.message_id);
    let m3 = send(&s, dm(bob, alice, "third")).await;
    assert_eq!(m3.view.conversation_seq, 3);
    assert!(m3.view.message_id > g1);
    drop(s);

    // A second reopen (migrations already applied) works too.
    let s = reopen().await;
    assert_eq!(all_history(&s, ab, alice).await.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Concurrent writes
// ---------------------------------------------------------------------------------------------

/// Contract case: concurrent appends get gapless sequences.
pub async fn concurrent_appends_get_gapless_sequences(s: Arc<dyn MessageStore>) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = Arc::clone(&s);
            let (from, to) = if i % 3 == 0 { (bob, alice) } else { (alice, bob) };
            tokio::spawn(async move { try_send(&s, cid(dm(from, to, &format!("n{i}")), &format!("c{i}"))).await })
        })
        .collect();
    let mut got: Vec<(i64, MessageId)> = Vec::new();
    for t in tasks {
        let a = t.await.expect("task").expect("append succeeds");
        assert!(!a.duplicate);
        got.push((a.view.conversation_seq, a.view.message_id));
    }
    got.sort();
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "seqs are exactly 1..=200");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "ids grow with seq");
    let distinct: HashSet<MessageId> = got.iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len(), 200);

    let hist = all_history(&s, ConversationId::direct(alice, bob), alice).await;
    assert_eq!(hist.iter().map(|m| m.conversation_seq).collect::<Vec<_>>(), seqs);
}

/// Contract case: concurrent writes fail independently.
pub async fn concurrent_writes_fail_independently(s: Arc<dyn MessageStore>) {
    user(&s, "taken").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                // Every fifth registration reuses a taken email.
                let name = if i % 5 == 0 { "taken".to_owned() } else { format!("u{i}") };
                let nu = NewUser { phone_number: format!("+1-{i}"), ..new_user(&name) };
                (i, s.create_user(nu).await)
            })
        })
        .collect();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i % 5 == 0 {
            assert_err!(r, StoreError::Conflict("email"));
        } else {
            let u = r.unwrap_or_else(|e| panic!("registration {i} failed: {e:?}"));
            assert_eq!(s.user(u.user_id).await.unwrap().unwrap().email, format!("u{i}@example.com"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test generator
// ---------------------------------------------------------------------------------------------

/// Generates one `#[tokio::test]` per contract case, in the calling module.
///
/// `$open` is an `async fn() -> (G, Arc<dyn MessageStore>)` returning a fresh, empty store and
/// a guard that keeps its storage alive (and cleans it up when dropped); `$reopen` is an
/// `async fn(&G) -> Arc<dyn MessageStore>` that opens the same storage again. The calling
/// crate needs `tokio` (with `macros` and `rt-multi-thread`).
///
/// ```text
/// async fn open() -> (tempfile::TempDir, Arc<dyn MessageStore>) { ... }
/// async fn reopen(dir: &tempfile::TempDir) -> Arc<dyn MessageStore> { ... }
/// storage_workers::message_store_contract!(open, reopen);
/// ```
#[macro_export]
macro_rules! message_store_contract {
    ($open:path, $reopen:path) => {
        $crate::message_store_contract!(@current_thread $open;
            create_user_returns_and_stores_the_user,
            duplicate_email_is_a_conflict_case_insensitively,
            duplicate_phone_is_a_conflict,
            credentials_by_email_are_case_insensitive,
            update_user_changes_only_given_fields,
            update_user_conflicts_and_leaves_the_user_unchanged,
            password_change_revokes_refresh_tokens,
            delete_user_frees_identity_and_revokes_tokens,
            delete_user_leaves_their_groups,
            disabled_user_cannot_log_in_and_is_listed_for_revocation,
            set_last_seen_is_stored,
            refresh_token_is_single_use_and_reuse_revokes_the_device,
            unknown_and_expired_refresh_tokens_are_unknown,
            create_group_makes_the_creator_a_member,
            members_are_added_and_removed_idempotently_and_listed_sorted,
            removed_member_can_no_longer_send,
            direct_messages_get_per_conversation_seqs_and_growing_ids,
            resend_with_same_client_msg_id_is_deduplicated,
            message_to_unknown_user_is_not_found,
            group_send_checks_membership,
            one_refused_message_does_not_fail_its_batch,
            media_must_be_the_senders_and_is_shared_with_recipients,
            late_member_sees_only_messages_after_joining,
            late_member_chat_list_does_not_reveal_messages_before_joining,
            history_pages_backwards_in_conversation_order,
            chats_are_newest_first_with_unread_counts,
            chats_paginate_without_duplicates_or_gaps,
            search_finds_words_in_the_callers_conversations_only,
            search_tolerates_fts_syntax_and_refuses_empty_queries,
            receipt_requires_a_received_message,
            group_read_receipt_notifies_each_author_once,
            read_implies_delivered_and_marks_only_move_forward,
            new_device_gets_only_undelivered_messages,
            device_with_cursor_gets_everything_after_it_except_its_own_sends,
            bogus_cursor_cannot_hide_future_messages,
            backlog_pages_follow_next_after_a_cursor,
            backlog_pages_follow_next_for_a_new_device,
            backlog_paging_with_exactly_full_pages_ends,
        );
        // Real parallelism: these cases race writers against each other.
        $crate::message_store_contract!(@multi_thread $open;
            concurrent_appends_get_gapless_sequences,
            concurrent_writes_fail_independently,
        );
        #[tokio::test]
        async fn everything_survives_a_reopen() {
            let (guard, store) = $open().await;
            $crate::contract::everything_survives_a_reopen(store, || $reopen(&guard)).await;
        }
    };
    (@current_thread $open:path; $($case:ident,)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (_guard, store) = $open().await;
                $crate::contract::$case(store).await;
            }
        )*
    };
    (@multi_thread $open:path; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_guard, store) = $open().await;
                $crate::contract::$case(store).await;
            }
        )*
    };
}
