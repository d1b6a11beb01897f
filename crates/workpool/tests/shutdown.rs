//! Contract 2: shutdown always returns, within timeout + grace, and reports
//! exactly which jobs did not finish; unstarted jobs come back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::Seen;
use tokio::time::Instant;
use workpool::{Job, JobContext, Outcome, OutcomeKind, Pool, RetryPolicy};

fn ids<P>(report: &workpool::ShutdownReport<P>, kind: OutcomeKind) -> Vec<String> {
    let mut v: Vec<String> = report.ids(kind).iter().map(|i| i.to_string()).collect();
    v.sort();
    v
}

/// Jobs whose payload says how long they take; they stop early when asked.
fn sleeper(workers: usize, seen: &Seen) -> Pool<u64> {
    seen.hook(
        Pool::builder()
            .workers(workers)
            .grace(Duration::from_secs(1)),
    )
    .build(|job: Job<u64>, ctx: JobContext| async move {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(*job.payload())) => Ok(()),
            _ = ctx.cancelled() => Err("stopped"),
        }
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn drain_finishes_queued_and_running_jobs() {
    let seen = Seen::default();
    let pool = sleeper(2, &seen);
    for i in 0..6 {
        pool.submit_detached(Job::with_id(i, 100)).await.unwrap();
    }
    let start = Instant::now();
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(300),
        "3 rounds of 100 ms on 2 workers"
    );
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.stats().succeeded, 6);
    assert!(report.not_finished().is_empty());
    assert_eq!(seen.len(), 6);
    assert_eq!(
        report
            .to_string()
            .split(':')
            .nth(1)
            .unwrap()
            .trim_start()
            .split(',')
            .next(),
        Some("6 succeeded")
    );
}

#[tokio::test(start_paused = true)]
async fn at_the_timeout_running_jobs_are_cancelled_and_queued_ones_come_back() {
    let seen = Seen::default();
    let pool = sleeper(1, &seen);
    let running = pool.submit(Job::with_id("long", 60_000)).await.unwrap();
    pool.submit_detached(Job::with_id("queued-1", 10))
        .await
        .unwrap();
    let queued_handle = pool.submit(Job::with_id("queued-2", 10)).await.unwrap();

    let start = Instant::now();
    let report = pool.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "the running job stops when its signal fires"
    );
    assert!(!report.is_clean());
    assert!(matches!(
        running.await,
        Outcome::Cancelled { attempts: 1, .. }
    ));
    assert_eq!(ids(&report, OutcomeKind::Cancelled), ["long"]);
    assert_eq!(
        ids(&report, OutcomeKind::Unstarted),
        ["queued-1", "queued-2"]
    );

    // The job without a handle is in the report; the other came back through its handle.
    let back = report.take_unstarted();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].job.id().to_string(), "queued-1");
    assert_eq!(*back[0].job.payload(), 10);
    assert!(report.take_unstarted().is_empty(), "taken once");
    match queued_handle.await {
        Outcome::Unstarted { job, attempts: 0 } => assert_eq!(job.id().to_string(), "queued-2"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn without_draining_queued_jobs_come_back_at_once() {
    let seen = Seen::default();
    let pool = sleeper(1, &seen);
    pool.submit_detached(Job::with_id(1, 500)).await.unwrap();
    while pool.stats().running == 0 {
        tokio::task::yield_now().await;
    }
    for i in 2..=4 {
        pool.submit_detached(Job::with_id(i, 500)).await.unwrap();
    }
    let start = Instant::now();
    let report = pool
        .shutdown_without_draining(Duration::from_secs(10))
        .await;
    // Only the running job is waited for.
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(report.stats().succeeded, 1);
    assert_eq!(ids(&report, OutcomeKind::Unstarted), ["2", "3", "4"]);
    assert_eq!(report.take_unstarted().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_ignores_cancellation_is_abandoned_after_the_grace() {
    let pool = Pool::builder()
        .workers(2)
        .grace(Duration::from_millis(300))
        .build(|job: Job, _ctx| async move {
            if job.id().to_string() == "stubborn" {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let stubborn = pool
        .submit(Job::with_id("stubborn", Bytes::new()))
        .await
        .unwrap();
    let fine = pool
        .submit(Job::with_id("fine", Bytes::new()))
        .await
        .unwrap();
    assert!(fine.await.is_success());

    let start = Instant::now();
    let report = pool.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(1300),
        "timeout + grace, no more"
    );
    assert_eq!(ids(&report, OutcomeKind::Abandoned), ["stubborn"]);
    assert!(matches!(stubborn.await, Outcome::Abandoned { attempts: 1 }));
    let s = report.stats();
    assert_eq!((s.succeeded, s.abandoned, s.accepted), (1, 1, 2));
}

/// Real time here: a blocking handler runs on its own thread, outside the
/// (paused) clock's reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_stuck_in_a_loop_cannot_hold_shutdown() {
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let pool = Pool::builder()
        .workers(1)
        .grace(Duration::from_millis(100))
        .build_blocking(move |_job: Job, _ctx| {
            started_tx.send(()).unwrap();
            // Never looks at its context: only the test can end this loop.
            while !r.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let handle = pool
        .submit(Job::with_id("spin", Bytes::new()))
        .await
        .unwrap();
    started_rx.recv().await.unwrap();

    let start = std::time::Instant::now();
    let report = pool.shutdown(Duration::from_millis(200)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_millis(300) + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(ids(&report, OutcomeKind::Abandoned), ["spin"]);
    assert!(matches!(handle.await, Outcome::Abandoned { attempts: 1 }));
    release.store(true, Ordering::Relaxed);
}

#[tokio::test(start_paused = true)]
async fn concurrent_and_repeated_calls_get_the_same_report() {
    let seen = Seen::default();
    let pool = sleeper(1, &seen);
    for i in 0..3 {
        pool.submit_detached(Job::with_id(i, 1_000)).await.unwrap();
    }
    let (a, b) = tokio::join!(
        pool.shutdown(Duration::from_millis(1_500)),
        pool.shutdown_without_draining(Duration::from_secs(99))
    );
    let c = pool.shutdown(Duration::ZERO).await;
    for r in [&b, &c] {
        assert_eq!(r.stats(), a.stats());
        assert_eq!(r.not_finished(), a.not_finished());
        assert_eq!(r.elapsed(), a.elapsed());
    }
    // The first call's mode and timeout applied: one job done, one cancelled, one back.
    let s = a.stats();
    assert_eq!((s.succeeded, s.cancelled, s.unstarted), (1, 1, 1));
    assert_eq!(c.take_unstarted().len(), 1);
    assert!(
        a.take_unstarted().is_empty(),
        "the jobs went to the first taker"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_shutdown_future_does_not_stop_the_shutdown() {
    let seen = Seen::default();
    let pool = sleeper(1, &seen);
    pool.submit_detached(Job::with_id(1, 100)).await.unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(10),
        pool.shutdown(Duration::from_secs(5)),
    )
    .await;
    assert!(dropped.is_err());
    let report = pool.shutdown(Duration::ZERO).await;
    assert_eq!(
        report.stats().succeeded,
        1,
        "the first call's drain went on"
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_waiting_to_retry_come_back_unstarted_with_their_attempts() {
    let pool = Pool::builder()
        .workers(1)
        .retry(
            RetryPolicy::attempts(5).with_backoff(Duration::from_secs(60), Duration::from_secs(60)),
        )
        .build(|_job: Job, _ctx| async { Err::<(), _>("always fails") })
        .unwrap();
    let handle = pool
        .submit(Job::with_id("flaky", Bytes::new()))
        .await
        .unwrap();
    let detached = Job::with_id("flaky-2", Bytes::new());
    pool.submit_detached(detached).await.unwrap();
    while pool.stats().retry_waiting < 2 || pool.stats().retried < 2 {
        tokio::task::yield_now().await;
    }
    // Backoff is at most 60 s: the first retry may already be due. Shut down
    // at once, before any delay has run out.
    let report = pool.shutdown(Duration::ZERO).await;
    match handle.await {
        Outcome::Unstarted { job, attempts } => {
            assert_eq!(job.id().to_string(), "flaky");
            assert!(attempts >= 1);
        }
        other => panic!("{other:?}"),
    }
    let back = report.take_unstarted();
    assert_eq!(back.len(), 1);
    assert!(back[0].attempts >= 1);
    assert_eq!(report.stats().unstarted, 2);
    assert_eq!(report.stats().retry_waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn cancel_running_cuts_the_drain_short() {
    let seen = Seen::default();
    let pool = sleeper(1, &seen);
    pool.submit_detached(Job::with_id("long", 60_000))
        .await
        .unwrap();
    pool.submit_detached(Job::with_id("next", 10))
        .await
        .unwrap();
    let p = pool.clone();
    let shutdown = tokio::spawn(async move { p.shutdown(Duration::from_secs(600)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    pool.cancel_running();
    let report = shutdown.await.unwrap();
    assert_eq!(report.elapsed(), Duration::from_secs(1));
    assert_eq!(ids(&report, OutcomeKind::Cancelled), ["long"]);
    assert_eq!(ids(&report, OutcomeKind::Unstarted), ["next"]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_pool_shuts_down_at_once() {
    let seen = Seen::default();
    let pool = sleeper(4, &seen);
    let report = pool.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.elapsed(), Duration::ZERO);
    assert!(report.is_clean());
    assert_eq!(report.stats().accepted, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_pool_without_shutdown_finishes_queued_jobs_in_the_background() {
    let seen = Seen::default();
    let pool = sleeper(1, &seen);
    for i in 0..3 {
        pool.submit_detached(Job::with_id(i, 100)).await.unwrap();
    }
    drop(pool); // returns at once
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kinds: Vec<_> = seen.all().into_iter().map(|s| s.1).collect();
    assert_eq!(kinds, [OutcomeKind::Succeeded; 3]);
}

/// A handler that awaits its own pool's draining shutdown waits for itself:
/// the job is abandoned at timeout + grace and the report still comes (as
/// `Pool::shutdown`'s docs say); one that spawns the shutdown and returns
/// lets the drain finish cleanly.
#[tokio::test(start_paused = true)]
async fn a_handler_shutting_down_its_own_pool() {
    use std::sync::{Arc, OnceLock};

    let cell: Arc<OnceLock<Pool>> = Arc::new(OnceLock::new());
    let c = cell.clone();
    let pool = Pool::builder()
        .workers(1)
        .grace(Duration::from_secs(1))
        .build(move |_job: Job, _ctx| {
            let pool = c.get().cloned().expect("set before the first job");
            async move {
                pool.shutdown(Duration::from_secs(2)).await;
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    cell.set(pool.clone()).unwrap();
    pool.submit_detached(Job::with_id("self", "x".into()))
        .await
        .unwrap();
    let began = tokio::time::Instant::now();
    // The handler started the shutdown; this call joins it.
    while !pool.is_closed() {
        tokio::task::yield_now().await;
    }
    let report = pool.shutdown(Duration::MAX).await;
    assert_eq!(
        report.ids(workpool::OutcomeKind::Abandoned),
        ["self".into()]
    );
    assert_eq!(began.elapsed(), Duration::from_secs(3), "timeout + grace");

    let cell: Arc<OnceLock<Pool>> = Arc::new(OnceLock::new());
    let c = cell.clone();
    let pool = Pool::builder()
        .workers(1)
        .build(move |_job: Job, _ctx| {
            let pool = c.get().cloned().expect("set before the first job");
            async move {
                tokio::spawn(async move { pool.shutdown(Duration::MAX).await });
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    cell.set(pool.clone()).unwrap();
    pool.submit_detached(Job::with_id("spawns", "x".into()))
        .await
        .unwrap();
    while !pool.is_closed() {
        tokio::task::yield_now().await;
    }
    let report = pool.shutdown(Duration::MAX).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.stats().succeeded, 1);
}
