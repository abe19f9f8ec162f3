//! Consumes this node's deliveries from the bus and queues them on the right sockets.

use super::outbox::OutFrame;
use crate::state::AppState;
use std::sync::Arc;
use switchboard_core::bus::{Delivery, Route};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Deliveries taken from the bus per wake-up.
const BATCH: usize = 256;

/// Subscribes to the bus and starts the fan-out task. After `stop`, it hands out what is
/// already queued and ends.
///
/// # Panics
/// If the node is already subscribed (two gateways with one node id in one process).
pub async fn spawn(state: Arc<AppState>, stop: CancellationToken) -> JoinHandle<()> {
    let mut rx = state.bus.subscribe(&state.node).await.expect("node id is unique within the process");
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    batch.drain(..).for_each(|d| dispatch(&state, d));
                }
                _ = stop.cancelled() => {
                    while let Ok(d) = rx.try_recv() {
                        dispatch(&state, d);
                    }
                    break;
                }
            }
        }
    })
}

fn dispatch(state: &AppState, d: Delivery) {
    tracing::trace!(node = %state.node, route = ?d.route, message_id = ?d.message_id, "delivery");
    match d.route {
        Route::Conn(id) => {
            if let Some(c) = state.registry.conn(id) {
                let queued = c.push(OutFrame::Text(d.payload, d.message_id));
                tracing::trace!(conn = %id, queued, "reply queued");
            }
        }
        Route::Users { users, skip } => {
            for u in users {
                state.registry.for_user(u, |c| {
                    if Some(c.id) != skip {
                        c.push(OutFrame::Text(d.payload.clone(), d.message_id));
                    }
                });
            }
        }
    }
}
