//! The presence contract: what every [`Presence`] must do, checked the same way against the
//! in-process map and Redis (single and cluster), so both modes behave alike.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use switchboard_core::ids::NodeId;
//! use switchboard_core::presence::{contract, InProcPresence};
//! let p = InProcPresence::new();
//! contract::presence_contract(&p, &NodeId("a".into()), &p, &NodeId("b".into())).await;
//! # }
//! ```

use super::{Presence, PresenceEntry};
use crate::ids::{ConnId, DeviceId, NodeId, UserId};
use std::collections::HashMap;

/// Users the contract uses; a presence under test must hold none of them beforehand.
pub const CONTRACT_USERS: [UserId; 3] = [UserId(1), UserId(2), UserId(3)];

/// Runs the contract over two gateway nodes sharing one presence map: `a` is how node `node_a`
/// sees it and `b` how `node_b` does (for the in-process map, the same object twice; for Redis,
/// one handle per node, each already registered). Each connection is added and removed through
/// its own node's handle, as a gateway does. Leaves every contract user offline.
///
/// Checks: connect/disconnect bookkeeping, last-connection detection, multi-device,
/// `is_online`, `connections`, and `locate` grouping users spread over both nodes.
///
/// # Panics
///
/// On the first broken rule, naming it.
pub async fn presence_contract(a: &dyn Presence, node_a: &NodeId, b: &dyn Presence, node_b: &NodeId) {
    let [alice, bob, carol] = CONTRACT_USERS;
    let entry = |user, node: &NodeId, conn, device: &str| PresenceEntry {
        user,
        node: node.clone(),
        conn: ConnId(conn),
        device: DeviceId(device.into()),
    };

    for p in [a, b] {
        assert!(!p.is_online(alice).await, "nobody is online before connecting");
        assert!(p.connections(alice).await.is_empty(), "no connections before connecting");
        assert!(p.locate(&CONTRACT_USERS).await.is_empty(), "locate finds nobody before connecting");
    }
    assert!(a.locate(&[]).await.is_empty(), "locate of no users is empty");

    // alice: phone and laptop on node a, tablet on node b; bob: one connection on b; carol: none.
    let alice_phone = entry(alice, node_a, 101, "phone");
    let alice_laptop = entry(alice, node_a, 102, "laptop");
    let alice_tablet = entry(alice, node_b, 201, "tablet");
    let bob_web = entry(bob, node_b, 202, "web:tab:1");
    a.connected(alice_phone.clone()).await;
    assert!(b.is_online(alice).await, "a connection is visible from the other node");
    assert_eq!(b.connections(alice).await, vec![alice_phone.clone()], "connections lists node, conn and device");
    a.connected(alice_laptop.clone()).await;
    b.connected(alice_tablet.clone()).await;
    b.connected(bob_web.clone()).await;

    for p in [a, b] {
        assert_eq!(
            sorted(p.connections(alice).await),
            sorted(vec![alice_phone.clone(), alice_laptop.clone(), alice_tablet.clone()]),
            "every device of a user is listed, across nodes"
        );
        assert!(p.is_online(bob).await && !p.is_online(carol).await, "is_online per user");
        assert!(p.connections(carol).await.is_empty(), "an offline user has no connections");
        let located = grouped(p.locate(&CONTRACT_USERS).await);
        let want = grouped(HashMap::from([(node_a.clone(), vec![alice]), (node_b.clone(), vec![alice, bob])]));
        assert_eq!(located, want, "locate groups users by node, each user once per node, offline users absent");
    }

    assert!(!a.disconnected(alice, alice_phone.conn).await, "not the last connection: laptop and tablet remain");
    assert!(!a.disconnected(alice, alice_phone.conn).await, "disconnecting twice is not a last connection");
    assert!(!a.disconnected(carol, ConnId(999)).await, "disconnecting an unknown connection is not a last connection");
    assert_eq!(
        sorted(b.connections(alice).await),
        sorted(vec![alice_laptop.clone(), alice_tablet.clone()]),
        "a disconnect removes exactly that connection"
    );
    assert!(!a.disconnected(alice, alice_laptop.conn).await, "not the last: the tablet on the other node remains");
    assert_eq!(
        grouped(a.locate(&[alice]).await),
        grouped(HashMap::from([(node_b.clone(), vec![alice])])),
        "node a no longer holds alice"
    );
    assert!(b.disconnected(alice, alice_tablet.conn).await, "the last connection, across nodes, is detected");
    assert!(!a.is_online(alice).await && a.connections(alice).await.is_empty(), "offline after the last disconnect");

    b.connected(alice_tablet.clone()).await;
    assert!(a.is_online(alice).await, "a user can come back");
    assert!(b.disconnected(alice, alice_tablet.conn).await, "and leave again");
    assert!(b.disconnected(bob, bob_web.conn).await, "a single connection is its user's last");
    assert!(a.locate(&CONTRACT_USERS).await.is_empty(), "everyone is offline at the end");
}

fn sorted(mut entries: Vec<PresenceEntry>) -> Vec<PresenceEntry> {
    entries.sort_by(|x, y| (&x.node.0, x.conn).cmp(&(&y.node.0, y.conn)));
    entries
}

/// `locate`'s answer with each node's users sorted, so the order within a node is not part of
/// the contract (duplicates still are).
fn grouped(located: HashMap<NodeId, Vec<UserId>>) -> HashMap<NodeId, Vec<UserId>> {
    located
        .into_iter()
        .map(|(n, mut users)| {
            users.sort();
            (n, users)
        })
        .collect()
}
