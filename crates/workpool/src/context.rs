//! `JobContext`: what a running job may ask about itself.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel::CancelRef;
use crate::job::JobId;

/// Signals one worker shares with every job it runs.
///
/// Each worker has its own tokens, children of the pool's: cloning a
/// `CancellationToken` takes a lock on its tree node, so sharing the pool's
/// token with every job would put one lock on the hot path for all workers.
/// Cloning this `Arc` is a single uncontended increment.
#[derive(Debug)]
pub(crate) struct WorkerSignals {
    /// The worker's number, from 1, in the order workers were started.
    pub(crate) worker: usize,
    /// Fires when shutdown reaches Cancelling: running jobs should stop.
    pub(crate) cancel: CancellationToken,
    /// Fires when shutdown reaches Stopped: the worker drops what still runs.
    pub(crate) abandon: CancellationToken,
}

/// Why a job was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The job's deadline passed.
    Deadline,
    /// Its [`JobHandle::cancel`](crate::JobHandle::cancel) was called.
    Handle,
    /// The pool is shutting down and its drain timeout passed.
    Shutdown,
}

/// What a running job may ask: its ID, its attempt number, its deadline, and a
/// cancellation signal it should watch.
///
/// The signal fires at the job's deadline, when its handle cancels it, and when
/// shutdown gives up waiting. A handler that returns an error after the signal
/// fired ends `TimedOut` or `Cancelled`, not `Failed`. One that never looks at
/// the signal is dropped (async) or abandoned (blocking) after the grace period.
///
/// # Examples
///
/// ```
/// # async fn demo(ctx: workpool::JobContext) -> Result<(), std::io::Error> {
/// tokio::select! {
///     _ = ctx.cancelled() => return Err(std::io::Error::other("stopped")),
///     _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
/// }
/// # Ok(()) }
/// ```
pub struct JobContext {
    id: JobId,
    attempt: u32,
    deadline: Option<Instant>,
    signals: Arc<WorkerSignals>,
    job_cancel: Option<CancelRef>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .field("worker", &self.signals.worker)
            .field("cancel_reason", &self.cancel_reason())
            .finish()
    }
}

impl JobContext {
    pub(crate) fn new(
        id: JobId,
        attempt: u32,
        deadline: Option<Instant>,
        signals: Arc<WorkerSignals>,
        job_cancel: Option<CancelRef>,
    ) -> Self {
        JobContext {
            id,
            attempt,
            deadline,
            signals,
            job_cancel,
        }
    }

    /// The job's ID.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The number of the worker running this attempt, from 1 in the order the
    /// pool started its workers (workers added by a resize get the next ones).
    pub fn worker(&self) -> usize {
        self.signals.worker
    }

    /// Which attempt this is, counted from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When this attempt's deadline passes, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed), if there is one.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the job has been asked to stop. Cheap enough to call in a loop;
    /// this is how a blocking handler watches for cancellation.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_reason().is_some()
    }

    /// Why the job was asked to stop, or `None` if it was not.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(CancelReason::Deadline)
        } else if self
            .job_cancel
            .as_ref()
            .is_some_and(|t| t.job_cancel().is_cancelled())
        {
            Some(CancelReason::Handle)
        } else if self.signals.cancel.is_cancelled() {
            Some(CancelReason::Shutdown)
        } else {
            None
        }
    }

    /// Completes when the job is asked to stop: deadline, handle cancel or
    /// shutdown, whichever comes first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it and calling again loses nothing.
    pub async fn cancelled(&self) {
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let job = async {
            match &self.job_cancel {
                Some(t) => t.job_cancel().cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.signals.cancel.cancelled() => {}
            _ = job => {}
            _ = deadline => {}
        }
    }
}
