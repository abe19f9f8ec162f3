//! `GET /admin/v1/tail?user=&group=&types=&bodies=`: live traffic metadata, streamed as NDJSON
//! (one JSON object per line) until the client goes away or the gateway shuts down.
//!
//! Lines, each with a `type`:
//! - `start` first, once subscribed: `node`, `mode`, `bodies`, the filter. Events from here on.
//! - `message`: a committed send, after its ack and deliveries were published (the router's
//!   [`router::MessageEvent`]: id, conversation, sender, recipients online/offline, duplicate,
//!   body length; `body` only with `bodies=true`, which standalone mode alone allows).
//! - `refused`: a send the store refused, with the error code its sender got.
//! - `receipt`, `typing`: receipts applied and typing indicators relayed.
//! - `send` (cluster mode): a send read from the inbound Kafka topic, from every node, before the
//!   router commits it: sender, target, `clientMsgId`, body length, sending node; never the
//!   body. In cluster mode the router runs in its own process, so committed `message` events
//!   are not seen here; `receipt` and `typing` are this node's.
//! - `lagged`: the tail fell behind and `skipped` events were dropped for it (routing never
//!   waits for a tail).
//! - `heartbeat` after 15 s without a line, so clients and proxies notice a dead stream.
//! - `end` with a `reason` when the server ends the stream (shutdown).
//!
//! Filters apply here: `user` keeps what that user sent, received (group messages of their
//! groups included), read or typed; `group` keeps that group's messages, refusals and typing
//! (receipts name no conversation and never match it); `types` is a comma list of `message`
//! (also `send`), `refused`, `receipt`, `typing`.

use super::nodes::mode_name;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use router::TrafficEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::config::Mode;
use switchboard_core::ids::{GroupId, NodeId, UserId};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A line at least this often, heartbeats when there is nothing else.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Open tails per node at most (each holds a subscription; in cluster mode a Kafka consumer).
pub const MAX_TAILS: usize = 16;

/// `GET /admin/v1/tail` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TailQuery {
    user: Option<i64>,
    group: Option<i64>,
    types: Option<String>,
    bodies: Option<bool>,
}

/// Which events a tail keeps.
#[derive(Debug, Clone, Copy)]
struct Filter {
    user: Option<UserId>,
    group: Option<GroupId>,
    message: bool,
    refused: bool,
    receipt: bool,
    typing: bool,
}

impl Filter {
    fn parse(q: &TailQuery) -> Result<Self, ApiError> {
        let mut f = Filter { user: q.user.map(UserId), group: q.group.map(GroupId), message: true, refused: true, receipt: true, typing: true };
        if let Some(types) = q.types.as_deref().filter(|t| !t.trim().is_empty()) {
            (f.message, f.refused, f.receipt, f.typing) = (false, false, false, false);
            for t in types.split(',').map(str::trim) {
                match t {
                    "message" | "send" => f.message = true,
                    "refused" => f.refused = true,
                    "receipt" => f.receipt = true,
                    "typing" => f.typing = true,
                    other => return Err(ApiError::invalid(format!("unknown event type {other:?} (message, refused, receipt, typing)"))),
                }
            }
        }
        Ok(f)
    }

    fn types(&self) -> Vec<&'static str> {
        [("message", self.message), ("refused", self.refused), ("receipt", self.receipt), ("typing", self.typing)]
            .into_iter()
            .filter_map(|(n, on)| on.then_some(n))
            .collect()
    }

    /// Whether the tail shows `e`.
    fn keeps(&self, e: &TrafficEvent) -> bool {
        let by = |sender: UserId, receiver: Option<UserId>, others: &[UserId]| {
            self.user.is_none_or(|u| sender == u || receiver == Some(u) || others.contains(&u))
        };
        let in_group = |g: Option<GroupId>| self.group.is_none_or(|want| g == Some(want));
        match e {
            TrafficEvent::Message(m) => self.message && in_group(m.group_id) && by(m.sender_id, m.receiver_id, &m.recipient_ids),
            TrafficEvent::Refused(r) => self.refused && in_group(r.group_id) && by(r.sender_id, r.receiver_id, &[]),
            TrafficEvent::Receipt(r) => self.receipt && self.group.is_none() && by(r.user_id, None, &r.notified),
            TrafficEvent::Typing(t) => self.typing && in_group(t.group_id) && by(t.sender_id, t.receiver_id, &t.recipient_ids),
        }
    }
}

/// A send read from the inbound topic (cluster mode): metadata only, never the body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendEvent {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `d:<a>:<b>` or `g:<group>`.
    conversation: String,
    sender_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiver_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<GroupId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<String>,
    /// Node of the sending connection.
    node: NodeId,
    body_bytes: usize,
    media: bool,
    /// When this tail read it, Unix ms.
    timestamp: i64,
}

impl SendEvent {
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn of(job: router::SendJob) -> Self {
        use switchboard_core::protocol::Target;
        let (receiver_id, group_id) = match job.frame.target {
            Target::User(u) => (Some(u), None),
            Target::Group(g) => (None, Some(g)),
        };
        Self {
            kind: "send",
            conversation: job.frame.target.conversation(job.origin.user).to_string(),
            sender_id: job.origin.user,
            receiver_id,
            group_id,
            client_msg_id: job.frame.client_msg_id,
            node: job.origin.node,
            body_bytes: job.frame.text.len(),
            media: job.frame.media.is_some(),
            timestamp: switchboard_core::time::now_ms(),
        }
    }
}

/// Counts an open tail; refuses past [`MAX_TAILS`].
struct Slot(Arc<AppState>);

impl Slot {
    fn take(s: &Arc<AppState>) -> Result<Self, ApiError> {
        if s.admin.tails.fetch_add(1, Ordering::SeqCst) >= MAX_TAILS {
            s.admin.tails.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_tails", format!("{MAX_TAILS} tails are open on this node")));
        }
        Ok(Self(s.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.admin.tails.fetch_sub(1, Ordering::SeqCst);
        tracing::info!("admin tail ended");
    }
}

/// Open tails on this node.
pub fn open_tails(s: &AppState) -> usize {
    s.admin.tails.load(Ordering::SeqCst)
}

/// `GET /admin/v1/tail`: 200 and an NDJSON stream; 400 for a bad filter or `bodies=true` in
/// cluster mode, 404 for an unknown user or group, 503 past [`MAX_TAILS`] or while shutting down.
pub async fn tail(State(s): State<Arc<AppState>>, ApiQuery(q): ApiQuery<TailQuery>) -> Result<Response, ApiError> {
    let filter = Filter::parse(&q)?;
    let bodies = q.bodies.unwrap_or(false);
    if bodies && s.cfg.mode != Mode::Standalone {
        return Err(ApiError::invalid("message bodies are only available in standalone mode"));
    }
    if let Some(u) = filter.user {
        s.store.user(u).await?.ok_or_else(|| ApiError::not_found("user"))?;
    }
    if let Some(g) = filter.group {
        s.store.group(g).await?.ok_or_else(|| ApiError::not_found("group"))?;
    }
    if s.shutdown.is_cancelled() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the gateway is shutting down"));
    }
    let slot = Slot::take(&s)?;
    let sends = open_sends(&s)?;
    // Subscribed before the `start` line is written: everything routed after it is seen.
    let events = s.router.tap();
    if bodies {
        tracing::warn!(user = ?filter.user, group = ?filter.group, "admin tail with message bodies started");
    } else {
        tracing::info!(user = ?filter.user, group = ?filter.group, "admin tail started");
    }
    let start = json!({
        "type": "start",
        "node": s.node,
        "mode": mode_name(&s),
        "bodies": bodies,
        "user": filter.user,
        "group": filter.group,
        "types": filter.types(),
    });
    let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let tail = Tail {
        start: Some(line(&start)),
        shutdown: s.shutdown.clone(),
        state: s,
        events,
        sends,
        filter,
        bodies,
        heartbeat,
        ended: false,
        groups: Default::default(),
        _slot: slot,
    };
    // The stream owns the subscription: when the client goes away hyper drops the body, and
    // with it the subscription, the Kafka consumer and the slot. No task is left behind.
    let body = futures_util::stream::unfold(tail, |mut t| async move { t.next_line().await.map(|l| (Ok::<_, Infallible>(l), t)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache, no-store")
        // nginx: pass lines through as they come.
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

fn line(v: &impl Serialize) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("tail lines serialize");
    b.push(b'\n');
    Bytes::from(b)
}

/// Group members cached per tail (cluster `send` events name only the group).
const GROUP_CACHE: Duration = Duration::from_secs(30);

/// One open tail: the stream's state.
struct Tail {
    state: Arc<AppState>,
    start: Option<Bytes>,
    shutdown: tokio_util::sync::CancellationToken,
    events: tokio::sync::broadcast::Receiver<TrafficEvent>,
    sends: Option<Sends>,
    filter: Filter,
    bodies: bool,
    heartbeat: Interval,
    ended: bool,
    groups: std::collections::HashMap<GroupId, (Instant, Vec<UserId>)>,
    _slot: Slot,
}

impl Tail {
    /// The next line, `None` once the stream is over.
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(start) = self.start.take() {
            return Some(start);
        }
        if self.ended {
            return None;
        }
        loop {
            let out = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.ended = true;
                    return Some(line(&json!({"type": "end", "reason": "shutdown"})));
                }
                r = self.events.recv() => match r {
                    Ok(e) if self.filter.keeps(&e) => Some(self.render(e)),
                    Ok(_) => None,
                    Err(RecvError::Lagged(skipped)) => Some(line(&json!({"type": "lagged", "skipped": skipped}))),
                    Err(RecvError::Closed) => {
                        self.ended = true;
                        return Some(line(&json!({"type": "end", "reason": "router stopped"})));
                    }
                },
                r = next_send(&mut self.sends) => match r {
                    Ok(e) => self.keeps_send(&e).await.then(|| line(&e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "admin tail: reading the inbound topic failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Some(line(&json!({"type": "error", "code": "kafka", "message": e})))
                    }
                },
                _ = self.heartbeat.tick() => return Some(line(&json!({"type": "heartbeat"}))),
            };
            if let Some(l) = out {
                self.heartbeat.reset();
                return Some(l);
            }
        }
    }

    fn render(&self, mut e: TrafficEvent) -> Bytes {
        if let TrafficEvent::Message(m) = &mut e {
            if !(self.bodies && self.state.cfg.mode == Mode::Standalone) {
                m.body = None;
            }
        }
        line(&e)
    }

    /// The filter for a cluster `send` event; a group's members are looked up (and cached)
    /// only for a user filter.
    async fn keeps_send(&mut self, e: &SendEvent) -> bool {
        let f = self.filter;
        if !f.message || f.group.is_some_and(|g| e.group_id != Some(g)) {
            return false;
        }
        let Some(u) = f.user else { return true };
        if e.sender_id == u || e.receiver_id == Some(u) {
            return true;
        }
        let Some(g) = e.group_id else { return false };
        if let Some((at, members)) = self.groups.get(&g) {
            if at.elapsed() < GROUP_CACHE {
                return members.contains(&u);
            }
        }
        let members = match self.state.store.group(g).await {
            Ok(Some(group)) => group.members,
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "admin tail: group lookup failed");
                return false;
            }
        };
        let keep = members.contains(&u);
        self.groups.insert(g, (Instant::now(), members));
        keep
    }
}

/// The next `send` event, or never when the tail reads no topic.
async fn next_send(sends: &mut Option<Sends>) -> Result<SendEvent, String> {
    match sends {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(feature = "cluster"))]
enum Sends {}

#[cfg(not(feature = "cluster"))]
impl Sends {
    async fn next(&mut self) -> Result<SendEvent, String> {
        match *self {}
    }
}

#[cfg(not(feature = "cluster"))]
fn open_sends(_: &AppState) -> Result<Option<Sends>, ApiError> {
    Ok(None)
}

#[cfg(feature = "cluster")]
use kafka::{open_sends, Sends};

/// Cluster mode: the inbound topic read from its end by a consumer group of this tail alone.
#[cfg(feature = "cluster")]
pub(super) mod kafka {
    use super::SendEvent;
    use crate::http::error::ApiError;
    use crate::state::AppState;
    use switchboard_core::bus::{KafkaConfig, KafkaLog, LogConsumer};
    use switchboard_core::config::Mode;

    /// Records handed out at once (each is dropped, never acknowledged, right after reading).
    const IN_FLIGHT: usize = 64;

    /// A consumer in a fresh group that starts at the end of each partition and commits
    /// nothing; closed and its group deleted when the tail ends.
    pub(super) struct Sends {
        consumer: Option<LogConsumer>,
        log: KafkaLog,
        group: String,
    }

    /// The admin API's Kafka client: the cluster's settings, consumers starting at the end of
    /// partitions their group never committed, and never committing.
    pub(in crate::admin) fn tail_log(s: &AppState) -> Result<KafkaLog, ApiError> {
        let mut cached = s.admin.tail_log.lock();
        if let Some(log) = cached.as_ref() {
            return Ok(log.clone());
        }
        let mut cfg = KafkaConfig::from_cluster(&s.cfg.cluster);
        cfg.client.insert("auto.offset.reset".into(), "latest".into());
        cfg.client.insert("enable.auto.commit".into(), "false".into());
        let log = KafkaLog::new(cfg).map_err(ApiError::from)?;
        *cached = Some(log.clone());
        Ok(log)
    }

    pub(super) fn open_sends(s: &AppState) -> Result<Option<Sends>, ApiError> {
        if s.cfg.mode != Mode::Cluster {
            return Ok(None);
        }
        let log = tail_log(s)?;
        let node: String = s.node.0.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let group = format!("{}tail.{node}.{}", s.cfg.cluster.topic_prefix, uuid::Uuid::new_v4().simple());
        let topic = router::cluster::inbound_topic(&s.cfg);
        let consumer = log.consumer(&[&topic], &group, IN_FLIGHT).map_err(ApiError::from)?;
        Ok(Some(Sends { consumer: Some(consumer), log, group }))
    }

    impl Sends {
        pub(super) async fn next(&mut self) -> Result<SendEvent, String> {
            let consumer = self.consumer.as_mut().expect("open until dropped");
            loop {
                // Dropped unacknowledged: its slot is freed and no offset is ever stored.
                let record = consumer.next().await.map_err(|e| e.to_string())?;
                match serde_json::from_slice::<router::SendJob>(&record.payload) {
                    Ok(job) => return Ok(SendEvent::of(job)),
                    Err(error) => tracing::debug!(%error, offset = record.offset, "admin tail: not a send job"),
                }
            }
        }
    }

    impl Drop for Sends {
        fn drop(&mut self) {
            let Some(consumer) = self.consumer.take() else { return };
            let (log, group) = (self.log.clone(), std::mem::take(&mut self.group));
            // Leave the group, then delete it (it never committed, so this only tidies up).
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    consumer.close().await;
                    if let Err(error) = log.delete_group(&group).await {
                        tracing::debug!(%error, %group, "admin tail: consumer group not deleted");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use router::{MessageEvent, ReceiptEvent, TypingEvent};
    use switchboard_core::ids::MessageId;
    use switchboard_core::protocol::ReceiptStatus;

    fn query(user: Option<i64>, group: Option<i64>, types: Option<&str>) -> TailQuery {
        TailQuery { user, group, types: types.map(str::to_owned), bodies: None }
    }

    fn message(sender: i64, receiver: Option<i64>, group: Option<i64>, recipients: &[i64]) -> TrafficEvent {
        TrafficEvent::Message(MessageEvent {
            message_id: MessageId(1),
            conversation: "x".into(),
            conversation_seq: 1,
            sender_id: UserId(sender),
            receiver_id: receiver.map(UserId),
            group_id: group.map(GroupId),
            client_msg_id: None,
            node: NodeId("gw-1".into()),
            recipients: recipients.len(),
            online: 0,
            offline: 0,
            duplicate: false,
            body_bytes: 5,
            media: false,
            timestamp: 0,
            body: Some("hello".into()),
            recipient_ids: recipients.iter().copied().map(UserId).collect(),
        })
    }

    #[test]
    fn filters_by_user_group_and_type() {
        let direct = message(1, Some(2), None, &[2]);
        let group = message(1, None, Some(7), &[2, 3]);
        let receipt = TrafficEvent::Receipt(ReceiptEvent {
            user_id: UserId(2),
            message_id: MessageId(1),
            status: ReceiptStatus::Read,
            notified: vec![UserId(1)],
            node: NodeId("gw-1".into()),
            timestamp: 0,
        });
        let typing = TrafficEvent::Typing(TypingEvent {
            sender_id: UserId(3),
            receiver_id: None,
            group_id: Some(GroupId(7)),
            recipients: 2,
            node: NodeId("gw-1".into()),
            timestamp: 0,
            recipient_ids: vec![UserId(1), UserId(2)].into(),
        });
        let all = Filter::parse(&query(None, None, None)).unwrap();
        assert!([&direct, &group, &receipt, &typing].iter().all(|e| all.keeps(e)));
        let user3 = Filter::parse(&query(Some(3), None, None)).unwrap();
        assert_eq!([&direct, &group, &receipt, &typing].map(|e| user3.keeps(e)), [false, true, false, true]);
        let user1 = Filter::parse(&query(Some(1), None, None)).unwrap();
        assert_eq!([&direct, &group, &receipt, &typing].map(|e| user1.keeps(e)), [true, true, true, true]);
        let group7 = Filter::parse(&query(None, Some(7), None)).unwrap();
        assert_eq!([&direct, &group, &receipt, &typing].map(|e| group7.keeps(e)), [false, true, false, true]);
        let receipts = Filter::parse(&query(None, None, Some("receipt, typing"))).unwrap();
        assert_eq!([&direct, &group, &receipt, &typing].map(|e| receipts.keeps(e)), [false, false, true, true]);
        assert_eq!(receipts.types(), ["receipt", "typing"]);
        assert!(Filter::parse(&query(None, None, Some("gossip"))).is_err());
    }

    #[test]
    fn bodies_are_serialized_only_when_present() {
        let TrafficEvent::Message(mut m) = message(1, Some(2), None, &[2]) else { unreachable!() };
        let with: serde_json::Value = serde_json::from_slice(&line(&TrafficEvent::Message(m.clone()))).unwrap();
        assert_eq!((with["type"].as_str(), with["body"].as_str(), with["bodyBytes"].as_u64()), (Some("message"), Some("hello"), Some(5)));
        assert!(with.get("recipientIds").is_none() && with.get("groupId").is_none(), "{with}");
        m.body = None;
        let without: serde_json::Value = serde_json::from_slice(&line(&TrafficEvent::Message(m))).unwrap();
        assert!(without.get("body").is_none(), "{without}");
    }
}
