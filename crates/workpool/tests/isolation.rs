//! Contract 4: a panic, an error, a hang past its deadline or a cancelled job
//! ends that job only; the worker goes on and the number of workers holds.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Seen, quiet_boom_panics};
use workpool::{Job, JobContext, Outcome, OutcomeKind, Pool};

/// One worker; each job's payload says what it does.
fn one_worker(seen: &Seen) -> Pool<&'static str> {
    seen.hook(Pool::builder().workers(1).grace(Duration::from_millis(100)))
        .build(|job: Job<&'static str>, ctx: JobContext| async move {
            match *job.payload() {
                "ok" => Ok(()),
                "err" => Err("it went wrong".into()),
                "panic" => panic!("boom: handler panicked"),
                "panic-in-call" => unreachable!(),
                "hang" => {
                    ctx.cancelled().await;
                    Err::<(), workpool::BoxError>("stopped".into())
                }
                "hang-deaf" => std::future::pending().await,
                other => Err(format!("unknown {other}").into()),
            }
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_panic_ends_its_own_job_and_the_worker_goes_on() {
    quiet_boom_panics();
    let seen = Seen::default();
    let pool = one_worker(&seen);
    let p = pool.submit(Job::with_id("p", "panic")).await.unwrap();
    let ok = pool.submit(Job::with_id("after", "ok")).await.unwrap();
    match p.await {
        Outcome::Panicked {
            message,
            attempts: 1,
        } => assert_eq!(message, "boom: handler panicked"),
        other => panic!("{other:?}"),
    }
    assert!(
        ok.await.is_success(),
        "the same single worker ran the next job"
    );
    assert_eq!(pool.stats().workers, 1);
    assert_eq!(pool.stats().panicked, 1);
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_panics_before_returning_its_future_is_caught_too() {
    quiet_boom_panics();
    let pool = Pool::builder()
        .workers(1)
        .build(|job: Job<u8>, _ctx| {
            if *job.payload() == 1 {
                panic!("boom: in the call itself");
            }
            async { Ok::<_, std::io::Error>(()) }
        })
        .unwrap();
    let a = pool.submit(Job::with_id(1, 1)).await.unwrap();
    let b = pool.submit(Job::with_id(2, 2)).await.unwrap();
    assert!(matches!(a.await, Outcome::Panicked { .. }));
    assert!(b.await.is_success());
}

#[tokio::test(start_paused = true)]
async fn many_panics_never_reduce_the_workers() {
    quiet_boom_panics();
    let seen = Seen::default();
    let pool = seen
        .hook(Pool::builder().workers(3))
        .build(|job: Job<u32>, _ctx| async move {
            if job.payload().is_multiple_of(2) {
                panic!("boom {}", job.payload());
            }
            Ok::<_, std::io::Error>(())
        });
    let pool = pool.unwrap();
    for i in 0..100 {
        pool.submit_detached(Job::with_id(u64::from(i), i))
            .await
            .unwrap();
    }
    while pool.stats().outcomes() < 100 {
        tokio::task::yield_now().await;
    }
    let s = pool.stats();
    assert_eq!((s.panicked, s.succeeded), (50, 50));
    assert_eq!(s.workers, 3, "no worker died");
    assert_eq!(seen.len(), 100);
}

#[tokio::test(start_paused = true)]
async fn an_error_fails_its_job_only() {
    let seen = Seen::default();
    let pool = one_worker(&seen);
    let e = pool.submit(Job::with_id("e", "err")).await.unwrap();
    let ok = pool.submit(Job::with_id("ok", "ok")).await.unwrap();
    match e.await {
        Outcome::Failed { error, attempts: 1 } => assert_eq!(error.to_string(), "it went wrong"),
        other => panic!("{other:?}"),
    }
    assert!(ok.await.is_success());
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_deadline_is_stopped_and_the_next_one_runs() {
    let seen = Seen::default();
    let pool = one_worker(&seen);
    let start = tokio::time::Instant::now();
    // Watches its signal: ends at the deadline.
    let polite = pool
        .submit(Job::with_id("polite", "hang").with_timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    // Ignores it: dropped after the grace period.
    let deaf = pool
        .submit(Job::with_id("deaf", "hang-deaf").with_timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    let ok = pool.submit(Job::with_id("ok", "ok")).await.unwrap();
    assert!(matches!(
        polite.await,
        Outcome::TimedOut { attempts: 1, .. }
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert!(matches!(deaf.await, Outcome::TimedOut { attempts: 1, .. }));
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(200 + 300),
        "deadline + grace"
    );
    assert!(ok.await.is_success());
    assert_eq!(pool.stats().timed_out, 2);
    let texts: Vec<_> = pool
        .recent_failures()
        .into_iter()
        .map(|f| f.error)
        .collect();
    assert!(texts[0].starts_with("timed out after 200ms"), "{texts:?}");
    assert!(
        texts[1].contains("did not stop within the grace period"),
        "{texts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_with_no_timeout_is_never_timed_out() {
    let pool = Pool::builder()
        .workers(1)
        .build(|_job: Job, _ctx| async {
            tokio::time::sleep(Duration::from_secs(3600 * 24)).await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let h = pool.submit(Job::with_id(1, Bytes::new())).await.unwrap();
    assert!(h.await.is_success());
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_applies_and_a_jobs_own_wins() {
    let pool = Pool::builder()
        .workers(2)
        .default_timeout(Duration::from_millis(100))
        .build(|job: Job<u64>, ctx: JobContext| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(*job.payload())) => Ok(()),
                _ = ctx.cancelled() => Err("deadline"),
            }
        })
        .unwrap();
    let short = pool.submit(Job::with_id(1, 500)).await.unwrap();
    let own = pool
        .submit(Job::with_id(2, 500).with_timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(short.await.kind(), OutcomeKind::TimedOut);
    assert_eq!(own.await.kind(), OutcomeKind::Succeeded);
}

/// An async handler that blocks its runtime thread (a misuse: blocking work
/// belongs in a blocking handler) stalls that thread's tasks, but not the
/// pool: jobs submitted meanwhile run on the other thread. (A worker woken
/// by the blocked job's worker waits behind it, on that thread; the pool
/// must not count on that worker to take what is queued.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_its_thread_does_not_stall_the_pool() {
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = std::sync::Arc::new(std::sync::Mutex::new(blocked));
    let pool: Pool<&'static str> = Pool::builder()
        .workers(4)
        .build(move |job: Job<&'static str>, _ctx| {
            let blocked = blocked.clone();
            async move {
                if *job.payload() == "block" {
                    // Blocks this runtime thread until the test lets go.
                    let _ = blocked.lock().unwrap().recv();
                }
                Ok::<_, std::io::Error>(())
            }
        })
        .unwrap();
    // Let every worker find the queue empty and wait.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let block = pool.submit(Job::with_id(0u64, "block")).await.unwrap();
    for i in 1..=5u64 {
        let quick = pool.submit(Job::with_id(i, "quick")).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), quick).await;
        assert!(
            matches!(outcome, Ok(Outcome::Succeeded { .. })),
            "job {i} waited behind the blocked thread"
        );
    }
    release.send(()).unwrap();
    assert!(matches!(block.await, Outcome::Succeeded { .. }));
    pool.shutdown(Duration::from_secs(5)).await;
}
