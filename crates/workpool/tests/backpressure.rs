//! Contract 3: the queue is bounded; submit waits, try_submit fails at once,
//! submit_timeout gives up after its timeout, and every refused job comes back.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use workpool::{Job, Pool, SubmitError, SubmitTimeoutError, TrySubmitError};

/// A pool of one worker whose jobs wait for a permit: the test decides when
/// each one may finish.
fn gated(capacity: usize) -> (Pool, std::sync::Arc<Semaphore>) {
    let gate = std::sync::Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(capacity)
        .build(move |_job: Job, _ctx| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    (pool, gate)
}

/// With queue capacity 1: job 1 running, job 2 queued, no room left.
async fn fill(pool: &Pool) {
    pool.submit_detached(Job::with_id(1, Bytes::new()))
        .await
        .unwrap();
    until_running(pool).await;
    pool.submit_detached(Job::with_id(2, Bytes::new()))
        .await
        .unwrap();
}

/// Waits until the single worker has taken a job off the queue.
async fn until_running(pool: &Pool) {
    while pool.stats().running == 0 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn try_submit_on_a_full_queue_hands_back_the_very_same_job() {
    let (pool, _gate) = gated(2);
    pool.try_submit_detached(Job::with_id(1, Bytes::from_static(b"a")))
        .unwrap();
    until_running(&pool).await;
    pool.try_submit_detached(Job::with_id(2, Bytes::from_static(b"b")))
        .unwrap();
    pool.try_submit_detached(Job::with_id(3, Bytes::from_static(b"c")))
        .unwrap();

    let payload = Bytes::from(vec![7u8; 64]);
    let ptr = payload.as_ptr();
    let job = Job::with_id("refused", payload).with_timeout(Duration::from_secs(9));
    let err = pool.try_submit(job).unwrap_err();
    assert!(matches!(err, TrySubmitError::Full(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "queue is full; job refused was not accepted"
    );
    let back = err.into_inner();
    assert_eq!(back.id().to_string(), "refused");
    assert_eq!(back.payload().as_ptr(), ptr, "the same payload, not a copy");
    assert_eq!(back.timeout(), Some(Duration::from_secs(9)));

    let s = pool.stats();
    assert_eq!((s.accepted, s.rejected, s.queued, s.running), (3, 1, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn submit_waits_for_room_and_goes_in_when_a_job_is_taken() {
    let (pool, gate) = gated(1);
    fill(&pool).await;

    let p = pool.clone();
    let waiting = tokio::spawn(async move { p.submit(Job::with_id(3, Bytes::new())).await });
    // Plenty of (paused) time passes; the queue stays full, so it waits.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !waiting.is_finished(),
        "submit must wait while the queue is full"
    );
    assert_eq!(pool.stats().accepted, 2);

    gate.add_permits(1); // job 1 ends, the worker takes job 2, room appears
    let handle = waiting
        .await
        .unwrap()
        .expect("accepted once there was room");
    gate.add_permits(2);
    assert!(handle.await.is_success());
    assert_eq!(pool.stats().succeeded, 3);
}

#[tokio::test(start_paused = true)]
async fn submit_timeout_gives_up_after_the_timeout_and_returns_the_job() {
    let (pool, _gate) = gated(1);
    fill(&pool).await;

    let start = tokio::time::Instant::now();
    let err = pool
        .submit_timeout(
            Job::with_id(3, Bytes::from_static(b"x")),
            Duration::from_millis(250),
        )
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    match err {
        SubmitTimeoutError::Timeout(job) => assert_eq!(job.payload().as_ref(), b"x"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let err = pool
        .submit_detached_timeout(Job::with_id(4, Bytes::new()), Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(matches!(err, SubmitTimeoutError::Timeout(_)));
    assert_eq!(pool.stats().rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_submit_gets_its_job_back_when_the_pool_closes() {
    let (pool, gate) = gated(1);
    fill(&pool).await;
    let p = pool.clone();
    let waiting = tokio::spawn(async move { p.submit(Job::with_id(3, Bytes::new())).await });
    tokio::task::yield_now().await;

    // Jobs 1 and 2 hang until the drain timeout; at Cancelling the queue
    // closes and the waiting submit fails with its job.
    let report = pool.shutdown(Duration::from_secs(1)).await;
    match waiting.await.unwrap() {
        Err(SubmitError::Closed(job)) => assert_eq!(job.id().to_string(), "3"),
        other => panic!("expected Closed(job 3), got {other:?}"),
    }
    drop(gate);
    let s = report.stats();
    assert_eq!(s.accepted, 2);
    assert_eq!(s.accepted, s.outcomes());
}

#[tokio::test(start_paused = true)]
async fn every_submit_flavour_refuses_after_shutdown_with_the_job() {
    let pool = Pool::builder()
        .workers(1)
        .build(|_job: Job, _ctx| async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    pool.shutdown(Duration::from_secs(1)).await;
    assert!(pool.is_closed());
    let j = |n: u64| Job::with_id(n, Bytes::new());
    assert!(
        matches!(pool.submit(j(1)).await, Err(SubmitError::Closed(job)) if job.id().as_u64() == Some(1))
    );
    assert!(
        matches!(pool.try_submit(j(2)), Err(TrySubmitError::Closed(job)) if job.id().as_u64() == Some(2))
    );
    assert!(matches!(
        pool.submit_timeout(j(3), Duration::from_secs(1)).await,
        Err(SubmitTimeoutError::Closed(job)) if job.id().as_u64() == Some(3)
    ));
    assert!(matches!(
        pool.submit_detached(j(4)).await,
        Err(SubmitError::Closed(_))
    ));
    assert!(matches!(
        pool.try_submit_detached(j(5)),
        Err(TrySubmitError::Closed(_))
    ));
    assert_eq!(pool.stats().rejected, 5);
    assert_eq!(pool.stats().accepted, 0);
}

#[test]
fn refusal_errors_do_not_print_the_payload() {
    let err = TrySubmitError::Full(Job::with_id(7, Bytes::from_static(b"password=hunter2")));
    let shown = format!("{err:?} {err}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains('7'), "{shown}");
}

#[tokio::test(start_paused = true)]
async fn a_submit_dropped_while_waiting_for_room_leaves_nothing_behind() {
    let (pool, gate) = gated(1);
    fill(&pool).await;
    // Both kinds of waiting submit, given up on from outside while the queue
    // is full (a `timeout` or `select!` around them drops the future).
    let waited = tokio::time::timeout(
        Duration::from_millis(10),
        pool.submit(Job::with_id(3, Bytes::new())),
    )
    .await;
    assert!(
        waited.is_err(),
        "the queue was full: the submit had to wait"
    );
    let waited = tokio::time::timeout(
        Duration::from_millis(10),
        pool.submit_detached(Job::with_id(4, Bytes::new())),
    )
    .await;
    assert!(waited.is_err());

    // The dropped submits were never accepted: once the two real jobs end,
    // the pool is idle and a drain returns at once, not at its timeout.
    gate.add_permits(2);
    let start = tokio::time::Instant::now();
    let report = pool.shutdown(Duration::from_secs(3600)).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "shutdown waited {:?} for submits that were dropped",
        start.elapsed()
    );
    assert_eq!(report.stats().succeeded, 2);
    assert_eq!(report.stats().accepted, 2);
    assert!(report.not_finished().is_empty());
}
