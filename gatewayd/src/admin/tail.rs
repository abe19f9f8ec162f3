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
//! - `lagged`: the tail fell behind and `skipped` events were dropped for it (routing never
//!   waits for a tail).
//! - `heartbeat` after 15 s without a line, so clients and proxies notice a dead stream.
//! - `end` with a `reason` when the server ends the stream (shutdown).
//!
//! In cluster mode sends are routed by the router process and each node routes its own
//! receipts and typing, so a tail reads them all from the tap topic instead (`<prefix>tap`,
//! see [`router::cluster::spawn_tap_publisher`]): while any node serves a tail it sets a flag
//! in Redis (renewed every 10 s, gone 30 s after the last tail), and then the router and every
//! gateway publish their events there, never with a body. The tail reads the topic from its
//! end with a consumer group of its own that commits nothing.
//!
//! Filters apply here: `user` keeps what that user sent, received (group messages of their
//! groups included), read or typed; `group` keeps that group's messages, refusals and typing
//! (receipts name no conversation and never match it); `types` is a comma list of `message`,
//! `refused`, `receipt`, `typing`.

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
use switchboard_core::ids::{GroupId, UserId};
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
                    "message" => f.message = true,
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
        match e {
            TrafficEvent::Message(m) => self.keeps_parts(Kind::Message, m.sender_id, m.receiver_id, m.group_id, &m.recipient_ids),
            TrafficEvent::Refused(r) => self.keeps_parts(Kind::Refused, r.sender_id, r.receiver_id, r.group_id, &[]),
            TrafficEvent::Receipt(r) => self.keeps_parts(Kind::Receipt, r.user_id, None, None, &r.notified),
            TrafficEvent::Typing(t) => self.keeps_parts(Kind::Typing, t.sender_id, t.receiver_id, t.group_id, &t.recipient_ids),
        }
    }

    /// The filter over an event's parts: its kind, who acted, the user or group it was
    /// addressed to, and everyone else it concerns.
    fn keeps_parts(&self, kind: Kind, actor: UserId, receiver: Option<UserId>, group: Option<GroupId>, others: &[UserId]) -> bool {
        let wanted = match kind {
            Kind::Message => self.message,
            Kind::Refused => self.refused,
            Kind::Receipt => self.receipt,
            Kind::Typing => self.typing,
        };
        wanted
            && self.group.is_none_or(|g| group == Some(g))
            && self.user.is_none_or(|u| actor == u || receiver == Some(u) || others.contains(&u))
    }
}

/// The kinds of traffic event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Refused,
    Receipt,
    Typing,
}

/// One record of the tap topic (cluster mode), as a tail reads it: the event's JSON, passed
/// through as published.
type TapLine = router::TapRecord<serde_json::Value>;

/// Whether `f` keeps a tap record; `lagged` lines are always kept.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
fn tap_kept_by(t: &TapLine, f: &Filter) -> bool {
    let e = &t.event;
    let user = |k: &str| e[k].as_i64().map(UserId);
    let kind = match e["type"].as_str() {
        Some("message") => Kind::Message,
        Some("refused") => Kind::Refused,
        Some("receipt") => Kind::Receipt,
        Some("typing") => Kind::Typing,
        Some("lagged") => return true,
        _ => return false,
    };
    let actor = if kind == Kind::Receipt { user("userId") } else { user("senderId") };
    let Some(actor) = actor else { return false };
    f.keeps_parts(kind, actor, user("receiverId"), e["groupId"].as_i64().map(GroupId), &t.recipient_ids)
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
    // Subscribed before the `start` line is written: everything routed after it is seen (in
    // cluster mode, once the tap topic's partition is assigned: a second or so).
    let taps = open_taps(&s).await?;
    let events = taps.is_none().then(|| s.router.tap());
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
        taps,
        filter,
        bodies,
        heartbeat,
        ended: false,
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

/// One open tail: the stream's state.
struct Tail {
    state: Arc<AppState>,
    start: Option<Bytes>,
    shutdown: tokio_util::sync::CancellationToken,
    /// The router's tap (standalone).
    events: Option<tokio::sync::broadcast::Receiver<TrafficEvent>>,
    /// The tap topic (cluster).
    taps: Option<Taps>,
    filter: Filter,
    bodies: bool,
    heartbeat: Interval,
    ended: bool,
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
                r = next_event(&mut self.events) => match r {
                    Ok(e) if self.filter.keeps(&e) => Some(self.render(e)),
                    Ok(_) => None,
                    Err(RecvError::Lagged(skipped)) => Some(line(&json!({"type": "lagged", "skipped": skipped}))),
                    Err(RecvError::Closed) => {
                        self.ended = true;
                        return Some(line(&json!({"type": "end", "reason": "router stopped"})));
                    }
                },
                r = next_tap(&mut self.taps) => match r {
                    Ok(t) => tap_kept_by(&t, &self.filter).then(|| line(&t.event)),
                    Err(e) => {
                        tracing::warn!(error = %e, "admin tail: reading the tap topic failed");
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
}

/// The next tap event, or never when the tail has no subscription.
async fn next_event(events: &mut Option<tokio::sync::broadcast::Receiver<TrafficEvent>>) -> Result<TrafficEvent, RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next record of the tap topic, or never when the tail reads no topic.
async fn next_tap(taps: &mut Option<Taps>) -> Result<TapLine, String> {
    match taps {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(feature = "cluster"))]
enum Taps {}

#[cfg(not(feature = "cluster"))]
impl Taps {
    async fn next(&mut self) -> Result<TapLine, String> {
        match *self {}
    }
}

#[cfg(not(feature = "cluster"))]
async fn open_taps(_: &AppState) -> Result<Option<Taps>, ApiError> {
    Ok(None)
}

#[cfg(feature = "cluster")]
use kafka::{open_taps, Taps};

/// Cluster mode: the tap topic read from its end by a consumer group of this tail alone, and
/// the Redis flag that makes every process publish to it, renewed while the tail is open.
#[cfg(feature = "cluster")]
pub(super) mod kafka {
    use super::TapLine;
    use crate::http::error::ApiError;
    use crate::state::AppState;
    use router::cluster::TAP_WANTED_TTL;
    use std::sync::Arc;
    use switchboard_core::bus::{KafkaConfig, KafkaLog, LogConsumer};
    use switchboard_core::config::Mode;
    use tokio::time::{Interval, MissedTickBehavior};

    /// Records handed out at once (each is dropped, never acknowledged, right after reading).
    const IN_FLIGHT: usize = 64;

    /// A consumer in a fresh group that starts at the end of the tap topic and commits
    /// nothing; closed and its group deleted when the tail ends.
    pub(super) struct Taps {
        consumer: Option<LogConsumer>,
        log: KafkaLog,
        group: String,
        state: Arc<AppState>,
        renew: Interval,
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

    /// Tells every process to publish its events (Redis), and subscribes to the tap topic.
    pub(super) async fn open_taps(s: &Arc<AppState>) -> Result<Option<Taps>, ApiError> {
        if s.cfg.mode != Mode::Cluster {
            return Ok(None);
        }
        want_tap(s).await?;
        let log = tail_log(s)?;
        let topic = router::cluster::tap_topic(&s.cfg);
        log.ensure_topic(&topic, 1).await.map_err(ApiError::from)?;
        let node: String = s.node.0.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let group = format!("{}tail.{node}.{}", s.cfg.cluster.topic_prefix, uuid::Uuid::new_v4().simple());
        let consumer = log.consumer(&[&topic], &group, IN_FLIGHT).map_err(ApiError::from)?;
        let period = TAP_WANTED_TTL / 3;
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Some(Taps { consumer: Some(consumer), log, group, state: s.clone(), renew }))
    }

    async fn want_tap(s: &AppState) -> Result<(), ApiError> {
        let redis = &super::super::cluster::clients(s).await?.redis;
        redis.want_tap(TAP_WANTED_TTL).await.map_err(|e| super::super::nodes::unavailable("redis", e))
    }

    impl Taps {
        pub(super) async fn next(&mut self) -> Result<TapLine, String> {
            loop {
                let consumer = self.consumer.as_mut().expect("open until dropped");
                tokio::select! {
                    r = consumer.next() => {
                        // Dropped unacknowledged: its slot is freed and no offset is ever stored.
                        let record = r.map_err(|e| e.to_string())?;
                        match serde_json::from_slice::<TapLine>(&record.payload) {
                            Ok(t) => return Ok(t),
                            Err(error) => tracing::debug!(%error, offset = record.offset, "admin tail: not a tap record"),
                        }
                    }
                    _ = self.renew.tick() => {
                        if let Err(e) = want_tap(&self.state).await {
                            tracing::warn!(error = %e.message, "admin tail: tap flag not renewed");
                        }
                    }
                }
            }
        }
    }

    impl Drop for Taps {
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
    use switchboard_core::ids::{MessageId, NodeId};
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
