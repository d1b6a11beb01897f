//! Retries: exponential backoff with full jitter, permanent errors, which
//! failures are retried, and that a job waiting to retry holds no worker.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Seen, quiet_boom_panics};
use tokio::time::Instant;
use workpool::{BoxError, Job, JobContext, Outcome, OutcomeKind, Pool, RetryPolicy, permanent};

/// Fails until attempt `succeed_on` (never if 0), recording when each attempt started.
fn flaky(policy: RetryPolicy, times: Arc<Mutex<Vec<(u32, Instant)>>>) -> Pool<u32> {
    Pool::builder()
        .workers(1)
        .retry(policy)
        .build(move |job: Job<u32>, ctx: JobContext| {
            let times = times.clone();
            async move {
                times.lock().unwrap().push((ctx.attempt(), Instant::now()));
                let succeed_on = *job.payload();
                if succeed_on != 0 && ctx.attempt() >= succeed_on {
                    Ok(())
                } else {
                    Err(format!("attempt {} failed", ctx.attempt()))
                }
            }
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_is_retried_until_it_succeeds() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let policy =
        RetryPolicy::attempts(5).with_backoff(Duration::from_millis(100), Duration::from_secs(10));
    let pool = flaky(policy, times.clone());
    let h = pool.submit(Job::with_id(1, 3)).await.unwrap();
    assert!(matches!(h.await, Outcome::Succeeded { attempts: 3, .. }));
    let times = times.lock().unwrap().clone();
    assert_eq!(times.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 3]);
    // Full jitter: each wait is within 0 ..= base * 2^(n-1).
    for (n, w) in times.windows(2).enumerate() {
        let waited = w[1].1 - w[0].1;
        let ceiling = policy.max_delay(n as u32 + 1);
        assert!(waited <= ceiling, "wait {n}: {waited:?} > {ceiling:?}");
    }
    let s = pool.stats();
    assert_eq!((s.retried, s.succeeded, s.failed), (2, 1, 0));
    let failures = pool.recent_failures();
    assert_eq!(
        failures.iter().map(|f| f.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(failures[1].error, "attempt 2 failed");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_keeps_failing_ends_failed_with_the_last_error() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let pool = flaky(
        RetryPolicy::attempts(4).with_backoff(Duration::from_millis(1), Duration::from_millis(8)),
        times,
    );
    let h = pool.submit(Job::with_id(1, 0)).await.unwrap();
    match h.await {
        Outcome::Failed { error, attempts: 4 } => assert_eq!(error.to_string(), "attempt 4 failed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.stats().retried, 3);
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_are_jittered_below_the_ceiling_across_many_jobs() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    let pool = Pool::builder()
        .workers(50)
        .retry(
            RetryPolicy::attempts(2).with_backoff(Duration::from_secs(10), Duration::from_secs(10)),
        )
        .build(move |_job: Job<u32>, ctx: JobContext| {
            let t = t.clone();
            async move {
                t.lock().unwrap().push((ctx.attempt(), Instant::now()));
                if ctx.attempt() == 1 {
                    Err("first try fails")
                } else {
                    Ok(())
                }
            }
        })
        .unwrap();
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..50u32 {
        handles.push(pool.submit(Job::with_id(u64::from(i), i)).await.unwrap());
    }
    for h in handles {
        assert!(matches!(h.await, Outcome::Succeeded { attempts: 2, .. }));
    }
    let retries: Vec<Duration> = times
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.0 == 2)
        .map(|t| t.1 - start)
        .collect();
    assert_eq!(retries.len(), 50);
    assert!(retries.iter().all(|d| *d <= Duration::from_secs(10)));
    let distinct: std::collections::HashSet<_> = retries.iter().collect();
    assert!(
        distinct.len() > 40,
        "retries should spread out, got {} distinct times",
        distinct.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let pool = Pool::builder()
        .workers(1)
        .retry(RetryPolicy::attempts(5))
        .build(|_job: Job, _ctx| async { Err::<(), BoxError>(permanent("bad input").into()) })
        .unwrap();
    match pool
        .submit(Job::with_id(1, "x".into()))
        .await
        .unwrap()
        .await
    {
        Outcome::Failed { error, attempts: 1 } => assert_eq!(error.to_string(), "bad input"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.stats().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn panics_are_retried_only_when_asked() {
    quiet_boom_panics();
    for (retry_panics, expect_attempts) in [(false, 1), (true, 3)] {
        let pool = Pool::builder()
            .workers(1)
            .retry(
                RetryPolicy::attempts(3)
                    .with_backoff(Duration::from_millis(1), Duration::from_millis(1))
                    .retry_panics(retry_panics),
            )
            .build(|_job: Job, _ctx| async { panic!("boom") as Result<(), std::io::Error> })
            .unwrap();
        let out = pool
            .submit(Job::with_id(1, "x".into()))
            .await
            .unwrap()
            .await;
        assert_eq!(out.kind(), OutcomeKind::Panicked);
        assert_eq!(
            out.attempts(),
            expect_attempts,
            "retry_panics({retry_panics})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_unless_told_not_to() {
    for (retry_timeouts, expect_attempts) in [(true, 2), (false, 1)] {
        let pool = Pool::builder()
            .workers(1)
            .grace(Duration::ZERO)
            .default_timeout(Duration::from_millis(10))
            .retry(
                RetryPolicy::attempts(2)
                    .with_backoff(Duration::ZERO, Duration::ZERO)
                    .retry_timeouts(retry_timeouts),
            )
            .build(|_job: Job, _ctx| std::future::pending::<Result<(), std::io::Error>>())
            .unwrap();
        let out = pool
            .submit(Job::with_id(1, "x".into()))
            .await
            .unwrap()
            .await;
        assert_eq!(out.kind(), OutcomeKind::TimedOut);
        assert_eq!(out.attempts(), expect_attempts);
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_waiting_to_retry_does_not_hold_its_worker() {
    let seen = Seen::default();
    let pool = seen
        .hook(Pool::builder().workers(1).retry(
            RetryPolicy::attempts(2).with_backoff(Duration::from_secs(60), Duration::from_secs(60)),
        ))
        .build(|job: Job<&'static str>, ctx: JobContext| async move {
            match (*job.payload(), ctx.attempt()) {
                ("flaky", 1) => Err("first try fails"),
                _ => Ok(()),
            }
        })
        .unwrap();
    let flaky = pool.submit(Job::with_id("flaky", "flaky")).await.unwrap();
    while pool.stats().retry_waiting == 0 {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let other = pool.submit(Job::with_id("other", "other")).await.unwrap();
    assert!(other.await.is_success());
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the single worker was free during the backoff"
    );
    assert!(matches!(
        flaky.await,
        Outcome::Succeeded { attempts: 2, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_jobs_own_policy_overrides_the_pools() {
    let pool = Pool::builder()
        .workers(1)
        .retry(RetryPolicy::attempts(5).with_backoff(Duration::ZERO, Duration::ZERO))
        .build(|_job: Job<String>, _ctx| async { Err::<(), _>("no") })
        .unwrap();
    let once = Job::with_id(1, String::from("x")).with_retry(RetryPolicy::never());
    assert_eq!(pool.submit(once).await.unwrap().await.attempts(), 1);
    assert_eq!(
        pool.submit(Job::with_id(2, String::from("y")))
            .await
            .unwrap()
            .await
            .attempts(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn each_attempt_gets_a_fresh_copy_of_the_payload() {
    let pool = Pool::builder()
        .workers(1)
        .retry(RetryPolicy::attempts(3).with_backoff(Duration::ZERO, Duration::ZERO))
        .build(|mut job: Job<Vec<u8>>, ctx: JobContext| async move {
            // Mutating the payload must not leak into the next attempt.
            assert_eq!(job.payload(), &vec![1, 2, 3]);
            job.payload_mut().clear();
            if ctx.attempt() < 3 {
                Err("again")
            } else {
                Ok(())
            }
        })
        .unwrap();
    let out = pool
        .submit(Job::with_id(1, vec![1, 2, 3]))
        .await
        .unwrap()
        .await;
    assert!(
        matches!(out, Outcome::Succeeded { attempts: 3, .. }),
        "{out:?}"
    );
}
