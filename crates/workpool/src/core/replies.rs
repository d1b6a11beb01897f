//! The replies of jobs submitted with a handle, keyed by ticket, above the
//! store: what a store holds is the job and a number, never a pointer into
//! this process.
//!
//! An entry has exactly one taker, and only the taker records the job's
//! outcome: the worker that claims the job (and puts the entry back if the
//! job waits to retry), the handle's `cancel` while the job waits, or the
//! shutdown that hands the job back. A claimed job whose entry is gone was
//! cancelled while it waited and already has its outcome.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::reply::Reply;
use crate::store::Ticket;
use crate::sync::lock;

/// Shards: submitters and workers on different tickets rarely meet on a lock.
const SHARDS: usize = 32;

/// A job's reply while the job waits in the store.
pub(crate) struct Waiting<P, T> {
    pub(crate) reply: Reply<P, T>,
    /// Attempts already made.
    pub(crate) attempts: u32,
    /// When the first attempt started, if durations are measured.
    pub(crate) started: Option<Instant>,
}

/// One shard: tickets to waiting replies, on cache lines of its own (the
/// submitter inserts ticket n + 1 while a worker takes ticket n: side by
/// side, the two shards would share a line).
#[repr(align(128))]
struct Shard<P, T>(Mutex<HashMap<u64, Waiting<P, T>, BuildHasherDefault<Spread>>>);

pub(crate) struct Replies<P, T> {
    next: AtomicU64,
    shards: [Shard<P, T>; SHARDS],
}

impl<P, T> Replies<P, T> {
    pub(crate) fn new() -> Self {
        Replies {
            next: AtomicU64::new(1),
            shards: std::array::from_fn(|_| Shard(Mutex::new(HashMap::default()))),
        }
    }

    fn shard(
        &self,
        ticket: NonZeroU64,
    ) -> &Mutex<HashMap<u64, Waiting<P, T>, BuildHasherDefault<Spread>>> {
        &self.shards[ticket.get() as usize % SHARDS].0
    }

    /// Keeps a new job's reply; its ticket.
    pub(crate) fn insert(&self, reply: Reply<P, T>) -> NonZeroU64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ticket = NonZeroU64::new(n).expect("tickets start at 1 and a u64 does not wrap");
        self.put_back(
            ticket,
            Waiting {
                reply,
                attempts: 0,
                started: None,
            },
        );
        ticket
    }

    /// Keeps the reply of a job that waits again (to retry).
    pub(crate) fn put_back(&self, ticket: NonZeroU64, waiting: Waiting<P, T>) {
        lock(self.shard(ticket)).insert(ticket.get(), waiting);
    }

    /// Takes the reply: the caller now records the job's outcome. `None`
    /// for a detached job, and for a job whose entry was taken already.
    pub(crate) fn take(&self, ticket: Ticket) -> Option<Waiting<P, T>> {
        let ticket = ticket?;
        lock(self.shard(ticket)).remove(&ticket.get())
    }

    /// Whether the job of `ticket` still waits with its reply here.
    #[cfg(test)]
    pub(crate) fn holds(&self, ticket: NonZeroU64) -> bool {
        lock(self.shard(ticket)).contains_key(&ticket.get())
    }
}

/// Tickets count up by one; spread them over the hash (a Fibonacci hash), so
/// that the table's control bytes differ.
#[derive(Default)]
pub(crate) struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_has_one_taker() {
        let r = Replies::<u8, ()>::new();
        let (reply, _cell) = Reply::new();
        let t = r.insert(reply);
        assert!(r.holds(t));
        assert!(r.take(Some(t)).is_some());
        assert!(r.take(Some(t)).is_none(), "taken twice");
        assert!(r.take(None).is_none());
    }

    #[test]
    fn tickets_are_distinct() {
        let r = Replies::<u8, ()>::new();
        let a = r.insert(Reply::new().0);
        let b = r.insert(Reply::new().0);
        assert_ne!(a, b);
    }
}
