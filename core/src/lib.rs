//! Switchboard's shared library: everything the binaries agree on.
//!
//! - [`ids`]: newtype ids (`UserId`, `ConnId`, `ConversationId`, ...).
//! - [`frame`]: the RFC 6455 frame codec the gateway reads and writes with.
//! - [`protocol`]: the JSON frames of the WebSocket contract.
//! - [`auth`]: JWT access/refresh tokens and argon2id password hashing.
//! - [`config`]: the one `Config` struct (defaults < TOML < env < flags).
//! - [`store`], [`bus`], [`presence`]: the seams between gateway, router and storage,
//!   with in-process implementations of the bus and presence for standalone mode.
//! - [`push`]: notices for offline recipients, handed to the push worker.
//! - [`metrics`]: metric names, described once.
//!
//! ```
//! use switchboard_core::protocol::ClientFrame;
//! let f = ClientFrame::parse(br#"{"senderId":101,"receiverId":202,"message":"Hello!"}"#).unwrap();
//! assert!(matches!(f, ClientFrame::Send(_)));
//! ```

pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod frame;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod push;
#[cfg(feature = "service")]
pub mod service;
pub mod store;
pub mod time;

pub use error::ErrorCode;
