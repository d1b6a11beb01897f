//! `Pool`: submitting, stats, resize, and the entry points to shutdown.

mod builder;
mod handle;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

pub use self::builder::PoolBuilder;
pub use self::handle::JobHandle;
use crate::core::reply::Reply;
use crate::core::state::Lifecycle;
use crate::core::{CancelWaiting, Core, after};
use crate::error::{ResizeError, SubmitError, SubmitTimeoutError, TrySubmitError};
use crate::job::{Job, JobId};
use crate::lifecycle::report::ShutdownReport;
use crate::lifecycle::{self, Shutdown};
use crate::stats::{Failure, Stats};
use crate::store::{AnyStore, Queued, Refused, Store};
use crate::sync::lock;

/// Starts one worker (the handler's type is inside).
pub(crate) type Spawner<P, T> = Box<dyn Fn(&Arc<PoolCore<P, T>>) + Send + Sync>;

/// The core of a pool, on the store it was built with.
type PoolCore<P, T> = Core<P, T, AnyStore<P>>;

/// A bounded pool of workers running jobs through one handler.
///
/// Cheap to clone (`Arc`); every clone submits to the same pool. See the
/// [crate documentation](crate) for a tour.
///
/// # Dropping
///
/// Dropping the last handle without calling [`shutdown`](Self::shutdown)
/// does not block and loses nothing that is queued: the queue is closed to new
/// jobs, and the workers run what is queued and running to the end in the
/// background (jobs already waiting to retry included, when they come due;
/// a job that fails after the drop is not retried but ends `Unstarted`, the
/// hook sees it), then exit. If the runtime itself is dropped, its
/// tasks go with it: handles of unfinished jobs resolve to
/// [`Outcome::Abandoned`](crate::Outcome::Abandoned). Call `shutdown` to know
/// what finished.
pub struct Pool<P = Bytes, T = ()> {
    inner: Arc<PoolInner<P, T>>,
}

struct PoolInner<P, T> {
    core: Arc<PoolCore<P, T>>,
    shutdown: Arc<Shutdown<P>>,
    spawn: Spawner<P, T>,
    resize: Mutex<()>,
}

impl<P, T> Drop for PoolInner<P, T> {
    fn drop(&mut self) {
        // Workers run what is left (retries included, when they come due) and
        // exit when they find the store closed and empty; nothing here waits.
        self.core.store().close_now();
    }
}

impl<P, T> Clone for Pool<P, T> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<P, T> fmt::Debug for Pool<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// An admitted submission waiting for room; dropped unsettled, it withdraws
/// the admission.
struct Waiting<'a, P: Send + 'static, T: Send + 'static> {
    core: &'a PoolCore<P, T>,
    settled: bool,
}

impl<P: Send + 'static, T: Send + 'static> Drop for Waiting<'_, P, T> {
    fn drop(&mut self) {
        if !self.settled {
            self.core.withdraw();
        }
    }
}

impl<P, T> Pool<P, T> {
    /// A builder with every setting at its default.
    pub fn builder() -> PoolBuilder<P, T> {
        PoolBuilder::default()
    }
}

impl<P: Send + 'static, T: Send + 'static> Pool<P, T> {
    pub(crate) fn new(core: Arc<PoolCore<P, T>>, spawn: Spawner<P, T>) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                core,
                shutdown: Arc::new(Shutdown::new()),
                spawn,
                resize: Mutex::new(()),
            }),
        }
    }

    fn core(&self) -> &Arc<PoolCore<P, T>> {
        &self.inner.core
    }

    /// A job with a handle: its reply is kept by ticket, above the store.
    fn with_handle(&self, job: Job<P>) -> (Queued<P>, JobHandle<P, T>) {
        let (reply, cell) = Reply::new();
        let ticket = self.core().replies().insert(reply);
        let pool: Arc<dyn CancelWaiting> = self.core().clone();
        let handle = JobHandle::new(job.id().clone(), cell, ticket, pool);
        (Queued::new(job, Some(ticket)), handle)
    }

    /// The job of a refused submission, for the error; a handle's reply is
    /// forgotten (the handle is dropped unreturned).
    fn refused_job(&self, q: Queued<P>) -> Job<P> {
        drop(self.core().replies().take(q.ticket));
        q.job
    }

    /// Admits `q` and enqueues it if there is room. A `Full` comes back still
    /// admitted: `wait_enqueue` or `try_enqueue` settles it. Not an `async
    /// fn`, so the usual case (room) costs no future of its own.
    #[inline(always)]
    fn enqueue_now(&self, q: Queued<P>) -> Result<(), Refused<Queued<P>>> {
        let core = self.core();
        if !core.admit() {
            return Err(Refused::Closed(q));
        }
        match core.store().try_enqueue(q) {
            Ok(()) => {
                core.accepted();
                Ok(())
            }
            Err(Refused::Full(q)) => Err(Refused::Full(q)),
            Err(refused) => {
                core.unadmit();
                Err(refused)
            }
        }
    }

    /// Waits for room for an admitted job that found the store full, until
    /// `deadline` (forever if `None`).
    async fn wait_enqueue(
        &self,
        q: Queued<P>,
        deadline: Option<Instant>,
    ) -> Result<Option<JobId>, Refused<Queued<P>>> {
        let core = self.core();
        // If the caller drops this future while it waits, the job goes with
        // it: the admission must go too, or a drain would wait for a job that
        // never comes.
        let mut waiting = Waiting {
            core,
            settled: false,
        };
        let r = core.store().enqueue(q, deadline).await;
        waiting.settled = true;
        match &r {
            Ok(_) => core.accepted(),
            Err(_) => core.unadmit(),
        }
        r
    }

    /// Enqueues now or fails: a `Full` is settled here.
    fn try_enqueue(&self, q: Queued<P>) -> Result<(), Refused<Queued<P>>> {
        match self.enqueue_now(q) {
            Err(Refused::Full(q)) => {
                self.core().unadmit();
                Err(Refused::Full(q))
            }
            r => r,
        }
    }

    /// Submits a job, waiting for room in the queue, and returns a handle to
    /// its outcome.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] with the job inside once shutdown has begun.
    ///
    /// # Cancel safety
    ///
    /// If this future is dropped before it completes, the job was not accepted
    /// and is dropped with it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use workpool::{Job, Pool};
    ///
    /// let pool = Pool::builder().build(|_job: Job, _ctx| async { Ok::<_, std::io::Error>(()) })?;
    /// let handle = pool.submit(Job::new("hello".into())).await?;
    /// assert!(handle.await.is_success());
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self, job: Job<P>) -> Result<JobHandle<P, T>, SubmitError<P>> {
        let (q, mut handle) = self.with_handle(job);
        // Room found: return at once, without a future for the wait.
        let q = match self.enqueue_now(q) {
            Ok(()) => return Ok(handle),
            Err(Refused::Full(q)) => q,
            Err(r) => return Err(self.submit_error(r)),
        };
        match self.wait_enqueue(q, None).await {
            Ok(stored) => {
                handle.stored_as(stored);
                Ok(handle)
            }
            Err(r) => Err(self.submit_error(r)),
        }
    }

    /// Submits a job if the queue has room now.
    ///
    /// # Errors
    ///
    /// [`TrySubmitError::Full`] or [`TrySubmitError::Closed`], with the very
    /// job inside.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use workpool::{Job, Pool, TrySubmitError};
    ///
    /// let pool = Pool::builder().build(|_job: Job, _ctx| async { Ok::<_, std::io::Error>(()) })?;
    /// match pool.try_submit(Job::new("work".into())) {
    ///     Ok(handle) => println!("accepted {}", handle.id()),
    ///     Err(TrySubmitError::Full(job)) => println!("busy; {} comes back to be retried later", job.id()),
    ///     Err(TrySubmitError::Closed(job)) => println!("shutting down; store {}", job.id()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_submit(&self, job: Job<P>) -> Result<JobHandle<P, T>, TrySubmitError<P>> {
        let (q, handle) = self.with_handle(job);
        match self.try_enqueue(q) {
            Ok(()) => Ok(handle),
            Err(r) => Err(self.try_error(r)),
        }
    }

    /// Submits a job, waiting at most `timeout` for room in the queue.
    ///
    /// # Errors
    ///
    /// [`SubmitTimeoutError::Timeout`] or [`SubmitTimeoutError::Closed`], with
    /// the job inside.
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_timeout(
        &self,
        job: Job<P>,
        timeout: Duration,
    ) -> Result<JobHandle<P, T>, SubmitTimeoutError<P>> {
        let (q, mut handle) = self.with_handle(job);
        let q = match self.enqueue_now(q) {
            Ok(()) => return Ok(handle),
            Err(Refused::Full(q)) => q,
            Err(r) => return Err(self.timeout_error(r)),
        };
        match self
            .wait_enqueue(q, Some(after(Instant::now(), timeout)))
            .await
        {
            Ok(stored) => {
                handle.stored_as(stored);
                Ok(handle)
            }
            Err(r) => Err(self.timeout_error(r)),
        }
    }

    /// Like [`submit`](Self::submit), without a handle: the cheapest path,
    /// allocating nothing per job. The outcome still counts in
    /// [`stats`](Self::stats) and reaches the hook.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_detached(&self, job: Job<P>) -> Result<(), SubmitError<P>> {
        // Room found: return at once, without waiting through a future.
        let q = match self.enqueue_now(Queued::new(job, None)) {
            Ok(()) => return Ok(()),
            Err(Refused::Full(q)) => q,
            Err(r) => return Err(self.submit_error(r)),
        };
        match self.wait_enqueue(q, None).await {
            Ok(_) => Ok(()),
            Err(r) => Err(self.submit_error(r)),
        }
    }

    /// Like [`try_submit`](Self::try_submit), without a handle.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_detached(&self, job: Job<P>) -> Result<(), TrySubmitError<P>> {
        self.try_enqueue(Queued::new(job, None))
            .map_err(|r| self.try_error(r))
    }

    /// Like [`submit_timeout`](Self::submit_timeout), without a handle.
    ///
    /// # Errors
    ///
    /// As [`submit_timeout`](Self::submit_timeout).
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_detached_timeout(
        &self,
        job: Job<P>,
        timeout: Duration,
    ) -> Result<(), SubmitTimeoutError<P>> {
        let q = match self.enqueue_now(Queued::new(job, None)) {
            Ok(()) => return Ok(()),
            Err(Refused::Full(q)) => q,
            Err(r) => return Err(self.timeout_error(r)),
        };
        let deadline = Some(after(Instant::now(), timeout));
        self.wait_enqueue(q, deadline)
            .await
            .map(drop)
            .map_err(|r| self.timeout_error(r))
    }

    fn submit_error(&self, r: Refused<Queued<P>>) -> SubmitError<P> {
        match r {
            Refused::Failed(q) => SubmitError::Store(self.refused_job(q)),
            r => SubmitError::Closed(self.refused_job(r.into_inner())),
        }
    }

    fn try_error(&self, r: Refused<Queued<P>>) -> TrySubmitError<P> {
        match r {
            // A durable store answers a try with `Full` (it would have to
            // wait for a commit), never with `Failed`.
            Refused::Full(q) | Refused::Timeout(q) | Refused::Failed(q) => {
                TrySubmitError::Full(self.refused_job(q))
            }
            Refused::Closed(q) => TrySubmitError::Closed(self.refused_job(q)),
        }
    }

    fn timeout_error(&self, r: Refused<Queued<P>>) -> SubmitTimeoutError<P> {
        match r {
            Refused::Full(q) | Refused::Timeout(q) => {
                SubmitTimeoutError::Timeout(self.refused_job(q))
            }
            Refused::Closed(q) => SubmitTimeoutError::Closed(self.refused_job(q)),
            Refused::Failed(q) => SubmitTimeoutError::Store(self.refused_job(q)),
        }
    }

    /// A snapshot of the counters. See [`Stats`] for when it is exact.
    pub fn stats(&self) -> Stats {
        self.core().stats()
    }

    /// The most recent failed attempts, oldest first (see
    /// [`PoolBuilder::recent_failures`]).
    pub fn recent_failures(&self) -> Vec<Failure> {
        self.core().recent_failures()
    }

    /// Whether the pool has stopped taking jobs (shutdown has begun).
    pub fn is_closed(&self) -> bool {
        self.core().state() != Lifecycle::Running
    }

    /// Stops intake without shutting down: from now on submissions are
    /// refused (the job comes back in the error) and no queued job starts.
    /// Jobs that run go on to their end, with their outcomes, handles and
    /// hook as usual. Queued jobs and jobs waiting to retry come back at once
    /// as [`Outcome::Unstarted`](crate::Outcome::Unstarted): through their
    /// handles, or in the next shutdown's report (the hook sees them too).
    ///
    /// Shutdown is still to be called: it waits for running jobs as usual.
    /// This is what `workpool run --halt` does at its failure limit.
    pub fn stop_intake(&self) {
        let core = self.core();
        core.advance(Lifecycle::HandingBack);
        core.hand_back_left();
        core.store().wake_claimers();
    }

    /// Changes the number of workers. Growing starts new workers at once.
    /// Shrinking never interrupts a running job: a busy worker leaves after its
    /// current job, an idle one at once.
    ///
    /// # Errors
    ///
    /// [`ResizeError::ZeroWorkers`] for 0, [`ResizeError::Closed`] once shutdown
    /// has begun.
    pub fn resize(&self, workers: usize) -> Result<(), ResizeError> {
        if workers == 0 {
            return Err(ResizeError::ZeroWorkers);
        }
        let core = self.core();
        if core.state() != Lifecycle::Running {
            return Err(ResizeError::Closed);
        }
        let _one_at_a_time = lock(&self.inner.resize);
        core.set_target(workers);
        let live = core.live_workers();
        for _ in live..workers {
            (self.inner.spawn)(core);
        }
        if live > workers {
            core.store().wake_claimers();
        }
        Ok(())
    }

    /// Shuts the pool down, draining first.
    ///
    /// - Stops intake at once: later submits fail with `Closed(job)`.
    /// - Waits up to `timeout` for queued jobs, jobs waiting to retry, and
    ///   running jobs to finish (`Duration::MAX`: as long as they take).
    /// - At the timeout: fires every running job's cancellation signal and
    ///   hands back what is still queued or waiting to retry (`Unstarted`).
    /// - After the [grace period](PoolBuilder::grace): gives up on what still
    ///   runs (`Abandoned`), and returns.
    ///
    /// So it returns within `timeout + grace` (plus a moment to collect the
    /// last outcomes), even when a handler ignores its signal or blocks its
    /// thread. The exception is an async handler that never yields on a
    /// runtime with no other free thread: nothing else can run there, this
    /// included; run such work with [`PoolBuilder::build_blocking`].
    ///
    /// May be called again, and concurrently: every caller gets the same
    /// report, and the first call's timeout and mode apply.
    ///
    /// Awaited from inside a handler of this same pool, a draining shutdown
    /// waits for that very job, which is waiting for the shutdown: the job is
    /// abandoned after `timeout` and the grace period, its await of the
    /// report dropped with it (other callers get the report); with
    /// `Duration::MAX` the shutdown never ends. From a handler, spawn the
    /// shutdown in a task of its own and return: the drain then goes on.
    ///
    /// # Cancel safety
    ///
    /// The shutdown runs in a task of its own: dropping this future does not
    /// stop it, and a later call gets its report.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use workpool::{Job, OutcomeKind, Pool};
    ///
    /// let pool = Pool::builder().workers(1).build(|_job: Job, ctx: workpool::JobContext| async move {
    ///     ctx.cancelled().await; // a job that runs until it is told to stop
    ///     Err::<(), _>("stopped")
    /// })?;
    /// pool.submit_detached(Job::with_id("running", "a".into())).await?;
    /// pool.submit_detached(Job::with_id("queued", "b".into())).await?;
    ///
    /// let report = pool.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!(report.ids(OutcomeKind::Cancelled), ["running".into()]);
    /// for unstarted in report.take_unstarted() {
    ///     assert_eq!(unstarted.job.id().to_string(), "queued"); // store it, run it after restart
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport<P> {
        lifecycle::shutdown(self.core(), &self.inner.shutdown, true, timeout).await
    }

    /// Shuts the pool down without draining: queued jobs and jobs waiting to
    /// retry come back at once as `Unstarted` (in the report, or through their
    /// handles); running jobs get `timeout` to finish; then as
    /// [`shutdown`](Self::shutdown).
    pub async fn shutdown_without_draining(&self, timeout: Duration) -> ShutdownReport<P> {
        lifecycle::shutdown(self.core(), &self.inner.shutdown, false, timeout).await
    }

    /// Ends the drain wait of a shutdown in progress at once: running jobs'
    /// signals fire and queued jobs come back, as at the timeout. Returns
    /// whether a shutdown was in progress: before any shutdown it does
    /// nothing (and returns `false`). This is what a second Ctrl-C does in
    /// `signal::shutdown_on_signal` (the `signal` feature).
    pub fn cancel_running(&self) -> bool {
        if !self.inner.shutdown.is_started() {
            return false;
        }
        self.core().signals().cut_drain.cancel();
        true
    }
}
