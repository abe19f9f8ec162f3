//! gatewayd in cluster mode: PostgreSQL store, Redis presence (this node registered with an
//! epoch and kept alive by [`spawn_presence_refresh`]), the Kafka bus for deliveries, and
//! [`KafkaSends`], which produces each send to the inbound topic for the router.
//!
//! The client's ack is the router's: it comes back through this node's delivery topic once
//! the message is committed in PostgreSQL, which happens only after the broker confirmed the
//! inbound record.

use crate::ws::outbox::OutFrame;
use crate::ws::registry::Registry;
use crate::GatewayError;
use futures_util::stream::{FuturesOrdered, StreamExt};
use router::cluster::{connect, inbound_topic, Role, Services};
use router::{Origin, RouterError, SendJob, SendSink};
use std::sync::Arc;
use switchboard_core::bus::{BusError, KafkaLog, Sent};
use switchboard_core::config::Config;
use switchboard_core::error::ErrorCode;
use switchboard_core::presence::{PresenceEntry, PresenceError, RedisPresence};
use switchboard_core::protocol;
use switchboard_core::time::now_ms;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Sends produced but not yet confirmed by the broker, per gateway.
const MAX_IN_FLIGHT: usize = 1024;

/// Connects this gateway to the cluster's services, registering it as a presence node.
///
/// # Errors
/// [`GatewayError::Cluster`] naming the service that failed.
pub async fn services(cfg: &Config) -> Result<Services, GatewayError> {
    let advertise = cfg.cluster.advertise.clone().unwrap_or_else(|| cfg.server.listen.to_string());
    let role = Role::Gateway { epoch: now_ms() as u64, advertise };
    connect(cfg, role).await.map_err(|e| GatewayError::Cluster(e.to_string()))
}

/// Produces sends to the inbound topic, keyed by conversation, in the order they were
/// submitted; a send the broker refused gets an `unavailable` error frame (resend is safe).
pub struct KafkaSends {
    tx: mpsc::Sender<SendJob>,
}

impl KafkaSends {
    /// Starts the producing task.
    pub fn spawn(log: KafkaLog, cfg: &Config, registry: Arc<Registry>) -> Self {
        let (tx, rx) = mpsc::channel(cfg.ws.send_queue);
        tokio::spawn(produce(log, inbound_topic(cfg), rx, registry));
        Self { tx }
    }
}

impl SendSink for KafkaSends {
    fn submit(&self, job: SendJob) -> Result<(), RouterError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RouterError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => RouterError::Closed,
        })
    }
}

type Produced = std::pin::Pin<Box<dyn std::future::Future<Output = (Origin, Option<String>, Result<Sent, BusError>)> + Send>>;

async fn produce(log: KafkaLog, topic: String, mut rx: mpsc::Receiver<SendJob>, registry: Arc<Registry>) {
    let mut in_flight: FuturesOrdered<Produced> = FuturesOrdered::new();
    loop {
        tokio::select! {
            job = rx.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(mut job) = job else { break };
                if job.frame.client_msg_id.is_none() {
                    job.idempotency_key = Some(format!("srv-{}", uuid::Uuid::new_v4().simple()));
                }
                let key = job.frame.target.conversation(job.origin.user).to_string();
                let payload = serde_json::to_vec(&job).expect("a SendJob serializes");
                let (origin, cid) = (job.origin, job.frame.client_msg_id);
                // Enqueued synchronously, in submit order, so one connection's sends keep their
                // order within the conversation's partition.
                let acked = loop {
                    match log.enqueue(&topic, key.as_bytes(), &payload) {
                        Ok(Some(acked)) => break Ok(acked),
                        Ok(None) => match in_flight.next().await {
                            Some(done) => report(&registry, done),
                            None => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                        },
                        Err(e) => break Err(e),
                    }
                };
                match acked {
                    Ok(acked) => in_flight.push_back(Box::pin(async move { (origin, cid, acked.wait().await) })),
                    Err(e) => report(&registry, (origin, cid, Err(e))),
                }
            }
            Some(done) = in_flight.next() => report(&registry, done),
            else => break,
        }
    }
    while let Some(done) = in_flight.next().await {
        report(&registry, done);
    }
}

fn report(registry: &Registry, (origin, cid, result): (Origin, Option<String>, Result<Sent, BusError>)) {
    if let Ok(sent) = &result {
        tracing::debug!(conn_id = %origin.conn, partition = sent.partition, offset = sent.offset, "send produced");
    }
    if let Err(e) = result {
        tracing::warn!(error = %e, "send not accepted by the broker");
        if let Some(c) = registry.conn(origin.conn) {
            let msg = "message not accepted; resend with the same clientMsgId";
            c.push(OutFrame::Text(protocol::error_frame(e.code(), msg, cid.as_deref()), None));
        }
    }
}

/// Keeps this node's presence alive: every third of the TTL, renew the node and every local
/// user's entries. If the registration had lapsed (Redis lost it), announce every connection
/// again; if a newer incarnation of this node id exists, stop serving.
pub fn spawn_presence_refresh(presence: Arc<RedisPresence>, registry: Arc<Registry>, cfg: &Config, stop: CancellationToken) {
    let every = cfg.cluster.presence_ttl / 3;
    let node = presence.node().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            use switchboard_core::presence::Presence;
            match presence.refresh(&registry.users()).await {
                Ok(()) => {}
                Err(PresenceError::Lapsed { .. }) => {
                    tracing::warn!("presence registration lapsed; announcing every connection again");
                    let mut entries = Vec::new();
                    registry.for_each(|c| {
                        entries.push(PresenceEntry { user: c.user, node: node.clone(), conn: c.id, device: c.device.clone() })
                    });
                    for e in entries {
                        presence.connected(e).await;
                    }
                }
                Err(e @ PresenceError::StaleEpoch { .. }) => {
                    tracing::error!(error = %e, "a newer incarnation of this node exists; shutting down");
                    stop.cancel();
                }
                Err(error) => tracing::warn!(%error, "presence refresh failed"),
            }
        }
    });
}

/// The cluster-wide revocation set in Redis: a flag per user that outlives every access token
/// issued before it was set.
pub struct RedisRevocations {
    presence: Arc<RedisPresence>,
    ttl: std::time::Duration,
}

impl RedisRevocations {
    /// Flags in `presence`'s Redis, kept for the access-token lifetime plus a minute of skew.
    pub fn new(presence: Arc<RedisPresence>, cfg: &Config) -> Self {
        Self { presence, ttl: cfg.auth.access_ttl + std::time::Duration::from_secs(60) }
    }
}

#[async_trait::async_trait]
impl crate::auth::SharedRevocations for RedisRevocations {
    async fn revoke(&self, user: switchboard_core::ids::UserId) -> Result<(), String> {
        self.presence.revoke_user(user, self.ttl).await.map_err(|e| e.to_string())
    }
    async fn is_revoked(&self, user: switchboard_core::ids::UserId) -> Result<bool, String> {
        self.presence.is_user_revoked(user).await.map_err(|e| e.to_string())
    }
    async fn unrevoke(&self, user: switchboard_core::ids::UserId) -> Result<(), String> {
        self.presence.unrevoke_user(user).await.map_err(|e| e.to_string())
    }
}

/// How often a node re-reads the deleted users another node may have revoked.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Account deletions happen on one node; every other node learns of them by polling the store
/// (one indexed query per `REVOCATION_POLL`), then refuses the user's tokens and closes their
/// sockets here. A deleted user's token thus works at most `REVOCATION_POLL` longer elsewhere.
pub fn spawn_revocation_poll(state: std::sync::Arc<crate::state::AppState>) {
    let stop = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            match state.store.deleted_users().await {
                Ok(users) => {
                    for u in state.revoked.replace_here(&users) {
                        state.registry.close_user(u, switchboard_core::frame::close::POLICY, "account deleted or disabled");
                    }
                }
                Err(error) => tracing::warn!(%error, "revocation poll failed"),
            }
        }
    });
}
