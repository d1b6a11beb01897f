//! The lifecycle state, and the admission gate: the lifecycle state and the count of admitted jobs in
//! one atomic word.
//!
//! Every admit and every state change is a read-modify-write of this one
//! location, and the RMWs of one location are totally ordered. So an admit
//! either comes before a state change (and the count shutdown reads includes
//! it) or after it (and it sees the pool closed and undoes itself). No job
//! slips in unseen, without relying on SeqCst ordering between two locations.

use crate::sync::{AtomicU64, Ordering};

/// Where the pool is in its life. The state only moves forward, in this
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// Takes jobs and runs them.
    Running = 0,
    /// Shutdown called: submissions refused; queued and running jobs finish.
    Draining = 1,
    /// Intake stopped (`Pool::stop_intake`, or shutdown without drain):
    /// submissions refused, nothing more starts, queued jobs are handed back.
    HandingBack = 2,
    /// Drain deadline passed: running jobs' signals fired, the store closed.
    Cancelling = 3,
    /// Grace period over: what still runs has been abandoned.
    Stopped = 4,
}

impl Lifecycle {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Lifecycle::Running,
            1 => Lifecycle::Draining,
            2 => Lifecycle::HandingBack,
            3 => Lifecycle::Cancelling,
            _ => Lifecycle::Stopped,
        }
    }
}

const SHIFT: u32 = 56;
const COUNT: u64 = (1 << SHIFT) - 1;

/// State in the top 8 bits, admitted-and-not-undone submissions below.
#[derive(Debug)]
pub(crate) struct Gate(AtomicU64);

impl Gate {
    pub(crate) fn new() -> Self {
        Gate(AtomicU64::new(0))
    }

    /// Counts a submission in if the pool is running; otherwise leaves the
    /// count as it was and returns false. A compare-exchange, not an add that
    /// a refusal then undoes: a refused submission never shows in the count,
    /// so the count shutdown reads once the pool is idle is exactly the jobs
    /// accepted.
    #[inline]
    pub(crate) fn admit(&self) -> bool {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            if (current >> SHIFT) as u8 != Lifecycle::Running as u8 {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Undoes an `admit` whose push then failed.
    pub(crate) fn unadmit(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    /// Submissions admitted and not undone.
    pub(crate) fn admitted(&self) -> u64 {
        self.0.load(Ordering::Acquire) & COUNT
    }

    /// The state. (Outside the loom models, readers use `Core::state`, a copy
    /// that submitters do not write.)
    #[allow(dead_code)] // used by the loom models only
    pub(crate) fn state(&self) -> Lifecycle {
        Lifecycle::from_u8((self.0.load(Ordering::Acquire) >> SHIFT) as u8)
    }

    /// Moves the state forward to `to` (never back). Returns the admitted
    /// count at that instant: no later admit succeeds.
    pub(crate) fn advance(&self, to: Lifecycle) -> u64 {
        let to = to as u8;
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if (current >> SHIFT) as u8 >= to {
                return current & COUNT;
            }
            let next = (current & COUNT) | (u64::from(to) << SHIFT);
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return current & COUNT,
                Err(now) => current = now,
            }
        }
    }
}

#[cfg(all(test, workpool_loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64;
    use loom::thread;

    /// Two submitters race one shutdown: a submission admitted after the
    /// state change is always refused, and the count shutdown reads covers
    /// every submission that was admitted.
    #[test]
    fn no_admission_slips_past_a_state_change() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let succeeded = Arc::new(AtomicU64::new(0));
            let submitters: Vec<_> = (0..2)
                .map(|_| {
                    let (gate, succeeded) = (gate.clone(), succeeded.clone());
                    thread::spawn(move || {
                        if gate.admit() {
                            succeeded.fetch_add(1, Ordering::AcqRel);
                        }
                    })
                })
                .collect();
            let counted = gate.advance(Lifecycle::Draining);
            let after = gate.admit();
            assert!(!after, "admitted after the state change");
            for s in submitters {
                s.join().unwrap();
            }
            let succeeded = succeeded.load(Ordering::Acquire);
            assert_eq!(
                succeeded, counted,
                "shutdown's count is exactly the admitted submissions"
            );
            assert_eq!(gate.admitted(), counted);
            assert_eq!(gate.state(), Lifecycle::Draining);
        });
    }

    /// A refused push undone with `unadmit` leaves the count right, whatever
    /// the interleaving with a state change.
    #[test]
    fn unadmit_keeps_the_count() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let g = gate.clone();
            let t = thread::spawn(move || {
                if g.admit() {
                    g.unadmit(); // e.g. the queue was full
                }
            });
            gate.advance(Lifecycle::Cancelling);
            t.join().unwrap();
            assert_eq!(gate.admitted(), 0);
            assert_eq!(gate.advance(Lifecycle::Stopped), 0);
        });
    }
}
