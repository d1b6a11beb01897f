//! Shutdown: the lifecycle Running → Draining → Cancelling → Stopped, run once
//! by a coordinator task, and the report every caller gets.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::job::{Job, JobId};
use crate::outcome::OutcomeKind;
use crate::shared::{CANCELLING, DRAINING, HANDING_BACK, STOPPED, Shared, after, lock};
use crate::stats::Stats;

/// How long shutdown waits, after Stopped, for outcomes already on their way
/// (a retry task handing its job back, a submit being refused). These paths
/// never wait on user code, so this is a safety bound, not a delay.
const STRAGGLER_BOUND: Duration = Duration::from_secs(1);

/// A job that did not run to an end of its own during shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFinished {
    /// The job's ID.
    pub id: JobId,
    /// Why: `Cancelled`, `Unstarted` or `Abandoned`.
    pub outcome: OutcomeKind,
    /// Attempts made.
    pub attempts: u32,
}

/// A job handed back unstarted, with the attempts it had already made.
pub struct UnstartedJob<P = Bytes> {
    /// The job, as submitted.
    pub job: Job<P>,
    /// Attempts already made (non-zero if it was waiting to retry).
    pub attempts: u32,
}

impl<P> fmt::Debug for UnstartedJob<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnstartedJob")
            .field("job", &self.job)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// What shutdown did: counts per outcome, the jobs that did not finish and
/// why, the unstarted jobs themselves, and the time it took.
///
/// Every caller of shutdown gets the same report (it is a cheap clone). The
/// unstarted jobs can be taken once, by whichever caller asks first.
/// Unstarted jobs whose caller still held a [`JobHandle`](crate::JobHandle)
/// went back through the handle instead; their IDs are still listed in
/// [`not_finished`](Self::not_finished).
pub struct ShutdownReport<P = Bytes> {
    inner: Arc<ReportInner<P>>,
}

struct ReportInner<P> {
    stats: Stats,
    not_finished: Vec<NotFinished>,
    unstarted: Mutex<Vec<UnstartedJob<P>>>,
    elapsed: Duration,
    drained: bool,
}

impl<P> Clone for ShutdownReport<P> {
    fn clone(&self) -> Self {
        ShutdownReport {
            inner: self.inner.clone(),
        }
    }
}

impl<P> ShutdownReport<P> {
    /// The pool's counters once everything had an outcome; over the pool's
    /// whole life, not only the shutdown.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The jobs that were cancelled, handed back or abandoned during shutdown,
    /// in the order that happened.
    pub fn not_finished(&self) -> &[NotFinished] {
        &self.inner.not_finished
    }

    /// The IDs of the jobs that ended with `kind` during shutdown.
    pub fn ids(&self, kind: OutcomeKind) -> Vec<JobId> {
        self.inner
            .not_finished
            .iter()
            .filter(|n| n.outcome == kind)
            .map(|n| n.id.clone())
            .collect()
    }

    /// Takes the unstarted jobs (those without a live handle). The first call
    /// gets them; later calls get an empty list.
    pub fn take_unstarted(&self) -> Vec<UnstartedJob<P>> {
        std::mem::take(&mut *lock(&self.inner.unstarted))
    }

    /// Time from the shutdown call to the report.
    pub fn elapsed(&self) -> Duration {
        self.inner.elapsed
    }

    /// Whether queued and running work finished before the drain timeout (no
    /// job had to be cancelled, handed back or abandoned by shutdown).
    pub fn is_clean(&self) -> bool {
        self.inner.drained && self.inner.not_finished.is_empty()
    }
}

impl<P> fmt::Debug for ShutdownReport<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownReport")
            .field("stats", &self.inner.stats)
            .field("not_finished", &self.inner.not_finished)
            .field("elapsed", &self.inner.elapsed)
            .finish_non_exhaustive()
    }
}

/// One line: `shutdown in 1.02s: 5 succeeded, 0 failed, ...`.
impl<P> fmt::Display for ShutdownReport<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shutdown in {:.2?}:", self.inner.elapsed)?;
        for (i, kind) in OutcomeKind::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(
                f,
                "{sep} {} {}",
                self.inner.stats.count(*kind),
                kind.as_str().replace('_', " ")
            )?;
        }
        Ok(())
    }
}

/// Starts the shutdown once (later calls join it) and waits for the report.
pub(crate) async fn shutdown<P: Send + 'static>(
    shared: &Arc<Shared<P>>,
    drain: bool,
    timeout: Duration,
) -> ShutdownReport<P> {
    let mut rx = shared.report.subscribe();
    if !shared
        .shutdown_started
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        // A task of its own: if the caller stops waiting, shutdown goes on.
        let shared = shared.clone();
        tokio::spawn(async move {
            let report = coordinate(&shared, drain, timeout).await;
            shared.report.send_replace(Some(report));
        });
    }
    loop {
        if let Some(report) = rx.borrow_and_update().as_ref() {
            return report.clone();
        }
        // The sender lives in `shared`, which we hold: `changed` cannot fail.
        let _ = rx.changed().await;
    }
}

async fn coordinate<P: Send + 'static>(
    shared: &Arc<Shared<P>>,
    drain: bool,
    timeout: Duration,
) -> ShutdownReport<P> {
    let began = Instant::now();
    tracing::info!(target: "workpool", ?timeout, drain, "shutdown started");

    // 1. Draining: refuse every new submission (the job goes back inside the
    //    error). Without drain, queued jobs and jobs waiting to retry come back
    //    now, and workers hand back whatever they take from here on.
    shared.advance(if drain { DRAINING } else { HANDING_BACK });
    if !drain {
        shared.hand_back_queued();
        shared.hand_back_retries();
    }

    // 2. Wait for the queue, retries and running jobs to finish, until the
    //    timeout, or until `cancel_running` cuts the wait short.
    let drained = wait_idle(shared, after(began, timeout), Some(&shared.cancel_now)).await;

    // 3. Cancelling: close the queue (waiting submits fail and get their job
    //    back), fire every running job's signal, hand back what is queued and
    //    what waits to retry. Nothing starts from here on.
    shared.advance(CANCELLING);
    shared.queue.close();
    shared.cancel.cancel();
    shared.hand_back_queued();
    shared.hand_back_retries();

    // 4. Grace: running jobs may stop on their own.
    if !drained {
        wait_idle(shared, after(Instant::now(), shared.config.grace), None).await;
    }

    // 5. Stopped: whatever still runs is abandoned and reported by ID. Async
    //    handlers that still yield are dropped by their worker; a blocking
    //    handler's thread is let go; a handler that never yields keeps its
    //    runtime thread, but not this report.
    shared.advance(STOPPED);
    shared.abandon_running();
    shared.abandon.cancel();

    // 6. Outcomes already on their way (see STRAGGLER_BOUND).
    if !wait_idle(shared, Instant::now() + STRAGGLER_BOUND, None).await {
        tracing::error!(target: "workpool", "shutdown: some outcomes were still on their way; the report may miss them");
    }

    let report = ShutdownReport {
        inner: Arc::new(ReportInner {
            stats: shared.stats(),
            not_finished: std::mem::take(&mut *lock(&shared.not_finished)),
            unstarted: Mutex::new(std::mem::take(&mut *lock(&shared.unstarted))),
            elapsed: began.elapsed(),
            drained,
        }),
    };
    tracing::info!(target: "workpool", "{report}");
    report
}

/// Waits until every admitted job has its outcome, or `until`, or `interrupt`.
/// Returns whether the pool went idle.
async fn wait_idle<P: Send + 'static>(
    shared: &Shared<P>,
    until: Instant,
    interrupt: Option<&CancellationToken>,
) -> bool {
    let interrupted = async {
        match interrupt {
            Some(t) => t.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(interrupted);
    loop {
        // Register for the next notification before checking, so that a job
        // finishing between the check and the wait is not missed.
        let notified = shared.progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.is_idle() {
            return true;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(until) => return shared.is_idle(),
            _ = &mut interrupted => return false,
        }
    }
}
