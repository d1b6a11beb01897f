//! Blocking (synchronous) handlers: same contract, run on plain threads,
//! cancelled cooperatively through the context. Real time: these handlers
//! run outside the runtime, where paused time does not reach.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::quiet_boom_panics;
use workpool::{CancelReason, Job, JobContext, Outcome, OutcomeKind, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_jobs_run_off_the_runtime_threads() {
    let pool = Pool::builder()
        .workers(2)
        .build_blocking(|_job: Job, _ctx: JobContext| {
            let name = std::thread::current().name().map(str::to_owned);
            assert_eq!(name.as_deref(), Some("workpool-blocking"));
            // Blocking here is fine: no runtime thread is held.
            std::thread::sleep(Duration::from_millis(5));
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..6 {
        handles.push(pool.submit(Job::with_id(i, "x".into())).await.unwrap());
    }
    for h in handles {
        assert!(h.await.is_success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_sees_its_deadline_through_the_context() {
    let pool = Pool::builder()
        .workers(1)
        .build_blocking(|_job: Job, ctx: JobContext| {
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(ctx.cancel_reason(), Some(CancelReason::Deadline));
            Err::<(), _>("stopped at the deadline")
        })
        .unwrap();
    let h = pool
        .submit(Job::with_id(1, "x".into()).with_timeout(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(matches!(h.await, Outcome::TimedOut { attempts: 1, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_panic_ends_its_job_and_the_worker_goes_on() {
    quiet_boom_panics();
    let pool = Pool::builder()
        .workers(1)
        .build_blocking(|job: Job<u8>, _ctx: JobContext| {
            if *job.payload() == 0 {
                panic!("boom in a blocking handler");
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let a = pool.submit(Job::with_id(1, 0)).await.unwrap();
    let b = pool.submit(Job::with_id(2, 1)).await.unwrap();
    match a.await {
        Outcome::Panicked { message, .. } => assert_eq!(message, "boom in a blocking handler"),
        other => panic!("{other:?}"),
    }
    assert!(b.await.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_blocking_job_times_out_and_the_worker_gets_a_new_thread() {
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let pool = Pool::builder()
        .workers(1)
        .grace(Duration::from_millis(20))
        .build_blocking(move |job: Job<bool>, _ctx: JobContext| {
            if *job.payload() {
                // Ignores its context until the test lets it go.
                while !r.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let deaf = pool
        .submit(Job::with_id("deaf", true).with_timeout(Duration::from_millis(30)))
        .await
        .unwrap();
    let next = pool.submit(Job::with_id("next", false)).await.unwrap();
    assert_eq!(deaf.await.kind(), OutcomeKind::TimedOut);
    // The only worker's thread is still stuck, yet the next job runs.
    assert!(next.await.is_success());
    release.store(true, Ordering::Relaxed);
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.stats().succeeded, report.stats().timed_out), (1, 1));
}

#[test]
fn pool_handles_are_cheap_to_share() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<Pool>();
    send_sync_clone::<Pool<Vec<u8>>>();
    fn send<T: Send>() {}
    send::<workpool::JobHandle>();
    send::<workpool::ShutdownReport>();
}
