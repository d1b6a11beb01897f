//! The pool shares its runtime: a worker whose queue never runs dry yields its
//! thread now and then (every 128 jobs, as a tokio channel's receiver does by
//! spending one unit of tokio's 128-unit task budget per message), instead of
//! holding it until the queue is empty, which, with submitters refilling it,
//! may be never.
//!
//! (Submits do not yield: a submitting task holds its thread at most until
//! the queue is full, and then waits. Spending tokio's budget there too cost
//! 13 % on the handles benchmark and 12 % on 1 µs jobs with 64 workers; see
//! benchmarks/NOTES.md.)
//!
//! The test runs on a current-thread runtime, where a task that never yields
//! keeps every other task waiting; so it fails if the worker does not yield.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use workpool::{Job, Pool};

const JOBS: u64 = 1_000;

fn counting_pool(done: &Arc<AtomicU64>) -> Pool<u64> {
    let done = done.clone();
    Pool::builder()
        .workers(1)
        .queue_capacity(JOBS as usize)
        .build(move |_job: Job<u64>, _ctx| {
            done.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, std::io::Error>(()) }
        })
        .unwrap()
}

#[tokio::test]
async fn a_busy_worker_lets_other_tasks_run() {
    let done = Arc::new(AtomicU64::new(0));
    let pool = counting_pool(&done);
    for i in 0..JOBS {
        pool.try_submit_detached(Job::with_id(i, i)).unwrap();
    }
    // The worker was spawned first, so it runs first; the observer gets the
    // thread only when the worker yields it.
    let d = done.clone();
    let seen = tokio::spawn(async move { d.load(Ordering::Relaxed) })
        .await
        .unwrap();
    assert!(
        seen < JOBS,
        "the worker ran all {JOBS} queued jobs before letting another task run"
    );
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stats().succeeded, JOBS);
}

/// A submitter waiting for room is woken by the take that makes room, but it
/// runs only when the worker yields its thread (with tokio's multi-thread
/// runtime the wake goes to that thread's LIFO slot, which other threads
/// cannot steal). A worker that woke a submitter yields once the queue is down
/// to about half (after a count of its own takes: on this one-thread runtime,
/// half the queue), so the submitter refills it before it runs dry; otherwise the
/// worker drains it to empty first, and the other threads idle meanwhile
/// (benchmarks/NOTES.md, fourth round).
#[tokio::test]
async fn a_waiting_submitter_refills_the_queue_before_it_runs_dry() {
    const CAPACITY: usize = 10;
    const TOTAL: u64 = 200;
    let submitted = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    // The fewest jobs left queued when a job started, while the submitter
    // still had jobs to submit.
    let fewest_behind = Arc::new(AtomicU64::new(u64::MAX));
    let pool: Pool<u64> = {
        let (submitted, started, fewest) =
            (submitted.clone(), started.clone(), fewest_behind.clone());
        Pool::builder()
            .workers(1)
            .queue_capacity(CAPACITY)
            .build(move |_job: Job<u64>, _ctx| {
                let in_so_far = submitted.load(Ordering::SeqCst);
                let before_me = started.fetch_add(1, Ordering::SeqCst);
                if in_so_far < TOTAL {
                    fewest.fetch_min(in_so_far - before_me - 1, Ordering::SeqCst);
                }
                async { Ok::<_, std::io::Error>(()) }
            })
            .unwrap()
    };
    let submitter = {
        let (pool, submitted) = (pool.clone(), submitted.clone());
        tokio::spawn(async move {
            for i in 0..TOTAL {
                pool.submit_detached(Job::with_id(i, i)).await.unwrap();
                submitted.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    submitter.await.unwrap();
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stats().succeeded, TOTAL);
    let fewest = fewest_behind.load(Ordering::SeqCst);
    assert!(
        fewest > 0,
        "the queue ran dry while the submitter still had jobs (fewest queued behind a starting job: {fewest})"
    );
}

/// A push wakes no idle worker while one it woke earlier has not yet run
/// (each wake-up is a trip through the scheduler); the woken worker, having
/// taken, wakes the next if more is queued. Here both jobs are pushed before
/// the first woken worker runs, and that worker takes a job that never ends:
/// the second job must still run, on the other worker.
#[tokio::test(start_paused = true)]
async fn a_job_pushed_while_a_woken_worker_has_not_yet_run_is_not_left_behind_it() {
    let pool: Pool<&'static str> = Pool::builder()
        .workers(2)
        .build(|job: Job<&'static str>, _ctx| async move {
            if *job.payload() == "never ends" {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    // Both workers find the queue empty and wait (paused time: the sleep
    // ends once every task is idle).
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Two submits without a yield between: on this one-thread runtime no
    // worker runs before both are in.
    let never = pool.submit(Job::with_id(1u64, "never ends")).await.unwrap();
    let second = pool.submit(Job::with_id(2u64, "quick")).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), second).await;
    assert!(
        matches!(outcome, Ok(workpool::Outcome::Succeeded { .. })),
        "the second job waited behind the one that never ends"
    );
    drop(never);
    let report = pool.shutdown(Duration::from_millis(10)).await;
    assert_eq!(report.stats().succeeded, 1);
}
