//! `PoolBuilder`: the settings, checked once, and the start of the pool.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Pool, Spawner};
use crate::context::JobContext;
use crate::core::{Config, Core, Hook};
use crate::error::BuildError;
use crate::handler::{BoxError, FnHandler, Handler};
use crate::job::Job;
use crate::outcome::Completion;
use crate::retry::RetryPolicy;
use crate::store::AnyStore;
use crate::store::memory::MemoryStore;
use crate::worker;
use crate::worker::exec::{AsyncExec, BlockingExec, Exec};

/// Configures and starts a [`Pool`]. Made by [`Pool::builder`].
///
/// Every setting has a default; `build` checks them and returns an error (never
/// panics) for one that cannot work.
#[must_use = "a builder does nothing until build() is called"]
pub struct PoolBuilder<P = Bytes, T = ()> {
    workers: Option<usize>,
    queue_capacity: usize,
    default_timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    cloner: Option<fn(&P) -> P>,
    grace: Duration,
    hook: Option<Hook<P, T>>,
    recent_failures: usize,
    #[cfg(feature = "_durable")]
    durable: Option<Durable<P>>,
}

/// A durable store and how the payload goes in and out of it.
#[cfg(feature = "_durable")]
struct Durable<P> {
    store: crate::store::Durable,
    encode: fn(&P) -> Vec<u8>,
    decode: fn(&[u8]) -> Result<P, BoxError>,
}

impl<P, T> Default for PoolBuilder<P, T> {
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
            #[cfg(feature = "_durable")]
            durable: None,
        }
    }
}

impl<P: Send + 'static, T: Send + 'static> PoolBuilder<P, T> {
    /// Same as [`Pool::builder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the pool's jobs in a durable store instead of memory: a
    /// [`SqliteStore`](crate::store::sqlite::SqliteStore) file (feature
    /// `sqlite`) or a [`PgStore`](crate::store::postgres::PgStore)
    /// database (feature `postgres`). A job is committed before `submit`
    /// returns and survives a killed process; workers also run jobs that
    /// earlier processes (or other processes sharing the store) left in it.
    ///
    /// With a durable store a job's ID is the store's ID for it (the handle
    /// returned by `submit` has it; an ID given to [`Job::with_id`] is not
    /// kept), `try_submit` always answers `Full` (a commit is awaited:
    /// use `submit`), `queue_capacity` does not apply, and a shutdown hands
    /// back no job: what did not run stays in the store. A draining
    /// [`shutdown`](Pool::shutdown) runs what the store has ready; jobs
    /// scheduled for later (retries waiting out their backoff among them)
    /// stay in the store for the next pool.
    #[cfg(feature = "_durable")]
    pub fn store(mut self, store: impl Into<crate::store::Durable>) -> Self
    where
        P: crate::payload::Payload + Clone,
    {
        self.durable = Some(Durable {
            store: store.into(),
            encode: P::to_bytes,
            decode: P::from_bytes,
        });
        // A retry runs a copy of the payload.
        self.cloner = Some(P::clone);
        self
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
    pub fn on_outcome(mut self, hook: impl Fn(&Completion<P, T>) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// How many failed attempts [`Pool::recent_failures`] keeps. Default: 64.
    /// 0 keeps none.
    pub fn recent_failures(mut self, n: usize) -> Self {
        self.recent_failures = n;
        self
    }

    /// Starts the pool with an async closure as the handler. The closure
    /// returns `Result<T, E>`: `T` is what a [`JobHandle`](crate::JobHandle) yields on success
    /// (usually `()`), `E` any error.
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
    pub fn build<F, Fut, E>(self, handler: F) -> Result<Pool<P, T>, BuildError>
    where
        F: Fn(Job<P>, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send,
        E: Into<BoxError>,
    {
        self.start(AsyncExec(FnHandler(handler)))
    }

    /// Starts the pool with a [`Handler`] type.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_handler<H: Handler<P, Output = T>>(
        self,
        handler: H,
    ) -> Result<Pool<P, T>, BuildError> {
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
    pub fn build_blocking<F, E>(self, handler: F) -> Result<Pool<P, T>, BuildError>
    where
        F: Fn(Job<P>, JobContext) -> Result<T, E> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        self.start(BlockingExec::new(handler))
    }

    fn start<X: Exec<P, Output = T>>(self, exec: X) -> Result<Pool<P, T>, BuildError> {
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
            recent_failures: self.recent_failures,
        };
        let store = AnyStore::Memory(MemoryStore::new(
            self.queue_capacity,
            rt.metrics().num_workers(),
        ));
        #[cfg(feature = "_durable")]
        let store = match self.durable {
            Some(d) => {
                let attempts = config.retry.map_or(1, |r| r.max_attempts());
                AnyStore::Durable(crate::store::durable::DurableStore::new(
                    d.store.backend,
                    d.encode,
                    d.decode,
                    attempts,
                ))
            }
            None => store,
        };
        let core = Arc::new(Core::new(store, config, workers));
        let exec = Arc::new(exec);
        let spawn: Spawner<P, T> = Box::new(move |core| worker::spawn(core, &exec, &rt));
        for _ in 0..workers {
            spawn(&core);
        }
        Ok(Pool::new(core, spawn))
    }
}

impl<P, T> fmt::Debug for PoolBuilder<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("default_timeout", &self.default_timeout)
            .field("retry", &self.retry)
            .field("grace", &self.grace)
            .field("on_outcome", &self.hook.is_some())
            .field("recent_failures", &self.recent_failures)
            .finish()
    }
}
