//! Where jobs wait between submit and run: in memory (the default), or in
//! a durable store that outlives the process: an embedded SQLite file (the
//! `sqlite` module, feature `sqlite`) or a PostgreSQL database shared by
//! many machines (the `postgres` module, feature `postgres`).

// The seam, for the pool's own use.
//
// A store knows jobs, not workers, handles or the lifecycle. The pool gives
// it `Queued` jobs and asks for them back one claim at a time per worker;
// when an attempt ends, the pool tells the store what became of it. What a
// store keeps is data only: the job, its attempts so far, and the pool's
// `Ticket` (a number; the handle it stands for lives in the pool, see
// `core/replies.rs`). So the same seam fits the memory ring and a table in
// SQLite or PostgreSQL, where a claim is an `UPDATE … RETURNING` serving
// the idle workers from one batched query (`durable.rs`).
//
// The memory store (`memory::MemoryStore`) keeps its wake-up logic to
// itself; the pool only sees claims that wait.

#[cfg(feature = "_durable")]
mod backend;
#[cfg(feature = "_durable")]
pub(crate) mod durable;
#[cfg(feature = "_durable")]
mod jobs;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "_durable")]
pub(crate) mod rows;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "_durable")]
pub use backend::Durable;
#[cfg(feature = "_durable")]
pub use jobs::{Enqueued, JobRow, NewJob, StateCount};

use std::future::Future;
use std::num::NonZeroU64;

use tokio::time::Instant;

use crate::job::{Job, JobId};
use crate::outcome::OutcomeKind;

/// The pool's number for a job submitted with a handle; detached jobs have
/// none. A store keeps it with the job and gives it back with the claim.
pub(crate) type Ticket = Option<NonZeroU64>;

/// A job as a store holds it.
pub(crate) struct Queued<P> {
    pub(crate) job: Job<P>,
    /// See [`Ticket`].
    pub(crate) ticket: Ticket,
    /// Present only when the job comes back to retry (most jobs never do:
    /// boxed, the common envelope stays small).
    pub(crate) retried: Option<Box<Retried>>,
}

/// What a job coming back to retry carries from its earlier attempts.
pub(crate) struct Retried {
    /// Attempts already made.
    pub(crate) attempts: u32,
    /// When the first attempt started, if durations are measured.
    pub(crate) started: Option<Instant>,
}

impl<P> Queued<P> {
    /// A job not yet tried.
    pub(crate) fn new(job: Job<P>, ticket: Ticket) -> Self {
        Queued {
            job,
            ticket,
            retried: None,
        }
    }

    /// A job to be tried again after `attempts`.
    pub(crate) fn again(
        job: Job<P>,
        ticket: Ticket,
        attempts: u32,
        started: Option<Instant>,
    ) -> Self {
        Queued {
            job,
            ticket,
            retried: Some(Box::new(Retried { attempts, started })),
        }
    }

    /// Attempts already made.
    pub(crate) fn attempts(&self) -> u32 {
        self.retried.as_ref().map_or(0, |r| r.attempts)
    }

    /// When the first attempt started, if it did and durations are measured.
    pub(crate) fn started(&self) -> Option<Instant> {
        self.retried.as_ref().and_then(|r| r.started)
    }
}

/// Why an enqueue did not happen; the job comes back.
pub(crate) enum Refused<T> {
    /// No room now.
    Full(T),
    /// No room before the deadline.
    Timeout(T),
    /// The store takes no more jobs.
    Closed(T),
    /// A durable store could not keep it (its error is logged).
    #[cfg_attr(not(feature = "_durable"), allow(dead_code))]
    Failed(T),
}

impl<T> Refused<T> {
    /// What was not enqueued, whatever the reason.
    pub(crate) fn into_inner(self) -> T {
        match self {
            Refused::Full(v) | Refused::Timeout(v) | Refused::Closed(v) | Refused::Failed(v) => v,
        }
    }
}

/// What a claim found.
pub(crate) enum Claim<P> {
    /// A job for this worker, now its own.
    Job(Queued<P>),
    /// The caller's `interrupted` check said to stop waiting.
    Interrupted,
    /// Closed, and nothing is left or will come.
    Closed,
}

/// A place where jobs wait: the seam between submitters and workers.
///
/// Every method may be called from any thread. A job is owned by exactly one
/// side at a time: the store from enqueue until a claim returns it, the
/// claiming worker until it calls one of [`Store::complete`],
/// [`Store::retry_at`] or [`Store::release`].
pub(crate) trait Store<P>: Send + Sync + 'static {
    /// Per-worker claiming state (for the memory store: its wake-up and
    /// yield bookkeeping).
    type Claimer: Send + 'static;

    /// Adds a job if there is room now.
    fn try_enqueue(&self, job: Queued<P>) -> Result<(), Refused<Queued<P>>>;

    /// Adds a job, waiting for room until `deadline` (forever if `None`).
    /// A durable store returns once the job is committed, with the ID it
    /// gave the job.
    ///
    /// Cancel safety: dropping the future drops the job with it (a durable
    /// store may have committed it already).
    fn enqueue(
        &self,
        job: Queued<P>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Option<JobId>, Refused<Queued<P>>>> + Send;

    /// A worker's claiming state.
    fn claimer(&self) -> Self::Claimer;

    /// Claims a job for the calling worker if one is ready now, without
    /// waiting (a durable store may serve it from a batch it fetched).
    fn try_claim(&self, claimer: &mut Self::Claimer) -> Option<Queued<P>>;

    /// Waits for a job and claims it for the calling worker. `interrupted`
    /// is asked before the claim sleeps; [`Store::wake_claimers`] makes
    /// sleeping claims ask again.
    fn claim(
        &self,
        claimer: &mut Self::Claimer,
        interrupted: impl Fn() -> bool + Send + Sync,
    ) -> impl Future<Output = Claim<P>> + Send;

    /// Counts one turn of the worker's loop; whether the worker should yield
    /// its thread before it claims again (so that submitters and other tasks
    /// on its thread run).
    fn must_yield(&self, claimer: &mut Self::Claimer) -> bool;

    /// The worker stops claiming for good (it retires).
    fn leave(&self, claimer: &mut Self::Claimer);

    /// A claimed job reached its outcome (attempt `attempt`). A durable store
    /// records it, fenced by the attempt number, with `error()`; if
    /// `interrupted()` (the pool's shutdown stopped it), it makes the job
    /// available again. (The memory store asks neither.)
    fn complete(
        &self,
        id: &JobId,
        attempt: u32,
        outcome: OutcomeKind,
        error: impl FnOnce() -> Option<String>,
        interrupted: impl FnOnce() -> bool,
    );

    /// A claimed job failed (`error()`, asked only by a durable store) and
    /// runs again at `at`. Gives the job back if the store is closed.
    fn retry_at(
        &self,
        job: Queued<P>,
        at: Instant,
        error: impl FnOnce() -> Option<String>,
    ) -> Result<(), Queued<P>>;

    /// A claimed job was not started because it already has its outcome
    /// (cancelled while it waited). A durable store records it.
    fn skipped(&self, _job: &Queued<P>) {}

    /// Whether jobs outlive the process: then an enqueued job is the store's
    /// to keep, and a shutdown waits only for the jobs this process holds.
    fn durable(&self) -> bool {
        false
    }

    /// A durable store's claimed jobs not yet completed, retried or released.
    fn held(&self) -> usize {
        0
    }

    /// Notified when what a shutdown waits for changes inside the store,
    /// without an outcome the pool would see (a durable store: a job
    /// retried or released, a fetch that found nothing ready).
    fn changes(&self) -> Option<&tokio::sync::Notify> {
        None
    }

    /// A draining shutdown begins: a durable store looks again for what is
    /// ready, which others may have put there since it last looked.
    fn look_again(&self) {}

    /// A durable store's cancel by ID of a running job: the signal it fires
    /// for a job without a handle (`None` if it has one: the store passes its
    /// cancel on to `handle`'s signal instead).
    fn cancel_ref(
        &self,
        _job: &Queued<P>,
        _handle: Option<&crate::cancel::CancelRef>,
    ) -> Option<crate::cancel::CancelRef> {
        None
    }

    /// Waits until a durable store has written down every end it was told
    /// of (shutdown's last step, so that a process that exits right after
    /// leaves nothing to run again).
    fn flush(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// A claimed job will not run now (shutdown). A durable store keeps it
    /// available and returns `None`; the memory store cannot keep it past
    /// the process and gives it back to be handed to the caller.
    fn release(&self, job: Queued<P>) -> Option<Queued<P>>;

    /// The job of `ticket` was cancelled while it waited and has its outcome:
    /// a store that can drop it now does. (The memory store drops it from the
    /// retries; one in the ring is skipped when claimed.)
    fn discard(&self, ticket: std::num::NonZeroU64);

    /// Refuses further enqueues; jobs already in stay claimable. Wakes every
    /// waiting enqueue and claim.
    fn close(&self);

    /// Wakes every sleeping claim so it asks its `interrupted` check again.
    fn wake_claimers(&self);

    /// Takes one job that is still waiting (queued or scheduled), to hand it
    /// back at shutdown. A durable store keeps its jobs and returns `None`.
    fn take_left(&self) -> Option<Queued<P>>;

    /// Jobs waiting to be claimed now.
    fn queued(&self) -> usize;

    /// Jobs waiting for a later time (retries).
    fn scheduled(&self) -> usize;
}

/// The store a pool runs on, chosen when it is built.
// One per pool: boxing the memory store would put a pointer hop in every claim.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnyStore<P> {
    Memory(memory::MemoryStore<P>),
    #[cfg(feature = "_durable")]
    Durable(durable::DurableStore<P>),
}

/// A worker's claiming state, for the store it claims from.
pub(crate) enum AnyClaimer {
    Memory(memory::MemoryClaimer),
    #[cfg(feature = "_durable")]
    Durable,
}

impl<P> AnyStore<P> {
    /// Refuses further enqueues, and (memory) lets the ring grow for what
    /// is handed back: the pool is being dropped.
    pub(crate) fn close_now(&self) {
        match self {
            AnyStore::Memory(m) => m.close_now(),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.close(),
        }
    }
}

impl<P: Send + 'static> Store<P> for AnyStore<P> {
    type Claimer = AnyClaimer;

    #[inline(always)]
    fn try_enqueue(&self, job: Queued<P>) -> Result<(), Refused<Queued<P>>> {
        match self {
            AnyStore::Memory(m) => m.try_enqueue(job),
            // Waits for a commit: only `enqueue` does that.
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) if d.is_closed() => Err(Refused::Closed(job)),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(_) => Err(Refused::Full(job)),
        }
    }

    async fn enqueue(
        &self,
        job: Queued<P>,
        deadline: Option<Instant>,
    ) -> Result<Option<JobId>, Refused<Queued<P>>> {
        match self {
            AnyStore::Memory(m) => m.enqueue(job, deadline).await,
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.enqueue(job).await.map(Some),
        }
    }

    fn claimer(&self) -> AnyClaimer {
        match self {
            AnyStore::Memory(m) => AnyClaimer::Memory(m.claimer()),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(_) => AnyClaimer::Durable,
        }
    }

    #[inline(always)]
    fn try_claim(&self, claimer: &mut AnyClaimer) -> Option<Queued<P>> {
        match (self, claimer) {
            (AnyStore::Memory(m), AnyClaimer::Memory(c)) => m.try_claim(c),
            #[cfg(feature = "_durable")]
            (AnyStore::Durable(d), _) => d.try_claim(),
            #[cfg(feature = "_durable")]
            _ => None,
        }
    }

    async fn claim(
        &self,
        claimer: &mut AnyClaimer,
        interrupted: impl Fn() -> bool + Send + Sync,
    ) -> Claim<P> {
        match (self, claimer) {
            (AnyStore::Memory(m), AnyClaimer::Memory(c)) => m.claim(c, interrupted).await,
            #[cfg(feature = "_durable")]
            (AnyStore::Durable(d), _) => d.claim(interrupted).await,
            #[cfg(feature = "_durable")]
            _ => Claim::Closed,
        }
    }

    #[inline(always)]
    fn must_yield(&self, claimer: &mut AnyClaimer) -> bool {
        match (self, claimer) {
            (AnyStore::Memory(m), AnyClaimer::Memory(c)) => m.must_yield(c),
            #[cfg(feature = "_durable")]
            _ => false,
        }
    }

    fn leave(&self, claimer: &mut AnyClaimer) {
        match (self, claimer) {
            (AnyStore::Memory(m), AnyClaimer::Memory(c)) => m.leave(c),
            #[cfg(feature = "_durable")]
            _ => {}
        }
    }

    #[inline(always)]
    fn complete(
        &self,
        id: &JobId,
        attempt: u32,
        outcome: OutcomeKind,
        error: impl FnOnce() -> Option<String>,
        interrupted: impl FnOnce() -> bool,
    ) {
        match self {
            AnyStore::Memory(_) => drop((id, attempt, outcome, error, interrupted)),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.complete(id, attempt, outcome, error(), interrupted()),
        }
    }

    fn retry_at(
        &self,
        job: Queued<P>,
        at: Instant,
        error: impl FnOnce() -> Option<String>,
    ) -> Result<(), Queued<P>> {
        match self {
            AnyStore::Memory(m) => m.retry_at(job, at, error),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => {
                d.retry_at(job, at, error());
                Ok(())
            }
        }
    }

    fn skipped(&self, job: &Queued<P>) {
        match self {
            AnyStore::Memory(_) => {
                let _ = job;
            }
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.skipped(job),
        }
    }

    fn durable(&self) -> bool {
        !matches!(self, AnyStore::Memory(_))
    }

    #[inline(always)]
    fn cancel_ref(
        &self,
        job: &Queued<P>,
        handle: Option<&crate::cancel::CancelRef>,
    ) -> Option<crate::cancel::CancelRef> {
        match self {
            AnyStore::Memory(_) => {
                let _ = (job, handle);
                None
            }
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.cancel_ref(job, handle),
        }
    }

    fn held(&self) -> usize {
        match self {
            AnyStore::Memory(_) => 0,
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.held(),
        }
    }

    fn look_again(&self) {
        #[cfg(feature = "_durable")]
        if let AnyStore::Durable(d) = self {
            d.look_again();
        }
    }

    fn changes(&self) -> Option<&tokio::sync::Notify> {
        match self {
            AnyStore::Memory(_) => None,
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => Some(d.changed()),
        }
    }

    async fn flush(&self) {
        #[cfg(feature = "_durable")]
        if let AnyStore::Durable(d) = self {
            d.flush().await;
        }
    }

    fn release(&self, job: Queued<P>) -> Option<Queued<P>> {
        match self {
            AnyStore::Memory(m) => m.release(job),
            // Back to available in the database; the job itself goes to its
            // handle, as unstarted here.
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => {
                d.release(&job);
                Some(job)
            }
        }
    }

    fn discard(&self, ticket: std::num::NonZeroU64) {
        match self {
            AnyStore::Memory(m) => m.discard(ticket),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.discard(ticket),
        }
    }

    fn close(&self) {
        match self {
            AnyStore::Memory(m) => m.close(),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.close(),
        }
    }

    fn wake_claimers(&self) {
        match self {
            AnyStore::Memory(m) => m.wake_claimers(),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.wake_claimers(),
        }
    }

    fn take_left(&self) -> Option<Queued<P>> {
        match self {
            AnyStore::Memory(m) => m.take_left(),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.take_left(),
        }
    }

    #[inline(always)]
    fn queued(&self) -> usize {
        match self {
            AnyStore::Memory(m) => m.queued(),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(d) => d.queued(),
        }
    }

    fn scheduled(&self) -> usize {
        match self {
            AnyStore::Memory(m) => m.scheduled(),
            #[cfg(feature = "_durable")]
            AnyStore::Durable(_) => 0,
        }
    }
}
