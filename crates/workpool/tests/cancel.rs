//! Cancelling one job through its handle, and what dropping a handle does not do.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Seen;
use workpool::{CancelReason, Job, JobContext, Outcome, OutcomeKind, Pool};

#[tokio::test(start_paused = true)]
async fn a_queued_job_cancelled_through_its_handle_never_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let pool = Pool::builder()
        .workers(1)
        .build(move |job: Job<u64>, _ctx| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(*job.payload())).await;
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    let first = pool.submit(Job::with_id(1, 100)).await.unwrap();
    let second = pool.submit(Job::with_id(2, 100)).await.unwrap();
    second.cancel();
    assert!(first.await.is_success());
    assert!(matches!(
        second.await,
        Outcome::Cancelled { attempts: 0, .. }
    ));
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the cancelled job never ran");
    assert_eq!(pool.stats().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn a_running_job_sees_its_signal_fire() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pool = Pool::builder()
        .workers(1)
        .build(move |_job: Job, ctx: JobContext| {
            let tx = tx.clone();
            async move {
                tx.send(()).unwrap();
                ctx.cancelled().await;
                assert_eq!(ctx.cancel_reason(), Some(CancelReason::Handle));
                Err::<(), _>("cancelled")
            }
        })
        .unwrap();
    let h = pool.submit(Job::with_id(1, "x".into())).await.unwrap();
    rx.recv().await.unwrap();
    h.cancel();
    assert!(matches!(h.await, Outcome::Cancelled { attempts: 1, .. }));
}

#[tokio::test(start_paused = true)]
async fn a_job_that_finishes_despite_cancel_succeeds() {
    let pool = Pool::builder()
        .workers(1)
        .build(|_job: Job, ctx: JobContext| async move {
            ctx.cancelled().await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let h = pool.submit(Job::with_id(1, "x".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.cancel();
    assert_eq!(h.await.kind(), OutcomeKind::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_handle_does_not_cancel_the_job() {
    let seen = Seen::default();
    let pool = seen
        .hook(Pool::builder().workers(1))
        .build(|_job: Job, _ctx| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    drop(
        pool.submit(Job::with_id("orphan", "x".into()))
            .await
            .unwrap(),
    );
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stats().succeeded, 1);
    assert_eq!(seen.kind_of("orphan"), [OutcomeKind::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_job_waiting_to_retry_ends_it_cancelled() {
    let pool = Pool::builder()
        .workers(1)
        .retry(
            workpool::RetryPolicy::attempts(10)
                .with_backoff(Duration::from_secs(3600), Duration::from_secs(3600)),
        )
        .build(|_job: Job, _ctx| async { Err::<(), _>("nope") })
        .unwrap();
    let h = pool.submit(Job::with_id(1, "x".into())).await.unwrap();
    while pool.stats().retry_waiting == 0 {
        tokio::task::yield_now().await;
    }
    h.cancel();
    assert!(matches!(h.await, Outcome::Cancelled { attempts: 1, .. }));
    assert_eq!(pool.stats().retry_waiting, 0);
}
