//! `JobCancel`: the cancellation signal of one job with a handle.
//!
//! Lighter than a `CancellationToken` for this use: no tree of children, and
//! cloning (an `Arc`) takes no lock. It lives in the job's reply cell
//! (`reply.rs`); the handle, the queued envelope, the running job's context
//! and a retry timer each hold a reference to that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// What holds a job's cancel signal (its reply cell), seen without the
/// payload type by the job's context and its retry timer.
pub(crate) trait HoldsCancel: Send + Sync {
    fn job_cancel(&self) -> &JobCancel;
}

/// A shared reference to a job's cancel signal.
pub(crate) type CancelRef = Arc<dyn HoldsCancel>;

#[derive(Debug, Default)]
pub(crate) struct JobCancel {
    cancelled: AtomicBool,
    notify: Notify,
}

impl JobCancel {
    /// Marks the job cancelled and wakes everyone waiting in `cancelled`.
    pub(crate) fn cancel(&self) {
        // Release: a waiter that sees the flag sees what came before the cancel.
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Completes once `cancel` has been called.
    pub(crate) async fn cancelled(&self) {
        loop {
            // Register before checking, so a cancel between the check and the
            // wait is not missed (`notify_waiters` wakes registered waiters only).
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_on_cancel_and_later_waiters_return_at_once() {
        let c = Arc::new(JobCancel::default());
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.cancel();
        waiter.await.unwrap();
        assert!(c.is_cancelled());
        c.cancelled().await;
    }
}
