//! Workers: long-lived tasks that claim one job at a time from the store, run
//! one attempt, and end it with exactly one result: an outcome, a retry, or
//! nothing when shutdown already abandoned the job.
//!
//! A worker's loop is claim → [`Worker::start`] → [`attempt::run`] →
//! [`Worker::end`]. Only a claim that finds nothing and the attempt await;
//! starting and ending are plain functions.

pub(crate) mod attempt;
pub(crate) mod exec;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::attempt::{Ended, Limits, Places};
use self::exec::{Attempt, Exec};
use crate::context::{JobContext, WorkerSignals};
use crate::core::counters::Shard;
use crate::core::reply::Reply;
use crate::core::slot::Slot;
use crate::core::{Core, InFlight, WorkerSlot};
use crate::handler::{BoxError, is_permanent};
use crate::job::{Job, JobId};
use crate::outcome::{Outcome, OutcomeKind};
use crate::retry::RetryPolicy;
use crate::store::{Claim, Queued, Store, Ticket};

/// Starts one worker on `rt`.
pub(crate) fn spawn<P, T, S, X>(
    core: &Arc<Core<P, T, S>>,
    exec: &Arc<X>,
    rt: &tokio::runtime::Handle,
) where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
    X: Exec<P, Output = T>,
{
    let shard = Arc::new(Shard::single_writer());
    let slot = Arc::new(Slot::new());
    let number = core.add_worker(shard.clone(), slot.clone());
    let signals = Arc::new(WorkerSignals {
        worker: number,
        cancel: core.signals().cancel.child_token(),
        abandon: core.signals().abandon.child_token(),
    });
    let worker = Worker {
        claimer: core.store().claimer(),
        core: core.clone(),
        local: exec.local(),
        exec: exec.clone(),
        shard,
        slot,
        signals,
        plan: Plan::none(),
    };
    rt.spawn(worker.run());
}

struct Worker<P, T, S: Store<P>, X: Exec<P>> {
    core: Arc<Core<P, T, S>>,
    exec: Arc<X>,
    local: X::Local,
    claimer: S::Claimer,
    shard: Arc<Shard>,
    slot: Arc<WorkerSlot<P, T>>,
    signals: Arc<WorkerSignals>,
    /// The running attempt's plan, set by `start`, read by `end`.
    plan: Plan<P>,
}

/// What the end of an attempt needs to know about how it was started.
struct Plan<P> {
    /// A copy of the job and the policy, when another attempt may follow.
    kept: Option<(Job<P>, RetryPolicy)>,
    policy: Option<RetryPolicy>,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    grace: Duration,
    /// The store's cancel signal of a job without a handle, if it has one.
    cancel: Option<crate::cancel::CancelRef>,
}

impl<P> Plan<P> {
    fn none() -> Self {
        Plan {
            kept: None,
            policy: None,
            timeout: None,
            deadline: None,
            grace: Duration::ZERO,
            cancel: None,
        }
    }
}

/// What `start` decided for a claimed job.
enum Start<P, T> {
    /// Run it, with this context.
    Run(JobContext),
    /// It already has its outcome (cancelled while it waited).
    Settled,
    /// The pool no longer starts jobs: release it, with its reply.
    Refused(Option<Reply<P, T>>),
}

impl<P, T, S, X> Worker<P, T, S, X>
where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
    X: Exec<P, Output = T>,
{
    async fn run(mut self) {
        loop {
            if self.core.store().must_yield(&mut self.claimer) {
                tokio::task::yield_now().await;
            }
            if self.core.try_retire() {
                self.core.store().leave(&mut self.claimer);
                return;
            }
            let core = &*self.core;
            let queued = match core.store().try_claim(&mut self.claimer) {
                Some(q) => q,
                None => match core
                    .store()
                    .claim(&mut self.claimer, || core.over_target())
                    .await
                {
                    Claim::Job(q) => q,
                    Claim::Interrupted => continue,
                    Claim::Closed => {
                        core.worker_exited();
                        return;
                    }
                },
            };
            let ctx = match self.start(&queued) {
                Start::Run(ctx) => ctx,
                Start::Settled => {
                    self.core.store().skipped(&queued);
                    continue;
                }
                Start::Refused(reply) => {
                    let (attempts, started) = (queued.attempts(), queued.started());
                    self.release(queued.job, queued.ticket, attempts, reply, started);
                    continue;
                }
            };
            let limits = Limits {
                deadline: self.plan.deadline,
                grace: self.plan.grace,
            };
            // A block of its own: the places (and the handler's borrow of
            // this worker) end with the attempt.
            let ended = {
                let span = tracing::info_span!(target: "workpool", "job", id = %ctx.id(), attempt = ctx.attempt());
                let (exec, local) = (&*self.exec, &mut self.local);
                let mut places = Places {
                    run: pin!(None),
                    timer: pin!(None),
                    abandoned: pin!(None),
                };
                let early = {
                    let _entered = (!span.is_disabled()).then(|| span.enter());
                    attempt::call(places.run.as_mut(), || exec.start(local, queued.job, ctx))
                };
                let abandon = &self.signals.abandon;
                attempt::race(places, early, X::attempt, limits, abandon, &span).await
            };
            self.end(ended);
        }
    }

    /// Takes a claimed job into this worker's slot and prepares its attempt
    /// (the plan goes to `self.plan`).
    #[inline]
    fn start(&mut self, queued: &Queued<P>) -> Start<P, T> {
        let core = &*self.core;
        let (attempts, started) = (queued.attempts(), queued.started());
        let (job, ticket) = (&queued.job, queued.ticket);
        // A job with a handle whose reply is gone was cancelled while it
        // waited, and already has its outcome.
        let mut reply = match ticket {
            None => None,
            Some(_) => match core.replies().take(ticket) {
                Some(waiting) => Some(waiting.reply),
                None => return Start::Settled,
            },
        };
        if reply.as_ref().is_some_and(Reply::is_cancelled) {
            let outcome = Outcome::Cancelled {
                error: None,
                attempts,
            };
            core.finish(&self.shard, job.id().clone(), outcome, reply, started);
            return Start::Settled;
        }
        // A durable store can also cancel a running job by ID: its signal
        // for a job without a handle, or passed on to the handle's.
        let reply_cancel = reply.as_ref().and_then(Reply::cancel_ref);
        self.plan.cancel = core.store().cancel_ref(queued, reply_cancel.as_ref());
        let job_cancel = reply_cancel.or_else(|| self.plan.cancel.clone());
        let started = match started {
            None if core.config().timed => Some(Instant::now()),
            s => s,
        };
        let attempt = attempts + 1;

        // The state is read under the slot's lock, and shutdown moves the state
        // forward before it empties the slots: so either shutdown finds this
        // job here, or this worker sees it must not start.
        let in_flight = || InFlight {
            id: job.id().clone(),
            attempt,
            ticket,
            reply: reply.take(),
            started,
        };
        if let Err(refused) = self.slot.claim(|| core.refuses_starts(), in_flight) {
            return Start::Refused(refused.reply);
        }

        let config = core.config();
        let (policy, cloner) = match &job.retry {
            Some(own) => (Some(own.policy), Some(own.cloner)),
            None => (config.retry, config.cloner),
        };
        let timeout = job.timeout().or(config.default_timeout);
        // Only a job with a timeout reads the clock. A timeout past what the
        // clock can hold is none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // A copy is made only when another attempt may follow. (`end` took
        // the last one: the place is empty.)
        if let (Some(p), Some(clone)) = (policy, cloner)
            && p.max_attempts() > attempt
        {
            self.plan.kept = Some((job.try_clone_with(clone), p));
        }
        self.plan.policy = policy;
        self.plan.timeout = timeout;
        self.plan.deadline = deadline;
        self.plan.grace = config.grace;
        Start::Run(JobContext::new(
            job.id().clone(),
            attempt,
            deadline,
            self.signals.clone(),
            job_cancel,
        ))
    }

    /// Ends an attempt: takes the job back out of the slot, decides its
    /// outcome, and records it or puts the job back to retry.
    #[inline]
    fn end(&mut self, ended: Ended<T>) {
        // Taken only when there is one: moving the empty `Option` out costs as
        // much as moving a job.
        let kept = match self.plan.kept {
            Some(_) => self.plan.kept.take(),
            None => None,
        };
        // Abandoned: shutdown took the job out of the slot and recorded it.
        if matches!(ended, Ended::Abandoned) {
            return;
        }
        // Empty: shutdown abandoned the job while its result was on the way;
        // that outcome stands.
        let Some(InFlight {
            id,
            attempt,
            ticket,
            reply,
            started,
        }) = self.slot.take()
        else {
            return;
        };
        let cancelled = reply.as_ref().is_some_and(Reply::is_cancelled)
            || self
                .plan
                .cancel
                .take()
                .is_some_and(|c| c.job_cancel().is_cancelled());
        let (outcome, retryable) = self.verdict(ended, &id, attempt, cancelled);
        let core = &*self.core;
        // What a durable store records of a failed attempt.
        let error = || describe(&outcome);
        match kept {
            Some((job, policy)) if retryable && !cancelled => {
                if core.refuses_starts() {
                    self.release(job, ticket, attempt, reply, started);
                } else {
                    self.shard.add_retry();
                    let again = Queued::again(job, ticket, attempt, started);
                    core.retry(again, reply, attempt, policy.delay(attempt), error);
                }
            }
            _ => {
                // Asked only by a durable store: whether the pool's shutdown
                // (not the job's handle) stopped it.
                let interrupted = || self.signals.cancel.is_cancelled() && !cancelled;
                core.store()
                    .complete(&id, attempt, outcome.kind(), error, interrupted);
                core.finish(&self.shard, id, outcome, reply, started);
            }
        }
    }

    /// A job that will not run now: back to the store, or, if the store
    /// cannot keep it, back to the caller.
    fn release(
        &self,
        job: Job<P>,
        ticket: Ticket,
        attempts: u32,
        reply: Option<Reply<P, T>>,
        started: Option<Instant>,
    ) {
        let core = &*self.core;
        let queued = Queued::again(job, ticket, attempts, started);
        if let Some(back) = core.store().release(queued) {
            core.give_back(&self.shard, back.job, attempts, reply, started);
        }
    }

    /// What an attempt's end means, and whether another attempt may follow.
    /// A failed attempt is recorded in the recent failures.
    #[inline]
    fn verdict(
        &self,
        ended: Ended<T>,
        id: &JobId,
        attempt: u32,
        cancelled: bool,
    ) -> (Outcome<P, T>, bool) {
        let (core, plan) = (&*self.core, &self.plan);
        let failed = |kind: OutcomeKind, text: String| core.record_failure(id, attempt, kind, text);
        let timeout = plan.timeout.unwrap_or_default();
        let retries_timeouts = plan.policy.is_some_and(|p| p.retries_timeouts());
        let attempts = attempt;
        match ended {
            Ended::Returned(Attempt::Returned(Ok(value))) => {
                (Outcome::Succeeded { value, attempts }, false)
            }
            Ended::Returned(Attempt::Returned(Err(error))) => {
                let past_deadline = plan.deadline.is_some_and(|d| Instant::now() >= d);
                if is_permanent(&error) {
                    // The handler's word wins over the clock: never retried.
                    failed(OutcomeKind::Failed, error.to_string());
                    (Outcome::Failed { error, attempts }, false)
                } else if past_deadline {
                    failed(OutcomeKind::TimedOut, timed_out_text(timeout, &error));
                    let error = Some(error);
                    (Outcome::TimedOut { error, attempts }, retries_timeouts)
                } else if cancelled || self.signals.cancel.is_cancelled() {
                    let error = Some(error);
                    (Outcome::Cancelled { error, attempts }, false)
                } else {
                    failed(OutcomeKind::Failed, error.to_string());
                    (Outcome::Failed { error, attempts }, true)
                }
            }
            Ended::Returned(Attempt::Panicked(message)) => {
                failed(OutcomeKind::Panicked, message.clone());
                let retryable = plan.policy.is_some_and(|p| p.retries_panics());
                (Outcome::Panicked { message, attempts }, retryable)
            }
            Ended::GaveUp | Ended::Abandoned => {
                failed(
                    OutcomeKind::TimedOut,
                    format!("timed out after {timeout:?} and did not stop within the grace period"),
                );
                let error = None;
                (Outcome::TimedOut { error, attempts }, retries_timeouts)
            }
        }
    }
}

/// An attempt's error as text, for a durable store.
fn describe<P, T>(outcome: &Outcome<P, T>) -> Option<String> {
    match outcome {
        Outcome::Failed { error, .. } => Some(error.to_string()),
        Outcome::TimedOut { error, .. } | Outcome::Cancelled { error, .. } => Some(
            error
                .as_ref()
                .map_or_else(|| outcome.kind().as_str().to_string(), |e| e.to_string()),
        ),
        Outcome::Panicked { message, .. } => Some(format!("panicked: {message}")),
        _ => None,
    }
}

fn timed_out_text(timeout: Duration, error: &BoxError) -> String {
    format!("timed out after {timeout:?}: {error}")
}
