//! One writer thread with group commit, and a pool of read connections.
//!
//! Every write is a job sent to the writer thread. The thread takes the first waiting job and
//! then every other job already queued (up to `batch_max`), runs them in one transaction, each
//! inside its own savepoint so one failing job does not undo the others, commits once (one
//! fsync), and only then answers each caller. A burst of N sends thus costs one commit.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switchboard_core::config::Durability;
use switchboard_core::metrics::names;
use switchboard_core::store::StoreError;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Runs inside the transaction; returns what to do once the commit outcome is known.
type Job = Box<dyn FnOnce(&Connection) -> Box<dyn FnOnce(bool) + Send> + Send>;

/// Maps a SQLite error to a backend error, keeping the cause.
pub fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// The writer thread's handle.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn spawn(conn: Connection, batch_max: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(batch_max * 4);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, batch_max))
            .expect("spawning the writer thread");
        Self { tx }
    }

    /// Runs `f` in the next group-commit transaction and returns its result after the commit.
    ///
    /// # Errors
    /// `f`'s own error (its savepoint is rolled back), [`StoreError::Backend`] if the commit
    /// failed, [`StoreError::Unavailable`] if the writer has stopped.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |committed| {
                let out = match result {
                    Ok(_) if !committed => Err(StoreError::Unavailable("commit failed")),
                    other => other,
                };
                let _ = done_tx.send(out);
            })
        });
        self.tx.send(job).await.map_err(|_| StoreError::Unavailable("writer stopped"))?;
        done_rx.await.map_err(|_| StoreError::Unavailable("writer stopped"))?
    }
}

fn in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT job").map_err(backend)?;
    let result = f(conn);
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    conn.execute_batch(end).map_err(backend)?;
    result
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut jobs = Vec::with_capacity(batch_max);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < batch_max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Run nothing: a job outside a transaction would commit on its own while its
            // caller is told it failed. Dropping a job drops its reply sender, so the caller
            // gets `Unavailable` at once.
            tracing::error!(%error, jobs = jobs.len(), "cannot begin a transaction");
            jobs.clear();
            continue;
        }
        let finishers: Vec<_> = jobs.drain(..).map(|job| job(&conn)).collect();
        let committed = conn.execute_batch("COMMIT").is_ok();
        if !committed {
            tracing::error!(jobs = finishers.len(), "group commit failed; rolling back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        metrics::histogram!(names::STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(names::STORE_COMMIT_BATCH).record(finishers.len() as f64);
        for finish in finishers {
            finish(committed);
        }
    }
    tracing::info!("sqlite writer stopped");
}

/// A fixed pool of read-only connections; reads run in `spawn_blocking`.
///
/// At most `size` reads run at once and at most `size` connections ever exist: a connect
/// storm queues here instead of opening a connection (with its own page cache) and a
/// blocking thread per request. Measured: unbounded, a 5,000-session ramp peaked at ~51 MB of
/// SQLite allocations; bounded, the page caches stay at `size` × ~2 MB at most.
pub struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// A pool of up to `size` connections to `path`.
    pub fn new(path: &Path, size: usize) -> Self {
        Self { path: path.to_owned(), idle: Arc::default(), permits: Arc::new(Semaphore::new(size.max(1))) }
    }

    /// Runs `f` on a read connection off the async runtime.
    ///
    /// # Errors
    /// `f`'s error, or [`StoreError::Backend`] when no connection can be opened.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Unavailable("reader pool closed"))?;
        let idle = self.idle.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = idle.lock().map(|mut v| v.pop()).unwrap_or(None);
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&path).map_err(backend)?,
            };
            let out = f(&conn);
            if let Ok(mut v) = idle.lock() {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|_| StoreError::Unavailable("reader task failed"))?
    }
}

/// Opens the writer connection with WAL and the chosen durability.
///
/// # Errors
/// When the file cannot be opened or configured.
pub fn open_writer(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Savepoints (one per write job) journal every page they touch: in memory, not in a temp
    // file (the store bench measured the file writes at about a fifth of an append).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The writer touches the hot ends of every index; 32 MiB of page cache keeps them.
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}
