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
//! The counter and the condition are a pair of Dekker flags, ordered by two
//! `SeqCst` fences and nothing else. A listener puts itself in the list and
//! changes the count, then fences, then re-checks the condition. A waker
//! changes the condition (any atomic write: whatever the ring's own
//! orderings), then fences, then reads the count. The fences are totally
//! ordered; by the fence-to-fence rule of the C++/Rust memory model
//! (`[atomics.fences]`), if the listener's fence comes first the waker's
//! read sees the listener, and if the waker's comes first the listener's
//! re-check sees the change. So the pair is correct from the language's
//! documented guarantees alone, without relying on how the ring orders its
//! own operations. `tests` below and the store's two-thread test exercise it
//! under real threads.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, fence, locked as lock};

pub(crate) struct Waiters {
    /// Two counts in one word, read together without the lock by the
    /// wake-ups: in the low half ([`UNWOKEN`]) the listeners in `list`
    /// (registered, not yet woken), changed under the list's lock; in the
    /// high half (units of [`WOKEN`]) the listeners woken by a push that have
    /// not yet seen it (polled ready, or dropped and passed it on).
    counts: AtomicU64,
    list: Mutex<VecDeque<Arc<Waiter>>>,
}

/// One listener woken by a push and not yet run, in [`Waiters::counts`].
const WOKEN: u64 = 1 << 32;
/// The unwoken listeners, in [`Waiters::counts`].
const UNWOKEN: u64 = WOKEN - 1;

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            counts: AtomicU64::new(0),
            list: Mutex::new(VecDeque::new()),
        }
    }
}

/// One listener's wake-up.
struct Waiter {
    state: Mutex<WaiterState>,
    /// Woken by a push, and so counted in [`Waiters::counts`] until seen
    /// (false for any other wake-up). Set under the list's lock as the
    /// listener leaves the list, so a listener dropped before its wake-up
    /// arrives reads it right.
    counted: AtomicBool,
}

#[derive(Default)]
struct WaiterState {
    woken: bool,
    waker: Option<Waker>,
}

impl Waiter {
    fn new() -> Self {
        Waiter {
            state: Mutex::new(WaiterState::default()),
            counted: AtomicBool::new(false),
        }
    }

    fn wake(&self) {
        let waker = {
            let mut state = lock(&self.state);
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
    /// Call it after changing the condition; it fences before it reads the
    /// count (module doc).
    ///
    /// Returns whether a listener was woken. The wake-up is not counted as
    /// one on its way (see [`Waiters::wake_one_unless_woken`]).
    pub(crate) fn wake_one(&self) -> bool {
        fence(Ordering::SeqCst);
        self.counts.load(Ordering::Relaxed) & UNWOKEN > 0 && self.wake_first(false)
    }

    /// A push's wake-up: as [`Waiters::wake_one`], but wakes nobody while
    /// listeners woken by earlier pushes and not yet run are at least as many
    /// as the items `queued()` counts (asked only then), and counts the one
    /// it wakes as on its way until it runs. For takers only, and only if
    /// every taker that sees its wake-up takes and then, finding more items,
    /// wakes the next (`MemoryStore`'s pass-on): the ones already woken take these
    /// items (or other takers do). Each wake-up of an idle task is a scheduler
    /// round trip; when the submitter is the slower side, waking a new worker
    /// per push kept half the workers cycling through sleep (see `store/memory/mod.rs`).
    /// Counting the items too bounds what waits on a woken worker that is
    /// slow to run: one held up behind a task that blocks its runtime thread
    /// holds back one item, not every push after it. A pass-on's wake-up is
    /// not counted at all (module doc; `tests/isolation.rs`).
    ///
    /// Ordering: a push that sees a woken listener here fenced before that
    /// listener's decrement and fence; the listener takes after it, so its
    /// take sees the push (the same fence pair as [`Waiters::wake_one`]'s).
    pub(crate) fn wake_one_unless_woken(&self, queued: impl FnOnce() -> usize) -> bool {
        self.wake_due(queued) && self.wake_first(true)
    }

    /// A pass-on's wake-up (`MemoryStore`'s pass-on): the same test as
    /// [`Waiters::wake_one_unless_woken`], but the listener it wakes is not
    /// counted as on its way.
    pub(crate) fn pass_on_unless_woken(&self, queued: impl FnOnce() -> usize) -> bool {
        self.wake_due(queued) && self.wake_first(false)
    }

    /// Whether someone listens and the listeners woken by pushes and not
    /// yet run are fewer than the items queued.
    #[inline(always)]
    fn wake_due(&self, queued: impl FnOnce() -> usize) -> bool {
        fence(Ordering::SeqCst);
        let counts = self.counts.load(Ordering::Relaxed);
        if counts & UNWOKEN == 0 {
            return false;
        }
        let woken = counts / WOKEN;
        woken == 0 || queued() as u64 > woken
    }

    #[cold]
    fn wake_first(&self, counted: bool) -> bool {
        let first = {
            let mut list = lock(&self.list);
            let first = list.pop_front();
            if let Some(w) = &first {
                w.counted.store(counted, Ordering::Relaxed);
                if counted {
                    // One unwoken fewer, one on its way more.
                    self.counts.fetch_add(WOKEN - 1, Ordering::SeqCst);
                } else {
                    self.counts.fetch_sub(1, Ordering::SeqCst);
                }
            }
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
            self.counts.fetch_sub(list.len() as u64, Ordering::SeqCst);
            std::mem::take(&mut *list)
        };
        for w in all {
            w.wake();
        }
    }

    /// Registers the caller. Re-check the condition after this: a change made
    /// from now on wakes the returned listener (or another one).
    pub(crate) fn listen(&self) -> Listener<'_> {
        let waiter = Arc::new(Waiter::new());
        {
            let mut list = lock(&self.list);
            list.push_back(waiter.clone());
            self.counts.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        Listener {
            waiters: self,
            waiter,
            seen: false,
        }
    }

    /// A listener woken by a push saw its wake-up (or passes it on).
    fn seen(&self) {
        self.counts.fetch_sub(WOKEN, Ordering::SeqCst);
        // The listener's half of the pair with `wake_due`: its take comes
        // after this.
        fence(Ordering::SeqCst);
    }

    #[cfg(test)]
    fn listening(&self) -> usize {
        lock(&self.list).len()
    }

    #[cfg(test)]
    fn unwoken(&self) -> u64 {
        self.counts.load(Ordering::Relaxed) & UNWOKEN
    }

    #[cfg(test)]
    fn woken(&self) -> u64 {
        self.counts.load(Ordering::Relaxed) / WOKEN
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
        let mut state = lock(&self.waiter.state);
        if state.woken {
            drop(state);
            if !self.seen {
                self.seen = true;
                if self.waiter.counted.load(Ordering::Relaxed) {
                    self.waiters.seen();
                }
            }
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
            self.waiters.counts.fetch_sub(1, Ordering::SeqCst);
        } else {
            // Out of the list: a waker took it and has woken it (or is about
            // to). That wake-up was meant for a listener: pass it on, not
            // counted (the caller may be about to run a job on this thread).
            drop(list);
            if self.waiter.counted.load(Ordering::Relaxed) {
                self.waiters.seen();
            }
            self.waiters.wake_first(false);
        }
    }
}

#[cfg(all(test, not(workpool_loom)))]
mod tests {
    use super::*;

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
        assert_eq!(w.unwoken(), 0);
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
        assert_eq!(w.unwoken(), 0);
    }

    #[test]
    fn wake_one_unless_woken_leaves_an_item_to_a_woken_listener_not_yet_run() {
        let w = Waiters::default();
        let mut first = w.listen();
        let mut second = w.listen();
        let mut third = w.listen();
        assert!(w.wake_one_unless_woken(|| 1));
        assert_eq!((w.unwoken(), w.woken()), (2, 1));
        // One item, one woken listener on its way: nobody else is woken.
        assert!(!w.wake_one_unless_woken(|| 1), "the first takes it");
        assert!(poll_once(&mut second).is_pending());
        // Two items, one woken listener: the next is woken for the second.
        assert!(w.wake_one_unless_woken(|| 2));
        assert!(poll_once(&mut second).is_ready());
        assert_eq!(w.woken(), 1);
        // The first runs: with none on its way, the next push wakes the third.
        assert!(poll_once(&mut first).is_ready());
        assert_eq!(w.woken(), 0);
        assert!(w.wake_one_unless_woken(|| 1));
        assert!(poll_once(&mut third).is_ready());
        drop((first, second, third));
        assert_eq!((w.unwoken(), w.woken()), (0, 0));
    }

    #[test]
    fn a_woken_listener_dropped_unseen_leaves_the_counts_right() {
        let w = Waiters::default();
        let first = w.listen();
        let mut second = w.listen();
        assert!(w.wake_one_unless_woken(|| 1));
        assert_eq!((w.unwoken(), w.woken()), (1, 1));
        // Passed on: the second is woken in its place, not counted (a pass-on).
        drop(first);
        assert_eq!((w.unwoken(), w.woken()), (0, 0));
        assert!(poll_once(&mut second).is_ready());
        assert_eq!(w.woken(), 0);
        drop(second);
        let l = w.listen();
        w.wake_all();
        assert_eq!((w.unwoken(), w.woken()), (0, 0));
        drop(l);
        assert_eq!((w.unwoken(), w.woken()), (0, 0));
    }

    /// The race behind a stall that `tests/isolation.rs` caught under load: a
    /// worker's pass-on and a push each see nobody on the way, so both wake
    /// someone; the pass-on's listener is stuck (tokio put it in the LIFO slot
    /// of a thread whose job then blocked). Counted, it made the next push of
    /// one item skip its wake-up, and that item waited for the blocked thread.
    #[test]
    fn a_pass_on_that_never_runs_holds_no_push_back() {
        let w = Waiters::default();
        let stuck = w.listen();
        let mut pushed = w.listen();
        let mut next = w.listen();
        assert!(w.pass_on_unless_woken(|| 1));
        assert!(w.wake_one_unless_woken(|| 1));
        assert_eq!((w.unwoken(), w.woken()), (1, 1));
        assert!(poll_once(&mut pushed).is_ready());
        assert_eq!(w.woken(), 0);
        // `stuck` never runs; the next item's push must still wake someone.
        assert!(
            w.wake_one_unless_woken(|| 1),
            "the push counted on a listener that never runs"
        );
        assert!(poll_once(&mut next).is_ready());
        drop((stuck, pushed, next));
        assert_eq!((w.unwoken(), w.woken()), (0, 0));
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
                    // Any atomic write: the fences order it.
                    flag.store(true, Ordering::Relaxed);
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

#[cfg(all(test, workpool_loom))]
mod loom_model {
    use super::*;
    use loom::thread;

    /// The fence pair under loom: a setter changes the condition with a
    /// relaxed store (any atomic write, whatever its ordering) and then calls
    /// `wake`; a listener registers, then looks. Whatever the interleaving,
    /// the listener sees the change or is woken (loom reports a listener left
    /// asleep as a deadlock).
    fn sees_the_change_or_is_woken(wake: fn(&Waiters)) {
        loom::model(move || {
            let w = Arc::new(Waiters::default());
            let flag = Arc::new(AtomicBool::new(false));
            let setter = {
                let (w, flag) = (w.clone(), flag.clone());
                thread::spawn(move || {
                    flag.store(true, Ordering::Relaxed);
                    wake(&w);
                })
            };
            let listener = w.listen();
            if !flag.load(Ordering::Relaxed) {
                loom::future::block_on(listener);
            }
            setter.join().unwrap();
        });
    }

    #[test]
    fn a_listener_sees_the_change_or_is_woken() {
        sees_the_change_or_is_woken(|w| {
            w.wake_one();
        });
    }

    /// The same for a push's throttled wake-up, with one item queued.
    #[test]
    fn a_listener_sees_the_push_or_is_woken_by_it() {
        sees_the_change_or_is_woken(|w| {
            w.wake_one_unless_woken(|| 1);
        });
    }
}
