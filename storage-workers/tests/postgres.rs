//! The `MessageStore` contract against [`PgStore`], plus PostgreSQL-only checks (schema,
//! migrations, errors, two stores on one schema).
//!
//! Needs a PostgreSQL server: `postgres://postgres@127.0.0.1:5432/test` unless
//! `SWITCHBOARD_TEST_PG_URL` says otherwise. Every test works in its own fresh schema
//! `sbtest_<uuid>`, dropped when the test ends (pass or fail), and touches nothing else in
//! that database.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use storage_workers::postgres::{schema::MIGRATIONS, PgStore};
use switchboard_core::error::ErrorCode;
use switchboard_core::ids::{ConversationId, DeviceId, MessageId, UserId};
use switchboard_core::protocol::Target;
use switchboard_core::store::{MessageStore, NewMessage, NewUser, StoreError};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Connections per store: two tests run at once per binary, so a run needs few.
const POOL_SIZE: usize = 4;

fn url() -> String {
    std::env::var("SWITCHBOARD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A test's schema; dropping it drops the schema and everything in it.
///
/// The store's connections carry the schema name as `application_name`, so the drop first
/// ends any of them still open (a test that failed mid-transaction would otherwise hold
/// locks the drop waits for) and then runs `DROP SCHEMA ... CASCADE`.
struct TestSchema {
    base_url: String,
    name: String,
}

impl TestSchema {
    fn new() -> Self {
        Self { base_url: url(), name: format!("sbtest_{}", uuid::Uuid::new_v4().simple()) }
    }

    /// The URL for this test's stores: the base URL tagged with the schema name.
    fn store_url(&self) -> String {
        let sep = if self.base_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}application_name={}", self.base_url, self.name)
    }

    async fn connect(&self) -> PgStore {
        PgStore::connect(&self.store_url(), &self.name, POOL_SIZE)
            .await
            .unwrap_or_else(|e| panic!("connecting to {} (schema {}): {e:?}", self.base_url, self.name))
    }

    async fn drop_schema(base_url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(base_url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await?;
        client.batch_execute("SET lock_timeout = '10s'").await?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await?;
        drop(client);
        let _ = conn.await;
        Ok(())
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and may run while unwinding on the test's runtime: do the
        // cleanup on a thread of its own with its own runtime, and only report failures.
        let (base_url, name) = (self.base_url.clone(), self.name.clone());
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(Self::drop_schema(&base_url, &name)).map_err(|e| e.to_string())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test schema {}: cleanup thread panicked", self.name),
        }
    }
}

/// A fresh store in a fresh schema.
async fn open() -> (TestSchema, Arc<dyn MessageStore>) {
    let schema = TestSchema::new();
    let store = schema.connect().await;
    (schema, Arc::new(store))
}

/// The same schema again, through a new pool, as after a restart.
async fn reopen(schema: &TestSchema) -> Arc<dyn MessageStore> {
    Arc::new(schema.connect().await)
}

storage_workers::message_store_contract!(open, reopen);

// ---------------------------------------------------------------------------------------------
// PostgreSQL only
// ---------------------------------------------------------------------------------------------

/// A plain connection to the test database, for looking at what the store did.
async fn inspect() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await.expect("connect for inspection");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn tables_live_in_the_schema_and_migrations_are_recorded_once() {
    let schema = TestSchema::new();
    let store = schema.connect().await;
    assert_eq!(store.schema(), schema.name);
    let db = inspect().await;
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&schema.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in ["conversations", "devices", "groups", "inbox", "media", "members", "messages", "refresh_tokens", "schema_migrations", "users"] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    let versions = format!("SELECT version FROM {}.schema_migrations ORDER BY version", schema.name);
    let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
    let got: Vec<i32> = db.query(&versions, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(got, expected);

    // Connecting again (two at once, as two processes starting together) applies nothing twice.
    let (a, b) = tokio::join!(schema.connect(), schema.connect());
    drop((a, b));
    let again: Vec<i32> = db.query(&versions, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(again, expected);
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let schema = TestSchema::new();
    drop(schema.connect().await);
    let db = inspect().await;
    let future = MIGRATIONS.len() as i32 + 1;
    db.execute(&format!("INSERT INTO {}.schema_migrations (version, applied_at) VALUES ($1, 0)", schema.name), &[&future])
        .await
        .unwrap();
    match PgStore::connect(&schema.store_url(), &schema.name, POOL_SIZE).await {
        Err(StoreError::Invalid(_)) => {}
        Err(other) => panic!("expected Invalid, got {other:?}"),
        Ok(_) => panic!("expected Invalid, got a store"),
    }
}

#[tokio::test]
async fn bad_schema_names_and_urls_are_invalid() {
    for bad in ["", "Public", "a-b", "x; DROP SCHEMA public", "\"q\""] {
        match PgStore::connect(&url(), bad, 1).await {
            Err(StoreError::Invalid(_)) => {}
            Err(other) => panic!("schema {bad:?}: expected Invalid, got {other:?}"),
            Ok(_) => panic!("schema {bad:?}: expected Invalid, got a store"),
        }
    }
    match PgStore::connect("postgres://[not a url", "sbtest_never_created", 1).await {
        Err(StoreError::Invalid(_)) => {}
        Err(other) => panic!("expected Invalid, got {other:?}"),
        Ok(_) => panic!("expected Invalid, got a store"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_retryable() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    match PgStore::connect("postgres://postgres@127.0.0.1:1/test", "sbtest_never_created", 1).await {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.is_retryable()),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected Unavailable, got a store"),
    }
}

#[tokio::test]
async fn a_lost_connection_is_unavailable_and_the_pool_recovers() {
    let schema = TestSchema::new();
    let store = schema.connect().await;
    let alice = store.create_user(new_user("alice")).await.unwrap().user_id;
    // Kill every connection of the store behind its back.
    let db = inspect().await;
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&schema.name],
    )
    .await
    .unwrap();
    let mut errors = 0;
    let mut recovered = false;
    // The pooled connections are dead: each fails once (retryable), then new ones are opened.
    for _ in 0..=POOL_SIZE {
        match store.user(alice).await {
            Ok(u) => {
                assert_eq!(u.map(|u| u.user_id), Some(alice));
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "expected Unavailable, got {e:?}");
                assert!(e.is_retryable());
                errors += 1;
            }
        }
    }
    assert!(recovered, "the store did not recover after {errors} failures");
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        user_name: name.to_owned(),
        email: format!("{name}@example.com"),
        phone_number: format!("+1-555-{name}"),
        password_hash: format!("hash-of-{name}"),
    }
}

fn dm(from: UserId, to: UserId, text: &str) -> NewMessage {
    NewMessage {
        sender: from,
        sender_device: DeviceId("main".into()),
        client_msg_id: None,
        target: Target::User(to),
        text: text.to_owned(),
        media_id: None,
    }
}

/// A write that fails inside a batch (here a stale sequence colliding on `(conv_id, seq)`)
/// loses the batch's transaction; the store retries each message alone, so only the messages
/// that fail by themselves fail, and nothing of them remains.
#[tokio::test]
async fn a_failed_write_fails_only_its_own_messages() {
    let (schema, store) = open().await;
    let alice = store.create_user(new_user("alice")).await.unwrap().user_id;
    let bob = store.create_user(new_user("bob")).await.unwrap().user_id;
    let carol = store.create_user(new_user("carol")).await.unwrap().user_id;
    let one = store.append(vec![dm(alice, bob, "one"), dm(alice, carol, "x")]).await.remove(0).expect("send");
    let db = inspect().await;
    let conv = one.conversation.to_string();
    db.execute(&format!("UPDATE {}.conversations SET last_seq = 0 WHERE id = $1", schema.name), &[&conv]).await.expect("stale seq");

    let out = store.append(vec![dm(alice, bob, "two"), dm(alice, carol, "y"), dm(alice, bob, "three")]).await;
    assert!(out[0].is_err() && out[2].is_err(), "{out:?}");
    assert_eq!(out[1].as_ref().expect("carol's message").view.conversation_seq, 2);
    let texts = |v: Vec<switchboard_core::protocol::MessageView>| v.into_iter().map(|m| m.message).collect::<Vec<_>>();
    assert_eq!(texts(store.history(one.conversation, bob, None, 10).await.unwrap().items), ["one"]);
    let to_carol = out[1].as_ref().unwrap().conversation;
    assert_eq!(texts(store.history(to_carol, carol, None, 10).await.unwrap().items), ["x", "y"]);
    let row = db
        .query_one(&format!("SELECT COUNT(*) FROM {}.inbox WHERE user_id = $1", schema.name), &[&bob.0])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 1, "no inbox row of a failed message");
}

/// Two stores on one schema stand for two processes: their appends are serialized by the
/// database lock, so sequences stay gapless and ids grow with them across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_schema_append_in_one_order() {
    let schema = TestSchema::new();
    let (a, b) = (Arc::new(schema.connect().await), Arc::new(schema.connect().await));
    let alice = a.create_user(new_user("alice")).await.unwrap().user_id;
    let bob = b.create_user(new_user("bob")).await.unwrap().user_id;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let s = if i % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
            tokio::spawn(async move {
                let batch = vec![dm(alice, bob, &format!("x{i}")), dm(bob, alice, &format!("y{i}"))];
                s.append(batch).await
            })
        })
        .collect();
    let mut got: Vec<(i64, MessageId)> = Vec::new();
    for t in tasks {
        for r in t.await.unwrap() {
            let v = r.expect("append").view;
            got.push((v.conversation_seq, v.message_id));
        }
    }
    got.sort();
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=120).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "ids grow with seq");
    let hist = a.history(ConversationId::direct(alice, bob), alice, None, 1000).await.unwrap();
    assert_eq!(hist.items.len(), 120);
}

/// Concurrent uses of one refresh token: exactly one is `Valid` (the row lock), the rest are
/// reuse and end the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_is_spent_once_under_concurrency() {
    use switchboard_core::store::RefreshOutcome;
    let (_schema, s) = open().await;
    let alice = s.create_user(new_user("alice")).await.unwrap().user_id;
    s.save_refresh("t", alice, &DeviceId("d".into()), switchboard_core::time::now_secs() + 3600).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.use_refresh("t").await.unwrap() })
        })
        .collect();
    let mut valid = 0;
    for t in tasks {
        match t.await.unwrap() {
            RefreshOutcome::Valid { .. } => valid += 1,
            RefreshOutcome::Reused | RefreshOutcome::Unknown => {}
        }
    }
    assert_eq!(valid, 1);
}
