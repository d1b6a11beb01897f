//! The shutdown report every caller of shutdown gets.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::job::JobId;
use crate::outcome::{NotFinished, OutcomeKind, UnstartedJob};
use crate::stats::Stats;
use crate::sync::lock;

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

pub(crate) struct ReportInner<P> {
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
    pub(crate) fn new(
        stats: Stats,
        not_finished: Vec<NotFinished>,
        unstarted: Vec<UnstartedJob<P>>,
        elapsed: Duration,
        drained: bool,
    ) -> Self {
        ShutdownReport {
            inner: Arc::new(ReportInner {
                stats,
                not_finished,
                unstarted: Mutex::new(unstarted),
                elapsed,
                drained,
            }),
        }
    }

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
