//! The SQLite database: schema and migrations, and the writer thread that
//! owns the connection and commits what it is sent in batches (group
//! commit: every enqueue, claim and end waiting when a transaction starts
//! goes into it).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use tokio::sync::oneshot;

pub(crate) use crate::store::rows::{ClaimedRow, End, Inserted, NewRow, Running, now_ms};

use super::StoreError;

/// The schema, one migration per version; applied in order on open.
const MIGRATIONS: [&str; 2] = [
    "
    CREATE TABLE workpool_jobs (
        id INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        crashes INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0,
        run_at INTEGER NOT NULL,
        lease_until INTEGER,
        owner INTEGER,
        timeout_ms INTEGER,
        unique_key TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        errors TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX workpool_jobs_ready ON workpool_jobs (queue, priority, run_at, id)
        WHERE state IN ('available', 'scheduled', 'retryable');
    CREATE INDEX workpool_jobs_running ON workpool_jobs (owner, lease_until)
        WHERE state = 'running';
    CREATE INDEX workpool_jobs_state ON workpool_jobs (state, queue);
    CREATE UNIQUE INDEX workpool_jobs_unique ON workpool_jobs (queue, unique_key)
        WHERE unique_key IS NOT NULL;
    CREATE TABLE workpool_owners (
        id INTEGER PRIMARY KEY,
        boot TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start TEXT NOT NULL,
        seen_at INTEGER NOT NULL
    );
",
    // The ticket of a job's handle in the process that enqueued it.
    "
    ALTER TABLE workpool_jobs ADD COLUMN ticket INTEGER;
    ALTER TABLE workpool_jobs ADD COLUMN enqueued_by INTEGER;
",
];

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Told whether the transaction it ran in committed.
pub(crate) type AfterCommit = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Work for the writer thread.
pub(crate) enum Op {
    Enqueue(Vec<NewRow>, Reply<Vec<Inserted>>),
    Claim {
        queue: String,
        n: usize,
        reply: Reply<Vec<ClaimedRow>>,
    },
    End {
        id: i64,
        attempt: u32,
        end: End,
    },
    /// Cancels a job that waits (not one that runs).
    CancelWaiting(i64),
    /// Anything else, run in a write transaction of its own; what it
    /// returns is called once that transaction committed (or failed).
    Call(Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> AfterCommit + Send>),
    /// Answered once everything sent before it is committed.
    Flush(Reply<()>),
}

/// The most operations in one transaction.
const MAX_BATCH: usize = 4096;

/// How long a transaction waits for another process's write lock, in all.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// Settings the writer needs.
pub(crate) struct Settings {
    pub(crate) path: PathBuf,
    pub(crate) full_sync: bool,
    pub(crate) lease: Duration,
    /// The most bytes the file may hold (SQLite's `max_page_count`).
    pub(crate) max_size: Option<u64>,
    /// Finished jobs older than this are deleted (none if `None`).
    pub(crate) retention: Option<Duration>,
    /// The cancel signals of this process's running jobs, by row.
    pub(crate) running: Running,
}

/// How often the writer looks for cancels asked for its running jobs.
const CANCEL_LOOK: Duration = Duration::from_millis(250);

/// Opens (creating it readable by its owner only) and migrates the
/// database, registers this process as an owner, rescues the jobs of owners
/// that are gone, and starts the writer. Returns the channel to it.
pub(crate) fn start(settings: Settings) -> Result<mpsc::Sender<Op>, StoreError> {
    let path = settings.path.clone();
    let fail = |e: rusqlite::Error| StoreError::open(&path, e);
    create_private(&path).map_err(|e| StoreError::Open {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut conn = Connection::open(&path).map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
    // Another process opening the file at the same moment may hold it
    // without SQLite's busy wait applying (setting up or recovering the
    // WAL): wait for it as `write` does.
    let mode: String = patiently(|| conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path,
            reason: format!("cannot use WAL mode (the journal mode is {mode})"),
        });
    }
    let sync = if settings.full_sync { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
        .map_err(fail)?;
    if let Some(bytes) = settings.max_size {
        let page: u64 =
            patiently(|| conn.query_row("PRAGMA page_size", [], |r| r.get(0))).map_err(fail)?;
        let pages = bytes.div_ceil(page.max(512));
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(fail)?;
    }
    migrate(&mut conn).map_err(|e| match e {
        Migrate::Newer(found) => StoreError::NewerSchema {
            path: path.clone(),
            found,
            known: MIGRATIONS.len() as i64,
        },
        Migrate::Sql(e) => fail(e),
    })?;
    let owner = write(&mut conn, register).map_err(fail)?;
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        conn,
        owner,
        lease: settings.lease,
        retention: settings.retention,
        running: settings.running,
    };
    std::thread::Builder::new()
        .name("workpool-sqlite".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Open {
            path,
            reason: format!("cannot start the writer thread: {e}"),
        })?;
    Ok(tx)
}

/// Creates the file if it does not exist, readable and writable by its
/// owner only (SQLite gives its WAL and shared-memory files the same mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

enum Migrate {
    Newer(i64),
    Sql(rusqlite::Error),
}

fn migrate(conn: &mut Connection) -> Result<(), Migrate> {
    write(conn, |tx| {
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Ok(Some(version));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        Ok(None)
    })
    .map_err(Migrate::Sql)?
    .map_or(Ok(()), |v| Err(Migrate::Newer(v)))
}

/// Runs `f` again while it finds the database busy, with growing pauses,
/// up to [`BUSY_PATIENCE`].
fn patiently<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let began = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if is_busy(&e) && began.elapsed() < BUSY_PATIENCE => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction, waiting (bounded) while
/// another process holds the write lock.
fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let began = Instant::now();
    let mut pause = Duration::from_millis(1);
    let tx = loop {
        match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => break tx,
            // SQLite's own busy wait gave up (or was not used, as during
            // another process's WAL recovery): wait a little, longer each
            // time, and try again.
            Err(e) if is_busy(&e) && began.elapsed() < BUSY_PATIENCE => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// This process, as `/proc` tells it: the boot, its PID and its start time.
/// A process with the same three is this one; a PID reused later has
/// another start time.
fn identity(pid: u32) -> Option<(String, String)> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's `)`: the state (field 3), then field 22, the start
    // time, 19 further on. A zombie has ended: it is not alive.
    let mut fields = stat.rsplit_once(") ")?.1.split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    let start = fields.nth(18)?.to_string();
    Some((boot.trim().to_string(), start))
}

/// Registers this process and rescues the running jobs of owners that are
/// gone: same boot and no such process (or another with its PID), or an
/// earlier boot. Returns this process's owner ID.
fn register(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    let (boot, start) = identity(std::process::id()).unwrap_or_default();
    let mut gone = Vec::new();
    {
        let mut owners = tx.prepare("SELECT id, boot, pid, start FROM workpool_owners")?;
        let rows = owners.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (id, their_boot, pid, their_start) = row?;
            let alive = their_boot == boot && identity(pid).is_some_and(|(_, s)| s == their_start);
            if !alive {
                gone.push(id);
            }
        }
    }
    for id in gone {
        rescue(tx, "owner = :a", &[&id], "its process ended while it ran")?;
        tx.execute("DELETE FROM workpool_owners WHERE id = ?1", [id])?;
    }
    tx.execute(
        "INSERT INTO workpool_owners (boot, pid, start, seen_at) VALUES (?1, ?2, ?3, ?4)",
        params![boot, std::process::id(), start, now_ms()],
    )?;
    Ok(tx.last_insert_rowid())
}

/// How many times a job may be running when its process dies (or its lease
/// runs out) before it ends failed instead of running again: a job that
/// kills its process does not loop forever.
pub(crate) const CRASH_LIMIT: u32 = 3;

/// Running jobs matching `filter` go back to available (the attempt
/// counted), or end failed at their [`CRASH_LIMIT`]th such end.
fn rescue(
    tx: &rusqlite::Transaction<'_>,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    why: &str,
) -> rusqlite::Result<usize> {
    let sql = format!(
        "UPDATE workpool_jobs SET
            crashes = crashes + 1,
            state = CASE WHEN crashes + 1 >= {CRASH_LIMIT} THEN 'failed' ELSE 'available' END,
            finished_at = CASE WHEN crashes + 1 >= {CRASH_LIMIT} THEN :now ELSE NULL END,
            owner = NULL, lease_until = NULL,
            errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', :now, 'error', :why))
         WHERE state = 'running' AND {filter}"
    );
    let now = now_ms();
    let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":now", &now), (":why", &why)];
    for (i, a) in args.iter().enumerate() {
        named.push((PARAM_NAMES[i], *a));
    }
    tx.execute(&sql, named.as_slice())
}

/// The names `filter` uses for its values, in order.
const PARAM_NAMES: [&str; 2] = [":a", ":b"];

struct Writer {
    conn: Connection,
    owner: i64,
    lease: Duration,
    retention: Option<Duration>,
    running: Running,
}

/// How often the writer deletes finished jobs past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What an operation gives back once its transaction is committed.
enum Value {
    Ids(Vec<Inserted>),
    Claimed(Vec<ClaimedRow>),
    Nothing,
}

impl Op {
    /// Sends the operation's result to whoever waits for it.
    fn answer(self, result: Result<Value, StoreError>) {
        match (self, result) {
            (Op::Enqueue(_, r), Ok(Value::Ids(ids))) => drop(r.send(Ok(ids))),
            (Op::Claim { reply, .. }, Ok(Value::Claimed(rows))) => drop(reply.send(Ok(rows))),
            (Op::Flush(r), Ok(_)) => drop(r.send(Ok(()))),
            (Op::Enqueue(_, r), Err(e)) => drop(r.send(Err(e))),
            (Op::Claim { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Flush(r), Err(e)) => drop(r.send(Err(e))),
            _ => {}
        }
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        // Leases are renewed, and expired ones rescued, three times a lease.
        let tick = (self.lease / 3).max(Duration::from_millis(10));
        let mut next_tick = Instant::now() + tick;
        let mut next_prune = Instant::now();
        let mut next_cancel_look = Instant::now() + CANCEL_LOOK;
        loop {
            let wait = next_tick
                .min(next_cancel_look)
                .saturating_duration_since(Instant::now());
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(op) => batch.push(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            gather(&rx, &mut batch);
            let upkeep = Instant::now() >= next_tick;
            if upkeep {
                next_tick = Instant::now() + tick;
            }
            if let Some(keep) = self.retention
                && Instant::now() >= next_prune
            {
                next_prune = Instant::now() + PRUNE_EVERY;
                let before = now_ms() - keep.as_millis() as i64;
                if let Err(e) = write(&mut self.conn, |tx| prune(tx, before)) {
                    failed(e);
                }
            }
            self.commit(batch, upkeep);
            if Instant::now() >= next_cancel_look {
                next_cancel_look = Instant::now() + CANCEL_LOOK;
                self.fire_cancels();
            }
        }
        // Every sender is gone: the store was closed. This process no longer
        // owns anything.
        let owner = self.owner;
        let _ = write(&mut self.conn, |tx| {
            rescue(tx, "owner = :a", &[&owner], "its process stopped")?;
            tx.execute("DELETE FROM workpool_owners WHERE id = ?1", [owner])
        });
    }

    /// Fires the cancel signals of this process's running jobs whose cancel
    /// was asked for (`SqliteStore::cancel` by ID, from any process).
    fn fire_cancels(&mut self) {
        if crate::sync::lock(&self.running).is_empty() {
            return;
        }
        let owner = self.owner;
        let asked = self.conn.prepare_cached(
            "SELECT id FROM workpool_jobs WHERE owner = ?1 AND state = 'running' AND cancel_requested = 1",
        );
        let ids: Vec<i64> = match asked {
            Ok(mut stmt) => match stmt.query_map([owner], |r| r.get(0)) {
                Ok(rows) => rows.filter_map(Result::ok).collect(),
                Err(_) => return,
            },
            Err(_) => return,
        };
        let running = crate::sync::lock(&self.running);
        for id in ids {
            if let Some(c) = running.get(&id) {
                c.fire();
            }
        }
    }

    /// One transaction for the whole batch; the results go out once it is
    /// committed. If it fails, each operation is tried again alone, so that
    /// one that cannot be done (a job too large for a full disk) fails
    /// alone. Calls run in transactions of their own.
    fn commit(&mut self, batch: Vec<Op>, upkeep: bool) {
        let (owner, lease) = (self.owner, self.lease);
        let (calls, ops): (Vec<Op>, Vec<Op>) =
            batch.into_iter().partition(|op| matches!(op, Op::Call(_)));
        let result = write(&mut self.conn, |tx| {
            let mut values = Vec::with_capacity(ops.len());
            for op in &ops {
                values.push(apply(tx, op, owner, lease)?);
            }
            if upkeep {
                renew_and_rescue(tx, owner, lease)?;
            }
            Ok(values)
        });
        match result {
            Ok(values) => {
                for (op, value) in ops.into_iter().zip(values) {
                    op.answer(Ok(value));
                }
            }
            Err(e) if ops.len() <= 1 => {
                let e = failed(e);
                ops.into_iter().for_each(|op| op.answer(Err(e.clone())));
            }
            Err(_) => {
                for op in ops {
                    let alone = write(&mut self.conn, |tx| apply(tx, &op, owner, lease));
                    op.answer(alone.map_err(failed));
                }
            }
        }
        for call in calls {
            if let Op::Call(f) = call {
                let mut after = None;
                let committed = write(&mut self.conn, |tx| {
                    after = Some(f(tx));
                    Ok(())
                });
                if let Some(after) = after {
                    after(committed.map_err(failed));
                }
            }
        }
    }
}

/// Renews this process's leases and rescues jobs whose lease ran out.
fn renew_and_rescue(
    tx: &rusqlite::Transaction<'_>,
    owner: i64,
    lease: Duration,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let until = now + lease.as_millis() as i64;
    tx.execute(
        "UPDATE workpool_jobs SET lease_until = ?1 WHERE owner = ?2 AND state = 'running'",
        params![until, owner],
    )?;
    tx.execute(
        "UPDATE workpool_owners SET seen_at = ?1 WHERE id = ?2",
        params![now, owner],
    )?;
    rescue(tx, "lease_until < :a", &[&now], "its lease ran out")?;
    Ok(())
}

/// How long the writer waits for more work when all it has are ends of
/// attempts (nobody waits for those): a transaction per end would cap
/// throughput at the commit rate.
const LINGER: Duration = Duration::from_micros(500);

/// Adds to `batch` what else is waiting, up to [`MAX_BATCH`]. A batch of
/// ends only lingers up to [`LINGER`] for more, and stops lingering as soon
/// as something someone waits for (an enqueue, a claim) arrives.
fn gather(rx: &mpsc::Receiver<Op>, batch: &mut Vec<Op>) {
    let deadline = Instant::now() + LINGER;
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                let only_ends =
                    !batch.is_empty() && batch.iter().all(|op| matches!(op, Op::End { .. }));
                let left = deadline.saturating_duration_since(Instant::now());
                if !only_ends || left.is_zero() {
                    return;
                }
                match rx.recv_timeout(left) {
                    Ok(op) => batch.push(op),
                    Err(_) => return,
                }
            }
        }
    }
}

/// Deletes jobs that finished before `before` (ms); how many.
pub(crate) fn prune(tx: &rusqlite::Transaction<'_>, before: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM workpool_jobs WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at < ?1",
        [before],
    )
}

fn failed(e: rusqlite::Error) -> StoreError {
    let e = StoreError::Sqlite(e.to_string());
    tracing::error!(target: "workpool", error = %e, "sqlite store: a write failed");
    e
}

fn apply(
    tx: &rusqlite::Transaction<'_>,
    op: &Op,
    owner: i64,
    lease: Duration,
) -> rusqlite::Result<Value> {
    Ok(match op {
        Op::Enqueue(rows, _) => Value::Ids(insert(tx, rows, owner)?),
        Op::Claim { queue, n, .. } => Value::Claimed(claim(tx, queue, *n, owner, lease)?),
        Op::End { id, attempt, end } => {
            end_attempt(tx, *id, *attempt, end)?;
            Value::Nothing
        }
        Op::CancelWaiting(id) => {
            tx.execute(
                "UPDATE workpool_jobs SET state = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND state IN ('available', 'scheduled', 'retryable')",
                params![id, now_ms()],
            )?;
            Value::Nothing
        }
        Op::Call(_) | Op::Flush(_) => Value::Nothing,
    })
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    rows: &[NewRow],
    owner: i64,
) -> rusqlite::Result<Vec<Inserted>> {
    let now = now_ms();
    let mut ids = Vec::with_capacity(rows.len());
    let mut stmt = tx.prepare_cached(
        "INSERT INTO workpool_jobs (queue, payload, state, max_attempts, priority, run_at, timeout_ms, unique_key,
                                    created_at, ticket, enqueued_by)
         VALUES (?1, ?2, CASE WHEN ?5 > ?8 THEN 'scheduled' ELSE 'available' END, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                 CASE WHEN ?9 IS NOT NULL THEN ?10 END)
         ON CONFLICT DO NOTHING",
    )?;
    for row in rows {
        let inserted = stmt.execute(params![
            row.queue,
            row.payload,
            row.max_attempts,
            row.priority,
            row.run_at,
            row.timeout_ms,
            row.unique_key,
            now,
            row.ticket.map(|t| t as i64),
            owner
        ])?;
        let found = match (inserted, &row.unique_key) {
            (0, Some(key)) => tx
                .query_row(
                    "SELECT id, state, payload = ?3 FROM workpool_jobs WHERE queue = ?1 AND unique_key = ?2",
                    params![row.queue, key, row.payload],
                    |r| {
                        Ok(Inserted {
                            id: r.get(0)?,
                            existing: Some(r.get(1)?),
                            same_payload: r.get(2)?,
                        })
                    },
                )
                .optional()?,
            _ => None,
        };
        ids.push(found.unwrap_or(Inserted {
            id: tx.last_insert_rowid(),
            existing: None,
            same_payload: true,
        }));
    }
    Ok(ids)
}

fn claim(
    tx: &rusqlite::Transaction<'_>,
    queue: &str,
    n: usize,
    owner: i64,
    lease: Duration,
) -> rusqlite::Result<Vec<ClaimedRow>> {
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "UPDATE workpool_jobs
            SET state = 'running', attempt = attempt + 1, owner = ?3, lease_until = ?4, started_at = ?2
          WHERE id IN (SELECT id FROM workpool_jobs
                        WHERE queue = ?1 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= ?2
                        ORDER BY priority, run_at, id LIMIT ?5)
         RETURNING id, payload, attempt, priority, run_at, timeout_ms,
                   CASE WHEN enqueued_by = ?3 THEN ticket END",
    )?;
    let rows = stmt.query_map(
        params![queue, now, owner, now + lease.as_millis() as i64, n as i64],
        |r| {
            Ok(ClaimedRow {
                id: r.get(0)?,
                payload: r.get(1)?,
                attempt: r.get(2)?,
                priority: r.get(3)?,
                run_at: r.get(4)?,
                timeout_ms: r.get(5)?,
                ticket: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
            })
        },
    )?;
    let mut claimed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING gives no order: the claim's own.
    claimed.sort_by_key(|c| (c.priority, c.run_at, c.id));
    Ok(claimed)
}

fn end_attempt(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    attempt: u32,
    end: &End,
) -> rusqlite::Result<()> {
    let now = now_ms();
    // Fenced by the attempt: a worker whose lease was rescued changes nothing.
    let fence = "WHERE id = ?1 AND attempt = ?2 AND state = 'running'";
    let error =
        "errors = json_insert(errors, '$[#]', json_object('attempt', ?2, 'at', ?3, 'error', ?4))";
    let done = |state: &str, text: &str| {
        tx.execute(
            &format!(
                "UPDATE workpool_jobs SET state = '{state}', finished_at = ?3, lease_until = NULL, {error} {fence}"
            ),
            params![id, attempt, now, text],
        )
    };
    match end {
        End::Completed => {
            tx.prepare_cached(&format!(
                "UPDATE workpool_jobs SET state = 'completed', finished_at = ?3, lease_until = NULL {fence}"
            ))?
            .execute(params![id, attempt, now])?;
        }
        End::Failed(text) => {
            done("failed", text)?;
        }
        End::Cancelled(text) => {
            done("cancelled", text)?;
        }
        End::Retry { at, error: text } => {
            tx.execute(
                &format!(
                    "UPDATE workpool_jobs SET state = 'retryable', run_at = ?5, owner = NULL, lease_until = NULL, {error} {fence}"
                ),
                params![id, attempt, now, text, at],
            )?;
        }
        End::Unclaim => {
            tx.execute(
                &format!(
                    "UPDATE workpool_jobs SET state = 'available', attempt = attempt - 1, owner = NULL, lease_until = NULL, started_at = NULL {fence}"
                ),
                params![id, attempt],
            )?;
        }
        End::Interrupted(text) => {
            tx.execute(
                &format!(
                    "UPDATE workpool_jobs SET state = 'available', owner = NULL, lease_until = NULL, {error} {fence}"
                ),
                params![id, attempt, now, text],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Db {
        dir: PathBuf,
        ops: mpsc::Sender<Op>,
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn settings(dir: &Path, lease: Duration) -> Settings {
        Settings {
            path: dir.join("t.db"),
            full_sync: false,
            lease,
            max_size: None,
            retention: None,
            running: Running::default(),
        }
    }

    fn open(name: &str, lease: Duration) -> Db {
        let dir = std::env::temp_dir().join(format!("workpool-db-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ops = start(settings(&dir, lease)).unwrap();
        Db { dir, ops }
    }

    impl Db {
        fn ask<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> T {
            let (tx, rx) = oneshot::channel();
            self.ops.send(op(tx)).unwrap();
            rx.blocking_recv().unwrap().unwrap()
        }

        fn insert(&self, rows: Vec<NewRow>) -> Vec<i64> {
            let inserted = self.ask(|r| Op::Enqueue(rows, r));
            inserted.into_iter().map(|i| i.id).collect()
        }

        fn claim(&self, n: usize) -> Vec<ClaimedRow> {
            self.ask(|reply| Op::Claim {
                queue: "q".into(),
                n,
                reply,
            })
        }

        fn sql<T: Send + 'static>(
            &self,
            f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
        ) -> T {
            self.ask(|reply| {
                Op::Call(Box::new(move |tx| {
                    let value = f(tx).unwrap();
                    Box::new(move |committed| {
                        let _ = reply.send(committed.map(|()| value));
                    })
                }))
            })
        }

        fn state(&self, id: i64) -> (String, u32) {
            self.sql(move |tx| {
                tx.query_row(
                    "SELECT state, attempt FROM workpool_jobs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
        }

        /// Makes the job look claimed by a process that died long ago, and
        /// waits for the writer's upkeep to rescue it.
        fn orphan(&self, id: i64) {
            self.sql(move |tx| {
                tx.execute(
                    "UPDATE workpool_jobs SET owner = -1, lease_until = 0 WHERE id = ?1",
                    [id],
                )
            });
            while self.state(id).0 == "running" {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn row(payload: &str) -> NewRow {
        NewRow {
            queue: "q".into(),
            payload: payload.as_bytes().to_vec(),
            max_attempts: 1,
            priority: 0,
            run_at: now_ms(),
            timeout_ms: None,
            unique_key: None,
            ticket: None,
        }
    }

    #[test]
    fn a_claim_finds_the_ticket_only_in_the_process_that_enqueued() {
        let db = open("ticket", Duration::from_secs(30));
        let other = start(settings(&db.dir, Duration::from_secs(30))).unwrap();
        let with = |t: u64| NewRow {
            ticket: Some(t),
            ..row("t")
        };
        db.insert(vec![with(7), with(8)]);
        let mine = db.claim(1);
        assert_eq!(mine[0].ticket, Some(7));
        let (tx, rx) = oneshot::channel();
        other
            .send(Op::Claim {
                queue: "q".into(),
                n: 1,
                reply: tx,
            })
            .unwrap();
        let theirs = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(
            theirs[0].ticket, None,
            "another process's ticket means nothing"
        );
    }

    #[test]
    fn a_late_end_from_a_rescued_attempt_changes_nothing() {
        let db = open("fence", Duration::from_millis(30));
        let id = db.insert(vec![row("a")])[0];
        assert_eq!(db.claim(1)[0].attempt, 1);
        db.orphan(id);
        assert_eq!(db.state(id), ("available".into(), 1));
        assert_eq!(db.claim(1)[0].attempt, 2);
        // The first attempt's worker comes back: fenced off.
        let end = |attempt, end| Op::End { id, attempt, end };
        db.ops.send(end(1, End::Failed("late".into()))).unwrap();
        db.ask(Op::Flush);
        assert_eq!(db.state(id), ("running".into(), 2));
        db.ops.send(end(2, End::Completed)).unwrap();
        db.ask(Op::Flush);
        assert_eq!(db.state(id), ("completed".into(), 2));
    }

    #[test]
    fn a_job_that_keeps_dying_with_its_process_ends_failed() {
        let db = open("crash", Duration::from_millis(30));
        let id = db.insert(vec![row("a")])[0];
        for n in 1..=CRASH_LIMIT {
            assert_eq!(db.claim(1).len(), 1, "claim {n}");
            db.orphan(id);
        }
        assert_eq!(db.state(id).0, "failed");
        assert!(db.claim(1).is_empty());
    }

    #[test]
    fn claims_follow_priority_then_time_and_skip_what_is_not_due() {
        let db = open("order", Duration::from_secs(30));
        let mut later = row("later");
        later.run_at = now_ms() + 60_000;
        let mut urgent = row("urgent");
        urgent.priority = -1;
        let mut old = row("old");
        old.run_at = now_ms() - 1000;
        db.insert(vec![row("plain"), later, urgent, old]);
        let got: Vec<Vec<u8>> = db.claim(10).into_iter().map(|c| c.payload).collect();
        assert_eq!(
            got,
            [b"urgent".to_vec(), b"old".to_vec(), b"plain".to_vec()]
        );
    }

    #[test]
    fn a_unique_key_enqueues_once_and_returns_the_existing_job() {
        let db = open("unique", Duration::from_secs(30));
        let keyed = |k: &str| NewRow {
            unique_key: Some(k.into()),
            ..row(k)
        };
        let first = db.insert(vec![keyed("k1"), keyed("k2")]);
        let again = db.insert(vec![keyed("k2"), keyed("k1"), keyed("k3")]);
        assert_eq!(&again[..2], [first[1], first[0]]);
        let rows: i64 =
            db.sql(|tx| tx.query_row("SELECT count(*) FROM workpool_jobs", [], |r| r.get(0)));
        assert_eq!(rows, 3);
    }

    #[test]
    fn a_file_from_a_newer_workpool_is_refused_untouched() {
        let db = open("newer", Duration::from_secs(30));
        db.sql(|tx| tx.execute_batch("PRAGMA user_version = 99"));
        let err = start(settings(&db.dir, Duration::from_secs(30))).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade workpool"));
    }

    #[test]
    fn finished_jobs_past_their_retention_are_deleted_by_the_writer() {
        let dir = std::env::temp_dir().join(format!("workpool-db-{}-prune", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db {
            ops: start(settings(&dir, Duration::from_secs(30))).unwrap(),
            dir: dir.clone(),
        };
        let ids = db.insert(vec![row("old"), row("recent"), row("waiting")]);
        let (old, recent) = (ids[0], ids[1]);
        db.sql(move |tx| {
            tx.execute(
                "UPDATE workpool_jobs SET state = 'completed', finished_at = ?2 WHERE id = ?1",
                params![old, now_ms() - 2 * 86_400_000],
            )?;
            tx.execute(
                "UPDATE workpool_jobs SET state = 'failed', finished_at = ?2 WHERE id = ?1",
                params![recent, now_ms()],
            )
        });
        drop(db.ops.clone());
        // A second writer on the file, with a retention of a day, prunes at start.
        let pruner = start(Settings {
            retention: Some(Duration::from_secs(86_400)),
            ..settings(&dir, Duration::from_secs(30))
        })
        .unwrap();
        let (tx, rx) = oneshot::channel();
        pruner.send(Op::Flush(tx)).unwrap();
        rx.blocking_recv().unwrap().unwrap();
        let left: Vec<i64> = db.sql(|tx| {
            let mut stmt = tx.prepare("SELECT id FROM workpool_jobs ORDER BY id")?;
            stmt.query_map([], |r| r.get(0))?.collect()
        });
        assert_eq!(left, [ids[1], ids[2]]);
    }
}
