//! The memory store: a bounded lock-free ring for jobs ready to run, a small
//! heap for jobs waiting to retry, and the wake-ups between submitters and
//! workers. Fastest, and gone with the process: at shutdown what is left is
//! handed back to the caller.

mod waiters;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use concurrent_queue::{ConcurrentQueue, PushError};
use tokio::time::Instant;

use self::waiters::Waiters;
use super::{Claim, Queued, Refused, Store};
use crate::job::JobId;
use crate::outcome::OutcomeKind;
use crate::sync::lock;

/// A claimer whose jobs never run out still yields its thread after this many
/// claims: to the submitter and to other tasks (`tests/fairness.rs`), as a
/// tokio channel's receiver does by spending tokio's task budget.
const CLAIMS_PER_YIELD: u32 = 128;

/// The ring and two sets of waiters, as in async-channel, but with an enqueue
/// that gives the job back on timeout and a wake-up that costs a fence and a
/// load when nobody waits (`waiters.rs`).
pub(crate) struct MemoryStore<P> {
    ring: ConcurrentQueue<Queued<P>>,
    /// Woken once per enqueue: one waiting claimer.
    pushed: Waiters,
    /// Woken once per claim: one waiting enqueue. A woken listener that is
    /// dropped unseen passes its wake-up on, so none is lost.
    popped: Waiters,
    /// Jobs waiting to retry, soonest first. They take no room in the ring.
    scheduled: Mutex<Scheduled<P>>,
    /// `scheduled`'s length, read without its lock on every claim.
    scheduled_len: AtomicUsize,
    /// Claims a worker makes before it yields, once a claim of its woke a
    /// waiting submitter (see [`refill_after`]).
    refill_after: u32,
}

struct Scheduled<P> {
    heap: BinaryHeap<Reverse<Due<P>>>,
    /// Tie-breaker: equal times leave in the order they came.
    next: u64,
    closed: bool,
}

struct Due<P> {
    at: Instant,
    seq: u64,
    job: Queued<P>,
}

impl<P> PartialEq for Due<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<P> Eq for Due<P> {}
impl<P> PartialOrd for Due<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Due<P> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One worker's claiming state.
pub(crate) struct MemoryClaimer {
    /// The last wait ended with a wake-up: the next claim passes it on if
    /// jobs are left.
    waited: bool,
    /// Claims left before this worker yields its thread.
    until_yield: u32,
}

/// How many claims a worker that woke a waiting submitter makes before it
/// yields its thread to it: the ring's capacity over twice the runtime's
/// threads (at least 1, at most [`CLAIMS_PER_YIELD`]). The woken submitter
/// sits in this thread's LIFO slot, which other threads cannot steal, so it
/// runs only when this worker yields; yielding once the ring is down to about
/// half lets it refill the ring before it runs dry.
fn refill_after(capacity: usize, threads: usize) -> u32 {
    (capacity / (2 * threads.max(1))).clamp(1, CLAIMS_PER_YIELD as usize) as u32
}

/// What a wait for a job found.
enum Wait {
    /// Something to claim (or there was: another claimer may be first).
    Ready,
    Closed,
    Interrupted,
}

impl<P> MemoryStore<P> {
    /// Refuses further enqueues and retries; wakes every waiter. (Here, with
    /// no bound on `P`, so that dropping a pool can call it.)
    pub(crate) fn close_now(&self) {
        lock(&self.scheduled).closed = true;
        self.ring.close();
        self.pushed.wake_all();
        self.popped.wake_all();
    }
}

impl<P: Send + 'static> MemoryStore<P> {
    /// A store of `capacity` places, for workers on a runtime of `threads`.
    pub(crate) fn new(capacity: usize, threads: usize) -> Self {
        MemoryStore {
            ring: ConcurrentQueue::bounded(capacity),
            pushed: Waiters::default(),
            popped: Waiters::default(),
            scheduled: Mutex::new(Scheduled {
                heap: BinaryHeap::new(),
                next: 0,
                closed: false,
            }),
            scheduled_len: AtomicUsize::new(0),
            refill_after: refill_after(capacity, threads),
        }
    }

    /// A scheduled job whose time has come, if any.
    #[inline(always)]
    fn take_due(&self) -> Option<Queued<P>> {
        if self.scheduled_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.take_due_slow()
    }

    #[cold]
    fn take_due_slow(&self) -> Option<Queued<P>> {
        let mut s = lock(&self.scheduled);
        let due = s.heap.peek().is_some_and(|d| d.0.at <= Instant::now());
        due.then(|| self.pop_scheduled(&mut s)).flatten()
    }

    fn pop_scheduled(&self, s: &mut Scheduled<P>) -> Option<Queued<P>> {
        let Reverse(due) = s.heap.pop()?;
        self.scheduled_len.store(s.heap.len(), Ordering::Release);
        Some(due.job)
    }

    /// When the soonest scheduled job is due.
    fn next_due(&self) -> Option<Instant> {
        if self.scheduled_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.scheduled).heap.peek().map(|d| d.0.at)
    }

    /// After a claim that followed a wake-up: if jobs are left, wakes the
    /// next waiting claimer (unless as many woken by enqueues are on their
    /// way already). An enqueue does not wake a claimer while enough woken
    /// ones have not yet run, so a claimer that was woken passes the wake-up
    /// on: jobs are never left behind one long job.
    fn pass_on(&self) {
        let left = self.ring.len();
        if left > 0 {
            self.pushed.pass_on_unless_woken(|| left);
        }
    }

    async fn wait(&self, interrupted: impl Fn() -> bool) -> Wait {
        // Listen, then look: an enqueue between the look and the listen
        // would otherwise go unnoticed.
        let listener = self.pushed.listen();
        if !self.ring.is_empty() {
            return Wait::Ready;
        }
        let next_due = self.next_due();
        if self.ring.is_closed() && next_due.is_none() {
            return Wait::Closed;
        }
        if interrupted() {
            return Wait::Interrupted;
        }
        match next_due {
            None => listener.await,
            Some(at) => {
                let _ = tokio::time::timeout_at(at, listener).await;
            }
        }
        Wait::Ready
    }
}

impl<P: Send + 'static> Store<P> for MemoryStore<P> {
    type Claimer = MemoryClaimer;

    #[inline(always)]
    fn try_enqueue(&self, job: Queued<P>) -> Result<(), Refused<Queued<P>>> {
        match self.ring.push(job) {
            Ok(()) => {
                self.pushed.wake_one_unless_woken(|| self.ring.len());
                Ok(())
            }
            Err(PushError::Full(job)) => Err(Refused::Full(job)),
            Err(PushError::Closed(job)) => Err(Refused::Closed(job)),
        }
    }

    async fn enqueue(
        &self,
        mut job: Queued<P>,
        deadline: Option<Instant>,
    ) -> Result<Option<JobId>, Refused<Queued<P>>> {
        loop {
            match self.try_enqueue(job) {
                Err(Refused::Full(back)) => job = back,
                done => return done.map(|()| None),
            }
            // Listen, then try again: a claim between the failed push and
            // the listen would otherwise go unnoticed.
            let listener = self.popped.listen();
            match self.try_enqueue(job) {
                Err(Refused::Full(back)) => job = back,
                done => return done.map(|()| None),
            }
            match deadline {
                None => listener.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, listener).await.is_err() {
                        return Err(Refused::Timeout(job));
                    }
                }
            }
        }
    }

    fn claimer(&self) -> MemoryClaimer {
        MemoryClaimer {
            waited: false,
            until_yield: CLAIMS_PER_YIELD,
        }
    }

    #[inline(always)]
    fn try_claim(&self, c: &mut MemoryClaimer) -> Option<Queued<P>> {
        if let Some(job) = self.take_due() {
            return Some(job);
        }
        let job = self.ring.pop().ok()?;
        if self.popped.wake_one() {
            c.until_yield = c.until_yield.min(self.refill_after);
        }
        if std::mem::take(&mut c.waited) {
            self.pass_on();
        }
        Some(job)
    }

    async fn claim(
        &self,
        c: &mut MemoryClaimer,
        interrupted: impl Fn() -> bool + Send + Sync,
    ) -> Claim<P> {
        loop {
            if let Some(job) = self.try_claim(c) {
                return Claim::Job(job);
            }
            match self.wait(&interrupted).await {
                Wait::Ready => c.waited = true,
                Wait::Interrupted => return Claim::Interrupted,
                Wait::Closed => return Claim::Closed,
            }
        }
    }

    #[inline]
    fn must_yield(&self, c: &mut MemoryClaimer) -> bool {
        c.until_yield -= 1;
        if c.until_yield == 0 {
            c.until_yield = CLAIMS_PER_YIELD;
            return true;
        }
        false
    }

    fn leave(&self, c: &mut MemoryClaimer) {
        // Woken for a job it will not claim: the next claimer takes it.
        if std::mem::take(&mut c.waited) {
            self.pass_on();
        }
    }

    #[inline]
    fn complete(
        &self,
        _: &JobId,
        _: u32,
        _: OutcomeKind,
        _: impl FnOnce() -> Option<String>,
        _: impl FnOnce() -> bool,
    ) {
    }

    fn retry_at(
        &self,
        job: Queued<P>,
        at: Instant,
        _: impl FnOnce() -> Option<String>,
    ) -> Result<(), Queued<P>> {
        {
            let mut s = lock(&self.scheduled);
            if s.closed {
                return Err(job);
            }
            let seq = s.next;
            s.next += 1;
            s.heap.push(Reverse(Due { at, seq, job }));
            self.scheduled_len.store(s.heap.len(), Ordering::Release);
        }
        // A sleeping claimer may be waiting for a later time, or for nothing.
        self.pushed.wake_one();
        Ok(())
    }

    fn discard(&self, ticket: std::num::NonZeroU64) {
        let mut s = lock(&self.scheduled);
        s.heap.retain(|d| d.0.job.ticket != Some(ticket));
        self.scheduled_len.store(s.heap.len(), Ordering::Release);
    }

    fn release(&self, job: Queued<P>) -> Option<Queued<P>> {
        Some(job)
    }

    fn close(&self) {
        self.close_now();
    }

    fn wake_claimers(&self) {
        self.pushed.wake_all();
    }

    fn take_left(&self) -> Option<Queued<P>> {
        if let Ok(job) = self.ring.pop() {
            self.popped.wake_one();
            return Some(job);
        }
        self.pop_scheduled(&mut lock(&self.scheduled))
    }

    fn queued(&self) -> usize {
        self.ring.len()
    }

    fn scheduled(&self) -> usize {
        self.scheduled_len.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;
    use std::sync::Arc;
    use std::time::Duration;

    fn job(n: u64) -> Queued<u64> {
        Queued::new(Job::with_id(n, n), None)
    }

    fn id(c: Claim<u64>) -> Option<u64> {
        match c {
            Claim::Job(q) => Some(*q.job.payload()),
            _ => None,
        }
    }

    async fn claim(s: &MemoryStore<u64>) -> Claim<u64> {
        s.claim(&mut s.claimer(), || false).await
    }

    #[tokio::test(start_paused = true)]
    async fn enqueue_timeout_gives_the_job_back() {
        let s = MemoryStore::new(1, 1);
        assert!(s.try_enqueue(job(1)).is_ok());
        let deadline = Instant::now() + Duration::from_millis(50);
        match s.enqueue(job(2), Some(deadline)).await {
            Err(Refused::Timeout(q)) => assert_eq!(*q.job.payload(), 2),
            _ => panic!("expected the job back on timeout"),
        }
        assert_eq!(s.queued(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_makes_room_for_a_waiting_enqueue() {
        let s = Arc::new(MemoryStore::new(1, 1));
        assert!(s.try_enqueue(job(1)).is_ok());
        let s2 = s.clone();
        let pusher = tokio::spawn(async move { s2.enqueue(job(2), None).await.is_ok() });
        tokio::task::yield_now().await;
        assert_eq!(id(claim(&s).await), Some(1));
        assert!(pusher.await.unwrap());
        assert_eq!(id(claim(&s).await), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn close_refuses_enqueues_and_keeps_jobs() {
        let s = Arc::new(MemoryStore::new(1, 1));
        assert!(s.try_enqueue(job(1)).is_ok());
        let s2 = s.clone();
        let pusher = tokio::spawn(async move {
            matches!(s2.enqueue(job(2), None).await, Err(Refused::Closed(_)))
        });
        tokio::task::yield_now().await;
        s.close();
        assert!(pusher.await.unwrap(), "a waiting enqueue fails once closed");
        assert_eq!(id(claim(&s).await), Some(1));
        assert!(matches!(claim(&s).await, Claim::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_is_claimed_when_due_and_not_before() {
        let s = Arc::new(MemoryStore::new(4, 1));
        let at = Instant::now() + Duration::from_secs(3);
        assert!(s.retry_at(job(7), at, || None).is_ok());
        assert_eq!(s.scheduled(), 1);
        let s2 = s.clone();
        let claimer = tokio::spawn(async move { (id(claim(&s2).await), Instant::now()) });
        let (got, when) = claimer.await.unwrap();
        assert_eq!(got, Some(7));
        assert!(when >= at, "claimed before it was due");
        assert_eq!(s.scheduled(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_store_hands_back_ring_and_retries_and_takes_no_retry() {
        let s = MemoryStore::new(4, 1);
        assert!(s.try_enqueue(job(1)).is_ok());
        assert!(
            s.retry_at(job(2), Instant::now() + Duration::from_secs(60), || None)
                .is_ok()
        );
        s.close();
        assert!(s.retry_at(job(3), Instant::now(), || None).is_err());
        let mut left: Vec<u64> = std::iter::from_fn(|| s.take_left())
            .map(|q| *q.job.payload())
            .collect();
        left.sort();
        assert_eq!(left, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn wake_claimers_interrupts_an_idle_claim() {
        let s = Arc::new(MemoryStore::<u64>::new(1, 1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, stop2) = (s.clone(), stop.clone());
        let claimer = tokio::spawn(async move {
            let mut c = s2.claimer();
            matches!(
                s2.claim(&mut c, || stop2.load(Ordering::SeqCst)).await,
                Claim::Interrupted
            )
        });
        tokio::task::yield_now().await;
        stop.store(true, Ordering::SeqCst);
        s.wake_claimers();
        assert!(claimer.await.unwrap());
    }

    /// Wake-ups both ways between two runtime threads, through the real
    /// ring, with one or two places so that both sides wait all the time. A
    /// lost wake-up leaves a claimer asleep beside a job (or an enqueue
    /// beside room) once the other side has finished, and the run never ends.
    #[test]
    fn no_wake_up_is_lost_between_threads() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..100_u32 {
                let s = Arc::new(MemoryStore::new(1 + round as usize % 2, 2));
                let n = 1_000_u64;
                let s2 = s.clone();
                let pusher = tokio::spawn(async move {
                    for i in 0..n {
                        assert!(s2.enqueue(job(i), None).await.is_ok());
                    }
                });
                let taker = tokio::spawn(async move {
                    let mut c = s.claimer();
                    for i in 0..n {
                        assert_eq!(id(s.claim(&mut c, || false).await), Some(i));
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

    #[test]
    fn a_worker_yields_to_a_woken_submitter_at_about_half_a_ring() {
        // 2 threads claim from a ring of 100: 25 claims each leave about 50.
        assert_eq!(refill_after(100, 2), 25);
        // One thread (current-thread runtime): half the ring is its own.
        assert_eq!(refill_after(100, 1), 50);
        // A ring of one place, or many threads: at once.
        assert_eq!(refill_after(1, 2), 1);
        assert_eq!(refill_after(100, 64), 1);
        // A large ring: the every-128-claims yield comes first anyway.
        assert_eq!(refill_after(1_000_000, 2), CLAIMS_PER_YIELD);
    }
}
