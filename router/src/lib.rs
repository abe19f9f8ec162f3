//! The router: decides who gets what.
//!
//! Sends from every connection enter one bounded queue. A single task takes whatever is queued
//! (up to `batch_max`), appends it to the [`MessageStore`] in one transaction (group commit:
//! authorization, resend dedupe and the conversation sequence happen there), then hands the
//! committed batch to a second task that, in commit order, acks each sender and publishes one
//! [`Delivery`] per node holding recipients, while the first appends the next batch. Appends
//! run one after another and fan-outs in the order of their commits, so every node receives a
//! conversation's messages in sequence order.
//!
//! Receipts and typing go straight through [`RouterCore::receipt`] and [`RouterCore::typing`].
//!
//! [`RouterCore`] is the logic; where sends come from is a [`SendSink`]: in standalone mode
//! [`Router`] is an in-process queue drained by one task; in cluster mode gateways produce
//! sends to Kafka and the router binary feeds each consumed batch to
//! [`RouterCore::route_batch`].
//!
//! **Tap.** Every routed message (after commit and fan-out), refused send, applied receipt and
//! relayed typing indicator is also offered to [`RouterCore::tap`] subscribers as a
//! [`TrafficEvent`] (gatewayd's `GET /admin/v1/tail`, `chatctl msg tail`). The channel is a
//! bounded broadcast: a subscriber that falls behind loses the oldest events (it is told how
//! many), never slows routing; with no subscriber no event is even built.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod tap;

pub use tap::{MessageEvent, ReceiptEvent, RefusedEvent, TapRecord, TrafficEvent, TypingEvent, TAP_CAPACITY};
use tap::{message_event, split};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use std::collections::HashMap;
use switchboard_core::bus::{Bus, BusError, Delivery, Route};
use switchboard_core::error::ErrorCode;
use switchboard_core::ids::{ConnId, DeviceId, MessageId, NodeId, UserId};
use switchboard_core::metrics::names;
use switchboard_core::policy;
use switchboard_core::presence::Presence;
use switchboard_core::protocol::{self, ReceiptStatus, SendFrame, Target};
use switchboard_core::push::{PushNotice, PushSink};
use switchboard_core::store::{Appended, MessageStore, NewMessage, StoreError};
use switchboard_core::time::now_ms;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Why a send was not accepted for routing.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The send queue is full; retry with the same `clientMsgId`.
    #[error("server busy, retry the send")]
    Overloaded,
    /// The router is shutting down.
    #[error("router stopped")]
    Closed,
}

impl ErrorCode for RouterError {
    fn code(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::Closed => "unavailable",
        }
    }
    fn http_status(&self) -> u16 {
        503
    }
    fn is_retryable(&self) -> bool {
        true
    }
}

/// The connection a frame came from; replies go back to it through the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Node holding the connection.
    pub node: NodeId,
    /// The connection.
    pub conn: ConnId,
    /// Authenticated user.
    pub user: UserId,
    /// The user's device.
    pub device: DeviceId,
}

/// A send waiting to be routed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendJob {
    /// Who sent it.
    pub origin: Origin,
    /// What.
    pub frame: SendFrame,
    /// A resend key the gateway chose for a send without `clientMsgId` (the seed's form), so
    /// a replay of the inbound record after a crash is still deduplicated. Stored as the
    /// message's `clientMsgId`; never echoed in the ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl SendJob {
    /// A job for a frame from `origin`.
    pub fn new(origin: Origin, frame: SendFrame) -> Self {
        Self { origin, frame, idempotency_key: None }
    }
}

/// Router tuning.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    /// Sends queued at most.
    pub queue: usize,
    /// Sends per group-commit batch at most.
    pub batch_max: usize,
}

/// Where a gateway hands sends for routing.
pub trait SendSink: Send + Sync + 'static {
    /// Queues a send without waiting. The ack or error reaches the origin connection later,
    /// through the bus.
    ///
    /// # Errors
    /// [`RouterError::Overloaded`] when the queue is full, [`RouterError::Closed`] after shutdown.
    fn submit(&self, job: SendJob) -> Result<(), RouterError>;
}

/// The routing logic, independent of where sends come from.
pub struct RouterCore {
    store: Arc<dyn MessageStore>,
    presence: Arc<dyn Presence>,
    bus: Arc<dyn Bus>,
    /// Where notices for offline recipients go (cluster: the push topic); none: counted only.
    push: Option<Arc<dyn PushSink>>,
    /// Traffic events for live tails; see [`RouterCore::tap`].
    tap: broadcast::Sender<TrafficEvent>,
}

/// The standalone router: an in-process send queue drained by one task.
#[derive(Clone)]
pub struct Router {
    tx: mpsc::Sender<SendJob>,
}

impl Router {
    /// Starts the routing task. It stops after `shutdown` once every queued send is routed.
    pub fn spawn(core: Arc<RouterCore>, cfg: RouterConfig, shutdown: CancellationToken, tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(cfg.queue);
        tracker.spawn(send_loop(core, rx, cfg.batch_max, shutdown).instrument(tracing::info_span!("router")));
        Self { tx }
    }
}

impl SendSink for Router {
    fn submit(&self, job: SendJob) -> Result<(), RouterError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RouterError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => RouterError::Closed,
        })
    }
}

impl RouterCore {
    /// Routing over these seams.
    pub fn new(store: Arc<dyn MessageStore>, presence: Arc<dyn Presence>, bus: Arc<dyn Bus>) -> Self {
        let (tap, _) = broadcast::channel(TAP_CAPACITY);
        Self { store, presence, bus, push: None, tap }
    }

    /// A subscription to live [`TrafficEvent`]s, from now on. A subscriber more than
    /// [`TAP_CAPACITY`] events behind gets `RecvError::Lagged(skipped)` and continues with the
    /// oldest event still held; routing never waits for it. Drop it to unsubscribe.
    pub fn tap(&self) -> broadcast::Receiver<TrafficEvent> {
        self.tap.subscribe()
    }

    /// Whether anyone listens: events are built only then.
    fn tapped(&self) -> bool {
        self.tap.receiver_count() > 0
    }

    fn emit(&self, event: TrafficEvent) {
        // Err only when the last subscriber left meanwhile: nobody to tell.
        let _ = self.tap.send(event);
    }

    /// Hands a [`PushNotice`] for every offline recipient of every routed message to `push`.
    pub fn with_push(mut self, push: Arc<dyn PushSink>) -> Self {
        self.push = Some(push);
        self
    }

    /// Applies a receipt and tells the authors of the messages it newly covers.
    ///
    /// # Errors
    /// The store's refusal (`NotFound`, `Forbidden`) or failure.
    pub async fn receipt(&self, origin: &Origin, message: MessageId, status: ReceiptStatus) -> Result<(), StoreError> {
        let notices = self.store.receipt(origin.user, &origin.device, message, status).await?;
        let notified: Vec<UserId> = if self.tapped() { notices.iter().map(|(author, _)| *author).collect() } else { Vec::new() };
        for (author, latest) in notices {
            let payload = protocol::receipt_frame(latest, status, origin.user);
            self.to_users(&[author], payload).await;
        }
        if self.tapped() {
            let (node, timestamp) = (origin.node.clone(), now_ms());
            self.emit(TrafficEvent::Receipt(ReceiptEvent { user_id: origin.user, message_id: message, status, notified, node, timestamp }));
        }
        Ok(())
    }

    /// Relays a typing indicator to the other side (never stored).
    ///
    /// # Errors
    /// `NotFound`/`Forbidden` for a group the user is not in.
    pub async fn typing(&self, origin: &Origin, target: Target) -> Result<(), StoreError> {
        let users = match target {
            Target::User(u) => vec![u],
            Target::Group(g) => {
                let group = self.store.group(g).await?.ok_or(StoreError::NotFound("group"))?;
                if !policy::can_read(&group, origin.user) {
                    return Err(StoreError::Forbidden("not a member of this group"));
                }
                group.members.into_iter().filter(|m| *m != origin.user).collect()
            }
        };
        self.to_users(&users, protocol::typing_frame(origin.user, target)).await;
        if self.tapped() {
            let (receiver_id, group_id) = split(target);
            self.emit(TrafficEvent::Typing(TypingEvent {
                sender_id: origin.user,
                receiver_id,
                group_id,
                recipients: users.len(),
                node: origin.node.clone(),
                timestamp: now_ms(),
                recipient_ids: users.into(),
            }));
        }
        Ok(())
    }

    /// Tells a user's 1:1 peers that they came online or went offline.
    pub async fn presence_changed(&self, user: UserId, peers: &[UserId], online: bool, last_seen: Option<i64>) {
        self.to_users(peers, protocol::presence_frame(user, online, last_seen)).await;
    }
}

/// A committed batch on its way from the append stage to the fan-out stage.
type Committed = (Vec<SendJob>, Vec<Result<Appended, StoreError>>, Instant);

async fn send_loop(shared: Arc<RouterCore>, mut rx: mpsc::Receiver<SendJob>, batch_max: usize, shutdown: CancellationToken) {
    // Fan-outs run on their own task, in commit order, overlapping the next batch's append
    // (the writer would otherwise wait for each fan-out). One committed batch may wait.
    let (to_fan_out, mut committed) = mpsc::channel::<Committed>(1);
    let fan = shared.clone();
    let fanning = tokio::spawn(async move {
        while let Some((jobs, results, started)) = committed.recv().await {
            fan.fan_out(jobs, results, started).await;
        }
    });
    let mut jobs = Vec::with_capacity(batch_max);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut jobs, batch_max) => n,
            _ = shutdown.cancelled() => {
                // Stop taking new sends, then route everything already accepted.
                rx.close();
                while rx.recv_many(&mut jobs, batch_max).await > 0 {
                    if !append_then_hand_over(&shared, std::mem::take(&mut jobs), &to_fan_out).await {
                        break;
                    }
                }
                break;
            }
        };
        if n == 0 {
            break;
        }
        if !append_then_hand_over(&shared, std::mem::take(&mut jobs), &to_fan_out).await {
            break;
        }
    }
    drop(to_fan_out);
    if let Err(error) = fanning.await {
        tracing::error!(%error, "router fan-out task failed");
    }
    tracing::info!("router stopped");
}

/// Appends `batch` and queues it for fan-out; false once the fan-out task is gone.
async fn append_then_hand_over(shared: &RouterCore, batch: Vec<SendJob>, to_fan_out: &mpsc::Sender<Committed>) -> bool {
    let started = Instant::now();
    let results = shared.append_batch(&batch).await;
    to_fan_out.send((batch, results, started)).await.is_ok()
}

impl RouterCore {
    /// Appends a batch in one store transaction, then, in commit order, acks each sender and
    /// fans each new message out, one delivery per node. Refused sends get an error frame.
    pub async fn route_batch(&self, jobs: Vec<SendJob>) {
        let started = Instant::now();
        let results = self.append_batch(&jobs).await;
        self.fan_out(jobs, results, started).await;
    }

    /// Appends a batch in one store transaction: one result per job, in order.
    async fn append_batch(&self, jobs: &[SendJob]) -> Vec<Result<Appended, StoreError>> {
        metrics::histogram!(names::ROUTER_BATCH_SIZE).record(jobs.len() as f64);
        let batch = jobs
            .iter()
            .map(|j| NewMessage {
                sender: j.origin.user,
                sender_device: j.origin.device.clone(),
                client_msg_id: j.frame.client_msg_id.clone().or_else(|| j.idempotency_key.clone()),
                target: j.frame.target,
                text: j.frame.text.clone(),
                media_id: j.frame.media.as_ref().map(|m| m.media_id.clone()),
            })
            .collect();
        self.store.append(batch).await
    }

    /// In commit order: acks each sender, fans each new message out (one delivery per node),
    /// answers refused sends with an error frame, hands offline recipients to push.
    async fn fan_out(&self, jobs: Vec<SendJob>, results: Vec<Result<Appended, StoreError>>, started: Instant) {
        // One presence lookup for everyone this batch reaches.
        let mut everyone: Vec<UserId> = Vec::new();
        for (job, r) in jobs.iter().zip(&results) {
            if let Some(a) = r.as_ref().ok().filter(|a| !a.duplicate) {
                everyone.extend(a.recipients.iter().copied());
                everyone.push(job.origin.user);
            }
        }
        everyone.sort_unstable();
        everyone.dedup();
        let mut where_is: HashMap<UserId, Vec<NodeId>> = HashMap::new();
        for (node, users) in self.presence.locate(&everyone).await {
            for u in users {
                where_is.entry(u).or_default().push(node.clone());
            }
        }
        let mut out = Vec::new();
        let mut offline = Vec::new();
        // Checked once per batch: with no tail listening, no event is built.
        let mut events = if self.tapped() { Some(Vec::with_capacity(jobs.len())) } else { None };
        // Counted once per batch: a registry lookup per message was ~2 % of the server's CPU.
        let (mut committed, mut duplicates, mut offline_total) = (0u64, 0u64, 0u64);
        for (job, result) in jobs.into_iter().zip(results) {
            match result {
                Ok(appended) => {
                    let event = events.as_ref().map(|_| message_event(&job, &appended));
                    if appended.duplicate {
                        duplicates += 1;
                    } else {
                        committed += 1;
                    }
                    let (online, offline_n) = self.deliveries(&job, appended, &where_is, &mut out, &mut offline);
                    offline_total += offline_n as u64;
                    if let (Some(events), Some(mut e)) = (events.as_mut(), event) {
                        (e.online, e.offline) = (online, offline_n);
                        events.push(TrafficEvent::Message(e));
                    }
                }
                Err(e) => {
                    let cid = job.frame.client_msg_id.as_deref();
                    metrics::counter!(names::GATEWAY_ERRORS, "code" => e.code()).increment(1);
                    let payload = protocol::error_frame(e.code(), &e.to_string(), cid);
                    out.push(reply(&job.origin, payload));
                    if let Some(events) = events.as_mut() {
                        let (receiver_id, group_id) = split(job.frame.target);
                        events.push(TrafficEvent::Refused(RefusedEvent {
                            code: e.code(),
                            sender_id: job.origin.user,
                            receiver_id,
                            group_id,
                            client_msg_id: job.frame.client_msg_id,
                            node: job.origin.node,
                            timestamp: now_ms(),
                        }));
                    }
                }
            }
        }
        metrics::counter!(names::ROUTER_MESSAGES).increment(committed);
        metrics::counter!(names::ROUTER_DUPLICATES).increment(duplicates);
        metrics::counter!(names::ROUTER_OFFLINE_RECIPIENTS).increment(offline_total);
        tokio::join!(self.publish_in_order(out), self.notify_offline(offline));
        for e in events.into_iter().flatten() {
            self.emit(e);
        }
        metrics::histogram!(names::ROUTER_DELIVER_DURATION).record(started.elapsed().as_secs_f64());
    }

    /// The ack for one committed send, then one delivery per node holding a recipient or
    /// another device of the sender, and a push notice per offline recipient. Returns the
    /// recipients (sender excluded) found online and offline.
    fn deliveries(
        &self,
        job: &SendJob,
        a: Appended,
        where_is: &HashMap<UserId, Vec<NodeId>>,
        out: &mut Vec<(NodeId, Delivery)>,
        notices: &mut Vec<PushNotice>,
    ) -> (usize, usize) {
        out.push(reply(&job.origin, protocol::ack_frame(job.frame.client_msg_id.as_deref(), &a.view, a.duplicate)));
        if a.duplicate {
            return (0, 0);
        }
        // A handful of nodes at most: a list beats hashing the node's name per recipient.
        let mut by_node: Vec<(&NodeId, Vec<UserId>)> = Vec::new();
        let mut offline = 0u64;
        let mut online = 0usize;
        for u in a.recipients.iter().chain([&job.origin.user]) {
            match where_is.get(u) {
                Some(nodes) => {
                    if *u != job.origin.user {
                        online += 1;
                    }
                    for n in nodes {
                        match by_node.iter_mut().find(|(m, _)| *m == n) {
                            Some((_, users)) => users.push(*u),
                            None => by_node.push((n, vec![*u])),
                        }
                    }
                }
                None if *u != job.origin.user => {
                    offline += 1;
                    if self.push.is_some() {
                        notices.push(PushNotice::new(*u, &a.view));
                    }
                }
                None => {}
            }
        }
        let payload = protocol::message_frame(&a.view);
        for (node, users) in by_node {
            // Connection ids are per node: skip the sending connection only on its own node.
            let skip = (*node == job.origin.node).then_some(job.origin.conn);
            let d = Delivery { route: Route::Users { users, skip }, payload: payload.clone(), message_id: Some(a.view.message_id) };
            out.push((node.clone(), d));
        }
        (online, offline as usize)
    }

    /// Publishes every delivery: per node in the given (commit) order through
    /// [`Bus::publish_all`], which pipelines them; nodes concurrently.
    async fn publish_in_order(&self, out: Vec<(NodeId, Delivery)>) {
        let mut per_node: Vec<(NodeId, Vec<Delivery>)> = Vec::new();
        for (node, d) in out {
            match per_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, list)) => list.push(d),
                None => per_node.push((node, vec![d])),
            }
        }
        let sends = per_node.into_iter().map(|(node, list)| async move {
            let r = self.bus.publish_all(&node, list).await;
            warn_unpublished((node, r));
        });
        futures_util::future::join_all(sends).await;
    }

    /// Hands the batch's push notices over, after which the caller may acknowledge its input.
    async fn notify_offline(&self, notices: Vec<PushNotice>) {
        let (Some(push), false) = (&self.push, notices.is_empty()) else { return };
        let n = notices.len() as u64;
        match push.notify(notices).await {
            Ok(()) => metrics::counter!(names::ROUTER_PUSH_NOTICES, "outcome" => "published").increment(n),
            Err(error) => {
                metrics::counter!(names::ROUTER_PUSH_NOTICES, "outcome" => "failed").increment(n);
                tracing::warn!(%error, notices = n, "push notices not published");
            }
        }
    }

    /// Publishes one frame (receipt, typing, presence) to every node holding any of `users`.
    async fn to_users(&self, users: &[UserId], payload: Bytes) {
        for (node, users) in self.presence.locate(users).await {
            let d = Delivery { route: Route::Users { users, skip: None }, payload: payload.clone(), message_id: None };
            warn_unpublished((node.clone(), self.bus.publish(&node, d).await));
        }
    }

}

fn reply(origin: &Origin, payload: Bytes) -> (NodeId, Delivery) {
    (origin.node.clone(), Delivery { route: Route::Conn(origin.conn), payload, message_id: None })
}

fn warn_unpublished((node, result): (NodeId, Result<(), BusError>)) {
    if let Err(error) = result {
        tracing::warn!(%error, %node, "delivery not published");
    }
}
