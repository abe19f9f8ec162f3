//! The WebSocket side of the gateway.
//!
//! - [`accept`]: the client listener's accept loop; upgrades canonical WebSocket requests on
//!   the bare socket, hands everything else to hyper and axum.
//! - [`handshake`]: authenticates and upgrades `/ws` and `/messages/send` (axum's path).
//! - [`conn`]: one task per connection: reads into a per-thread scratch buffer, keeps only a
//!   partial frame, handles frames, flushes its outbox.
//! - [`outbox`]: the per-connection state shared with other tasks: a queue bounded in bytes.
//! - [`park`]: idle sessions without a task, watched by one epoll thread until they have work.
//! - [`registry`]: this node's connections by user and by id.
//! - [`delivery`]: consumes the bus and fans deliveries out to sockets.
//! - [`keepalive`]: pings every connection and reaps silent ones, from one task for all.
//! - [`ratelimit`]: the per-connection token bucket for sends, receipts, typing and syncs.

pub mod accept;
pub mod conn;
pub mod counters;
pub mod delivery;
pub mod handshake;
pub mod keepalive;
pub mod outbox;
pub mod park;
pub mod ratelimit;
pub mod registry;
