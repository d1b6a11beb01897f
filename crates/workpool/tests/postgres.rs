//! The PostgreSQL store through the pool and its own calls, against the
//! machine's server: jobs run and are recorded, enqueue inside the
//! caller's transaction, shutdown releases, retries and cancels, a lost
//! listening connection, and clear errors.

#![cfg(feature = "postgres")]

#[path = "common/pg.rs"]
mod pg;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pg::TestSchema;
use proxy::Proxy;
use sqlx::Connection;
use tokio::sync::Notify;
use workpool::store::postgres::{NewJob, PgError, PgStore};
use workpool::{Job, JobContext, Outcome, Pool, RetryPolicy};

macro_rules! schema {
    ($name:expr) => {
        match TestSchema::new($name).await {
            Some(s) => s,
            None => return,
        }
    };
}

async fn count(store: &PgStore, state: &str) -> u64 {
    store
        .counts()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.state == state)
        .map(|c| c.count)
        .sum()
}

/// Waits (up to 30 s) until `state` holds `n` jobs.
async fn until_count(store: &PgStore, state: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = count(store, state).await;
        if c == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{state}: {c}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counting_pool(store: &PgStore, workers: usize) -> (Pool<Vec<u8>>, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let pool = Pool::builder()
        .workers(workers)
        .store(store.clone())
        .build(move |_job: Job<Vec<u8>>, _ctx: JobContext| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    (pool, ran)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_and_enqueued_jobs_run_and_are_recorded_completed() {
    let schema = schema!("basic");
    let store = schema.open().await;
    let ids = store
        .enqueue((0..50).map(|i| NewJob::new(format!("e{i}"))).collect())
        .await
        .unwrap();
    assert_eq!(ids.len(), 50);
    let (pool, ran) = counting_pool(&store, 4);
    let mut handles = Vec::new();
    for i in 0..20u8 {
        handles.push(pool.submit(Job::new(vec![i])).await.unwrap());
    }
    for h in handles {
        let outcome = h.await;
        assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    }
    let report = pool.shutdown(Duration::from_secs(30)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 70);
    assert_eq!(count(&store, "completed").await, 70);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_in_a_rolled_back_transaction_leaves_no_job() {
    let schema = schema!("tx");
    let store = schema.open().await;
    let mut tx = store.pool().begin().await.unwrap();
    store
        .enqueue_in(&mut tx, vec![NewJob::new("rolled back")])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(store.jobs(None, 10).await.unwrap().len(), 0);

    let mut tx = store.pool().begin().await.unwrap();
    let got = store
        .enqueue_in(&mut tx, vec![NewJob::new("committed")])
        .await
        .unwrap();
    // Not visible outside the transaction before it commits.
    assert_eq!(store.jobs(None, 10).await.unwrap().len(), 0);
    tx.commit().await.unwrap();
    let jobs = store.jobs(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, got[0].id);
    assert_eq!(jobs[0].state, "available");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_schedules_and_priorities() {
    let schema = schema!("unique");
    let store = schema.open().await;
    let first = store
        .enqueue_unique(vec![NewJob::new("a").unique_key("k")])
        .await
        .unwrap();
    assert_eq!(first[0].existing, None);
    let again = store
        .enqueue_unique(vec![
            NewJob::new("b").unique_key("k"),
            NewJob::new("c").unique_key("k2"),
        ])
        .await
        .unwrap();
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].existing.as_deref(), Some("available"));
    assert!(!again[0].same_payload);
    assert_eq!(again[1].existing, None);
    // Another queue may use the same key.
    let other = store
        .enqueue_unique(vec![NewJob::new("a").unique_key("k").queue("other")])
        .await
        .unwrap();
    assert_ne!(other[0].id, first[0].id);

    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    store
        .enqueue(vec![NewJob::new("later").run_at(later)])
        .await
        .unwrap();
    let urgent = store
        .enqueue(vec![NewJob::new("urgent").priority(-5)])
        .await
        .unwrap()[0];
    assert_eq!(count(&store, "scheduled").await, 1);
    // The oldest ready job is "a"; the first claimed is the urgent one.
    assert_eq!(store.oldest_ready().await.unwrap().unwrap().id, first[0].id);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = order.clone();
    let pool: Pool<String> = Pool::builder()
        .workers(1)
        .store(store.clone())
        .build(move |job: Job<String>, _ctx: JobContext| {
            o.lock().unwrap().push(job.id().as_u64().unwrap());
            async { Ok::<(), std::io::Error>(()) }
        })
        .unwrap();
    let report = pool.shutdown(Duration::from_secs(30)).await;
    assert!(report.is_clean(), "{report:?}");
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[0], urgent);
    assert_eq!(count(&store, "scheduled").await, 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_stored_and_exhausted_jobs_end_failed_with_every_error() {
    let schema = schema!("retry");
    let store = schema.open().await;
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(2)
        .retry(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .store(store.clone())
        .build(move |_job: Job<Vec<u8>>, _ctx: JobContext| {
            let n = t.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(std::io::Error::other(format!("try {n}"))) }
        })
        .unwrap();
    let handle = pool.submit(Job::new(b"x".to_vec())).await.unwrap();
    let outcome = handle.await;
    assert!(
        matches!(outcome, Outcome::Failed { attempts: 3, .. }),
        "{outcome:?}"
    );
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    let jobs = store.jobs(Some("failed"), 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].attempt, 3);
    for n in 0..3 {
        assert!(
            jobs[0].errors.contains(&format!("try {n}")),
            "{}",
            jobs[0].errors
        );
    }
    // Retried by hand: available again, with one more attempt.
    assert!(store.retry(jobs[0].id).await.unwrap());
    let again = store.jobs(None, 1).await.unwrap();
    assert_eq!(
        (again[0].state.as_str(), again[0].max_attempts),
        ("available", 4)
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_running_jobs_and_a_cancel_reaches_a_running_job() {
    let schema = schema!("cancel");
    let store = schema.open().await;
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let s = started.clone();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(2)
        .store(store.clone())
        .build(move |_job: Job<Vec<u8>>, ctx: JobContext| {
            let s = s.clone();
            async move {
                s.add_permits(1);
                ctx.cancelled().await;
                Err::<(), _>(std::io::Error::other("stopped"))
            }
        })
        .unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let ids = store
        .enqueue(vec![
            NewJob::new("one"),
            NewJob::new("two"),
            NewJob::new("three").run_at(later),
        ])
        .await
        .unwrap();
    started.acquire_many(2).await.unwrap().forget();
    until_count(&store, "running", 2).await;
    let running = store.jobs(Some("running"), 10).await.unwrap();
    // A cancel by ID from another store (another machine, as it were).
    let other = schema.open().await;
    assert!(other.cancel(running[0].id).await.unwrap());
    until_count(&store, "cancelled", 1).await;
    // The third waits; cancelling it by state ends it at once.
    assert_eq!(other.cancel_all("scheduled").await.unwrap(), 1);
    assert_eq!(count(&store, "cancelled").await, 2);
    // The last running one is released by a shutdown that stops it.
    let report = pool.shutdown_without_draining(Duration::from_secs(5)).await;
    assert_eq!(report.not_finished().len(), 1, "{report}");
    let jobs = store.jobs(None, 10).await.unwrap();
    let released: Vec<_> = jobs.iter().filter(|j| j.state == "available").collect();
    assert_eq!(released.len(), 1, "{jobs:?}");
    assert!(ids.contains(&released[0].id));
    assert!(other.cancel_all("completed").await.is_err());
    other.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_comes_back_and_new_jobs_still_start() {
    let schema = schema!("listen");
    // Polling so slow that only a notification starts a job in time.
    let store = schema
        .options()
        .poll_interval(Duration::from_secs(3600))
        .open()
        .await
        .unwrap();
    let (pool, ran) = counting_pool(&store, 2);
    let producer = schema.open().await;
    let app = format!("%LISTEN%{}_jobs%", schema.name);
    for round in 1..=3 {
        // Wait for the listener, then kill its backend.
        let mut conn = schema.conn().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let pid = loop {
            assert!(tokio::time::Instant::now() < deadline, "no listener");
            let pid: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid() LIMIT 1",
            )
            .bind(&app)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
            if let Some(p) = pid {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(killed);
        conn.close().await.unwrap();
        // A job from another store: only its notification can wake the pool.
        tokio::time::sleep(Duration::from_millis(200)).await;
        producer
            .enqueue(vec![NewJob::new(format!("after kill {round}"))])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while ran.load(Ordering::SeqCst) < round {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the job did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    pool.shutdown_without_draining(Duration::from_secs(5)).await;
    producer.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_schemas_and_versions_are_clear_errors_without_the_password() {
    let schema = schema!("errors");
    let e = PgStore::connect("postgres://u:s3cret@127.0.0.1:1/db")
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PgError::Connect { .. }), "{e:?}");
    assert!(
        !text.contains("s3cret") && text.contains("u:***@"),
        "{text}"
    );
    let e = PgStore::connect("postgres://u:s3cret@127.0.0.1:1/db?sslmode=bogus")
        .await
        .unwrap_err();
    assert!(!format!("{e} {e:?}").contains("s3cret"), "{e}");
    let e = PgStore::options(&pg::url())
        .schema("x; DROP TABLE y")
        .open()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");
    // Not migrated, and told not to migrate.
    let e = schema
        .options()
        .migrate_on_open(false)
        .open()
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::NotMigrated { found: 0, .. }), "{e:?}");
    let (from, to) = schema.options().migrate().await.unwrap();
    assert_eq!(from, 0);
    assert_eq!(schema.options().migrate().await.unwrap(), (to, to));
    // A newer schema is refused and left alone.
    schema
        .exec(&format!(
            "INSERT INTO S.migrations (version) VALUES ({})",
            to + 1
        ))
        .await;
    let e = schema.options().open().await.unwrap_err();
    assert!(matches!(e, PgError::NewerSchema { .. }), "{e:?}");
    let store_debug = format!("{:?}", PgStore::options("postgres://u:s3cret@h/db"));
    assert!(!store_debug.contains("s3cret"), "{store_debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_for_a_lease_has_its_job_rescued_and_its_late_end_fenced() {
    let schema = schema!("lease");
    let lease = Duration::from_millis(900);
    let proxy = Proxy::start(pg::upstream()).await;
    let a = PgStore::options(&pg::url_via(proxy.port()))
        .schema(&schema.name)
        .lease(lease)
        .poll_interval(Duration::from_millis(50))
        .open()
        .await
        .unwrap();
    let gate = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (g, s) = (gate.clone(), started.clone());
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(1)
        .store(a.clone())
        .build(move |_job: Job<Vec<u8>>, ctx: JobContext| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                // The first attempt waits for the test; a second runs through.
                if ctx.attempt() == 1 {
                    s.notify_one();
                    g.notified().await;
                }
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    let id = a.enqueue(vec![NewJob::new("slow")]).await.unwrap()[0];
    started.notified().await;
    // The network between `a` and the database fails for longer than a
    // lease: `b` takes the lead and rescues the job, a crash counted.
    proxy.cut();
    let b = schema.options().lease(lease).open().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (state, crashes): (String, i32) = schema
            .row(&format!(
                "SELECT state, crashes FROM S.jobs WHERE id = {id}"
            ))
            .await;
        if crashes == 1 {
            assert_eq!(state, "available");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not rescued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The network comes back; the first attempt ends "succeeded", but that
    // end is fenced off: the job runs again (attempt 2) and that one
    // completes it.
    proxy.restore();
    gate.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (state, attempt): (String, i32) = schema
            .row(&format!(
                "SELECT state, attempt FROM S.jobs WHERE id = {id}"
            ))
            .await;
        if state == "completed" {
            assert_eq!(attempt, 2, "completed by the fenced attempt");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state} {attempt}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report}");
    let errors: String = schema
        .scalar(&format!("SELECT errors::text FROM S.jobs WHERE id = {id}"))
        .await;
    assert!(errors.contains("its lease ran out"), "{errors}");
    b.close().await.unwrap();
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_finished_jobs_past_their_age() {
    let schema = schema!("prune");
    let store = schema.open().await;
    let (pool, _) = counting_pool(&store, 2);
    store
        .enqueue((0..10).map(|i| NewJob::new(vec![i])).collect())
        .await
        .unwrap();
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.stats().succeeded, 10, "{report}");
    assert_eq!(
        count(&store, "completed").await,
        10,
        "{:?}",
        store.counts().await
    );
    store.enqueue(vec![NewJob::new("waits")]).await.unwrap();
    assert_eq!(store.prune(Duration::from_secs(3600)).await.unwrap(), 0);
    schema
        .exec(
            "UPDATE S.jobs SET finished_at = now() - interval '2 hours' WHERE state = 'completed'",
        )
        .await;
    assert_eq!(store.prune(Duration::from_secs(3600)).await.unwrap(), 10);
    assert_eq!(store.jobs(None, 100).await.unwrap().len(), 1);
    store.close().await.unwrap();
}

/// Runs of each job, by ID.
type Runs = Arc<std::sync::Mutex<HashMap<u64, u32>>>;

/// A pool of `workers` on `store` whose handler counts each job's runs.
fn recording_pool(store: &PgStore, workers: usize) -> (Pool<Vec<u8>>, Runs) {
    let runs = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let r = runs.clone();
    let pool = Pool::builder()
        .workers(workers)
        .store(store.clone())
        .build(move |job: Job<Vec<u8>>, _ctx: JobContext| {
            *r.lock()
                .unwrap()
                .entry(job.id().as_u64().unwrap())
                .or_insert(0) += 1;
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
    (pool, runs)
}

/// Waits until `n` jobs are completed (by a connection of the test's own),
/// up to two minutes.
async fn until_completed(schema: &TestSchema, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut conn = loop {
        match sqlx::PgConnection::connect(&pg::url()).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let sql = format!(
        "SELECT count(*) FROM {}.jobs WHERE state = 'completed'",
        schema.name
    );
    loop {
        let done: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&mut conn)
            .await;
        match done {
            Ok(d) if d >= n => return,
            Ok(d) => assert!(
                tokio::time::Instant::now() < deadline,
                "{d} of {n} completed"
            ),
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "no connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(c) = sqlx::PgConnection::connect(&pg::url()).await {
                    conn = c;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every one of `ids` ran exactly once.
fn ran_once_each(ids: &[u64], runs: &HashMap<u64, u32>) {
    let missing: Vec<_> = ids.iter().filter(|id| !runs.contains_key(id)).collect();
    assert!(missing.is_empty(), "never ran: {missing:?}");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_mid_run_loses_nothing_and_runs_nothing_twice() {
    let schema = schema!("drop");
    let proxy = Proxy::start(pg::upstream()).await;
    let store = PgStore::options(&pg::url_via(proxy.port()))
        .schema(&schema.name)
        .lease(Duration::from_secs(20))
        .poll_interval(Duration::from_millis(50))
        .open()
        .await
        .unwrap();
    let producer = schema.open().await;
    let ids = producer
        .enqueue(
            (0..1500u32)
                .map(|i| NewJob::new(i.to_le_bytes().to_vec()))
                .collect(),
        )
        .await
        .unwrap();
    let (pool, runs) = recording_pool(&store, 4);
    for at in [300, 700, 1100] {
        // Mid-run, every connection of the pool's store drops, and for a
        // while none can be made.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while runs.lock().unwrap().len() < at {
            assert!(tokio::time::Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.restore();
    }
    until_completed(&schema, ids.len() as i64).await;
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report}");
    ran_once_each(&ids, &runs.lock().unwrap());
    assert_eq!(count(&producer, "running").await, 0);
    producer.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_nothing() {
    // It stops every connection to the server: no other test may run.
    let Some(schema) = TestSchema::alone("restart").await else {
        return;
    };
    let producer = schema.open().await;
    let mut ids = producer
        .enqueue(
            (0..1500u32)
                .map(|i| NewJob::new(i.to_le_bytes().to_vec()))
                .collect(),
        )
        .await
        .unwrap();
    let store = schema.open().await;
    let (pool, runs) = recording_pool(&store, 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while runs.lock().unwrap().len() < 300 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restart = tokio::process::Command::new("pg_ctlcluster")
        .args(["15", "main", "restart"])
        .output()
        .await;
    match restart {
        Ok(out) if out.status.success() => {}
        other if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the server cannot be restarted: {other:?}")
        }
        other => {
            eprintln!("skipped: pg_ctlcluster 15 main restart failed: {other:?}");
            pool.shutdown_without_draining(Duration::from_secs(5)).await;
            return;
        }
    }
    // Submits go on after the restart: each acknowledged one runs.
    let mut submitted = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while submitted < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "submits keep failing"
        );
        match pool.submit(Job::new(vec![1, 2, 3])).await {
            Ok(h) => {
                ids.push(h.id().as_u64().unwrap());
                submitted += 1;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    until_completed(&schema, ids.len() as i64).await;
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report}");
    let runs = runs.lock().unwrap().clone();
    let missing: Vec<_> = ids.iter().filter(|id| !runs.contains_key(id)).collect();
    assert!(missing.is_empty(), "never ran: {missing:?}");
    let again: u32 = runs.values().map(|n| n - 1).sum();
    eprintln!(
        "a server restart: {} jobs, 0 lost, {again} ran again",
        ids.len()
    );
    producer.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_in_the_url_is_honoured() {
    let schema = schema!("tls");
    let with = |mode: &str| {
        let url = pg::url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslmode={mode}")
    };
    let mut conn = schema.conn().await;
    let server_ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    if server_ssl != "on" {
        eprintln!("skipped: the server has ssl = {server_ssl}");
        return;
    }
    // The server has TLS with a certificate no root vouches for: `require`
    // encrypts without checking it, `verify-full` refuses it.
    let store = PgStore::options(&with("require"))
        .schema(&schema.name)
        .open()
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(ssl, "sslmode=require gave a connection without TLS");
    store.close().await.unwrap();
    let e = PgStore::options(&with("verify-full"))
        .schema(&schema.name)
        .open()
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::Connect { .. }), "{e:?}");
}
