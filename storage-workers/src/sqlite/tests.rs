//! The `MessageStore` contract ([`crate::contract`]) run against [`SqliteStore`]: every case
//! opens a fresh store in its own temporary directory; the durability case reopens that
//! directory.

use super::SqliteStore;
use std::sync::Arc;
use switchboard_core::config::StorageConfig;
use switchboard_core::store::MessageStore;
use tempfile::TempDir;

/// A fresh store in a fresh directory (the `TempDir` keeps the directory for the test).
async fn open() -> (TempDir, Arc<dyn MessageStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), &StorageConfig::default()).expect("open store");
    (dir, Arc::new(store))
}

/// The store in `dir` again, as after a restart.
async fn reopen(dir: &TempDir) -> Arc<dyn MessageStore> {
    Arc::new(SqliteStore::open(dir.path(), &StorageConfig::default()).expect("reopen store"))
}

crate::message_store_contract!(open, reopen);
