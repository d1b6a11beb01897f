//! The PostgreSQL store (feature `postgres`): jobs kept in a database that
//! workers on many machines share. See [`PgStore`].
//!
//! Claims take `FOR UPDATE SKIP LOCKED` batches sized to the idle workers;
//! ends of attempts are written in batches; enqueues notify idle workers
//! (`LISTEN`/`NOTIFY`) and polling stays on as the fallback. Each process
//! keeps an owner row alive (its lease); one process at a time, elected
//! through a leader row, rescues the jobs of owners whose lease ran out,
//! makes due jobs available and prunes finished ones.

mod schema;
mod tasks;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::jobs::ms;
pub use super::jobs::{Enqueued, JobRow, NewJob, StateCount};
use super::rows::{ClaimedRow, End, Inserted, NewRow, Running};
use schema::{Schema, Sql};

/// Why the store could not do what was asked. No message holds the
/// database password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// An option or the URL is not valid.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to the job store {url}: {reason}")]
    Connect {
        /// The URL, its password replaced by `***`.
        url: String,
        /// Why, as PostgreSQL or the network said it.
        reason: String,
    },
    /// The schema lacks migrations and the store was told not to apply them.
    #[error(
        "the job store's schema {schema} is at version {found}, this workpool needs {known}: run `workpool migrate --db URL`"
    )]
    NotMigrated {
        /// The schema.
        schema: String,
        /// Its version (0: not there).
        found: i32,
        /// The version this build needs.
        known: i32,
    },
    /// The schema was migrated by a newer workpool.
    #[error(
        "the job store's schema {schema} has version {found}; this workpool knows up to {known}: upgrade workpool"
    )]
    NewerSchema {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// A statement failed.
    #[error("the job store failed: {0}")]
    Sql(String),
    /// The store was closed.
    #[error("the job store is closed")]
    Closed,
}

impl PgError {
    fn sql(e: sqlx::Error) -> Self {
        PgError::Sql(e.to_string())
    }
}

/// `url` with its password (in the user part or a `password=` parameter)
/// replaced by `***`: what errors, logs and `Debug` show.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            out.replace_range(start..scheme_end + 3 + at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// How to open a [`PgStore`].
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    schema: String,
    queue: String,
    lease: Duration,
    poll: Duration,
    retention: Option<Duration>,
    max_connections: u32,
    migrate: bool,
    vacuum: Option<Duration>,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("queue", &self.queue)
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("retention", &self.retention)
            .field("max_connections", &self.max_connections)
            .field("migrate", &self.migrate)
            .field("vacuum", &self.vacuum)
            .finish()
    }
}

impl PgOptions {
    /// The schema that holds the store's tables (default `"workpool"`):
    /// lowercase letters, digits and `_`, at most 48. Several stores may
    /// share a database in schemas of their own.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The queue this store's pools take jobs from and put jobs in
    /// (default `"default"`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// How long a process's claims stay leased without a heartbeat
    /// (default 30 s; it beats three times a lease): the jobs of a process
    /// that died, or lost the database for this long, run again after it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// How often idle workers look for jobs when no notification came
    /// (default 1 s): the fallback for a lost `LISTEN` connection.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// How long finished jobs are kept before the leader deletes them
    /// (default 24 h; `None` keeps them until [`PgStore::prune`]).
    pub fn retention(mut self, keep: Option<Duration>) -> Self {
        self.retention = keep;
        self
    }

    /// The most connections this process opens (default 10; at least 2:
    /// one listens).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(2);
        self
    }

    /// How often the leader vacuums and analyzes the jobs table (default
    /// every 30 s; `None` leaves it to the server's autovacuum). A queue
    /// table turns its rows over fast: without vacuuming, claims wade
    /// through dead index entries and slow down by the minute, and stale
    /// statistics mislead the planner.
    pub fn vacuum_every(mut self, every: Option<Duration>) -> Self {
        self.vacuum = every;
        self
    }

    /// Whether opening applies the migrations the schema lacks (default
    /// true). With false, a schema that is not up to date is an error
    /// ([`PgError::NotMigrated`]): for databases where workers may not
    /// change the schema, migrated by `workpool migrate` or
    /// [`PgOptions::migrate`].
    pub fn migrate_on_open(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    fn connect_options(&self) -> Result<PgConnectOptions, PgError> {
        let options = PgConnectOptions::from_str(&self.url).map_err(|e| {
            PgError::Config(format!(
                "the job store URL {} is not valid: {e}",
                redact(&self.url)
            ))
        })?;
        Ok(options.application_name("workpool"))
    }

    fn connect_error(&self, e: sqlx::Error) -> PgError {
        PgError::Connect {
            url: redact(&self.url),
            reason: e.to_string(),
        }
    }

    /// Applies the migrations the schema lacks (creating it if needed) and
    /// returns the versions before and after. Safe to run from several
    /// processes at once.
    ///
    /// # Errors
    ///
    /// The URL or schema name is not valid, the database cannot be reached,
    /// the schema is newer than this build, or a statement failed.
    pub async fn migrate(self) -> Result<(i32, i32), PgError> {
        let schema = Schema::new(&self.schema)?;
        let mut conn = <PgConnection as sqlx::Connection>::connect_with(&self.connect_options()?)
            .await
            .map_err(|e| self.connect_error(e))?;
        let found = schema::migrate(&mut conn, &schema).await?;
        let _ = sqlx::Connection::close(conn).await;
        Ok((found, schema::VERSION))
    }

    /// Connects, migrates (unless told not to), registers this process and
    /// starts the store's background tasks (on the current tokio runtime).
    ///
    /// # Errors
    ///
    /// As [`migrate`](Self::migrate), and [`PgError::NotMigrated`].
    pub async fn open(self) -> Result<PgStore, PgError> {
        let schema = Schema::new(&self.schema)?;
        let options = self.connect_options()?;
        // A connection of its own first: its error says why (a pool's says
        // only that it timed out).
        let mut conn = <PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(|e| self.connect_error(e))?;
        let found = if self.migrate {
            schema::migrate(&mut conn, &schema).await?;
            schema::VERSION
        } else {
            schema::current(&mut conn, &schema).await?
        };
        if found > schema::VERSION {
            return Err(PgError::NewerSchema {
                schema: schema.name().to_string(),
                found,
                known: schema::VERSION,
            });
        }
        if found < schema::VERSION {
            return Err(PgError::NotMigrated {
                schema: schema.name().to_string(),
                found,
                known: schema::VERSION,
            });
        }
        let sql = Sql::new(&schema);
        let owner: i64 = sqlx::query_scalar(AssertSqlSafe(sql.register.clone()))
            .bind(tasks::host())
            .bind(std::process::id() as i32)
            .bind(self.lease.as_millis().min(i64::MAX as u128) as i64)
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql)?;
        let _ = sqlx::Connection::close(conn).await;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(PgStore::start(pool, schema, sql, owner, self))
    }
}

/// A PostgreSQL job store: give it to
/// [`PoolBuilder::store`](crate::PoolBuilder::store) and pools on many
/// machines share one queue.
///
/// - Once [`Pool::submit`](crate::Pool::submit) (or an enqueue) returns,
///   the job is committed.
/// - A job runs at least once: one that was running when its process died
///   (or lost the database for a lease) runs again; nothing else runs
///   twice, and a late end of such an attempt changes nothing.
/// - Shutdown releases claimed jobs that did not start (and running ones it
///   stopped) back to `available` at once; queued jobs stay in the database.
/// - [`enqueue_in`](Self::enqueue_in) enqueues inside the caller's own
///   transaction: a rollback means no job.
///
/// Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<tasks::Shared>,
    ends: mpsc::UnboundedSender<tasks::Write>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.shared;
        f.debug_struct("PgStore")
            .field("url", &redact(&s.options.url))
            .field("schema", &s.options.schema)
            .field("queue", &s.options.queue)
            .field("owner", &s.owner)
            .finish_non_exhaustive()
    }
}

/// A row of the `jobs` statement's columns.
fn job_row(r: &PgRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: r.try_get::<i64, _>(0)? as u64,
        queue: r.try_get(1)?,
        state: r.try_get(2)?,
        attempt: r.try_get::<i32, _>(3)? as u32,
        max_attempts: r.try_get::<i32, _>(4)? as u32,
        priority: r.try_get(5)?,
        run_at: r.try_get(6)?,
        errors: r.try_get(7)?,
    })
}

/// The states a cancel by state acts on, and those a retry by state does.
const CANCEL_STATES: [&str; 4] = ["available", "scheduled", "retryable", "running"];
const RETRY_STATES: [&str; 2] = ["failed", "cancelled"];

impl PgStore {
    /// Opens the store at `url` (`postgres://user:password@host/db`, with
    /// `sslmode` and the other libpq parameters) with the default options.
    ///
    /// # Errors
    ///
    /// See [`PgOptions::open`].
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        Self::options(url).open().await
    }

    /// Options for the store at `url`.
    pub fn options(url: &str) -> PgOptions {
        PgOptions {
            url: url.to_string(),
            schema: "workpool".into(),
            queue: "default".into(),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            retention: Some(Duration::from_secs(24 * 3600)),
            max_connections: 10,
            migrate: true,
            vacuum: Some(Duration::from_secs(30)),
        }
    }

    fn start(pool: PgPool, schema: Schema, sql: Sql, owner: i64, options: PgOptions) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(tasks::Shared {
            pool,
            sql,
            channel: schema.channel(),
            owner,
            options,
            running: Running::default(),
            arrivals: Notify::new(),
            cancels: Notify::new(),
            notify: Notify::new(),
            to_notify: Mutex::new(HashSet::new()),
            claims: std::sync::atomic::AtomicI64::new(0),
            vacuuming: std::sync::atomic::AtomicBool::new(false),
        });
        let ends = tasks::spawn(&shared, &stop);
        PgStore {
            inner: Arc::new(Inner { shared, ends, stop }),
        }
    }

    fn shared(&self) -> &tasks::Shared {
        &self.inner.shared
    }

    /// The connection pool the store uses: for the caller's own queries
    /// and transactions (see [`enqueue_in`](Self::enqueue_in)).
    pub fn pool(&self) -> &PgPool {
        &self.shared().pool
    }

    /// This process's owner ID in the `owners` table.
    pub fn owner(&self) -> i64 {
        self.shared().owner
    }

    pub(crate) fn queue(&self) -> &str {
        &self.shared().options.queue
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.shared().options.poll
    }

    pub(crate) fn arrivals(&self) -> &Notify {
        &self.shared().arrivals
    }

    pub(crate) fn running(&self) -> &Running {
        &self.shared().running
    }

    fn rows(&self, jobs: Vec<NewJob>) -> Vec<NewRow> {
        jobs.into_iter()
            .map(|j| NewRow {
                queue: j.queue.unwrap_or_else(|| self.queue().to_string()),
                payload: j.payload,
                max_attempts: j.max_attempts,
                priority: j.priority,
                run_at: j.run_at.map_or(0, ms),
                timeout_ms: j.timeout.map(|t| t.as_millis() as i64),
                unique_key: j.unique_key,
                ticket: None,
            })
            .collect()
    }

    /// Enqueues jobs in one transaction; returns their IDs once committed
    /// (for a job with a unique key already present, the existing job's).
    ///
    /// # Errors
    ///
    /// The statement failed: none of the jobs was stored.
    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<u64>, PgError> {
        let found = self.enqueue_unique(jobs).await?;
        Ok(found.into_iter().map(|e| e.id).collect())
    }

    /// As [`enqueue`](Self::enqueue), and for each job whether its unique
    /// key was already there, with the existing job's state.
    ///
    /// # Errors
    ///
    /// The statement failed: none of the jobs was stored.
    pub async fn enqueue_unique(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, PgError> {
        let found = self.insert(self.rows(jobs)).await?;
        Ok(found.into_iter().map(enqueued).collect())
    }

    /// Enqueues jobs on the caller's connection, inside the caller's
    /// transaction if one is open (`&mut tx` for a
    /// `sqlx::Transaction<'_, Postgres>`): the jobs exist once that
    /// transaction commits, and a rollback means no job. Idle workers are
    /// notified on commit.
    ///
    /// # Errors
    ///
    /// A statement failed; the caller's transaction is then aborted, as
    /// after any failed statement.
    pub async fn enqueue_in(
        &self,
        conn: &mut PgConnection,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, PgError> {
        let rows = self.rows(jobs);
        let queues: HashSet<&str> = rows.iter().map(|r| r.queue.as_str()).collect();
        let queues: Vec<String> = queues.into_iter().map(str::to_string).collect();
        let found = tasks::insert(conn, self.shared(), &rows).await?;
        // Sent on commit, not before; dropped by a rollback.
        sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
            .bind(&self.shared().channel)
            .bind(queues)
            .execute(&mut *conn)
            .await
            .map_err(PgError::sql)?;
        Ok(found.into_iter().map(enqueued).collect())
    }

    pub(crate) async fn insert(&self, rows: Vec<NewRow>) -> Result<Vec<Inserted>, PgError> {
        let s = self.shared();
        let mut conn = s.pool.acquire().await.map_err(PgError::sql)?;
        let found = tasks::insert(&mut conn, s, &rows).await?;
        drop(conn);
        s.notify_soon(rows.iter().map(|r| r.queue.as_str()));
        Ok(found)
    }

    pub(crate) async fn claim(&self, queue: &str, n: usize) -> Result<Vec<ClaimedRow>, PgError> {
        let s = self.shared();
        let token = s.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rows = sqlx::query(AssertSqlSafe(s.sql.claim.clone()))
            .bind(queue)
            .bind(n as i64)
            .bind(s.owner)
            .bind(token)
            .fetch_all(&s.pool)
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // The claim may have been made with its answer lost: undo
                // it (written, like the ends, until the database takes it).
                let _ = self.inner.ends.send(tasks::Write::UndoClaim(token));
                return Err(PgError::sql(e));
            }
        };
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(ClaimedRow {
                    id: r.try_get(0)?,
                    payload: r.try_get(1)?,
                    attempt: r.try_get::<i32, _>(2)? as u32,
                    priority: r.try_get(3)?,
                    run_at: r.try_get(4)?,
                    timeout_ms: r.try_get(5)?,
                    ticket: r.try_get::<Option<i64>, _>(6)?.map(|t| t as u64),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(PgError::sql)?;
        // RETURNING gives no order: the claim's own.
        claimed.sort_by_key(|c| (c.priority, c.run_at, c.id));
        Ok(claimed)
    }

    pub(crate) fn end(&self, id: i64, attempt: u32, end: End) -> Result<(), PgError> {
        self.inner
            .ends
            .send(tasks::Write::End { id, attempt, end })
            .map_err(|_| PgError::Closed)
    }

    pub(crate) fn cancel_waiting(&self, id: i64) {
        let _ = self.inner.ends.send(tasks::Write::CancelWaiting(id));
    }

    /// Waits until every end of an attempt sent so far is written.
    ///
    /// # Errors
    ///
    /// The database could not be written for several seconds (the ends
    /// stay queued and are written when it comes back), or the store is
    /// closed.
    pub async fn flush(&self) -> Result<(), PgError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ends
            .send(tasks::Write::Flush(tx))
            .map_err(|_| PgError::Closed)?;
        rx.await.map_err(|_| PgError::Closed)?
    }

    /// Jobs by queue and state.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn counts(&self) -> Result<Vec<StateCount>, PgError> {
        let s = self.shared();
        let rows = sqlx::query(AssertSqlSafe(s.sql.counts.clone()))
            .fetch_all(&s.pool)
            .await
            .map_err(PgError::sql)?;
        rows.iter()
            .map(|r| {
                Ok(StateCount {
                    queue: r.try_get(0)?,
                    state: r.try_get(1)?,
                    count: r.try_get::<i64, _>(2)? as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(PgError::sql)
    }

    /// Up to `limit` jobs in `state` (any state if `None`), newest first.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn jobs(&self, state: Option<&str>, limit: usize) -> Result<Vec<JobRow>, PgError> {
        let s = self.shared();
        let rows = sqlx::query(AssertSqlSafe(s.sql.jobs.clone()))
            .bind(state)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&s.pool)
            .await
            .map_err(PgError::sql)?;
        rows.iter()
            .map(job_row)
            .collect::<Result<_, _>>()
            .map_err(PgError::sql)
    }

    /// The job that has waited longest among those ready to run, if any.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn oldest_ready(&self) -> Result<Option<JobRow>, PgError> {
        let s = self.shared();
        let row = sqlx::query(AssertSqlSafe(s.sql.oldest_ready.clone()))
            .fetch_optional(&s.pool)
            .await
            .map_err(PgError::sql)?;
        row.as_ref().map(job_row).transpose().map_err(PgError::sql)
    }

    async fn cancel_where(&self, id: Option<i64>, state: Option<&str>) -> Result<u64, PgError> {
        let s = self.shared();
        let mut tx = s.pool.begin().await.map_err(PgError::sql)?;
        let mut n = 0;
        for sql in [&s.sql.cancel_waiting, &s.sql.cancel_running] {
            n += sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(id)
                .bind(state)
                .execute(&mut *tx)
                .await
                .map_err(PgError::sql)?
                .rows_affected();
        }
        // The processes that run them look at once.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&s.channel)
            .execute(&mut *tx)
            .await
            .map_err(PgError::sql)?;
        tx.commit().await.map_err(PgError::sql)?;
        Ok(n)
    }

    /// Cancels a job: one that waits ends `cancelled` at once; one that
    /// runs gets its cancel signal ([`JobContext::cancelled`](crate::JobContext::cancelled))
    /// in the process that runs it, on whichever machine, within a quarter
    /// of a second, and ends `cancelled` unless it finishes anyway. Returns
    /// whether the job was waiting or running.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel(&self, id: u64) -> Result<bool, PgError> {
        Ok(self.cancel_where(Some(id as i64), None).await? > 0)
    }

    /// Cancels every job in `state` (`available`, `scheduled`,
    /// `retryable` or `running`); returns how many.
    ///
    /// # Errors
    ///
    /// Another state, or the update failed.
    pub async fn cancel_all(&self, state: &str) -> Result<u64, PgError> {
        if !CANCEL_STATES.contains(&state) {
            return Err(PgError::Config(format!(
                "cannot cancel jobs in state {state:?}: use one of {}",
                CANCEL_STATES.join(", ")
            )));
        }
        self.cancel_where(None, Some(state)).await
    }

    async fn retry_where(&self, id: Option<i64>, state: Option<&str>) -> Result<u64, PgError> {
        let s = self.shared();
        let n = sqlx::query(AssertSqlSafe(s.sql.retry.clone()))
            .bind(id)
            .bind(state)
            .execute(&s.pool)
            .await
            .map_err(PgError::sql)?
            .rows_affected();
        if n > 0 {
            s.notify_soon([self.queue()].into_iter());
        }
        Ok(n)
    }

    /// Makes a failed or cancelled job available again, with one more
    /// attempt allowed; returns whether it did.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn retry(&self, id: u64) -> Result<bool, PgError> {
        Ok(self.retry_where(Some(id as i64), None).await? > 0)
    }

    /// Makes every job in `state` (`failed` or `cancelled`) available
    /// again, each with one more attempt allowed; returns how many.
    ///
    /// # Errors
    ///
    /// Another state, or the update failed.
    pub async fn retry_all(&self, state: &str) -> Result<u64, PgError> {
        if !RETRY_STATES.contains(&state) {
            return Err(PgError::Config(format!(
                "cannot retry jobs in state {state:?}: use failed or cancelled"
            )));
        }
        self.retry_where(None, Some(state)).await
    }

    /// Deletes jobs that finished (completed, failed, cancelled) more than
    /// `age` ago; returns how many.
    ///
    /// # Errors
    ///
    /// The delete failed.
    pub async fn prune(&self, age: Duration) -> Result<u64, PgError> {
        tasks::prune(self.shared(), age).await
    }

    /// Writes the last ends, releases what this process still holds and
    /// removes its owner row, so that nothing waits for its lease. Other
    /// clones of the store stop working too. Dropping the store without
    /// closing it leaves that to the lease.
    ///
    /// # Errors
    ///
    /// The last ends could not be written.
    pub async fn close(&self) -> Result<(), PgError> {
        let flushed = self.flush().await;
        self.inner.stop.cancel();
        tasks::deregister(self.shared()).await;
        flushed
    }
}

fn enqueued(i: Inserted) -> Enqueued {
    Enqueued {
        id: i.id as u64,
        existing: i.existing,
        same_payload: i.same_payload,
    }
}
