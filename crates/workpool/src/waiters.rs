//! Tasks waiting for a condition of the queue (room, or an item), and the
//! wake-up that the other side sends each time the condition may have come
//! true.
//!
//! Why not `event-listener` (what async-channel uses): it takes its list's lock
//! on every notification, also when nobody listens or when every listener was
//! already woken (its early exit was removed in 5.3 after loom found it racy).
//! The queue wakes once per push and once per take, so that lock was a fifth
//! of the instructions per job. Here a wake-up reads one counter, the number
//! of listeners not yet woken, and locks only when it is not zero.
//!
//! The counter and the condition are a pair of Dekker flags. A listener puts
//! itself in the list and stores the new count, then (after a `SeqCst` fence)
//! re-checks the condition. A waker changes the condition with a `SeqCst`
//! read-modify-write, then reads the count with a `SeqCst` load. In the
//! single total order of `SeqCst` operations one of the two comes first:
//! either the listener's re-check finds the change, or the waker finds the
//! listener and wakes it (or another listener, who then retries in its
//! place). Loom treats `SeqCst` as acquire-release, so it cannot check this
//! pair; `tests` below, the queue's two-thread test and the pool's
//! backpressure and chaos tests exercise it.
//!
//! A listener is made only when a push finds the queue full or a worker finds
//! it empty, not per job, so each gets a small allocation of its own and the
//! list is a plain locked deque (removing an unwoken listener searches it:
//! at most one entry per waiting task).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::shared::lock;

#[derive(Default)]
pub(crate) struct Waiters {
    /// Listeners in `list` (registered, not yet woken). Written under the
    /// list's lock; read without it by [`Waiters::wake_one`].
    unwoken: AtomicUsize,
    list: Mutex<VecDeque<Arc<Waiter>>>,
}

/// One listener's wake-up.
#[derive(Default)]
struct Waiter(Mutex<WaiterState>);

#[derive(Default)]
struct WaiterState {
    woken: bool,
    waker: Option<Waker>,
}

impl Waiter {
    fn wake(&self) {
        let waker = {
            let mut state = lock(&self.0);
            state.woken = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Waiters {
    /// Wakes the longest-waiting listener not yet woken, if there is one.
    /// Call it after changing the condition with a `SeqCst` read-modify-write.
    ///
    /// No fence here: the queue's condition changes are already `SeqCst`
    /// read-modify-writes (concurrent-queue's push moves the tail, and its
    /// pop the head, with a `SeqCst` compare-exchange before it writes the
    /// slot), and a listener's re-check reads that tail or head after a
    /// `SeqCst` fence, treating "moved, slot not yet written" as "try again",
    /// never as empty or full. So the compare-exchange and this `SeqCst` load
    /// are the waker's half of the Dekker pair, and on x86 the load is a plain
    /// `mov`. The `mfence` that was here stalled every push and every take
    /// until the slot's stores had left the core (a fifth of the samples).
    /// (A one-place ring is the exception: its take makes room at a
    /// `Release` unlock, so the queue fences before that wake-up.)
    ///
    /// Returns whether a listener was woken.
    pub(crate) fn wake_one(&self) -> bool {
        self.unwoken.load(Ordering::SeqCst) > 0 && self.wake_first()
    }

    #[cold]
    fn wake_first(&self) -> bool {
        let first = {
            let mut list = lock(&self.list);
            let first = list.pop_front();
            self.unwoken.store(list.len(), Ordering::Relaxed);
            first
        };
        match first {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        }
    }

    /// Wakes every listener registered now. Rare (close, a resize, shutdown).
    pub(crate) fn wake_all(&self) {
        let all = {
            let mut list = lock(&self.list);
            self.unwoken.store(0, Ordering::Relaxed);
            std::mem::take(&mut *list)
        };
        for w in all {
            w.wake();
        }
    }

    /// Registers the caller. Re-check the condition after this: a change made
    /// from now on wakes the returned listener (or another one).
    pub(crate) fn listen(&self) -> Listener<'_> {
        let waiter = Arc::new(Waiter::default());
        {
            let mut list = lock(&self.list);
            list.push_back(waiter.clone());
            self.unwoken.store(list.len(), Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        Listener {
            waiters: self,
            waiter,
            seen: false,
        }
    }

    #[cfg(test)]
    fn listening(&self) -> usize {
        lock(&self.list).len()
    }
}

/// A registered listener: a future that is ready once woken.
///
/// Dropped unwoken, it takes itself out of the list. Dropped woken but before
/// it was seen ready (a timeout or `select!` around the wait), it passes the
/// wake-up on to the next listener, so that no wake-up is lost.
pub(crate) struct Listener<'a> {
    waiters: &'a Waiters,
    waiter: Arc<Waiter>,
    seen: bool,
}

impl Future for Listener<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.waiter.0);
        if state.woken {
            drop(state);
            self.seen = true;
            return Poll::Ready(());
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        if self.seen {
            return;
        }
        let mut list = lock(&self.waiters.list);
        if let Some(i) = list.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
            list.remove(i);
            self.waiters.unwoken.store(list.len(), Ordering::Relaxed);
        } else {
            // Out of the list: a waker took it and has woken it (or is about
            // to). That wake-up was meant for a listener: pass it on.
            drop(list);
            self.waiters.wake_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn poll_once(l: &mut Listener<'_>) -> Poll<()> {
        let waker = Waker::noop();
        Pin::new(l).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_wake_with_nobody_listening_is_a_no_op() {
        let w = Waiters::default();
        w.wake_one();
        let mut l = w.listen();
        assert!(
            poll_once(&mut l).is_pending(),
            "an earlier wake-up is not stored"
        );
    }

    #[test]
    fn wake_one_wakes_the_longest_waiting_listener_only() {
        let w = Waiters::default();
        let mut first = w.listen();
        let mut second = w.listen();
        assert!(poll_once(&mut first).is_pending());
        w.wake_one();
        assert!(poll_once(&mut first).is_ready());
        assert!(poll_once(&mut second).is_pending());
        assert_eq!(w.listening(), 1);
        drop(first);
        // The first saw its wake-up: nothing is passed on.
        assert!(poll_once(&mut second).is_pending());
        drop(second);
        assert_eq!(w.listening(), 0);
        assert_eq!(w.unwoken.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_woken_listener_dropped_unseen_passes_the_wake_up_on() {
        let w = Waiters::default();
        let first = w.listen();
        let mut second = w.listen();
        w.wake_one();
        drop(first);
        assert!(poll_once(&mut second).is_ready());
    }

    #[test]
    fn an_unwoken_listener_dropped_leaves_the_list() {
        let w = Waiters::default();
        let first = w.listen();
        let mut second = w.listen();
        drop(first);
        assert_eq!(w.listening(), 1);
        w.wake_one();
        assert!(poll_once(&mut second).is_ready());
    }

    #[test]
    fn wake_all_wakes_every_listener() {
        let w = Waiters::default();
        let mut ls: Vec<_> = (0..5).map(|_| w.listen()).collect();
        w.wake_all();
        for l in &mut ls {
            assert!(poll_once(l).is_ready());
        }
        assert_eq!(w.unwoken.load(Ordering::Relaxed), 0);
    }

    /// The Dekker pair under real threads: a waiter that registers and then
    /// finds the flag unset must be woken by the setter.
    #[test]
    fn no_wake_up_is_lost_between_threads() {
        for _ in 0..2_000 {
            let w = Arc::new(Waiters::default());
            let flag = Arc::new(AtomicBool::new(false));
            let setter = {
                let (w, flag) = (w.clone(), flag.clone());
                std::thread::spawn(move || {
                    // A read-modify-write, as `wake_one` asks.
                    flag.swap(true, Ordering::SeqCst);
                    w.wake_one();
                })
            };
            let mut l = w.listen();
            if !flag.load(Ordering::Relaxed) {
                setter.join().unwrap();
                assert!(
                    poll_once(&mut l).is_ready(),
                    "the setter missed a registered listener"
                );
            } else {
                setter.join().unwrap();
            }
        }
    }
}
