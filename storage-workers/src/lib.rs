//! Switchboard storage.
//!
//! - [`sqlite::SqliteStore`]: the embedded `MessageStore` of standalone mode — SQLite in WAL mode,
//!   one writer thread with group commit (a burst of writes becomes one transaction), a pool of
//!   read connections, FTS5 for search, versioned migrations.
//! - [`media::MediaStore`]: media bytes through `object_store` (local filesystem now; S3 is a
//!   config change).
//!
//! In cluster mode this crate will also hold the storage-worker binary that persists what the
//! router emits to PostgreSQL.

pub mod media;
pub mod sqlite;
