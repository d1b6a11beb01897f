//! A job's reply cell: where its outcome goes and where a cancel comes from,
//! in one allocation shared by the caller's [`JobHandle`](crate::JobHandle),
//! the job's envelope and the running attempt's context.
//!
//! One allocation per job with a handle, not two (a oneshot channel and a
//! cancel signal): with many handles held, the allocator was the largest
//! cost of the handle path.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::cancel::{CancelRef, HoldsCancel, JobCancel};
use crate::handler::BoxError;
use crate::job::Job;
use crate::outcome::Outcome;
use crate::shared::lock;

pub(crate) struct ReplyCell<P> {
    cancel: JobCancel,
    delivery: Mutex<Delivery<P>>,
}

enum Delivery<P> {
    /// No outcome yet; the handle's waker once it has been polled.
    Waiting(Option<Waker>),
    Sent(Kept<P>),
    /// The pool let go of the job without an outcome (its runtime was
    /// dropped): the handle resolves to `Abandoned` with 0 attempts.
    Lost,
    /// The handle took the outcome.
    Taken,
    /// The handle was dropped before an outcome came: nobody takes one.
    HandleGone,
}

/// An outcome as the cell keeps it: an unstarted job (rare: only at
/// shutdown) in a box of its own. The cell is one allocation per job with a
/// handle; with the job inline it was 176 bytes (three cache lines, above
/// glibc's fast size classes); under 120, the handles benchmark went from 370
/// to 276 ns per job (benchmarks/NOTES.md).
enum Kept<P> {
    Succeeded(u32),
    Failed(BoxError, u32),
    Panicked(String, u32),
    TimedOut(u32),
    Cancelled(u32),
    Unstarted(Box<Job<P>>, u32),
    Abandoned(u32),
}

impl<P> From<Outcome<P>> for Kept<P> {
    fn from(outcome: Outcome<P>) -> Self {
        match outcome {
            Outcome::Succeeded { attempts } => Kept::Succeeded(attempts),
            Outcome::Failed { error, attempts } => Kept::Failed(error, attempts),
            Outcome::Panicked { message, attempts } => Kept::Panicked(message, attempts),
            Outcome::TimedOut { attempts } => Kept::TimedOut(attempts),
            Outcome::Cancelled { attempts } => Kept::Cancelled(attempts),
            Outcome::Unstarted { job, attempts } => Kept::Unstarted(Box::new(job), attempts),
            Outcome::Abandoned { attempts } => Kept::Abandoned(attempts),
        }
    }
}

impl<P> From<Kept<P>> for Outcome<P> {
    fn from(kept: Kept<P>) -> Self {
        match kept {
            Kept::Succeeded(attempts) => Outcome::Succeeded { attempts },
            Kept::Failed(error, attempts) => Outcome::Failed { error, attempts },
            Kept::Panicked(message, attempts) => Outcome::Panicked { message, attempts },
            Kept::TimedOut(attempts) => Outcome::TimedOut { attempts },
            Kept::Cancelled(attempts) => Outcome::Cancelled { attempts },
            Kept::Unstarted(job, attempts) => Outcome::Unstarted {
                job: *job,
                attempts,
            },
            Kept::Abandoned(attempts) => Outcome::Abandoned { attempts },
        }
    }
}

impl<P: Send + 'static> HoldsCancel for ReplyCell<P> {
    fn job_cancel(&self) -> &JobCancel {
        &self.cancel
    }
}

impl<P> ReplyCell<P> {
    pub(crate) fn cancel(&self) -> &JobCancel {
        &self.cancel
    }

    /// Puts `d` in for the handle and wakes it; gives `d` back if the handle
    /// is gone (or something was delivered already, which one `Reply` cannot
    /// do).
    fn deliver(&self, d: Delivery<P>) -> Result<(), Delivery<P>> {
        let waker = {
            let mut state = lock(&self.delivery);
            match &mut *state {
                Delivery::Waiting(w) => {
                    let w = w.take();
                    *state = d;
                    w
                }
                _ => return Err(d),
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// The handle's poll.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome<P>> {
        let mut state = lock(&self.delivery);
        match std::mem::replace(&mut *state, Delivery::Taken) {
            Delivery::Sent(kept) => Poll::Ready(kept.into()),
            Delivery::Lost => Poll::Ready(Outcome::Abandoned { attempts: 0 }),
            Delivery::Waiting(w) => {
                let w = match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *state = Delivery::Waiting(Some(w));
                Poll::Pending
            }
            Delivery::Taken | Delivery::HandleGone => {
                panic!("a JobHandle was polled after it returned its outcome")
            }
        }
    }

    /// The handle is dropped before its outcome came.
    pub(crate) fn handle_dropped(&self) {
        let mut state = lock(&self.delivery);
        if let Delivery::Waiting(_) = *state {
            *state = Delivery::HandleGone;
        }
    }
}

/// The pool's end of a job's reply cell. Dropped without sending, the handle
/// resolves to `Abandoned` with 0 attempts.
pub(crate) struct Reply<P>(Option<Arc<ReplyCell<P>>>);

impl<P> Reply<P> {
    /// A new cell: the pool's end, and the cell for the handle.
    pub(crate) fn new() -> (Reply<P>, Arc<ReplyCell<P>>) {
        let cell = Arc::new(ReplyCell {
            cancel: JobCancel::default(),
            delivery: Mutex::new(Delivery::Waiting(None)),
        });
        (Reply(Some(cell.clone())), cell)
    }

    /// No handle: what an envelope carries for a detached job (an `Option`
    /// around a `Reply` would take 8 more bytes).
    pub(crate) fn none() -> Self {
        Reply(None)
    }

    /// `None` for [`Reply::none`].
    pub(crate) fn into_option(self) -> Option<Self> {
        self.0.is_some().then_some(self)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.cancel.is_cancelled())
    }

    /// Sends the outcome; gives it back if the handle is gone.
    pub(crate) fn send(mut self, outcome: Outcome<P>) -> Result<(), Outcome<P>> {
        let Some(cell) = self.0.take() else {
            return Err(outcome);
        };
        cell.deliver(Delivery::Sent(outcome.into()))
            .map_err(|d| match d {
                Delivery::Sent(kept) => kept.into(),
                _ => unreachable!("deliver gives back what it was given"),
            })
    }
}

impl<P: Send + 'static> Reply<P> {
    /// The job's cancel signal, for its context and its retry timer.
    pub(crate) fn cancel_ref(&self) -> Option<CancelRef> {
        self.0.as_ref().map(|c| c.clone() as CancelRef)
    }
}

impl<P> Drop for Reply<P> {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take() {
            let _ = cell.deliver(Delivery::Lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn the_handle_gets_the_outcome_sent_before_or_after_it_waits() {
        let (reply, cell) = Reply::<u8>::new();
        reply.send(Outcome::Succeeded { attempts: 1 }).ok().unwrap();
        let o = poll_fn(|cx| cell.poll_outcome(cx)).await;
        assert!(matches!(o, Outcome::Succeeded { attempts: 1 }));

        let (reply, cell) = Reply::<u8>::new();
        let waiter = tokio::spawn(async move { poll_fn(|cx| cell.poll_outcome(cx)).await });
        tokio::task::yield_now().await;
        reply.send(Outcome::Cancelled { attempts: 2 }).ok().unwrap();
        assert!(matches!(
            waiter.await.unwrap(),
            Outcome::Cancelled { attempts: 2 }
        ));
    }

    #[tokio::test]
    async fn a_reply_dropped_unsent_resolves_abandoned_and_a_gone_handle_gives_the_outcome_back() {
        let (reply, cell) = Reply::<u8>::new();
        drop(reply);
        let o = poll_fn(|cx| cell.poll_outcome(cx)).await;
        assert!(matches!(o, Outcome::Abandoned { attempts: 0 }));

        let (reply, cell) = Reply::<u8>::new();
        cell.handle_dropped();
        let back = reply.send(Outcome::Succeeded { attempts: 1 });
        assert!(matches!(back, Err(Outcome::Succeeded { attempts: 1 })));
    }
}

#[cfg(test)]
mod cell_size {
    /// The cell stays in glibc's fast size classes (an allocation of at most
    /// 120 bytes, the reference counts included), whatever the payload.
    #[test]
    fn a_reply_cell_is_small() {
        let arc = 2 * size_of::<usize>();
        assert!(arc + size_of::<super::ReplyCell<[u8; 64]>>() <= 120);
        assert!(arc + size_of::<super::ReplyCell<[u8; 4096]>>() <= 120);
    }
}
