//! The full-text index: a database file of its own (`search.db` beside `switchboard.db`),
//! brought up to date by a thread of its own ([`Indexer`]).
//!
//! Indexing (tokenizing each message, merging index segments) was about a sixth of the
//! writer thread's time, and that thread is the ceiling of a saturating 1:1 load. In the same
//! file the index shared the writer's one write lock, so it could only run between two
//! commits; in its own file it runs beside them (benches/RESULTS.md, "Update at `d351d9b`").
//! The indexer reads new messages from the store, attached read-only, and records how far it
//! got (`search_state`) in the same transaction as the index rows, so a crash loses nothing.
//! The index is derived data: its file is synced at checkpoints only, and an index ahead of
//! the store (a store restored from an older copy) is rebuilt.

use super::pool::backend;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use switchboard_core::metrics::names;
use switchboard_core::store::StoreError;
use tokio::sync::oneshot;

/// The index's file name, beside the store's.
pub const FILE: &str = "search.db";

/// How often the indexer looks for new messages while no search asks it to.
const EVERY: Duration = Duration::from_millis(200);

/// Most messages indexed in one transaction (a long backlog, as after an upgrade, is worked
/// off in several).
const CHUNK: i64 = 65_536;

/// Migration `i` brings `search.db` from version `i` to `i + 1` (`PRAGMA user_version`).
///
/// The index keeps no positions (`detail=none`): phrase and NEAR queries are impossible, and
/// search never makes one (`messages::fts_query` cuts a query into single tokens with the same
/// tokenizer), and indexing costs a quarter fewer instructions (benches/MICRO.md).
pub const MIGRATIONS: &[&str] = &[r#"
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='', columnsize=0, detail=none, tokenize='unicode61');
INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 16);
CREATE TABLE search_state (
    id           INTEGER PRIMARY KEY CHECK (id = 0),
    last_indexed INTEGER NOT NULL
);
INSERT INTO search_state (id, last_indexed) VALUES (0, 0);
"#];

/// A request to index everything committed so far, answered when done.
type CatchUp = oneshot::Sender<Result<(), StoreError>>;

/// The indexer thread's handle; the thread stops when this is dropped.
pub struct Indexer {
    tx: mpsc::Sender<CatchUp>,
}

impl Indexer {
    /// Opens (creating and migrating) the index beside `store` and starts its thread.
    ///
    /// # Errors
    /// When the index cannot be opened, migrated or checked against the store.
    pub fn spawn(store: &Path) -> Result<Self, StoreError> {
        let conn = open(store).map_err(backend)?;
        let (tx, rx) = mpsc::channel::<CatchUp>();
        std::thread::Builder::new()
            .name("sqlite-search".into())
            .spawn(move || indexer_loop(&conn, &rx))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { tx })
    }

    /// Returns once every message committed before the call is in the index (a search sees
    /// what was sent before it).
    ///
    /// # Errors
    /// An indexing error, or [`StoreError::Unavailable`] if the thread has stopped.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx.send(done_tx).map_err(|_| StoreError::Unavailable("search indexer stopped"))?;
        done_rx.await.map_err(|_| StoreError::Unavailable("search indexer stopped"))?
    }
}

/// The index's path for the store at `store`.
fn path_beside(store: &Path) -> PathBuf {
    store.with_file_name(FILE)
}

/// Readies a reader connection for searches, once: attaches the index beside `store` as
/// `search` and creates the query scratch tables ([`create_query_scratch`]). On first use, so
/// that readers which never serve a search never open the index or load its schema (idle runs,
/// 18,000 sessions: 534-594 B per session with this, 556-602 B attached at open, 523-587 B
/// before the index had its own file; the spread is run-to-run noise on this machine).
///
/// # Errors
/// When the index cannot be attached.
pub fn attach(conn: &Connection, store: &Path) -> Result<(), StoreError> {
    let attached = conn
        .prepare_cached("SELECT 1 FROM pragma_database_list WHERE name = 'search'")
        .and_then(|mut st| st.exists([]))
        .map_err(backend)?;
    if !attached {
        conn.execute("ATTACH DATABASE ?1 AS search", [path_beside(store).to_string_lossy()]).map_err(backend)?;
        create_query_scratch(conn)?;
    }
    Ok(())
}

/// Creates, in `conn`'s temporary schema, the table a search query is tokenized through
/// (`temp.query_words`, with the index's tokenizer: see [`MIGRATIONS`]) and its vocabulary
/// (`temp.query_vocab`), read by `messages::fts_query`.
///
/// # Errors
/// When the tables cannot be created.
pub fn create_query_scratch(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words USING fts5(t, content='', detail=none, tokenize='unicode61');
         CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_vocab USING fts5vocab(temp, query_words, 'row');",
    )
    .map_err(backend)
}

/// How far the index goes and the newest message in the store.
fn progress(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached("SELECT s.last_indexed, (SELECT COALESCE(MAX(id), 0) FROM store.messages) FROM search_state s WHERE s.id = 0")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
}

/// `path` as an SQLite URI that opens it read-only.
fn read_only_uri(path: &Path) -> String {
    let p = path.to_string_lossy().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
    format!("file:{p}?mode=ro")
}

/// The indexer's connection: `search.db` (WAL, synced at checkpoints) with the store attached
/// read-only as `store`.
fn open(store: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path_beside(store))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    super::schema::apply(&mut conn, MIGRATIONS, "search index")?;
    conn.execute("ATTACH DATABASE ?1 AS store", [read_only_uri(store)])?;
    let (indexed, newest) = progress(&conn)?;
    if indexed > newest {
        tracing::warn!(indexed, newest, "search index is ahead of the store; rebuilding it");
        conn.execute_batch(
            "BEGIN; INSERT INTO messages_fts(messages_fts) VALUES ('delete-all');
             UPDATE search_state SET last_indexed = 0 WHERE id = 0; COMMIT;",
        )?;
    }
    Ok(conn)
}

fn indexer_loop(conn: &Connection, rx: &mpsc::Receiver<CatchUp>) {
    loop {
        let mut waiting = match rx.recv_timeout(EVERY) {
            Ok(first) => vec![first],
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        waiting.extend(rx.try_iter());
        let outcome = catch_up(conn);
        if let Err(error) = &outcome {
            tracing::error!(%error, "search indexing failed");
        }
        for w in waiting {
            let _ = w.send(outcome.as_ref().map(|_| ()).map_err(|_| StoreError::Unavailable("search indexing failed")));
        }
    }
    tracing::info!("search indexer stopped");
}

/// Indexes, chunk by chunk, every message committed before the call.
fn catch_up(conn: &Connection) -> Result<(), StoreError> {
    while index_chunk(conn)? {}
    Ok(())
}

/// Adds the messages of the next [`CHUNK`] ids not yet indexed, oldest first, in one
/// transaction with the progress mark; true if the store has newer ones still. A deferred
/// transaction: it writes `search.db` only, and reads the store from a snapshot without
/// holding up its writer.
fn index_chunk(conn: &Connection) -> Result<bool, StoreError> {
    let started = Instant::now();
    conn.execute_batch("BEGIN").map_err(backend)?;
    let out = index_chunk_in_transaction(conn);
    let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(backend)?;
    let (added, more) = out?;
    if added > 0 {
        metrics::histogram!(names::SEARCH_INDEX_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(names::SEARCH_INDEXED).increment(added as u64);
    }
    Ok(more)
}

/// (messages added, as the insert counts them; whether the store has newer ones still).
fn index_chunk_in_transaction(conn: &Connection) -> Result<(usize, bool), StoreError> {
    let (done, newest) = progress(conn).map_err(backend)?;
    if newest <= done {
        return Ok((0, false));
    }
    let upto = newest.min(done + CHUNK);
    let added = conn
        .prepare_cached("INSERT INTO messages_fts(rowid, body) SELECT id, body FROM store.messages WHERE id > ?1 AND id <= ?2")
        .and_then(|mut st| st.execute(params![done, upto]))
        .map_err(backend)?;
    conn.prepare_cached("UPDATE search_state SET last_indexed = ?1 WHERE id = 0")
        .and_then(|mut st| st.execute([upto]))
        .map_err(backend)?;
    Ok((added, upto < newest))
}
