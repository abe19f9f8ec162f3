//! What every [`Bus`] promises, as a suite both implementations run: `InProcBus` in this
//! module's unit test, `KafkaBus` in `core/tests/bus_kafka.rs`.
//!
//! It checks what the router and the delivery task rely on: per-node order and content for
//! every [`Route`] shape, isolation between nodes, one live subscriber per node, and that a
//! dropped subscriber can be replaced without replaying what it was handed. It waits on
//! events with a deadline and never sleeps.

use super::{Bus, BusError, Delivery, Route};
use crate::ids::{ConnId, MessageId, NodeId, UserId};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the suite waits for one delivery before failing. Generous: a Kafka group join
/// alone takes seconds.
pub const RECV_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the contract against `bus` with two distinct, not yet subscribed nodes.
///
/// # Panics
/// On any broken promise, with a message saying which.
pub async fn bus_contract(bus: &dyn Bus, a: &NodeId, b: &NodeId) {
    let mut rx_a = bus.subscribe(a).await.expect("first subscribe of a");
    let mut rx_b = bus.subscribe(b).await.expect("first subscribe of b");
    assert!(matches!(bus.subscribe(a).await, Err(BusError::AlreadySubscribed(_))), "one live subscriber per node");

    let (for_a, for_b) = (sample_deliveries(1), sample_deliveries(2));
    // Interleaved, so any mixing between the nodes would show.
    for (da, db) in for_a.iter().zip(&for_b) {
        bus.publish(a, da.clone()).await.expect("publish to a");
        bus.publish(b, db.clone()).await.expect("publish to b");
    }
    assert_eq!(recv_n(&mut rx_a, for_a.len()).await, for_a, "a gets its deliveries, in order, intact");
    assert_eq!(recv_n(&mut rx_b, for_b.len()).await, for_b, "b gets its deliveries, in order, intact");
    // A marker published last must be the next thing each node sees: nothing else is queued.
    expect_marker(bus, a, &mut rx_a, 100).await;
    expect_marker(bus, b, &mut rx_b, 101).await;

    drop(rx_a);
    let mut rx_a = bus.subscribe(a).await.expect("a dropped subscriber can be replaced");
    expect_marker(bus, a, &mut rx_a, 102).await;
}

/// Deliveries covering every route shape and field: `Conn`, `Users` with and without `skip`,
/// no users, with and without a message id, empty and binary payloads. `tag` makes each set
/// distinct.
pub fn sample_deliveries(tag: u8) -> Vec<Delivery> {
    let t = i64::from(tag);
    let payload = |s: &str| Bytes::from(format!("{{\"tag\":{tag},\"{s}\":true}}"));
    vec![
        Delivery { route: Route::Conn(ConnId(u64::from(tag))), payload: payload("ack"), message_id: None },
        Delivery {
            route: Route::Users { users: vec![UserId(t), UserId(1 << 40), UserId(7)], skip: Some(ConnId(9)) },
            payload: payload("message"),
            message_id: Some(MessageId(1000 + t)),
        },
        Delivery {
            route: Route::Users { users: vec![UserId(t)], skip: None },
            payload: payload("receipt"),
            message_id: None,
        },
        Delivery {
            route: Route::Users { users: vec![], skip: None },
            payload: Bytes::new(),
            message_id: Some(MessageId(0)),
        },
        Delivery {
            route: Route::Conn(ConnId(u64::MAX)),
            payload: Bytes::from(vec![0, 255, tag, 0x80]),
            message_id: Some(MessageId(-t)),
        },
    ]
}

/// Receives exactly `n` deliveries, each within [`RECV_DEADLINE`].
///
/// # Panics
/// When one does not arrive in time or the channel closes.
pub async fn recv_n(rx: &mut mpsc::Receiver<Delivery>, n: usize) -> Vec<Delivery> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(RECV_DEADLINE, rx.recv()).await {
            Ok(Some(d)) => got.push(d),
            Ok(None) => panic!("bus channel closed after {} of {n} deliveries", got.len()),
            Err(_) => panic!("no delivery within {RECV_DEADLINE:?} after {} of {n}: {got:?}", got.len()),
        }
    }
    got
}

/// A delivery that identifies itself by its message id.
pub fn marker(id: i64) -> Delivery {
    Delivery { route: Route::Conn(ConnId(0)), payload: Bytes::from_static(b"marker"), message_id: Some(MessageId(id)) }
}

async fn expect_marker(bus: &dyn Bus, node: &NodeId, rx: &mut mpsc::Receiver<Delivery>, id: i64) {
    bus.publish(node, marker(id)).await.expect("publish marker");
    assert_eq!(recv_n(rx, 1).await, [marker(id)], "marker {id} is the next delivery of {node}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::InProcBus;

    #[tokio::test]
    async fn in_process_bus_passes_the_contract() {
        let bus = InProcBus::new();
        bus_contract(&bus, &NodeId("a".into()), &NodeId("b".into())).await;
    }
}
