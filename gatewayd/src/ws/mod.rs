//! The WebSocket side of the gateway.
//!
//! - [`handshake`]: authenticates and upgrades `/ws` and `/messages/send`.
//! - [`conn`]: one task per connection: reads into a per-thread scratch buffer, keeps only a
//!   partial frame, handles frames, flushes its outbox.
//! - [`outbox`]: the per-connection state shared with other tasks: a queue bounded in bytes.
//! - [`registry`]: this node's connections by user and by id.
//! - [`delivery`]: consumes the bus and fans deliveries out to sockets.
//! - [`keepalive`]: pings every connection and reaps silent ones, from one task for all.
//! - [`ratelimit`]: the per-connection token bucket for sends, receipts, typing and syncs.

pub mod conn;
pub mod delivery;
pub mod handshake;
pub mod keepalive;
pub mod outbox;
pub mod ratelimit;
pub mod registry;
