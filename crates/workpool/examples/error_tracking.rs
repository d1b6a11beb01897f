//! Error tracking: some jobs fail and are retried, one panics, one times out,
//! one ignores cancellation. Every outcome is printed as it happens; at the
//! end, the stats and the recent failures.
//!
//! `cargo run --example error_tracking` (about 2 s).

use std::time::Duration;

use workpool::{BoxError, Completion, Job, JobContext, Pool, RetryPolicy, permanent};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fine,
    /// Fails on its first two attempts, then succeeds.
    Flaky,
    /// Fails every time: retried, then Failed.
    Broken,
    /// Fails with an error marked permanent: not retried.
    BadInput,
    Panics,
    /// Runs past its deadline but stops when told.
    Slow,
    /// Never checks its signal.
    Deaf,
}

async fn handle(job: Job<Kind>, ctx: JobContext) -> Result<(), BoxError> {
    match *job.payload() {
        Kind::Fine => Ok(()),
        Kind::Flaky if ctx.attempt() < 3 => {
            Err(format!("flaky: attempt {} failed", ctx.attempt()).into())
        }
        Kind::Flaky => Ok(()),
        Kind::Broken => Err("broken: connection refused".into()),
        Kind::BadInput => Err(permanent("bad input: missing field `user`").into()),
        Kind::Panics => panic!("index out of bounds in job {}", job.id()),
        Kind::Slow => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
                _ = ctx.cancelled() => Err("slow: stopped at the deadline".into()),
            }
        }
        Kind::Deaf => {
            std::future::pending::<()>().await;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder()
        .workers(3)
        .retry(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .grace(Duration::from_millis(300))
        .on_outcome(|c: &Completion<Kind>| {
            println!(
                "outcome: job {:<8} {} ({:.0?})",
                c.id(),
                c.outcome(),
                c.duration()
            );
        })
        .build(handle)?;

    let jobs = [
        ("fine-1", Kind::Fine),
        ("flaky", Kind::Flaky),
        ("broken", Kind::Broken),
        ("bad", Kind::BadInput),
        ("panics", Kind::Panics),
        ("fine-2", Kind::Fine),
    ];
    for (id, kind) in jobs {
        pool.submit_detached(Job::with_id(id, kind)).await?;
    }
    // Per-job deadline, retries off for this one.
    let slow = Job::with_id("slow", Kind::Slow)
        .with_timeout(Duration::from_millis(200))
        .with_retry(RetryPolicy::never());
    pool.submit_detached(slow).await?;
    pool.submit_detached(Job::with_id("deaf", Kind::Deaf))
        .await?;

    let report = pool.shutdown(Duration::from_secs(1)).await;

    let s = report.stats();
    println!();
    println!(
        "stats: accepted {}, succeeded {}, failed {}, panicked {}, timed out {}, abandoned {}, retried {}",
        s.accepted, s.succeeded, s.failed, s.panicked, s.timed_out, s.abandoned, s.retried
    );
    println!("recent failures:");
    for f in pool.recent_failures() {
        println!(
            "  job {:<8} attempt {} {:<9} {}",
            f.id,
            f.attempt,
            f.kind.as_str(),
            f.error
        );
    }
    for n in report.not_finished() {
        println!("did not finish: job {} ({})", n.id, n.outcome);
    }
    println!("{report}");
    Ok(())
}
