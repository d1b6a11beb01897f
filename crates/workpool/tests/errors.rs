//! Contract 5: errors are tracked, not just logged: counters, recent failures
//! with ID, attempt and text, a hook with every outcome, tracing spans,
//! metrics. Also: invalid settings are errors, not panics.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Seen, quiet_boom_panics};
use workpool::{BuildError, Job, JobContext, OutcomeKind, Pool, ResizeError, Stats};

#[tokio::test(start_paused = true)]
async fn counters_recent_failures_and_the_hook_agree() {
    quiet_boom_panics();
    let seen = Seen::default();
    let pool = seen
        .hook(
            Pool::builder()
                .workers(2)
                .recent_failures(2)
                .grace(Duration::ZERO),
        )
        .build(|job: Job<&'static str>, _ctx| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match *job.payload() {
                "ok" => Ok(()),
                "err" => Err(format!("error in {}", job.id())),
                "panic" => panic!("boom in {}", job.id()),
                _ => std::future::pending().await,
            }
        })
        .unwrap();
    let jobs = [
        ("a", "ok"),
        ("b", "err"),
        ("c", "panic"),
        ("d", "ok"),
        ("e", "err"),
    ];
    for (id, what) in jobs {
        pool.submit_detached(Job::with_id(id, what)).await.unwrap();
    }
    pool.submit_detached(Job::with_id("f", "hang").with_timeout(Duration::from_millis(50)))
        .await
        .unwrap();
    let report = pool.shutdown(Duration::from_secs(10)).await;

    let s: Stats = *report.stats();
    assert_eq!(
        (s.accepted, s.succeeded, s.failed, s.panicked, s.timed_out),
        (6, 2, 2, 1, 1)
    );
    assert_eq!((s.queued, s.running, s.rejected), (0, 0, 0));
    assert_eq!(s.outcomes(), s.accepted);

    // Only the last two failures are kept, each with ID, attempt and text.
    let recent = pool.recent_failures();
    assert_eq!(recent.len(), 2);
    assert!(recent.iter().all(|f| f.attempt == 1));
    let kinds: Vec<_> = recent.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&OutcomeKind::TimedOut), "{recent:?}");

    // The hook saw every job once, with its duration.
    let mut all = seen.all();
    all.sort_by_key(|s| s.0.to_string());
    let got: Vec<_> = all.iter().map(|s| (s.0.to_string(), s.1)).collect();
    use OutcomeKind::*;
    let want = [
        ("a", Succeeded),
        ("b", Failed),
        ("c", Panicked),
        ("d", Succeeded),
        ("e", Failed),
        ("f", TimedOut),
    ];
    assert_eq!(got, want.map(|(i, k)| (i.to_string(), k)));
    for (id, kind, attempts, duration) in &all {
        assert_eq!(*attempts, 1);
        let expected = if *kind == TimedOut {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(10)
        };
        assert_eq!(*duration, expected, "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_hook_does_not_hurt_the_pool() {
    quiet_boom_panics();
    let pool = Pool::builder()
        .workers(1)
        .on_outcome(|_c: &workpool::Completion| panic!("boom in the hook"))
        .build(|_job: Job, _ctx| async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    for i in 0..3 {
        assert!(
            pool.submit(Job::with_id(i, "x".into()))
                .await
                .unwrap()
                .await
                .is_success()
        );
    }
    assert_eq!(pool.stats().succeeded, 3);
}

#[test]
fn invalid_settings_are_errors_not_panics() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let handler = |_job: Job, _ctx: JobContext| async { Ok::<_, std::io::Error>(()) };
    let _guard = rt.enter();
    assert_eq!(
        Pool::builder().workers(0).build(handler).unwrap_err(),
        BuildError::ZeroWorkers
    );
    assert_eq!(
        Pool::builder()
            .queue_capacity(0)
            .build(handler)
            .unwrap_err(),
        BuildError::ZeroCapacity
    );
    assert_eq!(
        BuildError::ZeroWorkers.to_string(),
        "a pool needs at least one worker"
    );
    let pool = Pool::builder().workers(1).build(handler).unwrap();
    assert_eq!(pool.resize(0), Err(ResizeError::ZeroWorkers));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let err = Pool::builder()
        .build(|_job: Job, _ctx| async { Ok::<_, std::io::Error>(()) })
        .unwrap_err();
    assert_eq!(err, BuildError::NoRuntime);
}

/// A minimal `metrics` recorder that counts increments by name and labels.
mod recorder {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    #[derive(Clone, Default)]
    pub struct Counts(pub Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>);

    struct Cell(Arc<AtomicU64>);
    impl CounterFn for Cell {
        fn increment(&self, v: u64) {
            self.0.fetch_add(v, Ordering::Relaxed);
        }
        fn absolute(&self, v: u64) {
            self.0.store(v, Ordering::Relaxed);
        }
    }
    impl HistogramFn for Cell {
        fn record(&self, _: f64) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn name(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Counts {
        fn cell(&self, key: &Key) -> Arc<AtomicU64> {
            self.0.lock().unwrap().entry(name(key)).or_default().clone()
        }
        pub fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Cell(self.cell(key))))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Cell(self.cell(key))))
        }
    }
}

#[test]
fn the_metrics_feature_counts_outcomes_and_durations() {
    let counts = recorder::Counts::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&counts, || {
        rt.block_on(async {
            let pool = Pool::builder()
                .workers(2)
                .build(|job: Job<bool>, _ctx| async move {
                    if *job.payload() { Ok(()) } else { Err("no") }
                })
                .unwrap();
            for (i, ok) in [true, true, false].into_iter().enumerate() {
                pool.submit_detached(Job::with_id(i as u64, ok))
                    .await
                    .unwrap();
            }
            pool.shutdown(Duration::from_secs(1)).await;
        })
    });
    assert_eq!(counts.get("workpool_jobs_total{outcome=succeeded}"), 2);
    assert_eq!(counts.get("workpool_jobs_total{outcome=failed}"), 1);
    assert_eq!(counts.get("workpool_job_duration_seconds{}"), 3);
}

#[tokio::test(start_paused = true)]
async fn stats_show_queued_running_and_retry_waiting_while_busy() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let pool = Pool::builder()
        .workers(1)
        .retry(
            workpool::RetryPolicy::attempts(2)
                .with_backoff(Duration::from_secs(60), Duration::from_secs(60)),
        )
        .build(move |job: Job<bool>, ctx: JobContext| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                *c.lock().unwrap() += 1;
                if *job.payload() && ctx.attempt() == 1 {
                    return Err("retry me");
                }
                g.acquire().await.unwrap().forget();
                Ok(())
            }
        })
        .unwrap();
    pool.submit_detached(Job::with_id("retry", true))
        .await
        .unwrap();
    while pool.stats().retry_waiting == 0 {
        tokio::task::yield_now().await;
    }
    pool.submit_detached(Job::with_id("run", false))
        .await
        .unwrap();
    while pool.stats().running == 0 {
        tokio::task::yield_now().await;
    }
    pool.submit_detached(Job::with_id("queued", false))
        .await
        .unwrap();
    let s = pool.stats();
    assert_eq!(
        (
            s.accepted,
            s.running,
            s.queued,
            s.retry_waiting,
            s.retried,
            s.workers
        ),
        (3, 1, 1, 1, 1, 1)
    );
    gate.add_permits(10);
    let report = pool.shutdown(Duration::from_secs(600)).await;
    assert_eq!(report.stats().succeeded, 3);
}

/// A timeout too long for the clock (`Duration::MAX`, as "never") is no
/// timeout: the job runs with no deadline, and the worker goes on; a submit or
/// shutdown given one waits as long as it takes. (The job's deadline used to
/// panic in the worker loop, losing the worker; shutdown's, the coordinator.)
#[tokio::test(start_paused = true)]
async fn a_timeout_beyond_the_clock_means_no_deadline() {
    for (own, default) in [(Some(Duration::MAX), None), (None, Some(Duration::MAX))] {
        let deadlines = Arc::new(Mutex::new(Vec::new()));
        let seen = deadlines.clone();
        let mut builder = Pool::builder().workers(1);
        if let Some(d) = default {
            builder = builder.default_timeout(d);
        }
        let pool = builder
            .build(move |_job: Job<u8>, ctx: JobContext| {
                seen.lock().unwrap().push(ctx.deadline());
                async { Ok::<_, std::io::Error>(()) }
            })
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..2 {
            let job = Job::with_id(i, 0);
            let job = match own {
                Some(t) => job.with_timeout(t),
                None => job,
            };
            handles.push(pool.submit_timeout(job, Duration::MAX).await.unwrap());
        }
        for h in handles {
            assert_eq!(h.await.kind(), OutcomeKind::Succeeded);
        }
        assert_eq!(*deadlines.lock().unwrap(), vec![None, None]);
        let report = pool.shutdown(Duration::MAX).await;
        assert_eq!(report.stats().succeeded, 2);
    }
}
