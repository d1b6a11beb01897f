//! The counters a caller reads: [`Stats`] and [`Failure`].

use std::time::SystemTime;

use crate::job::JobId;
use crate::outcome::OutcomeKind;

/// A snapshot of the pool's counters, from [`Pool::stats`](crate::Pool::stats).
///
/// Counters are read one by one while the pool runs, so a snapshot taken under
/// load may catch a job between two of them. At a quiet point (nothing being
/// submitted or running, e.g. after shutdown) it is exact:
/// `accepted == succeeded + failed + panicked + timed_out + cancelled + unstarted + abandoned`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs the pool took in.
    pub accepted: u64,
    /// Submissions refused (queue full, timeout, or shut down); each job was handed back.
    pub rejected: u64,
    /// Jobs waiting in the queue.
    pub queued: u64,
    /// Jobs running now.
    pub running: u64,
    /// Jobs waiting for their next attempt's backoff delay.
    pub retry_waiting: u64,
    /// Live workers.
    pub workers: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed on their last attempt.
    pub failed: u64,
    /// Jobs that panicked on their last attempt.
    pub panicked: u64,
    /// Jobs whose last attempt timed out.
    pub timed_out: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Retries scheduled (attempts after a first one).
    pub retried: u64,
    /// Jobs handed back unstarted at shutdown.
    pub unstarted: u64,
    /// Jobs abandoned at shutdown.
    pub abandoned: u64,
}

impl Stats {
    /// Jobs that reached an outcome, of any kind: the right side of
    /// `accepted == outcomes()` at a quiet point.
    pub fn outcomes(&self) -> u64 {
        OutcomeKind::ALL.iter().map(|k| self.count(*k)).sum()
    }

    /// The count for one kind of outcome.
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        match kind {
            OutcomeKind::Succeeded => self.succeeded,
            OutcomeKind::Failed => self.failed,
            OutcomeKind::Panicked => self.panicked,
            OutcomeKind::TimedOut => self.timed_out,
            OutcomeKind::Cancelled => self.cancelled,
            OutcomeKind::Unstarted => self.unstarted,
            OutcomeKind::Abandoned => self.abandoned,
        }
    }
}

/// One failed attempt, as kept by [`Pool::recent_failures`](crate::Pool::recent_failures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The job's ID.
    pub id: JobId,
    /// Which attempt failed, from 1.
    pub attempt: u32,
    /// `Failed`, `Panicked` or `TimedOut`.
    pub kind: OutcomeKind,
    /// The error's text, the panic message, or the timeout.
    pub error: String,
    /// When the attempt ended.
    pub at: SystemTime,
}
