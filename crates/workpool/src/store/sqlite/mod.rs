//! The embedded SQLite store (feature `sqlite`): jobs kept in a file, so
//! that a killed process loses nothing acknowledged.
//!
//! One file, WAL mode, one writer thread per process that commits in
//! batches. Several processes may share a file on one machine: each write
//! transaction starts with `BEGIN IMMEDIATE` and waits (bounded) for the
//! others. See [`SqliteStore`].

pub(crate) mod db;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::OptionalExtension;
use tokio::sync::oneshot;

use self::db::{NewRow, Op, Settings, now_ms};
use super::jobs::ms;
pub use super::jobs::{Enqueued, JobRow, NewJob, StateCount};

/// Why the store could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or set up: unreadable, read-only, not a
    /// database, on a full disk…
    #[error("cannot open the job store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why, as SQLite or the system said it.
        reason: String,
    },
    /// The file was written by a newer workpool: its schema is not known here.
    #[error(
        "the job store {path} has schema version {found}; this workpool knows up to {known}: upgrade workpool"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A statement failed (a full disk, an I/O error, a lock held too long).
    #[error("the job store failed: {0}")]
    Sqlite(String),
    /// The store's writer is gone (the store was closed).
    #[error("the job store is closed")]
    Closed,
}

impl StoreError {
    fn open(path: &Path, e: rusqlite::Error) -> Self {
        StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// A row of `SELECT id, queue, state, attempt, max_attempts, priority,
/// run_at, errors`.
fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get::<_, i64>(0)? as u64,
        queue: r.get(1)?,
        state: r.get(2)?,
        attempt: r.get(3)?,
        max_attempts: r.get(4)?,
        priority: r.get(5)?,
        run_at: r.get(6)?,
        errors: r.get(7)?,
    })
}

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    path: PathBuf,
    full_sync: bool,
    max_size: Option<u64>,
    retention: Option<Duration>,
    lease: Duration,
    queue: String,
    poll: Duration,
}

impl SqliteOptions {
    /// `synchronous=FULL`: every commit survives a power loss, at the price
    /// of an fsync per commit. The default (`NORMAL`) survives a killed
    /// process, not a power loss.
    pub fn full_sync(mut self, full: bool) -> Self {
        self.full_sync = full;
        self
    }

    /// The most bytes the file may grow to: past it, an enqueue fails with
    /// an error (as on a full disk) and nothing else changes. Finished jobs
    /// still count until [`SqliteStore::prune`] removes them.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// How long finished jobs (completed, failed, cancelled) are kept
    /// before the store deletes them (checked once a minute); default 24 h,
    /// `None` to keep them until [`SqliteStore::prune`].
    pub fn retention(mut self, keep: Option<Duration>) -> Self {
        self.retention = keep;
        self
    }

    /// How long a claimed job stays leased without renewal (default 30 s):
    /// a process that dies without closing the store gets its jobs rescued
    /// this long after (at once, by the next process on the same machine
    /// that opens the file).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// The queue this store's pools take jobs from and put jobs in
    /// (default `"default"`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// How often idle workers look for jobs that other processes enqueued
    /// (default 200 ms; jobs enqueued in this process wake them at once).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Opens the store.
    ///
    /// # Errors
    ///
    /// See [`SqliteStore::open`].
    pub fn open(self) -> Result<SqliteStore, StoreError> {
        let running = db::Running::default();
        let ops = db::start(Settings {
            path: self.path.clone(),
            full_sync: self.full_sync,
            lease: self.lease,
            max_size: self.max_size,
            retention: self.retention,
            running: running.clone(),
        })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                ops,
                running,
                options: self,
            }),
        })
    }
}

/// An embedded SQLite job store: give it to
/// [`PoolBuilder::store`](crate::PoolBuilder::store) and the pool's jobs
/// outlive its process.
///
/// - Once [`Pool::submit`](crate::Pool::submit) returns, the job is
///   committed: it survives `kill -9` of any process (and with
///   [`SqliteOptions::full_sync`], a power loss).
/// - A job runs at least once: one that was running when its process died
///   runs again; nothing else runs twice.
/// - Shutdown releases claimed jobs that did not start (and running ones
///   it stopped) back to `available` at once; queued jobs stay in the file.
///
/// Cheap to clone; clones share one writer.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    ops: mpsc::Sender<Op>,
    /// The cancel signals of this process's running jobs (see `db.rs`).
    running: db::Running,
    options: SqliteOptions,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.options.path)
            .field("queue", &self.inner.options.queue)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates, readable by its owner only) the store at `path`
    /// with the default options.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] for a file that cannot be opened, read or
    /// written, or is not a database; [`StoreError::NewerSchema`] for a file
    /// from a newer workpool. Nothing in the file is changed then.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::options(path).open()
    }

    /// Options for opening the store at `path`.
    pub fn options(path: impl AsRef<Path>) -> SqliteOptions {
        SqliteOptions {
            path: path.as_ref().to_path_buf(),
            full_sync: false,
            max_size: None,
            retention: Some(Duration::from_secs(24 * 3600)),
            lease: Duration::from_secs(30),
            queue: "default".into(),
            poll: Duration::from_millis(200),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    pub(crate) fn queue(&self) -> &str {
        &self.inner.options.queue
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.inner.options.poll
    }

    pub(crate) fn running(&self) -> &db::Running {
        &self.inner.running
    }

    pub(crate) fn send(&self, op: Op) -> Result<(), StoreError> {
        self.inner.ops.send(op).map_err(|_| StoreError::Closed)
    }

    pub(crate) async fn claim(
        &self,
        queue: &str,
        n: usize,
    ) -> Result<Vec<db::ClaimedRow>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Claim {
            queue: queue.to_string(),
            n,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn end(&self, id: i64, attempt: u32, end: db::End) -> Result<(), StoreError> {
        self.send(Op::End { id, attempt, end })
    }

    pub(crate) fn cancel_waiting(&self, id: i64) {
        let _ = self.send(Op::CancelWaiting(id));
    }

    /// Enqueues jobs in one transaction; returns their IDs once committed
    /// (for a job with a unique key already present, the existing job's).
    ///
    /// # Errors
    ///
    /// The transaction failed: none of the jobs was stored.
    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<u64>, StoreError> {
        let found = self.enqueue_unique(jobs).await?;
        Ok(found.into_iter().map(|e| e.id).collect())
    }

    /// As [`enqueue`](Self::enqueue), and for each job whether its unique key
    /// was already there, with the existing job's state (so that a producer
    /// that enqueues the same jobs again can tell what is done).
    ///
    /// # Errors
    ///
    /// The transaction failed: none of the jobs was stored.
    pub async fn enqueue_unique(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, StoreError> {
        let now = now_ms();
        let rows = jobs
            .into_iter()
            .map(|j| NewRow {
                queue: j.queue.unwrap_or_else(|| self.queue().to_string()),
                payload: j.payload,
                max_attempts: j.max_attempts,
                priority: j.priority,
                run_at: j.run_at.map_or(now, ms),
                timeout_ms: j.timeout.map(|t| t.as_millis() as i64),
                unique_key: j.unique_key,
                ticket: None,
            })
            .collect();
        let found = self.insert(rows).await?;
        Ok(found
            .into_iter()
            .map(|i| Enqueued {
                id: i.id as u64,
                existing: i.existing,
                same_payload: i.same_payload,
            })
            .collect())
    }

    pub(crate) async fn insert(&self, rows: Vec<NewRow>) -> Result<Vec<db::Inserted>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Enqueue(rows, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Waits until everything sent so far is committed.
    ///
    /// # Errors
    ///
    /// The last transaction failed, or the store is closed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in a transaction of the writer's and returns its result once
    /// that transaction is committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Call(Box::new(move |t| {
            let result = f(t).map_err(|e| StoreError::Sqlite(e.to_string()));
            // Answered once the transaction is committed, not before.
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.and(result));
            })
        })))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Jobs by queue and state.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        self.call(|tx| {
            let mut stmt = tx.prepare(
                "SELECT queue, state, count(*) FROM workpool_jobs GROUP BY queue, state ORDER BY queue, state",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(StateCount {
                    queue: r.get(0)?,
                    state: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Up to `limit` jobs in `state` (any state if `None`), newest first.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn jobs(&self, state: Option<&str>, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let state = state.map(str::to_string);
        self.call(move |tx| {
            let mut stmt = tx.prepare(
                "SELECT id, queue, state, attempt, max_attempts, priority, run_at, errors FROM workpool_jobs
                  WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![state, limit as i64], job_row)?;
            rows.collect()
        })
        .await
    }

    /// Cancels a job: one that waits ends `cancelled` at once; one that
    /// runs gets its cancel signal ([`JobContext::cancelled`](crate::JobContext::cancelled))
    /// in the process that runs it, within a quarter of a second, and ends
    /// `cancelled` unless it finishes anyway. Returns whether the job was
    /// waiting or running.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel(&self, id: u64) -> Result<bool, StoreError> {
        self.call(move |tx| {
            let waiting = tx.execute(
                "UPDATE workpool_jobs SET state = 'cancelled', finished_at = ?2
                  WHERE id = ?1 AND state IN ('available', 'scheduled', 'retryable')",
                rusqlite::params![id as i64, now_ms()],
            )?;
            let running = tx.execute(
                "UPDATE workpool_jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                [id as i64],
            )?;
            Ok(waiting + running > 0)
        })
        .await
    }

    /// Makes a failed or cancelled job available again, with one more
    /// attempt allowed; returns whether it did.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn retry(&self, id: u64) -> Result<bool, StoreError> {
        self.call(move |tx| {
            tx.execute(
                "UPDATE workpool_jobs SET state = 'available', run_at = ?2, finished_at = NULL,
                        max_attempts = max(max_attempts, attempt + 1)
                  WHERE id = ?1 AND state IN ('failed', 'cancelled')",
                rusqlite::params![id as i64, now_ms()],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Cancels every job in `state` (`available`, `scheduled` or
    /// `retryable`: jobs that wait; or `running`, as [`cancel`](Self::cancel)
    /// cancels one); returns how many.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel_all(&self, state: &str) -> Result<u64, StoreError> {
        let state = state.to_string();
        self.call(move |tx| {
            let waiting = tx.execute(
                "UPDATE workpool_jobs SET state = 'cancelled', finished_at = ?2
                  WHERE state = ?1 AND state IN ('available', 'scheduled', 'retryable')",
                rusqlite::params![state, now_ms()],
            )?;
            let running = tx.execute(
                "UPDATE workpool_jobs SET cancel_requested = 1 WHERE state = ?1 AND state = 'running'",
                [&state],
            )?;
            Ok((waiting + running) as u64)
        })
        .await
    }

    /// Makes every job in `state` (`failed` or `cancelled`) available
    /// again, each with one more attempt allowed; returns how many.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn retry_all(&self, state: &str) -> Result<u64, StoreError> {
        let state = state.to_string();
        self.call(move |tx| {
            tx.execute(
                "UPDATE workpool_jobs SET state = 'available', run_at = ?2, finished_at = NULL,
                        max_attempts = max(max_attempts, attempt + 1)
                  WHERE state = ?1 AND state IN ('failed', 'cancelled')",
                rusqlite::params![state, now_ms()],
            )
            .map(|n| n as u64)
        })
        .await
    }

    /// The job that has waited longest among those ready to run, if any.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn oldest_ready(&self) -> Result<Option<JobRow>, StoreError> {
        self.call(|tx| {
            tx.query_row(
                "SELECT id, queue, state, attempt, max_attempts, priority, run_at, errors FROM workpool_jobs
                  WHERE state IN ('available', 'scheduled', 'retryable') AND run_at <= ?1
                  ORDER BY run_at, id LIMIT 1",
                [now_ms()],
                job_row,
            )
            .optional()
        })
        .await
    }

    /// Deletes jobs that finished (completed, failed, cancelled) more than
    /// `age` ago; returns how many.
    ///
    /// # Errors
    ///
    /// The delete failed.
    pub async fn prune(&self, age: Duration) -> Result<u64, StoreError> {
        let before = now_ms() - age.as_millis() as i64;
        self.call(move |tx| db::prune(tx, before).map(|n| n as u64))
            .await
    }
}
