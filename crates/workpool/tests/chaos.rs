//! Conservation under chaos: several concurrent submitters using every submit
//! flavour and per-job cancels, handlers that succeed, fail, panic, time out,
//! ignore cancellation or block their thread, and a shutdown at a random
//! moment, draining or not, on a multi-threaded runtime.
//!
//! Every round is seeded; a failing assertion names its seed, and
//! `CHAOS_SEED=<seed> cargo test --test chaos -- --nocapture` replays that
//! seed's choices (the thread interleaving is the machine's). The quick run
//! (about 10^4 jobs) is part of the normal tests; the long run is
//! `cargo test --release --test chaos -- --ignored --nocapture` (figures in
//! RELIABILITY.md).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Seen, quiet_boom_panics};
use workpool::{Job, JobContext, OutcomeKind, Pool, RetryPolicy};

/// splitmix64: a reproducible stream of numbers from a seed.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Succeed,
    Fail,
    FailOnce,
    Panic,
    /// Runs past its deadline, stops when told.
    Slow,
    /// Ignores its signal: async, it waits forever; blocking, it blocks its
    /// thread for a while without looking.
    Deaf,
}

fn fault(rng: &mut u64) -> Fault {
    match mix(rng) % 20 {
        0..=1 => Fault::Fail,
        2..=3 => Fault::FailOnce,
        4 => Fault::Panic,
        5 => Fault::Slow,
        6 => Fault::Deaf,
        _ => Fault::Succeed,
    }
}

/// The timeout given to every job, the drain timeout and the grace period.
const JOB_TIMEOUT: Duration = Duration::from_millis(30);
const DRAIN: Duration = Duration::from_millis(40);
const GRACE: Duration = Duration::from_millis(20);

/// What one round measured.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    submitted: u64,
    accepted: u64,
    faults: u64,
    /// Time shutdown took beyond `DRAIN + GRACE`.
    overshoot: Duration,
}

async fn async_handler(job: Job<Fault>, ctx: JobContext) -> Result<(), String> {
    match *job.payload() {
        Fault::Succeed => {
            tokio::task::yield_now().await;
            Ok(())
        }
        Fault::Fail => Err("fails".into()),
        Fault::FailOnce if ctx.attempt() == 1 => Err("fails once".into()),
        Fault::FailOnce => Ok(()),
        Fault::Panic => panic!("boom"),
        Fault::Slow => {
            ctx.cancelled().await;
            Err("stopped".into())
        }
        Fault::Deaf => std::future::pending().await,
    }
}

fn blocking_handler(job: Job<Fault>, ctx: JobContext, release: &AtomicBool) -> Result<(), String> {
    match *job.payload() {
        Fault::Succeed => Ok(()),
        Fault::Fail => Err("fails".into()),
        Fault::FailOnce if ctx.attempt() == 1 => Err("fails once".into()),
        Fault::FailOnce => Ok(()),
        Fault::Panic => panic!("boom"),
        Fault::Slow => {
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err("stopped".into())
        }
        Fault::Deaf => {
            // Blocks its thread, never looking at the context, until the
            // round is over.
            while !release.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        }
    }
}

async fn round(seed: u64, submitters: u64, per_submitter: u64, blocking: bool) -> Round {
    let seen = Seen::default();
    let release = Arc::new(AtomicBool::new(false));
    let builder = seen.hook(
        Pool::builder()
            .workers(4)
            .queue_capacity(8)
            .grace(GRACE)
            .default_timeout(JOB_TIMEOUT)
            .retry(RetryPolicy::attempts(2).with_backoff(Duration::ZERO, Duration::from_millis(2))),
    );
    let pool = if blocking {
        let r = release.clone();
        builder
            .build_blocking(move |job: Job<Fault>, ctx: JobContext| blocking_handler(job, ctx, &r))
    } else {
        builder.build(async_handler)
    }
    .unwrap();

    let tasks: Vec<_> = (0..submitters)
        .map(|s| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut rng = seed.wrapping_mul(1000).wrapping_add(s);
                let (mut accepted, mut refused, mut handles, mut faults) =
                    (Vec::new(), 0u64, Vec::new(), 0u64);
                let mut withdrawn = 0u64;
                for i in 0..per_submitter {
                    let id = s * 10_000_000 + i;
                    let f = fault(&mut rng);
                    let job = Job::with_id(id, f);
                    let back = match mix(&mut rng) % 5 {
                        0 => pool.try_submit_detached(job).err().map(|e| e.into_inner()),
                        1 => pool
                            .submit_detached_timeout(job, Duration::from_millis(1))
                            .await
                            .err()
                            .map(|e| e.into_inner()),
                        2 => match pool.submit(job).await {
                            Ok(h) => {
                                if mix(&mut rng).is_multiple_of(4) {
                                    h.cancel();
                                }
                                handles.push(h);
                                None
                            }
                            Err(e) => Some(e.into_inner()),
                        },
                        3 => pool
                            .submit_detached(job)
                            .await
                            .err()
                            .map(|e| e.into_inner()),
                        // Given up on from outside while it may be waiting
                        // for room: the job goes with the dropped future.
                        _ => match tokio::time::timeout(
                            Duration::from_micros(200),
                            pool.submit_detached(job),
                        )
                        .await
                        {
                            Ok(r) => r.err().map(|e| e.into_inner()),
                            Err(_) => {
                                withdrawn += 1;
                                continue;
                            }
                        },
                    };
                    match back {
                        Some(job) => {
                            assert_eq!(
                                job.id().as_u64(),
                                Some(id),
                                "seed {seed}: a refused job came back as itself"
                            );
                            refused += 1;
                        }
                        None => {
                            accepted.push(id);
                            faults += u64::from(!matches!(f, Fault::Succeed));
                        }
                    }
                }
                let mut outcomes = Vec::new();
                for h in handles {
                    let id = h.id().as_u64().unwrap();
                    outcomes.push((id, h.await.kind()));
                }
                (accepted, refused + withdrawn, outcomes, faults, withdrawn)
            })
        })
        .collect();

    // Shut down at a seeded moment: once a seeded share of the submissions
    // has been made (accepted or refused), so it lands anywhere in the run.
    let mut rng = seed;
    let total = submitters * per_submitter;
    let at = mix(&mut rng) % (total + total / 10);
    loop {
        let s = pool.stats();
        if s.accepted + s.rejected >= at || tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let drain = mix(&mut rng).is_multiple_of(2);
    let started = std::time::Instant::now();
    let report = if drain {
        pool.shutdown(DRAIN).await
    } else {
        pool.shutdown_without_draining(DRAIN).await
    };
    let took = started.elapsed();
    release.store(true, Ordering::Relaxed);

    let (mut accepted, mut refused, mut from_handles, mut faults) = (Vec::new(), 0, Vec::new(), 0);
    let mut withdrawn = 0;
    for t in tasks {
        let (a, r, o, f, w) = t.await.unwrap();
        accepted.extend(a);
        refused += r;
        from_handles.extend(o);
        faults += f;
        withdrawn += w;
    }
    let stats = *report.stats();
    let all = seen.all();
    let submitted = submitters * per_submitter;
    assert_eq!(
        accepted.len() as u64 + refused,
        submitted,
        "seed {seed}: every job accepted, handed back or withdrawn by its submitter"
    );
    assert_eq!(stats.accepted, accepted.len() as u64, "seed {seed}");
    // Submitters may go on being refused after the report was taken. A
    // withdrawn submit is not a refusal.
    assert_eq!(
        pool.stats().rejected,
        refused - withdrawn,
        "seed {seed}: every refusal counted"
    );
    assert!(stats.rejected <= refused, "seed {seed}");
    assert_eq!(
        stats.outcomes(),
        stats.accepted,
        "seed {seed}: accepted = sum of outcomes: {stats:?}"
    );
    for kind in OutcomeKind::ALL {
        let n = all.iter().filter(|s| s.1 == kind).count() as u64;
        assert_eq!(
            n,
            stats.count(kind),
            "seed {seed}: {kind} counter matches the outcomes"
        );
    }
    let mut count: HashMap<u64, u32> = HashMap::new();
    for (id, ..) in &all {
        *count.entry(id.as_u64().unwrap()).or_default() += 1;
    }
    assert!(
        count.values().all(|&n| n == 1),
        "seed {seed}: an ID had two outcomes"
    );
    accepted.sort_unstable();
    let mut ids: Vec<u64> = count.into_keys().collect();
    ids.sort_unstable();
    assert_eq!(
        ids, accepted,
        "seed {seed}: every accepted ID has an outcome, no other ID has one"
    );
    for (id, kind) in from_handles {
        let hook = all.iter().find(|s| s.0.as_u64() == Some(id)).unwrap().1;
        assert_eq!(kind, hook, "seed {seed}: handle and hook agree on job {id}");
    }
    // Nothing may be recorded after the report.
    tokio::time::sleep(GRACE * 2).await;
    assert_eq!(
        seen.len() as u64,
        stats.accepted,
        "seed {seed}: an outcome arrived after the report"
    );
    let bound = DRAIN + GRACE;
    let overshoot = took.saturating_sub(bound);
    assert!(
        overshoot < Duration::from_secs(1),
        "seed {seed}: shutdown took {took:?}, bound {bound:?} + 1 s"
    );
    Round {
        submitted,
        accepted: stats.accepted,
        faults,
        overshoot,
    }
}

fn run_seeds(seeds: impl Iterator<Item = u64>, submitters: u64, per_submitter: u64) -> Vec<Round> {
    quiet_boom_panics();
    let mut rounds = Vec::new();
    for seed in seeds {
        eprintln!("chaos seed {seed}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rounds.push(rt.block_on(round(
            seed,
            submitters,
            per_submitter,
            seed.is_multiple_of(3),
        )));
        // Deaf blocking handlers were released; their threads end on their own.
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    rounds
}

fn seeds_from_env(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("CHAOS_SEED") {
        Ok(s) => vec![s.parse().expect("CHAOS_SEED is a number")],
        Err(_) => default.collect(),
    }
}

#[test]
fn quick_chaos_loses_nothing_and_shutdown_returns_in_time() {
    let rounds = run_seeds(seeds_from_env(1..13).into_iter(), 4, 220);
    let jobs: u64 = rounds.iter().map(|r| r.submitted).sum();
    assert!(jobs >= 10_000, "{jobs}");
}

#[test]
#[ignore = "long run: cargo test --release --test chaos -- --ignored --nocapture"]
fn long_chaos() {
    let seeds: u64 = std::env::var("CHAOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let start = std::time::Instant::now();
    let rounds = run_seeds(seeds_from_env(1000..1000 + seeds).into_iter(), 8, 250);
    let submitted: u64 = rounds.iter().map(|r| r.submitted).sum();
    let accepted: u64 = rounds.iter().map(|r| r.accepted).sum();
    let faults: u64 = rounds.iter().map(|r| r.faults).sum();
    let worst = rounds.iter().map(|r| r.overshoot).max().unwrap_or_default();
    let mut overshoots: Vec<_> = rounds.iter().map(|r| r.overshoot).collect();
    overshoots.sort();
    let p99 = overshoots[(overshoots.len() * 99 / 100).min(overshoots.len() - 1)];
    println!(
        "long chaos: {} seeds, {submitted} jobs submitted, {accepted} accepted, {faults} faults injected into accepted jobs, 0 lost, 0 duplicated; \
         shutdown overshoot past timeout + grace: worst {worst:?}, p99 {p99:?}; {:.0?}",
        rounds.len(),
        start.elapsed()
    );
}
