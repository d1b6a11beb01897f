//! The pool's core: state that the pool handles, the workers and shutdown
//! share, reached through methods, and the one place where an outcome is
//! recorded ([`Core::finish`]).
//!
//! The core knows the store only through the seam (`store/mod.rs`). What it
//! adds on top: the lifecycle and the admission gate (`state.rs`), the
//! replies of jobs with handles (`replies.rs`, `reply.rs`), the workers'
//! slots (`slot.rs`) and the counters (`counters.rs`).

pub(crate) mod counters;
pub(crate) mod replies;
pub(crate) mod reply;
pub(crate) mod slot;
pub(crate) mod state;

use std::num::NonZeroU64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::counters::{FailureLog, Shard};
use self::replies::{Replies, Waiting};
use self::reply::Reply;
use self::slot::Slot;
use self::state::{Gate, Lifecycle};
use crate::job::{Job, JobId};
use crate::outcome::{Completion, NotFinished, Outcome, OutcomeKind, UnstartedJob};
use crate::retry::RetryPolicy;
use crate::stats::{Failure, Stats};
use crate::store::{Queued, Store, Ticket};
use crate::sync::lock;

/// `from + d`, or 30 years on if that is past what the clock can hold: a
/// timeout of `Duration::MAX` means "never" (tokio's `sleep` does the same).
pub(crate) fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 86_400))
}

/// The outcome hook.
pub(crate) type Hook<P, T> = Arc<dyn Fn(&Completion<P, T>) + Send + Sync>;

/// The pool's settings, fixed at build.
pub(crate) struct Config<P, T> {
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) cloner: Option<fn(&P) -> P>,
    pub(crate) grace: Duration,
    pub(crate) hook: Option<Hook<P, T>>,
    /// Whether to read the clock for job durations: only the hook and metrics
    /// use them.
    pub(crate) timed: bool,
    pub(crate) recent_failures: usize,
}

/// What a worker is running now, kept in its slot where shutdown can find it.
pub(crate) struct InFlight<P, T> {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) ticket: Ticket,
    pub(crate) reply: Option<Reply<P, T>>,
    pub(crate) started: Option<Instant>,
}

/// A worker's slot (see `slot.rs`): the lock is the worker's own; shutdown
/// touches it once.
pub(crate) type WorkerSlot<P, T> = Slot<InFlight<P, T>>;

struct WorkerEntry<P, T> {
    shard: Arc<Shard>,
    slot: Arc<WorkerSlot<P, T>>,
}

/// Submit-side counters, on their own cache line so that workers' writes do
/// not slow submitters down.
#[repr(align(128))]
struct SubmitCounters {
    /// State and admitted count in one word (see `state.rs`).
    gate: Gate,
    /// Incremented after a successful enqueue; what `Stats::accepted` reports
    /// while the pool runs.
    accepted: AtomicU64,
    rejected: AtomicU64,
}

/// The pool-wide signals, parents of each worker's own.
pub(crate) struct Signals {
    /// Fires at Cancelling.
    pub(crate) cancel: CancellationToken,
    /// Fires at Stopped.
    pub(crate) abandon: CancellationToken,
    /// Fired by `cancel_running` during a shutdown: cut the drain short.
    pub(crate) cut_drain: CancellationToken,
}

pub(crate) struct Core<P, T, S> {
    store: S,
    config: Config<P, T>,
    /// A copy of the gate's state for readers that are not submitters
    /// (workers check it per job): the gate's word is written on every
    /// submit, this one only on state changes.
    state: AtomicU8,
    submits: SubmitCounters,
    /// Outcomes recorded outside a worker: shutdown, a handle's cancel.
    general: Shard,
    /// Every worker ever started (retired ones keep their counts). Locked on
    /// start, resize, stats and shutdown, never per job.
    workers: Mutex<Vec<WorkerEntry<P, T>>>,
    /// Workers wanted and workers alive; a worker retires when `live > target`.
    target: AtomicUsize,
    live: AtomicUsize,
    failures: FailureLog,
    signals: Signals,
    /// Notified whenever a job reaches an outcome or a submit gives up while
    /// shutdown is in progress: shutdown re-checks whether anything is left.
    progress: Notify,
    replies: Replies<P, T>,
    not_finished: Mutex<Vec<NotFinished>>,
    unstarted: Mutex<Vec<UnstartedJob<P>>>,
}

impl<P, T, S> Core<P, T, S> {
    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    pub(crate) fn config(&self) -> &Config<P, T> {
        &self.config
    }

    pub(crate) fn signals(&self) -> &Signals {
        &self.signals
    }

    pub(crate) fn replies(&self) -> &Replies<P, T> {
        &self.replies
    }
}

impl<P, T, S> Core<P, T, S>
where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
{
    pub(crate) fn new(store: S, config: Config<P, T>, workers: usize) -> Self {
        Core {
            store,
            failures: FailureLog::new(config.recent_failures),
            config,
            state: AtomicU8::new(Lifecycle::Running as u8),
            submits: SubmitCounters {
                gate: Gate::new(),
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            },
            general: Shard::default(),
            workers: Mutex::new(Vec::new()),
            target: AtomicUsize::new(workers),
            live: AtomicUsize::new(0),
            signals: Signals {
                cancel: CancellationToken::new(),
                abandon: CancellationToken::new(),
                cut_drain: CancellationToken::new(),
            },
            progress: Notify::new(),
            replies: Replies::new(),
            not_finished: Mutex::new(Vec::new()),
            unstarted: Mutex::new(Vec::new()),
        }
    }

    // ---- lifecycle ----

    pub(crate) fn state(&self) -> Lifecycle {
        Lifecycle::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether jobs may no longer start (intake stopped or shutting down
    /// without drain, or later).
    #[inline]
    pub(crate) fn refuses_starts(&self) -> bool {
        self.state.load(Ordering::Acquire) >= Lifecycle::HandingBack as u8
    }

    /// Moves the state forward (never back).
    pub(crate) fn advance(&self, to: Lifecycle) {
        self.submits.gate.advance(to);
        self.state.fetch_max(to as u8, Ordering::AcqRel);
    }

    // ---- submit side ----

    /// Counts a submission in before it is enqueued, and refuses it if the
    /// pool no longer takes jobs. Either shutdown's count includes this
    /// submission (and shutdown waits for its outcome), or the submission sees
    /// the pool closed: see `state.rs`, checked under loom.
    #[inline]
    pub(crate) fn admit(&self) -> bool {
        if self.submits.gate.admit() {
            true
        } else {
            self.refused();
            false
        }
    }

    /// Undoes `admit` for a submission whose enqueue failed.
    pub(crate) fn unadmit(&self) {
        self.submits.gate.unadmit();
        self.refused();
    }

    fn refused(&self) {
        self.submits.rejected.fetch_add(1, Ordering::Relaxed);
        self.admission_undone();
    }

    /// Undoes `admit` for a submission whose caller dropped it while it
    /// waited for room: not accepted, and not a refusal either (the job went
    /// with the dropped future, not back to the caller).
    pub(crate) fn withdraw(&self) {
        self.submits.gate.unadmit();
        self.admission_undone();
    }

    /// A shutdown waiting for the pool to go idle counts admissions: tell it
    /// one was undone.
    fn admission_undone(&self) {
        if self.state() != Lifecycle::Running {
            self.progress.notify_one();
        }
    }

    #[inline]
    pub(crate) fn accepted(&self) {
        self.submits.accepted.fetch_add(1, Ordering::Relaxed);
        if self.store.durable() {
            // Committed: the job is the store's to keep now, and a shutdown
            // no longer waits for it (only for the jobs this process claims).
            self.submits.gate.unadmit();
            self.admission_undone();
        }
    }

    // ---- workers ----

    /// Registers a new worker's counters and slot; its number, from 1.
    pub(crate) fn add_worker(&self, shard: Arc<Shard>, slot: Arc<WorkerSlot<P, T>>) -> usize {
        let mut workers = lock(&self.workers);
        workers.push(WorkerEntry { shard, slot });
        self.live.fetch_add(1, Ordering::AcqRel);
        workers.len()
    }

    /// A worker exits for good (the store is closed and empty).
    pub(crate) fn worker_exited(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn live_workers(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn set_target(&self, workers: usize) {
        self.target.store(workers, Ordering::Relaxed);
    }

    /// Whether this worker count is above the target (a worker should retire).
    pub(crate) fn over_target(&self) -> bool {
        self.live.load(Ordering::Relaxed) > self.target.load(Ordering::Relaxed)
    }

    /// Retires the calling worker if the pool has more than it wants. The CAS
    /// makes sure that two workers seeing one surplus do not both leave.
    pub(crate) fn try_retire(&self) -> bool {
        let mut live = self.live.load(Ordering::Relaxed);
        while live > self.target.load(Ordering::Relaxed) {
            match self
                .live
                .compare_exchange(live, live - 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => live = now,
            }
        }
        false
    }

    // ---- counters ----

    /// Outcomes recorded so far, across all shards.
    fn terminal(&self) -> u64 {
        let workers: u64 = lock(&self.workers).iter().map(|w| w.shard.terminal()).sum();
        workers + self.general.terminal()
    }

    /// Submissions admitted and not undone: at a quiet point, the jobs
    /// accepted.
    pub(crate) fn admitted(&self) -> u64 {
        self.submits.gate.admitted()
    }

    /// Nothing queued and every admitted job has its outcome (nothing running,
    /// nothing waiting to retry, no submit in progress).
    pub(crate) fn is_idle(&self) -> bool {
        let admitted = self.submits.gate.admitted();
        if self.store.durable() {
            // Submits still on their way, jobs claimed here, and, when
            // draining, jobs the store knows to be ready; what is scheduled
            // for later, or left when not draining, stays in the store.
            let draining = self.state() == Lifecycle::Draining;
            return admitted == 0
                && self.store.held() == 0
                && (!draining || self.store.queued() == 0);
        }
        self.store.queued() == 0 && self.terminal() >= admitted
    }

    /// Wakes a shutdown waiting for the pool to go idle.
    pub(crate) fn progress(&self) -> &Notify {
        &self.progress
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for w in lock(&self.workers).iter() {
            w.shard.add_to(&mut s);
            s.running += u64::from(w.slot.is_occupied());
        }
        self.general.add_to(&mut s);
        s.accepted = self.submits.accepted.load(Ordering::Relaxed);
        s.rejected = self.submits.rejected.load(Ordering::Relaxed);
        s.queued = self.store.queued() as u64;
        s.retry_waiting = self.store.scheduled() as u64;
        s.workers = self.live.load(Ordering::Relaxed) as u64;
        s
    }

    pub(crate) fn record_failure(
        &self,
        id: &JobId,
        attempt: u32,
        kind: OutcomeKind,
        error: String,
    ) {
        self.failures.record(id, attempt, kind, error);
    }

    pub(crate) fn recent_failures(&self) -> Vec<Failure> {
        self.failures.snapshot()
    }

    /// What shutdown reports: the jobs that did not finish, and the unstarted
    /// jobs without a handle.
    pub(crate) fn take_report_lists(&self) -> (Vec<NotFinished>, Vec<UnstartedJob<P>>) {
        (
            std::mem::take(&mut *lock(&self.not_finished)),
            std::mem::take(&mut *lock(&self.unstarted)),
        )
    }

    // ---- outcomes ----

    /// Records a job's one terminal outcome: shutdown lists, metrics, hook,
    /// counters, then the handle.
    ///
    /// The order matters. The shutdown lists are written before the counter,
    /// so that when shutdown sees the count complete the lists are complete.
    /// The counter is written before the handle is answered, so that a caller
    /// who awaited its handle reads stats that include the job. An unstarted
    /// job is the exception: where it goes (the handle, or the report if the
    /// handle was dropped) must be settled before it is counted.
    #[inline(always)]
    pub(crate) fn finish(
        &self,
        shard: &Shard,
        id: JobId,
        outcome: Outcome<P, T>,
        reply: Option<Reply<P, T>>,
        started: Option<Instant>,
    ) {
        // The usual case, kept short so that it is inlined into the worker: a
        // job that ran, while the pool runs, without an outcome hook.
        let kind = outcome.kind();
        if self.config.hook.is_none()
            && kind != OutcomeKind::Unstarted
            && self.state() == Lifecycle::Running
        {
            #[cfg(feature = "metrics")]
            record_metrics(kind, started.map(|s| s.elapsed()).unwrap_or_default());
            shard.add(kind);
            if let Some(r) = reply {
                // The caller may have dropped the handle: that is allowed.
                let _ = r.send(outcome);
            }
            return;
        }
        self.finish_in_full(shard, id, outcome, reply, started);
    }

    #[inline(never)]
    fn finish_in_full(
        &self,
        shard: &Shard,
        id: JobId,
        mut outcome: Outcome<P, T>,
        reply: Option<Reply<P, T>>,
        started: Option<Instant>,
    ) {
        let kind = outcome.kind();
        let shutting_down = self.state() != Lifecycle::Running;
        if shutting_down && kind.is_unfinished() {
            lock(&self.not_finished).push(NotFinished {
                id: id.clone(),
                outcome: kind,
                attempts: outcome.attempts(),
            });
        }
        let duration = started.map(|s| s.elapsed()).unwrap_or_default();
        #[cfg(feature = "metrics")]
        record_metrics(kind, duration);
        if let Some(hook) = &self.config.hook {
            let completion = Completion::new(id, outcome, duration);
            if catch_unwind(AssertUnwindSafe(|| hook(&completion))).is_err() {
                tracing::error!(target: "workpool", id = %completion.id(), "outcome hook panicked");
            }
            outcome = completion.into_parts().1;
        }
        if kind == OutcomeKind::Unstarted {
            let back = match reply {
                Some(r) => r.send(outcome).err(),
                None => Some(outcome),
            };
            // A durable store keeps its unstarted jobs: nothing to hand back.
            if let Some(Outcome::Unstarted { job, attempts }) = back
                && !self.store.durable()
            {
                lock(&self.unstarted).push(UnstartedJob { job, attempts });
            }
            shard.add(kind);
        } else {
            shard.add(kind);
            if let Some(r) = reply {
                let _ = r.send(outcome);
            }
        }
        if shutting_down {
            self.progress.notify_one();
        }
    }

    /// Records a job that will not run (again): `Cancelled` if its handle
    /// cancelled it, else `Unstarted` with the job itself.
    pub(crate) fn give_back(
        &self,
        shard: &Shard,
        job: Job<P>,
        attempts: u32,
        reply: Option<Reply<P, T>>,
        started: Option<Instant>,
    ) {
        let id = job.id().clone();
        let outcome = if reply.as_ref().is_some_and(Reply::is_cancelled) {
            Outcome::Cancelled {
                error: None,
                attempts,
            }
        } else {
            Outcome::Unstarted { job, attempts }
        };
        self.finish(shard, id, outcome, reply, started);
    }

    /// Hands back a job taken from the store, unless its handle already
    /// settled it.
    fn hand_back(&self, q: Queued<P>) {
        let reply = match q.ticket {
            None => None,
            Some(_) => match self.replies.take(q.ticket) {
                Some(waiting) => Some(waiting.reply),
                None => return, // cancelled while it waited: it has its outcome
            },
        };
        let (attempts, started) = (q.attempts(), q.started());
        self.give_back(&self.general, q.job, attempts, reply, started);
    }

    /// Hands back everything the store gives up (queued and waiting to retry).
    pub(crate) fn hand_back_left(&self) {
        while let Some(q) = self.store.take_left() {
            self.hand_back(q);
        }
    }

    /// Puts a failed job back in the store to run again after `delay`. If the
    /// store takes no more, the job is handed back.
    pub(crate) fn retry(
        &self,
        q: Queued<P>,
        reply: Option<Reply<P, T>>,
        attempts: u32,
        delay: Duration,
        error: impl FnOnce() -> Option<String>,
    ) {
        if let (Some(ticket), Some(reply)) = (q.ticket, reply) {
            let started = q.started();
            self.replies.put_back(
                ticket,
                Waiting {
                    reply,
                    attempts,
                    started,
                },
            );
        }
        if let Err(q) = self.store.retry_at(q, Instant::now() + delay, error) {
            self.hand_back(q);
        }
    }

    /// Takes every running job out of its worker's slot as Abandoned. Workers
    /// that later come back with a result find their slot empty and drop it.
    pub(crate) fn abandon_running(&self) {
        let slots: Vec<_> = lock(&self.workers).iter().map(|w| w.slot.clone()).collect();
        for slot in slots {
            if let Some(f) = slot.take() {
                tracing::warn!(target: "workpool", id = %f.id, attempt = f.attempt, "job ignored cancellation past the grace period; abandoned");
                let text = || Some("abandoned by a shutdown".to_string());
                self.store
                    .complete(&f.id, f.attempt, OutcomeKind::Abandoned, text, || true);
                let outcome = Outcome::Abandoned {
                    attempts: f.attempt,
                };
                self.finish(&self.general, f.id, outcome, f.reply, f.started);
            }
        }
    }
}

/// A handle's way to cancel its job while the job waits, without knowing the
/// pool's types.
pub(crate) trait CancelWaiting: Send + Sync {
    /// Settles the job as `Cancelled` at once if it still waits in the store
    /// (queued or to retry); otherwise does nothing.
    fn cancel_waiting(&self, ticket: NonZeroU64, id: &JobId);
}

impl<P, T, S> CancelWaiting for Core<P, T, S>
where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
{
    fn cancel_waiting(&self, ticket: NonZeroU64, id: &JobId) {
        if let Some(w) = self.replies.take(Some(ticket)) {
            self.store.discard(ticket);
            let outcome = Outcome::Cancelled {
                error: None,
                attempts: w.attempts,
            };
            self.finish(&self.general, id.clone(), outcome, Some(w.reply), w.started);
        }
    }
}

/// A job's outcome and duration, through the `metrics` facade.
#[cfg(feature = "metrics")]
fn record_metrics(kind: OutcomeKind, duration: std::time::Duration) {
    metrics::counter!("workpool_jobs_total", "outcome" => kind.as_str()).increment(1);
    metrics::histogram!("workpool_job_duration_seconds").record(duration.as_secs_f64());
}
