//! State shared by the pool handles, the workers, retry tasks and shutdown,
//! and the one place where an outcome is recorded ([`Shared::finish`]).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel::CancelRef;
use crate::gate::Gate;
use crate::job::JobId;
use crate::outcome::{Completion, Outcome, OutcomeKind};
use crate::queue::{Envelope, PushFail, Queue};
use crate::reply::Reply;
use crate::retry::RetryPolicy;
use crate::shutdown::{NotFinished, ShutdownReport, UnstartedJob};
use crate::stats::{FailureLog, Shard, Stats};

pub(crate) use crate::gate::{CANCELLING, DRAINING, HANDING_BACK, RUNNING, STOPPED};

/// Locks, ignoring poison: every critical section here leaves its data valid,
/// and user code (hooks, handlers) never runs under these locks.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `from + d`, or 30 years on if that is past what the clock can hold: a
/// timeout of `Duration::MAX` means "never" (tokio's `sleep` does the same).
pub(crate) fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 86_400))
}

/// The outcome hook.
pub(crate) type Hook<P> = Arc<dyn Fn(&Completion<P>) + Send + Sync>;

pub(crate) struct Config<P> {
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) cloner: Option<fn(&P) -> P>,
    pub(crate) grace: Duration,
    pub(crate) hook: Option<Hook<P>>,
    /// Whether to read the clock for job durations: only the hook and metrics
    /// use them, and a clock read per job is not free.
    pub(crate) timed: bool,
}

/// What a worker is running now, kept where shutdown can find it.
pub(crate) struct InFlight<P> {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) reply: Option<Reply<P>>,
    pub(crate) started: Option<Instant>,
}

/// A worker's slot (see `slot.rs`): the lock is the worker's own; shutdown
/// touches it once.
pub(crate) type Slot<P> = crate::slot::Slot<InFlight<P>>;

pub(crate) struct WorkerEntry<P> {
    pub(crate) shard: Arc<Shard>,
    pub(crate) slot: Arc<Slot<P>>,
}

/// Submit-side counters, on their own cache line so that workers' writes do not
/// slow submitters down.
#[repr(align(128))]
pub(crate) struct SubmitCounters {
    /// State and admitted count in one word (see `gate.rs`): counted in
    /// before the push, undone if the push fails; shutdown compares the count
    /// with the outcome count to know that nothing is in flight.
    pub(crate) gate: Gate,
    /// Incremented after a successful push; what `Stats::accepted` reports.
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

pub(crate) struct RetryRegistry<P> {
    next_key: u64,
    pub(crate) waiting: HashMap<u64, Envelope<P>>,
}

pub(crate) struct Shared<P> {
    pub(crate) queue: Queue<Envelope<P>>,
    pub(crate) config: Config<P>,
    /// A copy of the gate's state for readers that are not submitters (workers
    /// check it per job): the gate's word is written on every submit, this one
    /// only on state changes, so reading it does not pull the submitters' cache
    /// line. Written right after the gate, before anything that relies on it.
    state: AtomicU8,
    pub(crate) submits: SubmitCounters,
    /// Outcomes recorded outside a worker: shutdown, retry tasks.
    pub(crate) general: Shard,
    /// Every worker ever started (retired ones keep their counts). Locked on
    /// start, resize, stats and shutdown, never per job.
    pub(crate) workers: Mutex<Vec<WorkerEntry<P>>>,
    /// Workers wanted and workers alive; a worker retires when `live > target`.
    pub(crate) target: AtomicUsize,
    pub(crate) live: AtomicUsize,
    pub(crate) failures: FailureLog,
    /// Fires at Cancelling; parent of every worker's `cancel`.
    pub(crate) cancel: CancellationToken,
    /// Fires at Stopped; parent of every worker's `abandon`.
    pub(crate) abandon: CancellationToken,
    /// Set by `cancel_running`: cut the drain short.
    pub(crate) cancel_now: CancellationToken,
    pub(crate) retries: Mutex<RetryRegistry<P>>,
    pub(crate) retry_waiting: AtomicU64,
    /// Notified whenever a job reaches an outcome or a submit gives up while
    /// shutdown is in progress: shutdown re-checks whether anything is left.
    pub(crate) progress: Notify,
    pub(crate) shutdown_started: AtomicBool,
    pub(crate) report: watch::Sender<Option<ShutdownReport<P>>>,
    pub(crate) not_finished: Mutex<Vec<NotFinished>>,
    pub(crate) unstarted: Mutex<Vec<UnstartedJob<P>>>,
}

impl<P: Send + 'static> Shared<P> {
    pub(crate) fn new(capacity: usize, config: Config<P>, recent_failures: usize) -> Self {
        Shared {
            queue: Queue::memory(capacity),
            config,
            state: AtomicU8::new(RUNNING),
            submits: SubmitCounters {
                gate: Gate::new(),
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            },
            general: Shard::default(),
            workers: Mutex::new(Vec::new()),
            target: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            failures: FailureLog::new(recent_failures),
            cancel: CancellationToken::new(),
            abandon: CancellationToken::new(),
            cancel_now: CancellationToken::new(),
            retries: Mutex::new(RetryRegistry {
                next_key: 0,
                waiting: HashMap::new(),
            }),
            retry_waiting: AtomicU64::new(0),
            progress: Notify::new(),
            shutdown_started: AtomicBool::new(false),
            report: watch::Sender::new(None),
            not_finished: Mutex::new(Vec::new()),
            unstarted: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn advance(&self, to: u8) {
        self.submits.gate.advance(to);
        self.state.fetch_max(to, Ordering::AcqRel);
    }

    /// Counts a submission in before it is pushed, and refuses it if the pool
    /// no longer takes jobs. Either shutdown's count includes this submission
    /// (and shutdown waits for its outcome), or the submission sees the pool
    /// closed: see `gate.rs`, checked under loom.
    pub(crate) fn admit(&self) -> bool {
        if self.submits.gate.admit() {
            true
        } else {
            self.refused();
            false
        }
    }

    /// Undoes `admit` for a submission whose push failed.
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
        if self.state() != RUNNING {
            self.progress.notify_one();
        }
    }

    pub(crate) fn accepted(&self) {
        self.submits.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Outcomes recorded so far, across all shards.
    pub(crate) fn terminal(&self) -> u64 {
        let workers: u64 = lock(&self.workers).iter().map(|w| w.shard.terminal()).sum();
        workers + self.general.terminal()
    }

    /// Nothing queued, nothing running, nothing waiting to retry, no submit in
    /// progress: every admitted job has its outcome.
    pub(crate) fn is_idle(&self) -> bool {
        let admitted = self.submits.gate.admitted();
        self.queue.is_empty() && self.terminal() >= admitted
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

    pub(crate) fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for w in lock(&self.workers).iter() {
            w.shard.add_to(&mut s);
            s.running += u64::from(w.slot.is_occupied());
        }
        self.general.add_to(&mut s);
        s.accepted = self.submits.accepted.load(Ordering::Relaxed);
        s.rejected = self.submits.rejected.load(Ordering::Relaxed);
        s.queued = self.queue.len() as u64;
        s.retry_waiting = self.retry_waiting.load(Ordering::Relaxed);
        s.workers = self.live.load(Ordering::Relaxed) as u64;
        s
    }

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
        outcome: Outcome<P>,
        reply: Option<Reply<P>>,
        started: Option<Instant>,
    ) {
        // The usual case, apart so that it is inlined into the worker: a job
        // that ran, while the pool runs, without an outcome hook. All the rest
        // would do is record its metrics, count it and answer its handle, in
        // that order.
        let kind = outcome.kind();
        if self.config.hook.is_none() && kind != OutcomeKind::Unstarted && self.state() == RUNNING {
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
        mut outcome: Outcome<P>,
        reply: Option<Reply<P>>,
        started: Option<Instant>,
    ) {
        let kind = outcome.kind();
        let shutting_down = self.state() != RUNNING;
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
        // The outcome is moved only where it goes somewhere (the hook, the
        // handle, the report): it is as large as a job, and a detached job
        // that succeeded only needs counting.
        if let Some(hook) = &self.config.hook {
            let completion = Completion {
                id,
                outcome,
                duration,
            };
            if catch_unwind(AssertUnwindSafe(|| hook(&completion))).is_err() {
                tracing::error!(target: "workpool", id = %completion.id, "outcome hook panicked");
            }
            outcome = completion.outcome;
        }
        if kind == OutcomeKind::Unstarted {
            let back = match reply {
                Some(r) => r.send(outcome).err(),
                None => Some(outcome),
            };
            if let Some(Outcome::Unstarted { job, attempts }) = back {
                lock(&self.unstarted).push(UnstartedJob { job, attempts });
            }
            shard.add(kind);
        } else {
            shard.add(kind);
            if let Some(r) = reply {
                // The caller may have dropped the handle: that is allowed.
                let _ = r.send(outcome);
            }
        }
        if shutting_down {
            self.progress.notify_one();
        }
    }

    /// Hands back an envelope whose job will not run (again).
    pub(crate) fn hand_back(&self, env: Envelope<P>) {
        let cancelled = env.is_cancelled();
        let (job, reply, attempts, started) = env.open();
        let id = job.id.clone();
        let outcome = if cancelled {
            Outcome::Cancelled { attempts }
        } else {
            Outcome::Unstarted { job, attempts }
        };
        self.finish(&self.general, id, outcome, reply, started);
    }

    /// Hands back everything still queued.
    pub(crate) fn hand_back_queued(&self) {
        while let Some(env) = self.queue.try_take() {
            self.hand_back(env);
        }
    }

    /// Hands back every job waiting for its retry delay.
    pub(crate) fn hand_back_retries(&self) {
        let waiting: Vec<_> = lock(&self.retries)
            .waiting
            .drain()
            .map(|(_, e)| e)
            .collect();
        let n = waiting.len() as u64;
        for env in waiting {
            self.hand_back(env);
        }
        self.retry_waiting.fetch_sub(n, Ordering::SeqCst);
    }

    /// Takes every running job out of its worker's slot as Abandoned. Workers
    /// that later come back with a result find their slot empty and drop it.
    pub(crate) fn abandon_running(&self) {
        let slots: Vec<_> = lock(&self.workers).iter().map(|w| w.slot.clone()).collect();
        for slot in slots {
            if let Some(f) = slot.take() {
                tracing::warn!(target: "workpool", id = %f.id, attempt = f.attempt, "job ignored cancellation past the grace period; abandoned");
                self.finish(
                    &self.general,
                    f.id,
                    Outcome::Abandoned {
                        attempts: f.attempt,
                    },
                    f.reply,
                    f.started,
                );
            }
        }
    }

    /// Parks a failed job for `delay`, then puts it back in the queue. It holds
    /// no worker while it waits; shutdown can take it from the registry.
    pub(crate) fn schedule_retry(self: &Arc<Self>, env: Envelope<P>, delay: Duration) {
        let job_cancel = env.reply.cancel_ref();
        let key = {
            let mut reg = lock(&self.retries);
            let key = reg.next_key;
            reg.next_key += 1;
            reg.waiting.insert(key, env);
            key
        };
        self.retry_waiting.fetch_add(1, Ordering::SeqCst);
        let shared = self.clone();
        tokio::spawn(async move { shared.retry_later(key, delay, job_cancel).await });
    }

    async fn retry_later(&self, key: u64, delay: Duration, job_cancel: Option<CancelRef>) {
        let job_cancelled = async {
            match &job_cancel {
                Some(t) => t.job_cancel().cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.cancel.cancelled() => {}
            _ = job_cancelled => {}
        }
        // Whoever removes the entry owns the job: if shutdown already handed
        // it back, there is nothing left to do.
        let Some(env) = lock(&self.retries).waiting.remove(&key) else {
            return;
        };
        if env.is_cancelled() || self.state() >= HANDING_BACK {
            self.hand_back(env);
        } else if let Err(PushFail::Closed(env) | PushFail::Full(env) | PushFail::Timeout(env)) =
            self.queue.push(env, None).await
        {
            self.hand_back(env);
        }
        // Decremented only once the job is queued or recorded, so that shutdown
        // never sees it nowhere.
        self.retry_waiting.fetch_sub(1, Ordering::SeqCst);
        if self.state() != RUNNING {
            self.progress.notify_one();
        }
    }
}

/// A job's outcome and duration, through the `metrics` facade.
#[cfg(feature = "metrics")]
fn record_metrics(kind: OutcomeKind, duration: std::time::Duration) {
    metrics::counter!("workpool_jobs_total", "outcome" => kind.as_str()).increment(1);
    metrics::histogram!("workpool_job_duration_seconds").record(duration.as_secs_f64());
}
