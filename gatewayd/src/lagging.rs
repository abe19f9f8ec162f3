//! Writes the client need not wait for: device cursor acks and last-seen times.
//!
//! Standalone: straight to the store (through its group commit). Cluster: produced to the
//! side topic, keyed by user, and persisted by the storage workers; the gateway never waits
//! on PostgreSQL for them.

use async_trait::async_trait;
use std::sync::Arc;
use switchboard_core::ids::{DeviceId, MessageId, UserId};
use switchboard_core::store::{MessageStore, StoreError};

/// Where lag-tolerant writes go.
#[async_trait]
pub trait LaggingWrites: Send + Sync + 'static {
    /// A device acknowledged everything up to `message`.
    async fn cursor(&self, user: UserId, device: &DeviceId, message: MessageId) -> Result<(), StoreError>;
    /// A user's last connection closed at `at_ms`.
    async fn last_seen(&self, user: UserId, at_ms: i64) -> Result<(), StoreError>;
}

/// Standalone: write through the store.
pub struct DirectWrites(pub Arc<dyn MessageStore>);

#[async_trait]
impl LaggingWrites for DirectWrites {
    async fn cursor(&self, user: UserId, device: &DeviceId, message: MessageId) -> Result<(), StoreError> {
        self.0.advance_cursor(user, device, message).await
    }

    async fn last_seen(&self, user: UserId, at_ms: i64) -> Result<(), StoreError> {
        self.0.set_last_seen(user, at_ms).await
    }
}

/// Cluster: produce to the side topic for the storage workers.
#[cfg(feature = "cluster")]
pub struct SideWrites(pub storage_workers::side::SideProducer);

#[cfg(feature = "cluster")]
#[async_trait]
impl LaggingWrites for SideWrites {
    async fn cursor(&self, user: UserId, device: &DeviceId, message: MessageId) -> Result<(), StoreError> {
        let w = storage_workers::side::SideWrite::Cursor { user, device: device.clone(), message };
        self.0.send(&w).await.map(|_| ()).map_err(|e| StoreError::Backend(Box::new(e)))
    }

    async fn last_seen(&self, user: UserId, at_ms: i64) -> Result<(), StoreError> {
        let w = storage_workers::side::SideWrite::LastSeen { user, at_ms };
        self.0.send(&w).await.map(|_| ()).map_err(|e| StoreError::Backend(Box::new(e)))
    }
}
