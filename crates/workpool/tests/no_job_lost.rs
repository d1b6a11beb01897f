//! Contract 1: every accepted job reaches exactly one outcome, and every
//! refused job comes back to its submitter, under random mixes of success,
//! error, panic, hang and cancel and a random shutdown moment.
//!
//! Each case runs on its own single-threaded runtime with paused time, so a
//! failing case replays exactly (proptest prints it).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Seen, quiet_boom_panics};
use proptest::prelude::*;
use workpool::{Job, JobContext, Outcome, OutcomeKind, Pool, RetryPolicy};

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Sleeps, then succeeds.
    Succeed(u16),
    /// Sleeps, then fails (retried if the pool retries).
    Fail(u16),
    /// Fails on the first attempt only.
    FailOnce(u16),
    /// Panics.
    Panic,
    /// Waits for its signal, then returns an error.
    HangPolite,
    /// Never returns and ignores its signal.
    HangDeaf,
}

#[derive(Clone, Debug)]
struct Spec {
    behaviour: Behaviour,
    timeout_ms: Option<u16>,
    /// Cancel through the handle this long after submitting (handle jobs only).
    cancel_after_ms: Option<u16>,
    detached: bool,
}

#[derive(Clone, Debug)]
struct Case {
    jobs: Vec<Spec>,
    workers: usize,
    capacity: usize,
    retries: u32,
    drain: bool,
    shutdown_at_ms: u16,
    timeout_ms: u16,
    grace_ms: u16,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        4 => (0u16..50).prop_map(Behaviour::Succeed),
        2 => (0u16..50).prop_map(Behaviour::Fail),
        1 => (0u16..50).prop_map(Behaviour::FailOnce),
        1 => Just(Behaviour::Panic),
        1 => Just(Behaviour::HangPolite),
        1 => Just(Behaviour::HangDeaf),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        behaviour(),
        prop::option::weighted(0.3, 1u16..80),
        prop::option::weighted(0.15, 0u16..60),
        any::<bool>(),
    )
        .prop_map(|(behaviour, timeout_ms, cancel_after_ms, detached)| Spec {
            behaviour,
            timeout_ms,
            cancel_after_ms: if detached { None } else { cancel_after_ms },
            detached,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(spec(), 0..24),
        1usize..4,
        1usize..6,
        1u32..4,
        any::<bool>(),
        0u16..150,
        0u16..100,
        0u16..50,
    )
        .prop_map(
            |(jobs, workers, capacity, retries, drain, shutdown_at_ms, timeout_ms, grace_ms)| {
                Case {
                    jobs,
                    workers,
                    capacity,
                    retries,
                    drain,
                    shutdown_at_ms,
                    timeout_ms,
                    grace_ms,
                }
            },
        )
}

fn ms(n: u16) -> Duration {
    Duration::from_millis(u64::from(n))
}

async fn handler(job: Job<Behaviour>, ctx: JobContext) -> Result<(), String> {
    match *job.payload() {
        Behaviour::Succeed(d) => {
            tokio::time::sleep(ms(d)).await;
            Ok(())
        }
        Behaviour::Fail(d) => {
            tokio::time::sleep(ms(d)).await;
            Err("failed".into())
        }
        Behaviour::FailOnce(d) => {
            tokio::time::sleep(ms(d)).await;
            if ctx.attempt() == 1 {
                Err("first attempt fails".into())
            } else {
                Ok(())
            }
        }
        Behaviour::Panic => panic!("boom"),
        Behaviour::HangPolite => {
            ctx.cancelled().await;
            Err("stopped".into())
        }
        Behaviour::HangDeaf => std::future::pending().await,
    }
}

fn run_case(case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let seen = Seen::default();
        let pool = seen
            .hook(
                Pool::builder()
                    .workers(case.workers)
                    .queue_capacity(case.capacity)
                    .grace(ms(case.grace_ms))
                    .retry(RetryPolicy::attempts(case.retries).with_backoff(ms(5), ms(40))),
            )
            .build(handler)
            .unwrap();

        // One submitter: blocking submits, so backpressure and a shutdown that
        // lands mid-submission are both exercised.
        let submitter = {
            let pool = pool.clone();
            let jobs = case.jobs.clone();
            tokio::spawn(async move {
                let mut refused = Vec::new();
                let mut handles = Vec::new();
                for (i, spec) in jobs.into_iter().enumerate() {
                    let mut job = Job::with_id(i as u64, spec.behaviour);
                    if let Some(t) = spec.timeout_ms {
                        job = job.with_timeout(ms(t));
                    }
                    if spec.detached {
                        match pool.submit_detached(job).await {
                            Ok(()) => {}
                            Err(e) => refused.push(e.job().id().clone()),
                        }
                    } else {
                        match pool.submit(job).await {
                            Ok(h) => {
                                let cancel = spec.cancel_after_ms;
                                handles.push(tokio::spawn(async move {
                                    if let Some(c) = cancel {
                                        tokio::time::sleep(ms(c)).await;
                                        h.cancel();
                                    }
                                    let id = h.id().clone();
                                    (id, h.await)
                                }));
                            }
                            Err(e) => refused.push(e.job().id().clone()),
                        }
                    }
                }
                (refused, handles)
            })
        };

        tokio::time::sleep(ms(case.shutdown_at_ms)).await;
        let began = tokio::time::Instant::now();
        let report = if case.drain {
            pool.shutdown(ms(case.timeout_ms)).await
        } else {
            pool.shutdown_without_draining(ms(case.timeout_ms)).await
        };
        let took = began.elapsed();
        let (refused, handles) = submitter.await.unwrap();
        let mut from_handles = HashMap::new();
        for h in handles {
            let (id, outcome) = h.await.unwrap();
            from_handles.insert(id, outcome);
        }
        // Let anything that could still be running run: nothing may add an
        // outcome after the report.
        tokio::time::sleep(Duration::from_secs(10)).await;

        let stats = *report.stats();
        let all = seen.all();
        let submitted = case.jobs.len() as u64;
        prop_assert_eq!(
            stats.accepted + refused.len() as u64,
            submitted,
            "accepted + refused = submitted"
        );
        prop_assert_eq!(stats.rejected, refused.len() as u64);
        prop_assert_eq!(
            stats.outcomes(),
            stats.accepted,
            "accepted = sum of outcomes: {:?}",
            stats
        );
        prop_assert_eq!(
            all.len() as u64,
            stats.accepted,
            "one hook call per accepted job"
        );
        prop_assert_eq!(
            pool.stats().outcomes(),
            stats.outcomes(),
            "nothing after the report"
        );

        // Every accepted ID exactly once; no refused ID at all.
        let mut count: HashMap<_, u32> = HashMap::new();
        for (id, ..) in &all {
            *count.entry(id.clone()).or_default() += 1;
        }
        prop_assert!(
            count.values().all(|&n| n == 1),
            "an ID had two outcomes: {:?}",
            count
        );
        for id in &refused {
            prop_assert!(
                !count.contains_key(id),
                "refused job {} also has an outcome",
                id
            );
        }
        for kind in OutcomeKind::ALL {
            let n = all.iter().filter(|s| s.1 == kind).count() as u64;
            prop_assert_eq!(n, stats.count(kind), "{} counted", kind);
        }

        // Handles agree with the hook; unstarted jobs came back somewhere.
        let mut unstarted_back = 0;
        for (id, outcome) in &from_handles {
            let hook_kind = all.iter().find(|s| &s.0 == id).map(|s| s.1);
            prop_assert_eq!(Some(outcome.kind()), hook_kind, "handle vs hook for {}", id);
            if let Outcome::Unstarted { job, .. } = outcome {
                prop_assert_eq!(job.id(), id);
                unstarted_back += 1;
            }
        }
        let in_report = report.take_unstarted();
        prop_assert_eq!(
            unstarted_back + in_report.len() as u64,
            stats.unstarted,
            "every unstarted job handed back"
        );
        let listed = report.ids(OutcomeKind::Unstarted).len() as u64;
        prop_assert_eq!(listed, stats.unstarted);

        // Shutdown returned in time.
        let bound = ms(case.timeout_ms) + ms(case.grace_ms);
        prop_assert!(took <= bound, "shutdown took {:?} > {:?}", took, bound);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepted_equals_sum_of_outcomes_and_no_id_is_lost(case in case()) {
        quiet_boom_panics();
        run_case(case)?;
    }
}
