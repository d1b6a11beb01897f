//! Resource bounds: memory stays bounded when producers outrun the workers,
//! and no task or thread is left behind after shutdown (counted).

#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use workpool::{Job, JobContext, Pool, RetryPolicy};

/// Resident memory of this process, in bytes (from /proc/self/statm).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Threads of this process (entries of /proc/self/task).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_when_producers_outrun_the_workers() {
    const CAPACITY: usize = 64;
    const PAYLOAD: usize = 64 * 1024;
    const OFFERED: usize = 4 * 10_000; // 2.5 GiB of payload if it were all kept
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(CAPACITY)
        .build(move |_job: Job<Vec<u8>>, _ctx| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    let before = rss();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut max_queued = 0;
                for i in 0..OFFERED / 4 {
                    let job = Job::with_id((p * 1_000_000 + i) as u64, vec![1u8; PAYLOAD]);
                    let _ = pool.try_submit_detached(job); // refused jobs come back and are dropped here
                    max_queued = max_queued.max(pool.stats().queued);
                    if i.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                max_queued
            })
        })
        .collect();
    let mut max_queued = 0;
    for p in producers {
        max_queued = max_queued.max(p.await.unwrap());
    }
    let grown = rss().saturating_sub(before);
    let s = pool.stats();
    assert!(
        max_queued <= CAPACITY as u64,
        "queue held {max_queued} > {CAPACITY}"
    );
    assert!(
        s.accepted <= (CAPACITY + 2) as u64,
        "accepted {} while the workers were blocked",
        s.accepted
    );
    assert_eq!(s.accepted + s.rejected, OFFERED as u64);
    assert!(grown < 64 << 20, "memory grew by {} MiB", grown >> 20);
    gate.add_permits(OFFERED);
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.stats().succeeded, s.accepted);
}

async fn settle(check: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_is_left_behind_after_shutdown() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let pool = Pool::builder()
        .workers(8)
        .grace(Duration::from_millis(50))
        .retry(
            RetryPolicy::attempts(3).with_backoff(Duration::from_secs(30), Duration::from_secs(30)),
        )
        .build(|job: Job<u8>, ctx: JobContext| async move {
            match *job.payload() {
                0 => Ok(()),
                1 => Err("retry later".into()),
                2 => {
                    ctx.cancelled().await;
                    Err::<(), workpool::BoxError>("stopped".into())
                }
                _ => std::future::pending().await, // ignores cancellation: abandoned
            }
        })
        .unwrap();
    for i in 0..40u64 {
        pool.submit_detached(Job::with_id(i, (i % 4) as u8))
            .await
            .unwrap();
    }
    assert!(
        metrics.num_alive_tasks() > baseline,
        "workers and retry timers are tasks"
    );
    let report = pool.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.stats().outcomes(), 40);
    drop(pool);
    assert!(
        settle(|| metrics.num_alive_tasks() == baseline).await,
        "{} tasks still alive (baseline {baseline})",
        metrics.num_alive_tasks()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_thread_is_left_behind_after_shutdown() {
    let before = threads();
    let pool = Pool::builder()
        .workers(6)
        .grace(Duration::from_millis(50))
        .build_blocking(|job: Job<u8>, ctx: JobContext| {
            if *job.payload() == 1 {
                while !ctx.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    // The runtime's own threads may come and go (its blocking pool); ours are
    // named (the kernel keeps 15 bytes of the name), so count those.
    let ours = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim() == "workpool-blocki")
            .count()
    };
    for i in 0..30u64 {
        pool.submit_detached(Job::with_id(i, (i % 2) as u8))
            .await
            .unwrap();
    }
    assert!(
        settle(|| ours() > 0).await,
        "blocking handlers run on threads of their own"
    );
    let report = pool.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.stats().outcomes(), 30);
    drop(pool);
    assert!(
        settle(|| ours() == 0).await,
        "{} blocking-handler threads left",
        ours()
    );
    assert!(
        threads() <= before + 4,
        "threads: {before} before, {} after",
        threads()
    );
}
