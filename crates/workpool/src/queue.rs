//! The queue between submitters and workers, behind a narrow boundary:
//! push (waiting for room, or not), take, close, and hand back what is left.
//!
//! Today there is one flavour, in memory. A durable flavour (a file store, or
//! PostgreSQL shared by many machines) would be a second variant of [`Queue`]
//! with the same methods; workers and shutdown only use these.

use std::sync::atomic::{Ordering, fence};

use concurrent_queue::{ConcurrentQueue, PopError, PushError};
use tokio::time::Instant;

use crate::job::Job;
use crate::reply::Reply;
use crate::waiters::Waiters;

/// A job on its way through the pool, with what it needs beyond itself.
///
/// Kept small: an envelope is moved several times between submit and run,
/// and at 128 bytes or less (with a 64-byte payload) those moves are inline
/// stores rather than calls to `memcpy`; and each byte of it crosses from the
/// submitter's core to the worker's through the queue (from 128 to 120 bytes
/// took the trivial-job benchmark from about 199 to 162 ns per job).
pub(crate) struct Envelope<P> {
    pub(crate) job: Job<P>,
    /// [`Reply::none`] unless the caller asked for a
    /// [`JobHandle`](crate::JobHandle).
    pub(crate) reply: Reply<P>,
    /// Present only when the job comes back to retry.
    pub(crate) retried: Option<Box<Retried>>,
}

/// What a job coming back to retry carries from its earlier attempts.
pub(crate) struct Retried {
    /// Attempts already made.
    pub(crate) attempts: u32,
    /// When the first attempt started, if durations are measured.
    pub(crate) started: Option<Instant>,
}

impl Retried {
    /// Attempts made and when the first started, for an envelope's `retried`.
    #[inline]
    pub(crate) fn so_far(retried: Option<Box<Retried>>) -> (u32, Option<Instant>) {
        retried.map_or((0, None), |r| (r.attempts, r.started))
    }
}

impl<P> Envelope<P> {
    /// A job not yet tried.
    pub(crate) fn new(job: Job<P>, reply: Option<Reply<P>>) -> Self {
        Envelope {
            job,
            reply: reply.unwrap_or_else(Reply::none),
            retried: None,
        }
    }

    /// A job coming back to retry.
    pub(crate) fn retry(
        job: Job<P>,
        reply: Option<Reply<P>>,
        attempts: u32,
        started: Option<Instant>,
    ) -> Self {
        Envelope {
            job,
            reply: reply.unwrap_or_else(Reply::none),
            retried: Some(Box::new(Retried { attempts, started })),
        }
    }

    /// The job, its reply, the attempts already made and when the first
    /// started.
    pub(crate) fn open(self) -> (Job<P>, Option<Reply<P>>, u32, Option<Instant>) {
        let (attempts, started) = Retried::so_far(self.retried);
        (self.job, self.reply.into_option(), attempts, started)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.reply.is_cancelled()
    }
}

/// Why a push did not happen; the value comes back.
pub(crate) enum PushFail<T> {
    Full(T),
    Closed(T),
    Timeout(T),
}

impl<T> PushFail<T> {
    /// The value that was not pushed, whatever the reason.
    pub(crate) fn into_inner(self) -> T {
        match self {
            PushFail::Full(v) | PushFail::Closed(v) | PushFail::Timeout(v) => v,
        }
    }
}

/// What a wait for an item found.
pub(crate) enum Wait {
    /// Something to take (or there was: another taker may be first).
    Ready,
    /// Closed and empty: nothing will ever come.
    Closed,
    /// The caller's `interrupted` check said to stop waiting.
    Interrupted,
}

/// What a take found (the queue's own tests take this way).
#[cfg(test)]
pub(crate) enum Take<T> {
    /// An item.
    Item(T),
    /// Closed and empty: nothing will ever come.
    Closed,
    /// The caller's `interrupted` check said to stop waiting.
    Interrupted,
}

pub(crate) enum Queue<T> {
    Memory(MemoryQueue<T>),
}

impl<T> Queue<T> {
    pub(crate) fn memory(capacity: usize) -> Self {
        Queue::Memory(MemoryQueue::new(capacity))
    }

    #[inline(always)]
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushFail<T>> {
        match self {
            Queue::Memory(q) => q.try_push(item),
        }
    }

    /// Waits for room until `deadline` (forever if `None`).
    ///
    /// Cancel safety: dropping the future drops the item with it.
    pub(crate) async fn push(&self, item: T, deadline: Option<Instant>) -> Result<(), PushFail<T>> {
        match self {
            Queue::Memory(q) => q.push(item, deadline).await,
        }
    }

    /// Waits for an item and takes it, as a worker does: a look, then a
    /// wait, until the look finds one.
    #[cfg(test)]
    pub(crate) async fn take(&self, interrupted: impl Fn() -> bool) -> Take<T> {
        let mut waited = false;
        loop {
            if let Some(item) = self.try_take() {
                if waited {
                    self.pass_on();
                }
                return Take::Item(item);
            }
            match self.wait(&interrupted).await {
                Wait::Ready => waited = true,
                Wait::Closed => return Take::Closed,
                Wait::Interrupted => return Take::Interrupted,
            }
        }
    }

    /// Waits until there may be an item to take: returns `Ready` when it
    /// sees one or is woken (a push, or [`Queue::wake_takers`]), and another
    /// taker may still be first, so the caller looks again. `interrupted` is
    /// asked before it sleeps. Workers take with a look first and wait only
    /// when the look finds nothing: the item then comes from one call site,
    /// not from two merged into one variable (that merge was two more copies
    /// of the envelope per job, measured).
    pub(crate) async fn wait(&self, interrupted: impl Fn() -> bool) -> Wait {
        match self {
            Queue::Memory(q) => q.wait(interrupted).await,
        }
    }

    /// After the first take that follows a [`Wait::Ready`]: if items are
    /// left, wakes the next waiting taker (unless as many woken by pushes
    /// are on their way already). A push does not wake a taker while enough
    /// woken ones have not yet run (`Waiters::wake_one_unless_woken`), so a
    /// taker that was woken passes the wake-up on: items are never left
    /// behind one long job. The taker it wakes is not counted as on its way:
    /// tokio puts it in this thread's LIFO slot, and the job this worker is
    /// about to run may block the thread (`Waiters::pass_on_unless_woken`).
    pub(crate) fn pass_on(&self) {
        match self {
            Queue::Memory(q) => {
                let left = q.items.len();
                if left > 0 {
                    q.pushed.pass_on_unless_woken(|| left);
                }
            }
        }
    }

    /// Takes an item if one is there; used to hand back what is left.
    pub(crate) fn try_take(&self) -> Option<T> {
        self.try_take_waking(&mut false).ok()
    }

    /// Takes an item if one is there, and sets `woke` if that woke a waiting
    /// pusher (see `worker.rs`, `refill_after`). Through a reference rather
    /// than in a returned tuple: 8 instructions per job fewer, measured (the
    /// item is copied, not built into a tuple). The ring's own `Result`
    /// comes back as it is: made an `Option` on the way, the item was copied
    /// twice more per job.
    #[inline(always)]
    pub(crate) fn try_take_waking(&self, woke: &mut bool) -> Result<T, PopError> {
        match self {
            Queue::Memory(q) => q.try_take(woke),
        }
    }

    /// How many items the queue holds at most.
    pub(crate) fn capacity(&self) -> usize {
        match self {
            Queue::Memory(q) => q.items.capacity().unwrap_or(usize::MAX),
        }
    }

    /// Refuses further pushes; items already in stay takeable. Wakes every
    /// waiting pusher and taker.
    pub(crate) fn close(&self) {
        match self {
            Queue::Memory(q) => q.close(),
        }
    }

    /// Wakes every waiting taker so it re-checks its `interrupted` condition.
    pub(crate) fn wake_takers(&self) {
        match self {
            Queue::Memory(q) => q.pushed.wake_all(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Queue::Memory(q) => q.items.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A bounded lock-free ring (`concurrent-queue`) and two sets of waiters, as
/// in async-channel, but with a push that gives the item back on timeout
/// (async-channel's send future swallows it when dropped), and with a wake-up
/// that costs a fence and a load when nobody waits (see `waiters.rs`).
pub(crate) struct MemoryQueue<T> {
    items: ConcurrentQueue<T>,
    /// Woken once per push: one waiting taker.
    pushed: Waiters,
    /// Woken once per take: one waiting pusher. A woken listener that is
    /// dropped unseen passes its wake-up on, so none is lost.
    popped: Waiters,
}

impl<T> MemoryQueue<T> {
    fn new(capacity: usize) -> Self {
        MemoryQueue {
            items: ConcurrentQueue::bounded(capacity),
            pushed: Waiters::default(),
            popped: Waiters::default(),
        }
    }

    #[inline(always)]
    fn try_push(&self, item: T) -> Result<(), PushFail<T>> {
        match self.items.push(item) {
            Ok(()) => {
                self.pushed.wake_one_unless_woken(|| self.items.len());
                Ok(())
            }
            Err(PushError::Full(item)) => Err(PushFail::Full(item)),
            Err(PushError::Closed(item)) => Err(PushFail::Closed(item)),
        }
    }

    async fn push(&self, mut item: T, deadline: Option<Instant>) -> Result<(), PushFail<T>> {
        loop {
            match self.try_push(item) {
                Err(PushFail::Full(back)) => item = back,
                done => return done,
            }
            // Listen, then try again: a take between the failed push and the
            // listen would otherwise go unnoticed.
            let listener = self.popped.listen();
            match self.try_push(item) {
                Err(PushFail::Full(back)) => item = back,
                done => return done,
            }
            match deadline {
                None => listener.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, listener).await.is_err() {
                        return Err(PushFail::Timeout(item));
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn try_take(&self, woke: &mut bool) -> Result<T, PopError> {
        let taken = self.items.pop();
        if taken.is_ok() {
            *woke |= self.took();
        }
        taken
    }

    async fn wait(&self, interrupted: impl Fn() -> bool) -> Wait {
        // Listen, then look: a push between the look and the listen would
        // otherwise go unnoticed.
        let listener = self.pushed.listen();
        if !self.items.is_empty() {
            return Wait::Ready;
        }
        if self.items.is_closed() {
            return Wait::Closed;
        }
        if interrupted() {
            return Wait::Interrupted;
        }
        listener.await;
        Wait::Ready
    }

    /// After a take: wakes a waiting pusher, and says whether one was woken.
    ///
    /// A queue of one place is concurrent-queue's `Single` flavour, whose take
    /// makes room only at its `Release` unlock, not at its `SeqCst`
    /// compare-exchange (a push meanwhile sees "full"). So its wake-up needs
    /// the fence that `Waiters::wake_one` leaves out (see there).
    #[inline(always)]
    fn took(&self) -> bool {
        if self.items.capacity() == Some(1) {
            fence(Ordering::SeqCst);
        }
        self.popped.wake_one()
    }

    fn close(&self) {
        self.items.close();
        self.pushed.wake_all();
        self.popped.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn push_timeout_gives_the_item_back() {
        let q = Queue::memory(1);
        assert!(q.try_push(1).is_ok());
        let deadline = Instant::now() + Duration::from_millis(50);
        match q.push(2, Some(deadline)).await {
            Err(PushFail::Timeout(2)) => {}
            _ => panic!("expected the item back on timeout"),
        }
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_take_makes_room_for_a_waiting_push() {
        let q = Arc::new(Queue::memory(1));
        q.try_push(1).ok().unwrap();
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(2, None).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(matches!(q.take(|| false).await, Take::Item(1)));
        assert!(pusher.await.unwrap());
        assert!(matches!(q.try_take(), Some(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn close_refuses_pushes_and_keeps_items() {
        let q = Arc::new(Queue::memory(1));
        q.try_push(1).ok().unwrap();
        let q2 = q.clone();
        let pusher =
            tokio::spawn(async move { matches!(q2.push(2, None).await, Err(PushFail::Closed(2))) });
        tokio::task::yield_now().await;
        q.close();
        assert!(
            pusher.await.unwrap(),
            "a waiting push must fail with its item once closed"
        );
        assert!(matches!(q.take(|| false).await, Take::Item(1)));
        assert!(matches!(q.take(|| false).await, Take::Closed));
    }

    /// Wake-ups both ways between two runtime threads, through the real
    /// ring, with one or two places so that both sides wait all the time. A
    /// lost wake-up leaves a taker asleep beside an item (or a pusher beside
    /// room) once the other side has finished, and the run never ends.
    #[test]
    fn no_wake_up_is_lost_between_threads() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..100_u32 {
                let q = Arc::new(Queue::memory(1 + round as usize % 2));
                let n = 1_000_u32;
                let q2 = q.clone();
                let pusher = tokio::spawn(async move {
                    for i in 0..n {
                        assert!(q2.push(i, None).await.is_ok());
                    }
                });
                let taker = tokio::spawn(async move {
                    for i in 0..n {
                        assert!(matches!(q.take(|| false).await, Take::Item(v) if v == i));
                    }
                });
                let both = async {
                    pusher.await.unwrap();
                    taker.await.unwrap();
                };
                // Real time: the bound only matters when a wake-up is lost.
                tokio::time::timeout(Duration::from_secs(20), both)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a wake-up was lost"));
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn wake_takers_interrupts_an_idle_take() {
        let q = Arc::new(Queue::<u8>::memory(1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (q2, s2) = (q.clone(), stop.clone());
        let taker = tokio::spawn(async move {
            matches!(
                q2.take(|| s2.load(std::sync::atomic::Ordering::SeqCst))
                    .await,
                Take::Interrupted
            )
        });
        tokio::task::yield_now().await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        q.wake_takers();
        assert!(taker.await.unwrap());
    }
}
