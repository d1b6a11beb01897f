//! `pg`: the PostgreSQL store against PostgreSQL itself and against
//! `riverqueue` (River's Rust client), side by side on the same server in
//! one run. The ceiling is the store's own claim and end statements in a
//! tight loop with no pool around them (and, for enqueue, a plain batch
//! insert). Prints a Markdown section.
//!
//! Flags: `--quick` (a smoke run), `--jobs N` (default 20,000), `--url URL`
//! (an admin URL of the server; default the machine's, or `WORKPOOL_PG_URL`).
//! The benchmark creates, and drops at the end, the database
//! `workpool_bench`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use riverqueue::{
    Client, Job as RiverJob, JobArgs, QueueConfig, WorkContext, WorkOutcome, Workers,
};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use workpool::store::postgres::{NewJob, PgStore};
use workpool::{Job, JobContext, Pool};

/// Jobs per enqueue statement, for every side.
const ENQUEUE_BATCH: usize = 1000;

const DB: &str = "workpool_bench";

#[derive(Clone, Debug, Deserialize, JobArgs, Serialize)]
#[river(kind = "bench")]
struct Bench {
    n: u64,
}

struct Args {
    /// Seconds of a sustained run instead of the comparison.
    soak: Option<u64>,
    quick: bool,
    jobs: usize,
    admin: String,
}

fn args() -> Args {
    let mut a = Args {
        soak: None,
        quick: false,
        jobs: 20_000,
        admin: std::env::var("WORKPOOL_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                a.quick = true;
                a.jobs = 2_000;
            }
            "--jobs" => a.jobs = it.next().and_then(|v| v.parse().ok()).expect("--jobs N"),
            "--url" => a.admin = it.next().expect("--url URL"),
            "--soak" => a.soak = Some(it.next().and_then(|v| v.parse().ok()).expect("--soak SECS")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// The URL of the benchmark's database on the admin URL's server.
fn bench_url(admin: &str) -> String {
    match admin.rsplit_once('/') {
        Some((server, rest)) => {
            let query = rest
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{server}/{DB}{query}")
        }
        None => panic!("not a URL: {admin}"),
    }
}

async fn recreate(admin: &str) {
    let mut c = PgConnection::connect(admin).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {DB}")))
        .execute(&mut c)
        .await
        .unwrap();
}

/// Empties every table and vacuums, so each measurement starts alike.
async fn reset(pool: &PgPool) {
    // One statement each: VACUUM runs outside a transaction.
    for sql in [
        "TRUNCATE workpool.jobs, raw.jobs, river_job RESTART IDENTITY",
        "VACUUM ANALYZE workpool.jobs",
        "VACUUM ANALYZE raw.jobs",
        "VACUUM ANALYZE river_job",
    ] {
        sqlx::raw_sql(sql).execute(pool).await.unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn payload(i: usize) -> Vec<u8> {
    (i as u64).to_le_bytes().to_vec()
}

// --- the ceiling: the store's statements, nothing around them ---

async fn raw_enqueue(pool: &PgPool, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(ENQUEUE_BATCH) {
        let payloads: Vec<Vec<u8>> = chunk.iter().map(|i| payload(*i)).collect();
        sqlx::query(
            "INSERT INTO raw.jobs (queue, payload, state, max_attempts)
             SELECT 'default', p, 'available', 1 FROM unnest($1::bytea[]) AS p",
        )
        .bind(payloads)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// What the store's claim returns: ID, payload, attempt, priority, run at,
/// timeout, ticket.
type ClaimedRow = (i64, Vec<u8>, i32, i32, i64, Option<i64>, Option<i64>);

/// Claims `batch` with the store's claim and ends them with the store's
/// end statement, until nothing is left; jobs done.
async fn raw_drain(pool: &PgPool, batch: usize) -> usize {
    let mut done = 0;
    loop {
        // The store's claim statement, word for word.
        let claimed: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE raw.jobs SET state = 'running', attempt = attempt + 1, owner = $3, claim = $4,
                    started_at = now()
              WHERE id IN (SELECT id FROM raw.jobs
                            WHERE queue = $1 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= now()
                            ORDER BY priority, run_at, id LIMIT $2
                            FOR UPDATE SKIP LOCKED)
             RETURNING id, payload, attempt, priority, (extract(epoch FROM run_at) * 1000)::bigint, timeout_ms,
                       CASE WHEN enqueued_by = $3 THEN ticket END",
        )
        .bind("default")
        .bind(batch as i64)
        .bind(-1i64)
        .bind(0i64)
        .fetch_all(pool)
        .await
        .unwrap();
        if claimed.is_empty() {
            return done;
        }
        let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
        let attempts: Vec<i32> = claimed.iter().map(|c| c.2).collect();
        let states = vec!["completed"; ids.len()];
        let errors: Vec<Option<String>> = vec![None; ids.len()];
        let delays: Vec<Option<i64>> = vec![None; ids.len()];
        let undo = vec![false; ids.len()];
        // The store's end statement, word for word, in a transaction as the
        // store writes it.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE raw.jobs AS j SET
                state = e.state,
                attempt = j.attempt - e.undo::int,
                run_at = CASE WHEN e.delay_ms IS NULL THEN j.run_at
                              ELSE now() + e.delay_ms * interval '1 millisecond' END,
                finished_at = CASE WHEN e.state IN ('completed', 'failed', 'cancelled') THEN now() END,
                started_at = CASE WHEN e.undo THEN NULL ELSE j.started_at END,
                owner = NULL,
                errors = CASE WHEN e.error IS NULL THEN j.errors ELSE j.errors ||
                    jsonb_build_array(jsonb_build_object('attempt', e.attempt, 'at', now(), 'error', e.error)) END
               FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bool[],
                           $7::text[])
                    AS e(id, attempt, state, error, delay_ms, undo, was)
              WHERE j.id = e.id AND j.attempt = e.attempt AND j.state = e.was",
        )
        .bind(ids)
        .bind(attempts)
        .bind(states)
        .bind(errors)
        .bind(delays)
        .bind(undo)
        .bind(vec!["running"; claimed.len()])
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        done += claimed.len();
    }
}

// --- workpool ---

async fn store(url: &str) -> PgStore {
    PgStore::options(url)
        .max_connections(10)
        .open()
        .await
        .unwrap()
}

async fn workpool_enqueue(store: &PgStore, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(ENQUEUE_BATCH) {
        let jobs = chunk.iter().map(|i| NewJob::new(payload(*i))).collect();
        store.enqueue(jobs).await.unwrap();
    }
}

/// Runs every job on `workers` workers; until every end is written.
async fn workpool_drain(store: &PgStore, workers: usize) -> u64 {
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(workers)
        .store(store.clone())
        .build(|_job: Job<Vec<u8>>, _ctx: JobContext| async { Ok::<(), std::io::Error>(()) })
        .unwrap();
    let report = pool.shutdown(Duration::from_secs(3600)).await;
    store.flush().await.unwrap();
    report.stats().succeeded
}

// --- riverqueue ---

static RIVER_DONE: AtomicUsize = AtomicUsize::new(0);

async fn river_work(
    _ctx: WorkContext,
    _job: RiverJob<Bench>,
) -> Result<WorkOutcome, riverqueue::BoxError> {
    RIVER_DONE.fetch_add(1, Ordering::Relaxed);
    Ok(WorkOutcome::Complete)
}

fn river_client(pool: &PgPool, workers: usize) -> Client {
    let mut w = Workers::new();
    w.add_fn(river_work).unwrap();
    // As River's own benchmark (`riverqueue bench`) sets its queue.
    Client::builder(pool.clone())
        .workers(w)
        .queue(
            "default",
            QueueConfig::new(workers)
                .with_fetch_cooldown(Duration::from_millis(2))
                .with_fetch_poll_interval(Duration::from_millis(20)),
        )
        .build()
        .unwrap()
}

async fn river_enqueue(client: &Client, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(ENQUEUE_BATCH) {
        let jobs: Vec<Bench> = chunk.iter().map(|i| Bench { n: *i as u64 }).collect();
        client.insert_many(jobs).await.unwrap();
    }
}

/// Starts the client and waits until the database holds `n` completed jobs.
async fn river_drain(pool: &PgPool, client: &Client, n: usize) {
    let mut run = client.start().unwrap();
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM river_job WHERE state = 'completed'")
                .fetch_one(pool)
                .await
                .unwrap();
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.stop().await.unwrap();
}

// --- latency ---

/// Enqueue-to-start on an idle pool of 4 workers, the job enqueued by
/// another store (as from another machine): p50 and p99 in ms.
async fn workpool_latency(url: &str, samples: usize) -> (f64, f64) {
    let producer = store(url).await;
    let consumer = store(url).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(4)
        .store(consumer.clone())
        .build(move |_job: Job<Vec<u8>>, _ctx: JobContext| {
            let _ = tx.send(Instant::now());
            async { Ok::<(), std::io::Error>(()) }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = Vec::new();
    for i in 0..samples {
        let t = Instant::now();
        producer
            .enqueue(vec![NewJob::new(payload(i))])
            .await
            .unwrap();
        let started = rx.recv().await.unwrap();
        lat.push(started.duration_since(t).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.shutdown(Duration::from_secs(5)).await;
    producer.close().await.unwrap();
    consumer.close().await.unwrap();
    percentiles(lat)
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

struct Row {
    name: String,
    raw: f64,
    workpool: f64,
    river: f64,
}

/// A sustained run: 50 workers, a producer that keeps 20,000 jobs waiting,
/// finished jobs kept (the default retention); jobs done each minute.
async fn soak(url: &str, secs: u64) {
    let store = store(url).await;
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(50)
        .store(store.clone())
        .build(move |_job: Job<Vec<u8>>, _ctx: JobContext| {
            d.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), std::io::Error>(()) }
        })
        .unwrap();
    let producer = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut enqueued = 0usize;
            loop {
                if enqueued - done.load(Ordering::Relaxed).min(enqueued) < 20_000 {
                    workpool_enqueue(&store, ENQUEUE_BATCH).await;
                    enqueued += ENQUEUE_BATCH;
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mut per_minute = Vec::new();
    let mut last = 0;
    for minute in 1..=secs.div_ceil(60) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let now = done.load(Ordering::Relaxed);
        per_minute.push((now - last) as f64 / 60.0);
        last = now;
        println!(
            "minute {minute}: {:.0} jobs/s",
            per_minute[per_minute.len() - 1]
        );
    }
    producer.abort();
    pool.shutdown_without_draining(Duration::from_secs(5)).await;
    let first = per_minute[0];
    let last = per_minute[per_minute.len() - 1];
    println!(
        "sustained {} minutes: first minute {first:.0} jobs/s, last {last:.0} jobs/s ({:.0} % of the first)",
        per_minute.len(),
        100.0 * last / first
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    if let Some(secs) = a.soak {
        recreate(&a.admin).await;
        soak(&bench_url(&a.admin), secs).await;
        drop_db(&a.admin).await;
        return;
    }
    let n = a.jobs;
    let rounds = if a.quick { 1 } else { 3 };
    recreate(&a.admin).await;
    let url = bench_url(&a.admin);
    let pool = PgPool::connect(&url).await.unwrap();
    riverqueue::migrate::PostgresMigrator::new(pool.clone())
        .migrate_up()
        .await
        .unwrap();
    let wp = store(&url).await;
    PgStore::options(&url)
        .schema("raw")
        .migrate()
        .await
        .unwrap();

    let mut rows = Vec::new();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();

    let (mut raw, mut ours, mut river) = (Vec::new(), Vec::new(), Vec::new());
    let client = river_client(&pool, 8);
    for _ in 0..rounds {
        reset(&pool).await;
        let t = Instant::now();
        raw_enqueue(&pool, n).await;
        raw.push(rate(t.elapsed()));
        let t = Instant::now();
        workpool_enqueue(&wp, n).await;
        ours.push(rate(t.elapsed()));
        let t = Instant::now();
        river_enqueue(&client, n).await;
        river.push(rate(t.elapsed()));
    }
    rows.push(Row {
        name: format!("enqueue, {ENQUEUE_BATCH} per statement"),
        raw: median(raw),
        workpool: median(ours),
        river: median(river),
    });

    for workers in [8usize, 50] {
        let (mut raw, mut ours, mut river) = (Vec::new(), Vec::new(), Vec::new());
        let client = river_client(&pool, workers);
        for _ in 0..rounds {
            reset(&pool).await;
            raw_enqueue(&pool, n).await;
            workpool_enqueue(&wp, n).await;
            river_enqueue(&client, n).await;
            sqlx::raw_sql("VACUUM ANALYZE")
                .execute(&pool)
                .await
                .unwrap();

            let t = Instant::now();
            assert_eq!(raw_drain(&pool, workers).await, n);
            raw.push(rate(t.elapsed()));
            let t = Instant::now();
            assert_eq!(workpool_drain(&wp, workers).await, n as u64);
            ours.push(rate(t.elapsed()));
            let t = Instant::now();
            river_drain(&pool, &client, n).await;
            river.push(rate(t.elapsed()));
        }
        rows.push(Row {
            name: format!(
                "end to end, {workers} workers (ceiling: claim {workers}, end {workers} per statement)"
            ),
            raw: median(raw),
            workpool: median(ours),
            river: median(river),
        });
    }
    reset(&pool).await;
    let (p50, p99) = workpool_latency(&url, if a.quick { 20 } else { 300 }).await;
    wp.close().await.unwrap();
    pool.close().await;
    report(&rows, n, rounds, p50, p99);
    drop_db(&a.admin).await;
}

async fn drop_db(admin: &str) {
    let mut c = PgConnection::connect(admin).await.unwrap();
    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await;
}

fn report(rows: &[Row], n: usize, rounds: usize, p50: f64, p99: f64) {
    println!("## The PostgreSQL store\n");
    println!(
        "`benchmarks/pg.sh`: {n} trivial jobs per workload on the machine's PostgreSQL 15 (local; its settings, autovacuum off among them), each cell the median of {rounds} run{}. \
         The ceiling is the store's own claim and end statements in a tight loop on one connection with no pool around them (for enqueue, a plain `INSERT … SELECT FROM unnest`). \
         `riverqueue` {} is River's Rust client (`insert_many` for enqueue) with its default batched completion and the fetch settings of its own benchmark (`riverqueue bench`: cooldown 2 ms, poll 20 ms), the same number of workers, the same server, in the same run.\n",
        if rounds == 1 { "" } else { "s" },
        RIVER_VERSION,
    );
    println!(
        "| workload | PostgreSQL alone (ceiling) | workpool | riverqueue | workpool / ceiling | workpool / riverqueue |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {:.0} jobs/s | {:.0} jobs/s | {:.0} jobs/s | {:.0} % | {:.2} × |",
            r.name,
            r.raw,
            r.workpool,
            r.river,
            100.0 * r.workpool / r.raw,
            r.workpool / r.river
        );
    }
    println!(
        "\nEnqueue-to-start on an idle pool of 4 workers, each job enqueued by another store (as from another machine) and woken by `LISTEN`/`NOTIFY`: p50 {p50:.2} ms, p99 {p99:.2} ms."
    );
    println!(
        "\nThe ceiling runs claim then end, one after the other, on one connection; the store overlaps claims and batched ends on several, which is how it passes it. Enqueue writes the eight columns of a job where the ceiling writes one array of payloads. A sustained run (`benchmarks/pg.sh --soak 600`) and its figures: RELIABILITY.md."
    );
}

const RIVER_VERSION: &str = "0.5.0";
