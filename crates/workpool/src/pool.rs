//! `Pool` and `PoolBuilder`: configuration, submitting, stats, resize, and the
//! entry points to shutdown.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::context::JobContext;
use crate::error::{BuildError, ResizeError, SubmitError, SubmitTimeoutError, TrySubmitError};
use crate::handle::JobHandle;
use crate::handler::{BoxError, FnHandler, Handler};
use crate::job::Job;
use crate::outcome::Completion;
use crate::queue::{Envelope, PushFail};
use crate::reply::Reply;
use crate::retry::RetryPolicy;
use crate::shared::{Config, Hook, RUNNING, Shared, after, lock};
use crate::shutdown::{self, ShutdownReport};
use crate::stats::{Failure, Stats};
use crate::worker::{self, AsyncExec, BlockingExec, Exec};

/// Configures and starts a [`Pool`]. Made by [`Pool::builder`].
///
/// Every setting has a default; `build` checks them and returns an error (never
/// panics) for one that cannot work.
#[must_use = "a builder does nothing until build() is called"]
pub struct PoolBuilder<P = Bytes> {
    workers: Option<usize>,
    queue_capacity: usize,
    default_timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    cloner: Option<fn(&P) -> P>,
    grace: Duration,
    hook: Option<Hook<P>>,
    recent_failures: usize,
}

impl<P> Default for PoolBuilder<P> {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            queue_capacity: 1024,
            default_timeout: None,
            retry: None,
            cloner: None,
            grace: Duration::from_secs(5),
            hook: None,
            recent_failures: 64,
        }
    }
}

impl<P: Send + 'static> PoolBuilder<P> {
    /// Same as [`Pool::builder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of workers: jobs that run at once. Default: the number of CPUs
    /// ([`std::thread::available_parallelism`]). 0 is an error from `build`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Jobs that may wait in the queue; past that, `submit` waits and
    /// `try_submit` fails. Default: 1024. 0 is an error from `build`.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Timeout for jobs that set none of their own. Default: none (no timer is
    /// set for such jobs); `Duration::ZERO` makes every such job's deadline
    /// pass at once, `Duration::MAX` (or anything past what the clock can
    /// reach) sets no deadline. At the deadline the job's signal fires; after
    /// the [`grace`](Self::grace) period it is dropped and ends `TimedOut`.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Retry policy for jobs that set none of their own. Default: no retries.
    /// Needs `P: Clone`: each attempt that may be retried runs on a copy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self
    where
        P: Clone,
    {
        self.retry = Some(policy);
        self.cloner = Some(P::clone);
        self
    }

    /// How long a job may run on after its signal fired (deadline or shutdown)
    /// before it is given up on: dropped and `TimedOut` at a deadline,
    /// `Abandoned` at shutdown. Default: 5 s. 0 gives up at once.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Called with every job's terminal outcome, on the thread that recorded
    /// it (a worker, a retry task, or shutdown). Keep it short and
    /// non-blocking; forward to a channel for heavy work. A panic in the hook
    /// is caught and logged. Default: none.
    pub fn on_outcome(mut self, hook: impl Fn(&Completion<P>) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// How many failed attempts [`Pool::recent_failures`] keeps. Default: 64.
    /// 0 keeps none.
    pub fn recent_failures(mut self, n: usize) -> Self {
        self.recent_failures = n;
        self
    }

    /// Starts the pool with an async closure as the handler.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] for an invalid setting, or when called outside a tokio
    /// runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use workpool::{Job, Pool};
    ///
    /// let pool = Pool::builder()
    ///     .workers(2)
    ///     .build(|job: Job, _ctx| async move {
    ///         println!("{} bytes", job.payload().len());
    ///         Ok::<_, std::io::Error>(())
    ///     })?;
    /// # pool.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    pub fn build<F, Fut, E>(self, handler: F) -> Result<Pool<P>, BuildError>
    where
        F: Fn(Job<P>, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Into<BoxError>,
    {
        self.start(AsyncExec(FnHandler(handler)))
    }

    /// Starts the pool with a [`Handler`] type.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_handler<H: Handler<P>>(self, handler: H) -> Result<Pool<P>, BuildError> {
        self.start(AsyncExec(handler))
    }

    /// Starts the pool with a blocking (synchronous) handler, for CPU-heavy or
    /// blocking work. Each worker runs it on a plain thread of its own, never
    /// on the runtime's threads. It watches for cancellation with
    /// [`JobContext::is_cancelled`]. One that ignores it is let go after the
    /// grace period: its job ends `TimedOut` or `Abandoned`, the worker goes on
    /// with a new thread, and the stuck thread does not keep the process from
    /// exiting.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_blocking<F, E>(self, handler: F) -> Result<Pool<P>, BuildError>
    where
        F: Fn(Job<P>, JobContext) -> Result<(), E> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        self.start(BlockingExec(Arc::new(handler)))
    }

    fn start<X: Exec<P>>(self, exec: X) -> Result<Pool<P>, BuildError> {
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        if self.queue_capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let config = Config {
            default_timeout: self.default_timeout,
            retry: self.retry,
            cloner: self.cloner,
            grace: self.grace,
            timed: self.hook.is_some() || cfg!(feature = "metrics"),
            hook: self.hook,
        };
        let shared = Arc::new(Shared::new(
            self.queue_capacity,
            config,
            self.recent_failures,
        ));
        shared
            .target
            .store(workers, std::sync::atomic::Ordering::Relaxed);
        let exec = Arc::new(exec);
        let spawn: Spawner<P> = Box::new(move |shared| worker::spawn(shared, &exec, &rt));
        for _ in 0..workers {
            spawn(&shared);
        }
        Ok(Pool {
            inner: Arc::new(PoolInner {
                shared,
                spawn,
                resize: Mutex::new(()),
            }),
        })
    }
}

type Spawner<P> = Box<dyn Fn(&Arc<Shared<P>>) + Send + Sync>;

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
/// background, then exit. Jobs that then fail and would be retried end
/// `Unstarted` (the hook sees them). If the runtime itself is dropped, its
/// tasks go with it: handles of unfinished jobs resolve to
/// [`Outcome::Abandoned`](crate::Outcome::Abandoned). Call `shutdown` to know
/// what finished.
pub struct Pool<P = Bytes> {
    inner: Arc<PoolInner<P>>,
}

struct PoolInner<P> {
    shared: Arc<Shared<P>>,
    spawn: Spawner<P>,
    resize: Mutex<()>,
}

impl<P> Drop for PoolInner<P> {
    fn drop(&mut self) {
        // Workers drain what is left and exit when they find the queue closed
        // and empty; nothing here waits.
        self.shared.queue.close();
    }
}

impl<P> Clone for Pool<P> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<P> fmt::Debug for Pool<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

fn with_handle<P>(job: Job<P>) -> (Envelope<P>, JobHandle<P>) {
    let (reply, cell) = Reply::new();
    let handle = JobHandle {
        id: job.id.clone(),
        cell,
        done: false,
    };
    let env = Envelope::new(job, Some(reply));
    (env, handle)
}

/// An admitted submission waiting for room; dropped unsettled, it withdraws
/// the admission.
struct Waiting<'a, P: Send + 'static> {
    shared: &'a Shared<P>,
    settled: bool,
}

impl<P: Send + 'static> Drop for Waiting<'_, P> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.withdraw();
        }
    }
}

/// A failed push of a submit without a timeout, as its error: it can only
/// have found the pool closed.
fn closed_error<P>(f: PushFail<Envelope<P>>) -> SubmitError<P> {
    SubmitError::Closed(f.into_inner().job)
}

/// A failed push of a submit with a timeout, as its error.
fn timeout_error<P>(f: PushFail<Envelope<P>>) -> SubmitTimeoutError<P> {
    match f {
        PushFail::Full(e) | PushFail::Timeout(e) => SubmitTimeoutError::Timeout(e.job),
        PushFail::Closed(e) => SubmitTimeoutError::Closed(e.job),
    }
}

#[inline(always)]
fn detached<P>(job: Job<P>) -> Envelope<P> {
    Envelope::new(job, None)
}

impl<P> Pool<P> {
    /// A builder with every setting at its default.
    pub fn builder() -> PoolBuilder<P> {
        PoolBuilder::default()
    }
}

impl<P: Send + 'static> Pool<P> {
    fn shared(&self) -> &Arc<Shared<P>> {
        &self.inner.shared
    }

    /// Admits `env` and pushes it if there is room. A `Full` comes back still
    /// admitted: `wait_push` or `try_push` settles it. Not an `async fn`, so
    /// the usual case (room) costs no future of its own.
    #[inline(always)]
    fn push_now(&self, env: Envelope<P>) -> Result<(), PushFail<Envelope<P>>> {
        let shared = self.shared();
        if !shared.admit() {
            return Err(PushFail::Closed(env));
        }
        match shared.queue.try_push(env) {
            Ok(()) => {
                shared.accepted();
                Ok(())
            }
            Err(PushFail::Full(env)) => Err(PushFail::Full(env)),
            Err(refused) => {
                shared.unadmit();
                Err(refused)
            }
        }
    }

    /// Waits for room for an admitted `env` that found the queue full, until
    /// `deadline` (forever if `None`).
    async fn wait_push(
        &self,
        env: Envelope<P>,
        deadline: Option<Instant>,
    ) -> Result<(), PushFail<Envelope<P>>> {
        let shared = self.shared();
        // If the caller drops this future while it waits, the job goes with
        // it: the admission must go too, or a drain would wait for a job that
        // never comes.
        let mut waiting = Waiting {
            shared,
            settled: false,
        };
        let r = shared.queue.push(env, deadline).await;
        waiting.settled = true;
        self.settle(&r);
        r
    }

    fn try_push(&self, env: Envelope<P>) -> Result<(), PushFail<Envelope<P>>> {
        match self.push_now(env) {
            Err(PushFail::Full(env)) => {
                self.shared().unadmit();
                Err(PushFail::Full(env))
            }
            r => r,
        }
    }

    fn settle<T>(&self, r: &Result<(), PushFail<T>>) {
        match r {
            Ok(()) => self.shared().accepted(),
            Err(_) => self.shared().unadmit(),
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
    pub async fn submit(&self, job: Job<P>) -> Result<JobHandle<P>, SubmitError<P>> {
        let (env, handle) = with_handle(job);
        // Each outcome of the first push settled in its own arm: a room-found
        // push returns without moving a `Result` that could hold an envelope
        // (see `submit_detached`).
        let env = match self.push_now(env) {
            Ok(()) => return Ok(handle),
            Err(PushFail::Full(env)) => env,
            Err(f) => return Err(closed_error(f)),
        };
        match self.wait_push(env, None).await {
            Ok(()) => Ok(handle),
            Err(f) => Err(closed_error(f)),
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
    pub fn try_submit(&self, job: Job<P>) -> Result<JobHandle<P>, TrySubmitError<P>> {
        let (env, handle) = with_handle(job);
        match self.try_push(env) {
            Ok(()) => Ok(handle),
            Err(PushFail::Full(e) | PushFail::Timeout(e)) => Err(TrySubmitError::Full(e.job)),
            Err(PushFail::Closed(e)) => Err(TrySubmitError::Closed(e.job)),
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
    ) -> Result<JobHandle<P>, SubmitTimeoutError<P>> {
        let (env, handle) = with_handle(job);
        let env = match self.push_now(env) {
            Ok(()) => return Ok(handle),
            Err(PushFail::Full(env)) => env,
            Err(f) => return Err(timeout_error(f)),
        };
        match self
            .wait_push(env, Some(after(Instant::now(), timeout)))
            .await
        {
            Ok(()) => Ok(handle),
            Err(f) => Err(timeout_error(f)),
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
        // A push that finds room returns at once. Matched as one `Result`
        // for both paths, the success path copied that whole `Result` (as
        // large as an envelope) and read it back in wider loads than it was
        // written with: a quarter of the submitter's samples (perf).
        let env = match self.push_now(detached(job)) {
            Ok(()) => return Ok(()),
            Err(PushFail::Full(env)) => env,
            Err(f) => return Err(closed_error(f)),
        };
        self.wait_push(env, None).await.map_err(closed_error)
    }

    /// Like [`try_submit`](Self::try_submit), without a handle.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_detached(&self, job: Job<P>) -> Result<(), TrySubmitError<P>> {
        self.try_push(detached(job)).map_err(|f| match f {
            PushFail::Full(e) | PushFail::Timeout(e) => TrySubmitError::Full(e.job),
            PushFail::Closed(e) => TrySubmitError::Closed(e.job),
        })
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
        let env = match self.push_now(detached(job)) {
            Ok(()) => return Ok(()),
            Err(PushFail::Full(env)) => env,
            Err(f) => return Err(timeout_error(f)),
        };
        self.wait_push(env, Some(after(Instant::now(), timeout)))
            .await
            .map_err(timeout_error)
    }

    /// A snapshot of the counters. See [`Stats`] for when it is exact.
    pub fn stats(&self) -> Stats {
        self.shared().stats()
    }

    /// The most recent failed attempts, oldest first (see
    /// [`PoolBuilder::recent_failures`]).
    pub fn recent_failures(&self) -> Vec<Failure> {
        self.shared().failures.snapshot()
    }

    /// Whether the pool has stopped taking jobs (shutdown has begun).
    pub fn is_closed(&self) -> bool {
        self.shared().state() != RUNNING
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
        use std::sync::atomic::Ordering;
        if workers == 0 {
            return Err(ResizeError::ZeroWorkers);
        }
        let shared = self.shared();
        if shared.state() != RUNNING {
            return Err(ResizeError::Closed);
        }
        let _one_at_a_time = lock(&self.inner.resize);
        shared.target.store(workers, Ordering::Relaxed);
        let live = shared.live.load(Ordering::Acquire);
        for _ in live..workers {
            (self.inner.spawn)(shared);
        }
        if live > workers {
            shared.queue.wake_takers();
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
        shutdown::shutdown(self.shared(), true, timeout).await
    }

    /// Shuts the pool down without draining: queued jobs and jobs waiting to
    /// retry come back at once as `Unstarted` (in the report, or through their
    /// handles); running jobs get `timeout` to finish; then as
    /// [`shutdown`](Self::shutdown).
    pub async fn shutdown_without_draining(&self, timeout: Duration) -> ShutdownReport<P> {
        shutdown::shutdown(self.shared(), false, timeout).await
    }

    /// Ends the drain wait of a shutdown in progress at once: running jobs'
    /// signals fire and queued jobs come back, as at the timeout. Called
    /// before any shutdown, it makes the next shutdown skip its drain. This is
    /// what a second Ctrl-C does in `signal::shutdown_on_signal` (the
    /// `signal` feature).
    pub fn cancel_running(&self) {
        self.shared().cancel_now.cancel();
    }
}
