//! The counters behind [`Stats`]: sharded outcome counts, and the log of
//! recent failures.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::job::JobId;
use crate::outcome::OutcomeKind;
use crate::stats::{Failure, Stats};
use crate::sync::lock;

/// Outcome counters written by one worker (or by shutdown and retry tasks, in
/// the pool's general shard). Sharded so workers never write the same cache
/// line; [`Stats`] sums the shards.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Shard {
    outcomes: [AtomicU64; 7],
    retried: AtomicU64,
    /// Written by one worker only: a load and a store do, no read-modify-write
    /// (no locked instruction) needed.
    single_writer: bool,
}

impl Shard {
    /// A shard that only the calling worker will ever write.
    pub(crate) fn single_writer() -> Self {
        Shard {
            single_writer: true,
            ..Shard::default()
        }
    }

    #[inline]
    fn bump(&self, counter: &AtomicU64, order: Ordering) {
        if self.single_writer {
            counter.store(counter.load(Ordering::Relaxed) + 1, order);
        } else {
            counter.fetch_add(1, order);
        }
    }

    /// Release: a reader that sees the count (Acquire) also sees everything the
    /// job's outcome wrote before it: the shutdown lists, the hook's effects.
    #[inline]
    pub(crate) fn add(&self, kind: OutcomeKind) {
        self.bump(&self.outcomes[kind as usize], Ordering::Release);
    }

    pub(crate) fn add_retry(&self) {
        self.bump(&self.retried, Ordering::Relaxed);
    }

    pub(crate) fn terminal(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum()
    }

    pub(crate) fn add_to(&self, s: &mut Stats) {
        let get = |k: OutcomeKind| self.outcomes[k as usize].load(Ordering::Acquire);
        s.succeeded += get(OutcomeKind::Succeeded);
        s.failed += get(OutcomeKind::Failed);
        s.panicked += get(OutcomeKind::Panicked);
        s.timed_out += get(OutcomeKind::TimedOut);
        s.cancelled += get(OutcomeKind::Cancelled);
        s.unstarted += get(OutcomeKind::Unstarted);
        s.abandoned += get(OutcomeKind::Abandoned);
        s.retried += self.retried.load(Ordering::Relaxed);
    }
}

/// The last `capacity` failed attempts. Written only on failures, so a lock is
/// fine here.
pub(crate) struct FailureLog {
    capacity: usize,
    entries: Mutex<VecDeque<Failure>>,
}

impl FailureLog {
    pub(crate) fn new(capacity: usize) -> Self {
        FailureLog {
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    pub(crate) fn record(&self, id: &JobId, attempt: u32, kind: OutcomeKind, error: String) {
        if self.capacity == 0 {
            return;
        }
        let failure = Failure {
            id: id.clone(),
            attempt,
            kind,
            error,
            at: SystemTime::now(),
        };
        let mut entries = lock(&self.entries);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(failure);
    }

    pub(crate) fn snapshot(&self) -> Vec<Failure> {
        lock(&self.entries).iter().cloned().collect()
    }
}
