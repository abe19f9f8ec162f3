//! Switchboard storage.
//!
//! - [`sqlite::SqliteStore`]: the embedded `MessageStore` of standalone mode — SQLite in WAL mode,
//!   one writer thread with group commit (a burst of writes becomes one transaction), a pool of
//!   read connections, FTS5 for search, versioned migrations.
//! - `postgres::PgStore` (feature `postgres`): the `MessageStore` of cluster mode — PostgreSQL
//!   through a connection pool, all tables in one configurable schema, appends serialized by an
//!   advisory lock so message ids grow in commit order, full-text search over a GIN index,
//!   versioned migrations.
//! - [`media::MediaStore`]: media bytes through `object_store` (local filesystem now; S3 is a
//!   config change).
//! - `contract` (tests, or feature `testing`): the behaviour every `MessageStore` must have,
//!   run against both stores with `message_store_contract!`.
//!
//! In cluster mode this crate will also hold the storage-worker binary that persists what the
//! router emits to PostgreSQL.

#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod media;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod side;
pub mod sqlite;
#[cfg(all(feature = "postgres", feature = "kafka"))]
pub mod worker;
