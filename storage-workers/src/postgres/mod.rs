//! The cluster-mode `MessageStore`: PostgreSQL through a pool of tokio-postgres connections.
//!
//! Same schema, same queries and same semantics as [`crate::sqlite`]; the shared contract
//! suite (`contract`, feature `testing`) runs against both.
//!
//! - **Schema.** Every table lives in one schema, set as each connection's `search_path`
//!   at connect time, so several stores (or test runs) can share a database. [`PgStore::connect`]
//!   creates the schema if it is missing and applies [`schema::MIGRATIONS`], tracked in its
//!   `schema_migrations` table.
//! - **Pooling.** deadpool-postgres, `pool_size` connections at most, opened lazily;
//!   waiting for one, opening one and checking a returned one are each bounded by
//!   [`pool::POOL_TIMEOUT`], past which a call fails with `Unavailable` (retryable) rather
//!   than queueing forever. Statements are prepared once per connection.
//! - **Appends.** Message ids must grow in commit order: a reader that has seen id N must
//!   never later find a newly committed id below N ("all messages after id N" is the sync
//!   cursor). Ids come from a sequence, which hands out numbers at insert time, not at commit,
//!   so concurrent appending transactions could commit out of id order. Each
//!   [`MessageStore::append`] therefore runs as one transaction that first takes
//!   `pg_advisory_xact_lock(<append class>, hashtext(schema))`: appends to one schema are
//!   serialized across every process and connection, and the lock is held until the commit.
//!   Within a process a mutex is taken first, so at most one pooled connection per process
//!   waits on the database lock and the others stay free for reads. We chose the advisory
//!   lock over the SQLite store's single writer task because it also holds when several
//!   router or storage-worker processes write to one database; the group commit that task
//!   gives SQLite comes here from the router, which already hands `append` its whole queue
//!   as one batch (one transaction, one WAL flush). Inside the transaction each message has
//!   its own savepoint, so a refused message does not fail the others.
//! - **Other writes** (receipts, cursors, membership, tokens) run concurrently in their own
//!   transactions; where SQLite relied on its single writer, a row lock (`FOR UPDATE`) gives
//!   the same outcome (a refresh token is spent once; a member joins wholly before or after a
//!   concurrent message).
//! - **Search.** PostgreSQL full-text search with the `simple` configuration (lower-cased
//!   words, no stemming, no stop words) over a GIN expression index
//!   ([`schema::FTS_DOCUMENT`]); the query is `plainto_tsquery` over the words of the user's
//!   input (see `messages::search_words`), so input can produce neither SQL nor tsquery syntax,
//!   joined to the caller's inbox.
//! - **Errors.** A lost, refused or exhausted connection is [`StoreError::Unavailable`]
//!   (retryable, cause logged); unique e-mail / phone violations are `Conflict("email")` /
//!   `Conflict("phoneNumber")`; anything else is [`StoreError::Backend`] with the cause.
//!
//! ```no_run
//! # async fn f() -> Result<(), switchboard_core::store::StoreError> {
//! use storage_workers::postgres::PgStore;
//! let store = PgStore::connect("postgres://switchboard@db.internal/switchboard", "switchboard", 16).await?;
//! # Ok(()) }
//! ```

mod messages;
pub mod pool;
pub mod schema;
mod users;

use async_trait::async_trait;
use deadpool_postgres::{Client, Pool, Transaction};
use pool::{commit_err, db, pool_err, SchemaName};
use std::time::Instant;
use switchboard_core::ids::{ConversationId, DeviceId, GroupId, MessageId, UserId};
use switchboard_core::metrics::names;
use switchboard_core::protocol::{MessageView, ReceiptStatus};
use switchboard_core::store::{
    Account, Appended, Backlog, ChatSummary, Group, Media, MessageStore, NewMessage, NewUser, Page, ReceiptNotices,
    RefreshOutcome, StoreError, SyncFrom, User, UserLookup, UserPatch,
};

/// Class of the advisory lock that serializes appends to one schema (the object id is
/// `hashtext(schema)`). "SBAP" in ASCII.
const APPEND_LOCK: i32 = 0x5342_4150;

/// PostgreSQL-backed store of cluster mode.
pub struct PgStore {
    pool: Pool,
    schema: SchemaName,
    /// Taken before an append asks the pool for a connection: appends queue here, in this
    /// process, instead of each holding a connection while waiting on the advisory lock.
    append_gate: tokio::sync::Mutex<()>,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or key=value string) with up to `pool_size`
    /// connections whose `search_path` is `schema`; creates the schema if missing and applies
    /// pending migrations.
    ///
    /// `schema` must match `[a-z_][a-z0-9_]*`. The role needs `CREATE` on the database to
    /// create the schema, or on the schema to migrate it. TLS is not supported: use a trusted
    /// network or a local socket. Any `options` in the URL are kept; `search_path` is ours.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad URL or schema name, or a schema newer than this
    /// binary; [`StoreError::Unavailable`] when the server cannot be reached;
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn connect(url: &str, schema: &str, pool_size: usize) -> Result<Self, StoreError> {
        let schema = SchemaName::new(schema)?;
        let pool = pool::build(url, &schema, pool_size)?;
        let mut conn = pool.get().await.map_err(pool_err)?;
        schema::migrate(&mut conn, &schema).await?;
        Ok(Self { pool, schema, append_gate: tokio::sync::Mutex::new(()) })
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        self.schema.as_str()
    }

    async fn conn(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Runs the whole batch in one transaction under the append lock. `Err` means nothing
    /// was stored.
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&APPEND_LOCK, &self.schema.as_str()])
            .await
            .map_err(db)?;
        // A refused message writes nothing (`append_message` checks before it writes).
        let out = messages::append_batch(&tx, batch).await?;
        tx.commit().await.map_err(commit_err)?;
        Ok(out)
    }
}

/// Opens a transaction on a pooled connection.
async fn begin(conn: &mut Client) -> Result<Transaction<'_>, StoreError> {
    conn.transaction().await.map_err(db)
}

/// Commits `tx` if `r` is `Ok`; on `Err`, dropping `tx` rolls it back.
async fn finish<R>(tx: Transaction<'_>, r: Result<R, StoreError>) -> Result<R, StoreError> {
    let v = r?;
    tx.commit().await.map_err(commit_err)?;
    Ok(v)
}

#[async_trait]
impl MessageStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        users::create_user(&self.conn().await?, &user).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        users::user(&self.conn().await?, id).await
    }

    async fn credentials(&self, email: &str) -> Result<Option<(User, String)>, StoreError> {
        users::credentials(&self.conn().await?, email).await
    }

    async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User, StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = users::update_user(&tx, id, &patch).await;
        finish(tx, r).await
    }

    async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = users::delete_user(&tx, id).await;
        finish(tx, r).await
    }

    async fn deleted_users(&self) -> Result<Vec<UserId>, StoreError> {
        users::deleted_users(&self.conn().await?).await
    }

    async fn account(&self, who: UserLookup) -> Result<Option<Account>, StoreError> {
        users::account(&self.conn().await?, &who).await
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<(), StoreError> {
        users::set_disabled(&self.conn().await?, id, disabled).await
    }

    async fn direct_peers(&self, user: UserId) -> Result<Vec<UserId>, StoreError> {
        messages::direct_peers(&self.conn().await?, user).await
    }

    async fn set_last_seen(&self, id: UserId, at_ms: i64) -> Result<(), StoreError> {
        users::set_last_seen(&self.conn().await?, id, at_ms).await
    }

    async fn save_refresh(&self, jti: &str, user: UserId, device: &DeviceId, exp: i64) -> Result<(), StoreError> {
        users::save_refresh(&self.conn().await?, jti, user, device, exp).await
    }

    async fn use_refresh(&self, jti: &str) -> Result<RefreshOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = users::use_refresh(&tx, jti).await;
        finish(tx, r).await
    }

    async fn create_group(&self, name: &str, creator: UserId) -> Result<Group, StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = users::create_group(&tx, name, creator).await;
        finish(tx, r).await
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>, StoreError> {
        users::group(&self.conn().await?, id).await
    }

    async fn add_member(&self, id: GroupId, user: UserId) -> Result<Group, StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = users::add_member(&tx, id, user).await;
        finish(tx, r).await
    }

    async fn remove_member(&self, id: GroupId, user: UserId) -> Result<Group, StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = users::remove_member(&tx, id, user).await;
        finish(tx, r).await
    }

    async fn append(&self, batch: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let _gate = self.append_gate.lock().await;
        let started = Instant::now();
        let out = self.append_batch(&batch).await;
        metrics::histogram!(names::STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        match out {
            Ok(v) => v,
            // An unexpected error lost the whole transaction: each message is tried again in a
            // transaction of its own, so the failing one does not take its neighbours down.
            Err(StoreError::Backend(error)) if batch.len() > 1 => {
                tracing::warn!(%error, messages = batch.len(), "append batch failed; retrying message by message");
                let mut out = Vec::with_capacity(batch.len());
                for m in &batch {
                    out.push(match self.append_batch(std::slice::from_ref(m)).await {
                        Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Unavailable("append failed"))),
                        Err(e) => Err(e),
                    });
                }
                out
            }
            Err(error) => {
                tracing::error!(%error, messages = batch.len(), "append batch failed");
                batch.iter().map(|_| Err(StoreError::Unavailable("append failed"))).collect()
            }
        }
    }

    async fn message(&self, id: MessageId) -> Result<Option<(MessageView, ConversationId)>, StoreError> {
        messages::message(&self.conn().await?, id).await
    }

    async fn history(&self, conv: ConversationId, viewer: UserId, before: Option<i64>, limit: usize) -> Result<Page<MessageView>, StoreError> {
        messages::history(&self.conn().await?, conv, viewer, before, limit).await
    }

    async fn chats(&self, user: UserId, cursor: Option<&str>, limit: usize) -> Result<Page<ChatSummary>, StoreError> {
        messages::chats(&self.conn().await?, user, cursor, limit).await
    }

    async fn search(&self, user: UserId, query: &str, limit: usize) -> Result<Vec<MessageView>, StoreError> {
        messages::search(&self.conn().await?, user, query, limit).await
    }

    async fn receipt(&self, user: UserId, device: &DeviceId, message: MessageId, status: ReceiptStatus) -> Result<ReceiptNotices, StoreError> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let r = messages::receipt(&tx, user, device, message, status).await;
        finish(tx, r).await
    }

    async fn advance_cursor(&self, user: UserId, device: &DeviceId, message: MessageId) -> Result<(), StoreError> {
        messages::advance_cursor(&self.conn().await?, user, device, message).await
    }

    async fn backlog(&self, user: UserId, device: &DeviceId, from: SyncFrom, limit: usize) -> Result<Backlog, StoreError> {
        messages::backlog(&self.conn().await?, user, device, from, limit).await
    }

    async fn save_media(&self, media: Media) -> Result<(), StoreError> {
        users::save_media(&self.conn().await?, &media).await
    }

    async fn media_for(&self, user: UserId, media_id: &str) -> Result<Option<Media>, StoreError> {
        users::media_for(&self.conn().await?, user, media_id).await
    }
}
