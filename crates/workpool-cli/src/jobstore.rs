//! The job store's subcommands: `enqueue`, `status`, `jobs`, `retry`,
//! `cancel` (and the opening of a store for `worker`). A record is stored
//! as the job's payload; it is never printed, as it may hold secrets.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use workpool::store::{JobRow, NewJob};

use crate::cli::{DbFlags, EnqueueArgs, JobsArgs, SelectArgs, StatusArgs};
use crate::db::{Open, Store};
use crate::input::Records;
use crate::sources;

/// Records per enqueue transaction.
const ENQUEUE_BATCH: usize = 512;

/// Opens the store for its queue (a SQLite file is created if missing),
/// or a usage error.
pub async fn open(
    db: &DbFlags,
    queue: &str,
    lease: Option<std::time::Duration>,
) -> Result<Store, String> {
    Store::open(Open {
        target: &db.db,
        queue,
        schema: &db.schema,
        create: true,
        lease,
    })
    .await
}

/// An existing store: the admin subcommands never create a SQLite file.
async fn open_existing(db: &DbFlags) -> Result<Store, String> {
    Store::open(Open {
        target: &db.db,
        queue: "default",
        schema: &db.schema,
        create: false,
        lease: None,
    })
    .await
}

/// `workpool migrate`.
pub async fn migrate(db: DbFlags) -> Result<i32, String> {
    let crate::db::Target::Postgres(url) = &db.db else {
        return Err("migrate is for PostgreSQL stores (a SQLite file migrates itself)".into());
    };
    let (from, to) = workpool::store::postgres::PgStore::options(url)
        .schema(&db.schema)
        .migrate()
        .await
        .map_err(|e| e.to_string())?;
    crate::report::say(&format!(
        "workpool: schema {} of {} is at version {to}{}\n",
        db.schema,
        db.db,
        if from == to {
            String::new()
        } else {
            format!(" (was {from})")
        }
    ));
    Ok(0)
}

/// `workpool enqueue`: every non-empty record, in batches, each committed
/// before the next is read. Returns the exit status.
pub async fn enqueue(args: EnqueueArgs) -> Result<i32, String> {
    let store = open(&args.store.db, &args.store.queue, None).await?;
    let input = sources::open(args.input.as_deref(), "--input")?;
    let mut records = Records::new(input, if args.null { 0 } else { b'\n' });
    let run_at = match (args.at, args.delay) {
        (Some(at), _) => Some(at),
        (None, Some(d)) => Some(SystemTime::now() + d),
        (None, None) => None,
    };
    let job = |record: Vec<u8>| {
        let mut j = NewJob::new(record)
            .queue(args.store.queue.clone())
            .priority(args.priority);
        if let Some(at) = run_at {
            j = j.run_at(at);
        }
        j
    };
    let (mut batch, mut total) = (Vec::new(), 0usize);
    loop {
        let next = records.next().await.map_err(|e| {
            format!("reading input failed after {total} records were enqueued: {e}")
        })?;
        let ended = next.is_none();
        if let Some(record) = next.filter(|r| !r.is_empty()) {
            batch.push(job(record));
        }
        if batch.len() >= ENQUEUE_BATCH || (ended && !batch.is_empty()) {
            let n = batch.len();
            store
                .enqueue(std::mem::take(&mut batch))
                .await
                .map_err(|e| {
                    format!(
                        "{e}; {total} records were enqueued before it, the {n} after them were not"
                    )
                })?;
            total += n;
        }
        if ended {
            break;
        }
    }
    store.close().await?;
    crate::report::say(&format!(
        "workpool: {total} job{} enqueued in {} (queue {})\n",
        if total == 1 { "" } else { "s" },
        args.store.db.db,
        args.store.queue
    ));
    Ok(0)
}

/// How long ago (or how far ahead) a time in ms since the epoch is.
fn relative(ms: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let d = Duration::from_secs((now - ms).unsigned_abs() / 1000);
    let text = match d.as_secs() {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    if ms > now {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// The last error a job's `errors` column holds.
fn last_error(errors: &str) -> String {
    serde_json::from_str::<Vec<serde_json::Value>>(errors)
        .ok()
        .and_then(|e| {
            e.last()
                .and_then(|v| v["error"].as_str().map(str::to_string))
        })
        .unwrap_or_default()
}

/// `workpool status`.
pub async fn status(args: StatusArgs) -> Result<i32, String> {
    let store = open_existing(&args.db).await?;
    let counts = store.counts().await?;
    let oldest = store.oldest_ready().await?;
    let failed = store.jobs(Some("failed"), 5).await?;
    store.close().await?;
    let mut out = String::new();
    if args.json {
        let json = serde_json::json!({
            "counts": counts.iter().map(|c| serde_json::json!({"queue": c.queue, "state": c.state, "count": c.count})).collect::<Vec<_>>(),
            "oldest_ready": oldest.as_ref().map(|j| serde_json::json!({"id": j.id, "queue": j.queue, "run_at_ms": j.run_at})),
            "recent_failures": failed.iter().map(|j| serde_json::json!({"id": j.id, "queue": j.queue, "attempts": j.attempt, "error": last_error(&j.errors)})).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{json}");
    } else {
        let _ = writeln!(out, "{:<16} {:<10} {:>10}", "queue", "state", "jobs");
        for c in &counts {
            let _ = writeln!(out, "{:<16} {:<10} {:>10}", c.queue, c.state, c.count);
        }
        if counts.is_empty() {
            let _ = writeln!(out, "(no jobs)");
        }
        if let Some(j) = &oldest {
            let _ = writeln!(
                out,
                "oldest ready: job {} in {}, due {}",
                j.id,
                j.queue,
                relative(j.run_at)
            );
        }
        for j in &failed {
            let _ = writeln!(
                out,
                "failed: job {} after {} attempts: {}",
                j.id,
                j.attempt,
                last_error(&j.errors)
            );
        }
    }
    print_out(&out)
}

/// `workpool jobs`.
pub async fn jobs(args: JobsArgs) -> Result<i32, String> {
    let store = open_existing(&args.db).await?;
    let rows = store.jobs(args.state.as_deref(), args.limit).await?;
    store.close().await?;
    let mut out = String::new();
    if !args.json {
        let _ = writeln!(
            out,
            "{:>8} {:<12} {:<10} {:>8} {:>9}  last error",
            "id", "queue", "state", "attempts", "run at"
        );
    }
    for j in &rows {
        if args.json {
            let _ = writeln!(out, "{}", row_json(j));
        } else {
            let attempts = format!("{}/{}", j.attempt, j.max_attempts);
            let _ = writeln!(
                out,
                "{:>8} {:<12} {:<10} {:>8} {:>9}  {}",
                j.id,
                j.queue,
                j.state,
                attempts,
                relative(j.run_at),
                last_error(&j.errors)
            );
        }
    }
    print_out(&out)
}

fn row_json(j: &JobRow) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "queue": j.queue, "state": j.state, "attempt": j.attempt,
        "max_attempts": j.max_attempts, "priority": j.priority, "run_at_ms": j.run_at,
        "errors": serde_json::from_str::<serde_json::Value>(&j.errors).unwrap_or_default(),
    })
}

/// `workpool retry` (`cancel` false) or `workpool cancel` (true).
pub async fn retry_or_cancel(args: SelectArgs, cancel: bool) -> Result<i32, String> {
    let store = open_existing(&args.db).await?;
    let (verb, allowed): (&str, &[&str]) = match cancel {
        true => (
            "cancelled",
            &["available", "scheduled", "retryable", "running"],
        ),
        false => ("made available", &["failed", "cancelled"]),
    };
    let mut done = 0u64;
    let mut missed = Vec::new();
    if let Some(state) = &args.state {
        if !allowed.contains(&state.as_str()) {
            return Err(format!(
                "only jobs that are {} can be {verb}",
                allowed.join(", ")
            ));
        }
        done = match cancel {
            true => store.cancel_all(state).await,
            false => store.retry_all(state).await,
        }?;
    }
    for &id in &args.ids {
        let changed = match cancel {
            true => store.cancel(id).await,
            false => store.retry(id).await,
        }?;
        if changed {
            done += 1;
        } else {
            missed.push(id.to_string());
        }
    }
    store.close().await?;
    crate::report::say(&format!(
        "workpool: {done} job{} {verb}\n",
        if done == 1 { "" } else { "s" }
    ));
    if !missed.is_empty() {
        crate::report::say(&format!(
            "workpool: not {verb}: {} (no such job, or not {})\n",
            missed.join(", "),
            allowed.join(", ")
        ));
        return Ok(1);
    }
    Ok(0)
}

/// Prints to stdout: a closed pipe is 141, another failure 1.
fn print_out(text: &str) -> Result<i32, String> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(141),
        Err(e) => {
            crate::report::say(&format!("workpool: writing failed: {e}\n"));
            Ok(1)
        }
    }
}
