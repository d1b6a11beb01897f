//! A worker's slot: where shutdown finds the job a worker is running.
//!
//! Exactly one of the worker (when its attempt ends) and shutdown (when it
//! abandons the job) takes the value out, and only the one that took it
//! records the job's outcome. The worker decides under the lock whether it may
//! start at all, so a job is either started and findable, or not started.

use std::sync::PoisonError;

use crate::sync::Mutex;

pub(crate) struct Slot<T>(Mutex<Option<T>>);

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot(Mutex::new(None))
    }

    /// Puts `make()` in unless `refuse()`, asked under the lock, says no; then
    /// `make()` comes back. Made in place rather than passed in: a value
    /// built on the stack and then copied in was read back in wider loads
    /// than it was written with, and each such load waits (perf).
    #[inline(always)]
    pub(crate) fn claim(
        &self,
        refuse: impl FnOnce() -> bool,
        make: impl FnOnce() -> T,
    ) -> Result<(), T> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if refuse() {
            return Err(make());
        }
        *slot = Some(make());
        Ok(())
    }

    /// Takes the value out, if it is still there.
    #[inline(always)]
    pub(crate) fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    pub(crate) fn is_occupied(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

#[cfg(all(test, workpool_loom))]
mod loom_model {
    use super::*;
    use crate::core::state::{Gate, Lifecycle};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::thread;

    /// A worker starting a job races shutdown abandoning running jobs: the
    /// job gets exactly one outcome (unstarted, finished or abandoned).
    #[test]
    fn a_job_gets_exactly_one_outcome() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let slot = Arc::new(Slot::new());
            let outcomes = Arc::new(AtomicU64::new(0));
            let worker = {
                let (gate, slot, outcomes) = (gate.clone(), slot.clone(), outcomes.clone());
                thread::spawn(move || {
                    match slot.claim(|| gate.state() >= Lifecycle::HandingBack, || 7u32) {
                        // Refused under the lock: handed back unstarted.
                        Err(_) => {
                            outcomes.fetch_add(1, Ordering::AcqRel);
                        }
                        // Ran; when done, only the taker records the outcome.
                        Ok(()) => {
                            if slot.take().is_some() {
                                outcomes.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                    }
                })
            };
            // Shutdown: the state first, then the slots.
            gate.advance(Lifecycle::Stopped);
            if slot.take().is_some() {
                outcomes.fetch_add(1, Ordering::AcqRel);
            }
            worker.join().unwrap();
            assert_eq!(outcomes.load(Ordering::Acquire), 1);
        });
    }

    /// A job that never ends (ignores cancellation): whenever the worker
    /// started it relative to shutdown, shutdown either found it (abandoned)
    /// or the worker never started it. A job running that shutdown does not
    /// know about would be left in the slot.
    #[test]
    fn shutdown_finds_every_started_job() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let slot = Arc::new(Slot::new());
            let worker = {
                let (gate, slot) = (gate.clone(), slot.clone());
                thread::spawn(move || {
                    slot.claim(|| gate.state() >= Lifecycle::HandingBack, || 7u32)
                        .is_ok()
                })
            };
            gate.advance(Lifecycle::Stopped);
            let abandoned = slot.take().is_some();
            let started = worker.join().unwrap();
            assert_eq!(
                started, abandoned,
                "started and unseen, or seen and not started"
            );
            assert!(slot.take().is_none(), "a job started after shutdown looked");
        });
    }
}
