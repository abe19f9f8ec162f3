//! One writer thread with group commit, and a pool of read connections.
//!
//! Every write is a job sent to the writer thread. The thread takes the first waiting job and
//! then every other job already queued (up to `batch_max`), runs them in one transaction, each
//! inside its own savepoint so one failing job does not undo the others (a job alone needs
//! none: if it fails the transaction is rolled back), commits once (one fsync), and only then
//! answers each caller. A burst of N sends thus costs one commit.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switchboard_core::config::Durability;
use switchboard_core::metrics::names;
use switchboard_core::store::StoreError;
use tokio::sync::{mpsc, oneshot};

/// Runs inside the transaction (`alone`: the only job in it, so without a savepoint of its
/// own); returns whether it succeeded and what to do once the commit outcome is known.
type Job = Box<dyn FnOnce(&Connection, bool) -> (bool, Box<dyn FnOnce(bool) + Send>) + Send>;

/// Maps a SQLite error to a backend error, keeping the cause.
pub fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// The writer thread's handle.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`; `wal` is the WAL's length as the [`Checkpointer`]
    /// last saw it.
    pub fn spawn(conn: Connection, batch_max: usize, wal: WalLength) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(batch_max * 4);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, batch_max, &wal))
            .expect("spawning the writer thread");
        Self { tx }
    }

    /// Runs `f` in the next group-commit transaction and returns its result after the commit.
    ///
    /// # Errors
    /// `f`'s own error (what it wrote is rolled back: its savepoint, or the transaction when
    /// it was the only job), [`StoreError::Backend`] if the commit
    /// failed, [`StoreError::Unavailable`] if the writer has stopped.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, alone| {
            let result = if alone { f(conn) } else { in_savepoint(conn, f) };
            let ok = result.is_ok();
            let reply: Box<dyn FnOnce(bool) + Send> = Box::new(move |committed| {
                let out = match result {
                    Ok(_) if !committed => Err(StoreError::Unavailable("commit failed")),
                    other => other,
                };
                let _ = done_tx.send(out);
            });
            (ok, reply)
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

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, batch_max: usize, wal: &WalLength) {
    let mut jobs = Vec::with_capacity(batch_max);
    let mut last_reset_try: Option<Instant> = None;
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
        // A job alone in its transaction runs without a savepoint, and if it fails the whole
        // transaction is rolled back instead: the same outcome, without journalling every page
        // the job touches in memory (~5 % of the writer's time at saturation, where the
        // router's one append job per batch is usually alone).
        let alone = jobs.len() == 1;
        let mut all_ok = true;
        let finishers: Vec<_> = jobs
            .drain(..)
            .map(|job| {
                let (ok, finish) = job(&conn, alone);
                all_ok &= ok;
                finish
            })
            .collect();
        let committed = if alone && !all_ok {
            let _ = conn.execute_batch("ROLLBACK");
            false
        } else {
            let committed = conn.execute_batch("COMMIT").is_ok();
            if !committed {
                tracing::error!(jobs = finishers.len(), "group commit failed; rolling back");
                let _ = conn.execute_batch("ROLLBACK");
            }
            committed
        };
        metrics::histogram!(names::STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(names::STORE_COMMIT_BATCH).record(finishers.len() as f64);
        for finish in finishers {
            finish(committed);
        }
        if wal.frames() >= WAL_RESET_FRAMES && last_reset_try.is_none_or(|t| t.elapsed() >= WAL_RESET_RETRY) {
            last_reset_try = Some(Instant::now());
            reset_wal(&conn, wal);
        }
    }
    tracing::info!("sqlite writer stopped");
}

/// The WAL length, in frames, that makes the writer finish a checkpoint itself.
pub const WAL_RESET_FRAMES: i64 = 4096;
/// How often the writer tries again while readers keep the WAL from being reset.
const WAL_RESET_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The WAL's length in frames, as the last checkpoint saw it (shared by the checkpointer and
/// the writer).
#[derive(Clone, Default)]
pub struct WalLength(Arc<std::sync::atomic::AtomicI64>);

impl WalLength {
    fn frames(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, frames: i64) {
        self.0.store(frames, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Under a steady stream of commits the background checkpoints copy the WAL into the database
/// but never catch its end, so SQLite never starts the WAL over and it grows without bound
/// (4.2 GB after 300,000 messages, and every commit slower than the last). Run between commits
/// by the writer, so no frame is appended meanwhile, a `PASSIVE` checkpoint copies the few
/// frames the background one has not reached yet; once all are copied the next transaction
/// writes the WAL from its start again. Readers still on an old snapshot can hold that up;
/// the writer then tries again a little later.
fn reset_wal(conn: &Connection, wal: &WalLength) {
    let started = Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
        Ok((log, copied)) if log == copied => wal.set(0),
        Ok((log, _)) => wal.set(log),
        Err(error) => tracing::warn!(%error, "WAL checkpoint by the writer failed"),
    }
    metrics::histogram!(names::STORE_CHECKPOINT_DURATION).record(started.elapsed().as_secs_f64());
}

/// A fixed pool of read-only connections, each owned by its own thread.
///
/// At most `size` reads run at once and at most `size` connections and threads ever exist: a
/// connect storm queues here instead of opening a connection (with its own page cache) per
/// request. Measured: unbounded, a 5,000-session ramp peaked at ~51 MB of SQLite allocations.
/// Dedicated threads rather than `spawn_blocking`: handing a permit from one blocking task to
/// the next grew tokio's blocking pool to ~60 threads during an 18,000-session ramp, each
/// with its stack and malloc arena (~1 KB of RSS per session at that size).
pub struct Readers {
    tx: mpsc::Sender<ReadJob>,
}

/// A read to run on a reader thread's connection.
type ReadJob = Box<dyn FnOnce(Option<&Connection>) + Send>;

impl Readers {
    /// A pool of `size` reader threads on `path` (each opens its connection on first use).
    pub fn new(path: &Path, size: usize) -> Self {
        let (tx, rx) = mpsc::channel::<ReadJob>(size.max(1) * 64);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size.max(1) {
            let (rx, path) = (rx.clone(), path.to_owned());
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || reader_loop(&path, &rx))
                .expect("spawning a reader thread");
        }
        Self { tx }
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
        let (done_tx, done_rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let out = match conn {
                Some(c) => f(c),
                None => Err(StoreError::Unavailable("cannot open a read connection")),
            };
            let _ = done_tx.send(out);
        });
        self.tx.send(job).await.map_err(|_| StoreError::Unavailable("reader pool closed"))?;
        done_rx.await.map_err(|_| StoreError::Unavailable("reader failed"))?
    }
}

/// One reader thread: takes jobs until every sender is gone. The receiver is shared; the
/// thread holding its lock waits for the next job, the others for the lock.
fn reader_loop(path: &Path, rx: &Mutex<mpsc::Receiver<ReadJob>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let job = match rx.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => None,
        };
        let Some(job) = job else { break };
        if conn.is_none() {
            conn = open_reader(path).map_err(|error| tracing::error!(%error, "cannot open a read connection")).ok();
        }
        // A panicking read drops its reply sender (its caller gets `Unavailable`), not the thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn.as_ref()))).is_err() {
            tracing::error!("a read panicked");
        }
    }
}

/// Copies the WAL back into the database off the writer's path: a `PASSIVE` checkpoint every
/// `CHECKPOINT_EVERY` from its own connection and thread, which never blocks the writer or the
/// readers (pages still being read are left for the next round). Stops when dropped.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
}

/// How often the checkpointer runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Checkpointer {
    /// Starts checkpointing `path`, publishing the WAL's length to `wal`.
    ///
    /// # Errors
    /// When its connection cannot be opened.
    pub fn spawn(path: &Path, durability: Durability, wal: WalLength) -> rusqlite::Result<Self> {
        let conn = open_writer(path, durability)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // Until stopped, or the store is gone.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    let started = Instant::now();
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
                        Ok(log) => wal.set(log),
                        Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
                    }
                    metrics::histogram!(names::STORE_CHECKPOINT_DURATION).record(started.elapsed().as_secs_f64());
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self { stop: Some(stop) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// Opens the writer connection with WAL and the chosen durability.
///
/// # Errors
/// When the file cannot be opened or configured.
pub fn open_writer(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    super::memory::configure();
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
    // Checkpoints run on their own thread (`Checkpointer`), not inside a commit: an automatic
    // one stalled the writer for milliseconds (p99 of a commit ~5.5 ms at 2,000 msg/s).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Prepared statements kept per connection (rusqlite's default, 16, is fewer than the store's
/// distinct queries, so some were parsed again on every call).
const STATEMENT_CACHE: usize = 64;

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    super::memory::configure();
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::{open_writer, Checkpointer, WalLength, Writer, WAL_RESET_FRAMES};
    use switchboard_core::config::Durability;
    use switchboard_core::store::StoreError;

    /// A failing job leaves nothing behind and takes nothing else with it, whether it shares
    /// its transaction (rolled back to its savepoint) or is alone in it (rolled back whole).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_job_undoes_only_its_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_writer(&dir.path().join("t.db"), Durability::Normal).expect("open");
        conn.execute_batch("CREATE TABLE t (v TEXT NOT NULL)").expect("table");
        let writer = std::sync::Arc::new(Writer::spawn(conn, 64, WalLength::default()));
        let insert = |v: &'static str, fail: bool| {
            let w = writer.clone();
            tokio::spawn(async move {
                w.write(move |c| {
                    c.execute("INSERT INTO t (v) VALUES (?1)", [v]).expect("insert");
                    if fail {
                        Err(StoreError::Conflict("refused"))
                    } else {
                        Ok(())
                    }
                })
                .await
            })
        };
        // Hold the writer in a first job while three more queue up behind it: they then run
        // together in the next transaction.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let w = writer.clone();
        let first = tokio::spawn(async move {
            w.write(move |c| {
                let _ = started_tx.send(());
                release_rx.recv().expect("release");
                c.execute("INSERT INTO t (v) VALUES ('first')", []).expect("insert");
                Ok(())
            })
            .await
        });
        started_rx.await.expect("first job started");
        let together = [insert("kept-1", false), insert("undone", true), insert("kept-2", false)];
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        release_tx.send(()).expect("release");
        first.await.expect("task").expect("first");
        let mut outcomes = Vec::new();
        for t in together {
            outcomes.push(t.await.expect("task").is_ok());
        }
        assert_eq!(outcomes, [true, false, true]);
        let alone = insert("undone-alone", true).await.expect("task");
        assert!(matches!(alone, Err(StoreError::Conflict(_))), "{alone:?}");
        let rows: Vec<String> = writer
            .write(|c| {
                let mut st = c.prepare("SELECT v FROM t ORDER BY v").expect("prepare");
                Ok(st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect())
            })
            .await
            .expect("read");
        assert_eq!(rows, ["first", "kept-1", "kept-2"]);
    }

    /// Writers that never pause still get their WAL started over: it stays near
    /// `WAL_RESET_FRAMES` pages while several times that much is written through it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_reset_under_continuous_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let conn = open_writer(&path, Durability::Normal).expect("open");
        conn.execute_batch("CREATE TABLE t (b BLOB NOT NULL)").expect("table");
        let wal = WalLength::default();
        let _checkpointer = Checkpointer::spawn(&path, Durability::Normal, wal.clone()).expect("checkpointer");
        let writer = std::sync::Arc::new(Writer::spawn(conn, 64, wal));
        // About 6 x WAL_RESET_FRAMES pages of rows (one 3,000-byte row per 4 KiB page), from
        // four writers that each keep a job in flight, over a few of the checkpointer's rounds.
        let (tasks, jobs, rows) = (4, 800, 8);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let w = writer.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..jobs {
                    w.write(move |c| {
                        let mut st = c.prepare_cached("INSERT INTO t (b) VALUES (zeroblob(3000))").expect("prepare");
                        for _ in 0..rows {
                            st.execute([]).expect("insert");
                        }
                        Ok(())
                    })
                    .await
                    .expect("write");
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }));
        }
        for h in handles {
            h.await.expect("writer task");
        }
        let written = (tasks * jobs * rows) as i64;
        assert!(written > 6 * WAL_RESET_FRAMES);
        let wal_bytes = std::fs::metadata(dir.path().join("t.db-wal")).expect("wal").len();
        assert!(wal_bytes < 3 * WAL_RESET_FRAMES as u64 * 4096, "WAL grew to {wal_bytes} bytes for {written} rows");
        let n: i64 = writer.write(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count"))).await.expect("count");
        assert_eq!(n, written);
    }
}
