//! The Go tutorial's "Full Production Pattern" on workpool: 3 workers, 5 jobs
//! of about 500 ms each, then a graceful shutdown and a summary.
//!
//! Run it with `cargo run --example production_pattern`. It takes about 1 s:
//! jobs 1-3 run together, then 4-5.

use std::time::Duration;

use workpool::{Job, JobContext, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Setup and 2. start workers: the queue holds 100 jobs, like the
    //    tutorial's buffered channel.
    let pool = Pool::builder().workers(3).queue_capacity(100).build(
        |job: Job<u32>, ctx: JobContext| async move {
            let (worker, j) = (ctx.worker(), job.payload());
            println!("Worker {worker} started job {j}");
            // A well-behaved job stops early when asked to.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = ctx.cancelled() => return Err("cancelled"),
            }
            println!("Worker {worker} finished job {j}");
            Ok(())
        },
    )?;

    // 3. Send work: `submit` waits for room if the queue is full.
    for j in 1..=5 {
        pool.submit_detached(Job::with_id(u64::from(j), j)).await?;
    }

    // 4. Graceful shutdown: stop intake, let queued and running jobs finish,
    //    and never wait longer than the timeout (plus the grace period).
    let report = pool.shutdown(Duration::from_secs(10)).await;
    println!("Shutdown complete");
    println!("{report}");
    Ok(())
}
