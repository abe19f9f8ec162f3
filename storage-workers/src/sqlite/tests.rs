//! The `MessageStore` contract ([`crate::contract`]) run against [`SqliteStore`]: every case
//! opens a fresh store in its own temporary directory; the durability case reopens that
//! directory.

use super::{schema, search, SqliteStore};
use std::sync::Arc;
use switchboard_core::config::StorageConfig;
use switchboard_core::ids::{DeviceId, MessageId, UserId};
use switchboard_core::protocol::Target;
use switchboard_core::store::{MessageStore, NewMessage};
use tempfile::TempDir;

/// A fresh store in a fresh directory (the `TempDir` keeps the directory for the test).
async fn open() -> (TempDir, Arc<dyn MessageStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), &StorageConfig::default()).expect("open store");
    (dir, Arc::new(store))
}

/// The store in `dir` again, as after a restart.
async fn reopen(dir: &TempDir) -> Arc<dyn MessageStore> {
    Arc::new(SqliteStore::open(dir.path(), &StorageConfig::default()).expect("reopen store"))
}

crate::message_store_contract!(open, reopen);

/// Registers `names` (e-mail `<name>@example.com`) and returns their ids, in order.
async fn users(store: &Arc<dyn MessageStore>, names: &[&str]) -> Vec<UserId> {
    let mut ids = Vec::new();
    for name in names {
        let nu = switchboard_core::store::NewUser {
            user_name: (*name).into(),
            email: format!("{name}@example.com"),
            phone_number: format!("+1-{name}"),
            password_hash: "h".into(),
        };
        ids.push(store.create_user(nu).await.expect("user").user_id);
    }
    ids
}

/// A database written before migration 4 (`messages` with AUTOINCREMENT, the full-text index
/// with document sizes) keeps its messages, ids, sequences, resend keys and search through the
/// upgrade, and new messages continue after them.
#[tokio::test]
async fn migration_4_keeps_messages_ids_and_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        for (i, sql) in schema::MIGRATIONS[..3].iter().enumerate() {
            conn.execute_batch(sql).expect("old migration");
            conn.pragma_update(None, "user_version", i + 1).expect("user_version");
        }
        // What the store wrote before migration 4 for two messages from alice (1) to bob (2).
        conn.execute_batch(
            "INSERT INTO users (user_name, email, phone, created_at)
                 VALUES ('alice', 'alice@example.com', '+1', 1), ('bob', 'bob@example.com', '+2', 1);
             INSERT INTO conversations (id, last_seq, last_message_id) VALUES ('d:1:2', 2, 2);
             INSERT INTO members (conv_id, user_id, delivered_seq, read_seq) VALUES ('d:1:2', 1, 2, 2), ('d:1:2', 2, 0, 0);
             INSERT INTO messages (conv_id, seq, sender_id, sender_device, client_msg_id, body, created_at)
                 VALUES ('d:1:2', 1, 1, 'phone', 'c-1', 'hello migrated world', 1),
                        ('d:1:2', 2, 1, 'phone', 'c-2', 'second migrated note', 2);
             INSERT INTO messages_fts (rowid, body) SELECT id, body FROM messages;
             INSERT INTO inbox (user_id, message_id) VALUES (1, 1), (2, 1), (1, 2), (2, 2);",
        )
        .expect("old data");
    }
    let store = SqliteStore::open(dir.path(), &StorageConfig::default()).expect("open and migrate");
    let (alice, bob) = (UserId(1), UserId(2));
    let ids = |v: Vec<switchboard_core::protocol::MessageView>| v.into_iter().map(|m| m.message_id).collect::<Vec<_>>();
    assert_eq!(ids(store.search(bob, "migrated", 10).await.unwrap()), [MessageId(2), MessageId(1)]);

    let dm = |cid: &str, text: &str| NewMessage {
        sender: alice,
        sender_device: DeviceId("phone".into()),
        client_msg_id: Some(cid.into()),
        target: Target::User(bob),
        text: text.into(),
        media_id: None,
    };
    let again = store.append(vec![dm("c-1", "hello migrated world")]).await.remove(0).expect("resend");
    assert!(again.duplicate);
    assert_eq!(again.view.message_id, MessageId(1));
    let new = store.append(vec![dm("c-3", "third migrated note")]).await.remove(0).expect("send");
    assert!(!new.duplicate);
    assert_eq!((new.view.message_id, new.view.conversation_seq), (MessageId(3), 3));
    assert_eq!(ids(store.search(bob, "note", 10).await.unwrap()), [MessageId(3), MessageId(2)]);
    let history = store.history(new.conversation, bob, None, 10).await.unwrap().items;
    assert_eq!(history.iter().map(|m| m.conversation_seq).collect::<Vec<_>>(), [1, 2, 3]);

    let conn = rusqlite::Connection::open(&path).expect("open");
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, schema::MIGRATIONS.len());
    let old_index: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'messages_fts%'", [], |r| r.get(0)).unwrap();
    assert_eq!(old_index, 0, "migration 6 drops the index from the store");
    let index = rusqlite::Connection::open(dir.path().join(search::FILE)).expect("open the index");
    let automerge: i64 = index.query_row("SELECT v FROM messages_fts_config WHERE k = 'automerge'", [], |r| r.get(0)).unwrap();
    assert_eq!(automerge, 16);
}

/// A text message from `from` to `to`, its `clientMsgId` made from the text.
fn text_to(from: UserId, to: UserId, text: &str) -> NewMessage {
    NewMessage {
        sender: from,
        sender_device: DeviceId("phone".into()),
        client_msg_id: Some(format!("c-{text}")),
        target: Target::User(to),
        text: text.into(),
        media_id: None,
    }
}

/// A write that fails inside an append batch fails only its own messages: the batch is rolled
/// back and retried one message at a time, the others are stored, and nothing of the failed
/// ones remains.
#[tokio::test]
async fn a_failed_write_fails_only_its_own_messages() {
    let (dir, store) = open().await;
    let ids = users(&store, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (ids[0], ids[1], ids[2]);
    let dm = |to: UserId, text: &str| text_to(alice, to, text);
    let one = store.append(vec![dm(bob, "one"), dm(carol, "x")]).await.remove(0).expect("send");
    // A stale sequence makes the next message to bob collide with `one` on (conv_id, seq).
    let conn = rusqlite::Connection::open(dir.path().join("switchboard.db")).expect("open");
    conn.execute("UPDATE conversations SET last_seq = 0 WHERE id = ?1", [one.conversation.to_string()]).expect("stale seq");

    let out = store.append(vec![dm(bob, "two"), dm(carol, "y"), dm(bob, "three")]).await;
    assert!(out[0].is_err() && out[2].is_err(), "{out:?}");
    assert_eq!(out[1].as_ref().expect("carol's message").view.conversation_seq, 2);
    let texts = |v: Vec<switchboard_core::protocol::MessageView>| v.into_iter().map(|m| m.message).collect::<Vec<_>>();
    assert_eq!(texts(store.history(one.conversation, bob, None, 10).await.unwrap().items), ["one"]);
    let to_carol = out[1].as_ref().unwrap().conversation;
    assert_eq!(texts(store.history(to_carol, carol, None, 10).await.unwrap().items), ["x", "y"]);
    let inbox: i64 = conn.query_row("SELECT COUNT(*) FROM inbox WHERE user_id = ?1", [bob.0], |r| r.get(0)).unwrap();
    assert_eq!(inbox, 1, "no inbox row of a failed message");
    assert!(store.search(bob, "two", 10).await.unwrap().is_empty());
    assert_eq!(texts(store.search(carol, "y", 10).await.unwrap()), ["y"]);
}

/// Appends leave the full-text index to the indexer thread: while messages keep coming, the
/// index (its own file) catches up with them (`search_state`) without any search asking for it.
#[tokio::test]
async fn the_indexer_thread_indexes_new_messages_after_their_commit() {
    let (dir, store) = open().await;
    let ids = users(&store, &["alice", "bob"]).await;
    let dm = |text: String| text_to(ids[0], ids[1], &text);
    let first = store.append(vec![dm("findable zebra".into())]).await.remove(0).expect("send").view.message_id;
    let conn = rusqlite::Connection::open(dir.path().join(search::FILE)).expect("open");
    let indexed = || conn.query_row("SELECT last_indexed FROM search_state WHERE id = 0", [], |r| r.get::<_, i64>(0)).expect("state");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 0;
    while indexed() < first.0 {
        assert!(std::time::Instant::now() < deadline, "the index never caught up with message {}", first.0);
        n += 1;
        store.append(vec![dm(format!("filler {n}"))]).await.remove(0).expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hits: Vec<i64> = conn
        .prepare("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'zebra'")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("match");
    assert_eq!(hits, [first.0]);
}

/// An index ahead of the store (the store restored from an older copy, the index kept) is
/// rebuilt: its entries would otherwise point at other messages that took the same ids.
#[tokio::test]
async fn an_index_ahead_of_the_store_is_rebuilt() {
    let (dir, store) = open().await;
    let ids = users(&store, &["alice", "bob"]).await;
    let dm = |text: &str| text_to(ids[0], ids[1], text);
    store.append(vec![dm("zebra one"), dm("zebra two")]).await.into_iter().for_each(|r| drop(r.expect("send")));
    assert_eq!(store.search(ids[1], "zebra", 10).await.unwrap().len(), 2);
    drop(store);
    // The indexer thread sees its handle gone at its next wake-up (every 200 ms).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for f in ["switchboard.db", "switchboard.db-wal", "switchboard.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }

    let store = reopen(&dir).await;
    let ids = users(&store, &["alice", "bob"]).await;
    let dm = |text: &str| text_to(ids[0], ids[1], text);
    let first = store.append(vec![dm("giraffe")]).await.remove(0).expect("send");
    assert_eq!(first.view.message_id, MessageId(1), "ids start over in the new store");
    assert!(store.search(ids[1], "zebra", 10).await.unwrap().is_empty(), "no hit from the old index");
    let hits = store.search(ids[1], "giraffe", 10).await.unwrap();
    assert_eq!(hits.iter().map(|m| m.message_id).collect::<Vec<_>>(), [MessageId(1)]);
}

/// A query word the tokenizer cuts in two finds its message: the index keeps no positions, so
/// the query is cut by the same tokenizer and searched as separate words, never as a phrase
/// (which such an index refuses). "नामक" and "xⓑy" are single words to Rust's
/// `char::is_alphanumeric` (a vowel sign, a circled letter) but two tokens to FTS5.
#[tokio::test]
async fn a_word_the_tokenizer_cuts_in_two_is_found() {
    let (_dir, store) = open().await;
    let ids = users(&store, &["alice", "bob"]).await;
    let sent = store.append(vec![text_to(ids[0], ids[1], "नामक नमस्ते xⓑy, see the e-mail")]).await.remove(0).expect("send");
    for q in ["नामक", "नमस्ते", "xⓑy", "e-mail", "E-MAIL नमस्ते"] {
        let hits = store.search(ids[1], q, 10).await.unwrap_or_else(|e| panic!("query {q:?}: {e}"));
        assert_eq!(hits.iter().map(|m| m.message_id).collect::<Vec<_>>(), [sent.view.message_id], "query {q:?}");
    }
    assert!(store.search(ids[1], "e-commerce", 10).await.unwrap().is_empty(), "every word must match");
}
