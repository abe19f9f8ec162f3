//! `KafkaLog`: a keyed, idempotent producer and consumer-group members that commit only what
//! was processed, with a bound on records in flight.
//!
//! The generic half of the router's inbound topic (client sends keyed by conversation id, so
//! one conversation stays on one partition, in order, and the router group spreads the
//! partitions over routers) and the transport under `KafkaBus`.
//!
//! **Commit rule.** [`LogConsumer::next`] hands out a [`LogRecord`]; [`LogRecord::ack`] says it
//! was processed. A partition's commit position is the offset of its oldest record not yet
//! acknowledged (or just past the newest one handed out), so records may be acknowledged out
//! of order and a commit never skips one still being worked on. Positions are stored on ack
//! and committed every `commit_interval`, before a rebalance takes a partition away, and on
//! [`LogConsumer::close`]; [`LogConsumer::commit`] commits at once.
//!
//! **In flight.** At most `max_in_flight` records are handed out and not yet acknowledged or
//! dropped; past that, `next` pauses fetching (librdkafka stops fetching, so memory stays
//! bounded by `prefetch_kbytes`) until one comes back.

use super::{config::is_topic_char, KafkaConfig};
use crate::bus::BusError;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// Producer, admin client and consumer factory for keyed logs.
///
/// Cheap to clone; clones share the clients.
///
/// ```no_run
/// # async fn example() -> Result<(), switchboard_core::bus::BusError> {
/// use switchboard_core::bus::{KafkaConfig, KafkaLog};
/// let log = KafkaLog::new(KafkaConfig::default())?;
/// let topic = log.config().topic("inbound");
/// log.ensure_topic(&topic, 12).await?;
/// log.send(&topic, b"d:1:2", b"{\"text\":\"hi\"}").await?; // returns once the broker has it
/// let mut consumer = log.consumer(&[&topic], &log.config().topic("router"), 1024)?;
/// let record = consumer.next().await?;
/// // ... store it durably, then:
/// record.ack();
/// consumer.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<LogInner>,
}

struct LogInner {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics this process created or found to exist, so a hot path asks the broker once.
    known_topics: Mutex<HashSet<String>>,
}

/// Where a sent record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its partition.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

impl KafkaLog {
    /// Creates the producer and admin client (no connection is made yet).
    ///
    /// # Errors
    /// [`BusError::InvalidConfig`] listing every problem with `config`, or
    /// [`BusError::Kafka`] when librdkafka rejects a setting.
    pub fn new(config: KafkaConfig) -> Result<Self, BusError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(BusError::InvalidConfig(problems.join("; ")));
        }
        let producer = config.producer().create()?;
        let admin = config.admin().create()?;
        let inner = LogInner { config, producer, admin, known_topics: Mutex::default() };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The settings every client of this log uses.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// Creates `topic` with `partitions` partitions unless it exists (then its partition
    /// count is left as it is). Remembered: later calls for the topic return at once.
    ///
    /// # Errors
    /// [`BusError::InvalidConfig`] for an illegal name, [`BusError::Kafka`] when the broker
    /// refuses or cannot be reached.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError> {
        if lock(&self.inner.known_topics).contains(topic) {
            return Ok(());
        }
        check_name(topic)?;
        let replication = TopicReplication::Fixed(self.inner.config.replication_factor);
        let new = NewTopic::new(topic, partitions, replication);
        let results = self.inner.admin.create_topics([&new], &self.admin_options()).await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
            }
        }
        lock(&self.inner.known_topics).insert(topic.to_owned());
        Ok(())
    }

    /// Deletes topics; one that does not exist counts as deleted.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when the broker refuses or cannot be reached.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<(), BusError> {
        {
            let mut known = lock(&self.inner.known_topics);
            for t in topics {
                known.remove(*t);
            }
        }
        let results = self.inner.admin.delete_topics(topics, &self.admin_options()).await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
            }
        }
        Ok(())
    }

    /// Deletes a consumer group and its committed offsets; one that does not exist counts as
    /// deleted. The group must have no live member.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when the broker refuses (a live member: `NonEmptyGroup`).
    pub async fn delete_group(&self, group: &str) -> Result<(), BusError> {
        let results = self.inner.admin.delete_groups(&[group], &self.admin_options()).await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
            }
        }
        Ok(())
    }

    /// Appends a keyed record and returns once every in-sync replica has it (`acks=all`).
    /// Records with one key land on one partition, in send order. The topic should exist
    /// ([`ensure_topic`](Self::ensure_topic)): brokers that auto-create use their defaults.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when the record is not acknowledged within `delivery_timeout`
    /// (retryable) or is refused (for example too large: not retryable).
    pub async fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<Sent, BusError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        let timeout = Timeout::After(self.inner.config.delivery_timeout);
        match self.inner.producer.send(record, timeout).await {
            Ok(d) => Ok(Sent { partition: d.partition, offset: d.offset }),
            Err((error, _record)) => Err(error.into()),
        }
    }

    /// Appends keyed records in this order and returns once all are acknowledged: each is
    /// handed to the producer before the next (so they keep their order within the
    /// partition), and the acknowledgements are awaited together.
    ///
    /// # Errors
    /// The first failure, as for [`send`](Self::send).
    pub async fn send_all(&self, topic: &str, key: &[u8], payloads: &[Vec<u8>]) -> Result<(), BusError> {
        let records: Vec<(&[u8], &[u8])> = payloads.iter().map(|p| (key, p.as_slice())).collect();
        self.send_records(topic, &records).await
    }

    /// Appends `(key, payload)` records in this order and returns once all are acknowledged,
    /// as [`send_all`](Self::send_all) does for one key.
    ///
    /// # Errors
    /// The first failure, as for [`send`](Self::send).
    pub async fn send_records(&self, topic: &str, records: &[(&[u8], &[u8])]) -> Result<(), BusError> {
        let mut pending = std::collections::VecDeque::new();
        for &(key, payload) in records {
            loop {
                match self.enqueue(topic, key, payload)? {
                    Some(acked) => {
                        pending.push_back(acked);
                        break;
                    }
                    // The producer queue is full: wait for the oldest record to make room.
                    None => match pending.pop_front() {
                        Some(oldest) => {
                            oldest.wait().await?;
                        }
                        None => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                    },
                }
            }
        }
        for acked in pending {
            acked.wait().await?;
        }
        Ok(())
    }

    /// Hands a keyed record to the producer now, without waiting: records enqueued one after
    /// another keep that order within their partition. `Ok(None)` when the producer's queue is
    /// full (nothing was taken; wait for an earlier [`Acked`] and try again).
    ///
    /// # Errors
    /// [`BusError::Kafka`] when the record is refused outright (for example too large).
    pub fn enqueue(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<Option<Acked>, BusError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match self.inner.producer.send_result(record) {
            Ok(ack) => Ok(Some(Acked(ack))),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(None),
            Err((error, _)) => Err(error.into()),
        }
    }

    /// Waits until every record sent so far is acknowledged or failed (at most
    /// `delivery_timeout`), off the async threads.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when records are still outstanding at the deadline.
    pub async fn flush(&self) -> Result<(), BusError> {
        let inner = self.inner.clone();
        let timeout = inner.config.delivery_timeout;
        tokio::task::spawn_blocking(move || inner.producer.flush(timeout))
            .await
            .map_err(|_| BusError::Closed)?
            .map_err(Into::into)
    }

    /// A member of consumer group `group` reading `topics` (which should exist), starting
    /// where the group committed or, for a new group, at the beginning. Must be called within
    /// a Tokio runtime.
    ///
    /// # Errors
    /// [`BusError::InvalidConfig`] for `max_in_flight == 0` or an illegal group name,
    /// [`BusError::Kafka`] when librdkafka rejects the settings.
    pub fn consumer(&self, topics: &[&str], group: &str, max_in_flight: usize) -> Result<LogConsumer, BusError> {
        if max_in_flight == 0 {
            return Err(BusError::InvalidConfig("max_in_flight must be at least 1".into()));
        }
        check_name(group)?;
        let shared = Arc::new(Shared::default());
        let context = LogContext { shared: shared.clone() };
        let consumer: StreamConsumer<LogContext> = self.inner.config.consumer(group).create_with_context(context)?;
        consumer.subscribe(topics)?;
        Ok(LogConsumer {
            consumer: Arc::new(consumer),
            shared,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            on_closed: None,
        })
    }

    /// How far `group` is behind on `topic`: per partition, its committed offset against the
    /// high watermark. Reads offsets only (see [`KafkaConfig`]'s offsets reader): the group
    /// is not joined, so its members see no rebalance.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when the brokers do not answer within `delivery_timeout`.
    pub async fn group_lag(&self, group: &str, topic: &str) -> Result<GroupLag, BusError> {
        check_name(group)?;
        check_name(topic)?;
        let settings = self.inner.config.offsets_reader(group);
        let timeout = self.inner.config.delivery_timeout;
        let (group, topic) = (group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || read_lag(&settings, group, topic, timeout)).await.map_err(|_| BusError::Closed)?
    }

    fn admin_options(&self) -> AdminOptions {
        let t = Some(self.inner.config.delivery_timeout);
        AdminOptions::new().request_timeout(t).operation_timeout(t)
    }
}

/// One partition of a consumer group's lag ([`KafkaLog::group_lag`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed yet).
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub high: i64,
    /// Records not yet consumed: high - committed (from the low watermark when nothing is
    /// committed).
    pub lag: i64,
}

/// One consumer group's lag on one topic ([`KafkaLog::group_lag`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLag {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Sum over partitions.
    pub total_lag: i64,
    /// Per partition, by id.
    pub partitions: Vec<PartitionLag>,
}

fn read_lag(settings: &rdkafka::ClientConfig, group: String, topic: String, timeout: Duration) -> Result<GroupLag, BusError> {
    let consumer: BaseConsumer = settings.create()?;
    let md = consumer.fetch_metadata(Some(&topic), timeout)?;
    let mut ids: Vec<i32> =
        md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    ids.sort_unstable();
    let mut tpl = TopicPartitionList::new();
    for p in &ids {
        tpl.add_partition(&topic, *p);
    }
    let committed = if ids.is_empty() { tpl } else { consumer.committed_offsets(tpl, timeout)? };
    let mut partitions = Vec::with_capacity(ids.len());
    for p in ids {
        let (low, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
        let committed = committed.find_partition(&topic, p).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        partitions.push(PartitionLag { partition: p, committed, high, lag: (high - committed.unwrap_or(low)).max(0) });
    }
    let total_lag = partitions.iter().map(|p| p.lag).sum();
    Ok(GroupLag { group, topic, total_lag, partitions })
}

/// One member of a consumer group; see the module docs for the commit and in-flight rules.
///
/// Dropping it closes the member in the background (stored offsets are committed, the group
/// is left); [`close`](Self::close) does the same and waits.
pub struct LogConsumer {
    consumer: Arc<StreamConsumer<LogContext>>,
    shared: Arc<Shared>,
    /// One permit per record that may be out.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Set by `close`: told when the background close has finished.
    on_closed: Option<oneshot::Sender<()>>,
}

/// A record the producer has taken (see [`KafkaLog::enqueue`]).
pub struct Acked(rdkafka::producer::DeliveryFuture);

impl Acked {
    /// Waits until every in-sync replica has the record (`acks=all`).
    ///
    /// # Errors
    /// [`BusError::Kafka`] when it was not acknowledged within `delivery_timeout` or was
    /// refused; [`BusError::Closed`] when the producer went away.
    pub async fn wait(self) -> Result<Sent, BusError> {
        match self.0.await {
            Ok(Ok(d)) => Ok(Sent { partition: d.partition, offset: d.offset }),
            Ok(Err((error, _))) => Err(error.into()),
            Err(_) => Err(BusError::Closed),
        }
    }
}

/// A record handed out by [`LogConsumer::next`].
///
/// Call [`ack`](Self::ack) once it is processed (for the router: once the storage write is
/// durable). Dropping it unacknowledged frees its in-flight slot but holds its partition's
/// commit position before it, so it is read again after a restart or rebalance.
pub struct LogRecord {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key (empty when it had none).
    pub key: Bytes,
    /// Its value (empty when it had none).
    pub payload: Bytes,
    ack: Acker,
}

struct Acker {
    consumer: Weak<StreamConsumer<LogContext>>,
    shared: Arc<Shared>,
    /// The assignment the record was read under; an ack from an older one is ignored.
    generation: u64,
    _slot: OwnedSemaphorePermit,
}

impl LogRecord {
    /// Marks the record processed: its offset may now be committed once every earlier record
    /// of its partition is acknowledged too. A no-op when the partition has since moved to
    /// another member (that member reads it again) or the consumer is gone.
    pub fn ack(self) {
        let Some(consumer) = self.ack.consumer.upgrade() else { return };
        // Stored under the lock so concurrent acks of one partition store in order.
        let mut tracker = lock(&self.ack.shared.tracker);
        let Some(position) = tracker.acked(&self.topic, self.partition, self.offset, self.ack.generation) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        if let Err(error) = tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(position)) {
            debug!(%error, "cannot build offset list");
        } else if let Err(error) = consumer.store_offsets(&tpl) {
            // The partition was revoked between read and ack; its new owner re-reads it.
            debug!(%error, topic = %self.topic, partition = self.partition, "offset not stored");
        }
    }
}

impl LogConsumer {
    /// The next record, waiting while `max_in_flight` records are out (fetching paused) or
    /// none has arrived. Cancel-safe.
    ///
    /// # Errors
    /// [`BusError::Kafka`] for a consumer error (broker unreachable, topic missing, ...);
    /// the consumer stays usable and most are [retryable](crate::ErrorCode::is_retryable).
    pub async fn next(&mut self) -> Result<LogRecord, BusError> {
        let slot = self.slot().await?;
        let msg = self.consumer.recv().await?;
        let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
        let generation = lock(&self.shared.tracker).taken(&topic, partition, offset);
        Ok(LogRecord {
            key: Bytes::copy_from_slice(msg.key().unwrap_or_default()),
            payload: Bytes::copy_from_slice(msg.payload().unwrap_or_default()),
            topic,
            partition,
            offset,
            ack: Acker {
                consumer: Arc::downgrade(&self.consumer),
                shared: self.shared.clone(),
                generation,
                _slot: slot,
            },
        })
    }

    /// Stops fetching until [`resume`](Self::resume), also for partitions assigned meanwhile.
    /// Records already fetched are dropped locally and fetched again on resume.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when librdkafka refuses.
    pub fn pause(&mut self) -> Result<(), BusError> {
        self.set_paused(PauseReason::Caller, true)
    }

    /// Undoes [`pause`](Self::pause) (fetching stays paused while the in-flight bound is hit).
    ///
    /// # Errors
    /// [`BusError::Kafka`] when librdkafka refuses.
    pub fn resume(&mut self) -> Result<(), BusError> {
        self.set_paused(PauseReason::Caller, false)
    }

    /// Records handed out and not yet acknowledged or dropped.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    /// Commits the stored (acknowledged) positions now and waits for the broker.
    ///
    /// # Errors
    /// [`BusError::Kafka`] when the commit fails (retryable: the next commit covers it).
    pub async fn commit(&self) -> Result<(), BusError> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || commit_stored(&consumer)).await.map_err(|_| BusError::Closed)?
    }

    /// Commits the acknowledged positions, leaves the group and waits until that is done.
    pub async fn close(mut self) {
        let (tx, rx) = oneshot::channel();
        self.on_closed = Some(tx);
        drop(self);
        let _ = rx.await;
    }

    async fn slot(&mut self) -> Result<OwnedSemaphorePermit, BusError> {
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            return Ok(slot);
        }
        self.set_paused(PauseReason::InFlight, true)?;
        // Resumes even if this future is dropped while waiting.
        let _resume = ResumeOnDrop { consumer: &self.consumer, shared: &self.shared };
        Ok(self.in_flight.clone().acquire_owned().await.expect("the in-flight semaphore is never closed"))
    }

    fn set_paused(&self, reason: PauseReason, on: bool) -> Result<(), BusError> {
        set_paused(&self.consumer, &self.shared, reason, on)
    }
}

impl Drop for LogConsumer {
    fn drop(&mut self) {
        // Closing blocks (a commit and a group leave): do it off the async threads. Without a
        // runtime the field's own drop closes inline, which blocks no one.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let consumer = self.consumer.clone();
        let on_closed = self.on_closed.take();
        runtime.spawn_blocking(move || {
            if let Err(error) = commit_stored(&consumer) {
                warn!(%error, "final commit failed; the next member re-reads from the last commit");
            }
            close_when_last(consumer);
            if let Some(tx) = on_closed {
                let _ = tx.send(());
            }
        });
    }
}

struct ResumeOnDrop<'a> {
    consumer: &'a StreamConsumer<LogContext>,
    shared: &'a Shared,
}

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(error) = set_paused(self.consumer, self.shared, PauseReason::InFlight, false) {
            warn!(%error, "cannot resume fetching");
        }
    }
}

/// Commits what `ack` stored (librdkafka's "current" offsets are the stored ones).
fn commit_stored(consumer: &StreamConsumer<LogContext>) -> Result<(), BusError> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        other => other.map_err(Into::into),
    }
}

/// Drops the consumer (which closes it) once every other holder is gone: the rest are an
/// in-progress `ack` or `commit`, which finish in microseconds or one commit round trip.
fn close_when_last(mut consumer: Arc<StreamConsumer<LogContext>>) {
    loop {
        match Arc::try_unwrap(consumer) {
            Ok(last) => return drop(last),
            Err(shared) => {
                consumer = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn set_paused(
    consumer: &StreamConsumer<LogContext>,
    shared: &Shared,
    reason: PauseReason,
    on: bool,
) -> Result<(), BusError> {
    let mut pause = lock(&shared.pause);
    match reason {
        PauseReason::Caller => pause.caller = on,
        PauseReason::InFlight => pause.in_flight = on,
    }
    let want = pause.caller || pause.in_flight;
    if want != pause.applied {
        let assignment = consumer.assignment()?;
        if want {
            consumer.pause(&assignment)?;
        } else {
            consumer.resume(&assignment)?;
        }
        pause.applied = want;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum PauseReason {
    Caller,
    InFlight,
}

/// State shared by a consumer, its records and its rebalance callbacks.
#[derive(Default)]
struct Shared {
    tracker: Mutex<Tracker>,
    pause: Mutex<PauseState>,
}

#[derive(Default)]
struct PauseState {
    caller: bool,
    in_flight: bool,
    /// Whether the assignment is paused now.
    applied: bool,
}

/// Which records of each partition are out, to compute commit positions.
#[derive(Default)]
struct Tracker {
    /// Bumped at every assignment, so acks from a previous one are recognised.
    generation: u64,
    partitions: HashMap<(String, i32), PartitionTrack>,
}

struct PartitionTrack {
    generation: u64,
    /// Offsets handed out and not yet acknowledged.
    pending: BTreeSet<i64>,
    /// Just past the newest offset handed out.
    next: i64,
    /// The last position stored for commit.
    stored: i64,
}

impl Tracker {
    /// Records that `offset` was handed out; returns the generation to ack it under.
    fn taken(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let generation = self.generation;
        let track = self.partitions.entry((topic.to_owned(), partition)).or_insert_with(|| PartitionTrack {
            generation,
            pending: BTreeSet::new(),
            next: offset,
            stored: offset,
        });
        track.pending.insert(offset);
        track.next = track.next.max(offset + 1);
        track.generation
    }

    /// Records an acknowledgement; returns the new commit position if it moved forward.
    fn acked(&mut self, topic: &str, partition: i32, offset: i64, generation: u64) -> Option<i64> {
        let track = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        if track.generation != generation || !track.pending.remove(&offset) {
            return None;
        }
        let position = track.pending.first().copied().unwrap_or(track.next);
        (position > track.stored).then(|| {
            track.stored = position;
            position
        })
    }

    fn revoked(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            self.partitions.remove(&(e.topic().to_owned(), e.partition()));
        }
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.partitions.values().map(|t| t.pending.len()).sum()
    }
}

/// Keeps the tracker and the pause state right across rebalances.
struct LogContext {
    shared: Arc<Shared>,
}

impl ClientContext for LogContext {}

impl ConsumerContext for LogContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            lock(&self.shared.tracker).revoked(tpl);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        lock(&self.shared.tracker).generation += 1;
        if lock(&self.shared.pause).applied {
            if let Err(error) = consumer.pause(tpl) {
                warn!(%error, "cannot pause newly assigned partitions");
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), BusError> {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || !name.chars().all(is_topic_char) || name == "." || name == ".."
    {
        return Err(BusError::InvalidConfig(format!("{name:?} is not a legal Kafka topic or group name")));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_position_waits_for_the_oldest_unacknowledged_record() {
        let mut t = Tracker::default();
        let g = (0..4).map(|o| t.taken("t", 0, 10 + o)).last().unwrap();
        assert_eq!(t.pending(), 4);
        assert_eq!(t.acked("t", 0, 11, g), None, "10 is still out");
        assert_eq!(t.acked("t", 0, 12, g), None);
        assert_eq!(t.acked("t", 0, 10, g), Some(13), "10..=12 done, 13 out");
        assert_eq!(t.acked("t", 0, 10, g), None, "a second ack is ignored");
        assert_eq!(t.acked("t", 0, 13, g), Some(14));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn acks_from_a_previous_assignment_are_ignored() {
        let mut t = Tracker::default();
        let old = t.taken("t", 1, 5);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 1);
        t.revoked(&tpl);
        t.generation += 1;
        let new = t.taken("t", 1, 3);
        assert_eq!(t.acked("t", 1, 5, old), None);
        assert_eq!(t.acked("t", 1, 3, new), Some(4));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("sb.deliver.gw-1").is_ok());
        for bad in ["", ".", "a/b", "a b", &"x".repeat(250)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
