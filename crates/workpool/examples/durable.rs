//! A durable pool: jobs kept in a SQLite file, so that killing the process
//! (even with `kill -9`) loses nothing.
//!
//! ```sh
//! cargo run --example durable --features sqlite -- jobs.db 2000
//! ```
//!
//! It puts N jobs in `jobs.db` (each with a unique key, so a second run
//! adds none), runs them on four workers, and appends `PID JOB` to
//! `jobs.db.log` as each one is done. Interrupt it any way you like and
//! run the same command again: it goes on where the last run stopped. Jobs
//! that were running at a `kill -9` run again (at least once); no other job
//! does. When nothing is left, it prints the jobs by state and exits.

use std::io::Write;
use std::time::Duration;

use workpool::store::sqlite::{NewJob, SqliteStore};
use workpool::{Job, JobContext, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "jobs.db".into());
    let n: u32 = args.next().map_or(Ok(2000), |s| s.parse())?;
    let log_path = format!("{path}.log");

    let store = SqliteStore::options(&path)
        .poll_interval(Duration::from_millis(50))
        .open()?;
    // The same N jobs on every run: the unique key makes a second enqueue
    // of a job a no-op, and the whole batch is one transaction.
    let jobs = (0..n)
        .map(|i| NewJob::new(format!("job-{i}")).unique_key(format!("job-{i}")))
        .collect();
    store.enqueue(jobs).await?;

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
    let pool: Pool<String> = Pool::builder().workers(4).store(store.clone()).build(
        move |job: Job<String>, _ctx: JobContext| {
            let log = log.clone();
            async move {
                // The work: a little time, then one line, written whole.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let line = format!("{} {}\n", std::process::id(), job.payload());
                log.lock().unwrap().write_all(line.as_bytes())
            }
        },
    )?;

    // Run until nothing is ready; Ctrl-C stops early (running jobs finish,
    // claimed ones go back to the file).
    let report = tokio::select! {
        r = pool.shutdown(Duration::from_secs(3600)) => r,
        _ = tokio::signal::ctrl_c() => pool.shutdown_without_draining(Duration::from_secs(5)).await,
    };
    println!("{report}");
    store.flush().await?;
    for c in store.counts().await? {
        println!("{:>10} {:>8}", c.state, c.count);
    }
    Ok(())
}
