//! The store's work in the background: the writer of ends (batched), the
//! upkeep (heartbeat, leadership, rescue, schedule, prune, cancel signals),
//! the listener for notifications, and the debounced notifier.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schema::Sql;
use super::{PgError, PgOptions};
use crate::store::rows::{End, Inserted, NewRow, Running, now_ms};
use crate::sync::lock;

/// What the tasks share with the store.
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) sql: Sql,
    pub(crate) channel: String,
    pub(crate) owner: i64,
    pub(crate) options: PgOptions,
    pub(crate) running: Running,
    /// A notification said jobs were enqueued in this store's queue.
    pub(crate) arrivals: Notify,
    /// A notification said a cancel was asked for.
    pub(crate) cancels: Notify,
    /// Wakes the notifier.
    pub(crate) notify: Notify,
    /// Queues the notifier tells of.
    pub(crate) to_notify: Mutex<HashSet<String>>,
    /// Numbers this process's claims, so that one whose answer was lost
    /// can be undone.
    pub(crate) claims: std::sync::atomic::AtomicI64,
    /// A vacuum runs (one at a time).
    pub(crate) vacuuming: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Tells idle workers everywhere, soon, that `queues` have new jobs.
    pub(crate) fn notify_soon<'a>(&self, queues: impl Iterator<Item = &'a str>) {
        let mut to = lock(&self.to_notify);
        for q in queues {
            if !to.contains(q) {
                to.insert(q.to_string());
            }
        }
        drop(to);
        self.notify.notify_one();
    }
}

/// Work for the writer of ends.
pub(crate) enum Write {
    End {
        id: i64,
        attempt: u32,
        end: End,
    },
    CancelWaiting(i64),
    /// Undoes the claim with this number: its answer never arrived.
    UndoClaim(i64),
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<Result<(), PgError>>),
}

/// The most ends in one statement.
const MAX_BATCH: usize = 2000;

/// How long a flush waits for a database that fails, before it answers
/// with the error (the ends stay queued).
const FLUSH_PATIENCE: Duration = Duration::from_secs(10);

/// How often a process with running jobs looks for cancels asked for them
/// (a notification makes it look at once).
const CANCEL_LOOK: Duration = Duration::from_millis(250);

/// How often the leader deletes finished jobs past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The shortest time between two notifications of the same queue from this
/// process: enqueues in between share the later one.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// Starts the tasks; returns the channel to the writer of ends.
pub(crate) fn spawn(
    shared: &std::sync::Arc<Shared>,
    stop: &CancellationToken,
) -> mpsc::UnboundedSender<Write> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_ends(shared.clone(), rx));
    tokio::spawn(upkeep(shared.clone(), stop.clone()));
    tokio::spawn(listen(shared.clone(), stop.clone()));
    tokio::spawn(notifier(shared.clone(), stop.clone()));
    tx
}

/// This machine's name, for the owners table.
pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Inserts rows; for a unique key already present, finds the job there.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    s: &Shared,
    rows: &[NewRow],
) -> Result<Vec<Inserted>, PgError> {
    let sql = &s.sql;
    let now = now_ms();
    let mut queue = Vec::with_capacity(rows.len());
    let mut payload = Vec::with_capacity(rows.len());
    let mut max_attempts = Vec::with_capacity(rows.len());
    let mut priority = Vec::with_capacity(rows.len());
    let mut run_at = Vec::with_capacity(rows.len());
    let mut timeout = Vec::with_capacity(rows.len());
    let mut unique = Vec::with_capacity(rows.len());
    let mut ticket = Vec::with_capacity(rows.len());
    for r in rows {
        queue.push(r.queue.as_str());
        payload.push(r.payload.as_slice());
        max_attempts.push(r.max_attempts.min(i32::MAX as u32) as i32);
        priority.push(r.priority);
        // Now is the server's now: clocks differ between machines.
        run_at.push((r.run_at > now).then_some(r.run_at));
        timeout.push(r.timeout_ms);
        unique.push(r.unique_key.as_deref());
        ticket.push(r.ticket.map(|t| t as i64));
    }
    let plain = rows.iter().all(|r| r.unique_key.is_none());
    let text = if plain {
        &sql.insert_plain
    } else {
        &sql.insert
    };
    let got = sqlx::query(AssertSqlSafe(text.clone()))
        .bind(queue)
        .bind(payload)
        .bind(max_attempts)
        .bind(priority)
        .bind(run_at)
        .bind(timeout)
        .bind(unique)
        .bind(ticket)
        .bind(s.owner)
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::sql)?;
    if plain {
        let mut ids = got
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PgError::sql)?;
        ids.sort_unstable();
        return Ok(ids
            .into_iter()
            .map(|id| Inserted {
                id,
                existing: None,
                same_payload: true,
            })
            .collect());
    }
    let mut found = Vec::with_capacity(rows.len());
    for (row, r) in got.iter().zip(rows) {
        let id: i64 = row.try_get(0).map_err(PgError::sql)?;
        let inserted: bool = row.try_get(1).map_err(PgError::sql)?;
        if inserted {
            found.push(Inserted {
                id,
                existing: None,
                same_payload: true,
            });
            continue;
        }
        let key = r.unique_key.as_deref().unwrap_or_default();
        let there = sqlx::query(AssertSqlSafe(sql.existing.clone()))
            .bind(&r.queue)
            .bind(key)
            .bind(r.payload.as_slice())
            .fetch_optional(&mut *conn)
            .await
            .map_err(PgError::sql)?
            .ok_or_else(|| {
                PgError::Sql(format!(
                    "the unique key {key:?} was taken by a transaction not yet visible here; enqueue again"
                ))
            })?;
        found.push(Inserted {
            id: there.try_get(0).map_err(PgError::sql)?,
            existing: Some(there.try_get(1).map_err(PgError::sql)?),
            same_payload: there.try_get(2).map_err(PgError::sql)?,
        });
    }
    Ok(found)
}

/// The columns of the end statement, one entry per end.
#[derive(Default)]
struct Ends {
    id: Vec<i64>,
    attempt: Vec<i32>,
    state: Vec<&'static str>,
    error: Vec<Option<String>>,
    delay_ms: Vec<Option<i64>>,
    undo: Vec<bool>,
}

impl Ends {
    fn push(&mut self, id: i64, attempt: u32, end: &End) {
        let (state, error, delay, undo) = match end {
            End::Completed => ("completed", None, None, false),
            End::Failed(e) => ("failed", Some(e.clone()), None, false),
            End::Cancelled(e) => ("cancelled", Some(e.clone()), None, false),
            End::Retry { at, error } => (
                "retryable",
                Some(error.clone()),
                Some((at - now_ms()).max(0)),
                false,
            ),
            End::Unclaim => ("available", None, None, true),
            End::Interrupted(e) => ("available", Some(e.clone()), None, false),
        };
        self.id.push(id);
        self.attempt.push(attempt.min(i32::MAX as u32) as i32);
        self.state.push(state);
        self.error.push(error);
        self.delay_ms.push(delay);
        self.undo.push(undo);
    }
}

/// Writes a batch: the ends in one statement, cancels of waiting jobs in
/// another, in one transaction.
async fn write_batch(
    s: &Shared,
    ends: &Ends,
    cancels: &[i64],
    undo: &[i64],
) -> Result<(), sqlx::Error> {
    let mut tx = s.pool.begin().await?;
    // A large batch would otherwise be planned as a scan of the whole table
    // (its dead rows too) against the batch: each row is found by its key.
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await?;
    if !ends.id.is_empty() {
        sqlx::query(AssertSqlSafe(s.sql.end.clone()))
            .bind(&ends.id)
            .bind(&ends.attempt)
            .bind(&ends.state)
            .bind(&ends.error)
            .bind(&ends.delay_ms)
            .bind(&ends.undo)
            .bind(vec!["running"; ends.id.len()])
            .execute(&mut *tx)
            .await?;
    }
    for id in cancels {
        sqlx::query(AssertSqlSafe(s.sql.cancel_waiting.clone()))
            .bind(Some(*id))
            .bind(None::<&str>)
            .execute(&mut *tx)
            .await?;
    }
    for claim in undo {
        sqlx::query(AssertSqlSafe(s.sql.undo_claim.clone()))
            .bind(s.owner)
            .bind(*claim)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The writer of ends: takes what is waiting (up to [`MAX_BATCH`]), writes
/// it, answers the flushes among it. A failed write is tried again with
/// backoff for as long as the process runs, so no end is dropped while the
/// database is away; flushes give up after [`FLUSH_PATIENCE`].
async fn write_ends(s: std::sync::Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
        let mut ends = Ends::default();
        let mut cancels = Vec::new();
        let mut undo = Vec::new();
        let mut flushes = Vec::new();
        for w in buf.drain(..) {
            match w {
                Write::End { id, attempt, end } => ends.push(id, attempt, &end),
                Write::CancelWaiting(id) => cancels.push(id),
                Write::UndoClaim(claim) => undo.push(claim),
                Write::Flush(reply) => flushes.push(reply),
            }
        }
        let began = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            match write_batch(&s, &ends, &cancels, &undo).await {
                Ok(()) => {
                    flushes.drain(..).for_each(|f| drop(f.send(Ok(()))));
                    break;
                }
                Err(e) => {
                    tracing::warn!(target: "workpool", error = %e, "postgres store: writing the ends of attempts failed; trying again");
                    if began.elapsed() >= FLUSH_PATIENCE {
                        let e = PgError::sql(e);
                        flushes.drain(..).for_each(|f| drop(f.send(Err(e.clone()))));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Deletes finished jobs older than `age`, in slices; how many.
pub(crate) async fn prune(s: &Shared, age: Duration) -> Result<u64, PgError> {
    let mut total = 0;
    loop {
        let n = sqlx::query(AssertSqlSafe(s.sql.prune.clone()))
            .bind(age.as_millis().min(i64::MAX as u128) as i64)
            .execute(&s.pool)
            .await
            .map_err(PgError::sql)?
            .rows_affected();
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}

/// Releases what this owner still holds and removes its row.
pub(crate) async fn deregister(s: &Shared) {
    let released = sqlx::query(AssertSqlSafe(s.sql.release_own.clone()))
        .bind("its process stopped")
        .bind(s.owner)
        .execute(&s.pool)
        .await;
    let removed = sqlx::query(AssertSqlSafe(s.sql.deregister.clone()))
        .bind(s.owner)
        .execute(&s.pool)
        .await;
    if let Err(e) = released.and(removed) {
        tracing::warn!(target: "workpool", error = %e, "postgres store: could not remove this process's owner row; its lease runs out instead");
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Keeps this owner alive, and while it leads, does the maintenance.
async fn upkeep(s: std::sync::Arc<Shared>, stop: CancellationToken) {
    let lease = s.options.lease;
    let mut beat = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(CANCEL_LOOK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_prune = Instant::now();
    let mut next_vacuum = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = beat.tick() => {
                if let Err(e) = beat_once(&s, &mut next_prune, &mut next_vacuum).await {
                    tracing::warn!(target: "workpool", error = %e, "postgres store: the heartbeat failed; trying again");
                }
            }
            _ = look.tick() => fire_cancels(&s).await,
            () = s.cancels.notified() => fire_cancels(&s).await,
        }
    }
}

/// One heartbeat: this owner's row, then the lead and, if this process
/// has it, rescue, schedule and (now and then) prune.
async fn beat_once(
    s: &std::sync::Arc<Shared>,
    next_prune: &mut Instant,
    next_vacuum: &mut Instant,
) -> Result<(), sqlx::Error> {
    let beat = sqlx::query(AssertSqlSafe(s.sql.heartbeat.clone()))
        .bind(s.owner)
        .execute(&s.pool)
        .await?;
    if beat.rows_affected() == 0 {
        // Taken for gone (the database was away for a lease): this
        // process's running jobs were rescued, and their late ends are
        // fenced off. It goes on under the same ID.
        tracing::warn!(target: "workpool", owner = s.owner, "postgres store: this process's lease had run out; its running jobs run again elsewhere");
        sqlx::query(AssertSqlSafe(s.sql.reregister.clone()))
            .bind(s.owner)
            .bind(host())
            .bind(std::process::id() as i32)
            .bind(ms(s.options.lease))
            .execute(&s.pool)
            .await?;
    }
    let lead = sqlx::query(AssertSqlSafe(s.sql.lead.clone()))
        .bind(s.owner)
        .bind(ms(s.options.lease))
        .fetch_optional(&s.pool)
        .await?;
    if lead.is_none() {
        return Ok(());
    }
    let rescued = sqlx::query(AssertSqlSafe(s.sql.rescue.clone()))
        .bind("its lease ran out")
        .fetch_all(&s.pool)
        .await?;
    let due = sqlx::query(AssertSqlSafe(s.sql.schedule.clone()))
        .fetch_all(&s.pool)
        .await?;
    let queues: HashSet<String> = rescued
        .iter()
        .chain(&due)
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    s.notify_soon(queues.iter().map(String::as_str));
    if let Some(keep) = s.options.retention
        && Instant::now() >= *next_prune
    {
        *next_prune = Instant::now() + PRUNE_EVERY;
        if let Err(e) = prune(s, keep).await {
            tracing::warn!(target: "workpool", error = %e, "postgres store: pruning finished jobs failed");
        }
    }
    if let Some(every) = s.options.vacuum
        && Instant::now() >= *next_vacuum
    {
        *next_vacuum = Instant::now() + every;
        vacuum(s);
    }
    Ok(())
}

/// Vacuums and analyzes the jobs table in a task of its own (the heartbeat
/// must not wait for it), unless a vacuum still runs.
fn vacuum(s: &std::sync::Arc<Shared>) {
    use std::sync::atomic::Ordering;
    if s.vacuuming.swap(true, Ordering::SeqCst) {
        return;
    }
    let s = s.clone();
    tokio::spawn(async move {
        let done = sqlx::query(AssertSqlSafe(s.sql.vacuum.clone()))
            .execute(&s.pool)
            .await;
        if let Err(e) = done {
            tracing::debug!(target: "workpool", error = %e, "postgres store: vacuum failed (the table's owner may vacuum it)");
        }
        s.vacuuming.store(false, Ordering::SeqCst);
    });
}

/// Fires the cancel signals of this process's running jobs whose cancel
/// was asked for.
async fn fire_cancels(s: &Shared) {
    if lock(&s.running).is_empty() {
        return;
    }
    let asked = sqlx::query_scalar::<_, i64>(AssertSqlSafe(s.sql.cancels_asked.clone()))
        .bind(s.owner)
        .fetch_all(&s.pool)
        .await;
    let Ok(ids) = asked else { return };
    let running = lock(&s.running);
    for id in ids {
        if let Some(c) = running.get(&id) {
            c.fire();
        }
    }
}

/// Listens for notifications: enqueues in this store's queue wake the
/// idle workers, anything else (a cancel) makes the upkeep look for
/// cancels. A lost connection is made again, with backoff, for as long as
/// the store lives; the workers poll meanwhile, and look once when it is
/// back, for what came while nobody listened.
async fn listen(s: std::sync::Arc<Shared>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(50);
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&s.pool).await?;
            l.listen(&s.channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(target: "workpool", error = %e, "postgres store: cannot listen for new jobs; polling meanwhile, trying again");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        };
        pause = Duration::from_millis(50);
        s.arrivals.notify_one();
        loop {
            let got = tokio::select! {
                () = stop.cancelled() => return,
                got = listener.try_recv() => got,
            };
            match got {
                Ok(Some(n)) if n.payload() == s.options.queue => s.arrivals.notify_one(),
                Ok(Some(_)) => s.cancels.notify_one(),
                Ok(None) => {
                    // The connection was lost; the next receive makes it
                    // again and listens anew.
                    tracing::warn!(target: "workpool", "postgres store: the listening connection was lost; listening again");
                    s.arrivals.notify_one();
                }
                Err(e) => {
                    tracing::warn!(target: "workpool", error = %e, "postgres store: listening failed; polling meanwhile, trying again");
                    s.arrivals.notify_one();
                    break;
                }
            }
        }
    }
}

/// Sends the notifications [`Shared::notify_soon`] asked for: at once,
/// then at most one per [`DEBOUNCE`].
async fn notifier(s: std::sync::Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = s.notify.notified() => {}
        }
        let queues: Vec<String> = lock(&s.to_notify).drain().collect();
        if queues.is_empty() {
            continue;
        }
        let sent = sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
            .bind(&s.channel)
            .bind(queues)
            .execute(&s.pool)
            .await;
        if let Err(e) = sent {
            tracing::debug!(target: "workpool", error = %e, "postgres store: a notification was not sent; workers poll");
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}
