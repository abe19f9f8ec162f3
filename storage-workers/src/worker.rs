//! The storage-workers process of cluster mode: persists the side topic's writes (device
//! cursors, last seen; see [`crate::side`]) to PostgreSQL, so gateways do not wait on the
//! database for writes that may lag behind the client.
//!
//! [`run`] is a member of the `<prefix>storage` consumer group on the side topic. Like the
//! router it takes a batch (the first record awaited, then whatever is already fetched, up to
//! [`BATCH`]), and it acknowledges each record only once its write is in PostgreSQL, so offsets
//! are committed after the writes (the rule of `KafkaLog`). A crash or rebalance replays what
//! was not acknowledged; that is harmless because every write is idempotent and
//! order-insensitive:
//!
//! - **Coalescing.** Within a batch, one user's writes collapse to the highest cursor per
//!   device and the newest last-seen time; users are written concurrently (at most
//!   `cluster.postgres_pool` at once), one user's writes in order.
//! - **Cursor.** `MessageStore::advance_cursor` only moves a cursor forward.
//! - **Last seen.** Written only when newer than the stored time, so a replayed or late
//!   record never moves it back. (Read, then write: a concurrent writer of the same user's
//!   last seen could interleave. Only the worker owning the user's partition writes it, so
//!   that takes two workers holding one partition during a rebalance.)
//! - **Deleted users.** Each user's writes start by looking the user up; for a user who does
//!   not exist or was deleted they are dropped (a cursor row is not recreated for them).
//!
//! **Failures.** A write failing with a retryable `StoreError` (PostgreSQL unreachable, pool
//! exhausted, a backend error) is retried with capped, jittered backoff (50 ms doubling to
//! 5 s) until it succeeds or the worker is shut down; its records stay unacknowledged
//! meanwhile, so a shutdown leaves them for the next member. A non-retryable failure, and a
//! record that does not decode, cannot succeed by waiting: it is **dead-lettered by logging**
//! (a `warn`/`error` line carrying the whole write or, for an undecodable record, its topic,
//! partition, offset and value) and acknowledged, so it never blocks its partition.
//! Retrying for longer than the consumer's poll interval (librdkafka `max.poll.interval.ms`,
//! 5 min) takes the member out of its group; its records are then re-read by whichever
//! member holds the partitions next, this one included.
//!
//! ```no_run
//! # async fn f() -> Result<(), storage_workers::worker::WorkerError> {
//! use switchboard_core::config::Config;
//! use tokio_util::sync::CancellationToken;
//! let shutdown = CancellationToken::new();
//! storage_workers::worker::run(Config::default(), shutdown.clone()).await?; // until cancelled
//! # Ok(()) }
//! ```

use crate::postgres::PgStore;
use crate::side::{self, SideWrite};
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::bus::{BusError, KafkaConfig, KafkaLog, LogConsumer, LogRecord};
use switchboard_core::config::Config;
use switchboard_core::error::ErrorCode;
use switchboard_core::ids::{DeviceId, MessageId, UserId};
use switchboard_core::store::{MessageStore, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Records applied per batch at most.
pub const BATCH: usize = 512;

/// The first retry delay; it doubles per failed round up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(50);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL could not be reached or migrated at start.
    #[error("postgres: {0}")]
    Store(#[from] StoreError),
    /// Kafka: the client could not be made, the side topic not created, or the consumer
    /// failed in a way retrying cannot fix.
    #[error("kafka: {0}")]
    Bus(#[from] BusError),
}

impl ErrorCode for WorkerError {
    fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => e.code(),
            Self::Bus(e) => e.code(),
        }
    }
    fn http_status(&self) -> u16 {
        503
    }
    fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Bus(e) => e.is_retryable(),
        }
    }
}

/// The Kafka settings of a configuration.
pub fn kafka_config(cfg: &Config) -> KafkaConfig {
    KafkaConfig::from_cluster(&cfg.cluster)
}

/// The storage workers' consumer group: `<cluster.topic_prefix>storage`.
pub fn consumer_group(cfg: &Config) -> String {
    format!("{}storage", cfg.cluster.topic_prefix)
}

/// The storage-workers process: connect to PostgreSQL (`cluster.postgres_url`, `_schema`,
/// `_pool`; migrations applied), ensure the side topic exists, and persist its records until
/// `shutdown`. The batch in hand is finished (short of retrying) before it returns, and the
/// acknowledged offsets are committed.
///
/// # Errors
/// [`WorkerError`] when PostgreSQL or Kafka cannot be reached at start, or the consumer fails
/// with a non-retryable error (retryable ones are logged and waited out).
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let c = &cfg.cluster;
    let store = PgStore::connect(&c.postgres_url, &c.postgres_schema, c.postgres_pool).await?;
    let log = KafkaLog::new(kafka_config(&cfg))?;
    let topic = side::side_topic(&cfg);
    log.ensure_topic(&topic, side::partitions(&cfg)).await?;
    let group = consumer_group(&cfg);
    let mut consumer = log.consumer(&[&topic], &group, BATCH * 4)?;
    info!(%topic, %group, schema = store.schema(), "storage worker consuming");
    switchboard_core::health::set_ready(true);
    let worker = Worker {
        store: Arc::new(store),
        concurrency: c.postgres_pool.max(1),
        shutdown,
    };
    let result = worker.consume(&mut consumer).await;
    consumer.close().await;
    info!("storage worker stopped");
    result
}

/// The consuming loop's state.
struct Worker {
    store: Arc<dyn MessageStore>,
    /// Users written at once at most (one pooled connection each).
    concurrency: usize,
    shutdown: CancellationToken,
}

impl Worker {
    /// Reads, applies and acknowledges batches until shutdown or a non-retryable consumer error.
    async fn consume(&self, consumer: &mut LogConsumer) -> Result<(), WorkerError> {
        let mut backoff = Backoff::new();
        loop {
            let first = tokio::select! {
                // Once shut down, take no new batch even if records are waiting.
                biased;
                () = self.shutdown.cancelled() => return Ok(()),
                r = consumer.next() => r,
            };
            let first = match first {
                Ok(r) => r,
                Err(e) => {
                    self.consumer_failed(e, &mut backoff).await?;
                    continue;
                }
            };
            backoff.reset();
            let (records, failure) = take_ready(consumer, first).await;
            self.apply(records).await;
            if let Some(e) = failure {
                self.consumer_failed(e, &mut backoff).await?;
            }
        }
    }

    /// A non-retryable consumer error ends the worker; a retryable one is logged and waited
    /// out (the consumer stays usable).
    async fn consumer_failed(&self, e: BusError, backoff: &mut Backoff) -> Result<(), WorkerError> {
        if !e.is_retryable() {
            return Err(e.into());
        }
        let delay = backoff.next_delay();
        warn!(error = %e, code = e.code(), retry_in = ?delay, "side topic consumer error");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.shutdown.cancelled() => {}
        }
        Ok(())
    }

    /// Decodes, coalesces, writes and acknowledges one batch.
    async fn apply(&self, records: Vec<LogRecord>) {
        let count = records.len();
        let mut plan = Plan::default();
        for r in records {
            match side::decode(&r.payload) {
                Ok(write) => plan.add(write, r),
                Err(e) => {
                    let value = String::from_utf8_lossy(&r.payload[..r.payload.len().min(1024)])
                        .into_owned();
                    error!(error = %e, topic = %r.topic, partition = r.partition, offset = r.offset, %value,
                        "undecodable side record dead-lettered");
                    r.ack();
                }
            }
        }
        let users = plan.users.len();
        let applied = apply_all(&*self.store, plan.users, self.concurrency, &self.shutdown).await;
        debug!(
            records = count,
            users,
            left = applied.left.len(),
            "side batch applied"
        );
        applied.done.into_iter().for_each(LogRecord::ack);
        if !applied.left.is_empty() {
            // Dropped unacknowledged: the partition's commit stays before them and whoever
            // holds it next reads them again.
            warn!(
                records = applied.left.len(),
                "shut down with side writes unapplied; they will be replayed"
            );
        }
    }
}

/// `first` and every record already fetched after it, up to [`BATCH`], without waiting
/// (`next` is cancel-safe). A consumer error ends the batch and is returned beside it.
async fn take_ready(
    consumer: &mut LogConsumer,
    first: LogRecord,
) -> (Vec<LogRecord>, Option<BusError>) {
    let mut records = vec![first];
    while records.len() < BATCH {
        match tokio::time::timeout(Duration::ZERO, consumer.next()).await {
            Ok(Ok(r)) => records.push(r),
            Ok(Err(e)) => return (records, Some(e)),
            Err(_) => break,
        }
    }
    (records, None)
}

/// The store operations the worker uses: every `MessageStore` has them; tests of the retry
/// policy substitute a store that fails on demand.
#[async_trait]
trait SideStore: Send + Sync {
    /// `None` when the user does not exist or was deleted, else their stored last seen.
    async fn live_last_seen(&self, user: UserId) -> Result<Option<Option<i64>>, StoreError>;
    /// `MessageStore::advance_cursor`.
    async fn move_cursor(
        &self,
        user: UserId,
        device: &DeviceId,
        message: MessageId,
    ) -> Result<(), StoreError>;
    /// `MessageStore::set_last_seen`.
    async fn write_last_seen(&self, user: UserId, at_ms: i64) -> Result<(), StoreError>;
}

#[async_trait]
impl<T: MessageStore + ?Sized> SideStore for T {
    async fn live_last_seen(&self, user: UserId) -> Result<Option<Option<i64>>, StoreError> {
        Ok(MessageStore::user(self, user).await?.map(|u| u.last_seen))
    }
    async fn move_cursor(
        &self,
        user: UserId,
        device: &DeviceId,
        message: MessageId,
    ) -> Result<(), StoreError> {
        MessageStore::advance_cursor(self, user, device, message).await
    }
    async fn write_last_seen(&self, user: UserId, at_ms: i64) -> Result<(), StoreError> {
        MessageStore::set_last_seen(self, user, at_ms).await
    }
}

/// One batch's writes, grouped by user in first-seen order.
struct Plan<R> {
    users: Vec<UserWrites<R>>,
    /// Where each user is in `users`.
    index: HashMap<UserId, usize>,
}

impl<R> Default for Plan<R> {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<R> Plan<R> {
    /// Adds `write`, read from `record`, keeping only the highest cursor per device and the
    /// newest last seen per user.
    fn add(&mut self, write: SideWrite, record: R) {
        let user = write.user();
        let i = *self.index.entry(user).or_insert_with(|| {
            self.users.push(UserWrites::new(user));
            self.users.len() - 1
        });
        self.users[i].add(write, record);
    }
}

/// One user's coalesced writes, what is left of them to do, and the records they came from.
struct UserWrites<R> {
    user: UserId,
    /// Done in order; the front is the next to try.
    ops: VecDeque<Op>,
    records: Vec<R>,
}

/// One step of a user's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Look the user up: gone means every write is dropped; the stored last seen decides
    /// whether the `LastSeen` op still has anything to do.
    Lookup,
    /// Move this device's cursor forward to the message.
    Cursor(DeviceId, MessageId),
    /// Store this last-seen time (Unix ms); always the last op.
    LastSeen(i64),
}

impl<R> UserWrites<R> {
    fn new(user: UserId) -> Self {
        Self {
            user,
            ops: [Op::Lookup].into(),
            records: Vec::new(),
        }
    }

    fn add(&mut self, write: SideWrite, record: R) {
        self.records.push(record);
        let cursor = |op: &Op| matches!(op, Op::Cursor(..));
        match write {
            SideWrite::Cursor {
                device, message, ..
            } => {
                match self
                    .ops
                    .iter_mut()
                    .find(|op| matches!(op, Op::Cursor(d, _) if *d == device))
                {
                    Some(Op::Cursor(_, m)) => *m = (*m).max(message),
                    _ => {
                        // Cursors go before the last seen, which stays last.
                        let at = self.ops.iter().rposition(cursor).map_or(1, |i| i + 1);
                        self.ops.insert(at, Op::Cursor(device, message));
                    }
                }
            }
            SideWrite::LastSeen { at_ms, .. } => match self.ops.back_mut() {
                Some(Op::LastSeen(t)) => *t = (*t).max(at_ms),
                _ => self.ops.push_back(Op::LastSeen(at_ms)),
            },
        }
    }

    /// Applies what is left, in order, stopping at the first retryable failure (returned; that
    /// op and the rest stay for the next round). Non-retryable failures are dead-lettered:
    /// logged with the write and skipped.
    async fn apply<S: SideStore + ?Sized>(&mut self, store: &S) -> Result<(), StoreError> {
        while let Some(op) = self.ops.front().cloned() {
            let outcome = match &op {
                Op::Lookup => match store.live_last_seen(self.user).await {
                    Ok(Some(stored)) => {
                        self.drop_stale_last_seen(stored);
                        Ok(())
                    }
                    Ok(None) => Err(StoreError::NotFound("user")),
                    Err(e) => Err(e),
                },
                Op::Cursor(device, message) => store.move_cursor(self.user, device, *message).await,
                Op::LastSeen(at_ms) => store.write_last_seen(self.user, *at_ms).await,
            };
            match outcome {
                Ok(()) => {}
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) if op == Op::Lookup => {
                    warn!(error = %e, code = e.code(), user = %self.user, writes = ?self.ops.range(1..).collect::<Vec<_>>(),
                        "side writes for a missing user dead-lettered");
                    self.ops.clear();
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = %e, code = e.code(), user = %self.user, write = ?op, "side write dead-lettered")
                }
            }
            self.ops.pop_front();
        }
        Ok(())
    }

    /// Removes the last-seen op when the stored time is as new or newer.
    fn drop_stale_last_seen(&mut self, stored: Option<i64>) {
        if let (Some(Op::LastSeen(at)), Some(stored)) = (self.ops.back(), stored) {
            if *at <= stored {
                debug!(user = %self.user, at, stored, "older last seen skipped");
                self.ops.pop_back();
            }
        }
    }
}

/// What a batch came to: records whose writes are done (applied or dead-lettered) and
/// records left because the worker was shut down while retrying them.
struct Applied<R> {
    done: Vec<R>,
    left: Vec<R>,
}

/// Applies every user's writes, `concurrency` users at a time, retrying those that failed
/// retryably with backoff until they succeed or `shutdown`.
async fn apply_all<S: SideStore + ?Sized, R: Send>(
    store: &S,
    mut users: Vec<UserWrites<R>>,
    concurrency: usize,
    shutdown: &CancellationToken,
) -> Applied<R> {
    let mut done = Vec::new();
    let mut backoff = Backoff::new();
    loop {
        let rounds: Vec<_> = stream::iter(users)
            .map(|mut u| async move {
                let r = u.apply(store).await;
                (u, r)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut failed = Vec::new();
        let mut first_error = None;
        for (u, r) in rounds {
            match r {
                Ok(()) => done.extend(u.records),
                Err(e) => {
                    first_error.get_or_insert(e);
                    failed.push(u);
                }
            }
        }
        let Some(e) = first_error else {
            return Applied {
                done,
                left: Vec::new(),
            };
        };
        let delay = backoff.next_delay();
        warn!(error = %e, code = e.code(), users = failed.len(), retry_in = ?delay, "side writes failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => users = failed,
            () = shutdown.cancelled() => {
                return Applied { done, left: failed.into_iter().flat_map(|u| u.records).collect() };
            }
        }
    }
}

/// Capped exponential backoff with jitter: each delay is drawn from half to all of the
/// current step, so workers that failed together do not retry together.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            step: BACKOFF_START,
        }
    }

    /// The delay before the next attempt; the step doubles, up to [`BACKOFF_MAX`].
    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(BACKOFF_MAX);
        step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// Back to the first step after a success.
    fn reset(&mut self) {
        self.step = BACKOFF_START;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// An in-memory [`SideStore`] with failures on demand, for the retry policy. (The real
    /// stores' semantics are covered against PostgreSQL in tests/worker.rs.)
    #[derive(Default)]
    struct Flaky {
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        /// Live users and their last seen.
        users: HashMap<UserId, Option<i64>>,
        cursors: HashMap<(UserId, DeviceId), MessageId>,
        /// The next this many calls fail retryably.
        fail_next: usize,
        /// Every call for these users fails retryably.
        down_for: HashSet<UserId>,
        /// Cursor writes for this device fail for good.
        refused_device: Option<DeviceId>,
        calls: usize,
    }

    impl Flaky {
        fn with_users(users: &[(i64, Option<i64>)]) -> Self {
            let s = Self::default();
            s.state().users = users.iter().map(|&(u, seen)| (UserId(u), seen)).collect();
            s
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap()
        }

        /// Counts the call and fails it when told to.
        fn call(&self, user: UserId) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
            let mut s = self.state();
            s.calls += 1;
            if s.fail_next > 0 || s.down_for.contains(&user) {
                s.fail_next = s.fail_next.saturating_sub(1);
                return Err(StoreError::Unavailable("test outage"));
            }
            Ok(s)
        }
    }

    #[async_trait]
    impl SideStore for Flaky {
        async fn live_last_seen(&self, user: UserId) -> Result<Option<Option<i64>>, StoreError> {
            Ok(self.call(user)?.users.get(&user).copied())
        }
        async fn move_cursor(
            &self,
            user: UserId,
            device: &DeviceId,
            message: MessageId,
        ) -> Result<(), StoreError> {
            let mut s = self.call(user)?;
            if s.refused_device.as_ref() == Some(device) {
                return Err(StoreError::Invalid("test refusal"));
            }
            let c = s.cursors.entry((user, device.clone())).or_insert(message);
            *c = (*c).max(message);
            Ok(())
        }
        async fn write_last_seen(&self, user: UserId, at_ms: i64) -> Result<(), StoreError> {
            self.call(user)?.users.insert(user, Some(at_ms));
            Ok(())
        }
    }

    fn cursor(user: i64, device: &str, message: i64) -> SideWrite {
        SideWrite::Cursor {
            user: UserId(user),
            device: DeviceId(device.into()),
            message: MessageId(message),
        }
    }

    fn seen(user: i64, at_ms: i64) -> SideWrite {
        SideWrite::LastSeen {
            user: UserId(user),
            at_ms,
        }
    }

    /// A plan of `writes`, each record being its index.
    fn plan(writes: Vec<SideWrite>) -> Vec<UserWrites<usize>> {
        let mut p = Plan::default();
        for (i, w) in writes.into_iter().enumerate() {
            p.add(w, i);
        }
        p.users
    }

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    #[test]
    fn a_batch_coalesces_to_the_highest_cursor_per_device_and_the_newest_last_seen() {
        let users = plan(vec![
            cursor(1, "a", 5),
            seen(1, 100),
            cursor(1, "a", 3),
            cursor(2, "a", 1),
            cursor(1, "b", 1),
            seen(1, 50),
            seen(2, 7),
            cursor(1, "a", 5),
        ]);
        assert_eq!(users.len(), 2);
        let ops: Vec<_> = users[0].ops.iter().cloned().collect();
        let dev = |d: &str| DeviceId(d.into());
        assert_eq!(
            ops,
            [
                Op::Lookup,
                Op::Cursor(dev("a"), MessageId(5)),
                Op::Cursor(dev("b"), MessageId(1)),
                Op::LastSeen(100)
            ]
        );
        assert_eq!(
            users[0].records,
            [0, 1, 2, 4, 5, 7],
            "every record is kept, to be acknowledged"
        );
        let ops: Vec<_> = users[1].ops.iter().cloned().collect();
        assert_eq!(
            ops,
            [
                Op::Lookup,
                Op::Cursor(dev("a"), MessageId(1)),
                Op::LastSeen(7)
            ]
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let mut b = Backoff::new();
        let mut step = BACKOFF_START;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(step, BACKOFF_MAX);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_until_the_writes_land() {
        let store = Flaky::with_users(&[(1, None), (2, Some(10))]);
        store.state().fail_next = 7;
        let users = plan(vec![cursor(1, "a", 4), seen(1, 100), seen(2, 20)]);
        let applied = apply_all(&store, users, 2, &CancellationToken::new()).await;
        assert_eq!(sorted(applied.done), [0, 1, 2]);
        assert!(applied.left.is_empty());
        let s = store.state();
        assert_eq!(
            s.cursors.get(&(UserId(1), DeviceId("a".into()))),
            Some(&MessageId(4))
        );
        assert_eq!(
            (s.users[&UserId(1)], s.users[&UserId(2)]),
            (Some(100), Some(20))
        );
        assert!(s.calls > 7);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_missing_users_are_dead_lettered_not_retried() {
        let store = Flaky::with_users(&[(1, None)]);
        store.state().refused_device = Some(DeviceId("bad".into()));
        let users = plan(vec![
            cursor(9, "a", 1),
            seen(9, 5),
            cursor(1, "bad", 2),
            cursor(1, "ok", 3),
            seen(1, 100),
        ]);
        let applied = apply_all(&store, users, 1, &CancellationToken::new()).await;
        assert_eq!(sorted(applied.done), [0, 1, 2, 3, 4], "all acknowledged");
        let s = store.state();
        assert_eq!(
            s.calls,
            1 + 1 + 3,
            "user 9: one lookup; user 1: lookup, two cursors, last seen"
        );
        assert!(
            !s.users.contains_key(&UserId(9)),
            "nothing written for a missing user"
        );
        assert!(!s.cursors.contains_key(&(UserId(9), DeviceId("a".into()))));
        assert_eq!(
            s.cursors.get(&(UserId(1), DeviceId("ok".into()))),
            Some(&MessageId(3)),
            "the refused write did not stop the next"
        );
        assert_eq!(s.users[&UserId(1)], Some(100));
    }

    #[tokio::test]
    async fn last_seen_only_moves_forward() {
        let store = Flaky::with_users(&[(1, Some(200))]);
        apply_all(
            &store,
            plan(vec![seen(1, 100), seen(1, 150)]),
            1,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(store.state().users[&UserId(1)], Some(200));
        assert_eq!(store.state().calls, 1, "only the lookup");
        apply_all(
            &store,
            plan(vec![seen(1, 300), seen(1, 250)]),
            1,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(store.state().users[&UserId(1)], Some(300));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_retrying_leaves_the_failing_records_unacknowledged() {
        let store = Flaky::with_users(&[(1, None), (2, None)]);
        store.state().down_for.insert(UserId(2));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let users = plan(vec![seen(1, 1), cursor(2, "a", 1), seen(2, 2), seen(1, 3)]);
        let task = tokio::spawn(async move { apply_all(&store, users, 2, &shutdown).await });
        // Let it retry a while (time is paused: the backoff sleeps pass at once), then stop.
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop.cancel();
        let applied = task.await.unwrap();
        assert_eq!(sorted(applied.done), [0, 3]);
        assert_eq!(sorted(applied.left), [1, 2]);
    }
}
