//! The embedded `MessageStore`: SQLite in WAL mode with group commit.
//!
//! Writes go to one writer thread ([`pool::Writer`]) that batches whatever is queued into a
//! single transaction; reads use a small pool of read-only connections off the runtime; the
//! full-text index lives in a file of its own, fed by its own thread ([`search::Indexer`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), switchboard_core::store::StoreError> {
//! use storage_workers::sqlite::SqliteStore;
//! use switchboard_core::config::StorageConfig;
//! let store = SqliteStore::open(std::path::Path::new("./data"), &StorageConfig::default())?;
//! # Ok(()) }
//! ```

mod memory;
mod messages;
pub mod pool;
pub mod schema;
pub mod search;
mod users;

use async_trait::async_trait;
use pool::{backend, Readers, Writer};
use std::path::Path;
use switchboard_core::config::StorageConfig;
use switchboard_core::ids::{ConversationId, DeviceId, GroupId, MessageId, UserId};
use switchboard_core::protocol::{MessageView, ReceiptStatus};
use switchboard_core::store::{
    Account, Appended, Backlog, ChatSummary, Group, Media, MessageStore, NewMessage, NewUser, Page, ReceiptNotices,
    RefreshOutcome, StoreError, SyncFrom, User, UserLookup, UserPatch,
};

/// SQLite-backed store of standalone mode.
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    indexer: search::Indexer,
    /// `switchboard.db`.
    path: std::path::PathBuf,
    _checkpointer: pool::Checkpointer,
}

/// `query_row` through the connection's statement cache: reads on the connect path (device
/// cursor, names, marks) would otherwise parse their SQL on every call.
pub(crate) trait QueryCached {
    /// [`rusqlite::Connection::query_row`] with a cached statement.
    fn query_row_cached<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>;
}

impl QueryCached for rusqlite::Connection {
    fn query_row_cached<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

impl SqliteStore {
    /// Opens (creating and migrating) `<data_dir>/switchboard.db` and its full-text index,
    /// `<data_dir>/search.db` ([`search`]).
    ///
    /// # Errors
    /// When the directory or database cannot be created, configured or migrated.
    pub fn open(data_dir: &Path, cfg: &StorageConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let path = data_dir.join("switchboard.db");
        let mut conn = pool::open_writer(&path, cfg.durability).map_err(backend)?;
        schema::migrate(&mut conn).map_err(backend)?;
        let wal = pool::WalLength::default();
        let checkpointer = pool::Checkpointer::spawn(&path, cfg.durability, wal.clone()).map_err(backend)?;
        let writer = Writer::spawn(conn, cfg.batch_max, wal);
        let indexer = search::Indexer::spawn(&path)?;
        let readers = Readers::new(&path, cfg.readers);
        Ok(Self { writer, readers, indexer, path, _checkpointer: checkpointer })
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.writer.write(move |c| users::create_user(c, &user)).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.readers.read(move |c| users::user(c, id)).await
    }

    async fn credentials(&self, email: &str) -> Result<Option<(User, String)>, StoreError> {
        let email = email.to_owned();
        self.readers.read(move |c| users::credentials(c, &email)).await
    }

    async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User, StoreError> {
        self.writer.write(move |c| users::update_user(c, id, &patch)).await
    }

    async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        self.writer.write(move |c| users::delete_user(c, id)).await
    }

    async fn deleted_users(&self) -> Result<Vec<UserId>, StoreError> {
        self.readers.read(users::deleted_users).await
    }

    async fn account(&self, who: UserLookup) -> Result<Option<Account>, StoreError> {
        self.readers.read(move |c| users::account(c, &who)).await
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<(), StoreError> {
        self.writer.write(move |c| users::set_disabled(c, id, disabled)).await
    }

    async fn direct_peers(&self, user: UserId) -> Result<Vec<UserId>, StoreError> {
        self.readers.read(move |c| messages::direct_peers(c, user)).await
    }

    async fn set_last_seen(&self, id: UserId, at_ms: i64) -> Result<(), StoreError> {
        self.writer.write(move |c| users::set_last_seen(c, id, at_ms)).await
    }

    async fn save_refresh(&self, jti: &str, user: UserId, device: &DeviceId, exp: i64) -> Result<(), StoreError> {
        let (jti, device) = (jti.to_owned(), device.clone());
        self.writer.write(move |c| users::save_refresh(c, &jti, user, &device, exp)).await
    }

    async fn use_refresh(&self, jti: &str) -> Result<RefreshOutcome, StoreError> {
        let jti = jti.to_owned();
        self.writer.write(move |c| users::use_refresh(c, &jti)).await
    }

    async fn create_group(&self, name: &str, creator: UserId) -> Result<Group, StoreError> {
        let name = name.to_owned();
        self.writer.write(move |c| users::create_group(c, &name, creator)).await
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>, StoreError> {
        self.readers.read(move |c| users::group(c, id)).await
    }

    async fn add_member(&self, id: GroupId, user: UserId) -> Result<Group, StoreError> {
        self.writer.write(move |c| users::add_member(c, id, user)).await
    }

    async fn remove_member(&self, id: GroupId, user: UserId) -> Result<Group, StoreError> {
        self.writer.write(move |c| users::remove_member(c, id, user)).await
    }

    async fn append(&self, batch: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let n = batch.len();
        let batch = std::sync::Arc::new(batch);
        // Fast path: one `messages::Batch` for the whole job. Refusals happen in its checks,
        // before anything of their message is written, so the batch needs no savepoint per
        // message. A write that fails fails the whole job, which the writer rolls back (its
        // savepoint, or the transaction when the job is alone in it)...
        let all = batch.clone();
        let res = self
            .writer
            .write(move |c| {
                let mut batch = messages::Batch::new(c);
                let mut out = Vec::with_capacity(all.len());
                for m in all.iter() {
                    out.push(batch.append(m)?);
                }
                batch.finish()?;
                Ok(out)
            })
            .await;
        let res = match res {
            Ok(v) => return v,
            // ...and the batch is tried again with one savepoint per message, so the failing
            // message does not take its neighbours down.
            Err(StoreError::Backend(error)) => {
                tracing::warn!(%error, messages = n, "append batch failed; retrying message by message");
                self.writer
                    .write(move |c| {
                        Ok(batch
                            .iter()
                            .map(|m| {
                                c.execute_batch("SAVEPOINT msg").map_err(backend)?;
                                let r = messages::append(c, m);
                                let end = if r.is_ok() { "RELEASE msg" } else { "ROLLBACK TO msg; RELEASE msg" };
                                c.execute_batch(end).map_err(backend)?;
                                r
                            })
                            .collect::<Vec<_>>())
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(v) => v,
            Err(e) => {
                let code = e.to_string();
                tracing::error!(error = %code, "append batch failed");
                (0..n).map(|_| Err(StoreError::Unavailable("append failed"))).collect()
            }
        }
    }

    async fn message(&self, id: MessageId) -> Result<Option<(MessageView, ConversationId)>, StoreError> {
        self.readers.read(move |c| messages::message(c, id)).await
    }

    async fn history(&self, conv: ConversationId, viewer: UserId, before: Option<i64>, limit: usize) -> Result<Page<MessageView>, StoreError> {
        self.readers.read(move |c| messages::history(c, conv, viewer, before, limit)).await
    }

    async fn chats(&self, user: UserId, cursor: Option<&str>, limit: usize) -> Result<Page<ChatSummary>, StoreError> {
        let cursor = cursor.map(str::to_owned);
        self.readers.read(move |c| messages::chats(c, user, cursor.as_deref(), limit)).await
    }

    async fn search(&self, user: UserId, query: &str, limit: usize) -> Result<Vec<MessageView>, StoreError> {
        // A search sees every message committed before it: what is not indexed yet is first.
        self.indexer.catch_up().await?;
        let (query, path) = (query.to_owned(), self.path.clone());
        self.readers
            .read(move |c| {
                search::attach(c, &path)?;
                messages::search(c, user, &query, limit)
            })
            .await
    }

    async fn receipt(&self, user: UserId, device: &DeviceId, message: MessageId, status: ReceiptStatus) -> Result<ReceiptNotices, StoreError> {
        let device = device.clone();
        self.writer.write(move |c| messages::receipt(c, user, &device, message, status)).await
    }

    async fn advance_cursor(&self, user: UserId, device: &DeviceId, message: MessageId) -> Result<(), StoreError> {
        let device = device.clone();
        self.writer.write(move |c| messages::advance_cursor(c, user, &device, message)).await
    }

    async fn backlog(&self, user: UserId, device: &DeviceId, from: SyncFrom, limit: usize) -> Result<Backlog, StoreError> {
        let device = device.clone();
        self.readers.read(move |c| messages::backlog(c, user, &device, from, limit)).await
    }

    async fn save_media(&self, media: Media) -> Result<(), StoreError> {
        self.writer.write(move |c| users::save_media(c, &media)).await
    }

    async fn media_for(&self, user: UserId, media_id: &str) -> Result<Option<Media>, StoreError> {
        let id = media_id.to_owned();
        self.readers.read(move |c| users::media_for(c, user, &id)).await
    }
}

#[cfg(test)]
mod tests;
