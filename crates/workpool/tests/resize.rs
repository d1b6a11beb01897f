//! Resizing: more workers at once; fewer without interrupting a running job.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use workpool::{Job, JobContext, Outcome, Pool, ResizeError};

/// Counts jobs running at once and the most seen.
#[derive(Clone, Default)]
struct Concurrency {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

fn pool(workers: usize, c: &Concurrency) -> Pool<u64> {
    let c = c.clone();
    Pool::builder()
        .workers(workers)
        .build(move |job: Job<u64>, ctx: JobContext| {
            let c = c.clone();
            async move {
                let n = c.now.fetch_add(1, Ordering::SeqCst) + 1;
                c.max.fetch_max(n, Ordering::SeqCst);
                let done = tokio::time::sleep(Duration::from_millis(*job.payload()));
                let r = tokio::select! {
                    _ = done => Ok(()),
                    _ = ctx.cancelled() => Err("cancelled"),
                };
                c.now.fetch_sub(1, Ordering::SeqCst);
                r
            }
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn growing_runs_more_jobs_at_once() {
    let c = Concurrency::default();
    let pool = pool(1, &c);
    pool.resize(4).unwrap();
    assert_eq!(pool.stats().workers, 4);
    let start = tokio::time::Instant::now();
    for i in 0..8 {
        pool.submit_detached(Job::with_id(i, 100)).await.unwrap();
    }
    pool.shutdown(Duration::from_secs(10)).await;
    assert_eq!(c.max.load(Ordering::SeqCst), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn shrinking_never_interrupts_a_running_job() {
    let c = Concurrency::default();
    let pool = pool(4, &c);
    let mut handles = Vec::new();
    for i in 0..4 {
        handles.push(pool.submit(Job::with_id(i, 1_000)).await.unwrap());
    }
    while pool.stats().running < 4 {
        tokio::task::yield_now().await;
    }
    pool.resize(1).unwrap();
    for h in handles {
        assert!(
            matches!(h.await, Outcome::Succeeded { attempts: 1, .. }),
            "running jobs finish"
        );
    }
    // Busy workers left after their job: one is left.
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().workers, 1);
    c.max.store(0, Ordering::SeqCst);
    for i in 10..14 {
        pool.submit_detached(Job::with_id(i, 10)).await.unwrap();
    }
    pool.shutdown(Duration::from_secs(10)).await;
    assert_eq!(c.max.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_workers_leave_at_once_when_shrinking() {
    let c = Concurrency::default();
    let pool = pool(8, &c);
    tokio::task::yield_now().await;
    pool.resize(2).unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.stats().workers, 2);
    pool.resize(3).unwrap();
    assert_eq!(pool.stats().workers, 3);
}

#[tokio::test(start_paused = true)]
async fn resizing_a_shut_down_pool_is_an_error() {
    let c = Concurrency::default();
    let pool = pool(1, &c);
    pool.shutdown(Duration::ZERO).await;
    assert_eq!(pool.resize(2), Err(ResizeError::Closed));
}

/// Resizing up and down while jobs keep coming, on two threads: every job
/// ends, none is left queued while workers sleep (the final wait is bounded,
/// so a stranded job fails the test instead of hanging it). A stress test
/// of resizing under load: it did not catch the wake-up pass-on removed
/// (30 runs each), whose own test is in `fairness.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_ends_while_the_pool_is_resized_up_and_down() {
    let pool: Pool<u64> = Pool::builder()
        .workers(4)
        .queue_capacity(8)
        .build(|job: Job<u64>, _ctx| async move {
            if job.payload().is_multiple_of(7) {
                tokio::task::yield_now().await;
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let mut handles = Vec::new();
    for round in 0..300u64 {
        for i in 0..10 {
            handles.push(pool.submit(Job::with_id(round * 10 + i, i)).await.unwrap());
        }
        pool.resize([1, 6, 2, 5][round as usize % 4]).unwrap();
    }
    let all = async {
        for h in handles {
            assert!(matches!(h.await, Outcome::Succeeded { .. }));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("a job was left behind");
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stats().succeeded, 3_000);
}
