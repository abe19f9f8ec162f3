//! The storage worker ([`storage_workers::worker::run`]) over real PostgreSQL and a real
//! Kafka-protocol broker: side records produced with `KafkaLog::send` land in PostgreSQL
//! (checked through the `MessageStore` trait); duplicates, stale and replayed records do no
//! harm; a restarted worker picks up what was produced while it was down; a record for a
//! deleted user or one that does not decode never blocks its partition.
//!
//! PostgreSQL: `postgres://postgres@127.0.0.1:5432/test` unless `SWITCHBOARD_TEST_PG_URL` says
//! otherwise; each test works in a fresh schema `sbtest_<uuid>`, dropped at the end.
//! Kafka: the broker named by `KAFKA_BROKERS`, else a tansu each test starts with
//! `scripts/kafka.sh start <free port>` and stops when done. Each test uses its own topic
//! prefix, and deletes its topic and group at the end. Broker quirks as in core's
//! tests/bus_kafka.rs: 20 ms fetch waits, 6 s sessions, 500 ms heartbeats (joins take ~3 s).
//! Tests wait for outcomes against deadlines and never sleep a fixed time.
#![cfg(feature = "cluster")]

use std::sync::Arc;
use std::time::Duration;
use storage_workers::postgres::PgStore;
use storage_workers::side::{self, SideWrite};
use storage_workers::worker::{self, WorkerError};
use switchboard_core::bus::test_broker::Broker;
use switchboard_core::bus::{KafkaLog, Sent};
use switchboard_core::config::{Config, Mode};
use switchboard_core::ids::{DeviceId, MessageId, UserId};
use switchboard_core::protocol::Target;
use switchboard_core::store::{MessageStore, NewMessage, NewUser, SyncFrom};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long a test waits for any one outcome (a group join takes ~3 s on tansu).
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------



/// A test's PostgreSQL schema; dropping it drops the schema and everything in it.
///
/// The stores' connections carry the schema name as `application_name`, so the drop first
/// ends any still open (a worker that failed mid-transaction would hold locks the drop waits
/// for), then runs `DROP SCHEMA ... CASCADE`.
struct TestSchema {
    base_url: String,
    name: String,
}

impl TestSchema {
    fn new() -> Self {
        let base_url =
            std::env::var("SWITCHBOARD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
        Self {
            base_url,
            name: format!("sbtest_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The URL for this test's stores: the base URL tagged with the schema name.
    fn store_url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}application_name={}", self.base_url, self.name)
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
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .await?;
        drop(client);
        let _ = conn.await;
        Ok(())
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await and may run while unwinding on the test's runtime: clean up on a
        // thread with its own runtime, and only report failures.
        let (base_url, name) = (self.base_url.clone(), self.name.clone());
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(Self::drop_schema(&base_url, &name))
                .map_err(|e| e.to_string())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test schema {}: cleanup thread panicked",
                self.name
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One test's world
// ---------------------------------------------------------------------------------------------

/// A test's configuration, store, producer and side topic. Fields drop in order: the topic
/// and group are deleted by [`Setup::clean_up`], then the schema is dropped, then the broker
/// stopped.
struct Setup {
    cfg: Config,
    /// The same schema the worker writes, for looking at what it did.
    store: Arc<dyn MessageStore>,
    log: KafkaLog,
    topic: String,
    schema: TestSchema,
    _broker: Broker,
}

impl Setup {
    async fn new(partitions: i32) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let broker = Broker::get();
        let schema = TestSchema::new();
        let mut cfg = Config {
            mode: Mode::Cluster,
            ..Config::default()
        };
        let c = &mut cfg.cluster;
        c.kafka_brokers = broker.brokers.clone();
        c.topic_prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
        c.inbound_partitions = partitions;
        c.postgres_url = schema.store_url();
        c.postgres_schema = schema.name.clone();
        c.postgres_pool = 4;
        // tansu: short fetch waits, and group joins take ~session_timeout / 2.
        c.kafka_fetch_wait = Duration::from_millis(20);
        c.kafka_session_timeout = Duration::from_secs(6);
        c.kafka_heartbeat_interval = Duration::from_millis(500);
        cfg.validate().expect("test config is valid");
        let store = PgStore::connect(&cfg.cluster.postgres_url, &schema.name, 4)
            .await
            .expect("connect to PostgreSQL");
        let log = KafkaLog::new(worker::kafka_config(&cfg)).expect("kafka client");
        let topic = side::side_topic(&cfg);
        log.ensure_topic(&topic, partitions)
            .await
            .expect("create the side topic");
        Self {
            cfg,
            store: Arc::new(store),
            log,
            topic,
            schema,
            _broker: broker,
        }
    }

    /// Starts a worker in this process.
    fn start_worker(&self) -> Running {
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker::run(self.cfg.clone(), stop.clone()));
        Running { stop, task }
    }

    async fn send(&self, write: &SideWrite) -> Sent {
        self.log
            .send(&self.topic, write.key().as_bytes(), &side::encode(write))
            .await
            .expect("produce a side record")
    }

    async fn send_all(&self, writes: &[SideWrite]) {
        for w in writes {
            self.send(w).await;
        }
    }

    async fn user(&self, name: &str) -> UserId {
        let u = NewUser {
            user_name: name.into(),
            email: format!("{name}@example.com"),
            phone_number: format!("+1555{:07}", rand_digits(name)),
            password_hash: "x".into(),
        };
        self.store
            .create_user(u)
            .await
            .expect("create user")
            .user_id
    }

    /// A direct message `from` → `to`, its id.
    async fn dm(&self, from: UserId, to: UserId, text: &str) -> MessageId {
        let m = NewMessage {
            sender: from,
            sender_device: DeviceId("web".into()),
            client_msg_id: Some(text.into()),
            target: Target::User(to),
            text: text.into(),
            media_id: None,
        };
        let mut r = self.store.append(vec![m]).await;
        r.pop()
            .expect("one result")
            .expect("append")
            .view
            .message_id
    }

    /// What `device` of `user` would be sent on connect: the backlog after its cursor.
    async fn backlog(&self, user: UserId, device: &str) -> Vec<MessageId> {
        let page = self
            .store
            .backlog(user, &DeviceId(device.into()), SyncFrom::Device, 100)
            .await
            .expect("backlog");
        page.messages.iter().map(|m| m.message_id).collect()
    }

    async fn last_seen(&self, user: UserId) -> Option<i64> {
        self.store
            .user(user)
            .await
            .expect("read user")
            .expect("user exists")
            .last_seen
    }

    /// Waits until `check` holds, polling against the deadline.
    async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + DEADLINE;
        while !check().await {
            assert!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts the storage group has committed every record so far: a sentinel produced now
    /// is the first record a new member of the group reads. Leaves the group at the end.
    async fn assert_group_committed_everything(&self) {
        let sentinel = SideWrite::LastSeen {
            user: UserId(0),
            at_ms: 0,
        };
        let mut at = Vec::new();
        // One sentinel per partition (keys spread over them), so every partition is checked.
        for key in 0..64 {
            let sent = self
                .log
                .send(
                    &self.topic,
                    key.to_string().as_bytes(),
                    &side::encode(&sentinel),
                )
                .await
                .unwrap();
            if !at.iter().any(|s: &Sent| s.partition == sent.partition) {
                at.push(sent);
            }
        }
        assert_eq!(
            at.len(),
            self.cfg.cluster.inbound_partitions as usize,
            "a sentinel in every partition"
        );
        let group = worker::consumer_group(&self.cfg);
        let mut consumer = self.log.consumer(&[&self.topic], &group, 1024).unwrap();
        let mut firsts = std::collections::HashMap::new();
        while firsts.len() < at.len() {
            let r = tokio::time::timeout(DEADLINE, consumer.next())
                .await
                .expect("read the sentinels")
                .unwrap();
            firsts.entry(r.partition).or_insert(r.offset);
        }
        for s in &at {
            assert_eq!(
                firsts[&s.partition], s.offset,
                "partition {} re-read records before its sentinel",
                s.partition
            );
        }
        consumer.close().await;
    }

    /// Deletes the test's group and topic (needed on a shared broker).
    async fn clean_up(&self) {
        self.log
            .delete_group(&worker::consumer_group(&self.cfg))
            .await
            .expect("delete the group");
        self.log
            .delete_topics(&[&self.topic])
            .await
            .expect("delete the topic");
    }
}

/// A worker running in this process.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    /// Stops it the way SIGTERM does and checks it ended cleanly.
    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("worker stops")
            .expect("worker task");
        r.expect("worker ended without error");
    }
}

/// Seven digits derived from `s`, for unique phone numbers within a schema.
fn rand_digits(s: &str) -> u32 {
    s.bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 10_000_000
}

fn cursor(user: UserId, device: &str, message: MessageId) -> SideWrite {
    SideWrite::Cursor {
        user,
        device: DeviceId(device.into()),
        message,
    }
}

fn seen(user: UserId, at_ms: i64) -> SideWrite {
    SideWrite::LastSeen { user, at_ms }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_and_last_seen_writes_land_in_postgres() {
    let t = Setup::new(2).await;
    let (me, bob, cat) = (t.user("me").await, t.user("bob").await, t.user("cat").await);
    let m: Vec<MessageId> = [
        t.dm(bob, me, "m1").await,
        t.dm(bob, me, "m2").await,
        t.dm(bob, me, "m3").await,
    ]
    .into();
    assert_eq!(
        t.backlog(me, "phone").await,
        m,
        "a new device gets everything"
    );
    assert_eq!(t.last_seen(me).await, None);

    let w = t.start_worker();
    t.send_all(&[
        cursor(me, "phone", m[1]),
        seen(me, 1_700_000_000_000),
        seen(cat, 42),
    ])
    .await;
    t.eventually("me's phone cursor at m2", || async {
        t.backlog(me, "phone").await == [m[2]]
    })
    .await;
    t.eventually("me's last seen", || async {
        t.last_seen(me).await == Some(1_700_000_000_000)
    })
    .await;
    t.eventually("cat's last seen", || async {
        t.last_seen(cat).await == Some(42)
    })
    .await;
    assert_eq!(
        t.backlog(me, "laptop").await,
        m,
        "other devices keep their own cursors"
    );
    w.stop().await;
    t.assert_group_committed_everything().await;
    t.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_out_of_order_records_are_harmless() {
    let t = Setup::new(2).await;
    let (me, bob) = (t.user("me").await, t.user("bob").await);
    let m: Vec<MessageId> = [
        t.dm(bob, me, "m1").await,
        t.dm(bob, me, "m2").await,
        t.dm(bob, me, "m3").await,
    ]
    .into();
    let w = t.start_worker();

    // Newest first, with duplicates and older values behind it.
    t.send_all(&[
        cursor(me, "phone", m[2]),
        seen(me, 2_000),
        cursor(me, "phone", m[2]),
        seen(me, 1_000),
        cursor(me, "phone", m[0]),
        seen(me, 2_000),
    ])
    .await;
    t.eventually("phone cursor at m3", || async {
        t.backlog(me, "phone").await.is_empty()
    })
    .await;
    t.eventually("last seen 2000", || async {
        t.last_seen(me).await == Some(2_000)
    })
    .await;

    // Stale writes in later batches. The marker is keyed by the same user, so it lands in the
    // same partition after them: once it is applied, so are they.
    t.send_all(&[
        cursor(me, "phone", m[0]),
        seen(me, 1_500),
        cursor(me, "phone", m[1]),
        cursor(me, "tablet", m[0]),
    ])
    .await;
    t.eventually("the marker", || async {
        t.backlog(me, "tablet").await == m[1..]
    })
    .await;
    assert!(
        t.backlog(me, "phone").await.is_empty(),
        "the cursor never moves back"
    );
    assert_eq!(
        t.last_seen(me).await,
        Some(2_000),
        "last seen keeps the newest"
    );
    w.stop().await;
    t.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_resumes_where_it_stopped_and_a_replay_changes_nothing() {
    let t = Setup::new(2).await;
    let (me, bob, cat) = (t.user("me").await, t.user("bob").await, t.user("cat").await);
    let m: Vec<MessageId> = [
        t.dm(bob, me, "m1").await,
        t.dm(bob, me, "m2").await,
        t.dm(bob, me, "m3").await,
    ]
    .into();
    let c1 = t.dm(cat, bob, "c1").await;

    let first = t.start_worker();
    t.send_all(&[cursor(me, "phone", m[0]), seen(me, 1_000), seen(bob, 1_000)])
        .await;
    t.eventually("first writes", || async {
        t.backlog(me, "phone").await == m[1..] && t.last_seen(bob).await == Some(1_000)
    })
    .await;
    first.stop().await;
    assert_eq!(
        t.backlog(bob, "ipad").await,
        [c1],
        "bob's ipad has acknowledged nothing yet"
    );

    // Meanwhile the state moves on elsewhere (a receipt through the router), and records
    // pile up on the topic.
    t.store
        .advance_cursor(me, &DeviceId("phone".into()), m[1])
        .await
        .unwrap();
    t.send_all(&[
        seen(me, 3_000),
        cursor(me, "laptop", m[2]),
        seen(bob, 500),
        cursor(bob, "ipad", c1),
    ])
    .await;

    let second = t.start_worker();
    t.eventually("records produced while down", || async {
        t.last_seen(me).await == Some(3_000) && t.backlog(me, "laptop").await.is_empty()
    })
    .await;
    // bob's cursor is his last record; and nothing was replayed on top of newer state.
    t.eventually("bob's cursor", || async {
        t.backlog(bob, "ipad").await.is_empty()
    })
    .await;
    assert_eq!(
        t.backlog(me, "phone").await,
        [m[2]],
        "the cursor moved on elsewhere stays"
    );
    assert_eq!(
        t.last_seen(bob).await,
        Some(1_000),
        "an older last seen does not win"
    );
    second.stop().await;
    // It resumed at the committed offsets: nothing is left, nothing was read twice.
    t.assert_group_committed_everything().await;

    // A replay of the whole topic (as after a crash before any commit) changes nothing.
    t.log
        .delete_group(&worker::consumer_group(&t.cfg))
        .await
        .expect("forget the group's offsets");
    let third = t.start_worker();
    // A marker per user, behind that user's replayed records in their partition.
    assert_eq!(t.backlog(bob, "watch").await, [c1]);
    t.send_all(&[cursor(me, "watch", m[0]), cursor(bob, "watch", c1)])
        .await;
    t.eventually("me's replay and marker", || async {
        t.backlog(me, "watch").await == m[1..]
    })
    .await;
    t.eventually("bob's replay and marker", || async {
        t.backlog(bob, "watch").await.is_empty()
    })
    .await;
    assert_eq!(t.backlog(me, "phone").await, [m[2]]);
    assert!(t.backlog(me, "laptop").await.is_empty());
    assert!(t.backlog(bob, "ipad").await.is_empty());
    assert_eq!(
        (t.last_seen(me).await, t.last_seen(bob).await),
        (Some(3_000), Some(1_000))
    );
    third.stop().await;
    t.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_for_a_deleted_user_or_undecodable_ones_do_not_block_the_partition() {
    // One partition: everything below queues behind the bad records.
    let t = Setup::new(1).await;
    let (me, bob, gone) = (
        t.user("me").await,
        t.user("bob").await,
        t.user("gone").await,
    );
    let m1 = t.dm(bob, me, "m1").await;
    let g1 = t.dm(bob, gone, "g1").await;
    t.store.delete_user(gone).await.unwrap();

    let w = t.start_worker();
    t.send_all(&[cursor(gone, "phone", g1), seen(gone, 5_000)])
        .await;
    t.log
        .send(&t.topic, b"1", b"{\"kind\":\"typing\"}")
        .await
        .unwrap();
    t.log.send(&t.topic, b"1", b"not json").await.unwrap();
    t.send_all(&[cursor(me, "phone", m1), seen(me, 6_000)])
        .await;
    t.eventually("the live user's writes", || async {
        t.backlog(me, "phone").await.is_empty() && t.last_seen(me).await == Some(6_000)
    })
    .await;
    w.stop().await;
    // Acknowledged, so committed: a new member starts after them.
    t.assert_group_committed_everything().await;

    // Nothing was written for the deleted user (no device row brought back).
    let (db, conn) = tokio_postgres::connect(&t.schema.store_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let sql = format!(
        "SELECT count(*) FROM {}.devices WHERE user_id = $1",
        t.schema.name
    );
    let rows: i64 = db.query_one(&sql, &[&gone.0]).await.unwrap().get(0);
    assert_eq!(rows, 0);
    drop(db);
    let _ = conn.await;
    t.clean_up().await;
}
