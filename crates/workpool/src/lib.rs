//! A bounded pool of workers for tokio, with its promises written down and
//! tested: no job is lost, shutdown always returns, the queue pushes back
//! instead of growing, one bad job cannot hurt the others, and every failure
//! is counted and kept.
//!
//! # Hello, pool
//!
//! ```
//! use std::time::Duration;
//! use workpool::{Job, Pool};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder()
//!     .workers(3)
//!     .queue_capacity(100)
//!     .build(|job: Job, _ctx| async move {
//!         println!("job {} has {} bytes", job.id(), job.payload().len());
//!         Ok::<_, std::io::Error>(())
//!     })?;
//!
//! for i in 1..=5u64 {
//!     pool.submit_detached(Job::with_id(i, "payload".into())).await?;
//! }
//! let report = pool.shutdown(Duration::from_secs(10)).await;
//! assert_eq!(report.stats().succeeded, 5);
//! # Ok(()) }
//! ```
//!
//! A [`Job`] carries an ID, a payload ([`bytes::Bytes`] by default, any
//! `Send + 'static` type if you choose), and optionally its own timeout and
//! [`RetryPolicy`]. The handler gets the job and a [`JobContext`] and returns
//! `Result<T, E>` for any error type: `T` is `()` unless you want a value
//! back through the job's [`JobHandle`].
//!
//! # Backpressure
//!
//! The queue is bounded ([`PoolBuilder::queue_capacity`]). When it is full:
//! [`Pool::submit`] waits for room, [`Pool::try_submit`] fails at once with
//! [`TrySubmitError::Full`], and [`Pool::submit_timeout`] gives up after its
//! timeout. A refused job always comes back inside the error. (As with any
//! bounded pool, a job that waits with `submit` for room in its own full pool
//! can wait forever; from inside a job, prefer `try_submit`.)
//!
//! ```
//! # use workpool::{Job, Pool, TrySubmitError};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder().workers(1).queue_capacity(1)
//!     .build(|_job: Job, _ctx| std::future::pending::<Result<(), std::io::Error>>())?;
//! pool.try_submit_detached(Job::with_id(1, "a".into()))?;   // queued
//! match pool.try_submit_detached(Job::with_id(2, "b".into())) {
//!     Err(TrySubmitError::Full(job)) => assert_eq!(job.id().to_string(), "2"),
//!     other => panic!("expected Full, got {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Outcomes and handles
//!
//! Every accepted job reaches exactly one [`Outcome`]: `Succeeded`, `Failed`,
//! `Panicked`, `TimedOut`, `Cancelled`, `Unstarted` (handed back at shutdown)
//! or `Abandoned` (ignored cancellation past the grace period).
//! [`Pool::submit`] returns a [`JobHandle`] that resolves to it (with the
//! handler's value on success) and can [cancel](JobHandle::cancel) the job;
//! [`Pool::submit_detached`] allocates no handle. Either way the outcome is counted in [`Pool::stats`] and passed to
//! the hook set with [`PoolBuilder::on_outcome`].
//!
//! # Shutdown
//!
//! [`Pool::shutdown`] goes through `Running → Draining → Cancelling →
//! Stopped`: it refuses new jobs, lets queued and running jobs finish until
//! its timeout, then fires every running job's signal and hands back what is
//! queued, then after the grace period abandons what still runs. It always
//! returns, with a [`ShutdownReport`]: counts per outcome, the jobs that did
//! not finish and why, the unstarted jobs themselves so you can store them,
//! and the time taken. [`Pool::shutdown_without_draining`] hands queued jobs
//! back at once. With the `signal` feature, `signal::shutdown_on_signal`
//! does this on SIGINT/SIGTERM, and a second signal cancels at once.
//! [`Pool::stop_intake`] stops taking and starting jobs without a shutdown
//! (running jobs go on; queued ones come back `Unstarted`).
//!
//! # Panics, timeouts, cancellation
//!
//! A handler that panics ends its own job as `Panicked`; its worker goes on.
//! A job's deadline ([`Job::with_timeout`], [`PoolBuilder::default_timeout`])
//! fires its context's signal ([`JobContext::cancelled`],
//! [`JobContext::is_cancelled`]); a job that keeps running past the grace
//! period is dropped and ends `TimedOut`. Failed attempts are retried with
//! exponential backoff and full jitter, without holding a worker while they
//! wait; [`permanent`] marks an error that must not be retried.
//!
//! # Blocking work
//!
//! [`PoolBuilder::build_blocking`] takes a synchronous handler and runs it on
//! plain threads, one per worker, never on the runtime's threads. A blocking
//! handler that never checks its signal is let go at its deadline or at
//! shutdown and does not keep the process from exiting. An *async* handler
//! that blocks without yielding is different: it holds a runtime thread, and
//! dropping the runtime (the end of `#[tokio::main]`) waits for it, so the
//! process does not exit. Put such work in a blocking handler.
//!
//! # Errors you can read
//!
//! [`Pool::stats`] gives counters (accepted, rejected, queued, running, per
//! outcome, retried); [`Pool::recent_failures`] the last failed attempts with
//! ID, attempt and error text. Each attempt runs in a `tracing` span `job`
//! with fields `id` and `attempt`.
//!
//! # Jobs that outlive the process
//!
//! With the `sqlite` feature, `PoolBuilder::store` keeps the pool's jobs
//! in an embedded SQLite file (`store::sqlite::SqliteStore`; no server)
//! instead of memory. `submit` returns once the job is committed; a job
//! survives `kill -9` of any process (and, with `full_sync`, a power loss).
//! Delivery is at least once: a job that was running when its process died
//! runs again, no other job does. Shutdown stops claiming, lets running jobs
//! finish within the timeout and releases the rest back to the file at once;
//! nothing is handed back, because nothing leaves the file. Retries, their
//! errors and finished jobs are rows you can list, count, cancel, retry and
//! prune. The payload type implements [`Payload`] (bytes in, bytes out).
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use workpool::store::sqlite::SqliteStore;
//! use workpool::{Job, Pool};
//!
//! let store = SqliteStore::open("jobs.db")?;
//! let pool: Pool<String> = Pool::builder()
//!     .workers(4)
//!     .store(store)
//!     .build(|job: Job<String>, _ctx| async move {
//!         println!("sending {}", job.payload());
//!         Ok::<_, std::io::Error>(())
//!     })?;
//! let handle = pool.submit(Job::new("mail to ada".to_string())).await?;
//! println!("stored as job {}", handle.id()); // committed: kill -9 now loses nothing
//! pool.shutdown(Duration::from_secs(30)).await;
//! # Ok(()) }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! `examples/durable.rs` runs a durable pool you can kill and restart.
//!
//! # Many machines, one queue
//!
//! With the `postgres` feature, `store::postgres::PgStore` keeps the jobs in
//! PostgreSQL, where pools on many machines share them: the same contract,
//! with claims by `FOR UPDATE SKIP LOCKED`, leases kept alive by each
//! process's heartbeat, a leader that rescues the jobs of processes whose
//! lease ran out, `LISTEN`/`NOTIFY` to wake idle workers (polling as the
//! fallback), and `PgStore::enqueue_in` to enqueue inside your own
//! transaction.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use workpool::store::postgres::{NewJob, PgStore};
//! use workpool::{Job, Pool};
//!
//! let store = PgStore::connect("postgres://app@db.internal/app").await?;
//! let pool: Pool<String> = Pool::builder()
//!     .workers(16)
//!     .store(store.clone())
//!     .build(|job: Job<String>, _ctx| async move {
//!         println!("sending {}", job.payload());
//!         Ok::<_, std::io::Error>(())
//!     })?;
//! // In the caller's transaction: committed together, or not at all.
//! let mut tx = store.pool().begin().await?;
//! store.enqueue_in(&mut tx, vec![NewJob::new("mail to ada")]).await?;
//! tx.commit().await?;
//! pool.shutdown(Duration::from_secs(30)).await;
//! store.close().await?;
//! # Ok(()) }
//! # #[cfg(not(feature = "postgres"))]
//! # fn main() {}
//! ```
//!
//! # Features
//!
//! - `sqlite`: the embedded SQLite store (`store::sqlite`), built with its
//!   own SQLite.
//! - `postgres`: the PostgreSQL store (`store::postgres`), on sqlx with
//!   rustls (Rust 1.94 or newer).
//! - `signal`: `signal::shutdown_on_signal` (SIGINT/SIGTERM → shutdown).
//! - `metrics`: the counter `workpool_jobs_total{outcome}` and the histogram
//!   `workpool_job_duration_seconds` through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! # When not to use this
//!
//! - Fire a few tasks and wait for all of them: tokio's `JoinSet` or
//!   tokio-util's `TaskTracker` are simpler.
//! - CPU-bound data parallelism (split a slice, map, reduce): rayon.
//! - Plain threads with no async runtime: the `threadpool` crate or a
//!   crossbeam channel.
//! - Many machines sharing one queue: the SQLite store is for one machine
//!   (several processes may share its file); a PostgreSQL store is next.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(all(
    feature = "_durable",
    not(any(feature = "sqlite", feature = "postgres"))
))]
compile_error!("the `_durable` feature is internal: enable `sqlite` or `postgres`");

mod cancel;
mod context;
mod core;
mod error;
mod handler;
mod job;
mod lifecycle;
mod outcome;
mod payload;
mod pool;
mod retry;
#[cfg(feature = "signal")]
pub mod signal;
mod stats;
pub mod store;
mod sync;
mod worker;

pub use bytes::Bytes;

pub use crate::context::{CancelReason, JobContext};
pub use crate::error::{BuildError, ResizeError, SubmitError, SubmitTimeoutError, TrySubmitError};
pub use crate::handler::{BoxError, Handler, Permanent, permanent};
pub use crate::job::{Job, JobId};
pub use crate::lifecycle::report::ShutdownReport;
pub use crate::outcome::{Completion, NotFinished, Outcome, OutcomeKind, UnstartedJob};
pub use crate::payload::Payload;
pub use crate::pool::{JobHandle, Pool, PoolBuilder};
pub use crate::retry::RetryPolicy;
pub use crate::stats::{Failure, Stats};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
