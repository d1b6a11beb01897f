//! Workers: long-lived tasks that take one job at a time from the queue, run
//! one attempt, and always end it with exactly one result: an outcome, a retry,
//! or nothing when shutdown already abandoned the job.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::time::Instant;

use crate::context::{JobContext, WorkerSignals};
use crate::handler::{BoxError, Handler, is_permanent};
use crate::job::Job;
use crate::outcome::{Outcome, OutcomeKind};
use crate::queue::{Envelope, Retried, Wait};
use crate::reply::Reply;
use crate::shared::{HANDING_BACK, InFlight, Shared, Slot, WorkerEntry, lock};
use crate::stats::Shard;

/// How one attempt's call came back.
pub(crate) enum Attempt {
    Returned(Result<(), BoxError>),
    Panicked(String),
}

/// How a handler is run: on the worker's task (async) or on a thread of its
/// own (blocking). `Local` is per-worker state, e.g. that thread.
///
/// `start` returns the attempt's future and the worker polls it itself,
/// catching a panic in `start` and in every poll: for an async handler that
/// future is the handler's own, with no layer in between (a layer is one more
/// copy of the job per attempt).
pub(crate) trait Exec<P>: Send + Sync + 'static {
    type Local: Send + 'static;
    /// What the attempt's future returns; [`Exec::attempt`] reads it.
    type Out;
    fn local(&self) -> Self::Local;
    fn start<'a>(
        &'a self,
        local: &'a mut Self::Local,
        job: Job<P>,
        ctx: JobContext,
    ) -> impl Future<Output = Self::Out> + Send + 'a;
    fn attempt(out: Self::Out) -> Attempt;
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs an async handler inline on the worker's task: no spawn, no box.
pub(crate) struct AsyncExec<H>(pub(crate) H);

impl<P: Send + 'static, H: Handler<P>> Exec<P> for AsyncExec<H> {
    type Local = ();
    type Out = Result<(), H::Error>;

    fn local(&self) {}

    fn start<'a>(
        &'a self,
        _: &'a mut (),
        job: Job<P>,
        ctx: JobContext,
    ) -> impl Future<Output = Self::Out> + Send + 'a {
        self.0.call(job, ctx)
    }

    fn attempt(out: Self::Out) -> Attempt {
        Attempt::Returned(out.map_err(Into::into))
    }
}

/// Runs a blocking handler on a plain thread owned by the worker.
///
/// Not `spawn_blocking`: dropping a tokio runtime waits for blocking tasks, so
/// a handler stuck in a loop there would keep `main` from returning. A plain
/// thread does not hold the process: when `main` returns, it is gone.
///
/// If an attempt is given up on (timeout or shutdown), the worker's future is
/// dropped and with it the thread's handle; the thread finishes that call in
/// the background, sees its channel closed and exits. The next attempt starts
/// a fresh thread, so the worker goes on.
pub(crate) struct BlockingExec<F>(pub(crate) Arc<F>);

type BlockingJob<P> = (Job<P>, JobContext);

pub(crate) struct BlockingThread<P> {
    jobs: std::sync::mpsc::Sender<BlockingJob<P>>,
    results: tokio::sync::mpsc::Receiver<Attempt>,
}

fn start_thread<P, F, E>(f: &Arc<F>) -> std::io::Result<BlockingThread<P>>
where
    P: Send + 'static,
    F: Fn(Job<P>, JobContext) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    let (jobs, job_rx) = std::sync::mpsc::channel::<BlockingJob<P>>();
    let (result_tx, results) = tokio::sync::mpsc::channel(1);
    let f = f.clone();
    std::thread::Builder::new()
        .name("workpool-blocking".into())
        .spawn(move || {
            while let Ok((job, ctx)) = job_rx.recv() {
                let attempt = match catch_unwind(AssertUnwindSafe(|| f(job, ctx))) {
                    Ok(r) => Attempt::Returned(r.map_err(Into::into)),
                    Err(p) => Attempt::Panicked(panic_message(&*p)),
                };
                if result_tx.blocking_send(attempt).is_err() {
                    break;
                }
            }
        })?;
    Ok(BlockingThread { jobs, results })
}

impl<P, F, E> Exec<P> for BlockingExec<F>
where
    P: Send + 'static,
    F: Fn(Job<P>, JobContext) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    type Local = Option<BlockingThread<P>>;
    type Out = Attempt;

    fn local(&self) -> Self::Local {
        None
    }

    fn attempt(out: Attempt) -> Attempt {
        out
    }

    async fn start(&self, local: &mut Self::Local, job: Job<P>, ctx: JobContext) -> Attempt {
        let mut thread = match local.take() {
            Some(t) => t,
            None => match start_thread(&self.0) {
                Ok(t) => t,
                Err(e) => {
                    return Attempt::Returned(Err(format!(
                        "could not start a thread for a blocking handler: {e}"
                    )
                    .into()));
                }
            },
        };
        if thread.jobs.send((job, ctx)).is_err() {
            return Attempt::Panicked("the blocking handler's thread exited".into());
        }
        match thread.results.recv().await {
            Some(attempt) => {
                // Only a thread that answered goes back for the next job.
                *local = Some(thread);
                attempt
            }
            None => Attempt::Panicked("the blocking handler's thread exited".into()),
        }
    }
}

/// Starts one worker on `rt`.
pub(crate) fn spawn<P, X>(shared: &Arc<Shared<P>>, exec: &Arc<X>, rt: &tokio::runtime::Handle)
where
    P: Send + 'static,
    X: Exec<P>,
{
    let shard = Arc::new(Shard::single_writer());
    let slot: Arc<Slot<P>> = Arc::new(Slot::new());
    let number = {
        let mut workers = lock(&shared.workers);
        workers.push(WorkerEntry {
            shard: shard.clone(),
            slot: slot.clone(),
        });
        workers.len()
    };
    let signals = Arc::new(WorkerSignals {
        worker: number,
        cancel: shared.cancel.child_token(),
        abandon: shared.abandon.child_token(),
    });
    shared
        .live
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let worker = Worker {
        shared: shared.clone(),
        local: exec.local(),
        exec: exec.clone(),
        shard,
        slot,
        signals,
        refill_after: refill_after(shared.queue.capacity(), rt.metrics().num_workers()),
        until_yield: JOBS_PER_YIELD,
    };
    rt.spawn(worker.run());
}

struct Worker<P, X: Exec<P>> {
    shared: Arc<Shared<P>>,
    exec: Arc<X>,
    local: X::Local,
    shard: Arc<Shard>,
    slot: Arc<Slot<P>>,
    signals: Arc<WorkerSignals>,
    /// See [`refill_after`].
    refill_after: u32,
    /// Jobs left before this worker yields its thread: at most
    /// [`JOBS_PER_YIELD`], at most [`refill_after`] once a take woke a
    /// waiting submitter.
    until_yield: u32,
}

/// A worker whose queue never runs dry still yields its thread after this
/// many jobs: to the submitter, to other tasks (`tests/fairness.rs`). Tokio's
/// task budget is 128 units, and a tokio channel's receiver spends one per
/// message; counting here costs a decrement where spending tokio's budget
/// costs a thread-local lookup (about 45 instructions per job, measured). A
/// handler that uses tokio's resources still spends the budget itself.
const JOBS_PER_YIELD: u32 = 128;

/// How many of its own takes a worker that woke a waiting submitter makes
/// before it yields its thread to it: the queue's capacity over twice the
/// runtime's threads (at least 1, at most [`JOBS_PER_YIELD`]). While the
/// worker holds its thread no other worker of that thread takes, so with each
/// other thread taking as fast, the queue is then down to about half.
fn refill_after(capacity: usize, threads: usize) -> u32 {
    (capacity / (2 * threads.max(1))).clamp(1, JOBS_PER_YIELD as usize) as u32
}

/// What an attempt's end means, before retries are considered.
enum Verdict {
    Succeeded,
    Cancelled,
    Failed(BoxError),
    Panicked(String),
    TimedOut(String),
}

impl<P: Send + 'static, X: Exec<P>> Worker<P, X> {
    async fn run(mut self) {
        // The last wait ended ready: the next take passes the wake-up on.
        let mut waited = false;
        loop {
            // The one place a worker yields its thread between jobs.
            self.until_yield -= 1;
            if self.until_yield == 0 {
                self.until_yield = JOBS_PER_YIELD;
                tokio::task::yield_now().await;
            }
            if self.shared.try_retire() {
                // Woken for an item it will not take: the next worker takes it.
                if waited {
                    self.shared.queue.pass_on();
                }
                return;
            }
            let shared = &*self.shared;
            // Fast path without building the waiting future: under load the
            // queue is rarely empty.
            let mut woke = false;
            let Ok(env) = shared.queue.try_take_waking(&mut woke) else {
                // Then round again: a wake-up counts towards the next yield,
                // and the retire check comes first.
                match shared.queue.wait(|| shared.over_target()).await {
                    Wait::Ready => {
                        waited = true;
                        continue;
                    }
                    Wait::Interrupted => continue,
                    Wait::Closed => {
                        shared
                            .live
                            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                        return;
                    }
                }
            };
            if waited {
                // Woken (or found an item at once): if more are left, the
                // next idle worker is woken, as a push would have done had
                // this worker not been woken already (`Queue::pass_on`).
                waited = false;
                shared.queue.pass_on();
            }
            // A submitter this worker woke (its take made room) sits in this
            // thread's LIFO slot, which other threads cannot steal: it runs
            // only when this worker yields. So yield once the queue is down to
            // about half ([`refill_after`]), and the submitter refills it
            // before it runs dry (`tests/fairness.rs`): one yield per refill,
            // not per job. Counted rather than read off the queue: its length
            // is the submitter's tail, a cache line that moves between cores
            // with every push (20 % of the worker's samples at 1 µs jobs,
            // perf).
            if woke {
                self.until_yield = self.until_yield.min(self.refill_after);
            }
            // One attempt of this job, written inline rather than as an
            // `async fn` of its own: that would move the envelope into one
            // more future per job (measured: about 5 % of the instructions).
            // `break 'job` ends the attempt.
            'job: {
                // `Envelope::open`, written out: taken apart in place, the job
                // is not moved through a returned tuple (about 50 instructions
                // per job, measured).
                let Envelope {
                    job,
                    reply,
                    retried,
                } = env;
                let mut reply = reply.into_option();
                let (attempts, started) = Retried::so_far(retried);
                let attempt = attempts + 1;
                let job_cancel = reply.as_ref().and_then(Reply::cancel_ref);
                if job_cancel
                    .as_ref()
                    .is_some_and(|t| t.job_cancel().is_cancelled())
                {
                    // Cancelled while it waited: it never runs.
                    let id = job.id.clone();
                    self.shared.finish(
                        &self.shard,
                        id,
                        Outcome::Cancelled { attempts },
                        reply,
                        started,
                    );
                    break 'job;
                }
                let started = match started {
                    None if self.shared.config.timed => Some(Instant::now()),
                    s => s,
                };

                // Claim the slot. The state is read under the slot's lock, and shutdown
                // moves the state forward before it empties the slots: so either
                // shutdown finds this job here, or this worker sees it must not start.
                // The closure takes the reply through a reference: captured by
                // value, it was copied into the closure together with the next
                // field and read back in one wider load (perf).
                let in_flight = || InFlight {
                    id: job.id.clone(),
                    attempt,
                    reply: reply.take(),
                    started,
                };
                if let Err(refused) = self
                    .slot
                    .claim(|| self.shared.state() >= HANDING_BACK, in_flight)
                {
                    let id = job.id.clone();
                    let outcome = Outcome::Unstarted { job, attempts };
                    self.shared
                        .finish(&self.shard, id, outcome, refused.reply, refused.started);
                    break 'job;
                }

                let config = &self.shared.config;
                let (policy, cloner) = match &job.retry {
                    Some(own) => (Some(own.policy), Some(own.cloner)),
                    None => (config.retry, config.cloner),
                };
                let timeout = job.timeout.or(config.default_timeout);
                // Only a job with a timeout reads the clock and sets a timer. A
                // timeout past what the clock can hold is none.
                let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
                // A copy is kept only when another attempt may follow; the job itself
                // runs, so without a copy it is not moved again.
                let kept = match (policy, cloner) {
                    (Some(p), Some(clone)) if p.max_attempts() > attempt => {
                        Some((job.try_clone_with(clone), p))
                    }
                    _ => None,
                };
                let ctx = JobContext::new(
                    job.id.clone(),
                    attempt,
                    deadline,
                    self.signals.clone(),
                    job_cancel,
                );
                let span = tracing::info_span!(target: "workpool", "job", id = %job.id, attempt);

                // The attempt races the abandon signal and, for a job with a timeout,
                // the deadline + grace timer. Both are built only if the handler does
                // not finish on its first poll: a quick job never touches them.
                // A block of its own, so that the handler's future is dropped as soon
                // as the race is decided, before the outcome is recorded.
                let grace = config.grace;
                let signals = &self.signals;
                let result = {
                    // Entered around the call and each poll, as `Instrument` would,
                    // but only when a subscriber wants the span: a disabled one costs
                    // nothing per poll.
                    let traced = !span.is_disabled();
                    let entered = traced.then(|| span.enter());
                    // The call itself may panic before it returns a future. The
                    // future is written straight into its pinned place (it holds the
                    // job: every move of it is a copy).
                    let (exec, local) = (&self.exec, &mut self.local);
                    let mut run = pin!(None);
                    let mut early = catch_unwind(AssertUnwindSafe(|| {
                        run.set(Some(exec.start(local, job, ctx)));
                    }))
                    .err()
                    .map(|p| panic_message(&*p));
                    drop(entered);
                    let mut abandon = pin!(None);
                    let mut timer = pin!(None);
                    poll_fn(|cx| {
                        let Some(fut) = run.as_mut().as_pin_mut() else {
                            let message = early.take().unwrap_or_default();
                            return Poll::Ready(Some(Ok(Attempt::Panicked(message))));
                        };
                        let entered = traced.then(|| span.enter());
                        // A panic in any poll ends this job only.
                        let polled = catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
                        drop(entered);
                        match polled {
                            Ok(Poll::Ready(out)) => return Poll::Ready(Some(Ok(X::attempt(out)))),
                            Err(p) => {
                                return Poll::Ready(Some(Ok(Attempt::Panicked(panic_message(
                                    &*p,
                                )))));
                            }
                            Ok(Poll::Pending) => {}
                        }
                        if abandon.is_none() {
                            abandon.set(Some(signals.abandon.cancelled()));
                        }
                        if let Some(a) = abandon.as_mut().as_pin_mut()
                            && a.poll(cx).is_ready()
                        {
                            return Poll::Ready(None);
                        }
                        if let Some(d) = deadline {
                            // When the timer gives up on the job (none if past
                            // the clock), worked out only here: a job that ends
                            // on its first poll never needs it.
                            if timer.is_none()
                                && let Some(give_up) = d.checked_add(grace)
                            {
                                timer.set(Some(tokio::time::sleep_until(give_up)));
                            }
                            if let Some(t) = timer.as_mut().as_pin_mut()
                                && t.poll(cx).is_ready()
                            {
                                return Poll::Ready(Some(Err(())));
                            }
                        }
                        Poll::Pending
                    })
                    .await
                };
                // None: shutdown abandoned this job and already recorded it.
                let Some(result) = result else {
                    break 'job;
                };

                // Take the slot back. Empty means shutdown abandoned the job while its
                // result was on the way; that outcome stands.
                let Some(InFlight {
                    id,
                    attempt,
                    reply,
                    started,
                }) = self.slot.take()
                else {
                    break 'job;
                };

                let deadline_passed = || deadline.is_some_and(|d| Instant::now() >= d);
                let verdict = match result {
                    Ok(Attempt::Returned(Ok(()))) => Verdict::Succeeded,
                    Ok(Attempt::Returned(Err(e))) => {
                        if deadline_passed() {
                            Verdict::TimedOut(format!(
                                "timed out after {:?}: {e}",
                                timeout.unwrap_or_default()
                            ))
                        } else if reply.as_ref().is_some_and(Reply::is_cancelled)
                            || self.signals.cancel.is_cancelled()
                        {
                            Verdict::Cancelled
                        } else {
                            Verdict::Failed(e)
                        }
                    }
                    Ok(Attempt::Panicked(m)) => Verdict::Panicked(m),
                    Err(()) => Verdict::TimedOut(format!(
                        "timed out after {:?} and did not stop within the grace period",
                        timeout.unwrap_or_default()
                    )),
                };

                let shared = &self.shared;
                let (outcome, retryable) = match verdict {
                    Verdict::Succeeded => (Outcome::Succeeded { attempts: attempt }, false),
                    Verdict::Cancelled => (Outcome::Cancelled { attempts: attempt }, false),
                    Verdict::Failed(error) => {
                        shared.failures.record(
                            &id,
                            attempt,
                            OutcomeKind::Failed,
                            error.to_string(),
                        );
                        let retryable = !is_permanent(&error);
                        (
                            Outcome::Failed {
                                error,
                                attempts: attempt,
                            },
                            retryable,
                        )
                    }
                    Verdict::Panicked(message) => {
                        shared.failures.record(
                            &id,
                            attempt,
                            OutcomeKind::Panicked,
                            message.clone(),
                        );
                        let retryable = policy.is_some_and(|p| p.retries_panics());
                        (
                            Outcome::Panicked {
                                message,
                                attempts: attempt,
                            },
                            retryable,
                        )
                    }
                    Verdict::TimedOut(text) => {
                        shared
                            .failures
                            .record(&id, attempt, OutcomeKind::TimedOut, text);
                        let retryable = policy.is_some_and(|p| p.retries_timeouts());
                        (Outcome::TimedOut { attempts: attempt }, retryable)
                    }
                };
                // Matched by value only when there is a copy: the usual case
                // moves nothing here.
                match kept {
                    Some((job, policy))
                        if retryable && !reply.as_ref().is_some_and(Reply::is_cancelled) =>
                    {
                        let env = Envelope::retry(job, reply, attempt, started);
                        if shared.state() >= HANDING_BACK {
                            // Shutting down: the retry comes back to the caller instead.
                            shared.hand_back(env);
                        } else {
                            self.shard.add_retry();
                            shared.schedule_retry(env, policy.delay(attempt));
                        }
                    }
                    _ => shared.finish(&self.shard, id, outcome, reply, started),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_yields_to_a_woken_submitter_at_about_half_a_queue() {
        // 2 threads take from a queue of 100: 25 takes each leave about 50.
        assert_eq!(refill_after(100, 2), 25);
        // One thread (current-thread runtime): half the queue is its own.
        assert_eq!(refill_after(100, 1), 50);
        // A queue of one place, or many threads: at once.
        assert_eq!(refill_after(1, 2), 1);
        assert_eq!(refill_after(100, 64), 1);
        // A large queue: the every-128-jobs yield comes first anyway.
        assert_eq!(refill_after(1_000_000, 2), JOBS_PER_YIELD);
    }
}
