//! A job's reply cell: where its outcome goes and where a cancel comes from,
//! in one allocation shared by the caller's [`JobHandle`](crate::JobHandle),
//! the job's envelope and the running attempt's context.
//!
//! One allocation per job with a handle, not two (a oneshot channel and a
//! cancel signal): with many handles held, the allocator was the largest
//! cost of the handle path.

use std::any::{Any, TypeId};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::cancel::{CancelRef, HoldsCancel, JobCancel};
use crate::outcome::Outcome;
use crate::sync::{AtomicU64, Mutex, Ordering};

pub(crate) struct ReplyCell<P, T> {
    cancel: JobCancel,
    delivery: Delivery<P, T>,
}

impl<P: Send + 'static, T: Send + 'static> HoldsCancel for ReplyCell<P, T> {
    fn job_cancel(&self) -> &JobCancel {
        &self.cancel
    }
}

impl<P, T> ReplyCell<P, T> {
    pub(crate) fn cancel(&self) -> &JobCancel {
        &self.cancel
    }

    /// The handle is dropped before it took an outcome.
    pub(crate) fn handle_dropped(&self) {
        self.delivery.handle_gone();
    }
}

impl<P, T: 'static> ReplyCell<P, T> {
    /// The handle's poll. Polled again after it returned the outcome, it
    /// may return it again or panic: the handle does not.
    #[inline]
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome<P, T>> {
        self.delivery.poll(cx)
    }
}

/// A one-shot hand-over of an outcome from the pool to the handle, in one
/// atomic word where it can be: an outcome without data (succeeded, timed
/// out, cancelled, abandoned: the usual ones) is the word itself, so that
/// the worker delivers it with one read-modify-write and the handle reads it
/// with one load. (With a lock around the outcome it was two RMWs on each
/// side, on a cache line that moves between the worker's core and the
/// submitter's.) An outcome with data (an error, a panic message, a job
/// handed back) waits boxed behind the lock, and so does the handle's waker.
pub(crate) struct Delivery<P, T> {
    /// The flags below; for a [`SENT`] outcome without data, its kind and,
    /// in the upper half, its attempts.
    state: AtomicU64,
    slow: Mutex<Slow<P, T>>,
}

struct Slow<P, T> {
    waker: Option<Waker>,
    /// An outcome with data (boxed: the cell stays small).
    outcome: Option<Box<Outcome<P, T>>>,
}

/// The handle's waker is in `slow` (set by the handle after it stored it).
const WAKER: u64 = 1;
/// The handle was dropped before it took an outcome.
const GONE: u64 = 1 << 1;
/// An outcome is in.
const SENT: u64 = 1 << 2;
/// ... and it is in `slow`, not in the word.
const IN_SLOW: u64 = 1 << 3;
/// The kind of an outcome in the word.
const KIND: u64 = 0b11 << 4;
const SUCCEEDED: u64 = 0;
const TIMED_OUT: u64 = 1 << 4;
const CANCELLED: u64 = 2 << 4;
const ABANDONED: u64 = 3 << 4;

/// `()` as a `T`, when `T` is `()`: a success without a value fits in the
/// word. (A boxed `()` allocates nothing.)
fn unit<T: 'static>() -> Option<T> {
    let unit: Box<dyn Any> = Box::new(());
    unit.downcast::<T>().ok().map(|b| *b)
}

/// The word for an outcome without data, or the outcome back.
fn encode<P, T: 'static>(outcome: Outcome<P, T>) -> Result<u64, Outcome<P, T>> {
    let (kind, attempts) = match outcome {
        Outcome::Succeeded { attempts, .. } if TypeId::of::<T>() == TypeId::of::<()>() => {
            (SUCCEEDED, attempts)
        }
        Outcome::TimedOut {
            error: None,
            attempts,
        } => (TIMED_OUT, attempts),
        Outcome::Cancelled {
            error: None,
            attempts,
        } => (CANCELLED, attempts),
        Outcome::Abandoned { attempts } => (ABANDONED, attempts),
        other => return Err(other),
    };
    Ok(SENT | kind | (u64::from(attempts) << 32))
}

fn decode<P, T: 'static>(word: u64) -> Outcome<P, T> {
    let attempts = (word >> 32) as u32;
    match word & KIND {
        SUCCEEDED => Outcome::Succeeded {
            value: unit().expect("only a () success goes in the word"),
            attempts,
        },
        TIMED_OUT => Outcome::TimedOut {
            error: None,
            attempts,
        },
        CANCELLED => Outcome::Cancelled {
            error: None,
            attempts,
        },
        _ => Outcome::Abandoned { attempts },
    }
}

impl<P, T> Delivery<P, T> {
    pub(crate) fn new() -> Self {
        Delivery {
            state: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                waker: None,
                outcome: None,
            }),
        }
    }

    fn slow(&self) -> crate::sync::MutexGuard<'_, Slow<P, T>> {
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle is dropped without having taken an outcome: a delivery
    /// after this gives its outcome back.
    pub(crate) fn handle_gone(&self) {
        self.state.fetch_or(GONE, Ordering::AcqRel);
    }

    /// The pool's end went away without an outcome: the handle resolves to
    /// `Abandoned` with 0 attempts.
    fn lost(&self) {
        let before = self.state.fetch_or(SENT | ABANDONED, Ordering::AcqRel);
        if before & (WAKER | GONE) == WAKER
            && let Some(w) = self.slow().waker.take()
        {
            w.wake();
        }
    }
}

impl<P, T: 'static> Delivery<P, T> {
    /// Hands `outcome` to the handle and wakes it; gives the outcome back if
    /// the handle is gone. Called at most once.
    ///
    /// The common case (an outcome in the word, to a handle that has not
    /// waited and is still there) is inlined; the rest is apart, cold.
    #[inline]
    pub(crate) fn deliver(&self, outcome: Outcome<P, T>) -> Result<(), Outcome<P, T>> {
        let word = match encode(outcome) {
            Ok(word) => word,
            Err(outcome) => self.stash(outcome),
        };
        // AcqRel: the handle that sees SENT sees what came before (a stashed
        // outcome); this side sees the waker stored before WAKER was set.
        let before = self.state.fetch_or(word, Ordering::AcqRel);
        debug_assert_eq!(before & SENT, 0, "one delivery per cell");
        if before & (GONE | WAKER) == 0 {
            return Ok(());
        }
        self.delivered(before, word)
    }

    /// Puts an outcome with data behind the lock; the word that says so.
    #[cold]
    fn stash(&self, outcome: Outcome<P, T>) -> u64 {
        self.slow().outcome = Some(Box::new(outcome));
        SENT | IN_SLOW
    }

    /// After the word went in: gives the outcome back if the handle is gone,
    /// wakes the handle if it waits.
    #[cold]
    fn delivered(&self, before: u64, word: u64) -> Result<(), Outcome<P, T>> {
        if before & GONE != 0 {
            return Err(match word & IN_SLOW {
                0 => decode(word),
                _ => *self.slow().outcome.take().expect("put in above"),
            });
        }
        if before & WAKER != 0 {
            let waker = self.slow().waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
        Ok(())
    }

    #[inline]
    fn take(&self, word: u64) -> Outcome<P, T> {
        match word & IN_SLOW {
            0 => decode(word),
            _ => self.take_data(),
        }
    }

    #[cold]
    fn take_data(&self) -> Outcome<P, T> {
        match self.slow().outcome.take() {
            Some(outcome) => *outcome,
            None => panic!("a JobHandle was polled after it returned its outcome"),
        }
    }

    /// The handle's poll: one load when the outcome is in (inlined), the
    /// waker stored otherwise.
    #[inline]
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome<P, T>> {
        let word = self.state.load(Ordering::Acquire);
        if word & SENT != 0 {
            return Poll::Ready(self.take(word));
        }
        self.wait(cx)
    }

    #[cold]
    fn wait(&self, cx: &mut Context<'_>) -> Poll<Outcome<P, T>> {
        {
            let mut slow = self.slow();
            match &slow.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => slow.waker = Some(cx.waker().clone()),
            }
        }
        // Set after the waker is stored: a delivery that sees WAKER finds it;
        // one that came first is seen here.
        let word = self.state.fetch_or(WAKER, Ordering::AcqRel);
        if word & SENT != 0 {
            return Poll::Ready(self.take(word));
        }
        Poll::Pending
    }
}

/// The pool's end of a job's reply cell. Dropped without sending, the handle
/// resolves to `Abandoned` with 0 attempts.
pub(crate) struct Reply<P, T>(Option<Arc<ReplyCell<P, T>>>);

impl<P, T: 'static> Reply<P, T> {
    /// A new cell: the pool's end, and the cell for the handle.
    pub(crate) fn new() -> (Reply<P, T>, Arc<ReplyCell<P, T>>) {
        let cell = Arc::new(ReplyCell {
            cancel: JobCancel::default(),
            delivery: Delivery::new(),
        });
        (Reply(Some(cell.clone())), cell)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.cancel.is_cancelled())
    }

    /// Sends the outcome; gives it back if the handle is gone.
    #[inline]
    pub(crate) fn send(mut self, outcome: Outcome<P, T>) -> Result<(), Outcome<P, T>> {
        let Some(cell) = self.0.take() else {
            return Err(outcome);
        };
        cell.delivery.deliver(outcome)
    }
}

impl<P: Send + 'static, T: Send + 'static> Reply<P, T> {
    /// The job's cancel signal, for its context and its retry timer.
    pub(crate) fn cancel_ref(&self) -> Option<CancelRef> {
        self.0.as_ref().map(|c| c.clone() as CancelRef)
    }
}

impl<P, T> Drop for Reply<P, T> {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take() {
            cell.delivery.lost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn the_handle_gets_the_outcome_sent_before_or_after_it_waits() {
        let (reply, cell) = Reply::<u8, ()>::new();
        reply
            .send(Outcome::Succeeded {
                value: (),
                attempts: 1,
            })
            .ok()
            .unwrap();
        let o = poll_fn(|cx| cell.poll_outcome(cx)).await;
        assert!(matches!(o, Outcome::Succeeded { attempts: 1, .. }));

        let (reply, cell) = Reply::<u8, ()>::new();
        let waiter = tokio::spawn(async move { poll_fn(|cx| cell.poll_outcome(cx)).await });
        tokio::task::yield_now().await;
        reply
            .send(Outcome::Cancelled {
                error: None,
                attempts: 2,
            })
            .ok()
            .unwrap();
        assert!(matches!(
            waiter.await.unwrap(),
            Outcome::Cancelled { attempts: 2, .. }
        ));
    }

    #[tokio::test]
    async fn a_reply_dropped_unsent_resolves_abandoned_and_a_gone_handle_gives_the_outcome_back() {
        let (reply, cell) = Reply::<u8, ()>::new();
        drop(reply);
        let o = poll_fn(|cx| cell.poll_outcome(cx)).await;
        assert!(matches!(o, Outcome::Abandoned { attempts: 0 }));

        let (reply, cell) = Reply::<u8, ()>::new();
        cell.handle_dropped();
        let back = reply.send(Outcome::Succeeded {
            value: (),
            attempts: 1,
        });
        assert!(matches!(back, Err(Outcome::Succeeded { attempts: 1, .. })));
    }
}

#[cfg(all(test, workpool_loom))]
mod loom_model {
    use super::*;
    use crate::handler::BoxError;
    use crate::job::Job;
    use loom::sync::Arc;
    use loom::thread;
    use std::future::poll_fn;

    /// The handle waits (its waker stored, then the flag set) while the pool
    /// delivers: whatever the interleaving, it gets the outcome and is woken
    /// if it waited (loom reports a handle left asleep as a deadlock).
    fn handle_gets(outcome: fn() -> Outcome<u8>, check: fn(&Outcome<u8>) -> bool) {
        loom::model(move || {
            let d = Arc::new(Delivery::<u8, ()>::new());
            let pool = {
                let d = d.clone();
                thread::spawn(move || d.deliver(outcome()).is_ok())
            };
            let got = loom::future::block_on(poll_fn(|cx| d.poll(cx)));
            assert!(check(&got));
            assert!(pool.join().unwrap(), "the handle was there to take it");
        });
    }

    #[test]
    fn the_handle_gets_an_outcome_in_the_word() {
        handle_gets(
            || Outcome::TimedOut {
                error: None,
                attempts: 3,
            },
            |o| matches!(o, Outcome::TimedOut { attempts: 3, .. }),
        );
    }

    #[test]
    fn the_handle_gets_an_outcome_with_data() {
        handle_gets(
            || Outcome::Failed {
                error: BoxError::from("boom"),
                attempts: 2,
            },
            |o| matches!(o, Outcome::Failed { attempts: 2, .. }),
        );
    }

    /// A handle dropped while a job is handed back unstarted: the job comes
    /// back to the pool, or it was in the cell before the handle went; never
    /// both, never neither.
    #[test]
    fn a_job_handed_back_to_a_dropped_handle_is_not_lost() {
        loom::model(|| {
            let d = Arc::new(Delivery::<u8, ()>::new());
            let pool = {
                let d = d.clone();
                thread::spawn(move || {
                    let job = Job::with_id(1u64, 7u8);
                    d.deliver(Outcome::Unstarted { job, attempts: 0 }).err()
                })
            };
            d.handle_gone();
            let back = pool.join().unwrap();
            let in_cell = d.slow().outcome.is_some();
            match back {
                Some(Outcome::Unstarted { job, .. }) => {
                    assert_eq!(*job.payload(), 7);
                    assert!(!in_cell);
                }
                Some(_) => panic!("gave back something else"),
                None => assert!(in_cell),
            }
        });
    }
}

#[cfg(test)]
mod cell_size {
    /// The cell stays in glibc's fast size classes (an allocation of at most
    /// 120 bytes, the reference counts included), whatever the payload.
    #[test]
    fn a_reply_cell_is_small() {
        let arc = 2 * size_of::<usize>();
        assert!(arc + size_of::<super::ReplyCell<[u8; 64], ()>>() <= 120);
        assert!(arc + size_of::<super::ReplyCell<[u8; 4096], ()>>() <= 120);
    }
}
