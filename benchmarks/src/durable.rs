//! `durable`: the SQLite store against SQLite itself. The same statements
//! the store runs, in a tight rusqlite loop with no pool around them, are
//! the ceiling; workpool's figures are reported as a share of it, measured
//! in the same run on the same machine. Prints a Markdown section.
//!
//! Flags: `--quick` (a smoke run), `--jobs N` (default 100,000).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::Notify;
use workpool::store::sqlite::{NewJob, SqliteStore};
use workpool::{Job, JobContext, Pool};

/// Rows per enqueue transaction, for both sides.
const ENQUEUE_BATCH: usize = 100;

struct Temp(PathBuf);

impl Temp {
    fn new(name: &str) -> Temp {
        let dir =
            std::env::temp_dir().join(format!("workpool-durable-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        Temp(path)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// A connection set up as the store sets up its own, on a file the store
/// created (so the schema is the store's). Its claims use owner -1, which
/// no store process has (the store's writer may still be ending when the
/// loop starts).
fn raw(path: &Path) -> Connection {
    drop(SqliteStore::open(path).unwrap());
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    conn
}

fn raw_enqueue(conn: &mut Connection, n: usize) {
    let now = now_ms();
    for chunk in (0..n).collect::<Vec<_>>().chunks(ENQUEUE_BATCH) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO workpool_jobs (queue, payload, state, max_attempts, priority, run_at, timeout_ms, unique_key, created_at)
                     VALUES (?1, ?2, CASE WHEN ?5 > ?8 THEN 'scheduled' ELSE 'available' END, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT DO NOTHING",
                )
                .unwrap();
            for i in chunk {
                let payload = (*i as u64).to_le_bytes().to_vec();
                let none: Option<i64> = None;
                stmt.execute(params!["default", payload, 1, 0, now, none, none, now])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

/// Claims `batch` at a time and completes them in the next transaction,
/// with the store's statements, until none is left; jobs done.
fn raw_drain(conn: &mut Connection, batch: usize) -> usize {
    let mut done = 0;
    loop {
        let now = now_ms();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let claimed: Vec<(i64, u32)> = {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE workpool_jobs
                        SET state = 'running', attempt = attempt + 1, owner = -1, lease_until = ?3, started_at = ?2
                      WHERE id IN (SELECT id FROM workpool_jobs
                                    WHERE queue = ?1 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= ?2
                                    ORDER BY priority, run_at, id LIMIT ?4)
                     RETURNING id, payload, attempt, priority, run_at, timeout_ms",
                )
                .unwrap();
            stmt.query_map(params!["default", now, now + 30_000, batch as i64], |r| {
                Ok((r.get(0)?, r.get(2)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        tx.commit().unwrap();
        if claimed.is_empty() {
            return done;
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE workpool_jobs SET state = 'completed', finished_at = ?3, lease_until = NULL
                      WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
                )
                .unwrap();
            for (id, attempt) in &claimed {
                stmt.execute(params![id, attempt, now]).unwrap();
            }
        }
        tx.commit().unwrap();
        done += claimed.len();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn store_enqueue(store: &SqliteStore, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(ENQUEUE_BATCH) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::new((*i as u64).to_le_bytes().to_vec()))
            .collect();
        store.enqueue(jobs).await.unwrap();
    }
}

/// Runs every job in the file on `workers` workers; jobs done.
async fn pool_drain(store: &SqliteStore, workers: usize) -> u64 {
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(workers)
        .store(store.clone())
        .build(|_job: Job<Vec<u8>>, _ctx: JobContext| async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    let report = pool.shutdown(Duration::from_secs(3600)).await;
    report.stats().succeeded
}

/// One table row: the medians and their ratio.
fn row(workload: &str, (ceiling, ours): (Vec<f64>, Vec<f64>)) {
    let (c, o) = (median(ceiling), median(ours));
    println!(
        "| {workload} | {c:.0} jobs/s | {o:.0} jobs/s | {:.0} % |",
        100.0 * o / c
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

/// Enqueue-to-start on an idle pool: one job at a time, `samples` times.
async fn latency(samples: usize) -> (Duration, Duration) {
    let db = Temp::new("latency");
    let store = SqliteStore::open(&db.0).unwrap();
    let started = Arc::new(Notify::new());
    let s = started.clone();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(4)
        .store(store.clone())
        .build(move |_job: Job<Vec<u8>>, _ctx: JobContext| {
            let s = s.clone();
            async move {
                s.notify_one();
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = Instant::now();
        pool.submit_detached(Job::new(vec![1])).await.unwrap();
        started.notified().await;
        times.push(t.elapsed());
    }
    pool.shutdown(Duration::from_secs(10)).await;
    times.sort();
    (times[samples / 2], times[samples * 99 / 100])
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n: usize = args
        .iter()
        .position(|a| a == "--jobs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 5_000 } else { 100_000 });

    let reps = if quick { 1 } else { 3 };
    // Each cell: the median of `reps` runs, the ceiling and workpool taking
    // turns, so that a slow spell of the machine falls on both.
    let mut enqueue = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let db = Temp::new("raw-enqueue");
        let mut conn = raw(&db.0);
        let t = Instant::now();
        raw_enqueue(&mut conn, n);
        enqueue.0.push(rate(n, t.elapsed()));
        drop(db);
        let db = Temp::new("store-enqueue");
        let store = SqliteStore::open(&db.0).unwrap();
        let t = Instant::now();
        store_enqueue(&store, n).await;
        enqueue.1.push(rate(n, t.elapsed()));
        drop(store);
        drop(db);
    }

    println!("## The durable store (SQLite)\n");
    println!(
        "`benchmarks/durable.sh`: {n} trivial jobs, WAL with `synchronous=NORMAL`, on this machine's disk; each cell the median of {reps} runs. The ceiling is the store's own statements in a tight rusqlite loop with no pool around them; workpool's figure is a share of it, measured in the same run.\n"
    );
    println!("| workload | SQLite alone (ceiling) | workpool | share of the ceiling |");
    println!("| --- | --- | --- | --- |");
    row(
        &format!("enqueue, {ENQUEUE_BATCH} per transaction"),
        enqueue,
    );

    // End to end: enqueue in batches, claim, run, complete.
    for workers in [8, 64] {
        let mut e2e = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let db = Temp::new("raw-e2e");
            let mut conn = raw(&db.0);
            let t = Instant::now();
            raw_enqueue(&mut conn, n);
            let done = raw_drain(&mut conn, workers);
            assert_eq!(done, n);
            e2e.0.push(rate(n, t.elapsed()));
            drop(conn);
            drop(db);

            let db = Temp::new("store-e2e");
            let store = SqliteStore::open(&db.0).unwrap();
            let t = Instant::now();
            store_enqueue(&store, n).await;
            let done = pool_drain(&store, workers).await;
            assert_eq!(done as usize, n);
            e2e.1.push(rate(n, t.elapsed()));
            drop(store);
            drop(db);
        }
        row(
            &format!(
                "end to end ({workers} workers; ceiling: claim {workers}, complete {workers} per transaction)"
            ),
            e2e,
        );
    }

    let (p50, p99) = latency(if quick { 50 } else { 500 }).await;
    println!(
        "\nEnqueue-to-start on an idle pool of 4 workers (the job committed, then claimed; one at a time): p50 {:.2} ms, p99 {:.2} ms.\n",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}
